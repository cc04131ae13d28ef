//! Watch: a key's changes as they happen (gRPC `Watch`, Server-Sent Events),
//! in order, from any node, resumable after any version, and surviving the
//! owner's death (the watch follows the key to its new owner).

use crate::common;

use common::{Proc, http};
use crustyring::proto::dht;
use std::time::Duration;
use tonic::Streaming;

async fn next(stream: &mut Streaming<dht::WatchEvent>) -> dht::WatchEvent {
    tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("an event within 15 s")
        .expect("the stream stays up")
        .expect("the stream does not end")
}

async fn watch(addr: &str, key: &str, since: Option<String>) -> Streaming<dht::WatchEvent> {
    let request = dht::WatchRequest {
        key: key.as_bytes().to_vec(),
        since,
        ..Default::default()
    };
    common::connect(addr)
        .await
        .watch(request)
        .await
        .unwrap()
        .into_inner()
}

fn value(e: &dht::WatchEvent) -> String {
    String::from_utf8(e.value.clone().unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_change_in_order_and_resumes_after_a_version() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    common::await_routing_tables(&addrs).await;
    assert_eq!(
        http("PUT", &format!("{}/keys/w", addrs[0]), b"v0")
            .await
            .status,
        201
    );
    let mut events = watch(&addrs[1], "w", None).await;
    let first = next(&mut events).await;
    assert_eq!(value(&first), "v0", "it starts with the current state");
    for (i, addr) in addrs.iter().enumerate() {
        let put = http(
            "PUT",
            &format!("{addr}/keys/w"),
            format!("v{}", i + 1).as_bytes(),
        )
        .await;
        assert_eq!(put.status, 200);
    }
    assert_eq!(
        http("DELETE", &format!("{}/keys/w", addrs[2]), b"")
            .await
            .status,
        200
    );
    let mut seen = vec![first.clone()];
    for _ in 0..4 {
        seen.push(next(&mut events).await);
    }
    let values: Vec<String> = seen.iter().map(value).collect();
    assert_eq!(values, ["v0", "v1", "v2", "v3", ""]);
    assert!(seen[4].deleted);
    assert!(
        seen.windows(2).all(|w| w[0].version < w[1].version),
        "in version order"
    );

    let mut resumed = watch(&addrs[0], "w", Some(seen[1].version.clone())).await;
    let again: Vec<String> = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .iter()
    .map(value)
    .collect();
    assert_eq!(again, ["v2", "v3", ""], "nothing after the version missed");

    let mut c = common::connect(&addrs[0]).await;
    let bad = dht::WatchRequest {
        key: b"w".to_vec(),
        since: Some("yesterday".into()),
        ..Default::default()
    };
    assert_eq!(
        c.watch(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_each_change_of_its_keys_once_from_every_owner() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    common::await_routing_tables(&addrs).await;
    let request = dht::WatchRequest {
        prefix: Some(b"p/".to_vec()),
        ..Default::default()
    };
    let mut events = common::connect(&addrs[0])
        .await
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    for i in 0..6 {
        let addr = &addrs[i % 3];
        assert_eq!(
            http("PUT", &format!("{addr}/keys/p/{i}"), b"v")
                .await
                .status,
            201
        );
        assert_eq!(
            http("PUT", &format!("{addr}/keys/q/{i}"), b"v")
                .await
                .status,
            201
        );
    }
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.push(String::from_utf8(next(&mut events).await.key).unwrap());
    }
    keys.sort();
    assert_eq!(
        keys,
        ["p/0", "p/1", "p/2", "p/3", "p/4", "p/5"],
        "each once, only the prefix"
    );
    // Each change is logged by its owner and two replicas: no copy comes twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), events.message()).await;
    assert!(extra.is_err(), "no duplicate: {extra:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_each_change_with_its_version_as_id() {
    use http_body_util::BodyExt;
    let cluster = common::cluster(2).await;
    let node = cluster.addrs()[0].clone();
    assert_eq!(
        http("PUT", &format!("{node}/keys/sse"), b"first")
            .await
            .status,
        201
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    let response = client
        .get(format!("{node}/keys/sse?watch=true").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // The second write goes in once the stream has shown the first: the watch
    // starts from the key's state when its stream is first read, so a write
    // made before that would show as that state rather than as a change.
    let mut writer = None;
    while text.matches("event: put").count() < 2 {
        if writer.is_none() && text.contains("event: put") {
            let node = node.clone();
            writer = Some(tokio::spawn(async move {
                http("PUT", &format!("{node}/keys/sse"), b"second")
                    .await
                    .status
            }));
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("two events within 15 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(
        writer.expect("the second write went in").await.unwrap(),
        200
    );
    assert!(
        text.contains("\"value\":\"first\"") && text.contains("\"value\":\"second\""),
        "{text}"
    );
    assert!(
        text.contains("id: "),
        "each event names its version: {text}"
    );
    let bad = http(
        "GET",
        &format!("{node}/keys/sse?watch=true&since=nope"),
        b"",
    )
    .await;
    assert_eq!(bad.status, 400);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_the_key_when_its_owner_is_killed() {
    let registry = common::registry_process();
    let fast = ["--probe-interval-ms", "200"];
    let mut nodes: Vec<Proc> = (0..4)
        .map(|_| common::dht_process(&registry.addr, &fast))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&addrs, Duration::from_secs(20)).await;
    common::await_routing_tables(&addrs).await;
    let owner = http("GET", &format!("{}/ring/owner/followed", addrs[0]), b"")
        .await
        .json()["owner"]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = addrs.iter().position(|a| *a == owner).unwrap();
    let entry = addrs[(victim + 1) % 4].clone();
    let writer = addrs[(victim + 2) % 4].clone();

    assert_eq!(
        http("PUT", &format!("{writer}/keys/followed"), b"before")
            .await
            .status,
        201
    );
    let mut events = watch(&entry, "followed", None).await;
    assert_eq!(value(&next(&mut events).await), "before");

    nodes[victim].signal("KILL");
    nodes[victim].wait_exit(Duration::from_secs(10));
    let live: Vec<String> = addrs.iter().filter(|a| **a != owner).cloned().collect();
    common::await_ring(&live, Duration::from_secs(20)).await;
    common::eventually(Duration::from_secs(20), "a write after the failure", || {
        let writer = writer.clone();
        async move {
            match http("PUT", &format!("{writer}/keys/followed"), b"after")
                .await
                .status
            {
                200 => Ok(()),
                s => Err(format!("PUT answered {s}")),
            }
        }
    })
    .await;
    let mut after = next(&mut events).await;
    // The new owner may first resend the state it holds.
    if value(&after) == "before" {
        after = next(&mut events).await;
    }
    assert_eq!(value(&after), "after", "the watch found the new owner");
    drop(registry);
}
