//! `crustyring`: a local cluster (the default), client commands and the load tool.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use crustyring::bench::{self, BenchPlan};
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::gateway::batch::BatchRequest;
use crustyring::proto::dht::OperationType;
use crustyring::registry::replay::{BalanceTable, measure};
use crustyring::ring::balance::largest_share_ratio;
use crustyring::ring::{Arc, IdRule, Position};
use crustyring::security::{Credentials, Secret};
use crustyring::store::DiskOptions;
use crustyring::store::footprint::{self, FootprintPlan};
use crustyring::{cli, client};
use std::time::Duration;

/// mimalloc rather than glibc's allocator: a request allocates dozens of small
/// buffers (headers, futures, bodies), and glibc's spent about a fifth of a GET's
/// instructions (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Crusty Ring: a distributed key-value store on a consistent-hashing ring.
///
/// With no command, starts a local cluster (a registry and 3 nodes) in this process.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    log: cli::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a registry and N nodes in this process (the default command).
    Cluster(Box<ClusterArgs>),
    /// Write a key.
    Put {
        /// The key (UTF-8 text, used as its bytes).
        key: String,
        /// The value.
        value: String,
        /// Write only if the key's version is this one (as `get --with-version`
        /// prints it), or, with `*`, only if the key is present.
        #[arg(long, conflicts_with = "if_absent")]
        if_match: Option<String>,
        /// Write only if the key is absent (create only).
        #[arg(long)]
        if_absent: bool,
        /// A time to live (`500ms`, `30s`, `10m`, `2h`, `7d`): the key reads as
        /// absent once it has passed.
        #[arg(long, value_parser = |s: &str| crustyring::gateway::keys::parse_ttl(s).map_err(|e| e.to_string()))]
        ttl: Option<std::time::Duration>,
        /// Also print the version written.
        #[arg(long)]
        with_version: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Read a key.
    Get {
        /// The key.
        key: String,
        /// Also print the value's version (for `put --if-match`).
        #[arg(long)]
        with_version: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Delete only if the key's version is this one.
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Run several gets, puts and deletes in one request (POST /batch): the
    /// node sends each key's owner its share in one call. Prints one line per
    /// operation, in order; exits with 1 if any failed (a missing key
    /// included), 2 if the operations are not well written.
    ///
    /// Not atomic, and the operations run at the same time: two on one key
    /// may apply in either order (send them in two batches).
    #[command(after_help = BATCH_EXAMPLES)]
    Batch {
        /// The operations, one after the other: `get KEY`, `put KEY VALUE`,
        /// `delete KEY`. After a put: `ttl=DURATION` (500ms, 30s, 10m, 2h,
        /// 7d), `if-match=VERSION` (or `*`: only if present), `if-absent`;
        /// after a delete: `if-match=VERSION`. Each key and value is one
        /// argument: quote it for spaces; `=` is fine. A word that starts
        /// with `-` (a negative number aside) goes after `--`, the options
        /// before it.
        #[arg(
            value_name = "OP",
            required_unless_present = "json",
            allow_negative_numbers = true
        )]
        ops: Vec<String>,
        /// Read the operations from a POST /batch JSON body in this file
        /// instead (`-`: standard input), for bytes (base64) and many
        /// operations.
        #[arg(long, value_name = "FILE", conflicts_with = "ops")]
        json: Option<std::path::PathBuf>,
        /// Also print each key's version after its operation.
        #[arg(long)]
        with_version: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Watch a key: print each change (its version, then the value, or
    /// `deleted`) as it happens, following the key's owner, until Ctrl-C.
    Watch {
        /// The key.
        key: String,
        /// Resume after this version (as a change printed it).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the ring's keys (in the order of their ring positions), one per
    /// line; with --values, key and value separated by a tab.
    List {
        /// Only keys that start with this.
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Print the values too.
        #[arg(long)]
        values: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show the ring as the nodes see it: each node's ID, neighbours, state, the
    /// keys it owns and the replica keys it holds.
    Ring {
        #[command(flatten)]
        target: Target,
    },
    /// Measure how evenly the registry's IDs share the ring: replays local-cluster
    /// addresses (http://127.0.0.1:50001 and on) joining in order, under a
    /// different salt per set, and prints the median and worst ratio of the
    /// largest share to the mean for each ring size and number of ID choices.
    Balance {
        /// Ring sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [8, 32])]
        nodes: Vec<usize>,
        /// Numbers of ID choices (`--id-choices`), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, IdRule::DEFAULT_CHOICES])]
        choices: Vec<u32>,
        /// Address sets (salts) per ring size and number of choices.
        #[arg(long, default_value_t = 50)]
        sets: usize,
    },
    /// Print the HTTP gateway's OpenAPI document (the one checked in at
    /// openapi/openapi.json).
    Openapi,
    /// Load a ring with concurrent QueryDht requests and report ops/s, latency
    /// and forwards per request. Learns the ring and sends each request to its
    /// key's owner, unless --via-nodes.
    Bench {
        /// Nodes to send to, comma-separated (any nodes of one ring).
        #[arg(
            long,
            short = 'n',
            value_delimiter = ',',
            default_value = "http://127.0.0.1:50001"
        )]
        node: Vec<String>,
        /// Send requests to the given nodes in turn and let the ring route them,
        /// rather than to each key's owner.
        #[arg(long)]
        via_nodes: bool,
        /// Operation to run.
        #[arg(long, value_enum, default_value_t = BenchOp::Set)]
        op: BenchOp,
        /// Requests in flight at once.
        #[arg(long, short = 'c', default_value_t = 32)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, short = 'd', default_value_t = 10.0)]
        duration: f64,
        /// Distinct keys to spread requests over.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// How the requests in flight hold their connections: one per node,
        /// shared (one application with a channel per node; this project's
        /// nodes take 200 requests at once per connection, more wait in the
        /// client), or one per in-flight request and node (as many separate
        /// clients).
        #[arg(long, value_enum, default_value_t = BenchConnections::PerNode)]
        connections: BenchConnections,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Fill an on-disk store through the `Store` trait, reopen it and read random
    /// keys; report resident memory and disk use after each step.
    #[command(hide = true)]
    StoreBench {
        /// The store's directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Keys to write (0: only reopen and read what a previous run wrote).
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// Random keys to read after reopening.
        #[arg(long, default_value_t = 100_000)]
        reads: usize,
        /// The keys the reads pick from (default: --keys).
        #[arg(long)]
        reads_over: Option<usize>,
        #[command(flatten)]
        cache: cli::CacheArgs,
    },
}

const BATCH_EXAMPLES: &str = r#"Examples:
  crustyring batch get a put b 'a value' delete c
  crustyring batch put session token ttl=30s put n 2 if-match=00064a... put new 1 if-absent
  crustyring batch --json ops.json          # {"ops": [{"op": "get", "key": "a"}, ...]}
  echo '{"ops": [{"op": "get", "key": "/wA=", "key_encoding": "base64"}]}' | crustyring batch --json -

Each answer is one line, in order, texts quoted (bytes that are not UTF-8 in hex):
  get "a": "1"
  put "b": created
  delete "c": not found"#;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchOp {
    Set,
    Get,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchConnections {
    PerNode,
    PerWorker,
}

/// Which node a client command talks to.
#[derive(Debug, clap::Args)]
struct Target {
    /// Any node of the ring.
    #[arg(long, short = 'n', default_value = "http://127.0.0.1:50001")]
    node: String,
    #[command(flatten)]
    token: TokenArgs,
}

/// The client token, for a ring that requires one.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The client token the ring's nodes require (sent as
    /// `authorization: Bearer <token>`).
    #[arg(long, env = "CRUSTY_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the client token.
    #[arg(long, env = "CRUSTY_CLIENT_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Verify `https://` nodes against these CA certificates (PEM).
    #[arg(long, env = "CRUSTY_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

impl TokenArgs {
    /// What a client sends with each call.
    fn credentials(&self) -> anyhow::Result<Credentials> {
        let token = Secret::from_value_or_file(
            "client token",
            self.token.as_deref(),
            self.token_file.as_deref(),
        )?;
        let tls = crustyring::security::Tls::load(None, None, self.tls_ca.as_deref())?;
        Ok(Credentials::client(token.as_ref(), &tls))
    }
}

#[derive(Debug, Parser)]
struct ClusterArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// The registry's port; nodes take the ports after it (0: all ephemeral).
    #[arg(long, default_value_t = 50000)]
    port: u16,
    /// Host to bind and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[command(flatten)]
    node: cli::NodeArgs,
    /// Keep each node's data on disk under this directory (default: in memory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    sync: cli::SyncArgs,
    #[command(flatten)]
    cache: cli::CacheArgs,
    #[command(flatten)]
    ids: cli::IdArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_logging(args.log.log_format);
    let command = args
        .command
        .unwrap_or_else(|| Command::Cluster(Box::new(ClusterArgs::parse_from(["cluster"]))));
    match command {
        Command::Cluster(c) => run_cluster(*c).await,
        Command::Balance {
            nodes,
            choices,
            sets,
        } => {
            let rows: Vec<_> = nodes
                .iter()
                .flat_map(|n| choices.iter().map(move |k| measure(*n, *k, sets)))
                .collect();
            print!("{}", BalanceTable(&rows));
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crustyring::gateway::page::openapi_json());
            Ok(())
        }
        Command::Put {
            key,
            value,
            if_match,
            if_absent,
            ttl,
            with_version,
            target,
        } => {
            let mut request =
                client::request(OperationType::Set, key.as_bytes(), Some(value.as_bytes()));
            request.if_match = if_match;
            request.if_absent = if_absent;
            request.ttl_ms = ttl.map(|t| t.as_millis() as u64);
            let r = send(&target, request).await?;
            match &r.value {
                Some(prev) => println!("replaced {key} (was {})", show(prev)),
                None => println!("created {key}"),
            }
            print_version(&r, with_version);
            Ok(())
        }
        Command::Get {
            key,
            with_version,
            target,
        } => {
            let r = send(
                &target,
                client::request(OperationType::Get, key.as_bytes(), None),
            )
            .await?;
            let version = r.clone();
            report(r)?;
            print_version(&version, with_version);
            Ok(())
        }
        Command::Delete {
            key,
            if_match,
            target,
        } => {
            let mut request = client::request(OperationType::Delete, key.as_bytes(), None);
            request.if_match = if_match;
            report(send(&target, request).await?)
        }
        Command::Batch {
            ops,
            json,
            with_version,
            target,
        } => {
            let batch =
                batch_request(ops, json.as_deref()).unwrap_or_else(|e| usage_error("batch", e));
            let credentials = target.token.credentials()?;
            let answer = client::batch::send(&target.node, &batch, &credentials).await?;
            let mut failed = 0;
            for (op, result) in batch.ops.iter().zip(&answer.results) {
                println!("{}", client::batch::describe(op, result, with_version));
                failed += usize::from(!client::batch::succeeded(result));
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} operations failed", batch.ops.len());
            }
            Ok(())
        }
        Command::Watch { key, since, target } => {
            let mut c = client::connect_with(&target.node, &target.token.credentials()?).await?;
            let request = crustyring::proto::dht::WatchRequest {
                key: key.into_bytes(),
                since,
                local: false,
                prefix: None,
            };
            let mut changes = c.watch(request).await?.into_inner();
            while let Some(change) = changes.message().await? {
                match (&change.value, change.deleted) {
                    (_, true) => println!("{} deleted", change.version),
                    (Some(v), false) => println!("{} {}", change.version, show(v)),
                    (None, false) => println!("{} (no value)", change.version),
                }
            }
            Ok(())
        }
        Command::List {
            prefix,
            limit,
            values,
            target,
        } => {
            let mut c = client::connect_with(&target.node, &target.token.credentials()?).await?;
            let request = crustyring::proto::dht::ListKeysRequest {
                prefix: prefix.into_bytes(),
                limit,
                values,
                ..Default::default()
            };
            let mut keys = c.list_keys(request).await?.into_inner();
            while let Some(key) = keys.message().await? {
                match key.value {
                    Some(v) if values => println!("{}\t{}", show(&key.key), show(&v)),
                    _ => println!("{}", show(&key.key)),
                }
            }
            Ok(())
        }
        Command::Ring { target } => {
            let credentials = target.token.credentials()?;
            let ring = client::ring_with(&target.node, client::WALK_LIMIT, &credentials).await?;
            println!(
                "{:<16}  {:<24} {:<8} {:>7} {:>7} {:>6}  {:<16}  successors (next first)",
                "id", "address", "state", "owned", "replica", "share", "prev"
            );
            let mut shares = Vec::new();
            for info in ring {
                let n = info.node.unwrap_or_default();
                let prev = info.prev.unwrap_or_default();
                let next = info.next.unwrap_or_default();
                let share = Arc::new(Position(n.id), Position(next.id)).share();
                shares.push(share);
                let successors: Vec<String> = info
                    .successors
                    .iter()
                    .map(|s| format!("{:016x}", s.id))
                    .collect();
                println!(
                    "{:016x}  {:<24} {:<8} {:>7} {:>7} {:>5.1}%  {:016x}  {}",
                    n.id,
                    n.addr,
                    info.state,
                    info.owned_keys,
                    info.replica_keys,
                    share * 100.0,
                    prev.id,
                    successors.join(" ")
                );
            }
            if let Some(ratio) = largest_share_ratio(&shares) {
                println!(
                    "largest share / mean share: {ratio:.2} (mean {:.1}%)",
                    100.0 / shares.len() as f64
                );
            }
            Ok(())
        }
        Command::StoreBench {
            data_dir,
            keys,
            value_bytes,
            reads,
            reads_over,
            cache,
        } => {
            let plan = FootprintPlan {
                dir: data_dir,
                keys,
                value_bytes,
                reads,
                reads_over: reads_over.unwrap_or(keys),
                options: DiskOptions {
                    cache_bytes: cache.bytes(),
                    ..DiskOptions::default()
                },
            };
            println!("| step | seconds | RSS MB | disk MB |");
            println!("| --- | ---: | ---: | ---: |");
            for s in footprint::measure(&plan).await? {
                let mb = |b: u64| b as f64 / (1 << 20) as f64;
                println!(
                    "| {} | {:.2} | {:.1} | {:.1} |",
                    s.what,
                    s.took.as_secs_f64(),
                    mb(s.rss),
                    mb(s.disk)
                );
            }
            println!(
                "peak RSS (VmHWM): {:.1} MB",
                footprint::proc_status_bytes("VmHWM") as f64 / (1 << 20) as f64
            );
            Ok(())
        }
        Command::Bench {
            node,
            via_nodes,
            op,
            concurrency,
            duration,
            keys,
            value_bytes,
            connections,
            token,
        } => {
            let plan = BenchPlan {
                nodes: node,
                route: !via_nodes,
                op: match op {
                    BenchOp::Set => OperationType::Set,
                    BenchOp::Get => OperationType::Get,
                },
                concurrency,
                duration: Duration::from_secs_f64(duration.clamp(0.1, 3600.0)),
                keys,
                value_bytes,
                credentials: token.credentials()?,
                connections: match connections {
                    BenchConnections::PerNode => bench::Connections::PerNode,
                    BenchConnections::PerWorker => bench::Connections::PerWorker,
                },
            };
            println!(
                "{:?} x {} in flight ({}) for {:.1} s against {}",
                plan.op,
                plan.concurrency,
                plan.connections,
                plan.duration.as_secs_f64(),
                plan.nodes.join(",")
            );
            let report = bench::run(&plan).await?;
            match report.members {
                0 => println!("sent to the given nodes; the ring routed"),
                n => println!("routed by the client to each key's owner among {n} members"),
            }
            println!("{report}");
            Ok(())
        }
    }
}

