//! The methods on one key (`GET`, `PUT` and `DELETE` of `/keys/{key}`), for
//! the server to call before the router's lookup (`server`'s direct routes):
//! the gateway's hottest requests skip axum's route table, its wildcard
//! capture and the clone of a boxed route per request. The handlers are the
//! router's own; the router still serves whatever this does not take
//! ([`takes`]): `HEAD` and other methods (axum strips a `HEAD` answer's body
//! and answers 405 with `Allow`), and every request with an `Origin` header
//! (a browser's on another origin, for CORS).

use super::{cors, keys};
use crate::node::Node;
use axum::body::Body;
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, Request, header};
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Map};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Layer as _;

/// The paths these methods serve start with this, and name a key after it.
pub const KEY_PREFIX: &str = "/keys/";

/// Whether a request to a key's path, with `method` and `headers`, is one
/// [`key_methods`] serves; the router serves the rest.
pub fn takes(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::PUT | Method::DELETE)
        && !headers.contains_key(header::ORIGIN)
}

/// `GET`, `PUT` and `DELETE` of a key at `node`, under the body limit of
/// every gateway route: what the server calls for the requests [`takes`]
/// says yes to, under [`KEY_PREFIX`].
pub fn key_methods(
    node: Arc<Node>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    super::body_limit(&node).layer(KeyMethods { node })
}

/// The service [`key_methods`] wraps: one clone of the node's handle per
/// request, nothing else.
#[derive(Clone)]
struct KeyMethods {
    node: Arc<Node>,
}

type Answered = fn(Response) -> Result<Response, Infallible>;

fn answered(response: Response) -> Result<Response, Infallible> {
    Ok(cors::varies_by_origin(response))
}

impl tower::Service<Request<Body>> for KeyMethods {
    type Response = Response;
    type Error = Infallible;
    type Future = Map<BoxFuture<'static, Response>, Answered>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let node = self.node.clone();
        let answer: BoxFuture<'static, Response> = match *request.method() {
            Method::PUT => Handler::call(keys::put_key, request, node),
            Method::DELETE => Handler::call(keys::delete_key, request, node),
            // `takes` lets only these three through.
            _ => Handler::call(keys::get_key, request, node),
        };
        answer.map(answered as Answered)
    }
}
