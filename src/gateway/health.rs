//! `GET /healthz` (the process answers) and `GET /readyz` (the node serves its
//! arc), for load balancers and Kubernetes probes. Readiness is the node's state,
//! the same that `grpc.health.v1` reports.

use super::problem::{ApiError, Problem};
use crate::node::Node;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// How the node is.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "state": "serving"}))]
pub struct Health {
    /// `alive` (from `/healthz`) or `ready` (from `/readyz`).
    pub status: &'static str,
    /// The node's state: `joining`, `serving`, `leaving` or `left`.
    pub state: &'static str,
}

/// Liveness: the process is up and answering, whatever its state.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers.", body = Health))
)]
pub async fn healthz(State(node): State<Arc<Node>>) -> Json<Health> {
    Json(Health {
        status: "alive",
        state: node.state().as_str(),
    })
}

/// Readiness: the node has joined and serves its arc (not while joining or
/// leaving).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The node serves its arc.", body = Health),
        (status = 503, description = "The node is joining, leaving or gone.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(node): State<Arc<Node>>) -> Result<Json<Health>, ApiError> {
    let state = node.state().as_str();
    match node.ready() {
        true => Ok(Json(Health {
            status: "ready",
            state,
        })),
        false => Err(ApiError::NotReady(state)),
    }
}
