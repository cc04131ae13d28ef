//! Bad input gets a clear error and the node keeps serving; a next hop that is
//! down or silent costs a bounded wait, never a hang.

mod common;

use crustyring::node::{Limits, NodeConfig, PeerTimeouts};
use crustyring::proto::dht::{
    self, NeighborType, OperationType,
    dht_node_server::{DhtNode, DhtNodeServer},
};
use crustyring::ring::{Arc, Position, key_position};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request, Response, Status, Streaming};

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
            },
            "needs a value",
        ),
        (
            dht::Query {
                ty: 7,
                key: b"k".to_vec(),
                value: None,
            },
            "unknown operation type 7",
        ),
        (
            dht::Query {
                ty: 0,
                key: Vec::new(),
                value: None,
            },
            "key is empty",
        ),
        (
            dht::Query {
                ty: 0,
                key: vec![b'k'; 17],
                value: None,
            },
            "limit is 16 bytes",
        ),
        (
            dht::Query {
                ty: 2,
                key: b"k".to_vec(),
                value: Some(vec![0; 65]),
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

    // A hand-off to a node that already serves is refused and changes nothing.
    common::set(&mut c, b"keep", b"me").await;
    let chunk = dht::HandOffChunk {
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

/// A peer that takes a hand-off and then never answers a query.
#[derive(Clone)]
struct SilentPeer;

#[tonic::async_trait]
impl DhtNode for SilentPeer {
    async fn query_dht(
        &self,
        _: Request<dht::Query>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        std::future::pending().await
    }
    async fn forward_query(
        &self,
        _: Request<dht::EncodedQuery>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        std::future::pending().await
    }
    async fn register_as_neighbor(
        &self,
        _: Request<dht::NeighborRegisterInfo>,
    ) -> Result<Response<dht::PreviousNeighbors>, Status> {
        Err(Status::unimplemented("silent"))
    }
    type TransferKeysStream = tokio_stream::Empty<Result<dht::KeyValueEntry, Status>>;
    async fn transfer_keys(
        &self,
        _: Request<dht::NodeId>,
    ) -> Result<Response<Self::TransferKeysStream>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn hand_off(
        &self,
        r: Request<Streaming<dht::HandOffChunk>>,
    ) -> Result<Response<dht::HandOffAck>, Status> {
        let mut s = r.into_inner();
        while s.message().await?.is_some() {}
        Ok(Response::new(dht::HandOffAck { entries: 0 }))
    }
    async fn get_node_info(&self, _: Request<()>) -> Result<Response<dht::NodeInfo>, Status> {
        Err(Status::unimplemented("silent"))
    }
}

#[tokio::test]
async fn a_silent_next_hop_times_out_and_a_dead_one_is_unavailable() {
    let config = NodeConfig {
        timeouts: PeerTimeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_millis(500),
        },
        ..NodeConfig::default()
    };
    let cluster = common::cluster_with(1, config).await;
    let node = cluster.nodes[0].me();

    // Link a silent peer in as the node's next, owning the half of the ring
    // opposite the node.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DhtNodeServer::new(SilentPeer))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let silent_id = node.id.0.wrapping_add(1 << 63);
    let mut c = common::connect(&node.addr).await;
    c.register_as_neighbor(dht::NeighborRegisterInfo {
        ty: NeighborType::Next as i32,
        id: silent_id,
        addr: silent_addr,
    })
    .await
    .unwrap();
    // A key the silent peer owns: the first 1000 keys surely include one.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| Arc::new(Position(silent_id), node.id).contains(key_position(k.as_bytes())))
        .unwrap();

    let started = Instant::now();
    let s = c
        .query_dht(dht::Query {
            ty: 0,
            key: key.clone().into_bytes(),
            value: None,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    stop.send(()).unwrap();
    server.abort();
    let _ = server.await;
    let started = Instant::now();
    let s = c
        .query_dht(dht::Query {
            ty: 0,
            key: key.into_bytes(),
            value: None,
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
