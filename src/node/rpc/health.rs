//! Readiness: whether this node serves its arc, for load balancers, Kubernetes
//! probes and clients. `grpc.health.v1` follows the node's state, for the
//! `dht.DhtNode` service and for the whole server (`""`, what gRPC probes ask by
//! default): `SERVING` only while the node is serving, `NOT_SERVING` while it is
//! joining, leaving or gone. `GET /readyz` says the same over HTTP.

use crate::node::Node;
use crate::node::view::NodeState;
use crate::proto::dht::dht_node_server::DhtNodeServer;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

impl Node {
    /// Whether the node serves its arc (joined, not leaving).
    pub fn ready(&self) -> bool {
        self.view().state == NodeState::Serving
    }

    /// The node's state, as users see it (`joining`, `serving`, ...).
    pub fn state(&self) -> NodeState {
        self.view().state
    }

    /// Sets `grpc.health.v1` to what the node's state is now; returns whether
    /// it is ready.
    pub(crate) async fn publish_health(&self) -> bool {
        let ready = self.ready();
        let status = match ready {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        let dht = <DhtNodeServer<crate::node::rpc::service::DhtService> as NamedService>::NAME;
        self.health.set_service_status("", status).await;
        self.health.set_service_status(dht, status).await;
        ready
    }

    /// Keeps `grpc.health.v1` in step with the node's state until `stop`.
    pub(in crate::node) async fn report_health(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.changes.subscribe();
        let mut reported = None;
        loop {
            if reported != Some(self.ready()) {
                reported = Some(self.publish_health().await);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
