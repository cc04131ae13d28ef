//! Bad input gets a clear error and the node keeps serving; a next hop that is
//! down or silent costs a bounded wait, never a hang.

use crate::common;

use crustyring::node::{Limits, NodeConfig};
use crustyring::proto::dht::{self, OperationType};
use crustyring::ring::{Position, key_position};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

fn small_limits() -> NodeConfig {
    NodeConfig {
        limits: Limits {
            max_key_bytes: 16,
            max_value_bytes: 64,
        },
        ..NodeConfig::default()
    }
}

async fn raw_query(addr: &str, q: dht::Query) -> Status {
    common::connect(addr).await.query_dht(q).await.unwrap_err()
}

#[tokio::test]
async fn malformed_queries_get_invalid_argument_saying_what_is_wrong() {
    let cluster = common::cluster_with(2, small_limits()).await;
    let addr = cluster.addrs()[0].clone();
    let cases = [
        (
            dht::Query {
                ty: 2,
                key: b"k".to_vec(),
                value: None,
                ..dht::Query::default()
            },
            "needs a value",
        ),
        (
            dht::Query {
                ty: 7,
                key: b"k".to_vec(),
                value: None,
                ..dht::Query::default()
            },
            "unknown operation type 7",
        ),
        (
            dht::Query {
                ty: 0,
                key: Vec::new(),
                value: None,
                ..dht::Query::default()
            },
            "key is empty",
        ),
        (
            dht::Query {
                ty: 0,
                key: vec![b'k'; 17],
                value: None,
                ..dht::Query::default()
            },
            "limit is 16 bytes",
        ),
        (
            dht::Query {
                ty: 2,
                key: b"k".to_vec(),
                value: Some(vec![0; 65]),
                ..dht::Query::default()
            },
            "limit is 64 bytes",
        ),
    ];
    for (query, says) in cases {
        let status = raw_query(&addr, query).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{says}");
        assert!(
            status.message().contains(says),
            "{:?} should say {says:?}",
            status.message()
        );
    }
    // A grossly oversized message is refused unread, naming the byte limit.
    let huge = dht::Query {
        ty: 2,
        key: b"k".to_vec(),
        value: Some(vec![0; 1 << 20]),
        ..dht::Query::default()
    };
    let status = raw_query(&addr, huge).await;
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::OutOfRange),
        "{status:?}"
    );
    assert!(status.message().contains("limit"), "{status:?}");
    // Nothing was stored, and the node still serves.
    let mut c = common::connect(&addr).await;
    let r = common::set(&mut c, b"k", b"fine").await;
    assert_eq!((r.error, r.value), (None, None));
    cluster.shutdown().await;
}

