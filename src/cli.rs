//! Command-line pieces shared by the binaries: node flags and the shutdown signal.

use crate::node::{
    JoinSettings, Limits, MaintenanceSettings, NodeConfig, PeerTimeouts, ReplicationSettings,
    WatchSettings,
};
use crate::ring::IdRule;
use crate::security::{Required, Secret, SecretError, SecurityError, Tls};
use crate::server::ServeLimits;
use crate::store::{
    DEFAULT_CACHE_MB, DEFAULT_CHECKPOINT_EVERY, DEFAULT_COMMIT_DELAY, DiskOptions, DiskStore,
    MemoryStore, Store, StoreError, SyncMode,
};
use std::time::Duration;

/// Flags every DHT node takes (the `dht` binary and the local cluster).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Longest key accepted, in bytes (REST and gRPC alike).
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes (REST and gRPC alike).
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// How long to wait for a TCP connection to a peer, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// How long to wait for a peer's answer to one forwarded request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// How many times a query may be forwarded before it fails with UNAVAILABLE.
    #[arg(long, default_value_t = 128)]
    pub max_hops: u32,
    /// How long a node keeps trying to join (or leave) the ring, in seconds.
    #[arg(long, default_value_t = 30)]
    pub join_timeout_secs: u64,
    /// How often to probe the next and previous neighbours, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub probe_interval_ms: u64,
    /// Failed probes in a row after which a neighbour is declared dead.
    #[arg(long, default_value_t = 3)]
    pub probe_misses: u32,
    /// Leases on ownership, in milliseconds (0: off). An owner serves its
    /// arc only while its previous neighbour's view links to it (renewed with
    /// each probe), and a node that declares its next dead serves the taken
    /// arc only once such a lease has lapsed (the length plus 1% clock drift
    /// each way): no arc has two serving owners when a node is paused or cut
    /// off, at the price of that wait after a real failure. At least two probe
    /// intervals (a shorter one is raised to that: a lease must outlive the
    /// probe that renews it).
    #[arg(long, default_value_t = crate::lease::LeaseSettings::DEFAULT_LENGTH_MS)]
    pub lease_ms: u64,
    /// Length of the successor list (how many consecutive failures the ring
    /// survives without help from the registry).
    #[arg(long, default_value_t = 3)]
    pub successors: usize,
    /// How often each node relearns every member of the ring (its routing
    /// table, for one-hop forwarding) by sweeping the ring, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub table_refresh_ms: u64,
    /// How often to send the registry a heartbeat, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// How long a delete's tombstone is kept before it is purged, in seconds. A
    /// node down for longer may bring back keys deleted meanwhile.
    #[arg(long, default_value_t = 86400)]
    pub tombstone_grace_secs: u64,
    /// Copies of each key: its owner and this many minus one of the owner's
    /// predecessors (fewer while the ring has fewer nodes). Every node of a ring
    /// should use the same factor.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replication_factor: u32,
    /// Copies that must be durable before a write is acknowledged, the owner's
    /// included. Default: every copy (the replication factor, or every node of a
    /// smaller ring).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub write_quorum: Option<u32>,
    /// How often each node compares its replicas with their owners, in
    /// milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub anti_entropy_interval_ms: u64,
    /// At most this many entries a second are moved by anti-entropy (re-replication
    /// after joins, leaves and failures), so foreground requests keep flowing.
    #[arg(long, default_value_t = 20_000)]
    pub repair_rate: u32,
    /// How many of its recent changes each node keeps for watches: a watch
    /// that reconnects (its owner failed, or the client came back with a
    /// version) misses nothing still kept, and otherwise starts again from the
    /// key's current state.
    #[arg(long, default_value_t = crate::node::WatchSettings::default().retained)]
    pub watch_retained: usize,
    /// At most this many MiB of keys and values in those changes.
    #[arg(long, default_value_t = 8)]
    pub watch_retained_mb: usize,
    /// Credentials required of peers and clients.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// The most a peer may make this node hold in memory from one stream, in
    /// MiB: a leave or repair-merge hand-off (taken in one step at its end) or
    /// an anti-entropy read. A stream over it is refused (RESOURCE_EXHAUSTED)
    /// and changes nothing; a node whose arc is bigger cannot hand it to a
    /// predecessor with a smaller limit.
    #[arg(long, default_value_t = NodeConfig::DEFAULT_MAX_PEER_STREAM_BYTES >> 20)]
    pub max_peer_stream_mb: usize,
    /// Connections served at once (clients and peers); more wait to be
    /// accepted. Keep it under the process's file descriptor limit.
    #[arg(long, default_value_t = ServeLimits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, in
    /// milliseconds (its first request's, and each HTTP/1 request's: an idle
    /// HTTP/1 connection is closed after it too).
    #[arg(long, default_value_t = ServeLimits::DEFAULT_HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// How long a REST request's body may take to arrive after its headers,
    /// in milliseconds; later, the request fails with 408.
    #[arg(long, default_value_t = ServeLimits::DEFAULT_BODY_TIMEOUT_MS)]
    pub body_timeout_ms: u64,
}

