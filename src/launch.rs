//! Starting a node: the one place that puts the [`node`](crate::node), its
//! HTTP [`gateway`](crate::gateway) and the [`server`](crate::server)
//! together. The node knows nothing of the gateway built over it, and the
//! gateway nothing of how it is served, so neither depends on a layer above
//! it; this module sits above all three.

use crate::node::{Discovery, JoinError, Node, NodeConfig};
use crate::store::Store;
use crate::transport::Listener;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node that has joined the ring and is serving its listener.
#[derive(Debug)]
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// The server task; it ends when the shutdown future resolves.
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts a node on `listener`, advertising `http://{host}:{port}` (`https`
/// with TLS on): finds the ring as `discovery` says, serves gRPC and the
/// gateway on the listener, joins, and starts ring maintenance. Returns once
/// the node serves its arc. The server and maintenance stop when `shutdown`
/// resolves (call [`Node::leave`] first for a graceful leave).
pub async fn start<L: Listener>(
    listener: L,
    host: &str,
    discovery: Discovery,
    config: NodeConfig,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, JoinError> {
    let addr = format!("{}://{host}:{}", config.tls.scheme(), listener.port()?);
    // A node restarted from its data keeps its ID, and says so.
    let saved = store.identity().map(|m| m.id);
    let found = crate::node::discover(&discovery, &addr, saved, &config).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let registry = discovery.registry().map(str::to_string);
    let node = Arc::new(Node::new(found.me, config, store, health, registry));
    node.registered(found.verdicts);
    let contact = found.contact;
    // Not serving until joined.
    node.publish_health().await;
    let grpc = crate::node::grpc_routes(node.clone(), health_service).into_axum_router();
    // dht.DhtNode calls and keys skip the router's table (see `server`'s
    // Direct routes).
    let routes = crate::server::Routes::from(crate::gateway::app(grpc, node.clone()))
        .with_direct_grpc(crate::node::dht_server(node.clone()))
        .with_direct_under(
            crate::gateway::direct::KEY_PREFIX,
            crate::gateway::direct::takes,
            crate::gateway::direct::key_methods(node.clone()),
        );
    let (stop, stopped) = watch::channel(false);
    let serving = crate::server::Serving {
        limits: node.config().serving,
        required: node.config().security.clone(),
        tls: node.config().tls.clone(),
    };
    let server = tokio::spawn(crate::server::serve(
        listener,
        routes,
        serving,
        wait_for(stopped.clone()),
    ));
    let closing = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Endless streams (watches) end first, so the server's graceful
        // shutdown does not wait for them.
        closing.close_streams();
        let _ = stop.send(true);
    });
    node.clone().run(contact, stopped).await?;
    Ok(RunningNode { node, server })
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
