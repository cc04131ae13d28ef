//! A registry and DHT nodes in one process: the default binary's local cluster, and
//! the fixture that integration tests start on ephemeral loopback ports.

use crate::node::{self, JoinError, Node, NodeConfig};
use crate::registry;
use crate::ring::IdRule;
use crate::store::{DiskOptions, DiskStore, MemoryStore, Store, StoreError};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where and how a local cluster runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Host to bind and advertise (a loopback address for a local cluster).
    pub host: String,
    /// The registry's port; 0 for an ephemeral one.
    pub registry_port: u16,
    /// Node configuration shared by every node.
    pub node: NodeConfig,
    /// How the registry chooses node IDs.
    pub ids: IdRule,
    /// Where nodes keep their data (a subdirectory per node); in memory if `None`.
    pub data_dir: Option<std::path::PathBuf>,
    /// Durability and cache size of the on-disk stores.
    pub disk: DiskOptions,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            registry_port: 0,
            node: NodeConfig::default(),
            ids: IdRule::new(registry::DEFAULT_SALT, IdRule::DEFAULT_CHOICES),
            data_dir: None,
            disk: DiskOptions::default(),
        }
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    options: ClusterOptions,
    /// The registry's address, `http://host:port`.
    pub registry: String,
    /// The nodes, in the order they joined.
    pub nodes: Vec<Arc<Node>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    stop: watch::Sender<bool>,
}

impl LocalCluster {
    /// Starts a registry; add nodes with [`LocalCluster::add_node`].
    pub async fn start(options: ClusterOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind((options.host.as_str(), options.registry_port)).await?;
        let scheme = options.node.tls.scheme();
        let registry = format!(
            "{scheme}://{}:{}",
            options.host,
            listener.local_addr()?.port()
        );
        let (stop, _) = watch::channel(false);
        let mut config = registry::RegistryConfig::fresh(options.ids.clone());
        // The registry requires the cluster secret the nodes present.
        config.security.cluster_secret = options.node.security.cluster_secret.clone();
        // ... and serves TLS as they do.
        config.tls = options.node.tls.clone();
        let shutdown = stopped(stop.subscribe());
        let task = tokio::spawn(registry::serve(listener, config, shutdown));
        Ok(Self {
            options,
            registry,
            nodes: Vec::new(),
            tasks: vec![task],
            stop,
        })
    }

    /// Starts a node on `port` (0 for an ephemeral one) and waits until it has
    /// joined the ring.
    pub async fn add_node(&mut self, port: u16) -> Result<Arc<Node>, JoinError> {
        let running = self.spawn_node(port).await?;
        self.tasks.push(running.server);
        self.nodes.push(running.node.clone());
        Ok(running.node)
    }

    /// Starts nodes on `ports` all at the same instant and waits until every one
    /// has joined.
    pub async fn add_nodes_at_once(&mut self, ports: &[u16]) -> Result<(), JoinError> {
        let mut listeners = Vec::new();
        for port in ports {
            listeners.push(TcpListener::bind((self.options.host.as_str(), *port)).await?);
        }
        let starts = listeners.into_iter().map(|l| self.start_node(l));
        for running in futures_util::future::join_all(starts).await {
            let running = running?;
            self.tasks.push(running.server);
            self.nodes.push(running.node);
        }
        Ok(())
    }

    async fn spawn_node(&self, port: u16) -> Result<crate::launch::RunningNode, JoinError> {
        let listener = TcpListener::bind((self.options.host.as_str(), port)).await?;
        self.start_node(listener).await
    }

    fn start_node(
        &self,
        listener: TcpListener,
    ) -> impl std::future::Future<Output = Result<crate::launch::RunningNode, JoinError>> + use<>
    {
        let host = self.options.host.clone();
        let discovery = node::Discovery::Registry(self.registry.clone());
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let store: Result<Arc<dyn Store>, StoreError> = match &self.options.data_dir {
            Some(dir) => DiskStore::open_with(&dir.join(format!("node-{port}")), self.options.disk)
                .map(|s| Arc::new(s) as Arc<dyn Store>),
            None => Ok(Arc::new(MemoryStore::new())),
        };
        let config = self.options.node.clone();
        let shutdown = stopped(self.stop.subscribe());
        async move { crate::launch::start(listener, &host, discovery, config, store?, shutdown).await }
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.me().addr).collect()
    }

    /// Stops every server and waits for them to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
