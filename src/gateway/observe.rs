//! The layer around every `/keys` request: it gives the request its ID (the
//! client's `x-request-id`, checked, or a new one) and echoes it, counts the
//! request in the node's metrics, and logs it with its route. Working at the
//! HTTP layer it sees what the client saw: a path or body refused before it
//! became a query is counted and logged too.

use super::problem::ApiError;
use crate::metrics::{Interface, outcome_of_status};
use crate::node::{Node, NodeError, RouteTaken};
use crate::request_id::{RequestId, log_request};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// Runs a `/keys` request with its ID in the request's extensions (see the
/// module docs).
pub async fn observe(State(node): State<Arc<Node>>, mut request: Request, next: Next) -> Response {
    let operation = match *request.method() {
        Method::GET | Method::HEAD => "get",
        Method::PUT => "set",
        Method::DELETE => "delete",
        _ => "other",
    };
    let started = Instant::now();
    let sent = request.headers().get(RequestId::HEADER);
    let (id, mut response) = match RequestId::from_header(sent.map(HeaderValue::as_bytes)) {
        Ok(id) => {
            request.extensions_mut().insert(id.clone());
            (id, next.run(request).await)
        }
        Err(e) => (
            RequestId::generate(),
            ApiError::Node(NodeError::BadRequestId(e)).into_response(),
        ),
    };
    let headers = response.headers();
    let hops = headers
        .get(RouteTaken::HOPS)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let owner = headers.get(RouteTaken::OWNER).and_then(|v| v.to_str().ok());
    let outcome = outcome_of_status(response.status());
    let elapsed = started.elapsed();
    log_request(
        &id,
        operation,
        Interface::Http,
        outcome,
        elapsed,
        hops,
        owner,
    );
    node.metrics()
        .request(operation, Interface::Http, outcome, elapsed, hops);
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(RequestId::HEADER, value);
    }
    response
}
