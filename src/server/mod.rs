//! Serving a router on a listener until a shutdown future resolves: behind the
//! security gate, in plaintext or TLS, within limits on what clients may hold;
//! and the gRPC services every process adds (reflection v1 and v1alpha).
//!
//! # Limits
//!
//! Anything that reaches the port can open connections and send as slowly as it
//! likes, so every connection is bounded ([`ServeLimits`]):
//!
//! - at most `max_connections` are served at once; more wait in the listen
//!   backlog until one closes (each holds a task and buffers);
//! - a connection must deliver its first request's headers within
//!   `header_timeout` (its TLS handshake included), and an HTTP/1 connection
//!   each later request's headers (so an idle HTTP/1 connection closes after
//!   it too); otherwise it is closed;
//! - HTTP/2 connections carry at most `max_concurrent_streams` requests at once,
//!   and are pinged every `keepalive_interval`: one whose peer does not answer
//!   within `keepalive_timeout` is closed;
//! - a REST request's body must arrive within `body_timeout` of its headers
//!   (`408` from the gateway; not gRPC's, since streams such as `HandOff`
//!   legitimately last longer and are bounded by the node itself).
//!
//! The accept loop is our own rather than `axum::serve` because `axum::serve`
//! sets none of these (hyper's header timeout needs a timer it does not give).
//!
//! # Direct routes
//!
//! A port's [`Routes`] may name services to call directly for the paths under
//! a prefix, before the router's table: a gRPC service for the paths under
//! its name (`/dht.DhtNode/...`), or any service for the paths under a prefix
//! such as `/keys/` with something after it. Each is the same service the
//! router would reach, behind the same gate, minus axum's route lookup, its
//! wildcard capture and the boxed services around each route: about 4k of a
//! gRPC Get's 75k instructions, and of an HTTP GET's 34k (counted with
//! callgrind, `bench/instructions.sh`).
//!
//! `gate`: the layer that refuses calls without the credentials their path
//! requires ([`crate::security`]); `problem`: the RFC 9457 body of every HTTP
//! error.

pub mod gate;
pub mod problem;

use crate::security::{Required, Tls};
use crate::transport::Listener;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response};
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tonic::server::NamedService;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

/// What one port lets its clients hold (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (its first
    /// request's, and each HTTP/1 request's).
    pub header_timeout: Duration,
    /// How long a REST request's body may take to arrive, in all.
    pub body_timeout: Duration,
    /// Requests at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping's answer may take before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl ServeLimits {
    /// Default [`ServeLimits::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// Default [`ServeLimits::header_timeout`], in milliseconds.
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;
    /// Default [`ServeLimits::body_timeout`], in milliseconds.
    pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_millis(Self::DEFAULT_HEADER_TIMEOUT_MS),
            body_timeout: Duration::from_millis(Self::DEFAULT_BODY_TIMEOUT_MS),
            // hyper's own default.
            max_concurrent_streams: 200,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How a port is served: its limits, the credentials its calls require, and
/// TLS.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// What clients may hold.
    pub limits: ServeLimits,
    /// The credentials each path requires ([`gate`]).
    pub required: Required,
    /// With a certificate, connections are TLS only.
    pub tls: Tls,
}

/// What a port serves: a router, and services called directly for the paths
/// under their prefixes (see [Direct routes](self#direct-routes)).
pub struct Routes {
    router: axum::Router,
    direct: Vec<Direct>,
}

/// A service called without the router for (some of) the paths under
/// `prefix`.
#[derive(Clone)]
struct Direct {
    prefix: String,
    /// Which requests under `prefix` it takes, by method and headers.
    takes: fn(&Method, &HeaderMap) -> bool,
    service: BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>,
}

impl Direct {
    /// Whether `request` is one of the service's: its path is the prefix and
    /// something after it, and `takes` says yes.
    fn takes<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        path.len() > self.prefix.len()
            && path.starts_with(&self.prefix)
            && (self.takes)(request.method(), request.headers())
    }
}

impl Routes {
    /// `service` is called directly for its paths, `/{NAME}/...`; the router
    /// should route them to the same service, for anything that reads the
    /// route table (reflection lists services from its own registry).
    pub fn with_direct_grpc<S>(self, service: S) -> Self
    where
        S: tower::Service<
                Request<Body>,
                Response = Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let service = service.map_response(|r| r.map(Body::new));
        self.with_direct_under(&format!("/{}/", S::NAME), |_, _| true, service)
    }

    /// `service` is called directly for the requests to paths that start
    /// with `prefix` and go on after it, of which `takes` (given their method
    /// and headers) says yes; the router should serve them the same way, so
    /// that both answer alike.
    pub fn with_direct_under<S>(
        mut self,
        prefix: &str,
        takes: fn(&Method, &HeaderMap) -> bool,
        service: S,
    ) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.direct.push(Direct {
            prefix: prefix.to_string(),
            takes,
            service: BoxCloneSyncService::new(service),
        });
        self
    }
}

