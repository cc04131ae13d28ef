//! What happens around every `/keys` request: it gets its ID (the client's
//! `x-request-id`, checked, or a new one), echoed in the answer; it is counted
//! in the node's metrics and logged with its route once answered. Done in the
//! handlers (through [`observe`]) rather than in a middleware layer: the key
//! path is the hot path, and a layer costs a boxed future and a cloned
//! service per request.

use super::problem::ApiError;
use crate::metrics::{Interface, Op, outcome_of_status};
use crate::node::{Node, NodeError, RouteTaken};
use crate::request_id::{BadRequestId, RequestId, log_request};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// The request's ID as its `x-request-id` header gives it (or a new one), or
/// why the header is refused.
#[derive(Debug)]
pub struct Observed(pub Result<RequestId, BadRequestId>);

impl<S: Send + Sync> FromRequestParts<S> for Observed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Observed(RequestId::from_header(
            parts.headers.get(RequestId::HEADER_NAME),
        )))
    }
}

/// Answers a `/keys` request for `operation` with `handle`, given the
/// request's ID (see the module docs).
pub async fn observe<F>(
    node: Arc<Node>,
    operation: Op,
    id: Result<RequestId, BadRequestId>,
    handle: impl FnOnce(RequestId) -> F,
) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    let started = Instant::now();
    let (id, mut response) = match id {
        Ok(id) => (id.clone(), handle(id).await.into_response()),
        Err(e) => (
            RequestId::generate(),
            ApiError::Node(NodeError::BadRequestId(e)).into_response(),
        ),
    };
    let headers = response.headers();
    let hops = headers
        .get(RouteTaken::HOPS_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let owner = headers
        .get(RouteTaken::OWNER_HEADER)
        .and_then(|v| v.to_str().ok());
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
    response
        .headers_mut()
        .insert(RequestId::HEADER_NAME, id.header_value());
    response
}
