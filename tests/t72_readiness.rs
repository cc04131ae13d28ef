//! Health and readiness: `/healthz` answers whenever the process does,
//! `/readyz` and `grpc.health.v1` only once the node serves its arc; and a
//! request that reaches a node while it is still joining is answered once it
//! has joined, not refused.

use crate::common;

use common::{grpc_health, http};
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::node::{Discovery, NodeConfig};
use crustyring::proto::registry::{Node as WireNode, registry_client::RegistryClient};
use crustyring::store::MemoryStore;
use std::sync::Arc;
use std::time::Duration;

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_node_is_alive_and_ready() {
    let cluster = common::cluster(1).await;
    let addr = &cluster.addrs()[0];
    let alive = http("GET", &format!("{addr}/healthz"), b"").await;
    assert_eq!(alive.status, 200);
    assert_eq!(alive.json()["state"], "serving");
    let ready = http("GET", &format!("{addr}/readyz"), b"").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );
    assert_eq!(grpc_health(addr, "").await, SERVING);
    assert_eq!(grpc_health(addr, "dht.DhtNode").await, SERVING);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_alive_not_ready_and_holds_requests_until_it_serves() {
    let cluster = LocalCluster::start(ClusterOptions::default())
        .await
        .unwrap();
    // The registry believes in a member that is not there (its port is shut):
    // a joiner referred to it keeps trying until the registry forgets it (its
    // member TTL, 3 s), then starts the ring alone.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    RegistryClient::connect(cluster.registry.clone())
        .await
        .unwrap()
        .heartbeat(WireNode {
            id: 1,
            addr: dead_addr,
        })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut config = NodeConfig::default();
    config.timeouts.request = Duration::from_secs(15);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let joining = tokio::spawn(crustyring::launch::start(
        listener,
        "127.0.0.1",
        Discovery::Registry(cluster.registry.clone()),
        config,
        Arc::new(MemoryStore::new()),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    common::eventually(Duration::from_secs(10), "the joiner answers", || {
        let url = format!("{addr}/healthz");
        async move {
            let alive = http("GET", &url, b"").await;
            match alive.status {
                200 => Ok(()),
                other => Err(format!("status {other}")),
            }
        }
    })
    .await;
    let alive = http("GET", &format!("{addr}/healthz"), b"").await;
    assert_eq!(alive.json()["state"], "joining");
    let ready = http("GET", &format!("{addr}/readyz"), b"").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(grpc_health(&addr, "").await, NOT_SERVING);
    assert_eq!(grpc_health(&addr, "dht.DhtNode").await, NOT_SERVING);
    // A write sent now waits for the join instead of being refused.
    let put = tokio::spawn({
        let url = format!("{addr}/keys/early");
        async move { http("PUT", &url, b"bird").await }
    });
    let node = joining.await.unwrap().unwrap().node;
    assert!(node.ready());
    let put = put.await.unwrap();
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let ready = http("GET", &format!("{addr}/readyz"), b"").await;
    assert_eq!(ready.status, 200);
    assert_eq!(grpc_health(&addr, "").await, SERVING);
    let _ = stop.send(true);
    cluster.shutdown().await;
}