impl From<axum::Router> for Routes {
    fn from(router: axum::Router) -> Self {
        Self {
            router,
            direct: Vec::new(),
        }
    }
}

/// Serves `routes` (gRPC over HTTP/2, REST over HTTP/1.1 or h2) on `listener`
/// as `serving` says until `shutdown` resolves; in-flight requests finish
/// first. Every request first passes the gate for `serving.required`.
///
/// `listener` is a TCP listener in production (whose connections get
/// `TCP_NODELAY`), or a simulated network's.
pub async fn serve<L: Listener>(
    listener: L,
    routes: impl Into<Routes>,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Serving {
        limits,
        required,
        tls,
    } = serving;
    let Routes { router, direct } = routes.into();
    let direct: Arc<[Direct]> = (direct.into_iter())
        .map(|d| Direct {
            service: gate::guard_service(d.service, required.clone()),
            ..d
        })
        .collect();
    let router = gate::guard(router, required);
    let acceptor = tls.acceptor();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((tcp, permit)) = accepted else {
            continue;
        };
        let (router, closed) = ((router.clone(), direct.clone()), closed.clone());
        match acceptor.clone() {
            None => connections.spawn(serve_connection(tcp, router, limits, closed, permit)),
            // The handshake runs in the connection's own task, so a client
            // that stalls mid-handshake holds up no other; it counts towards
            // the first request's header timeout.
            Some(acceptor) => connections.spawn(async move {
                let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        serve_connection(stream, router, limits, closed, permit).await
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
        };
        // Finished connections are reaped as new ones come.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The next connection, once fewer than the limit are open; `None` after an
/// accept error (retried by the caller; after a pause if the process is out of
/// file descriptors or memory).
async fn accept<L: Listener>(
    listener: &L,
    permits: &Arc<Semaphore>,
) -> Option<(L::Io, OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok(tcp) => Some((tcp, permit)),
        Err(e) => {
            use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
            if !matches!(
                e.kind(),
                ConnectionAborted | ConnectionRefused | ConnectionReset
            ) {
                tracing::warn!(error = %e, "accepting a connection failed; pausing for a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None
        }
    }
}

/// Serves one connection until it ends, `closed` turns true (then gracefully),
/// or it sends no request within the header timeout. Holds `_permit` meanwhile.
async fn serve_connection<S>(
    io: S,
    (router, direct): (axum::Router, Arc<[Direct]>),
    limits: ServeLimits,
    mut closed: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    // hyper times out HTTP/1 headers, but not the wait for the bytes that tell
    // HTTP/1 from HTTP/2, nor an HTTP/2 handshake: the first request must come
    // within the header timeout whatever the protocol.
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let requested = requested.clone();
        let router = TowerToHyperService::new(router);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            let request = with_body_deadline(request, limits.body_timeout);
            // Something must follow the prefix, as for the router's
            // `/{service}/{*method}` and `/keys/{*key}` routes.
            match direct.iter().find(|d| d.takes(&request)) {
                Some(d) => Either::Left(d.service.clone().oneshot(request)),
                None => Either::Right(router.call(request)),
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let first_request_by = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request_by);
    let mut waiting_for_first = true;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request_by, if waiting_for_first => {
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!("closing a connection that sent no request in time");
                    return;
                }
                waiting_for_first = false;
            }
            _ = closed.wait_for(|c| *c), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether a request with `headers` is a gRPC call (its content type is
/// `application/grpc`, `application/grpc+proto`, ...): gRPC and REST share the
/// port, and a few things (refusals, body deadlines, the fallback) differ.
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `request` with its body bounded to arrive within `timeout` (reading it
/// later fails, which the gateway answers with 408), if it is a REST request
/// that has a body. gRPC streams (a hand-off lasts as long as its arc takes to
/// send) are bounded by the node itself, and a request known to be empty
/// (most GETs) needs no timer: done here, once per request, rather than as a
/// layer on each route, which cost about 5% of a GET's instructions
/// (`bench/instructions.sh`).
fn with_body_deadline(request: Request<Incoming>, timeout: Duration) -> Request<axum::body::Body> {
    use hyper::body::Body as _;
    if is_grpc(request.headers()) || request.body().size_hint().exact() == Some(0) {
        return request.map(axum::body::Body::new);
    }
    request.map(|body| axum::body::Body::new(tower_http::timeout::DeadlineBody::new(timeout, body)))
}

/// Adds server reflection, v1 and v1alpha (Postman long spoke only the latter),
/// describing every Crusty Ring proto, to `routes`.
pub fn with_reflection(routes: tonic::service::Routes) -> tonic::service::Routes {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    match (v1, v1alpha) {
        (Ok(v1), Ok(v1alpha)) => routes.add_service(v1).add_service(v1alpha),
        (v1, v1alpha) => {
            // The descriptor sets are compiled into the binary; failing to read
            // them is a build defect, reported rather than served half-way.
            tracing::error!(v1 = ?v1.err(), v1alpha = ?v1alpha.err(), "reflection unavailable");
            routes
        }
    }
}
