//! Connections to other nodes: one lazily connected gRPC channel per address, with
//! bounded connect and request times so that a dead peer costs a bounded wait.

use crate::node::error::NodeError;
use crate::proto::dht::dht_node_client::DhtNodeClient;
use crate::proto::registry::registry_client::RegistryClient;
use crate::ring::Member;
use crate::security::{AuthChannel, Credentials};
use crate::transport::Network;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How many peer channels are cached before the cache starts afresh.
const MAX_CHANNELS: usize = 4096;

/// Timeouts for talking to peers.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    /// How long to wait for a TCP connection to a peer.
    pub connect: Duration,
    /// How long to wait for a peer's answer to one request.
    pub request: Duration,
}

/// The cached channels, by address, each with the number it was made
/// under (so that a late timeout on an old channel does not drop a newer
/// one); shared with detached calls.
type Channels = Arc<Mutex<Pool>>;

#[derive(Debug, Default)]
struct Pool {
    channels: BTreeMap<String, (Channel, u64)>,
    made: u64,
}

/// A pool of channels to peers, keyed by address. Ordered, so that dropping
/// the pool closes its channels in the same order in every process (a
/// simulation's run replays exactly). A clone shares the channels.
#[derive(Debug, Clone)]
pub struct Peers {
    channels: Channels,
    timeouts: PeerTimeouts,
    max_message_bytes: usize,
    /// Sent with every call: the cluster secret, and the client token.
    credentials: Credentials,
    /// How connections are opened.
    network: Network,
}

impl Peers {
    /// An empty pool whose calls carry `credentials`, over `network`.
    pub fn new(
        timeouts: PeerTimeouts,
        max_message_bytes: usize,
        credentials: Credentials,
        network: Network,
    ) -> Self {
        Self {
            channels: Channels::default(),
            timeouts,
            max_message_bytes,
            credentials,
            network,
        }
    }

    /// The pool a node configured by `config` calls its peers through: its
    /// timeouts, message limit, member credentials and network.
    pub fn of(config: &crate::node::NodeConfig) -> Self {
        Self::new(
            config.timeouts,
            config.limits.max_message_bytes(),
            Credentials::member(&config.security, &config.tls),
            config.network.clone(),
        )
    }

    /// [`Peers::of`] for a failure detector's probes: on channels of their
    /// own, each connect a real attempt ([`crate::transport::Network::forgetful`]).
    pub fn probing(config: &crate::node::NodeConfig) -> Self {
        Self {
            network: config.network.forgetful(),
            ..Self::of(config)
        }
    }

    /// A client for the node at `addr`, reusing its channel.
    pub fn client(&self, addr: &str) -> Result<DhtNodeClient<AuthChannel>, NodeError> {
        self.client_made(addr).map(|(client, _)| client)
    }

    /// [`Peers::client`], and the number its channel was made under (for
    /// [`Peers::forget`]).
    pub(in crate::node) fn client_made(
        &self,
        addr: &str,
    ) -> Result<(DhtNodeClient<AuthChannel>, u64), NodeError> {
        let (channel, made) = self.channel_made(addr)?;
        let client = DhtNodeClient::with_interceptor(channel, self.credentials.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        Ok((client, made))
    }

    /// A client of the registry at `addr`, on a channel pooled like a
    /// peer's, and the number it was made under (for [`Peers::forget`]).
    pub(in crate::node) fn registry_client_made(
        &self,
        addr: &str,
    ) -> Result<(RegistryClient<AuthChannel>, u64), NodeError> {
        let (channel, made) = self.channel_made(addr)?;
        let client = RegistryClient::new(AuthChannel::new(channel, self.credentials.clone()));
        Ok((client, made))
    }

    /// The pooled channel to `addr`, made now if there is none.
    fn channel_made(&self, addr: &str) -> Result<(Channel, u64), NodeError> {
        let mut pool = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let (channel, made) = match pool.channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                // Addresses come from peers: keep the cache bounded.
                if pool.channels.len() >= MAX_CHANNELS {
                    pool.channels.clear();
                }
                let c =
                    self.network
                        .connect_lazy(&endpoint(addr, self.timeouts, &self.credentials)?);
                pool.made += 1;
                let made = pool.made;
                pool.channels.insert(addr.to_string(), (c.clone(), made));
                (c, made)
            }
        };
        Ok((channel, made))
    }

    /// Runs `call` against the node `to`, within the request timeout, and turns
    /// transport failures into [`NodeError::Unreachable`] / [`NodeError::Timeout`].
    pub async fn call<T, F, Fut>(&self, to: &Member, call: F) -> Result<T, NodeError>
    where
        F: FnOnce(DhtNodeClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(to, self.timeouts.request, call).await
    }

    /// [`Peers::call`] with its own time limit.
    pub async fn call_within<T, F, Fut>(
        &self,
        to: &Member,
        after: Duration,
        call: F,
    ) -> Result<T, NodeError>
    where
        F: FnOnce(DhtNodeClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (client, made) = self.client_made(&to.addr)?;
        let outcome = tokio::time::timeout(after, call(client)).await;
        if outcome.is_err() {
            forget(&self.channels, &to.addr, made);
        }
        settle(&to.addr, after, outcome)
    }

    /// Drops the channel to `addr` made under `made` (see [`forget`]): a
    /// call on it went unanswered.
    pub(in crate::node) fn forget(&self, addr: &str, made: u64) {
        forget(&self.channels, addr, made);
    }

    /// [`Peers::call`] as a future that borrows nothing, so it can be spawned
    /// and outlive its caller (a replica write still in flight once a quorum
    /// has answered).
    pub fn call_detached<T, F, Fut>(
        &self,
        to: &Member,
        call: F,
    ) -> impl Future<Output = Result<T, NodeError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(DhtNodeClient<AuthChannel>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send,
    {
        let client = self.client_made(&to.addr);
        let addr = to.addr.clone();
        let after = self.timeouts.request;
        let channels = self.channels.clone();
        async move {
            let (client, made) = client?;
            let outcome = tokio::time::timeout(after, call(client)).await;
            if outcome.is_err() {
                forget(&channels, &addr, made);
            }
            settle(&addr, after, outcome)
        }
    }
}

