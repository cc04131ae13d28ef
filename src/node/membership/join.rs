//! Joining the ring, from both sides.
//!
//! # Protocol
//!
//! 1. The joiner `J` registers with the registry, which chooses its ID (or records
//!    the one `J` saved with its data) and names the registered member with the
//!    closest smaller ID as a first contact (none for the first member, which then
//!    serves the whole ring alone). Joining through a member instead (`--join`),
//!    `J` walks the ring from it and applies the registry's rule itself
//!    ([`crate::ring::balance`]), its predecessor being the first contact.
//! 2. `J` starts serving its port (state `joining`: it owns nothing yet) and sends
//!    `RegisterAsNeighbor{ty: Next, J}` to the contact: "take me as your next".
//! 3. The contact `P` takes its membership lock (one join into its arc at a time)
//!    and checks that `J` falls strictly inside its arc `[P, N)`. If not, it refuses
//!    with `FAILED_PRECONDITION` and names, in the `crustyring-towards-bin`
//!    metadata, the neighbour closer to `J`'s predecessor; `J` asks that one. A contact that
//!    is itself still joining answers `UNAVAILABLE`, and `J` retries with backoff,
//!    falling back to the other registered members. So does a contact that may
//!    not serve the arc `[J, N)` now (leases on: no lease from its own `prev`,
//!    part of the arc taken over from a failed node and still waiting, not
//!    confirmed by its `next`, or catching up after a lease gap): its `prev`
//!    may have declared it dead and own the arc meanwhile, and a joiner handed
//!    part of it would be a second owner, leased by `P`. The exception: a node
//!    alone after failures, which can be leased again only by a joiner, takes
//!    one in when the registry answers that no other member lives
//!    ([`crate::lease::hand_over`]). The check is made again when the fence
//!    goes up (step 4).
//! 4. `P` streams the arc `[J, N)` to `J` (`HandOff`) while it keeps serving it,
//!    the first message naming `J`'s neighbours `{prev: P, next: N}`, then
//!    batches of entries bounded in bytes; `J` stores them as they come. Then `P`
//!    fences the arc (local queries into it wait) and sends the writes made into
//!    it meanwhile (`migration`). `J` links in and starts serving; only then does
//!    it acknowledge.
//! 5. `P` sets `next = J`, lifts the fence (waiting queries now route to `J`),
//!    drops the arc's entries and tells `N` that its previous neighbour is `J`.
//!
//! Every key is therefore served by exactly one node at every moment a query can
//! observe it: before step 5 by `P` (the fence stops changes while `J` takes the
//! last writes), after it by `J`. If
//! the hand-off fails, `P` lifts the fence and keeps the arc; `J` tries again.
//! Joins into different arcs touch different nodes' `next` links and proceed in
//! parallel; joins into one arc are serialised by its owner.

use crate::joining::{Joiner, Reply, Step};
use crate::lease::{HandOver, Serve, hand_over};
use crate::metrics::HandOff;
use crate::node::Node;
use crate::node::error::{JoinError, NodeError};
use crate::node::membership::admission::{Admission, Admit};
use crate::node::rpc::wire::{self, Link};
use crate::node::view::{LinkError, Neighbours, NodeState, View};
use crate::proto::registry::ConnectionAddr;
use crate::ring::{Arc as RingArc, Member};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How joining is paced.
#[derive(Debug, Clone, Copy)]
pub struct JoinSettings {
    /// How long a node keeps trying to join before it gives up.
    pub timeout: Duration,
    /// The first retry delay; it doubles up to one second.
    pub retry_delay: Duration,
}

impl Default for JoinSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retry_delay: Duration::from_millis(20),
        }
    }
}

impl Node {
    /// Brings a node whose server is up into the ring: joins through `contact`
    /// (or starts a ring of one without), saves its identity, and starts the
    /// loops that keep its health, its replicas, its routing table and its
    /// links up to date until `stopped`. Returns once the node serves its arc.
    pub(crate) async fn run(
        self: Arc<Self>,
        contact: Option<Member>,
        stopped: watch::Receiver<bool>,
    ) -> Result<(), JoinError> {
        tokio::spawn(self.clone().report_health(stopped.clone()));
        match contact {
            None => self.become_alone().await,
            Some(contact) => self.join(contact).await?,
        }
        // Serving, as this returns: probes need not race the reporter.
        self.publish_health().await;
        self.store.save_identity(&self.me())?;
        self.store.sync_point().await?;
        tokio::spawn(self.clone().anti_entropy(stopped.clone()));
        tokio::spawn(self.clone().refresh_routes(stopped.clone()));
        tokio::spawn(self.maintain(stopped));
        Ok(())
    }

