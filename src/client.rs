//! Client calls behind the command line: key operations through `QueryDht`, a
//! walk of the ring through each node's `GetNodeInfo`, and [`batch`]es through
//! `POST /batch`.

pub mod batch;
pub mod http;

use crate::proto::dht::{self, dht_node_client::DhtNodeClient};
use crate::ring::{Member, Position, owner};
use crate::security::{AuthChannel, Credentials};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::transport::Endpoint;

pub use crate::node::WALK_LIMIT;

/// A client of one node, sending the process's credentials with every call.
pub type NodeClient = DhtNodeClient<AuthChannel>;

/// Errors a client call reports.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a URL.
    #[error("{addr} is not a valid node address (expected e.g. http://127.0.0.1:50001): {reason}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// Why it is not valid.
        reason: String,
    },
    /// The node could not be reached.
    #[error("could not reach {addr}: {reason}")]
    Unreachable {
        /// The address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The node refused an HTTP request as a whole.
    #[error("the node answered {status}: {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What the node said.
        detail: String,
    },
    /// Walking the ring did not come back to its start.
    #[error(
        "the ring walk did not come back to its start after {0} nodes; the ring may be repairing, retry shortly"
    )]
    RingNotClosed(usize),
}

/// Connects to the node at `addr` (a URL; `host:port` gets `http://` prepended).
pub async fn connect(addr: &str) -> Result<NodeClient, ClientError> {
    connect_with(addr, &Credentials::default()).await
}

