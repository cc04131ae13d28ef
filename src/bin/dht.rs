//! A DHT node: `dht <port>`.

use clap::Parser;
use crustyring::cli;
use crustyring::node::Discovery;
use tokio::sync::watch;

/// mimalloc rather than glibc's allocator (see `crustyring`'s main).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Crusty Ring DHT node: joins the ring (through the registry, or through any
/// member with --join), serves gRPC and HTTP on its port, keeps its data in
/// --data-dir (default crustyring-data/node-PORT; --memory for none), and on
/// SIGTERM or Ctrl-C hands its keys to its predecessor before it exits.
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
    /// With --join or --new-ring, the registry is used only if given here.
    #[arg(long)]
    registry: Option<String>,
    /// Host of the registry, used when --registry is not given.
    #[arg(long, env = "REGISTRY_HOSTNAME", default_value = "127.0.0.1")]
    registry_host: String,
    /// Join through this member of the ring instead of the registry.
    #[arg(long, conflicts_with = "new_ring")]
    join: Option<String>,
    /// Start a new ring alone, without the registry.
    #[arg(long)]
    new_ring: bool,
    /// How this node's ID is chosen locally (with --join or --new-ring); must
    /// match the registry's. Through the registry, the registry's flags decide.
    #[command(flatten)]
    ids: cli::IdArgs,
    #[command(flatten)]
    node: cli::NodeArgs,
    #[command(flatten)]
    storage: cli::StorageArgs,
    #[command(flatten)]
    log: cli::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_logging(args.log.log_format);
    let bind = args.bind.as_deref().unwrap_or(&args.host);
    let listener = tokio::net::TcpListener::bind((bind, args.port)).await?;
    let port = listener.local_addr()?.port();
    let store = args
        .storage
        .open(Some(format!("crustyring-data/node-{port}").into()))?;
    let config = args.node.config()?;
    let discovery =
        match (&args.join, args.new_ring) {
            (Some(contact), _) => Discovery::Join {
                contact: crustyring::client::normalise(contact),
                ids: args.ids.rule(),
                registry: args.registry.clone(),
            },
            (None, true) => Discovery::NewRing {
                ids: args.ids.rule(),
                registry: args.registry.clone(),
            },
            (None, false) => Discovery::Registry(args.registry.clone().unwrap_or_else(|| {
                format!("{}://{}:50000", config.tls.scheme(), args.registry_host)
            })),
        };
    let (stop, stopped) = watch::channel(false);
    let shutdown = async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    };
    let running =
        crustyring::launch::start(listener, &args.host, discovery, config, store, shutdown).await?;
    let me = running.node.me();
    println!("node {} listening on {} (id {})", me.id, me.addr, me.id.0);
    cli::shutdown_signal().await;
    println!("leaving the ring...");
    if let Err(e) = running.node.leave().await {
        eprintln!("could not leave gracefully: {e}");
    }
    let _ = stop.send(true);
    running.server.await??;
    println!("left");
    Ok(())
}
