//! A DHT node: `dht <port>`.

use clap::Parser;
use crustyring::{cli, node, store::MemoryStore};
use std::sync::Arc;

/// Crusty Ring DHT node: registers with the registry, joins the ring, and serves
/// gRPC on its port.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    port: u16,
    /// Host name other nodes and clients reach this node by; also the bind address
    /// unless --bind is given.
    #[arg(long, env = "NODE_HOSTNAME", default_value = "127.0.0.1")]
    host: String,
    /// Address to bind (e.g. 0.0.0.0); defaults to --host.
    #[arg(long)]
    bind: Option<String>,
    /// The registry's address; defaults to http://$REGISTRY_HOSTNAME:50000.
    #[arg(long)]
    registry: Option<String>,
    /// Host of the registry, used when --registry is not given.
    #[arg(long, env = "REGISTRY_HOSTNAME", default_value = "127.0.0.1")]
    registry_host: String,
    #[command(flatten)]
    node: cli::NodeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let args = Args::parse();
    let bind = args.bind.as_deref().unwrap_or(&args.host);
    let listener = tokio::net::TcpListener::bind((bind, args.port)).await?;
    let registry = args
        .registry
        .clone()
        .unwrap_or_else(|| format!("http://{}:50000", args.registry_host));
    let running = node::start(
        listener,
        &args.host,
        &registry,
        args.node.config(),
        Arc::new(MemoryStore::new()),
        cli::shutdown_signal(),
    )
    .await?;
    let me = running.node.me();
    println!("node {} listening on {} (id {})", me.id, me.addr, me.id.0);
    running.server.await??;
    Ok(())
}
