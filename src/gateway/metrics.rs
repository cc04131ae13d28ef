//! `GET /metrics` (Prometheus, the OpenMetrics text format), and the layer that
//! counts every `/keys` request by operation, outcome and latency. Counting at
//! the HTTP layer sees what the client saw: bad paths and bodies refused before
//! they became a query count too.

use crate::metrics::{CONTENT_TYPE, Interface, outcome_of_status};
use crate::node::{Node, RouteTaken};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

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

/// Counts a `/keys` request in the node's metrics once it is answered.
pub async fn count_request(
    State(node): State<Arc<Node>>,
    request: Request,
    next: Next,
) -> Response {
    let operation = match *request.method() {
        Method::GET | Method::HEAD => "get",
        Method::PUT => "set",
        Method::DELETE => "delete",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let hops = response
        .headers()
        .get(RouteTaken::HOPS)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    node.metrics().request(
        operation,
        Interface::Http,
        outcome_of_status(response.status()),
        started.elapsed(),
        hops,
    );
    response
}
