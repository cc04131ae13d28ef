//! No acknowledged write is lost: five real node processes on disk keep three
//! copies of every key; a writer PUTs distinct keys through the REST gateway of
//! every node and records each one acknowledged (2xx). During the load one node
//! is SIGKILLed, then its predecessor (which had just inherited its arc) a
//! second later. After repair every acknowledged key reads back, with its value,
//! through every live node, and is back to three copies; then every node is
//! SIGKILLed and all five start again from their data directories, and every
//! acknowledged key is still there.

use crate::common;

use common::{Proc, TempDir};
use futures_util::{StreamExt, stream};
use http_body_util::Full;
use hyper::body::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn key(i: usize) -> Vec<u8> {
    format!("acked-{i}").into_bytes()
}

fn node_on_disk(registry: &str, dir: &str) -> Proc {
    common::dht_process(
        registry,
        &[
            "--data-dir",
            dir,
            "--replication-factor",
            "3",
            "--sync",
            "always",
        ],
    )
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// PUTs `key(i)` = `key(i)` through `addr`; whether it was acknowledged (2xx).
async fn put(client: &Client, addr: &str, i: usize) -> bool {
    let url = format!("{addr}/keys/{}", String::from_utf8(key(i)).unwrap());
    let request = hyper::Request::put(url)
        .body(Full::new(Bytes::from(key(i))))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Ok(Ok(response)) => response.status().is_success(),
        _ => false,
    }
}