async fn send(
    target: &Target,
    request: crustyring::proto::dht::Query,
) -> anyhow::Result<crustyring::proto::dht::QueryResult> {
    // Straight to the key's owner, learned from the node given.
    let credentials = target.token.credentials()?;
    let mut c = client::RingClient::new_with(vec![target.node.clone()], true, credentials).await;
    let (result, _) = c.send(request).await?;
    Ok(result)
}

/// The batch the command line describes: its operation words, or a JSON body
/// read from `json` (`-`: standard input).
fn batch_request(ops: Vec<String>, json: Option<&std::path::Path>) -> Result<BatchRequest, String> {
    let Some(path) = json else {
        return Ok(BatchRequest {
            ops: client::batch::parse_words(&ops)?,
        });
    };
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    client::batch::parse_json(&text).map_err(|e| match path.to_str() {
        Some("-") => format!("standard input: {e}"),
        _ => format!("{}: {e}", path.display()),
    })
}

/// Exits as clap does for a usage error of `subcommand` (status 2).
fn usage_error(subcommand: &str, message: String) -> ! {
    let mut command = Args::command();
    command.build();
    match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(ErrorKind::InvalidValue, message).exit(),
        None => command.error(ErrorKind::InvalidValue, message).exit(),
    }
}

/// Prints `version <token>` for `r`, if asked and it has one.
fn print_version(r: &crustyring::proto::dht::QueryResult, asked: bool) {
    if let (true, Some(v)) = (asked, &r.version) {
        println!("version {v}");
    }
    if let (true, Some(ms)) = (asked, r.ttl_ms) {
        println!("ttl {ms} ms");
    }
}

