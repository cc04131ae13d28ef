//! Real hosts: a registry and four nodes, each process in a Linux network
//! namespace of its own with its own address, joined by a bridge. Every node
//! listens on the same port (50001) at its own address; the test reaches them
//! only from a fifth "client" namespace, through the `crustyring` CLI. The nodes
//! join into one ring that every node sees alike, keys written through one host
//! are read through another, and after one host's node is killed with SIGKILL the
//! other three repair the ring and every key is still there, three times.
//! Needs root (and `ip`): otherwise it prints `SKIPPED` and passes, unless
//! `CRUSTY_REQUIRE_NETNS=1` (set in CI) makes it fail.

mod common;

use common::netns::{Host, Network};
use common::{Proc, TempDir};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const REGISTRY: &str = env!("CARGO_BIN_EXE_registry");
const DHT: &str = env!("CARGO_BIN_EXE_dht");
const CLI: &str = env!("CARGO_BIN_EXE_crustyring");
/// Each wait for the cluster to reach a state.
const LIMIT: Duration = Duration::from_secs(20);
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
    let registry_host = net.host("r").expect("registry host");
    let client = net.host("c").expect("client host");
    let hosts: Vec<Host> = (1..=4)
        .map(|i| net.host(&format!("n{i}")).expect("node host"))
        .collect();

    let registry_addr = format!("http://{}:50000", registry_host.ip);
    let dir = TempDir::new("t82-registry");
    let mut registry = Proc::start(
        "ip",
        &registry_host.exec_args(
            REGISTRY,
            &["--host", &registry_host.ip, "--data-dir", &dir.path()],
        ),
        "listening on",
    );
    registry.dir = Some(dir);
    assert_eq!(registry.addr, registry_addr);
    assert_runs(&registry, "registry");

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

/// The process is the binary itself: `ip netns exec` execs it, so its PID (the
/// one Drop and `signal` kill) is not the PID of a wrapper.
fn assert_runs(proc: &Proc, bin: &str) {
    let exe = std::fs::read_link(format!("/proc/{}/exe", proc.child.id())).unwrap();
    assert!(
        exe.to_string_lossy().contains(&format!("/{bin}")),
        "PID {} is {exe:?}",
        proc.child.id()
    );
}

/// Runs the CLI inside `host`: its trimmed stdout, or `Err` with its stderr.
fn cli(host: &Host, args: &[&str]) -> Result<String, String> {
    let out = host.run(CLI, args, Duration::from_secs(10));
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// One line of `crustyring ring`.
#[derive(Debug, PartialEq)]
struct Row {
    id: String,
    addr: String,
    state: String,
    owned: u64,
    replicas: u64,
    prev: String,
    next: String,
}

/// The ring as walked from `node` (by `crustyring ring`, run in `host`), sorted
/// by ID.
fn ring_view(host: &Host, node: &str) -> Result<Vec<Row>, String> {
    let out = cli(host, &["ring", "--node", node])?;
    let rows = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("largest share"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Row {
                id: w[0].into(),
                addr: w[1].into(),
                state: w[2].into(),
                owned: w[3].parse().unwrap(),
                replicas: w[4].parse().unwrap(),
                prev: w[6].into(),
                next: w.get(7).copied().unwrap_or_default().into(),
            }
        })
        .collect();
    Ok(rows)
}

/// Every node at `addrs` walks the same ring: exactly these nodes, all serving,
/// each one's `next` and `prev` its neighbours by ID.
fn ring_agreed(host: &Host, addrs: &[String]) -> Result<(), String> {
    let mut expected = addrs.to_vec();
    expected.sort();
    let mut first: Option<Vec<Row>> = None;
    for addr in addrs {
        let view = ring_view(host, addr)?;
        let mut listed: Vec<String> = view.iter().map(|r| r.addr.clone()).collect();
        listed.sort();
        if listed != expected {
            return Err(format!("{addr} sees {listed:?}"));
        }
        let n = view.len();
        for (i, row) in view.iter().enumerate() {
            if row.state != "serving" {
                return Err(format!("{} is {}", row.addr, row.state));
            }
            if row.next != view[(i + 1) % n].id || row.prev != view[(i + n - 1) % n].id {
                return Err(format!("{addr} sees {row:?}"));
            }
        }
        // The same IDs from everywhere (key counts may differ mid-walk).
        let ids = |v: &[Row]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        match &first {
            Some(f) if ids(f) != ids(&view) => return Err(format!("{addr} differs")),
            Some(_) => {}
            None => first = Some(view),
        }
    }
    Ok(())
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

/// Polls `check` every 50 ms until it holds; panics with its last complaint after
/// [`LIMIT`].
fn poll(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() > LIMIT => {
                panic!("{what} did not hold within {LIMIT:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