/// Drops the channel to `addr`, after a call on it went unanswered: the
/// next call connects afresh. A connection can stay open and deliver
/// nothing for a long time or for good: after a partition heals, TCP
/// retransmits only when its backoff (seconds, doubling) next runs out; a
/// middlebox that dropped the connection's state never delivers; in the
/// simulation a segment lost to a cut link is never sent again (turmoil
/// does not retransmit). HTTP/2's keep-alive notices only 15 s later, and
/// only while a call is open. Calls still on the old channel finish on it.
/// Only the channel made under `made`: one made since is left alone.
fn forget(channels: &Channels, addr: &str, made: u64) {
    let mut pool = channels.lock().unwrap_or_else(|e| e.into_inner());
    if pool.channels.get(addr).is_some_and(|(_, m)| *m == made) {
        pool.channels.remove(addr);
        tracing::debug!(
            peer = addr,
            "no answer in time; the next call connects afresh"
        );
    }
}

/// The result of a call to the peer at `addr` that was given `after` to answer.
fn settle<T>(
    addr: &str,
    after: Duration,
    outcome: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
) -> Result<T, NodeError> {
    match outcome {
        Err(_) => Err(NodeError::Timeout {
            addr: addr.to_string(),
            after,
        }),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(peer_error(addr, status)),
    }
}

/// An endpoint for `addr` with our timeouts, verified with the CA of
/// `credentials` if it is an `https://` address.
pub fn endpoint(
    addr: &str,
    timeouts: PeerTimeouts,
    credentials: &Credentials,
) -> Result<Endpoint, NodeError> {
    let unreachable = |reason: String| NodeError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| unreachable(format!("not a valid address: {e}")))?
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    credentials.secure(endpoint).map_err(unreachable)
}

/// A peer's error status as a node error. A request that never reached the peer
/// (the connection could not be made: refused, or no answer within the connect
/// timeout) is `Unreachable`, which callers may retry safely; a transport
/// failure after the connection was made may have been applied, so it is
/// `Interrupted`, which only reads retry; anything the peer itself answered is
/// passed on as it was.
pub(in crate::node) fn peer_error(addr: &str, status: tonic::Status) -> NodeError {
    let mut source = std::error::Error::source(&status);
    let transport = source.is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
    let mut not_connected = false;
    while let Some(e) = source {
        let text = e.to_string();
        not_connected |= text.contains("tcp connect error")
            || text.contains("Connection refused")
            || text.contains("dns error")
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
                )
                    // The connect timeout (a host that does not answer at
                    // all) is a tokio timer's `Elapsed`; a kernel `TimedOut`
                    // on a live connection is not, and may follow a request
                    // that went out.
                    || (io.kind() == std::io::ErrorKind::TimedOut
                        && io
                            .get_ref()
                            .is_some_and(|inner| inner.is::<tokio::time::error::Elapsed>()))
            })
            // A connect not tried: one just before failed.
            || e.downcast_ref::<crate::transport::RecentlyFailed>().is_some();
        source = e.source();
    }
    if transport && not_connected {
        NodeError::Unreachable {
            addr: addr.to_string(),
            reason: status.message().to_string(),
        }
    } else if transport {
        NodeError::Interrupted {
            addr: addr.to_string(),
            reason: status.message().to_string(),
        }
    } else {
        NodeError::from_peer_status(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connection that stays open and answers nothing (a black hole) is
    /// dropped after a call on it times out: the next call opens another.
    #[tokio::test]
    async fn a_call_that_times_out_makes_the_next_connect_afresh() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let black_hole = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let peers = Peers::of(&crate::node::NodeConfig::default());
        let peer = Member::new(crate::ring::Position(1), addr);
        for attempt in 1..=2 {
            let answer = peers
                .call_within(&peer, Duration::from_millis(300), |mut c| async move {
                    c.get_node_info(()).await
                })
                .await;
            assert!(
                matches!(answer, Err(NodeError::Timeout { .. })),
                "{answer:?}"
            );
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                attempt,
                "one connection per call"
            );
        }
        black_hole.abort();
    }
}
