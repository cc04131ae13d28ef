//! The registry: `registry [--port 50000]`.

use clap::Parser;
use crustyring::{cli, registry};
use std::time::Duration;

/// Crusty Ring registry: assigns node IDs (the best-balancing of --id-choices
/// SHA-256 candidates of address, salt and a counter) and refers each joining node
/// to the member with the closest smaller ID.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 50000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "REGISTRY_HOSTNAME", default_value = "127.0.0.1")]
    host: String,
    #[command(flatten)]
    ids: cli::IdArgs,
    /// A member not heard from (heartbeat) for this long is dropped, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    ttl_ms: u64,
    /// After a restart, how long to relearn live members from their heartbeats
    /// before telling a registering node it is the first member, in
    /// milliseconds. A registry starting for the first time (nothing in
    /// --data-dir) names the first member at once.
    #[arg(long, default_value_t = 2000)]
    relearn_ms: u64,
    /// How long a root lease lasts, in milliseconds: each heartbeat answered
    /// grants one, and a node is judged dead (its arc may be taken over) only
    /// once the last has lapsed, allowing for 1% clock drift. It must exceed
    /// the nodes' heartbeat interval (a node between heartbeats would be judged
    /// dead); twice that by default (see docs/protocol.md, "Leases"). At most
    /// an hour.
    #[arg(
        long,
        default_value_t = crustyring::lease::LeaseSettings::DEFAULT_LENGTH_MS,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    root_lease_ms: u64,
    /// Where the registry notes that it has run before (so that a restart
    /// relearns the members first), and keeps how often it judged each node
    /// dead (file `verdicts`).
    #[arg(long, default_value = "crustyring-data/registry")]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    cluster: cli::ClusterSecretArgs,
    #[command(flatten)]
    tls: cli::TlsArgs,
    #[command(flatten)]
    log: cli::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_logging(args.log.log_format);
    let cluster_secret = args.cluster.secret()?;
    let tls = args.tls.tls()?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let port = listener.local_addr()?.port();
    println!(
        "registry listening on {}://{}:{port}",
        tls.scheme(),
        args.host
    );
    let restarted = registry::has_run_before(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot use --data-dir {}: {e}", args.data_dir.display()))?;
    let relearn = match restarted {
        true => Duration::from_millis(args.relearn_ms),
        false => Duration::ZERO,
    };
    let config = registry::RegistryConfig {
        ids: args.ids.rule(),
        liveness: registry::Liveness {
            ttl: Duration::from_millis(args.ttl_ms),
            relearn,
        },
        security: crustyring::security::Required {
            cluster_secret,
            client_token: None,
        },
        tls,
        roots: crustyring::lease::LeaseSettings {
            length: Duration::from_millis(args.root_lease_ms),
            ..Default::default()
        },
        verdicts_file: Some(args.data_dir.join("verdicts")),
    };
    registry::serve(listener, config, cli::shutdown_signal()).await?;
    Ok(())
}
