//! What a peer or client can make a node hold, over real sockets: a hand-off
//! that never ends or stalls is refused and changes nothing; a request body that
//! stalls gets a 408; connections that send nothing, or headers too slowly, are
//! closed; connections over the limit wait for one to close. The node keeps
//! serving throughout.

use crate::common;

use axum::routing::get;
use crustyring::node::NodeConfig;
use crustyring::proto::{dht, registry};
use crustyring::ring::key_position;
use crustyring::server::{ServeLimits, Serving, serve};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
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

/// Sends the hand-off `chunks` with `c`: it must be refused within 10 s with
/// `code`, saying which `flag` sets the limit. Returns how long that took.
async fn refused(
    c: &mut crustyring::client::NodeClient,
    chunks: impl Stream<Item = dht::HandOffChunk> + Send + 'static,
    code: Code,
    flag: &str,
) -> Duration {
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), c.hand_off(chunks))
        .await
        .expect("refused within 10 s")
        .unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(flag), "{status:?}");
    started.elapsed()
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
    refused(
        &mut c,
        tokio_stream::iter(chunks),
        Code::ResourceExhausted,
        "--max-peer-stream-mb",
    )
    .await;
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
    let took = refused(
        &mut c,
        chunks,
        Code::DeadlineExceeded,
        "--request-timeout-ms",
    )
    .await;
    assert!(took >= Duration::from_millis(500));
    assert_eq!(cluster.nodes[0].key_count(), before);
    assert_eq!(common::get(&mut c, b"planted").await.value, None);
    cluster.shutdown().await;
}

/// Reads what the server sends on `s` until it closes the connection (or 10 s
/// pass: a failure).
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection within 10 s")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_408_within_the_body_timeout() {
    let limit = Duration::from_millis(300);
    let mut config = NodeConfig::default();
    config.serving.body_timeout = limit;
    let cluster = common::cluster_with(1, config).await;
    let addr = cluster.addrs()[0].clone();
    let hostport = addr.trim_start_matches("http://");
    for (path, half) in [
        ("/keys/slow", &b"01234567890123456789"[..]),
        ("/batch", &br#"{"ops": [{"op": "put", "#[..]),
    ] {
        let mut s = TcpStream::connect(hostport).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
        );
        let head = head.replace("PUT /batch", "POST /batch");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(half).await.unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("--body-timeout-ms"), "{path}: {answer}");
        assert!(started.elapsed() >= limit, "{path}: early");
    }
    // Nothing was written, and the node still serves.
    let answer = common::http("GET", &format!("{addr}/keys/slow"), b"").await;
    assert_eq!(answer.status, 404);
    let answer = common::http("PUT", &format!("{addr}/keys/fast"), b"v").await;
    assert_eq!(answer.status, 201);
    cluster.shutdown().await;
}

/// A server with `limits` answering `GET /` with "ok", on an ephemeral port;
/// stops when the sender is dropped or sent to.
async fn small_server(limits: ServeLimits) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostport = listener.local_addr().unwrap().to_string();
    let router = axum::Router::new().route("/", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = Serving {
        limits,
        ..Serving::default()
    };
    tokio::spawn(serve(listener, router, serving, async {
        let _ = stopped.await;
    }));
    (hostport, stop)
}

/// Sends `GET /` on `s` and reads the answer until the server closes.
async fn get_root(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(s).await
}

#[tokio::test]
async fn slow_or_silent_connections_are_closed_within_the_header_timeout() {
    let limit = Duration::from_millis(300);
    let (hostport, _stop) = small_server(ServeLimits {
        header_timeout: limit,
        ..ServeLimits::default()
    })
    .await;
    let stalls: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        // Part of the HTTP/2 preface: not yet known to be HTTP/2 or not.
        b"PRI * HTTP/2.0\r\n",
        // The whole preface, then no SETTINGS and no request.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for sent in stalls {
        let mut s = TcpStream::connect(&hostport).await.unwrap();
        s.write_all(sent).await.unwrap();
        let started = Instant::now();
        read_until_closed(&mut s).await;
        let took = started.elapsed();
        assert!(
            took >= limit.mul_f32(0.9),
            "{:?} closed early",
            String::from_utf8_lossy(sent)
        );
    }
    // A prompt client is served.
    let mut s = TcpStream::connect(&hostport).await.unwrap();
    let answer = get_root(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_one_to_close() {
    let (hostport, _stop) = small_server(ServeLimits {
        max_connections: 2,
        ..ServeLimits::default()
    })
    .await;
    // Two idle connections take both places (each proven accepted by an answer).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&hostport).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("answered within 5 s")
            .unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // A third waits unanswered while they stay open...
    let third = tokio::spawn(async move {
        let mut s = TcpStream::connect(&hostport).await.unwrap();
        get_root(&mut s).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection was served");
    // ...and is served once one of them closes.
    drop(held.pop());
    let answer = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served within 5 s of a place freeing")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
