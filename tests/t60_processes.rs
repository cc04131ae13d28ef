//! The binaries as real processes: a registry and nodes started by hand, a node
//! killed with SIGKILL, and the default binary's local cluster stopped with Ctrl-C.

use crate::common;

use crustyring::proto::dht::OperationType;
use crustyring::ring::{Arc, Position, key_position};
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_form_a_ring_and_a_killed_owner_answers_unavailable_in_bounded_time() {
    let registry = common::registry_process();
    let timeouts = [
        "--request-timeout-ms",
        "1000",
        "--connect-timeout-ms",
        "500",
    ];
    let a = common::dht_process(&registry.addr, &timeouts);
    let mut b = common::dht_process(&registry.addr, &timeouts);

    let mut ca = common::connect(&a.addr).await;
    let mut cb = common::connect(&b.addr).await;
    for i in 0..50 {
        common::set(&mut ca, format!("k{i}").as_bytes(), b"v").await;
    }
    for i in 0..50 {
        let r = common::get(&mut cb, format!("k{i}").as_bytes()).await;
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    }

    // Find a key that b owns, then kill b the hard way.
    let ring = crustyring::client::ring(&a.addr, 10).await.unwrap();
    assert_eq!(ring.len(), 2);
    let b_info = ring
        .iter()
        .find(|i| i.node.as_ref().unwrap().addr == b.addr)
        .unwrap();
    let b_arc = Arc::new(
        Position(b_info.node.as_ref().unwrap().id),
        Position(b_info.next.as_ref().unwrap().id),
    );
    // Any keys will do, whatever share of the ring each node has.
    let owned_by_b = (0..100_000)
        .map(|i| format!("b{i}"))
        .find(|k| b_arc.contains(key_position(k.as_bytes())))
        .expect("b owns some keys");
    let owned_by_a = (0..100_000)
        .map(|i| format!("a{i}"))
        .find(|k| !b_arc.contains(key_position(k.as_bytes())))
        .expect("a owns some keys");
    common::set(&mut ca, owned_by_a.as_bytes(), b"v").await;
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(10));

    let started = Instant::now();
    let err = crustyring::client::query(&mut ca, OperationType::Get, owned_by_b.as_bytes(), None)
        .await
        .unwrap_err();
    let crustyring::client::ClientError::Status(status) = err else {
        panic!("expected a status, got {err:?}");
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The survivor still answers for its own keys.
    let r = common::get(&mut ca, owned_by_a.as_bytes()).await;
    assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_binary_runs_a_local_cluster_and_stops_cleanly_on_ctrl_c() {
    let mut cluster = common::Proc::start(
        env!("CARGO_BIN_EXE_crustyring"),
        &["cluster", "--port", "0"],
        "registry",
    );
    let printed = cluster.read_until("Ctrl-C stops the cluster");
    let nodes: Vec<String> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("node"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .map(str::to_string)
        .collect();
    assert_eq!(nodes.len(), 3, "{printed:?}");
    assert!(
        printed.iter().any(|l| l.contains("put 1 Ru1nnAfPu3Ya4v")),
        "example request printed"
    );

    let mut first = common::connect(&nodes[0]).await;
    common::set(&mut first, b"1", b"Ru1nnAfPu3Ya4v").await;
    let mut last = common::connect(&nodes[2]).await;
    let r = common::get(&mut last, b"1").await;
    assert_eq!(r.value.as_deref(), Some(&b"Ru1nnAfPu3Ya4v"[..]));
    drop((first, last));

    cluster.signal("INT");
    let status = cluster.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_client_commands_put_get_delete_and_show_the_ring() {
    let mut cluster = common::Proc::start(
        env!("CARGO_BIN_EXE_crustyring"),
        &["cluster", "--port", "0", "--nodes", "2"],
        "registry",
    );
    let printed = cluster.read_until("Ctrl-C stops the cluster");
    let node = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("node"))
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap()
        .to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crustyring"))
            .args(args)
            .args(["--node", &node])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(run(&["put", "a key", "a value"]).1.trim(), "created a key");
    assert_eq!(run(&["get", "a key"]).1.trim(), "a value");
    assert!(run(&["put", "a key", "v2"]).1.contains("was a value"));
    let ring = run(&["ring"]);
    assert!(ring.0);
    assert_eq!(
        ring.1.lines().filter(|l| l.contains("serving")).count(),
        2,
        "{}",
        ring.1
    );
    assert!(
        ring.1.contains("largest share / mean share: "),
        "the ring's balance is shown: {}",
        ring.1
    );
    assert_eq!(run(&["delete", "a key"]).1.trim(), "v2");
    let missing = run(&["get", "a key"]);
    assert!(!missing.0);
    assert!(
        missing.2.contains("Key not present in database."),
        "{}",
        missing.2
    );
    for connections in ["per-node", "per-worker"] {
        let bench = run(&[
            "bench",
            "-d",
            "0.3",
            "-c",
            "4",
            "--keys",
            "50",
            "--connections",
            connections,
        ]);
        assert!(
            bench.0 && bench.1.contains("ops/s") && bench.1.contains(" 0 errors"),
            "{connections}: {}",
            bench.1
        );
    }
    cluster.signal("INT");
    assert!(cluster.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn a_cluster_on_ephemeral_ports_refuses_a_data_dir_it_could_never_find_again() {
    let dir = common::TempDir::new("ephemeral-data-dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crustyring"))
        .args(["cluster", "--port", "0", "--data-dir", &dir.node(0)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs fixed ports"), "{stderr}");
    assert!(
        !std::path::Path::new(&dir.node(0)).exists(),
        "nothing was created"
    );
}

/// Asks the registry at `addr` to register `node`.
async fn register(
    addr: &str,
    node: &str,
) -> Result<crustyring::proto::registry::RegisterInfo, tonic::Status> {
    use crustyring::proto::registry::{ConnectionAddr, registry_client::RegistryClient};
    let mut client = RegistryClient::connect(addr.to_string()).await.unwrap();
    client
        .register_node(ConnectionAddr {
            addr: node.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_registry_names_the_first_node_at_once_and_a_restarted_one_relearns_first() {
    let mut registry = common::registry_process();
    let first = register(&registry.addr, "http://127.0.0.1:1").await;
    assert!(
        first.is_ok_and(|r| r.neighbor.is_none()),
        "named first at once"
    );
    // The same registry restarted (same data directory, same port): a ring may
    // be running, so it waits for heartbeats before naming anyone the first.
    let dir = registry.dir.take().unwrap();
    let port = registry.addr.rsplit(':').next().unwrap().to_string();
    registry.signal("KILL");
    registry.wait_exit(Duration::from_secs(5));
    let restarted = common::Proc::start(
        env!("CARGO_BIN_EXE_registry"),
        &[
            "--port",
            &port,
            "--data-dir",
            &dir.path(),
            "--relearn-ms",
            "60000",
        ],
        "listening on",
    );
    let again = register(&restarted.addr, "http://127.0.0.1:2").await;
    assert_eq!(again.map_err(|s| s.code()).err(), Some(Code::Unavailable));
}
