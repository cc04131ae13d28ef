//! The network seam: how a process accepts connections ([`Listener`]) and how
//! it opens them ([`Network`]).
//!
//! A process in production listens on a TCP socket and dials its peers over
//! TCP; nothing here changes that. The seam exists so that the very same node,
//! registry and gateway code can run on a simulated network instead (the
//! deterministic simulation in `tests/t91_simulated_ring.rs` runs them on
//! `turmoil`'s), where links can be cut, delayed and healed and time is
//! virtual. Everything above a byte stream (HTTP/2, gRPC, REST, TLS, the
//! server's limits) stays the shipped code.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
/// simulated network. Cheap to clone.
#[derive(Clone, Default)]
pub struct Network {
    dial: Option<Arc<dyn Dial>>,
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
        }
    }

    /// A channel to `endpoint` that connects on first use (and reconnects).
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.dial {
            None => endpoint.connect_lazy(),
            Some(dial) => endpoint.connect_with_connector_lazy(Connector(dial.clone())),
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