    /// Starts a ring of one: this node owns every position.
    async fn become_alone(&self) {
        let me = self.me();
        self.update_view(|v| *v = View::first(me));
        tracing::info!(id = %self.me().id, "serving the whole ring alone");
    }

    /// Joins through `contact`, following refusals towards this node's predecessor
    /// and falling back to the registry's other members while contacts are not
    /// ready: the decisions are [`crate::joining::Joiner`]'s, this loop carries
    /// them out.
    async fn join(&self, contact: Member) -> Result<(), JoinError> {
        let me = self.me();
        let settings = self.config.join;
        let now = || tokio::time::Instant::now().into_std();
        let mut joiner = Joiner::new(
            me.clone(),
            contact,
            settings.retry_delay,
            settings.timeout,
            now(),
        );
        let mut step = joiner.start();
        loop {
            // Linked in, whatever the last step said: a hand-off can complete
            // after its call timed out.
            if self.view().state == NodeState::Serving {
                step = Step::Done;
            }
            step = match step {
                Step::Ask(target) => {
                    let reply = self.ask_to_join(&me, &target).await;
                    if let Reply::NotMine { reason, .. } | Reply::Failed { reason } = &reply {
                        tracing::debug!(contact = %target.addr, %reason, "join attempt refused");
                    }
                    joiner.answered(reply, now())
                }
                Step::Wait(delay) => {
                    tokio::time::sleep(delay).await;
                    joiner.waited(now())
                }
                Step::LearnMembers => {
                    let members = self.registry_members().await;
                    joiner.members(members, now())
                }
                Step::AskRegistry => {
                    let names_one = !self.registry_names_no_contact().await;
                    joiner.registry_contact(names_one, now())
                }
                Step::StartAlone => {
                    self.become_alone().await;
                    return Ok(());
                }
                Step::Done => {
                    let view = self.view_snapshot();
                    tracing::info!(id = %me.id, prev = %view.prev.addr, next = %view.next.addr, "joined the ring");
                    return Ok(());
                }
                Step::IdTaken { holder } => return Err(JoinError::IdTaken { id: me.id, holder }),
                Step::GiveUp { last } => {
                    return Err(JoinError::TimedOut {
                        after: settings.timeout,
                        last,
                    });
                }
            };
        }
    }

    /// Asks `target` to take `me` as its next (`RegisterAsNeighbor{Next}`);
    /// its answer as the joiner sees it. Serving once it returns means joined,
    /// whatever the call says (the answer may be lost after the hand-off).
    async fn ask_to_join(&self, me: &Member, target: &Member) -> Reply {
        let request = wire::register_as(Link::Next, me);
        let client = self.peers.client_made(&target.addr);
        let made = client.as_ref().map_or(0, |(_, made)| *made);
        let attempt = async move {
            client?
                .0
                .register_as_neighbor(request)
                .await
                .map_err(NodeError::Peer)
        };
        // The contact streams the arc to us within this call: allow it the
        // hand-off's time on top of one request's.
        let limit = self.config.timeouts.request * 2;
        let outcome = tokio::time::timeout(limit, attempt).await;
        if self.view().state == NodeState::Serving {
            return Reply::Joined;
        }
        match outcome {
            Ok(Ok(_)) => Reply::Failed {
                reason: "the contact took this node in, yet it does not serve".into(),
            },
            Ok(Err(NodeError::Peer(status))) => wire::join_reply(&status),
            Ok(Err(other)) => Reply::Failed {
                reason: other.to_string(),
            },
            Err(_) => {
                // The next attempt connects afresh (see `Peers::forget`).
                self.peers.forget(&target.addr, made);
                Reply::Failed {
                    reason: "no answer in time".into(),
                }
            }
        }
    }

    /// Whether the registry, asked again, says this node is the first member.
    async fn registry_names_no_contact(&self) -> bool {
        let me = self.me();
        let ask = ConnectionAddr {
            addr: me.addr,
            id: Some(me.id.0),
        };
        let asked = self
            .ask_registry(|mut r| async move { r.register_node(ask).await })
            .await;
        matches!(asked, Some(Ok(info)) if info.neighbor.is_none())
    }

    /// Whether this node may hand `arc`, part of its own, to a joiner now
    /// ([`crate::lease::hand_over`]), as its `view` and leases say.
    pub(in crate::node) fn may_hand_over(&self, arc: RingArc, view: &View) -> HandOver {
        let serve = self.unleased_arc(arc, view.alone()).unwrap_or(Serve::Now);
        let judged = (self.leases.as_ref())
            .is_some_and(|l| l.lock().unwrap_or_else(|e| e.into_inner()).judged());
        hand_over(serve, view.alone(), self.after_lease_gap(view), judged)
    }