impl NodeArgs {
    /// The node configuration these flags describe; fails if a secret or a
    /// TLS file given cannot be read or is not acceptable.
    pub fn config(&self) -> Result<NodeConfig, SecurityError> {
        Ok(NodeConfig {
            limits: Limits {
                max_key_bytes: self.max_key_bytes,
                max_value_bytes: self.max_value_bytes,
            },
            timeouts: PeerTimeouts {
                connect: Duration::from_millis(self.connect_timeout_ms),
                request: Duration::from_millis(self.request_timeout_ms),
            },
            max_hops: self.max_hops,
            join: JoinSettings {
                timeout: Duration::from_secs(self.join_timeout_secs),
                ..JoinSettings::default()
            },
            maintenance: MaintenanceSettings {
                probe_interval: Duration::from_millis(self.probe_interval_ms.max(10)),
                misses: self.probe_misses.max(1),
                // Replicas are found through the successor list: it must reach
                // as far as the replicated arcs do.
                successors: self.successors.max(self.replication_factor as usize).max(1),
                heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms.max(10)),
                tombstone_grace: Duration::from_secs(self.tombstone_grace_secs),
                table_refresh: Duration::from_millis(self.table_refresh_ms.max(10)),
            },
            replication: ReplicationSettings {
                factor: self.replication_factor as usize,
                write_quorum: self.write_quorum.map(|q| q as usize),
                anti_entropy_interval: Duration::from_millis(self.anti_entropy_interval_ms.max(10)),
                repair_rate: self.repair_rate.max(1),
            },
            watch: WatchSettings {
                retained: self.watch_retained.max(1),
                retained_bytes: self.watch_retained_mb.saturating_mul(1 << 20),
            },
            max_peer_stream_bytes: self.max_peer_stream_mb.saturating_mul(1 << 20),
            serving: ServeLimits {
                max_connections: self.max_connections.max(1),
                header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)),
                body_timeout: Duration::from_millis(self.body_timeout_ms.max(1)),
                ..ServeLimits::default()
            },
            security: self.security.required()?,
            tls: self.security.tls.tls()?,
            network: crate::transport::Network::default(),
            leases: (self.lease_ms > 0).then(|| crate::lease::LeaseSettings {
                length: Duration::from_millis(self.lease_ms)
                    .max(2 * Duration::from_millis(self.probe_interval_ms.max(10))),
                ..crate::lease::LeaseSettings::default()
            }),
        })
    }
}

/// The cluster secret, by value or file (nodes and the registry).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterSecretArgs {
    /// A secret every member of the cluster shares (at least 16 visible ASCII
    /// characters): when set, node-to-node and registry calls without it are
    /// refused, and the process sends it on its own. Prefer the file or the
    /// environment to the command line, which other users may see.
    #[arg(long, env = "CRUSTY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret (surrounding white space ignored).
    #[arg(
        long,
        env = "CRUSTY_CLUSTER_SECRET_FILE",
        conflicts_with = "cluster_secret"
    )]
    pub cluster_secret_file: Option<std::path::PathBuf>,
}

impl ClusterSecretArgs {
    /// The cluster secret, if one is given.
    pub fn secret(&self) -> Result<Option<Secret>, SecretError> {
        Secret::from_value_or_file(
            "cluster secret",
            self.cluster_secret.as_deref(),
            self.cluster_secret_file.as_deref(),
        )
    }
}