/// [`connect`], sending `credentials` (a client token, say) with every call.
pub async fn connect_with(
    addr: &str,
    credentials: &Credentials,
) -> Result<NodeClient, ClientError> {
    let url = normalise(addr);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let endpoint = credentials
        .secure(endpoint)
        .map_err(|reason| ClientError::BadAddress {
            addr: addr.to_string(),
            reason,
        })?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            addr: url,
            reason: std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string),
        })?;
    Ok(
        DhtNodeClient::with_interceptor(channel, credentials.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
}

/// `host:port` as `http://host:port`; URLs unchanged.
pub fn normalise(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Bytes as `0x` and hex digits.
pub fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// Sends one `QueryDht`.
pub async fn query(
    client: &mut NodeClient,
    ty: dht::OperationType,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<dht::QueryResult, ClientError> {
    Ok(query_counting_hops(client, request(ty, key, value))
        .await?
        .0)
}

/// A `QueryDht` request with no conditions.
pub fn request(ty: dht::OperationType, key: &[u8], value: Option<&[u8]>) -> dht::Query {
    dht::Query {
        ty: ty as i32,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
        ..dht::Query::default()
    }
}

/// Sends one `QueryDht` and reads how many times the ring forwarded it
/// (`x-crusty-hops`; `None` from a node that does not say).
pub async fn query_counting_hops(
    client: &mut NodeClient,
    request: dht::Query,
) -> Result<(dht::QueryResult, Option<u32>), ClientError> {
    let response = client.query_dht(request).await?;
    let hops = crate::node::RouteTaken::read_metadata(response.metadata()).map(|r| r.hops);
    Ok((response.into_inner(), hops))
}

/// A client that routes itself: it learns the ring's members and sends each
/// query straight to its key's owner, so the ring forwards nothing. When an
/// owner cannot be reached it relearns the ring and, failing that, asks any
/// of the nodes it was given (which then forward).
///
/// A clone shares the connections opened so far (HTTP/2 carries the clones'
/// queries side by side); those it opens later are its own.
#[derive(Debug, Clone)]
pub struct RingClient {
    /// The nodes given, to fall back on and to learn the ring from.
    seeds: Vec<String>,
    /// The members by ID, as last learned (empty: send to the seeds).
    members: BTreeMap<Position, Member>,
    /// One connection per address.
    clients: HashMap<String, NodeClient>,
    /// The seed to use next when routing by the ring is not possible.
    turn: usize,
    /// Sent with every call.
    credentials: Credentials,
}

impl RingClient {
    /// A client over `seeds` (any nodes of one ring). With `route`, it learns
    /// the ring from them (a ring whose nodes do not describe themselves, such
    /// as the original study project's, is then just asked through the seeds).
    pub async fn new(seeds: Vec<String>, route: bool) -> Self {
        Self::new_with(seeds, route, Credentials::default()).await
    }

    /// [`RingClient::new`], sending `credentials` with every call.
    pub async fn new_with(seeds: Vec<String>, route: bool, credentials: Credentials) -> Self {
        let mut client = Self {
            seeds: seeds.into_iter().map(|s| normalise(&s)).collect(),
            members: BTreeMap::new(),
            clients: HashMap::new(),
            turn: 0,
            credentials,
        };
        if route {
            client.learn().await;
        }
        client
    }

    /// Relearns the ring's members from the first seed that describes it.
    pub async fn learn(&mut self) {
        for seed in self.seeds.clone() {
            if let Ok(members) = serving_members(&seed, &self.credentials).await {
                self.members = members;
                return;
            }
        }
    }

    /// Another client over the same seeds and the ring as this one learned it,
    /// with connections of its own (none yet).
    pub fn fresh(&self) -> Self {
        Self {
            seeds: self.seeds.clone(),
            members: self.members.clone(),
            clients: HashMap::new(),
            turn: 0,
            credentials: self.credentials.clone(),
        }
    }

    /// Opens a connection to every member and seed it has none to yet (those
    /// that do not answer are left for the queries to report). Clones made
    /// afterwards share these connections.
    pub async fn connect_all(&mut self) {
        let addrs: Vec<String> = self.members.values().map(|m| m.addr.clone()).collect();
        for addr in addrs.into_iter().chain(self.seeds.clone()) {
            let _ = self.client(&addr).await;
        }
    }

    /// How many members the client routes by (0: it asks the seeds).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    async fn client(&mut self, addr: &str) -> Result<NodeClient, ClientError> {
        if let Some(c) = self.clients.get(addr) {
            return Ok(c.clone());
        }
        let c = connect_with(addr, &self.credentials).await?;
        self.clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Where a query for `key` goes first: its owner, or the next seed.
    fn target(&mut self, key: &[u8]) -> String {
        match owner(&self.members, crate::ring::key_position(key)) {
            Some((_, m)) => m.addr.clone(),
            None => {
                self.turn = self.turn.wrapping_add(1);
                self.seeds[self.turn % self.seeds.len().max(1)].clone()
            }
        }
    }

    /// Sends one query to its owner (or a seed), and how many times the ring
    /// forwarded it. An owner that cannot be reached makes the client relearn
    /// the ring and send the query to a seed instead.
    pub async fn query(
        &mut self,
        ty: dht::OperationType,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(dht::QueryResult, Option<u32>), ClientError> {
        self.send(request(ty, key, value)).await
    }

    /// [`RingClient::query`] for a whole request (with conditions, say).
    pub async fn send(
        &mut self,
        request: dht::Query,
    ) -> Result<(dht::QueryResult, Option<u32>), ClientError> {
        let (key, ty) = (request.key.as_slice(), request.ty);
        if self.seeds.is_empty() {
            return Err(ClientError::BadAddress {
                addr: String::new(),
                reason: "no node given".into(),
            });
        }
        let addr = self.target(key);
        let first = match self.client(&addr).await {
            Ok(mut c) => query_counting_hops(&mut c, request.clone()).await,
            Err(e) => Err(e),
        };
        // An owner that could not be reached (the query never left), or a
        // read it could not serve: relearn, and send it through the seeds in
        // turn. A write answered UNAVAILABLE may have been applied, and sent
        // again could overwrite a later write: it is not resent.
        let resend = match &first {
            Err(ClientError::Unreachable { .. }) => true,
            Err(ClientError::Status(s)) => {
                s.code() == tonic::Code::Unavailable && ty == dht::OperationType::Get as i32
            }
            _ => false,
        };
        if !resend || self.members.is_empty() {
            return first;
        }
        self.clients.remove(&addr);
        self.learn().await;
        let mut last = first;
        for seed in self.seeds.clone() {
            last = match self.client(&seed).await {
                Ok(mut c) => query_counting_hops(&mut c, request.clone()).await,
                Err(e) => Err(e),
            };
            if !matches!(last, Err(ClientError::Unreachable { .. })) {
                break;
            }
        }
        last
    }
}

/// The ring's serving members by ID, from a walk that starts at `addr`.
pub async fn serving_members(
    addr: &str,
    credentials: &Credentials,
) -> Result<BTreeMap<Position, Member>, ClientError> {
    let serving = crate::node::NodeState::Serving.as_str();
    Ok(ring_with(addr, WALK_LIMIT, credentials)
        .await?
        .into_iter()
        .filter(|info| info.state == serving)
        .filter_map(|info| info.node.map(Member::from))
        .map(|m| (m.id, m))
        .collect())
}

/// The ring as the nodes see it: starting at `addr`, each node's view, following
/// `next` links until the walk comes back to its first node (at most `limit` nodes).
/// Returned in ring order from the smallest ID.
pub async fn ring(addr: &str, limit: usize) -> Result<Vec<dht::NodeInfo>, ClientError> {
    ring_with(addr, limit, &Credentials::default()).await
}

/// [`ring`], sending `credentials` with every call.
pub async fn ring_with(
    addr: &str,
    limit: usize,
    credentials: &Credentials,
) -> Result<Vec<dht::NodeInfo>, ClientError> {
    let mut infos: Vec<dht::NodeInfo> = Vec::new();
    let mut at = normalise(addr);
    while infos.len() < limit {
        let info = connect_with(&at, credentials)
            .await?
            .get_node_info(())
            .await?
            .into_inner();
        let id = |n: &Option<crate::proto::registry::Node>| n.as_ref().map(|n| n.id);
        let first = infos.first().map_or(id(&info.node), |f| id(&f.node));
        let next = info.next.clone().unwrap_or_default();
        infos.push(info);
        if Some(next.id) == first {
            infos.sort_by_key(|i| id(&i.node));
            return Ok(infos);
        }
        // A loop that does not come back to the start: the ring is mid-repair.
        if infos.iter().any(|i| id(&i.node) == Some(next.id)) {
            return Err(ClientError::RingNotClosed(infos.len()));
        }
        at = next.addr;
    }
    Err(ClientError::RingNotClosed(limit))
}
