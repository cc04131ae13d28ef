//! The gateway's one error type and its single mapping to RFC 9457
//! `application/problem+json` responses.

use crate::node::{NodeConfig, NodeError};
pub use crate::server::problem::{Problem, problem};
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// Everything the HTTP gateway can answer with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The node failed to answer the query.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The key in the path is not valid percent-encoding.
    #[error(
        "the key is not valid percent-encoding at byte {at}: `%` must be followed by two hex digits (write a literal % as %25)"
    )]
    BadPercentEncoding {
        /// Byte offset of the bad `%` in the key segment.
        at: usize,
    },
    /// The request body is over the value limit.
    #[error("the value is larger than the limit of {max} bytes (--max-value-bytes)")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// The request body did not arrive within the body timeout.
    #[error(
        "the request body did not arrive within {ms} ms of its headers (--body-timeout-ms); send it at once"
    )]
    BodyTimeout {
        /// The limit, in milliseconds.
        ms: u128,
    },
    /// The request body could not be read.
    #[error("could not read the request body: {0}")]
    BadBody(String),
    /// The query string is malformed.
    #[error("bad query string: {0}")]
    BadQuery(String),
    /// The key is not present.
    #[error("key {0:?} is not present")]
    KeyNotFound(String),
    /// No such route.
    #[error("no such resource: {0}; see /openapi.json or /swagger-ui/ for the API")]
    NoRoute(String),
    /// The node does not serve its arc (it is joining, leaving or gone).
    #[error("this node is {0}: it does not serve its arc now")]
    NotReady(&'static str),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Node(e) => node_status(e),
            ApiError::BadPercentEncoding { .. } | ApiError::BadBody(_) | ApiError::BadQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::KeyNotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What a request body that could not be read answers: 413 over the value
/// limit, 408 when it did not arrive within the body timeout (see
/// [`crate::server::ServeLimits`]), 400 otherwise.
pub fn body_rejected(rejection: BytesRejection, config: &NodeConfig) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::BodyTooLarge {
            max: config.limits.max_value_bytes,
        };
    }
    let mut source = std::error::Error::source(&rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::BodyTimeout {
                ms: config.serving.body_timeout.as_millis(),
            };
        }
        source = e.source();
    }
    ApiError::BadBody(rejection.body_text())
}

/// The HTTP status of a node error, from its gRPC code (one classification, in
/// `NodeError::code`). A value over the limit is 413 rather than 400; a peer's
/// failure that is no client error or unavailability is a bad gateway.
fn node_status(e: &NodeError) -> StatusCode {
    match e {
        NodeError::ValueTooLarge { .. } => return StatusCode::PAYLOAD_TOO_LARGE,
        NodeError::PreconditionFailed { .. } => return StatusCode::PRECONDITION_FAILED,
        _ => {}
    }
    match e.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        _ if matches!(e, NodeError::Peer(_)) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem(self.status(), self.to_string());
        // A failed condition says what the key's version is now.
        if let ApiError::Node(NodeError::PreconditionFailed { current: Some(v) }) = &self {
            response
                .headers_mut()
                .insert(header::ETAG, super::keys::etag(*v));
        }
        response
    }
}
