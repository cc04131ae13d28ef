//! Joins move data correctly: after every join each key is readable through every
//! node; with one copy per key it is stored on exactly one node, its owner, and
//! with three it is stored on its owner and the owner's two predecessors once
//! anti-entropy has run. Concurrent joins end in a correct ring.

use crate::common;

use crustyring::cluster::LocalCluster;
use crustyring::node::{NodeConfig, ReplicationSettings};
use crustyring::proto::dht::OperationType;
use crustyring::ring::key_position;
use futures_util::{StreamExt, stream};
use std::collections::BTreeMap;
use std::time::Duration;

/// A cluster of `n` nodes keeping `factor` copies of each key.
async fn cluster(n: usize, factor: usize) -> LocalCluster {
    let config = NodeConfig {
        replication: ReplicationSettings {
            factor,
            anti_entropy_interval: Duration::from_millis(200),
            ..ReplicationSettings::default()
        },
        ..NodeConfig::default()
    };
    common::cluster_with(n, config).await
}

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

/// Every node's next is the next node by ID, every prev the previous one.
fn assert_ring(cluster: &LocalCluster) {
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
}

/// The ring is correct, each node's entries lie in its own arc, and all keys
/// are stored once (one copy per key).
fn assert_ring_and_placement(cluster: &LocalCluster) {
    assert_ring(cluster);
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
    let mut cluster = cluster(1, 1).await;
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
    let mut cluster = cluster(1, 1).await;
    write_keys(&cluster.addrs()[0]).await;
    cluster.add_nodes_at_once(&[0; 6]).await.unwrap();
    assert_eq!(cluster.nodes.len(), 7);
    assert_ring_and_placement(&cluster);
    assert_readable_everywhere(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_joins_are_never_lost() {
    let mut cluster = cluster(1, 1).await;
    let entry = cluster.addrs()[0].clone();
    let writer = tokio::spawn(async move { write_keys(&entry).await });
    cluster.add_nodes_at_once(&[0; 3]).await.unwrap();
    writer.await.unwrap();
    assert_ring_and_placement(&cluster);
    assert_readable_everywhere(&cluster).await;
    cluster.shutdown().await;
}

/// Whether every key is held, live, by its owner and the owner's `factor - 1`
/// predecessors (by ID order).
fn replicated(cluster: &LocalCluster, factor: usize) -> Result<(), String> {
    let mut ids: Vec<_> = cluster.nodes.iter().map(|n| n.me().id).collect();
    ids.sort();
    let holders: BTreeMap<_, Vec<Vec<u8>>> = cluster
        .nodes
        .iter()
        .map(|n| {
            let live = n.local_entries().unwrap().into_iter();
            let keys = live.filter(|e| e.value.is_some()).map(|e| e.key).collect();
            (n.me().id, keys)
        })
        .collect();
    for i in 0..KEYS {
        let k = key(i);
        let p = key_position(&k);
        let owner = ids.iter().rposition(|id| *id <= p).unwrap_or(ids.len() - 1);
        for back in 0..factor.min(ids.len()) {
            let holder = ids[(owner + ids.len() - back) % ids.len()];
            if !holders[&holder].contains(&k) {
                return Err(format!(
                    "key {i} is missing from {holder} ({back} before its owner)"
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_copies_every_key_reaches_its_owner_and_two_predecessors() {
    let mut cluster = cluster(1, 3).await;
    write_keys(&cluster.addrs()[0]).await;
    for _ in 0..2 {
        cluster.add_node(0).await.unwrap();
    }
    cluster.add_nodes_at_once(&[0; 3]).await.unwrap();
    assert_ring(&cluster);
    let took = common::eventually(Duration::from_secs(30), "three copies of every key", || {
        let result = replicated(&cluster, 3);
        async move { result }
    })
    .await;
    println!("every key had three copies {took:?} after the last join");
    assert_readable_everywhere(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_while_an_arc_streams_to_a_joiner_end_at_their_last_value() {
    // One copy: nothing but the hand-off itself can carry the overwrites.
    let mut cluster = cluster(1, 1).await;
    let entry = cluster.addrs()[0].clone();
    // A bigger arc, so that it takes a while to stream.
    let client = common::connect(&entry).await;
    stream::iter(0..20 * KEYS)
        .for_each_concurrent(64, |i| {
            let mut c = client.clone();
            async move {
                common::set(&mut c, &key(i), &[b'x'; 512]).await;
            }
        })
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four writers over their own keys, each remembering its last writes.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, client) = (stop.clone(), client.clone());
            tokio::spawn(async move {
                let mut c = client;
                let mut last: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
                // Bounded: at most 200 rounds over 100 keys.
                for round in 0..200 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    for i in (w * 100)..(w * 100 + 100) {
                        let v = format!("round-{round}-{i}").into_bytes();
                        assert_eq!(common::set(&mut c, &key(i), &v).await.error, None);
                        last.insert(i, v);
                    }
                }
                last
            })
        })
        .collect();
    for _ in 0..2 {
        cluster.add_node(0).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut last = BTreeMap::new();
    for w in writers {
        last.extend(w.await.unwrap());
    }
    assert_ring(&cluster);
    for addr in cluster.addrs() {
        let mut c = common::connect(&addr).await;
        for (i, v) in &last {
            let r = common::get(&mut c, &key(*i)).await;
            let shown = |v: Option<&Vec<u8>>| {
                v.map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned())
            };
            assert_eq!(
                shown(r.value.as_ref()),
                shown(Some(v)),
                "key {i} via {addr}"
            );
        }
    }
    cluster.shutdown().await;
}

/// A joiner that asks a node whose arc its ID does not fall in is refused,
/// and told in binary metadata (a `registry.Node` in protobuf, as any gRPC
/// client can read it) which member to ask instead: one of the contact's
/// neighbours, on the way to the joiner's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_outside_the_contact_s_arc_is_told_whom_to_ask() {
    use crustyring::proto::dht::{NeighborRegisterInfo, NeighborType};
    use prost::Message;

    let cluster = cluster(3, 1).await;
    let first = cluster.nodes[0].view_snapshot();
    // Just after the first node's next's ID: in that node's arc, not in the
    // first's.
    let id = first.next.id.0.wrapping_add(1);
    let mut c = common::connect(&first.me.addr).await;
    let refused = c
        .register_as_neighbor(NeighborRegisterInfo {
            ty: NeighborType::Next as i32,
            id,
            addr: "http://127.0.0.1:1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let hint = (refused.metadata().get_bin("crustyring-towards-bin"))
        .expect("a hint")
        .to_bytes()
        .expect("base64");
    let towards = crustyring::proto::registry::Node::decode(hint).expect("a node");
    let named = (towards.id, towards.addr.as_str());
    assert!(
        [&first.prev, &first.next]
            .iter()
            .any(|n| named == (n.id.0, n.addr.as_str())),
        "{named:?} is neither neighbour of the contact"
    );
    cluster.shutdown().await;
}
