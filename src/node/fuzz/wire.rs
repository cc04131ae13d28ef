//! Every peer message from arbitrary bytes, and the round trips.

use super::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_an_entry_or_invalid_argument(input in bytes(256)) {
        let Ok(wire) = dht::KeyValueEntry::decode(input.as_slice()) else { return Ok(()) };
        match entry_from_wire(wire, &limits()) {
            Ok(e) => {
                prop_assert_eq!(key_position(&e.key), e.position);
                prop_assert!((1..=16).contains(&e.key.len()));
            }
            Err(status) => prop_assert_eq!(status.code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn entries_round_trip_through_the_wire(e in entry()) {
        let encoded = dht::KeyValueEntry::from(e.clone()).encode_to_vec();
        let decoded = dht::KeyValueEntry::decode(encoded.as_slice()).unwrap();
        prop_assert_eq!(entry_from_wire(decoded, &limits()).unwrap(), e);
    }

    #[test]
    fn a_corrupted_entry_is_refused_or_still_consistent(
        e in entry(),
        at in any::<proptest::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let mut encoded = dht::KeyValueEntry::from(e).encode_to_vec();
        let at = at.index(encoded.len());
        encoded[at] ^= flip;
        let Ok(wire) = dht::KeyValueEntry::decode(encoded.as_slice()) else { return Ok(()) };
        match entry_from_wire(wire, &limits()) {
            Ok(e) => {
                prop_assert_eq!(key_position(&e.key), e.position);
                prop_assert!(e.value.as_ref().is_none_or(|v| v.len() <= 64));
            }
            Err(status) => prop_assert_eq!(status.code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn client_queries_from_any_bytes_are_valid_or_invalid_argument(input in bytes(128)) {
        let Ok(q) = dht::Query::decode(input.as_slice()) else { return Ok(()) };
        match Query::from_client(q, &limits()) {
            Ok(q) => {
                let key = q.key.unwrap();
                prop_assert!((1..=16).contains(&key.len()));
                prop_assert_eq!(key_position(&key), q.position);
                prop_assert!(guards(q.condition, &q.op));
                prop_assert!(q.ttl.is_none() || matches!(q.op, Operation::Set(_)));
            }
            Err(e) => prop_assert_eq!(e.code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn forwards_from_any_bytes_are_valid_or_invalid_argument(input in bytes(128)) {
        let Ok(q) = dht::EncodedQuery::decode(input.as_slice()) else { return Ok(()) };
        match Query::from_forward(q, &limits()) {
            Ok(Query { key: Some(key), position, .. }) => {
                prop_assert_eq!(key_position(&key), position);
                prop_assert!((1..=16).contains(&key.len()));
            }
            // Position only, as the original clients send it: reads only.
            Ok(q) => {
                prop_assert!(!matches!(q.op, Operation::Set(_)));
                prop_assert_eq!(q.condition, Condition::Always);
            }
            Err(e) => prop_assert_eq!(e.code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn queries_round_trip_as_forwards(
        op in operation(),
        key in key(),
        condition in condition(),
        ttl_ms in 1..=MAX_TTL.as_millis() as u64,
        hops in any::<u32>(),
    ) {
        let condition = if guards(condition, &op) { condition } else { Condition::Always };
        let ttl = matches!(op, Operation::Set(_)).then(|| Duration::from_millis(ttl_ms));
        let query = Query {
            hops,
            ttl,
            ..Query::new(op, key, &limits()).unwrap().on_condition(condition)
        };
        let encoded = query.to_forward().encode_to_vec();
        let decoded = dht::EncodedQuery::decode(encoded.as_slice()).unwrap();
        let back = Query::from_forward(decoded, &limits());
        prop_assert_eq!(back.unwrap(), Query { hops: hops.saturating_add(1), ..query });
    }

    #[test]
    fn conditions_round_trip_or_are_refused_for_what_they_cannot_guard(
        condition in condition(),
        op in operation(),
    ) {
        let (if_match, if_absent) = condition.to_wire();
        match Condition::from_wire(if_match.as_deref(), if_absent, &op) {
            Ok(back) => prop_assert_eq!(back, condition),
            Err(e) => {
                prop_assert!(!guards(condition, &op));
                prop_assert_eq!(e.code(), Code::InvalidArgument);
            }
        }
    }

    #[test]
    fn node_infos_from_any_bytes_convert_losslessly_or_say_what_is_missing(input in bytes(256)) {
        let Ok(info) = dht::NodeInfo::decode(input.as_slice()) else { return Ok(()) };
        match NodeSummary::try_from(info.clone()) {
            // A state this build does not know is kept as unknown.
            Ok(summary) => {
                let known = info.state.parse::<NodeState>().is_ok();
                prop_assert_eq!(summary.state.is_some(), known);
                let state = if known { info.state.clone() } else { "unknown".into() };
                prop_assert_eq!(dht::NodeInfo::from(&summary), dht::NodeInfo { state, ..info });
            }
            Err(why) => {
                prop_assert!(info.node.is_none() || info.prev.is_none() || info.next.is_none());
                prop_assert!(why.contains("lacks"), "{}", why);
            }
        }
    }

    #[test]
    fn node_summaries_round_trip(
        (me, prev, next) in (member(), member(), member()),
        successors in vec(member(), 0..4),
        predecessors in vec(member(), 0..4),
        state in prop_oneof![
            Just(Some(NodeState::Joining)),
            Just(Some(NodeState::Serving)),
            Just(Some(NodeState::Leaving)),
            Just(Some(NodeState::Left)),
            Just(None),
        ],
        counts in any::<(u64, u64, u64, u32)>(),
    ) {
        let summary = NodeSummary {
            me, prev, next, successors, predecessors, state,
            keys: counts.0, owned_keys: counts.1, replica_keys: counts.2,
            replication_factor: counts.3,
        };
        let encoded = dht::NodeInfo::from(&summary).encode_to_vec();
        let info = dht::NodeInfo::decode(encoded.as_slice()).unwrap();
        prop_assert_eq!(NodeSummary::try_from(info).unwrap(), summary);
    }

    #[test]
    fn members_and_digests_round_trip(m in member(), hash in any::<u64>(), count in any::<u64>()) {
        let encoded = registry::Node::from(&m).encode_to_vec();
        prop_assert_eq!(Member::from(registry::Node::decode(encoded.as_slice()).unwrap()), m);
        let bucket = Bucket { hash, count };
        let encoded = dht::BucketDigest::from(bucket).encode_to_vec();
        let decoded = dht::BucketDigest::decode(encoded.as_slice()).unwrap();
        prop_assert_eq!(Bucket::from(decoded), bucket);
    }

    #[test]
    fn digests_of_any_shape_are_cut_or_refused(
        start in any::<u64>(),
        end in any::<u64>(),
        wanted in 0..10_000usize,
    ) {
        // What `DigestRange` checks before it digests.
        let arc = RingArc::new(Position(start), Position(end));
        let buckets = bucket_count(arc, wanted);
        prop_assert!(buckets <= wanted.max(1));
        if wanted > 0 && buckets == wanted {
            prop_assert_eq!(MemoryStore::new().digest(arc, wanted).unwrap().len(), wanted);
        }
    }

    #[test]
    fn routes_read_from_any_metadata_or_count_as_absent(
        hops in "[ -~]{0,12}",
        owner in "[ -~]{0,24}",
        id in "[ -~]{0,20}",
    ) {
        let mut metadata = MetadataMap::new();
        let fields = [
            (RouteTaken::HOPS, &hops),
            (RouteTaken::OWNER, &owner),
            (RouteTaken::OWNER_ID, &id),
        ];
        for (name, text) in fields {
            if let Ok(value) = text.parse::<MetadataValue<_>>() {
                metadata.insert(name, value);
            }
        }
        if let Some(route) = RouteTaken::read_metadata(&metadata) {
            prop_assert_eq!(Some(route.hops), hops.trim().parse().ok());
        }
    }

    #[test]
    fn routes_round_trip_through_metadata(
        hops in any::<u32>(),
        owner in proptest::option::of(member()),
    ) {
        let route = RouteTaken { hops, owner };
        let mut metadata = MetadataMap::new();
        route.write_metadata(&mut metadata);
        prop_assert_eq!(RouteTaken::read_metadata(&metadata), Some(route));
    }

    #[test]
    fn handoff_headers_from_any_bytes_are_read_or_invalid_argument(input in bytes(256)) {
        let Ok(chunk) = dht::HandOffChunk::decode(input.as_slice()) else { return Ok(()) };
        match header(&chunk) {
            Ok(h) => {
                let neighbours = chunk.neighbors.unwrap();
                prop_assert_eq!(Some(h.next), neighbours.next.map(Member::from));
                prop_assert_eq!(h.prev, neighbours.prev.map(Member::from));
                prop_assert_eq!(h.merge, chunk.merge);
            }
            Err(e) => prop_assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn handoff_headers_round_trip(
        from in member(),
        prev in proptest::option::of(member()),
        next in member(),
        merge in any::<bool>(),
        backups in vec(member(), 0..4),
        predecessors in vec(member(), 0..4),
    ) {
        let sent = HandOffHeader { from, prev, next, merge, backups, predecessors };
        let encoded = sent.first_chunk().encode_to_vec();
        let got = header(&dht::HandOffChunk::decode(encoded.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(
            (got.from, got.prev, got.next, got.merge, got.backups, got.predecessors),
            (sent.from, sent.prev, sent.next, sent.merge, sent.backups, sent.predecessors)
        );
    }

    #[test]
    fn listing_replies_are_checked_not_trusted(
        start in 0..64u64,
        span in 0..64u64,
        limit in 0..6u32,
        after_key in proptest::option::of(key()),
        prefix in vec(0..2u8, 0..2),
        got in vec((0..140u64, vec(0..2u8, 1..3), any::<bool>()), 0..6),
        covered_end in 0..140u64,
        more in any::<bool>(),
    ) {
        let ask = RangeAsk {
            start, end: start + span, after_key, prefix, limit, values: false,
        };
        let got: Vec<Entry> = got.into_iter().map(|(p, key, live)| Entry {
            position: Position(p), key, value: live.then(Vec::new),
            version: Version::default(), expires: None,
        }).collect();
        if check_reply(&ask, &got, covered_end, more).is_ok() {
            prop_assert!((ask.start..=ask.end).contains(&covered_end));
            prop_assert!(got.len() <= limit as usize && (!more || !got.is_empty()));
            prop_assert!(got.iter().all(|e| e.position.0 <= covered_end && e.value.is_some()));
            let order = |e: &Entry| (e.position, e.key.clone());
            prop_assert!(got.windows(2).all(|w| order(&w[0]) < order(&w[1])));
        }
    }

    #[test]
    fn watch_events_from_any_bytes_are_a_change_or_ignored(input in bytes(256)) {
        let Ok(ev) = dht::WatchEvent::decode(input.as_slice()) else { return Ok(()) };
        let token = Version::from_token(&ev.version);
        match entry_of(ev.clone()) {
            Some(e) => {
                prop_assert_eq!(Some(e.version), token);
                prop_assert_eq!(e.position, key_position(&ev.key));
                prop_assert_eq!(e.value.is_none(), ev.deleted);
            }
            None => prop_assert!(token.is_none()),
        }
    }

    #[test]
    fn watch_events_round_trip(e in entry()) {
        let e = Entry { expires: None, ..e };
        let encoded = event(&e).encode_to_vec();
        let back = entry_of(dht::WatchEvent::decode(encoded.as_slice()).unwrap());
        prop_assert_eq!(back, Some(e));
    }

    #[test]
    fn watch_requests_are_checked(
        key in bytes(20),
        prefix in proptest::option::of(bytes(20)),
        since in proptest::option::of("[0-9a-fA-Fxz]{0,34}"),
        v in version(),
    ) {
        match Watched::checked(key.clone(), prefix.clone(), &limits()) {
            Ok(Watched::Prefix(p)) => prop_assert!(Some(&p) == prefix.as_ref() && p.len() <= 16),
            Ok(Watched::Key(k)) => {
                prop_assert!(prefix.is_none() && (1..=16).contains(&k.len()));
                prop_assert_eq!(k, key);
            }
            Err(e) => prop_assert_eq!(e.code(), Code::InvalidArgument),
        }
        match resume_after(since.as_deref()) {
            Ok(resumed) => prop_assert_eq!(resumed, since.as_deref().and_then(Version::from_token)),
            Err(e) => prop_assert_eq!(e.code(), Code::InvalidArgument),
        }
        prop_assert_eq!(resume_after(Some(&v.token())).unwrap(), Some(v));
    }

    #[test]
    fn batch_answers_round_trip(
        op in operation(),
        outcome in prop_oneof![
            vec(any::<u8>(), 0..8).prop_map(Outcome::Value),
            Just(Outcome::Created),
            Just(Outcome::Absent),
        ],
        v in proptest::option::of(version()),
        hops in any::<u32>(),
        owner in proptest::option::of(member()),
        failure in proptest::option::of((1..17i32, "[ -~]{0,20}")),
    ) {
        // A peer of ours answers Created only to a Set, Absent only otherwise.
        let outcome = match (outcome, &op) {
            (Outcome::Created, Operation::Get | Operation::Delete) => Outcome::Absent,
            (Outcome::Absent, Operation::Set(_)) => Outcome::Created,
            (o, _) => o,
        };
        let query = Query::new(op, b"k".to_vec(), &limits()).unwrap();
        let sent = Answer { outcome, route: RouteTaken { hops, owner }, version: v, expires: None };
        let answer = match &failure {
            None => Ok(sent.clone()),
            Some((code, message)) => {
                Err(NodeError::Peer(tonic::Status::new((*code).into(), message.clone())))
            }
        };
        let encoded = answer_to_wire(answer).encode_to_vec();
        let back = answer_from_wire(dht::BatchAnswer::decode(encoded.as_slice()).unwrap(), &query);
        match (failure, back) {
            (None, Ok(got)) => prop_assert_eq!(got, sent),
            (Some((code, _)), Err(got)) => prop_assert_eq!(got.code(), Code::from(code)),
            (failure, got) => prop_assert!(false, "sent {:?} / {:?}, got {:?}", sent, failure, got),
        }
    }

    #[test]
    fn batch_answers_from_any_bytes_are_an_answer_or_an_error(
        input in bytes(128),
        op in operation(),
    ) {
        let Ok(a) = dht::BatchAnswer::decode(input.as_slice()) else { return Ok(()) };
        let query = Query::new(op, b"k".to_vec(), &limits()).unwrap();
        let code = a.code;
        match answer_from_wire(a, &query) {
            Ok(_) => prop_assert_eq!(code, 0),
            Err(e) => prop_assert_ne!(e.code(), Code::Ok),
        }
    }
}