#[tokio::test]
async fn malformed_peer_messages_are_refused() {
    let cluster = common::cluster(2).await;
    let addr = cluster.addrs()[0].clone();
    let mut c = common::connect(&addr).await;

    let bad_ty = dht::NeighborRegisterInfo {
        ty: 9,
        id: 1,
        addr: "http://127.0.0.1:1".into(),
    };
    let s = c.register_as_neighbor(bad_ty).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("unknown neighbour type 9"), "{s:?}");

    let mismatch = dht::EncodedQuery {
        ty: OperationType::Set as i32,
        key: key_position(b"a").0,
        value: Some(b"v".to_vec()),
        raw_key: Some(b"b".to_vec()),
        hops: 0,
        ..dht::EncodedQuery::default()
    };
    let s = c.forward_query(mismatch).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    let position_only_set = dht::EncodedQuery {
        ty: OperationType::Set as i32,
        key: 5,
        value: Some(b"v".to_vec()),
        ..Default::default()
    };
    let s = c.forward_query(position_only_set).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("raw_key"), "{s:?}");

    // A join hand-off to a node that already serves is refused, and so is a leave
    // hand-off from a node that is not its next; neither changes anything.
    common::set(&mut c, b"keep", b"me").await;
    let stranger = crustyring::proto::registry::Node {
        id: 3,
        addr: "http://127.0.0.1:3".into(),
    };
    let leave = dht::HandOffChunk {
        from: Some(stranger.clone()),
        neighbors: Some(dht::PreviousNeighbors {
            prev: None,
            next: Some(stranger),
        }),
        entries: vec![dht::KeyValueEntry {
            key: key_position(b"planted").0,
            value: b"x".to_vec(),
            raw_key: Some(b"planted".to_vec()),
            ..Default::default()
        }],
        merge: false,
        last: true,
        ..Default::default()
    };
    // A stream cut short (no final message) is refused whatever it holds, even
    // from the node's true next neighbour.
    let next = cluster.nodes[0].view_snapshot().next;
    let next = crustyring::proto::registry::Node::from(&next);
    let cut_short = dht::HandOffChunk {
        from: Some(next.clone()),
        neighbors: Some(dht::PreviousNeighbors {
            prev: None,
            next: Some(next),
        }),
        last: false,
        ..leave.clone()
    };
    let s = c
        .hand_off(tokio_stream::iter(vec![cut_short]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Aborted, "{s:?}");
    assert_eq!(common::get(&mut c, b"planted").await.value, None);
    let s = c
        .hand_off(tokio_stream::iter(vec![leave]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert_eq!(common::get(&mut c, b"planted").await.value, None);
    let chunk = dht::HandOffChunk {
        from: None,
        neighbors: Some(dht::PreviousNeighbors {
            prev: Some(crustyring::proto::registry::Node {
                id: 1,
                addr: "http://127.0.0.1:1".into(),
            }),
            next: Some(crustyring::proto::registry::Node {
                id: 2,
                addr: "http://127.0.0.1:2".into(),
            }),
        }),
        entries: Vec::new(),
        merge: false,
        last: true,
        ..Default::default()
    };
    let s = c
        .hand_off(tokio_stream::iter(vec![chunk]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(
        common::get(&mut c, b"keep").await.value.as_deref(),
        Some(&b"me"[..])
    );
    let view = cluster.nodes[0].view_snapshot();
    assert_ne!(view.prev.id, Position(1));
    cluster.shutdown().await;
}

#[tokio::test]
async fn malformed_replication_messages_are_refused_and_store_nothing() {
    let cluster = common::cluster(1).await;
    let addr = cluster.addrs()[0].clone();
    let mut c = common::connect(&addr).await;
    let entry = |key: &[u8], position: u64, value: Vec<u8>| dht::KeyValueEntry {
        key: position,
        value,
        raw_key: Some(key.to_vec()),
        version_micros: 1,
        ..Default::default()
    };
    let cases = [
        (
            "a key that does not hash to its position",
            entry(b"k", 5, b"v".to_vec()),
        ),
        (
            "an empty key",
            entry(b"", key_position(b"").0, b"v".to_vec()),
        ),
        (
            "a value over the limit",
            entry(
                b"big",
                key_position(b"big").0,
                vec![0; Limits::DEFAULT_MAX_VALUE_BYTES + 1],
            ),
        ),
        (
            "a version far ahead of the node's clock",
            dht::KeyValueEntry {
                version_micros: u64::MAX,
                ..entry(b"future", key_position(b"future").0, b"v".to_vec())
            },
        ),
        (
            "no raw key",
            dht::KeyValueEntry {
                key: 5,
                ..Default::default()
            },
        ),
    ];
    for (what, bad) in cases {
        // One good entry rides along: the whole message is refused.
        let good = entry(b"good", key_position(b"good").0, b"v".to_vec());
        let request = dht::ReplicateRequest {
            entries: vec![good, bad],
        };
        let s = c.replicate(request).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
    }
    assert_eq!(cluster.nodes[0].key_count(), 0);

    for (start, end, buckets) in [(0, 0, 0), (0, 0, 5000), (10, 12, 3)] {
        let s = c
            .digest_range(dht::DigestRequest {
                start,
                end,
                buckets,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{buckets} buckets: {s:?}");
    }
    let ok = c
        .digest_range(dht::DigestRequest {
            start: 10,
            end: 12,
            buckets: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.buckets.len(), 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_query_forwarded_too_often_fails_with_unavailable() {
    let cluster = common::cluster(2).await;
    let node = &cluster.nodes[0];
    // A position this node does not own, so it must forward it once more.
    let view = node.view_snapshot();
    let elsewhere = view.next.id;
    let mut c = common::connect(&view.me.addr).await;
    let s = c
        .forward_query(dht::EncodedQuery {
            ty: OperationType::Get as i32,
            key: elsewhere.0,
            hops: 128,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("forwarded 128 times"), "{s:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_port_is_dropped_and_the_node_keeps_serving() {
    let cluster = common::cluster(1).await;
    let addr = cluster.addrs()[0].clone();
    let hostport = addr.trim_start_matches("http://").to_string();
    let junk: [&[u8]; 3] = [
        b"\x00\x01\x02garbage\xff\xfe\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ];
    for bytes in junk {
        let mut s = tokio::net::TcpStream::connect(&hostport).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut sink = Vec::new();
        // The server answers or closes; either way within a bound.
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "connection left hanging after {bytes:?}");
    }
    let mut c = common::connect(&addr).await;
    common::set(&mut c, b"still", b"here").await;
    assert_eq!(
        common::get(&mut c, b"still").await.value.as_deref(),
        Some(&b"here"[..])
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_silent_next_hop_times_out_and_a_dead_one_is_unavailable() {
    let common::SilentOwner {
        cluster,
        node,
        key,
        server,
    } = common::silent_owner().await;
    let mut c = common::connect(&node.addr).await;
    let started = Instant::now();
    let s = c
        .query_dht(dht::Query {
            ty: 0,
            key: key.clone().into_bytes(),
            value: None,
            ..dht::Query::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    server.stop().await;
    let started = Instant::now();
    let s = c
        .query_dht(dht::Query {
            ty: 0,
            key: key.into_bytes(),
            value: None,
            ..dht::Query::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{s:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Keys the node owns itself still work.
    let mine = (0..1000)
        .map(|i| format!("m{i}"))
        .find(|k| {
            cluster.nodes[0]
                .view_snapshot()
                .arc()
                .contains(key_position(k.as_bytes()))
        })
        .unwrap();
    common::set(&mut c, mine.as_bytes(), b"v").await;
    cluster.shutdown().await;
}
