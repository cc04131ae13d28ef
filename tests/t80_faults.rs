//! Fault tolerance with real processes: nodes killed with SIGKILL, graceful leaves
//! on SIGTERM, rings built without the registry, and a registry that restarts.

use crate::common;

use common::Proc;
use crustyring::proto::dht::OperationType;
use crustyring::ring::{Position, key_position};
use futures_util::{StreamExt, stream};
use std::collections::BTreeMap;
use std::time::Duration;

/// These tests run one at a time: each starts six or seven processes, and the
/// five-second repair bound is about the ring, not about a machine running five
/// such rings at once on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

async fn write(addr: &str, n: usize) {
    let client = common::connect(addr).await;
    stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let mut c = client.clone();
            async move {
                let r = common::set(&mut c, &key(i), &key(i)).await;
                assert_eq!(r.error, None);
            }
        })
        .await;
}

/// Reads keys `which` through `addr`: each must hold its value.
async fn assert_readable(addr: &str, which: &[usize]) {
    common::assert_values(addr, which.iter().copied(), key).await;
}

/// Which node (by address) owns each of `n` keys, from the ring as `addr` sees it.
async fn owners(addr: &str, n: usize) -> Vec<String> {
    let ring = crustyring::client::ring(addr, 100).await.unwrap();
    let members: BTreeMap<Position, String> = ring
        .iter()
        .map(|i| {
            let node = i.node.clone().unwrap();
            (Position(node.id), node.addr)
        })
        .collect();
    (0..n)
        .map(|i| {
            crustyring::ring::owner(&members, key_position(&key(i)))
                .unwrap()
                .1
                .clone()
        })
        .collect()
}

fn ring_of(n: usize) -> (Proc, Vec<Proc>) {
    let registry = common::registry_process();
    let nodes = (0..n)
        .map(|_| common::dht_process(&registry.addr, &[]))
        .collect();
    (registry, nodes)
}

