//! Shared fixtures: in-process clusters on ephemeral loopback ports, real processes
//! of the project's binaries, and small client helpers. Everything waits on
//! readiness (a joined node, a printed address), never on fixed sleeps.
#![allow(dead_code)]

use crustyring::client;
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::node::NodeConfig;
use crustyring::proto::dht::{self, OperationType, dht_node_client::DhtNodeClient};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A registry and `n` nodes started one after the other.
pub async fn cluster(n: usize) -> LocalCluster {
    cluster_with(n, NodeConfig::default()).await
}

/// A registry and `n` nodes with `config`.
pub async fn cluster_with(n: usize, config: NodeConfig) -> LocalCluster {
    let options = ClusterOptions {
        node: config,
        ..ClusterOptions::default()
    };
    let mut c = LocalCluster::start(options).await.expect("registry starts");
    for _ in 0..n {
        c.add_node(0).await.expect("node joins");
    }
    c
}

/// A client of the node at `addr`.
pub async fn connect(addr: &str) -> DhtNodeClient<Channel> {
    client::connect(addr).await.expect("node reachable")
}

/// `QueryDht` Set.
pub async fn set(c: &mut DhtNodeClient<Channel>, key: &[u8], value: &[u8]) -> dht::QueryResult {
    client::query(c, OperationType::Set, key, Some(value))
        .await
        .expect("set succeeds")
}

/// `QueryDht` Get.
pub async fn get(c: &mut DhtNodeClient<Channel>, key: &[u8]) -> dht::QueryResult {
    client::query(c, OperationType::Get, key, None)
        .await
        .expect("get succeeds")
}

/// A process of one of the project's binaries; killed (by its PID) when dropped.
pub struct Proc {
    pub child: Child,
    /// The first address on its ready line (empty if none).
    pub addr: String,
    /// Every line it printed before the address line.
    pub lines: Vec<String>,
    /// Lines of stdout, read by a thread so that waits can be bounded.
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `bin` with `args` and waits (at most 30 s) until it prints a line
    /// containing `ready`; the first `http://` word of that line is its address.
    pub fn start(bin: &str, args: &[&str], ready: &str) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().map(|out| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        // From here on, Drop kills the child whatever happens.
        let mut proc = Proc {
            child,
            addr: String::new(),
            lines: Vec::new(),
            stdout: stdout.expect("piped stdout"),
        };
        proc.lines = proc.read_until(ready);
        let ready_line = proc.lines.last().cloned().unwrap_or_default();
        proc.addr = ready_line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_default()
            .to_string();
        proc
    }

    /// Reads stdout lines until one contains `pattern`; fails after 30 s or if the
    /// process closes its stdout first.
    pub fn read_until(&mut self, pattern: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(pattern);
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(e) => panic!("no line with {pattern:?} ({e}); got {lines:?}"),
            }
        }
    }

    /// Sends `signal` (e.g. "KILL", "INT") to this process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits at most `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A registry process on an ephemeral port.
pub fn registry_process() -> Proc {
    Proc::start(
        env!("CARGO_BIN_EXE_registry"),
        &["--port", "0"],
        "listening on",
    )
}

/// A DHT node process on an ephemeral port, joined through `registry`.
pub fn dht_process(registry: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["0", "--registry", registry];
    args.extend_from_slice(extra);
    Proc::start(env!("CARGO_BIN_EXE_dht"), &args, "listening on")
}
