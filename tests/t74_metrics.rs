//! `GET /metrics`: every node and the registry expose Prometheus metrics, and the
//! counters move with the traffic they count: requests by interface, operation
//! and outcome, forwards, keys held, hand-offs, store commits, registry calls.

use crate::common;

use common::{TempDir, eventually, http};
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::proto::dht::OperationType;
use std::time::Duration;

/// One scrape: sample lines by their series (name and labels).
struct Scrape(String);

impl Scrape {
    async fn of(addr: &str) -> Scrape {
        let answer = http("GET", &format!("{addr}/metrics"), b"").await;
        assert_eq!(answer.status, 200);
        let media = answer.header("content-type").unwrap_or_default();
        assert!(media.starts_with("application/openmetrics-text"), "{media}");
        let text = String::from_utf8(answer.body).expect("metrics are text");
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with # EOF"
        );
        Scrape(text)
    }

    /// The value of `series` (`name{labels}` exactly as exposed); 0 if absent
    /// (a counter never incremented has no series yet).
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().expect("a number"))
    }

    /// The sum of every series of `name` whose labels contain `filter`.
    fn sum(&self, name: &str, filter: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| l.contains(filter))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

fn requests(op: &str, interface: &str, outcome: &str) -> String {
    format!(
        r#"crustyring_requests_total{{operation="{op}",interface="{interface}",outcome="{outcome}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_move_with_the_traffic() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    let entry = &addrs[0];
    common::await_routing_tables(&addrs).await;
    let before = Scrape::of(entry).await;

    for i in 0..20 {
        let put = http("PUT", &format!("{entry}/keys/metric-{i}"), b"v").await;
        assert_eq!(put.status, 201);
        assert_eq!(
            http("GET", &format!("{entry}/keys/metric-{i}"), b"")
                .await
                .status,
            200
        );
    }
    for i in 0..5 {
        let missing = http("GET", &format!("{entry}/keys/absent-{i}"), b"").await;
        assert_eq!(missing.status, 404);
    }
    let bad = http("GET", &format!("{entry}/keys/%zz"), b"").await;
    assert_eq!(bad.status, 400);
    let mut grpc = common::connect(entry).await;
    for i in 0..10 {
        let key = format!("metric-{i}");
        crustyring::client::query(&mut grpc, OperationType::Get, key.as_bytes(), None)
            .await
            .unwrap();
    }

    let after = Scrape::of(entry).await;
    let delta = |series: String| after.value(&series) - before.value(&series);
    assert_eq!(delta(requests("set", "http", "ok")), 20.0);
    assert_eq!(delta(requests("get", "http", "ok")), 20.0);
    assert_eq!(delta(requests("get", "http", "not_found")), 5.0);
    assert_eq!(delta(requests("get", "http", "invalid_argument")), 1.0);
    assert_eq!(delta(requests("get", "grpc", "ok")), 10.0);
    let latencies =
        r#"crustyring_request_duration_seconds_count{operation="set",interface="http"}"#;
    assert_eq!(delta(latencies.to_string()), 20.0);
    // Answered requests that reached an owner: 20 PUTs, 25 GETs over HTTP.
    let routed = after.sum("crustyring_request_forwards_count", r#"interface="http""#)
        - before.sum("crustyring_request_forwards_count", r#"interface="http""#);
    assert_eq!(routed, 45.0);

    // What the nodes forwarded is what they counted as peer requests, and in
    // a stable ring every forward goes straight to the owner.
    let (mut peer_requests, mut forwards) = (0.0, 0.0);
    for addr in &addrs {
        let s = Scrape::of(addr).await;
        peer_requests += s.sum("crustyring_requests_total", r#"interface="peer""#);
        forwards += s.value("crustyring_forwards_total");
    }
    assert!(
        after.value("crustyring_forwards_total") > 0.0,
        "some of 20 keys are owned by the other 2 nodes"
    );
    assert_eq!(peer_requests, forwards);
    let one_hop = after.value(r#"crustyring_request_forwards_bucket{le="1.0",interface="http"}"#);
    assert_eq!(
        one_hop,
        after.sum("crustyring_request_forwards_count", r#"interface="http""#)
    );

    // Gauges describe the node as it is now: 20 keys, each with 3 copies.
    eventually(Duration::from_secs(10), "key gauges", || {
        let addrs = addrs.clone();
        async move {
            let (mut owned, mut replica) = (0.0, 0.0);
            for addr in &addrs {
                let s = Scrape::of(addr).await;
                owned += s.value(r#"crustyring_keys{arc="owned"}"#);
                replica += s.value(r#"crustyring_keys{arc="replica"}"#);
                if s.value(r#"crustyring_node_state{state="serving"}"#) != 1.0 {
                    return Err(format!("{addr} does not report serving"));
                }
                if s.value("crustyring_ring_members") != 3.0 {
                    return Err(format!("{addr} does not know 3 members"));
                }
            }
            match (owned, replica) {
                (20.0, 40.0) => Ok(()),
                other => Err(format!("owned and replica keys: {other:?}")),
            }
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_offs_store_commits_and_registry_calls_are_counted() {
    let dir = TempDir::new("metrics");
    let options = ClusterOptions {
        data_dir: Some(dir.path().into()),
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(options).await.unwrap();
    let first = cluster.add_node(0).await.unwrap().me().addr;
    for i in 0..50 {
        let put = http("PUT", &format!("{first}/keys/moving-{i}"), b"v").await;
        assert_eq!(put.status, 201);
    }
    let commits = Scrape::of(&first)
        .await
        .value("crustyring_store_commit_duration_seconds_count");
    assert!(commits >= 1.0, "50 durable writes took at least one commit");

    let joiner = cluster.add_node(0).await.unwrap().me().addr;
    let sent = Scrape::of(&first).await;
    let received = Scrape::of(&joiner).await;
    let join = r#"{direction="sent",reason="join"}"#;
    let taken = r#"{direction="received",reason="join"}"#;
    assert_eq!(sent.value(&format!("crustyring_handoffs_total{join}")), 1.0);
    assert_eq!(
        received.value(&format!("crustyring_handoffs_total{taken}")),
        1.0
    );
    let moved = sent.value(&format!("crustyring_handoff_entries_total{join}"));
    assert_eq!(
        moved,
        received.value(&format!("crustyring_handoff_entries_total{taken}"))
    );
    assert!(moved > 0.0, "the joiner took part of 50 keys");

    let registry = Scrape::of(&cluster.registry).await;
    let registered = r#"crustyring_registry_requests_total{method="RegisterNode",outcome="ok"}"#;
    assert_eq!(registry.value(registered), 2.0);
    assert_eq!(registry.value("crustyring_registry_members"), 2.0);
    eventually(Duration::from_secs(10), "heartbeats counted", || {
        let registry = cluster.registry.clone();
        async move {
            let s = Scrape::of(&registry).await;
            let beats = r#"crustyring_registry_requests_total{method="Heartbeat",outcome="ok"}"#;
            match s.value(beats) {
                n if n >= 2.0 => Ok(()),
                n => Err(format!("{n} heartbeats")),
            }
        }
    })
    .await;
    cluster.shutdown().await;
}