/// What a node requires of peers and clients.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterSecretArgs,
    /// A token clients must send (`authorization: Bearer <token>`, at least 16
    /// visible ASCII characters) to use the key API over gRPC and HTTP; health,
    /// readiness, metrics, the page and the API description stay open. Every
    /// node of a cluster needs the same one.
    #[arg(long, env = "CRUSTY_CLIENT_TOKEN", hide_env_values = true)]
    pub client_token: Option<String>,
    /// A file holding the client token (surrounding white space ignored).
    #[arg(
        long,
        env = "CRUSTY_CLIENT_TOKEN_FILE",
        conflicts_with = "client_token"
    )]
    pub client_token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsArgs,
}

/// TLS on the served port, and the CA that servers called are verified with.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS only (gRPC and HTTP) with this certificate chain (PEM); the
    /// process then advertises an `https://` address. Needs --tls-key.
    #[arg(long, env = "CRUSTY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "CRUSTY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Verify `https://` peers and the registry against these CA certificates
    /// (PEM).
    #[arg(long, env = "CRUSTY_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The TLS settings these flags describe.
    pub fn tls(&self) -> Result<Tls, crate::security::TlsError> {
        Tls::load(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
    }
}

impl SecurityArgs {
    /// The credentials a node with these flags requires.
    pub fn required(&self) -> Result<Required, SecretError> {
        Ok(Required {
            cluster_secret: self.cluster.secret()?,
            client_token: Secret::from_value_or_file(
                "client token",
                self.client_token.as_deref(),
                self.client_token_file.as_deref(),
            )?,
        })
    }
}

/// How joining nodes' IDs are chosen (the registry, `dht --join`, the local
/// cluster). Every registry and `--join` node of one ring should use the same, so
/// that an ID is predictable from the join order.
#[derive(Debug, Clone, clap::Args)]
pub struct IdArgs {
    /// Salt mixed into node IDs (with --join or --new-ring on a node, it must
    /// match the registry's).
    #[arg(long, default_value = crate::registry::DEFAULT_SALT)]
    pub salt: String,
    /// How many hashed candidate IDs (SHA-256 of the address, the salt and a
    /// counter) a joining node chooses among: it takes the one that splits the
    /// largest arc most evenly. 1 gives the single-hash IDs of earlier versions.
    /// A node restarted from its data keeps its saved ID.
    #[arg(long, default_value_t = IdRule::DEFAULT_CHOICES, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub id_choices: u32,
}

impl IdArgs {
    /// The ID rule these flags describe.
    pub fn rule(&self) -> IdRule {
        IdRule::new(self.salt.clone(), self.id_choices)
    }
}

/// Where a node keeps its data.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Keep data and the node's ID in this directory (redb); a node restarted with
    /// the same directory comes back at its old position with its keys.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep data in memory only (tests and demos): nothing survives a restart.
    #[arg(long, conflicts_with = "data_dir")]
    pub memory: bool,
    /// When writes count as durable.
    #[command(flatten)]
    pub sync: SyncArgs,
    /// redb's page cache.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The on-disk store's memory budget.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// redb's page cache for the on-disk store, in MiB. Values are read from disk
    /// through it; only a compact index of keys (no values) is always in memory.
    #[arg(long, default_value_t = DEFAULT_CACHE_MB)]
    pub cache_mb: usize,
}

impl CacheArgs {
    /// The cache size in bytes.
    pub fn bytes(&self) -> usize {
        self.cache_mb.saturating_mul(1 << 20)
    }
}

/// When a write to the on-disk store counts as durable.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// When a write is durable: `always` acknowledges only after fsync
    /// (group-committed), `batched` acknowledges at once and fsyncs every
    /// --sync-interval-ms.
    #[arg(long, value_enum, default_value_t = Sync::Always)]
    pub sync: Sync,
    /// The fsync interval of --sync batched, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub sync_interval_ms: u64,
    /// With --sync always: the longest a durable write waits in the
    /// write-ahead log before redb has it too (a checkpoint), in
    /// milliseconds. Longer gathers more writes into each B-tree commit, and
    /// keeps them in memory meanwhile.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_EVERY.as_millis() as u64)]
    pub checkpoint_interval_ms: u64,
    /// With --sync always: while writes come faster than group commits, how
    /// long each commit waits for more of them to share its fsync, in
    /// microseconds (0: never). A lone writer makes no commit wait. It pays
    /// with many concurrent writers and costs a few (docs/performance.md).
    /// At most 1 s: every write of a busy node waits it.
    #[arg(
        long,
        default_value_t = DEFAULT_COMMIT_DELAY.as_micros() as u64,
        value_parser = clap::value_parser!(u64).range(0..=1_000_000),
    )]
    pub commit_delay_us: u64,
}