/// The writer: `workers` loops PUTting fresh keys round-robin through `addrs`
/// until `stop` (at most `max` keys); returns the acknowledged ones.
fn start_writer(
    addrs: Vec<String>,
    workers: usize,
    max: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<usize>>>,
) -> tokio::task::JoinHandle<()> {
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (client, addrs, next, stop, acked) = (
                client.clone(),
                addrs.clone(),
                next.clone(),
                stop.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max {
                        break;
                    }
                    if put(&client, &addrs[i % addrs.len()], i).await {
                        acked.lock().unwrap().push(i);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

fn acked_count(acked: &Mutex<Vec<usize>>) -> usize {
    acked.lock().unwrap().len()
}

/// Every acknowledged key reads back through every node of `live`; if one does
/// not, the failure names which nodes store it (`ReadRange`) and the ring.
async fn assert_acked_readable(live: &[String], acked: &[usize]) {
    use crustyring::proto::dht::{OperationType, RangeRequest};
    for addr in live {
        let c = common::connect(addr).await;
        let missing: Vec<(usize, String)> = stream::iter(acked.iter().copied())
            .map(|i| {
                let mut c = c.clone();
                async move {
                    let r =
                        crustyring::client::query(&mut c, OperationType::Get, &key(i), None).await;
                    let found = matches!(&r, Ok(r) if r.value == Some(key(i)));
                    (!found).then(|| (i, format!("{r:?}")))
                }
            })
            .buffer_unordered(16)
            .filter_map(|m| async move { m })
            .collect()
            .await;
        let Some((i, answer)) = missing.first() else {
            continue;
        };
        let position = crustyring::ring::key_position(&key(*i)).0;
        let mut holders = Vec::new();
        for peer in live {
            let mut p = common::connect(peer).await;
            let range = RangeRequest {
                start: position,
                end: position.wrapping_add(1),
            };
            if let Ok(stream) = p.read_range(range).await {
                let mut stream = stream.into_inner();
                while let Ok(Some(e)) = stream.message().await {
                    holders.push(format!("{peer} (version {})", e.version_micros));
                }
            }
        }
        let ring = crustyring::client::ring(addr, 10).await;
        panic!(
            "{} of {} acknowledged keys lost via {addr}; key {i} (position {position:016x}) answered {answer}, is stored on {holders:?}; ring: {ring:#?}",
            missing.len(),
            acked.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kills_under_load_then_a_full_restart_lose_no_acknowledged_write() {
    let dirs = TempDir::new("acceptance");
    let registry = common::registry_process();
    let mut nodes: Vec<Proc> = (0..5)
        .map(|i| node_on_disk(&registry.addr, &dirs.node(i)))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&addrs, Duration::from_secs(10)).await;

    // The victims: a node, then its predecessor, which inherits its arc when it
    // dies and is killed itself a second later.
    let ring = crustyring::client::ring(&addrs[0], 10).await.unwrap();
    let first = ring[2].node.clone().unwrap().addr;
    let second = ring[1].node.clone().unwrap().addr;
    let index = |addr: &str| nodes.iter().position(|n| n.addr == addr).unwrap();
    let (first, second) = (index(&first), index(&second));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = start_writer(addrs.clone(), 8, 200_000, stop.clone(), acked.clone());
    let started = Instant::now();
    while acked_count(&acked) < 300 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = acked_count(&acked);
    assert!(before >= 300, "the writer got going ({before} acks)");
    nodes[first].signal("KILL");
    let killed = Instant::now();
    let mut timeline = Vec::new();
    let mut second_killed = false;
    while killed.elapsed() < Duration::from_secs(8) {
        if !second_killed && killed.elapsed() >= Duration::from_secs(1) {
            nodes[second].signal("KILL");
            second_killed = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        timeline.push(acked_count(&acked) - before);
    }
    println!("acknowledged since the first kill, every 500 ms: {timeline:?}");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    nodes[first].wait_exit(Duration::from_secs(5));
    nodes[second].wait_exit(Duration::from_secs(5));
    let acked: Vec<usize> = acked.lock().unwrap().clone();
    println!(
        "{} writes acknowledged, {before} of them before the first kill",
        acked.len()
    );

    let live: Vec<String> = (0..5)
        .filter(|i| *i != first && *i != second)
        .map(|i| nodes[i].addr.clone())
        .collect();
    let repaired = common::await_ring(&live, Duration::from_secs(15)).await;
    println!("ring repaired {repaired:?} after the writer stopped");
    assert_acked_readable(&live, &acked).await;
    let acknowledged = acked.len() as u64;
    let copies = common::eventually(Duration::from_secs(30), "three copies of every key", || {
        let addr = live[0].clone();
        async move {
            let (owned, replicas) = common::key_copies(&addr).await?;
            if replicas == 2 * owned && owned >= acknowledged {
                Ok(())
            } else {
                Err(format!("{owned} owned keys, {replicas} replica keys"))
            }
        }
    })
    .await;
    println!("every key back to three copies {copies:?} after the ring was repaired");

    // Kill every node, and start all five again from their data directories.
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != first && i != second {
            node.signal("KILL");
            node.wait_exit(Duration::from_secs(5));
        }
    }
    let nodes: Vec<Proc> = (0..5)
        .map(|i| node_on_disk(&registry.addr, &dirs.node(i)))
        .collect();
    let all: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    common::await_ring(&all, Duration::from_secs(15)).await;
    assert_acked_readable(&all, &acked).await;
}

/// A replica that holds a key at a newer version than the owner's (a clock
/// ahead of the owner's, here planted through `Replicate`) does not make an
/// acknowledged write lose: the owner takes the newer copy, writes again past
/// it, and the acknowledged value is the one every copy ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_wins_over_a_replicas_newer_clock() {
    use crustyring::node::{NodeConfig, ReplicationSettings};
    use crustyring::proto::dht::{KeyValueEntry, ReplicateRequest};
    use crustyring::ring::key_position;
    let config = NodeConfig {
        replication: ReplicationSettings {
            anti_entropy_interval: Duration::from_millis(200),
            ..ReplicationSettings::default()
        },
        ..NodeConfig::default()
    };
    let cluster = common::cluster_with(3, config).await;
    let addrs = cluster.addrs();
    common::await_ring(&addrs, Duration::from_secs(10)).await;
    let k = b"skewed".to_vec();
    let position = key_position(&k);
    let owner = cluster
        .nodes
        .iter()
        .find(|n| n.view_snapshot().arc().contains(position))
        .unwrap();
    let replica = owner.view_snapshot().replicas(3)[0].clone();
    let ten_minutes_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        + 600_000_000;
    let mut r = common::connect(&replica.addr).await;
    r.replicate(ReplicateRequest {
        entries: vec![KeyValueEntry {
            key: position.0,
            value: b"planted".to_vec(),
            raw_key: Some(k.clone()),
            version_micros: ten_minutes_ahead,
            version_node: 1,
            tombstone: false,
            expires_micros: None,
        }],
    })
    .await
    .unwrap();

    let mut c = common::connect(&addrs[0]).await;
    assert_eq!(common::set(&mut c, &k, b"fresh").await.error, None);
    // Several anti-entropy rounds later, every copy holds the acknowledged value.
    tokio::time::sleep(Duration::from_secs(1)).await;
    common::eventually(
        Duration::from_secs(10),
        "every copy is the acknowledged write",
        || {
            let copies: Vec<Option<Vec<u8>>> = cluster
                .nodes
                .iter()
                .map(|n| {
                    n.local_entries()
                        .unwrap()
                        .into_iter()
                        .find(|e| e.key == k)
                        .and_then(|e| e.value)
                })
                .collect();
            let result = if copies.iter().all(|v| v.as_deref() == Some(&b"fresh"[..])) {
                Ok(())
            } else {
                Err(format!("copies: {copies:?}"))
            };
            async move { result }
        },
    )
    .await;
    for addr in &addrs {
        let mut c = common::connect(addr).await;
        assert_eq!(
            common::get(&mut c, &k).await.value.as_deref(),
            Some(&b"fresh"[..]),
            "via {addr}"
        );
    }
    cluster.shutdown().await;
}
