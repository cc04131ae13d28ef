//! One-hop routing: every node learns the ring's members, forwards a query
//! straight to its owner, and says so (`x-crusty-hops`, `x-crusty-owner`); a
//! stale table costs a hop, never a wrong answer; clients that route themselves
//! need no forward at all.

use crate::common;

use common::{cluster_with, connect, http};
use crustyring::client::RingClient;
use crustyring::node::NodeConfig;
use crustyring::proto::dht::{self, OperationType};
use crustyring::ring::{Position, key_position, owner};
use std::collections::BTreeMap;
use std::time::Duration;

/// One copy of each key and no periodic sweeps: the tests decide when tables
/// are relearned (`Node::sweep`), so a stale table is stale on purpose.
fn config() -> NodeConfig {
    let mut c = NodeConfig::default();
    c.replication.factor = 1;
    c.maintenance.table_refresh = Duration::from_secs(3600);
    c
}

/// Sweeps every node's table until each knows all `n` members (successor
/// lists, which sweeps follow, settle a few probe intervals after joins).
async fn learn_all(cluster: &crustyring::cluster::LocalCluster, n: usize) {
    common::eventually(
        Duration::from_secs(20),
        "every table is complete",
        || async {
            let mut sizes = Vec::new();
            for node in &cluster.nodes {
                node.sweep().await;
                sizes.push(node.route_members().len());
            }
            match sizes.iter().all(|s| *s == n) {
                true => Ok(()),
                false => Err(format!("table sizes {sizes:?}")),
            }
        },
    )
    .await;
}

/// The cluster's members: ID to address.
fn members(cluster: &crustyring::cluster::LocalCluster) -> BTreeMap<Position, String> {
    cluster
        .nodes
        .iter()
        .map(|n| (n.me().id, n.me().addr))
        .collect()
}

/// The owner of `key` among `addrs` by ID.
fn true_owner(ring: &BTreeMap<Position, String>, key: &str) -> String {
    owner(ring, key_position(key.as_bytes())).unwrap().1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_stable_ring_every_query_takes_at_most_one_forward() {
    let cluster = cluster_with(8, config()).await;
    learn_all(&cluster, 8).await;
    let ring = members(&cluster);
    let addrs = cluster.addrs();
    for i in 0..80 {
        let key = format!("k{i}");
        let via = &addrs[i % addrs.len()];
        let owner = true_owner(&ring, &key);
        let put = http("PUT", &format!("{via}/keys/{key}"), b"v").await;
        assert_eq!(put.status, 201);
        let expected_hops = if *via == owner { "0" } else { "1" };
        assert_eq!(
            put.header("x-crusty-hops").as_deref(),
            Some(expected_hops),
            "{key} via {via}"
        );
        assert_eq!(put.header("x-crusty-owner"), Some(owner.clone()));
        // Reads through any other node, over gRPC, report the route too.
        let other = &addrs[(i * 3 + 1) % addrs.len()];
        let answer = connect(other)
            .await
            .query_dht(dht::Query {
                ty: OperationType::Get as i32,
                key: key.clone().into_bytes(),
                value: None,
                ..dht::Query::default()
            })
            .await
            .unwrap();
        let meta = |k: &str| {
            answer
                .metadata()
                .get(k)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let hops: u32 = meta("x-crusty-hops").unwrap().parse().unwrap();
        assert!(hops <= 1, "{key} via {other}: {hops} hops");
        assert_eq!(meta("x-crusty-owner"), Some(owner.clone()));
        assert_eq!(answer.into_inner().value.as_deref(), Some(&b"v"[..]));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_table_costs_a_hop_never_a_wrong_answer() {
    let mut cluster = cluster_with(4, config()).await;
    learn_all(&cluster, 4).await;
    // Four more join; the first four's tables do not know them.
    for _ in 0..4 {
        cluster.add_node(0).await.unwrap();
    }
    let ring = members(&cluster);
    let stale = &cluster.nodes[0];
    assert!(stale.route_members().len() < 8, "the table is stale");
    let via = stale.me().addr;
    let mut worst = 0;
    for i in 0..60 {
        let key = format!("s{i}");
        let put = http("PUT", &format!("{via}/keys/{key}"), b"x").await;
        assert_eq!(put.status, 201, "{key}");
        assert_eq!(put.header("x-crusty-owner"), Some(true_owner(&ring, &key)));
        let got = http(
            "GET",
            &format!("{}/keys/{key}?raw=true", cluster.addrs()[7]),
            b"",
        )
        .await;
        assert_eq!((got.status, got.body.as_slice()), (200, &b"x"[..]));
        worst = worst.max(put.header("x-crusty-hops").unwrap().parse::<u32>().unwrap());
    }
    assert!(worst >= 1, "some queries were forwarded");
    // Once relearned, the table sends every query straight to its owner.
    learn_all(&cluster, 8).await;
    for i in 0..60 {
        let key = format!("s{i}");
        let got = http("GET", &format!("{via}/keys/{key}"), b"").await;
        let hops: u32 = got.header("x-crusty-hops").unwrap().parse().unwrap();
        assert!(hops <= 1, "{key}: {hops} hops after the sweep");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_relearn_their_tables_by_themselves() {
    let mut c = config();
    c.maintenance.table_refresh = Duration::from_millis(100);
    let cluster = cluster_with(5, c).await;
    common::eventually(Duration::from_secs(20), "every table is complete", || {
        let sizes: Vec<usize> = cluster
            .nodes
            .iter()
            .map(|n| n.route_members().len())
            .collect();
        async move {
            match sizes.iter().all(|s| *s == 5) {
                true => Ok(()),
                false => Err(format!("table sizes {sizes:?}")),
            }
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_routes_itself_needs_no_forward() {
    let cluster = cluster_with(6, config()).await;
    let mut client = RingClient::new(vec![cluster.addrs()[2].clone()], true).await;
    assert_eq!(client.members(), 6);
    for i in 0..50 {
        let key = format!("c{i}");
        let (_, hops) = client
            .query(OperationType::Set, key.as_bytes(), Some(b"v"))
            .await
            .unwrap();
        assert_eq!(hops, Some(0), "{key}");
        let (got, hops) = client
            .query(OperationType::Get, key.as_bytes(), None)
            .await
            .unwrap();
        assert_eq!((got.value.as_deref(), hops), (Some(&b"v"[..]), Some(0)));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_nodes_still_answer_every_key_with_at_most_one_forward() {
    let cluster = cluster_with(32, config()).await;
    learn_all(&cluster, 32).await;
    let ring = members(&cluster);
    let addrs = cluster.addrs();
    for i in 0..128 {
        let key = format!("wide{i}");
        let (via, reader) = (&addrs[i % 32], &addrs[(i * 7 + 3) % 32]);
        let put = http("PUT", &format!("{via}/keys/{key}"), key.as_bytes()).await;
        assert_eq!(put.status, 201);
        let got = http("GET", &format!("{reader}/keys/{key}?raw=true"), b"").await;
        assert_eq!((got.status, got.body.as_slice()), (200, key.as_bytes()));
        for answer in [&put, &got] {
            let hops: u32 = answer.header("x-crusty-hops").unwrap().parse().unwrap();
            assert!(hops <= 1, "{key}: {hops} hops");
            assert_eq!(
                answer.header("x-crusty-owner"),
                Some(true_owner(&ring, &key))
            );
        }
    }
    cluster.shutdown().await;
}
