//! The HTTP/JSON gateway every node serves beside gRPC, on the same port: the keys
//! API, the ring, the OpenAPI document, Swagger UI and the web page.
//!
//! Handlers are thin: keys go through [`crate::node::Node::execute`], the same path
//! as gRPC `QueryDht`; errors become problem+json in one place ([`problem`]).

pub mod batch;
pub mod cors;
pub mod direct;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod keys;
pub mod list;
pub mod metrics;
pub mod observe;
pub mod page;
pub mod problem;
pub mod ring;
pub mod watch;

use crate::node::{Node, RouteTaken};
use crate::request_id::RequestId;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use cors::CorsForOrigins;
use std::sync::Arc;
use tower_http::cors::{AllowHeaders, Any, CorsLayer};
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// The OpenAPI description of the gateway.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Crusty Ring",
        description = "A distributed key-value store on a consistent-hashing ring. Every node answers every key, forwarding to its owner. Keys are path segments, percent-encoded; values are raw bytes.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        keys::get_key,
        keys::put_key,
        keys::delete_key,
        list::list_keys,
        batch::run_batch,
        ring::get_ring,
        ring::get_owner,
        health::healthz,
        health::readyz,
        metrics::metrics
    ),
    modifiers(&ClientToken),
    security((), ("client_token" = [])),
    tags(
        (name = "keys", description = "Read, write and delete keys."),
        (name = "health", description = "Liveness, readiness and metrics, for probes and Prometheus."),
        (name = "ring", description = "The ring's nodes and key ownership.")
    )
)]
pub struct ApiDoc;

/// Describes the client token: Swagger UI's "Authorize" takes it and sends it
/// with every request it makes.
struct ClientToken;

impl utoipa::Modify for ClientToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The client token, required by nodes started with --client-token (401 without it); health, readiness, metrics and this document stay open.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("client_token", SecurityScheme::Http(scheme));
    }
}

/// The node's whole HTTP surface on one port: `grpc` (the gRPC routes), the
/// gateway's routes, and the fallback, with bare 405s turned into problems.
pub fn app(grpc: Router, node: Arc<Node>) -> Router {
    grpc.merge(router(node)).fallback(fallback)
}

/// The gateway's routes for `node`.
pub fn router(node: Arc<Node>) -> Router {
    let api = Router::new()
        .route("/keys/", any(keys::empty_key))
        .route(
            "/keys/{*key}",
            get(keys::get_key)
                .put(keys::put_key)
                .delete(keys::delete_key)
                .fallback(|| async { method_not_allowed("GET,HEAD,PUT,DELETE") }),
        )
        .route(
            "/batch",
            axum::routing::post(batch::run_batch).fallback(|| async { method_not_allowed("POST") }),
        )
        .route(
            "/keys",
            get(list::list_keys).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .route(
            "/metrics",
            get(metrics::metrics).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .route(
            "/ring",
            get(ring::get_ring).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .route(
            "/healthz",
            get(health::healthz).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .route(
            "/readyz",
            get(health::readyz).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .route(
            "/ring/owner/{*key}",
            get(ring::get_owner).fallback(|| async { method_not_allowed("GET,HEAD") }),
        )
        .layer(body_limit(&node))
        .with_state(node)
        .layer(CorsForOrigins::new(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::PUT,
                    Method::DELETE,
                    Method::POST,
                ])
                // Mirrored rather than `*`, which does not cover `authorization`.
                .allow_headers(AllowHeaders::mirror_request())
                .expose_headers([
                    header::LOCATION,
                    header::ETAG,
                    RouteTaken::HOPS_HEADER,
                    RouteTaken::OWNER_HEADER,
                    RouteTaken::OWNER_ID_HEADER,
                    RequestId::HEADER_NAME,
                ]),
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/style.css", get(page::style))
        .route("/app.js", get(page::script))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/openapi.json", get(page::openapi))
        .merge(SwaggerUi::new("/swagger-ui").config(Config::from("/openapi.json")))
        .merge(api)
}

/// How large a request body may be: a value's limit. (A body that has not
/// arrived in time, `server::with_body_deadline`, fails to read: 408, see
/// `problem::BodyRejected`.)
pub(crate) fn body_limit(node: &Node) -> DefaultBodyLimit {
    DefaultBodyLimit::max(node.config().limits.max_value_bytes)
}

/// A 405 answer for a route that allows `allowed` (comma-separated methods).
fn method_not_allowed(allowed: &'static str) -> Response {
    let mut answer = problem::problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this method is not allowed here; allowed: {allowed}"),
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    answer
}

/// What answers a request no route matched: gRPC `UNIMPLEMENTED` for gRPC
/// requests, a problem+json 404 for everything else.
pub async fn fallback(request: Request<axum::body::Body>) -> Response {
    if crate::server::is_grpc(request.headers()) {
        let mut response =
            tonic::Status::unimplemented(format!("no such gRPC method: {}", request.uri().path()))
                .into_http::<axum::body::Body>();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        return response.into_response();
    }
    problem::ApiError::NoRoute(request.uri().path().to_string()).into_response()
}
