//! What a peer or client can make a node hold, over real sockets: a hand-off
//! that never ends or stalls is refused and changes nothing. The node keeps
//! serving throughout.

mod common;

use crustyring::node::NodeConfig;
use crustyring::proto::{dht, registry};
use crustyring::ring::key_position;
use std::time::{Duration, Instant};
use tonic::Code;

/// An entry a peer would send: `key`, a value of `len` bytes.
fn entry(key: &str, len: usize) -> dht::KeyValueEntry {
    dht::KeyValueEntry {
        key: key_position(key.as_bytes()).0,
        value: vec![b'x'; len],
        raw_key: Some(key.as_bytes().to_vec()),
        version_micros: 1,
        ..Default::default()
    }
}

/// The first message of a repair merge from a node that is not in the ring.
fn merge_header() -> dht::HandOffChunk {
    let stranger = registry::Node {
        id: 3,
        addr: "http://127.0.0.1:3".into(),
    };
    dht::HandOffChunk {
        from: Some(stranger.clone()),
        neighbors: Some(dht::PreviousNeighbors {
            prev: None,
            next: Some(stranger),
        }),
        merge: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_never_ending_handoff_is_refused_and_changes_nothing() {
    let config = NodeConfig {
        max_peer_stream_bytes: 256 * 1024,
        ..NodeConfig::default()
    };
    let cluster = common::cluster_with(1, config).await;
    let addr = cluster.addrs()[0].clone();
    let mut c = common::connect(&addr).await;
    common::set(&mut c, b"keep", b"me").await;
    let before = cluster.nodes[0].key_count();
    // A merge the node would take, followed by 4 KiB messages without end.
    let chunks = std::iter::once(merge_header()).chain((0u64..).map(|i| {
        dht::HandOffChunk {
            entries: (0..4)
                .map(|j| entry(&format!("planted-{i}-{j}"), 1000))
                .collect(),
            ..Default::default()
        }
    }));
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        c.hand_off(tokio_stream::iter(chunks)),
    )
    .await
    .expect("refused within 10 s")
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-peer-stream-mb"),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing was taken, and the node still serves.
    assert_eq!(cluster.nodes[0].key_count(), before);
    let mut c = common::connect(&addr).await;
    assert_eq!(common::get(&mut c, b"planted-0-0").await.value, None);
    assert_eq!(
        common::get(&mut c, b"keep").await.value.as_deref(),
        Some(&b"me"[..])
    );
    common::set(&mut c, b"after", b"fine").await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handoff_is_dropped_within_the_request_timeout() {
    let mut config = NodeConfig::default();
    config.timeouts.request = Duration::from_millis(500);
    let cluster = common::cluster_with(1, config).await;
    let addr = cluster.addrs()[0].clone();
    let mut c = common::connect(&addr).await;
    let before = cluster.nodes[0].key_count();
    // The header and one entry, then nothing, never.
    let first = dht::HandOffChunk {
        entries: vec![entry("planted", 10)],
        ..merge_header()
    };
    let chunks =
        tokio_stream::StreamExt::chain(tokio_stream::iter([first]), tokio_stream::pending());
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), c.hand_off(chunks))
        .await
        .expect("dropped within 10 s")
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--request-timeout-ms"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(cluster.nodes[0].key_count(), before);
    assert_eq!(common::get(&mut c, b"planted").await.value, None);
    cluster.shutdown().await;
}
