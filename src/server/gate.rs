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
    if is_preflight(&request) {
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

/// Whether `request` is a browser's CORS preflight, which never carries
/// credentials and must reach the CORS layer to learn that `authorization` may
/// be sent: an `OPTIONS` with `Origin` and `Access-Control-Request-Method` and
/// no body. Any other `OPTIONS` is checked like every request: gRPC services
/// answer any method, so an `OPTIONS` with a gRPC body would run the call (and
/// an empty one runs nothing: a unary call without its message fails).
fn is_preflight(request: &Request) -> bool {
    use hyper::body::Body as _;
    let headers = request.headers();
    request.method() == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && request.body().size_hint().exact() == Some(0)
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
    use crate::security::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt as _;

    /// A peer-only gRPC route behind the gate for a cluster secret, and how
    /// many calls reached it.
    fn guarded() -> (axum::Router, Arc<AtomicUsize>) {
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let router = axum::Router::new().route(
            "/dht.DhtNode/{*rest}",
            axum::routing::any(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ran" }
            }),
        );
        let secret = Secret::new("cluster secret", "a-cluster-secret-of-32-bytes-...").unwrap();
        let required = Required {
            cluster_secret: Some(secret),
            client_token: None,
        };
        (guard(router, required), ran)
    }

    fn options(body: &'static [u8], preflight: bool) -> Request {
        let mut r = axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/dht.DhtNode/Replicate")
            .header(header::CONTENT_TYPE, "application/grpc");
        if preflight {
            r = r
                .header(header::ORIGIN, "http://elsewhere.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST");
        }
        r.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn an_options_call_with_a_body_is_checked_like_any_other() {
        let (router, ran) = guarded();
        let call = b"\0\0\0\0\x05hello";
        for preflight in [false, true] {
            let answer = router
                .clone()
                .oneshot(options(call, preflight))
                .await
                .unwrap();
            assert_eq!(
                answer.headers().get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"16"[..]),
                "refused as unauthenticated (preflight headers: {preflight})"
            );
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the call never ran");
        // A real preflight (no body) passes, for the CORS layer to answer.
        let answer = router.oneshot(options(b"", true)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

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
