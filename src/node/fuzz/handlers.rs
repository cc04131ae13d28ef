//! A node's RPC handlers fed arbitrary input: hand-off streams, replica
//! writes, list ranges, batches.

use super::*;

/// Runs `property` on a fresh node per case (in memory, with [`limits`] and a
/// `max_peer_stream_bytes` budget), `serving` alone or still joining.
fn with_nodes<S: Strategy>(
    strategy: S,
    serving: bool,
    property: impl Fn(&tokio::runtime::Runtime, &Node, S::Value) -> Result<(), TestCaseError>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Not a `proptest!` test: no source file to keep failures beside.
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..config()
    });
    let outcome = runner.run(&(strategy, 0..2000usize), |(input, budget)| {
        let _entered = runtime.enter();
        let config = NodeConfig {
            limits: limits(),
            max_peer_stream_bytes: budget,
            ..NodeConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (health, _) = tonic_health::server::health_reporter();
        let me = Member::new(Position(1 << 63), "http://me");
        let node = Node::new(me.clone(), config, store, health, None);
        if serving {
            node.update_view(|v| *v = View::first(me));
        }
        property(&runtime, &node, input)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Everything a node's store holds.
fn stored(node: &Node) -> Vec<Entry> {
    node.store.entries_in(RingArc::whole(Position(0))).unwrap()
}

/// Who a hand-off header names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Named {
    Nobody,
    Receiver,
    Stranger,
}

impl Named {
    fn node(self, receiver: &Member) -> Option<registry::Node> {
        match self {
            Named::Nobody => None,
            Named::Receiver => Some(receiver.into()),
            Named::Stranger => Some(registry::Node {
                id: 7,
                addr: "http://stranger".into(),
            }),
        }
    }
}

fn named() -> impl Strategy<Value = Named> {
    prop_oneof![
        Just(Named::Nobody),
        Just(Named::Receiver),
        Just(Named::Stranger)
    ]
}

/// A hand-off as a peer might send it: its header's names, then messages of
/// entries (each valid or not) with their `last` flags, perhaps broken off by
/// a transport error.
#[derive(Debug, Clone)]
struct Offer {
    from: Named,
    prev: Named,
    next: Named,
    merge: bool,
    messages: Vec<(Vec<(dht::KeyValueEntry, bool)>, bool)>,
    broken_at: Option<usize>,
}

fn offer() -> impl Strategy<Value = Offer> {
    (
        (named(), named(), named(), any::<bool>()),
        vec((vec(wire_entry(), 0..4), prop::bool::weighted(0.3)), 1..5),
        proptest::option::of(0..6usize),
    )
        .prop_map(|((from, prev, next, merge), messages, broken_at)| Offer {
            from,
            prev,
            next,
            merge,
            messages,
            broken_at,
        })
}

impl Offer {
    /// The messages of the stream, the first carrying the header.
    fn stream(
        &self,
        receiver: &Member,
    ) -> impl tokio_stream::Stream<Item = Result<dht::HandOffChunk, tonic::Status>> + Unpin + use<>
    {
        let mut chunks: Vec<Result<dht::HandOffChunk, tonic::Status>> = self
            .messages
            .iter()
            .map(|(entries, last)| {
                Ok(dht::HandOffChunk {
                    entries: entries.iter().map(|(e, _)| e.clone()).collect(),
                    last: *last,
                    ..Default::default()
                })
            })
            .collect();
        if let Some(Ok(first)) = chunks.first_mut() {
            first.from = self.from.node(receiver);
            let (prev, next) = (self.prev.node(receiver), self.next.node(receiver));
            first.neighbors =
                (prev.is_some() || next.is_some()).then_some(dht::PreviousNeighbors { prev, next });
            first.merge = self.merge;
        }
        if let Some(at) = self.broken_at.filter(|&at| at <= chunks.len()) {
            chunks.insert(at, Err(tonic::Status::unavailable("connection reset")));
        }
        tokio_stream::iter(chunks)
    }

    fn sender(&self) -> Named {
        match self.from {
            Named::Nobody => self.prev,
            named => named,
        }
    }

    /// Whether every entry is valid, the stream unbroken and its final
    /// message marked `last`.
    fn whole(&self) -> bool {
        self.messages
            .iter()
            .all(|(entries, _)| entries.iter().all(|(_, valid)| *valid))
            && self.broken_at.is_none_or(|at| at > self.messages.len())
            && self.messages.last().is_some_and(|(_, last)| *last)
    }

    fn entries(&self) -> impl Iterator<Item = &dht::KeyValueEntry> {
        self.messages
            .iter()
            .flat_map(|(entries, _)| entries.iter().map(|(e, _)| e))
    }
}

/// A serving node takes a hand-off only as a merge from another node, whole
/// and within its budget, and then stores every entry (newest-wins); any other
/// stream is refused with a clear error and leaves its store as it was.
#[test]
fn any_handoff_stream_is_taken_whole_or_changes_nothing() {
    let existing = vec(entry(), 0..4);
    with_nodes(
        (offer(), existing),
        true,
        |runtime, node, (offer, existing)| {
            node.store.insert_all(existing).unwrap();
            let before = stored(node);
            let me = node.me();
            let taken =
                runtime.block_on(crate::node::rpc::hand_off::receive(node, offer.stream(&me)));
            let bytes: usize = offer
                .entries()
                .filter_map(|e| entry_from_wire(e.clone(), &limits()).ok())
                .map(|e| wire_size(&e))
                .sum();
            let acceptable = offer.merge
                && offer.next != Named::Nobody
                && offer.sender() == Named::Stranger
                && offer.whole()
                && bytes <= node.config.max_peer_stream_bytes;
            match taken {
                Ok(ack) => {
                    prop_assert!(acceptable, "took {:?}", offer);
                    prop_assert_eq!(ack.entries as usize, offer.entries().count());
                    for sent in offer.entries() {
                        let sent = entry_from_wire(sent.clone(), &limits()).unwrap();
                        let kept = node.store.entry(sent.position, &sent.key).unwrap().unwrap();
                        prop_assert!(kept.version >= sent.version);
                    }
                }
                Err(status) => {
                    prop_assert!(!acceptable, "refused {:?}: {:?}", offer, status);
                    prop_assert!(
                        matches!(
                            status.code(),
                            Code::InvalidArgument
                                | Code::FailedPrecondition
                                | Code::Aborted
                                | Code::ResourceExhausted
                                | Code::Unavailable
                        ),
                        "{:?}",
                        status
                    );
                    prop_assert_eq!(stored(node), before);
                }
            }
            prop_assert_eq!(node.view().state, NodeState::Serving);
            Ok(())
        },
    );
}

/// A joining node serves only once a whole join hand-off has arrived; a
/// stream cut short, broken or with a bad entry leaves it joining.
#[test]
fn a_joiner_serves_only_after_a_whole_handoff() {
    with_nodes(offer(), false, |runtime, node, mut offer| {
        (offer.from, offer.prev, offer.next, offer.merge) =
            (Named::Stranger, Named::Stranger, Named::Stranger, false);
        let me = node.me();
        let taken = runtime.block_on(crate::node::rpc::hand_off::receive(node, offer.stream(&me)));
        let view = node.view_snapshot();
        match taken {
            Ok(ack) => {
                prop_assert!(offer.whole(), "took {:?}", offer);
                prop_assert_eq!(ack.entries as usize, offer.entries().count());
                prop_assert_eq!(view.state, NodeState::Serving);
                prop_assert_eq!(view.prev.id, Position(7));
            }
            Err(status) => {
                prop_assert!(!offer.whole(), "refused {:?}: {:?}", offer, status);
                prop_assert_eq!(view.state, NodeState::Joining);
            }
        }
        Ok(())
    });
}

/// `Replicate` takes all of a message's entries or, if one is bad, none.
#[test]
fn replica_writes_are_taken_all_or_none() {
    with_nodes(vec(wire_entry(), 0..6), true, |runtime, node, sent| {
        let before = stored(node);
        let request = dht::ReplicateRequest {
            entries: sent.iter().map(|(e, _)| e.clone()).collect(),
        };
        let taken = runtime.block_on(crate::node::rpc::replicas::receive(node, request, None));
        match taken {
            Ok(ack) => {
                prop_assert!(sent.iter().all(|(_, valid)| *valid));
                prop_assert_eq!(ack.merged as usize, sent.len());
            }
            Err(status) => {
                prop_assert!(sent.iter().any(|(_, valid)| !valid));
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert_eq!(stored(node), before);
            }
        }
        Ok(())
    });
}

/// `ListRange` answers any request a listing makes with a reply the listing's
/// own check accepts, and refuses a bad page size.
#[test]
fn list_ranges_answer_what_a_listing_accepts() {
    let request = (
        any::<u64>(),
        prop_oneof![Just(u64::MAX), any::<u64>()],
        proptest::option::of(key()),
        bytes(2),
        0..40u32,
        any::<bool>(),
    );
    with_nodes(
        (vec(entry(), 0..30), request),
        true,
        |_, node, (entries, (start, end, after_key, prefix, limit, values))| {
            node.store.insert_all(entries).unwrap();
            let ask = RangeAsk {
                start,
                end: end.max(start),
                after_key,
                prefix,
                limit,
                values,
            };
            match node.listed_now(&ask) {
                Ok((reply, _)) => {
                    // As the asker reads it off the wire.
                    let reply = dht::ListRangeReply::from(reply);
                    let reply = range_reply_from_wire(reply, &limits()).unwrap();
                    let checked = check_reply(&ask, &reply.entries, reply.covered_end, reply.more);
                    prop_assert!(checked.is_ok(), "{:?}", checked);
                }
                Err(e) => {
                    prop_assert!(!(1..=crate::node::MAX_PAGE as u32).contains(&limit));
                    prop_assert_eq!(e.code(), Code::InvalidArgument);
                }
            }
            Ok(())
        },
    );
}

/// `Batch` answers every query of any request, in order, each with its own
/// result or error.
#[test]
fn batches_answer_every_query() {
    let query = (
        0..4i32,
        bytes(20),
        any::<bool>(),
        proptest::option::of(bytes(70)),
    )
        .prop_map(|(ty, key, hashed, value)| dht::EncodedQuery {
            ty,
            key: if hashed { key_position(&key).0 } else { 5 },
            raw_key: Some(key),
            value,
            ..Default::default()
        });
    with_nodes(vec(query, 0..6), true, |runtime, node, queries| {
        let n = queries.len();
        let expected: Vec<bool> = queries
            .iter()
            .map(|q| Query::from_forward(q.clone(), &limits()).is_ok())
            .collect();
        let request = dht::BatchRequest { queries };
        let reply = runtime
            .block_on(crate::node::rpc::queries::accept_batch(node, request))
            .unwrap();
        prop_assert_eq!(reply.answers.len(), n);
        for (answer, valid) in reply.answers.iter().zip(expected) {
            let code = Code::from_i32(answer.code);
            prop_assert_eq!(code == Code::Ok, valid, "{:?}", answer);
            prop_assert!(
                matches!(code, Code::Ok | Code::InvalidArgument),
                "{:?}",
                answer
            );
        }
        Ok(())
    });
}
