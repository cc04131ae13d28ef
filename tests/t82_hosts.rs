//! Real hosts: a registry and four nodes, each process in a Linux network
//! namespace of its own with its own address, joined by a bridge. Every node
//! listens on the same port (50001) at its own address; the test reaches them
//! only from a fifth "client" namespace, through the `crustyring` CLI. The nodes
//! join into one ring that every node sees alike, keys written through one host
//! are read through another, and after one host's node is killed with SIGKILL the
//! other three repair the ring and every key is still there, three times.
//! Needs root (and `ip`): otherwise it prints `SKIPPED` and passes, unless
//! `CRUSTY_REQUIRE_NETNS=1` (set in CI) makes it fail.

use crate::common;

use common::Proc;
use common::netns::{Host, Network, assert_runs, cli, poll, ring_agreed, ring_view};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const DHT: &str = env!("CARGO_BIN_EXE_dht");
const KEYS: usize = 30;

fn key(i: usize) -> String {
    format!("host-key-{i}")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

#[test]
fn nodes_on_four_hosts_form_one_ring_and_lose_nothing_when_one_is_killed() {
    let Some(mut net) = Network::or_skip("t82_hosts") else {
        return;
    };
    let started = Instant::now();
    let (registry_host, client, hosts) = net.ring_hosts(4);

    let registry_addr = format!("http://{}:50000", registry_host.ip);
    let registry = registry_host.start_registry("t82-registry");
    assert_eq!(registry.addr, registry_addr);

    // One after the other: each is ready (joined) when it prints its address.
    let mut nodes: Vec<Proc> = hosts
        .iter()
        .map(|h| {
            let node = Proc::start(
                "ip",
                &h.exec_args(
                    DHT,
                    &[
                        "50001",
                        "--host",
                        &h.ip,
                        "--registry",
                        &registry_addr,
                        "--memory",
                        "--probe-interval-ms",
                        "200",
                        "--connect-timeout-ms",
                        "300",
                        "--request-timeout-ms",
                        "1000",
                    ],
                ),
                "listening on",
            );
            assert_eq!(node.addr, format!("http://{}:50001", h.ip));
            assert_runs(&node, "dht");
            node
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let joined = started.elapsed();

    poll("the four nodes see one ring", || {
        ring_agreed(&client, &addrs)
    });

    // Written through the first host, read through the third.
    for i in 0..KEYS {
        let out = cli(&client, &["put", &key(i), &value(i), "--node", &addrs[0]]);
        assert_eq!(out, Ok(format!("created {}", key(i))));
    }
    for i in 0..KEYS {
        let out = cli(&client, &["get", &key(i), "--node", &addrs[2]]);
        assert_eq!(out, Ok(value(i)), "{} through {}", key(i), addrs[2]);
    }
    poll("three copies of every key", || copies(&client, &addrs[1]));

    // The node (not the one written through) that owns the most keys dies.
    let view = ring_view(&client, &addrs[0]).expect("a closed ring");
    let (victim, owned) = (1..nodes.len())
        .map(|i| {
            let row = view.iter().find(|r| r.addr == addrs[i]).expect("listed");
            (i, row.owned)
        })
        .max_by_key(|(_, owned)| *owned)
        .unwrap();
    assert!(owned > 0, "the victim owns keys: {view:?}");
    nodes[victim].signal("KILL");
    let status = nodes[victim].wait_exit(Duration::from_secs(5));
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let killed = Instant::now();
    let live: Vec<String> = addrs
        .iter()
        .filter(|a| **a != addrs[victim])
        .cloned()
        .collect();

    poll("the three survivors see one ring", || {
        ring_agreed(&client, &live)
    });
    let repaired = killed.elapsed();
    poll("every key readable through each survivor", || {
        live.iter().try_for_each(|addr| {
            (0..KEYS).try_for_each(|i| match cli(&client, &["get", &key(i), "--node", addr]) {
                Ok(v) if v == value(i) => Ok(()),
                other => Err(format!("{} through {addr}: {other:?}", key(i))),
            })
        })
    });
    poll("three copies of every key again", || {
        copies(&client, &live[0])
    });
    println!(
        "t82: 4 hosts joined in {joined:?}; killed {} ({owned} of {KEYS} keys), \
         ring repaired in {repaired:?}, all keys back in {:?}; {:?} in all",
        addrs[victim],
        killed.elapsed(),
        started.elapsed()
    );
}

/// The ring walked from `node` holds every key once as owner and twice as a
/// replica (replication factor 3).
fn copies(host: &Host, node: &str) -> Result<(), String> {
    let view = ring_view(host, node)?;
    let owned: u64 = view.iter().map(|r| r.owned).sum();
    let replicas: u64 = view.iter().map(|r| r.replicas).sum();
    match (owned, replicas) == (KEYS as u64, 2 * KEYS as u64) {
        true => Ok(()),
        false => Err(format!("{owned} owned, {replicas} replicas")),
    }
}