impl SyncArgs {
    /// The store's sync mode these flags describe.
    pub fn mode(&self) -> SyncMode {
        match self.sync {
            Sync::Always => SyncMode::Always,
            Sync::Batched => SyncMode::Batched(Duration::from_millis(self.sync_interval_ms.max(1))),
        }
    }

    /// The on-disk store's options these flags and `cache` describe.
    pub fn disk_options(&self, cache: &CacheArgs) -> DiskOptions {
        DiskOptions {
            sync: self.mode(),
            cache_bytes: cache.bytes(),
            checkpoint_every: Duration::from_millis(self.checkpoint_interval_ms.max(1)),
            commit_delay: Duration::from_micros(self.commit_delay_us),
        }
    }
}

/// Durability mode of the on-disk store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    /// fsync before acknowledging.
    Always,
    /// fsync every interval.
    Batched,
}

impl StorageArgs {
    /// Opens the store these flags describe: in memory with --memory, else on
    /// disk in --data-dir (or `default_dir`, if given).
    pub fn open(
        &self,
        default_dir: Option<std::path::PathBuf>,
    ) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        let dir = if self.memory {
            None
        } else {
            self.data_dir.clone().or(default_dir)
        };
        let Some(dir) = dir else {
            return Ok(std::sync::Arc::new(MemoryStore::new()));
        };
        Ok(std::sync::Arc::new(DiskStore::open_with(
            &dir,
            self.sync.disk_options(&self.cache),
        )?))
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log
    /// shippers.
    Json,
}

/// The logging flag every binary takes.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LogArgs {
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line) for log shippers. The level comes from RUST_LOG
    /// (default `info`; `crustyring=debug` logs every request with its ID and
    /// route).
    #[arg(
        long,
        value_enum,
        env = "CRUSTY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`, at the levels RUST_LOG sets (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::NodeArgs;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn leases(args: &[&str]) -> Option<Duration> {
        let flags = Flags::try_parse_from(std::iter::once("dht").chain(args.iter().copied()))
            .expect("valid flags");
        flags
            .node
            .config()
            .expect("a config")
            .leases
            .map(|l| l.length)
    }

    #[test]
    fn leases_are_on_by_default_off_at_zero_and_outlive_two_probes() {
        assert_eq!(leases(&[]), Some(Duration::from_secs(2)));
        assert_eq!(leases(&["--lease-ms", "0"]), None);
        assert_eq!(
            leases(&["--lease-ms", "300", "--probe-interval-ms", "500"]),
            Some(Duration::from_secs(1)),
            "a lease shorter than two probe intervals is raised to that"
        );
    }

    #[test]
    fn storage_flags_make_the_disk_options() {
        #[derive(Parser)]
        struct Storage {
            #[command(flatten)]
            storage: super::StorageArgs,
        }
        let parse = |args: &[&str]| {
            Storage::try_parse_from(std::iter::once("dht").chain(args.iter().copied()))
        };
        let options = |args: &[&str]| {
            let s = parse(args).expect("valid flags").storage;
            s.sync.disk_options(&s.cache)
        };
        assert_eq!(options(&[]), crate::store::DiskOptions::default());
        let tuned = options(&[
            "--checkpoint-interval-ms",
            "500",
            "--cache-mb",
            "8",
            "--commit-delay-us",
            "500",
        ]);
        assert_eq!(tuned.checkpoint_every, Duration::from_millis(500));
        assert_eq!(tuned.commit_delay, Duration::from_micros(500));
        assert_eq!(tuned.cache_bytes, 8 << 20);
        assert_eq!(
            options(&["--sync", "batched", "--sync-interval-ms", "20"]).sync,
            crate::store::SyncMode::Batched(Duration::from_millis(20))
        );
        assert_eq!(
            options(&["--commit-delay-us", "1000000"]).commit_delay,
            Duration::from_secs(1)
        );
        let too_long = parse(&["--commit-delay-us", "1000001"])
            .err()
            .expect("a commit delay over a second is refused");
        assert_eq!(too_long.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
