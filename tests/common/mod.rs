//! Shared fixtures: in-process clusters on ephemeral loopback ports, real processes
//! of the project's binaries, and small client helpers. Everything waits on
//! readiness (a joined node, a printed address), never on fixed sleeps.
#![allow(dead_code)]

pub mod history;
pub mod linearizable;
pub mod netns;

use crustyring::client;
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::node::NodeConfig;
use crustyring::proto::dht::{self, OperationType};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status, Streaming};

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
pub async fn connect(addr: &str) -> client::NodeClient {
    client::connect(addr).await.expect("node reachable")
}

/// The `grpc.health.v1` status the server at `addr` reports for `service`
/// (`""`: the whole server).
pub async fn grpc_health(addr: &str, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .expect("an address")
        .connect()
        .await
        .expect("server reachable");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// `QueryDht` Set.
pub async fn set(c: &mut client::NodeClient, key: &[u8], value: &[u8]) -> dht::QueryResult {
    client::query(c, OperationType::Set, key, Some(value))
        .await
        .expect("set succeeds")
}

/// `QueryDht` Get.
pub async fn get(c: &mut client::NodeClient, key: &[u8]) -> dht::QueryResult {
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
    /// A directory the process keeps its state in, removed with it.
    pub dir: Option<TempDir>,
}

impl Proc {
    /// Starts `bin` with `args` and waits (at most 30 s) until it prints a line
    /// containing `ready`; the first `http://` (or `https://`) word of that line
    /// is its address.
    ///
    /// With `NODE_LOG_DIR` set, its logs (stderr) go to a file of their own
    /// there, named after the binary, its address's port and its PID, rather than
    /// interleaved with every other process's.
    pub fn start(bin: &str, args: &[&str], ready: &str) -> Proc {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log_file = std::env::var_os("NODE_LOG_DIR").map(|dir| {
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("starting-{}-{n}.log", std::process::id());
            std::path::PathBuf::from(dir).join(name)
        });
        let stderr = match &log_file {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("NODE_LOG_DIR writable")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(bin)
            .args(args)
            // NODE_LOG (a RUST_LOG filter) shows more of the nodes' logs.
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
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
            dir: None,
        };
        proc.lines = proc.read_until(ready);
        let ready_line = proc.lines.last().cloned().unwrap_or_default();
        proc.addr = ready_line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_default()
            .to_string();
        if let Some(path) = log_file {
            let binary = std::path::Path::new(bin).file_name().unwrap_or_default();
            let port = proc.addr.rsplit(':').next().unwrap_or("unknown");
            let pid = proc.child.id();
            let name = format!("{}-{port}-{pid}.log", binary.to_string_lossy());
            let named = path.with_file_name(name);
            std::fs::rename(&path, named).expect("log file renamed");
        }
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

/// A registry process on an ephemeral port, starting for the first time (with
/// a data directory of its own, so it names the first node at once).
pub fn registry_process() -> Proc {
    registry_process_with(&["--port", "0"])
}

/// A registry process with `args`, starting for the first time.
pub fn registry_process_with(args: &[&str]) -> Proc {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = TempDir::new(&format!("registry-{n}"));
    let mut all = args.to_vec();
    let path = dir.path();
    all.extend(["--data-dir", &path]);
    let mut proc = Proc::start(env!("CARGO_BIN_EXE_registry"), &all, "listening on");
    proc.dir = Some(dir);
    proc
}

/// A DHT node process on an ephemeral port, joined through `registry`; in memory
/// unless `extra` names a `--data-dir`.
pub fn dht_process(registry: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["0", "--registry", registry];
    args.extend_from_slice(extra);
    if !extra.contains(&"--data-dir") {
        args.push("--memory");
    }
    Proc::start(env!("CARGO_BIN_EXE_dht"), &args, "listening on")
}

/// An HTTP/1.1 answer: status, headers and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Sends one HTTP/1.1 request to `url` (bounded to 10 s).
pub async fn http(method: &str, url: &str, body: &[u8]) -> HttpAnswer {
    http_with(method, url, body, &[]).await
}

/// Sends one HTTP/1.1 request with extra headers.
pub async fn http_with(
    method: &str,
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HttpAnswer {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<hyper::body::Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(hyper::body::Bytes::copy_from_slice(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answer within 10 s")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// A peer that takes a hand-off and then never answers a query.
#[derive(Clone)]
pub struct SilentPeer;

#[tonic::async_trait]
impl dht::dht_node_server::DhtNode for SilentPeer {
    async fn query_dht(
        &self,
        _: Request<dht::Query>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        std::future::pending().await
    }
    async fn forward_query(
        &self,
        _: Request<dht::EncodedQuery>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        std::future::pending().await
    }
    async fn register_as_neighbor(
        &self,
        _: Request<dht::NeighborRegisterInfo>,
    ) -> Result<Response<dht::PreviousNeighbors>, Status> {
        Err(Status::unimplemented("silent"))
    }
    type TransferKeysStream = tokio_stream::Empty<Result<dht::KeyValueEntry, Status>>;
    async fn transfer_keys(
        &self,
        _: Request<dht::NodeId>,
    ) -> Result<Response<Self::TransferKeysStream>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn hand_off(
        &self,
        r: Request<Streaming<dht::HandOffChunk>>,
    ) -> Result<Response<dht::HandOffAck>, Status> {
        let mut s = r.into_inner();
        while s.message().await?.is_some() {}
        Ok(Response::new(dht::HandOffAck { entries: 0 }))
    }
    async fn get_node_info(&self, _: Request<()>) -> Result<Response<dht::NodeInfo>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn replicate(
        &self,
        _: Request<dht::ReplicateRequest>,
    ) -> Result<Response<dht::ReplicateAck>, Status> {
        std::future::pending().await
    }
    async fn digest_range(
        &self,
        _: Request<dht::DigestRequest>,
    ) -> Result<Response<dht::DigestReply>, Status> {
        std::future::pending().await
    }
    type ReadRangeStream = tokio_stream::Empty<Result<dht::KeyValueEntry, Status>>;
    async fn read_range(
        &self,
        _: Request<dht::RangeRequest>,
    ) -> Result<Response<Self::ReadRangeStream>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn list_range(
        &self,
        _: Request<dht::ListRangeRequest>,
    ) -> Result<Response<dht::ListRangeReply>, Status> {
        std::future::pending().await
    }
    async fn batch(
        &self,
        _: Request<dht::BatchRequest>,
    ) -> Result<Response<dht::BatchReply>, Status> {
        std::future::pending().await
    }
    type ForwardBatchStream = tokio_stream::Empty<Result<dht::ForwardAnswer, Status>>;
    async fn forward_batch(
        &self,
        _: Request<dht::BatchRequest>,
    ) -> Result<Response<Self::ForwardBatchStream>, Status> {
        std::future::pending().await
    }
    type WatchStream = tokio_stream::Empty<Result<dht::WatchEvent, Status>>;
    async fn watch(
        &self,
        _: Request<dht::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("silent"))
    }
    type ListKeysStream = tokio_stream::Empty<Result<dht::ListedKey, Status>>;
    async fn list_keys(
        &self,
        _: Request<dht::ListKeysRequest>,
    ) -> Result<Response<Self::ListKeysStream>, Status> {
        Err(Status::unimplemented("silent"))
    }
}

/// A running [`SilentPeer`]; `stop` takes it down (its port then refuses).
pub struct SilentServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl SilentServer {
    /// Stops the server and waits until its port is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts a [`SilentPeer`] and has `node` (alone in its ring) take it as its next
/// neighbour at the position opposite it. Returns the peer's ID and its server.
pub async fn link_silent_peer(node: &crustyring::ring::Member) -> (u64, SilentServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(dht::dht_node_server::DhtNodeServer::new(SilentPeer))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let silent_id = node.id.0.wrapping_add(1 << 63);
    connect(&node.addr)
        .await
        .register_as_neighbor(dht::NeighborRegisterInfo {
            ty: dht::NeighborType::Next as i32,
            id: silent_id,
            addr: silent_addr,
        })
        .await
        .unwrap();
    (silent_id, SilentServer { stop, task })
}

/// A node alone with a [`SilentPeer`] as its next neighbour, short peer timeouts,
/// and a key the silent peer owns.
pub struct SilentOwner {
    pub cluster: LocalCluster,
    pub node: crustyring::ring::Member,
    pub key: String,
    pub server: SilentServer,
}

/// Starts a [`SilentOwner`] fixture: connect and request timeouts of 500 ms, and
/// failure detection slowed to a minute, so the silent peer stays linked in.
pub async fn silent_owner() -> SilentOwner {
    use crustyring::ring::{Arc, Position, key_position};
    let config = NodeConfig {
        timeouts: crustyring::node::PeerTimeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_millis(500),
        },
        maintenance: crustyring::node::MaintenanceSettings {
            probe_interval: Duration::from_secs(60),
            ..Default::default()
        },
        // No leases: they are renewed by the probes, which this fixture
        // slows to a minute (and the silent peer would grant none).
        leases: None,
        // One copy: the silent peer is never declared dead (no probes), so as
        // a replica it would hold up every write.
        replication: crustyring::node::ReplicationSettings {
            factor: 1,
            ..Default::default()
        },
        ..NodeConfig::default()
    };
    let cluster = cluster_with(1, config).await;
    let node = cluster.nodes[0].me();
    let (silent_id, server) = link_silent_peer(&node).await;
    // The silent peer owns half the ring: among 1000 keys one surely falls there.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| Arc::new(Position(silent_id), node.id).contains(key_position(k.as_bytes())))
        .expect("a key owned by the silent peer");
    SilentOwner {
        cluster,
        node,
        key,
        server,
    }
}

/// Checks the ring the live nodes at `addrs` form: every node is serving, its
/// `next` is the next live node by ID and its `prev` the previous one. `Err` says
/// what does not hold yet (for polling).
pub async fn ring_converged(addrs: &[String]) -> Result<(), String> {
    let mut views = Vec::new();
    for addr in addrs {
        let mut c = client::connect(addr).await.map_err(|e| e.to_string())?;
        let info = c
            .get_node_info(())
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .into_inner();
        views.push(info);
    }
    views.sort_by_key(|i| i.node.as_ref().map(|n| n.id));
    let n = views.len();
    for (i, v) in views.iter().enumerate() {
        let me = v.node.as_ref().map(|n| n.addr.clone()).unwrap_or_default();
        let id = |m: &Option<crustyring::proto::registry::Node>| m.as_ref().map(|n| n.id);
        if v.state != "serving" {
            return Err(format!("{me} is {}", v.state));
        }
        if id(&v.next) != id(&views[(i + 1) % n].node) {
            return Err(format!("{me}: next is {:?}", v.next));
        }
        if id(&v.prev) != id(&views[(i + n - 1) % n].node) {
            return Err(format!("{me}: prev is {:?}", v.prev));
        }
        // The predecessors that hold replicas of the node's arc, beyond prev.
        let beyond_prev = (v.replication_factor as usize)
            .saturating_sub(2)
            .min(n.saturating_sub(2));
        for k in 0..beyond_prev {
            let expected = views[(i + 2 * n - 2 - k) % n].node.as_ref().map(|n| n.id);
            if v.predecessors.get(k).map(|p| p.id) != expected {
                return Err(format!("{me}: predecessors are {:?}", v.predecessors));
            }
        }
    }
    Ok(())
}

/// Polls `check` every 50 ms until it holds; panics with its last complaint after
/// `limit`. Returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > limit => {
                panic!("{what} did not hold within {limit:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The registry's live members' addresses, sorted.
pub async fn registry_members(registry: &str) -> Vec<String> {
    let mut addrs: Vec<String> = registry_ids(registry)
        .await
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    addrs.sort();
    addrs
}

/// The registry's live members as `(ID, address)`, sorted.
pub async fn registry_ids(registry: &str) -> Vec<(u64, String)> {
    use crustyring::proto::registry::registry_client::RegistryClient;
    let mut c = RegistryClient::connect(registry.to_string())
        .await
        .expect("registry up");
    let mut members: Vec<(u64, String)> = c
        .get_connected_nodes(())
        .await
        .expect("members")
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| (n.id, n.addr))
        .collect();
    members.sort();
    members
}

/// Reads each of `which` through `addr`: key `key(i)` must hold the value `key(i)`.
pub async fn assert_values(
    addr: &str,
    which: impl IntoIterator<Item = usize>,
    key: fn(usize) -> Vec<u8>,
) {
    use futures_util::{StreamExt, stream};
    let client = connect(addr).await;
    stream::iter(which)
        .for_each_concurrent(16, |i| {
            let mut c = client.clone();
            async move {
                let r = client::query(&mut c, OperationType::Get, &key(i), None)
                    .await
                    .unwrap_or_else(|e| panic!("key {i} via {addr}: {e}"));
                assert_eq!(r.value, Some(key(i)), "key {i} via {addr}");
            }
        })
        .await;
}

/// Waits (at most `limit`) until the nodes at `live` form a correct ring; how long
/// it took.
pub async fn await_ring(live: &[String], limit: Duration) -> Duration {
    eventually(limit, "ring convergence", || {
        let live = live.to_vec();
        async move { ring_converged(&live).await }
    })
    .await
}

/// Live keys owned and held as replicas, summed over the ring that `addr` walks.
pub async fn key_copies(addr: &str) -> Result<(u64, u64), String> {
    let ring = crustyring::client::ring(addr, 100)
        .await
        .map_err(|e| e.to_string())?;
    let owned = ring.iter().map(|i| i.owned_keys).sum();
    let replicas = ring.iter().map(|i| i.replica_keys).sum();
    Ok((owned, replicas))
}

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `name` (and this process, and
    /// how many came before it: two tests that pick the same name each get
    /// their own).
    pub fn new(name: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("crustyring-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory itself.
    pub fn path(&self) -> String {
        self.0.display().to_string()
    }

    /// The data directory of node `i` inside it.
    pub fn node(&self, i: usize) -> String {
        self.0.join(format!("node-{i}")).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (at most 10 s) until every node at `addrs` has all of them in its
/// routing table (its `crustyring_ring_members` gauge): from then on, in a
/// stable ring, every forward goes straight to the owner.
pub async fn await_routing_tables(addrs: &[String]) {
    let members = format!("crustyring_ring_members {}", addrs.len());
    eventually(Duration::from_secs(10), "routing tables complete", || {
        let (addrs, members) = (addrs.to_vec(), members.clone());
        async move {
            for addr in &addrs {
                let scrape = http("GET", &format!("{addr}/metrics"), b"").await;
                if !String::from_utf8_lossy(&scrape.body)
                    .lines()
                    .any(|l| l == members)
                {
                    return Err(format!(
                        "{addr} does not know all {} members yet",
                        addrs.len()
                    ));
                }
            }
            Ok(())
        }
    })
    .await;
}
