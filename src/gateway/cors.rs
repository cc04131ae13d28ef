//! CORS for browsers on other origins, at no cost to every other caller.
//!
//! tower-http's [`Cors`] answers preflights and adds the CORS headers to a
//! cross-origin browser request's answer; every such request (a preflight
//! too) carries an `Origin` header. Run on every request, it built and merged
//! three headers into each answer, a join of the `Vary` list included: about
//! a seventh of an HTTP GET's instructions (see docs/performance.md). So
//! [`CorsForOrigins`] hands requests with an `Origin` header to it and the
//! rest (curl, the load tools, same-origin page requests) straight to the
//! routes, adding only `Vary: origin` to their answers: a cache that kept one
//! of them must not hand it to a cross-origin request, which needs the CORS
//! headers (the Fetch standard's "CORS protocol and HTTP caches").

use axum::http::{HeaderValue, Request, Response, header};
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

/// Applies `cors` to requests with an `Origin` header only (module docs).
#[derive(Debug, Clone)]
pub struct CorsForOrigins {
    cors: CorsLayer,
}

impl CorsForOrigins {
    /// `cors` for the requests that carry an `Origin` header.
    pub fn new(cors: CorsLayer) -> Self {
        Self { cors }
    }
}

impl<S: Clone> Layer<S> for CorsForOrigins {
    type Service = CorsForOriginsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsForOriginsService {
            cors: self.cors.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// The service [`CorsForOrigins`] makes.
#[derive(Debug, Clone)]
pub struct CorsForOriginsService<S> {
    cors: Cors<S>,
    plain: S,
}

type Plain<F, B, E> = Map<F, fn(Result<Response<B>, E>) -> Result<Response<B>, E>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorsForOriginsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        Either<tower_http::cors::ResponseFuture<S::Future>, Plain<S::Future, ResBody, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are clones of the same routes; each is asked, as each may be
        // called. Only one is then called: fine for axum's routes, which are
        // always ready and hold nothing between `poll_ready` and `call`; a
        // layer inside that reserves capacity in `poll_ready` would need a
        // different split.
        match self.cors.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.plain.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            return Either::Left(self.cors.call(request));
        }
        Either::Right(self.plain.call(request).map(vary_by_origin))
    }
}

/// `answer` marked as one that differs for a request with an `Origin` header.
fn vary_by_origin<B, E>(answer: Result<Response<B>, E>) -> Result<Response<B>, E> {
    answer.map(varies_by_origin)
}

/// `response` marked as one that differs for a request with an `Origin`
/// header: what every answer to a request without one carries.
pub fn varies_by_origin<B>(mut response: Response<B>) -> Response<B> {
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    response
}
