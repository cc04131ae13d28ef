//! Joins move data correctly: after every join each key is readable through every
//! node and stored on exactly one node, its owner; concurrent joins end in a
//! correct ring.

mod common;

use crustyring::cluster::LocalCluster;
use crustyring::proto::dht::OperationType;
use crustyring::ring::key_position;
use futures_util::{StreamExt, stream};
use std::collections::BTreeMap;

const KEYS: usize = 2000;

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

async fn write_keys(addr: &str) {
    let client = common::connect(addr).await;
    stream::iter(0..KEYS)
        .for_each_concurrent(32, |i| {
            let mut c = client.clone();
            async move {
                let r = common::set(&mut c, &key(i), &value(i)).await;
                assert_eq!(r.error, None);
            }
        })
        .await;
}

/// Every node's next is the next node by ID, every prev the previous one, and each
/// node's entries lie in its own arc; all keys are stored once.
fn assert_ring_and_placement(cluster: &LocalCluster) {
    let views: BTreeMap<_, _> = cluster
        .nodes
        .iter()
        .map(|n| (n.me().id, n.view_snapshot()))
        .collect();
    let ids: Vec<_> = views.keys().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        let view = &views[id];
        assert_eq!(view.next.id, ids[(i + 1) % ids.len()], "next of {id}");
        assert_eq!(
            view.prev.id,
            ids[(i + ids.len() - 1) % ids.len()],
            "prev of {id}"
        );
    }
    let mut stored = 0;
    for node in &cluster.nodes {
        let arc = node.view_snapshot().arc();
        for entry in node.local_entries().unwrap() {
            assert!(
                arc.contains(entry.position),
                "{} holds a key outside its arc",
                node.me().addr
            );
            assert_eq!(entry.position, key_position(&entry.key));
        }
        stored += node.key_count();
    }
    assert_eq!(stored, KEYS, "every key stored exactly once");
}

async fn assert_readable_everywhere(cluster: &LocalCluster) {
    for addr in cluster.addrs() {
        let client = common::connect(&addr).await;
        stream::iter(0..KEYS)
            .for_each_concurrent(32, |i| {
                let mut c = client.clone();
                let addr = addr.clone();
                async move {
                    let r = crustyring::client::query(&mut c, OperationType::Get, &key(i), None)
                        .await
                        .unwrap();
                    assert_eq!(r.value, Some(value(i)), "key {i} via {addr}");
                }
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_their_owner_as_nodes_join_one_by_one() {
    let mut cluster = common::cluster(1).await;
    write_keys(&cluster.addrs()[0]).await;
    assert_ring_and_placement(&cluster);
    for _ in 2..=6 {
        cluster.add_node(0).await.unwrap();
        assert_ring_and_placement(&cluster);
        assert_readable_everywhere(&cluster).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_joining_at_the_same_instant_end_in_a_correct_ring() {
    let mut cluster = common::cluster(1).await;
    write_keys(&cluster.addrs()[0]).await;
    cluster.add_nodes_at_once(&[0; 6]).await.unwrap();
    assert_eq!(cluster.nodes.len(), 7);
    assert_ring_and_placement(&cluster);
    assert_readable_everywhere(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_joins_are_never_lost() {
    let mut cluster = common::cluster(1).await;
    let entry = cluster.addrs()[0].clone();
    let writer = tokio::spawn(async move { write_keys(&entry).await });
    cluster.add_nodes_at_once(&[0; 3]).await.unwrap();
    writer.await.unwrap();
    assert_ring_and_placement(&cluster);
    assert_readable_everywhere(&cluster).await;
    cluster.shutdown().await;
}
