//! The gate: one layer in front of every route of a node or registry
//! that refuses calls without the credentials their path requires, before
//! anything else runs (so a refused call changes nothing). A refused gRPC call
//! gets `UNAUTHENTICATED` / `PERMISSION_DENIED`; a refused HTTP call a 401 / 403
//! problem document with `WWW-Authenticate: Bearer`.

use crate::security::CLUSTER_SECRET_HEADER;
use crate::security::access::{Presented, Refusal, Required, access};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::convert::Infallible;
use std::sync::Arc;
use tower::util::BoxCloneSyncService;

/// `router` behind the gate for `required` (unchanged when nothing is required).
pub fn guard(router: axum::Router, required: Required) -> axum::Router {
    if required == Required::default() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(required),
        admit,
    ))
}

/// `service` behind the gate for `required`, as [`guard`] puts a router.
pub(super) fn guard_service(
    service: BoxCloneSyncService<Request, Response, Infallible>,
    required: Required,
) -> BoxCloneSyncService<Request, Response, Infallible> {
    if required == Required::default() {
        return service;
    }
    let gate = axum::middleware::from_fn_with_state(Arc::new(required), admit);
    BoxCloneSyncService::new(tower::Layer::layer(&gate, service))
}

async fn admit(State(required): State<Arc<Required>>, request: Request, next: Next) -> Response {
    // A browser's CORS preflight never carries credentials (and changes
    // nothing): it must reach the CORS layer to learn that `authorization`
    // may be sent.
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let headers = request.headers();
    let presented = Presented {
        cluster_secret: headers
            .get(CLUSTER_SECRET_HEADER)
            .map(HeaderValue::as_bytes),
        bearer: bearer(headers),
    };
    match required.admit(access(request.uri().path()), presented) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refuse(refusal, super::is_grpc(headers)),
    }
}

/// The token of an `authorization: Bearer <token>` header (the scheme in any
/// case, as RFC 9110 allows).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

fn refuse(refusal: Refusal, grpc: bool) -> Response {
    let message = refusal.to_string();
    if grpc {
        let status = if refusal.unauthenticated() {
            tonic::Status::unauthenticated(message)
        } else {
            tonic::Status::permission_denied(message)
        };
        return status.into_http::<Body>();
    }
    let status = if refusal.unauthenticated() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    let mut response = super::problem::problem(status, message);
    let challenge = match refusal {
        Refusal::WrongToken => r#"Bearer realm="crustyring", error="invalid_token""#,
        _ => r#"Bearer realm="crustyring""#,
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bear"));
        assert_eq!(bearer(&h), None);
    }
}
