//! The network seam: how a process accepts connections ([`Listener`]) and how
//! it opens them ([`Network`]).
//!
//! A process in production listens on a TCP socket and dials its peers over
//! TCP; nothing here changes that. The seam exists so that the very same node,
//! registry and gateway code can run on a simulated network instead (the
//! deterministic simulation in `tests/t91_simulation/` runs them on
//! `turmoil`'s), where links can be cut, delayed and healed and time is
//! virtual. Everything above a byte stream (HTTP/2, gRPC, REST, TLS, the
//! server's limits) stays the shipped code.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

/// Where a server takes its connections from.
pub trait Listener: Send + Sync + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// The port it listens on (what a node advertises).
    fn port(&self) -> io::Result<u16>;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    /// Every accepted connection gets `TCP_NODELAY`: an HTTP/2 answer goes out
    /// as several small frames (a gRPC reply: headers, data, trailers), and
    /// with Nagle's algorithm a small frame written after another waits for
    /// the peer's delayed acknowledgement, up to 40 ms.
    async fn accept(&self) -> io::Result<Self::Io> {
        let (tcp, _) = tokio::net::TcpListener::accept(self).await?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        Ok(tcp)
    }

    fn port(&self) -> io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

/// A byte stream to a peer, as a simulated network gives one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection being opened.
pub type Dialling = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send>>;

/// Opens byte streams to `host:port` on a network other than the host's TCP.
pub trait Dial: Send + Sync + 'static {
    /// Connects to `host` (a name or address) on `port`.
    fn dial(&self, host: &str, port: u16) -> Dialling;
}

/// How a process opens connections: TCP by default, or a [`Dial`] of a
/// simulated network. Cheap to clone; clones share what they remember of
/// failed connects.
#[derive(Clone, Default)]
pub struct Network {
    dial: Option<Arc<dyn Dial>>,
    failures: Failures,
    /// Whether connects ignore what failed before (for probes).
    forgetful: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.dial {
            None => "Network::Tcp",
            Some(_) => "Network::Dial",
        })
    }
}

impl Network {
    /// Connections opened by `dial` instead of TCP.
    pub fn dialled_by(dial: impl Dial) -> Self {
        Self {
            dial: Some(Arc::new(dial)),
            failures: Failures::default(),
            forgetful: false,
        }
    }

    /// The same network, but whose connects always try: a failure detector's
    /// probes must each make a real attempt, or one lost connect would count
    /// as several misses.
    pub fn forgetful(&self) -> Self {
        Self {
            forgetful: true,
            ..self.clone()
        }
    }

    /// A channel to `endpoint` that connects on first use (and reconnects),
    /// each connect bounded by the endpoint's connect timeout (tonic wraps
    /// any connector in it).
    ///
    /// Calls on a channel queue while it has no connection, and each queued
    /// call waits for a connect of its own, one after another: against a host
    /// that does not answer, the k-th waits k connect timeouts. So a connect
    /// to an address whose last connect failed within
    /// [`FAILED_CONNECT_MEMORY`] fails at once (as not connected: the request
    /// never went out), and the calls queued behind a failed connect fail
    /// with it instead of in turn.
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        let failures = (!self.forgetful).then(|| self.failures.clone());
        match &self.dial {
            None => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                endpoint.connect_with_connector_lazy(Remembering {
                    inner: http,
                    failures,
                })
            }
            Some(dial) => endpoint.connect_with_connector_lazy(Remembering {
                inner: Connector(dial.clone()),
                failures,
            }),
        }
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.dial {
            None => endpoint.connect().await,
            Some(dial) => {
                endpoint
                    .connect_with_connector(Connector(dial.clone()))
                    .await
            }
        }
    }
}

/// A [`Dial`] as the connector tonic takes.
#[derive(Clone)]
struct Connector(Arc<dyn Dial>);

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Stream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let dialling = self.0.dial(&host, port);
        Box::pin(async move { dialling.await.map(TokioIo::new) })
    }
}

/// How long a failed connect to an address makes further connects to it fail
/// at once: long enough for the calls queued behind it, short enough that
/// the next probe or request tries the address again.
pub const FAILED_CONNECT_MEMORY: Duration = Duration::from_millis(100);

/// When a connect to each address (`host:port`) last failed.
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<HashMap<String, tokio::time::Instant>>>);

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::time::Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long ago a connect to `addr` failed, if within the memory.
    fn recent(&self, addr: &str) -> Option<Duration> {
        let at = *self.lock().get(addr)?;
        let ago = at.elapsed();
        (ago < FAILED_CONNECT_MEMORY).then_some(ago)
    }

    fn note(&self, addr: &str, failed: bool) {
        let mut failures = self.lock();
        if failed {
            // Bounded like the peers' channels: addresses come from peers.
            if failures.len() >= 4096 {
                failures.clear();
            }
            failures.insert(addr.to_string(), tokio::time::Instant::now());
        } else {
            failures.remove(addr);
        }
    }
}

/// A connector that remembers failed connects (see [`Network::connect_lazy`]);
/// with no memory, a plain one.
#[derive(Clone)]
struct Remembering<C> {
    inner: C,
    failures: Option<Failures>,
}

/// A connect not tried, because one to the same address failed just before
/// (the request never went out).
#[derive(Debug, thiserror::Error)]
#[error("a connect to {addr} failed {ms} ms ago; not tried again yet")]
pub struct RecentlyFailed {
    /// The address (`host:port`).
    pub addr: String,
    /// How long ago the last connect failed.
    pub ms: u128,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Notes how a connect ended when it ends, however it ends.
struct Outcome {
    failures: Failures,
    addr: String,
    failed: bool,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.failures.note(&self.addr, self.failed);
    }
}

impl<C> tonic::codegen::Service<Uri> for Remembering<C>
where
    C: tonic::codegen::Service<Uri> + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let Some(failures) = self.failures.clone() else {
            let connecting = self.inner.call(uri);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let addr = uri.authority().map(ToString::to_string).unwrap_or_default();
        if let Some(ago) = failures.recent(&addr) {
            let ms = ago.as_millis();
            return Box::pin(async move { Err(Box::new(RecentlyFailed { addr, ms }) as BoxError) });
        }
        let connecting = self.inner.call(uri);
        // A connect given up on (the endpoint's connect timeout wraps this
        // connector, and drops it) failed too.
        let outcome = Outcome {
            failures,
            addr,
            failed: true,
        };
        Box::pin(async move {
            let mut outcome = outcome;
            let connected = connecting.await.map_err(Into::into);
            outcome.failed = connected.is_err();
            connected
        })
    }
}
