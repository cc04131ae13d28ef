//! Persistence with real processes: nodes keep their data and ID in --data-dir; a
//! node killed with SIGKILL comes back at its old position with its keys, and so
//! does a whole ring killed at once.

use crate::common;

use common::{Proc, TempDir};
use crustyring::proto::dht::OperationType;
use futures_util::{StreamExt, stream};
use std::time::Duration;

fn key(i: usize) -> Vec<u8> {
    format!("durable-{i}").into_bytes()
}

fn node_on_disk(registry: &str, dir: &str) -> Proc {
    common::dht_process(registry, &["--data-dir", dir])
}

async fn write(addr: &str, range: std::ops::Range<usize>) {
    let client = common::connect(addr).await;
    stream::iter(range)
        .for_each_concurrent(16, |i| {
            let mut c = client.clone();
            async move {
                assert_eq!(common::set(&mut c, &key(i), &key(i)).await.error, None);
            }
        })
        .await;
}

async fn assert_all_readable(addr: &str, range: std::ops::Range<usize>) {
    common::assert_values(addr, range, key).await;
}

/// A registry and three nodes on disk holding keys `0..keys`, the second of which
/// has been killed and routed around; and that node's ID.
async fn ring_with_one_node_down(dirs: &TempDir, keys: usize) -> (Proc, Vec<Proc>, u64) {
    let registry = common::registry_process();
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| node_on_disk(&registry.addr, &dirs.node(i)))
        .collect();
    write(&nodes[0].addr, 0..keys).await;
    let id = id_of(&nodes[1].addr).await;
    nodes[1].signal("KILL");
    nodes[1].wait_exit(Duration::from_secs(5));
    let live = vec![nodes[0].addr.clone(), nodes[2].addr.clone()];
    common::await_ring(&live, Duration::from_secs(5)).await;
    (registry, nodes, id)
}

async fn id_of(addr: &str) -> u64 {
    let mut c = common::connect(addr).await;
    c.get_node_info(())
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_from_its_data_dir_returns_at_its_position_with_its_keys() {
    let dirs = TempDir::new("restart-one");
    let (registry, mut nodes, id) = ring_with_one_node_down(&dirs, 400).await;
    // While it is down, writes go on (into its arc too, now its predecessor's).
    write(&nodes[0].addr, 400..500).await;

    // Restarted on another port, from the same directory.
    nodes[1] = node_on_disk(&registry.addr, &dirs.node(1));
    assert_eq!(id_of(&nodes[1].addr).await, id, "back at its old position");
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&all, Duration::from_secs(10)).await;
    for addr in &all {
        assert_all_readable(addr, 0..500).await;
    }
    // Three nodes, three copies: the restarted node holds every key again. Its
    // own arc came back in the join hand-off; the writes it missed in the arcs it
    // replicates come only by anti-entropy.
    let back = nodes[1].addr.clone();
    common::eventually(
        Duration::from_secs(20),
        "the restarted node catches up",
        || {
            let back = back.clone();
            async move {
                let mut c = common::connect(&back).await;
                let info = c.get_node_info(()).await.map_err(|e| e.to_string())?;
                let keys = info.into_inner().keys;
                (keys == 500)
                    .then_some(())
                    .ok_or(format!("it holds {keys} keys"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_ring_killed_at_once_comes_back_from_its_data_dirs() {
    let dirs = TempDir::new("restart-all");
    let registry = common::registry_process();
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| node_on_disk(&registry.addr, &dirs.node(i)))
        .collect();
    write(&nodes[1].addr, 0..600).await;
    for n in &nodes {
        n.signal("KILL");
    }
    for n in &mut nodes {
        n.wait_exit(Duration::from_secs(5));
    }
    // The registry forgets them (TTL), then they come back one by one.
    let nodes: Vec<Proc> = (0..3)
        .map(|i| node_on_disk(&registry.addr, &dirs.node(i)))
        .collect();
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&all, Duration::from_secs(10)).await;
    for addr in &all {
        assert_all_readable(addr, 0..600).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_made_while_the_owner_was_down_stays_deleted_when_it_returns() {
    let dirs = TempDir::new("restart-delete");
    let (registry, mut nodes, _) = ring_with_one_node_down(&dirs, 300).await;
    // Delete every even key while the node is down: the ones it owned are absent
    // right now, and the deletes leave tombstones.
    let mut c = common::connect(&nodes[0].addr).await;
    for i in (0..300).step_by(2) {
        crustyring::client::query(&mut c, OperationType::Delete, &key(i), None)
            .await
            .unwrap();
    }
    nodes[1] = node_on_disk(&registry.addr, &dirs.node(1));
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&all, Duration::from_secs(10)).await;
    for addr in &all {
        let mut c = common::connect(addr).await;
        for i in 0..300 {
            let r = crustyring::client::query(&mut c, OperationType::Get, &key(i), None)
                .await
                .unwrap();
            let expected = (i % 2 == 1).then(|| key(i));
            assert_eq!(r.value, expected, "key {i} via {addr}");
        }
    }
}
