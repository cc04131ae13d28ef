//! `GET /metrics`: the node's Prometheus metrics, in the OpenMetrics text format.

use crate::metrics::CONTENT_TYPE;
use crate::node::Node;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The node's metrics, for Prometheus.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "The node's metrics in the OpenMetrics text format (requests, latency, forwards, keys, hand-offs, anti-entropy, failures, store commits).",
        body = String, content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], node.metrics_text()).into_response()
}
