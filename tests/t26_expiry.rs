//! Expiry: a key written with a time to live (`PUT ?ttl=`, gRPC `ttl_ms`) shows
//! what it has left, reads as absent on every node once it has passed, is
//! purged from every copy, and keeps its expiry through replication and
//! hand-offs.

use crate::common;

use common::{eventually, http};
use crustyring::client;
use crustyring::proto::dht::{self, OperationType};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_gone_from_every_node_and_every_copy() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    let put = http("PUT", &format!("{}/keys/short?ttl=1s", addrs[0]), b"v").await;
    assert_eq!(put.status, 201);
    assert_eq!(put.json()["ttl_ms"], 1000);
    for addr in &addrs {
        let read = http("GET", &format!("{addr}/keys/short"), b"").await;
        assert_eq!(read.status, 200, "alive through {addr}");
        let left: u64 = read.header("x-crusty-ttl-ms").unwrap().parse().unwrap();
        assert!((1..=1000).contains(&left), "{left} ms left");
        assert_eq!(read.json()["ttl_ms"], left);
    }
    eventually(
        Duration::from_secs(10),
        "the key reads as absent everywhere",
        || {
            let addrs = addrs.clone();
            async move {
                for addr in &addrs {
                    let status = http("GET", &format!("{addr}/keys/short"), b"").await.status;
                    if status != 404 {
                        return Err(format!("{addr} answered {status}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    let listed = http("GET", &format!("{}/keys", addrs[1]), b"").await.json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 0, "not listed");
    eventually(Duration::from_secs(10), "every copy purged", || {
        let nodes = cluster.nodes.clone();
        async move {
            for node in &nodes {
                if node
                    .local_entries()
                    .unwrap()
                    .iter()
                    .any(|e| e.key == b"short")
                {
                    return Err(format!("{} still holds it", node.me().addr));
                }
            }
            Ok(())
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_travels_with_replicas_and_hand_offs() {
    let mut cluster = common::cluster(2).await;
    let entry = cluster.addrs()[0].clone();
    for i in 0..40 {
        let put = http("PUT", &format!("{entry}/keys/long-{i}?ttl=1h"), b"v").await;
        assert_eq!(put.status, 201);
    }
    cluster.add_node(0).await.unwrap();
    cluster.add_node(0).await.unwrap();
    common::await_ring(&cluster.addrs(), Duration::from_secs(20)).await;
    for addr in cluster.addrs() {
        let read = http("GET", &format!("{addr}/keys/long-7"), b"").await;
        let left: u64 = read.header("x-crusty-ttl-ms").unwrap().parse().unwrap();
        assert!(
            left > 3_500_000 && left <= 3_600_000,
            "{left} ms left via {addr}"
        );
    }
    eventually(
        Duration::from_secs(20),
        "every copy carries the expiry",
        || {
            let nodes = cluster.nodes.clone();
            async move {
                let copies: Vec<_> = nodes
                    .iter()
                    .flat_map(|n| n.local_entries().unwrap())
                    .filter(|e| e.key.starts_with(b"long-"))
                    .collect();
                if copies.iter().any(|e| e.expires.is_none()) {
                    return Err("a copy lost its expiry".into());
                }
                match copies.len() {
                    120 => Ok(()),
                    n => Err(format!("{n} copies of 40 keys")),
                }
            }
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_times_to_live_are_refused() {
    let cluster = common::cluster(1).await;
    let node = &cluster.addrs()[0];
    for ttl in ["0", "0s", "abc", "5x", "4000d", "-1", ""] {
        let put = http("PUT", &format!("{node}/keys/k?ttl={ttl}"), b"v").await;
        assert_eq!(put.status, 400, "ttl={ttl}");
        assert!(
            put.json()["detail"].as_str().unwrap().contains("ttl"),
            "ttl={ttl}"
        );
    }
    assert_eq!(
        http("GET", &format!("{node}/keys/k"), b"").await.status,
        404
    );

    let mut c = common::connect(node).await;
    let with_ttl = |ty, ttl_ms| dht::Query {
        ttl_ms: Some(ttl_ms),
        ..client::request(ty, b"g", Some(b"v"))
    };
    let get = dht::Query {
        value: None,
        ..with_ttl(OperationType::Get, 1000)
    };
    assert_eq!(
        c.query_dht(get).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let zero = with_ttl(OperationType::Set, 0);
    assert_eq!(
        c.query_dht(zero).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    c.query_dht(with_ttl(OperationType::Set, 60_000))
        .await
        .unwrap();
    let read = client::query(&mut c, OperationType::Get, b"g", None)
        .await
        .unwrap();
    assert!(
        read.ttl_ms.is_some_and(|ms| ms > 0 && ms <= 60_000),
        "{:?}",
        read.ttl_ms
    );
    cluster.shutdown().await;
}
