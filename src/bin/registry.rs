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
    /// After a (re)start, how long to relearn live members from their heartbeats
    /// before telling a registering node it is the first member, in milliseconds.
    /// 0 for a registry known to start a new ring.
    #[arg(long, default_value_t = 2000)]
    relearn_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let port = listener.local_addr()?.port();
    println!("registry listening on http://{}:{port}", args.host);
    let config = registry::RegistryConfig {
        ids: args.ids.rule(),
        liveness: registry::Liveness {
            ttl: Duration::from_millis(args.ttl_ms),
            relearn: Duration::from_millis(args.relearn_ms),
        },
    };
    registry::serve(listener, config, cli::shutdown_signal()).await?;
    Ok(())
}