/// Kills `victims` (indices into `nodes`) at once and checks the repair: the
/// survivors form a correct ring, the registry forgets the dead, and every key
/// a survivor owned reads back through every survivor. How fast is a bound on
/// the protocol's timing, held in virtual time by `t91_simulation::repair`;
/// the 30 s here only stops a hang.
async fn kill_and_check_repair(mut nodes: Vec<Proc>, registry: &Proc, victims: &[usize]) {
    const KEYS: usize = 600;
    write(&nodes[0].addr, KEYS).await;
    let owner = owners(&nodes[0].addr, KEYS).await;
    let dead: Vec<String> = victims.iter().map(|v| nodes[*v].addr.clone()).collect();
    for v in victims {
        nodes[*v].signal("KILL");
    }
    for v in victims {
        nodes[*v].wait_exit(Duration::from_secs(5));
    }
    let live: Vec<String> = nodes
        .iter()
        .map(|n| n.addr.clone())
        .filter(|a| !dead.contains(a))
        .collect();
    let took = common::eventually(Duration::from_secs(30), "ring repair", || {
        let live = live.clone();
        let registry = registry.addr.clone();
        async move {
            common::ring_converged(&live).await?;
            let listed = common::registry_members(&registry).await;
            let mut expected = live.clone();
            expected.sort();
            if listed != expected {
                return Err(format!("registry lists {listed:?}"));
            }
            Ok(())
        }
    })
    .await;
    println!("repaired {} kill(s) in {took:?}", victims.len());
    let survivors_keys: Vec<usize> = (0..KEYS).filter(|i| !dead.contains(&owner[*i])).collect();
    assert!(!survivors_keys.is_empty(), "the survivors own some keys");
    for addr in &live {
        assert_readable(addr, &survivors_keys).await;
        // No live node's ring lists a dead node.
        let ring = crustyring::client::ring(addr, 100).await.unwrap();
        assert!(
            ring.iter()
                .all(|i| !dead.contains(&i.node.clone().unwrap().addr))
        );
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_repaired_around() {
    let _serial = SERIAL.lock().await;
    let (registry, nodes) = ring_of(6);
    kill_and_check_repair(nodes, &registry, &[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adjacent_nodes_killed_at_once_are_repaired_around() {
    let _serial = SERIAL.lock().await;
    let (registry, nodes) = ring_of(6);
    // Two nodes adjacent by ID.
    let ring = crustyring::client::ring(&nodes[0].addr, 100).await.unwrap();
    let (a, b) = (
        ring[1].node.clone().unwrap().addr,
        ring[2].node.clone().unwrap().addr,
    );
    let victims: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.addr == a || n.addr == b)
        .map(|(i, _)| i)
        .collect();
    kill_and_check_repair(nodes, &registry, &victims).await;
}

/// A ring of three keeps three copies of every key, so the survivor of two
/// kills holds them all, and serves them: its root leases from the registry
/// lease its arc, and it serves each arc it took over once the registry has
/// judged its owner dead. (Before the registry judged deaths, a node left
/// alone by failures served nothing until a node joined: it could not tell
/// the others' deaths from its being cut off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_a_ring_of_three_serves_every_key() {
    let _serial = SERIAL.lock().await;
    const KEYS: usize = 200;
    let (_registry, mut nodes) = ring_of(3);
    common::await_ring(
        &nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>(),
        Duration::from_secs(30),
    )
    .await;
    write(&nodes[0].addr, KEYS).await;
    for victim in [1, 2] {
        nodes[victim].signal("KILL");
    }
    for victim in [1, 2] {
        nodes[victim].wait_exit(Duration::from_secs(5));
    }
    let survivor = nodes[0].addr.clone();
    common::await_ring(std::slice::from_ref(&survivor), Duration::from_secs(30)).await;
    // Each read waits for its arc's verdict within the request timeout.
    let all: Vec<usize> = (0..KEYS).collect();
    assert_readable(&survivor, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stopped_with_sigterm_hand_their_keys_over_and_lose_none() {
    let _serial = SERIAL.lock().await;
    const KEYS: usize = 500;
    let (registry, mut nodes) = ring_of(4);
    write(&nodes[0].addr, KEYS).await;
    for victim in [1, 3] {
        nodes[victim].signal("TERM");
        let status = nodes[victim].wait_exit(Duration::from_secs(15));
        assert!(status.success(), "graceful exit: {status:?}");
    }
    let live = vec![nodes[0].addr.clone(), nodes[2].addr.clone()];
    // The leavers relinked their neighbours before they exited: the ring is
    // already correct, and the registry already forgot them.
    common::ring_converged(&live).await.unwrap();
    let mut expected = live.clone();
    expected.sort();
    assert_eq!(common::registry_members(&registry.addr).await, expected);
    let all: Vec<usize> = (0..KEYS).collect();
    for addr in &live {
        assert_readable(addr, &all).await;
    }
    // Each key is owned once, and (two nodes, three copies wanted) held as a
    // replica by the other node once anti-entropy has run. Nodes report key
    // counts up to a second old (a node whose successor list is still stale
    // after the leaves has the same arcs as when it counted, before the
    // keys were written).
    common::eventually(Duration::from_secs(5), "every key owned once", || {
        let addr = live[0].clone();
        async move {
            let ring = crustyring::client::ring(&addr, 10)
                .await
                .map_err(|e| e.to_string())?;
            let owned = ring.iter().map(|i| i.owned_keys).sum::<u64>();
            (owned == KEYS as u64)
                .then_some(())
                .ok_or(format!("{owned} owned keys"))
        }
    })
    .await;
    common::eventually(Duration::from_secs(20), "a replica of every key", || {
        let addr = live[0].clone();
        async move {
            let (_, replicas) = common::key_copies(&addr).await?;
            (replicas == KEYS as u64)
                .then_some(())
                .ok_or(format!("{replicas} replica keys"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_built_with_join_alone_serves_every_request() {
    let _serial = SERIAL.lock().await;
    let first = Proc::start(
        env!("CARGO_BIN_EXE_dht"),
        &["0", "--new-ring", "--memory"],
        "listening on",
    );
    let mut nodes = vec![first];
    for i in 0..4 {
        // Each joins through a different member, not necessarily its predecessor.
        let contact = nodes[i / 2].addr.clone();
        nodes.push(Proc::start(
            env!("CARGO_BIN_EXE_dht"),
            &["0", "--join", &contact, "--memory"],
            "listening on",
        ));
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&addrs, Duration::from_secs(10)).await;
    write(&addrs[3], 300).await;
    let all: Vec<usize> = (0..300).collect();
    for addr in &addrs {
        assert_readable(addr, &all).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_goes_on_without_the_registry_and_a_restarted_one_relearns_the_members() {
    let _serial = SERIAL.lock().await;
    let (mut registry, nodes) = ring_of(3);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let port = registry.addr.rsplit(':').next().unwrap().to_string();
    registry.signal("KILL");
    registry.wait_exit(Duration::from_secs(5));

    write(&addrs[1], 200).await;
    assert_readable(&addrs[2], &(0..200).collect::<Vec<_>>()).await;

    // Restarted with its data directory: it knows it has run before, and
    // relearns the members before naming anyone the first.
    let dir = registry.dir.take().expect("the registry's data directory");
    let mut registry = Proc::start(
        env!("CARGO_BIN_EXE_registry"),
        &["--port", &port, "--data-dir", &dir.path()],
        "listening on",
    );
    registry.dir = Some(dir);
    let mut expected = addrs.clone();
    expected.sort();
    common::eventually(Duration::from_secs(5), "registry relearns", || {
        let (registry, expected) = (registry.addr.clone(), expected.clone());
        async move {
            let listed = common::registry_members(&registry).await;
            if listed == expected {
                Ok(())
            } else {
                Err(format!("lists {listed:?}"))
            }
        }
    })
    .await;
    // A new node joins through the restarted registry into the same ring.
    let joiner = common::dht_process(&registry.addr, &[]);
    let mut all = addrs.clone();
    all.push(joiner.addr.clone());
    common::await_ring(&all, Duration::from_secs(10)).await;
    assert_readable(&joiner.addr, &(0..200).collect::<Vec<_>>()).await;
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_during_a_leave_and_a_kill_end_right_or_unavailable() {
    let _serial = SERIAL.lock().await;
    let (_registry, mut nodes) = ring_of(5);
    let entry = nodes[0].addr.clone();
    let before = crustyring::client::ring(&entry, 10).await.unwrap();
    let killed_id = before
        .iter()
        .map(|i| i.node.clone().unwrap())
        .find(|n| n.addr == nodes[4].addr)
        .map(|n| Position(n.id));
    // A writer keeps writing distinct keys through one node while one node
    // leaves and another is killed; it records what was acknowledged.
    let writer = tokio::spawn(async move {
        let mut c = common::connect(&entry).await;
        let mut acked = Vec::new();
        let mut refused = 0;
        for i in 0..1500 {
            match crustyring::client::query(&mut c, OperationType::Set, &key(i), Some(&key(i)))
                .await
            {
                Ok(r) => {
                    assert_eq!(r.error, None);
                    acked.push(i);
                }
                Err(crustyring::client::ClientError::Status(s))
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) =>
                {
                    refused += 1;
                }
                Err(e) => panic!("write {i}: unexpected error {e}"),
            }
        }
        (acked, refused)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[2].signal("TERM");
    nodes[4].signal("KILL");
    let (acked, refused) = writer.await.unwrap();
    nodes[2].wait_exit(Duration::from_secs(15));
    let live = vec![
        nodes[0].addr.clone(),
        nodes[1].addr.clone(),
        nodes[3].addr.clone(),
    ];
    common::await_ring(&live, Duration::from_secs(5)).await;
    println!(
        "{} acknowledged, {refused} refused with UNAVAILABLE/DEADLINE_EXCEEDED",
        acked.len()
    );
    // Every acknowledged write reads back, except where the killed node owned the
    // key's position: there it may have been lost with it (no replication yet).
    // Those positions are the arc from the killed node's ID to the next live ID.
    let killed_id = killed_id.expect("killed node in the ring");
    let final_ring = crustyring::client::ring(&live[0], 10).await.unwrap();
    let next_live = final_ring
        .iter()
        .map(|i| Position(i.node.clone().unwrap().id))
        .min_by_key(|id| killed_id.distance_to(*id))
        .unwrap();
    let lost_arc = crustyring::ring::Arc::new(killed_id, next_live);
    let client = common::connect(&live[1]).await;
    let mut checked = 0;
    for i in acked
        .iter()
        .copied()
        .filter(|i| !lost_arc.contains(key_position(&key(*i))))
    {
        let mut c = client.clone();
        let r = crustyring::client::query(&mut c, OperationType::Get, &key(i), None)
            .await
            .unwrap();
        assert_eq!(r.value, Some(key(i)), "acknowledged key {i} lost");
        checked += 1;
    }
    assert!(checked > 0);
    drop(nodes);
}