fn report(r: crustyring::proto::dht::QueryResult) -> anyhow::Result<()> {
    match (r.error, r.value) {
        (Some(e), _) => anyhow::bail!(e),
        (None, Some(v)) => println!("{}", show(&v)),
        (None, None) => println!("(no value)"),
    }
    Ok(())
}

fn show(v: &[u8]) -> String {
    String::from_utf8(v.to_vec()).unwrap_or_else(|_| client::hex(v))
}

async fn run_cluster(c: ClusterArgs) -> anyhow::Result<()> {
    if c.port == 0
        && let Some(dir) = &c.data_dir
    {
        anyhow::bail!(
            "--data-dir {} needs fixed ports: each node keeps its data in node-<port> and finds it again by its port, which --port 0 changes on every run; give a --port",
            dir.display()
        );
    }
    let options = ClusterOptions {
        host: c.host.clone(),
        registry_port: c.port,
        node: c.node.config()?,
        data_dir: c.data_dir.clone(),
        disk: c.sync.disk_options(&c.cache),
        ids: c.ids.rule(),
    };
    let mut cluster = LocalCluster::start(options).await?;
    for i in 1..=c.nodes {
        // Port 0 asks for ephemeral ports throughout.
        let port = match c.port {
            0 => 0,
            p => p
                .checked_add(i)
                .ok_or_else(|| anyhow::anyhow!("node port out of range"))?,
        };
        cluster.add_node(port).await?;
    }
    println!("Crusty Ring local cluster");
    println!("  registry  {}", cluster.registry);
    for node in &cluster.nodes {
        let me = node.me();
        println!("  node      {}  id {}", me.addr, me.id);
    }
    let first = cluster.addrs().first().cloned().unwrap_or_default();
    println!();
    println!("In a browser: {first}/  (the ring and a key form)");
    println!("API docs:     {first}/swagger-ui/  (OpenAPI at {first}/openapi.json)");
    println!();
    // The examples carry what this cluster requires: the CA for TLS, and the
    // client token (named, never printed).
    let security = &c.node.security;
    let ca = security
        .tls
        .tls_ca
        .as_ref()
        .map(|p| p.display().to_string());
    let token = security.client_token.is_some() || security.client_token_file.is_some();
    let mut curl = String::new();
    let mut cli_flags = String::new();
    let mut grpcurl = "-plaintext".to_string();
    if let Some(ca) = &ca {
        curl.push_str(&format!(" --cacert {ca}"));
        cli_flags.push_str(&format!(" --tls-ca {ca}"));
        grpcurl = format!("-cacert {ca}");
    }
    if token {
        curl.push_str(" -H \"Authorization: Bearer $CRUSTY_CLIENT_TOKEN\"");
        grpcurl.push_str(" -H \"authorization: Bearer $CRUSTY_CLIENT_TOKEN\"");
    }
    println!("Try:");
    if token {
        println!(
            "  export CRUSTY_CLIENT_TOKEN=...   # the client token this cluster requires (the CLI reads it too)"
        );
    }
    println!("  curl{curl} -X PUT {first}/keys/1 -d Ru1nnAfPu3Ya4v");
    println!("  curl{curl} {first}/keys/1");
    println!("  curl{curl} -X DELETE {first}/keys/1");
    println!("  curl{curl} {first}/ring");
    println!("  cargo run --release -- put 1 Ru1nnAfPu3Ya4v --node {first}{cli_flags}");
    println!("  cargo run --release -- get 1 --node {first}{cli_flags}");
    println!("  cargo run --release -- ring --node {first}{cli_flags}");
    let host = first
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    println!(
        "  grpcurl {grpcurl} -d '{{\"ty\":\"Get\",\"key\":\"MQ==\"}}' {host} dht.DhtNode/QueryDht"
    );
    println!();
    println!("Ctrl-C stops the cluster.");
    cli::shutdown_signal().await;
    println!("stopping...");
    cluster.shutdown().await;
    Ok(())
}