    /// The predecessor's side of a join: hands the arc `[joiner, next)` to the
    /// joiner and links it in. See the module docs for the steps; the
    /// decisions are [`Admission`]'s, this carries them out.
    pub(in crate::node) async fn accept_join(
        &self,
        joiner: Member,
    ) -> Result<Neighbours, LinkError> {
        let refused = |refusal| LinkError::Join {
            refusal,
            joiner: joiner.clone(),
        };
        let _membership = self.membership.lock().await;
        // The arc stays served while it streams (`migration`): the fence goes
        // up only for the switch-over.
        let (mut admission, admit) = {
            let view = self.view();
            Admission::ask(joiner.clone(), &view, |arc| self.may_hand_over(arc, &view))
                .map_err(refused)?
        };
        if admit == Admit::AskRegistry {
            let members = self.registry_answer().await;
            admission
                .registry_answered(members.as_deref())
                .map_err(refused)?;
        }
        let header = admission.header(&self.view());
        let handed = self.stream_join(&joiner, header, &admission).await;
        // Before taking the arc back after a timeout, ask the joiner: or both
        // would own it.
        let handed = self
            .settle_timeout(handed, &joiner, |info| {
                admission.taken_by_joiner(Some(info.prev.id))
            })
            .await;
        match handed {
            Ok(n) => self.metrics.handoff(true, HandOff::Join, n),
            Err(e) => {
                self.update_view(|view| view.handoff = None);
                tracing::warn!(joiner = %joiner.addr, error = %e, "hand-off failed; keeping the arc");
                return Err(LinkError::HandOff { joiner, error: e });
            }
        }
        let successors = self.config.maintenance.successors;
        let keep_copy = self.config.replication.factor > 1;
        let linked = self.update_view(|view| {
            let linked = admission.linked(view, successors, keep_copy);
            self.with_leases(|l| {
                l.next_probed(Some(linked.confirmed));
            });
            linked
        });
        self.learn_route(joiner.clone());
        match linked.drop {
            // This node is now the joiner's nearest replica: the copy stays.
            None => {
                tracing::info!(joiner = %joiner.addr, "handed arc to joiner; keeping it as its replica");
            }
            Some(arc) => match self.drop_arc(arc).await {
                Ok(n) => tracing::info!(joiner = %joiner.addr, keys = n, "handed arc to joiner"),
                Err(e) => tracing::error!(error = %e, "could not drop a handed-off arc"),
            },
        }
        if let Some(old_next) = &linked.introduce {
            self.introduce(&joiner, old_next).await;
        }
        let (prev, next) = linked.reply;
        Ok(Neighbours { prev, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::view::JoinRefusal;
    use crate::ring::{Arc as RingArc, Position};

    /// A member at `id` whose address is a closed loopback port: a
    /// hand-off to it, once tried, fails.
    fn gone(id: u64) -> Member {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Member::new(
            Position(id),
            format!("http://{}", closed.local_addr().unwrap()),
        )
    }

    /// A joiner at 150 into the arc `[100, 50)` of a node at 100 whose only
    /// neighbour is at 50.
    fn node_and_joiner() -> (std::sync::Arc<Node>, Member) {
        let node = crate::node::serving_beside(
            Member::new(Position(100), "http://127.0.0.1:9"),
            Member::new(Position(50), "http://127.0.0.1:9"),
        );
        (node, gone(150))
    }

    /// A node alone in its ring at 100, leases on, asking the registry at
    /// `registry` (if any).
    fn alone(registry: Option<String>) -> std::sync::Arc<Node> {
        let (health, _) = tonic_health::server::health_reporter();
        let me = Member::new(Position(100), "http://127.0.0.1:9");
        let store = std::sync::Arc::new(crate::store::MemoryStore::new());
        let config = crate::node::NodeConfig::default();
        let node = std::sync::Arc::new(Node::new(me.clone(), config, store, health, registry));
        node.update_view(|v| *v = View::first(me));
        node
    }

    fn tried_the_hand_off(answer: &Result<Neighbours, LinkError>) -> bool {
        matches!(answer, Err(LinkError::HandOff { .. }))
    }

    /// The first node of a ring serves alone, and takes joiners in.
    #[tokio::test]
    async fn a_node_that_started_the_ring_takes_a_joiner_in() {
        let node = alone(None);
        let answer = node.accept_join(gone(150)).await;
        assert!(tried_the_hand_off(&answer), "{answer:?}");
    }

    /// With a registry that judges deaths, a node left alone by failures
    /// takes a joiner in only while it holds a root lease: without one it is
    /// cut off from the registry, whose side may own its arc, whatever the
    /// registry would list.
    #[tokio::test]
    async fn a_node_alone_after_failures_takes_a_joiner_in_only_under_a_root_lease() {
        let node = alone(Some("http://127.0.0.1:9".to_string()));
        node.update_leases(|l| l.neighbour_failed());
        let answer = node.accept_join(gone(150)).await;
        assert!(!tried_the_hand_off(&answer), "{answer:?}");
        let now = tokio::time::Instant::now().into_std();
        node.update_leases(|l| {
            l.rooted(now, std::time::Duration::from_secs(2));
        });
        let answer = node.accept_join(gone(150)).await;
        assert!(tried_the_hand_off(&answer), "{answer:?}");
    }

    /// Under a registry that judges no deaths (an earlier version), a node
    /// left alone by failures serves nothing until a joiner links in: it
    /// takes one in if the registry lists no other live member (they died),
    /// and refuses while it does (they live on and cut this node off: a
    /// joiner would start a second ring beside theirs), or does not answer.
    #[tokio::test]
    async fn a_node_alone_after_failures_takes_a_joiner_in_only_if_no_other_member_lives() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry = format!("http://{}", listener.local_addr().unwrap());
        let config = crate::registry::RegistryConfig::fresh(crate::ring::IdRule::new(
            crate::registry::DEFAULT_SALT,
            crate::ring::IdRule::DEFAULT_CHOICES,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::registry::serve(listener, config, async {
            let _ = stopped.await;
        }));
        let node = alone(Some(registry));
        node.update_leases(|l| {
            l.registry_judges(false, std::time::Instant::now());
            l.neighbour_failed();
        });
        let joiner = gone(150);

        // The registry lists no one else: the others died.
        let answer = node.accept_join(joiner.clone()).await;
        assert!(tried_the_hand_off(&answer), "{answer:?}");

        // Another member lives: this node was cut off from it.
        let other = gone(7);
        let other = crate::proto::registry::Node::from(&other);
        let heard = node
            .ask_registry(|mut r| async move { r.heartbeat(other).await })
            .await;
        assert!(matches!(heard, Some(Ok(()))), "{heard:?}");
        let answer = node.accept_join(joiner.clone()).await;
        assert!(refused_unleased(&answer), "{answer:?}");
        let _ = stop.send(());
        served.await.unwrap().unwrap();

        // No registry answers: it cannot tell, so it refuses.
        let unanswered = alone(Some(gone(0).addr));
        unanswered.update_leases(|l| l.neighbour_failed());
        let answer = unanswered.accept_join(joiner).await;
        assert!(refused_unleased(&answer), "{answer:?}");
    }

    fn refused_unleased(answer: &Result<Neighbours, LinkError>) -> bool {
        matches!(
            answer,
            Err(LinkError::Join {
                refusal: JoinRefusal::Unleased,
                ..
            })
        )
    }

    /// A node hands over only what it may serve: without a lease its `prev`
    /// may have declared it dead and own the arc, and a joiner handed part of
    /// it would be a second owner.
    #[tokio::test]
    async fn a_node_without_a_lease_on_its_arc_takes_no_joiner_in() {
        let (node, joiner) = node_and_joiner();
        let answer = node.accept_join(joiner.clone()).await;
        assert!(refused_unleased(&answer), "{answer:?}");
        assert_eq!(node.view().next.id, Position(50), "nothing changed");

        // Leased, it tries the hand-off (which fails: the joiner is gone).
        node.update_leases(|l| l.granted(std::time::Instant::now()));
        let answer = node.accept_join(joiner.clone()).await;
        assert!(tried_the_hand_off(&answer), "{answer:?}");

        // Leased, but its `next` knows another node as its `prev` (whose arc
        // may then cover this one's): nothing is handed over.
        node.next_confirmed(None);
        let answer = node.accept_join(joiner.clone()).await;
        assert!(refused_unleased(&answer), "{answer:?}");
        node.next_confirmed(Some(node.view().arc()));

        // Leased again after a gap, it hands nothing over until caught up.
        node.behind_again();
        let answer = node.accept_join(joiner).await;
        assert!(refused_unleased(&answer), "{answer:?}");
    }

    /// Part of the arc taken over from a failed node, still waiting for that
    /// node's lease to lapse, is not handed over either.
    #[tokio::test]
    async fn a_node_waiting_out_a_takeover_takes_no_joiner_into_it() {
        let (node, joiner) = node_and_joiner();
        let now = std::time::Instant::now();
        node.update_leases(|l| {
            l.granted(now);
            l.took_over(
                RingArc::new(Position(120), Position(50)),
                Position(120),
                now,
            );
        });
        let answer = node.accept_join(joiner).await;
        assert!(refused_unleased(&answer), "{answer:?}");
    }
}
