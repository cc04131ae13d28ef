//! Client calls behind the command line: key operations through `QueryDht`, and a
//! walk of the ring through each node's `GetNodeInfo`.

use crate::proto::dht::{self, dht_node_client::DhtNodeClient};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

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
    /// Walking the ring did not come back to its start.
    #[error(
        "the ring walk did not come back to its start after {0} nodes; the ring may be repairing, retry shortly"
    )]
    RingNotClosed(usize),
}

/// How many nodes a ring walk visits at most before it gives up.
pub const WALK_LIMIT: usize = 4096;

/// Connects to the node at `addr` (a URL; `host:port` gets `http://` prepended).
pub async fn connect(addr: &str) -> Result<DhtNodeClient<Channel>, ClientError> {
    let url = normalise(addr);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            addr: url,
            reason: std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string),
        })?;
    Ok(DhtNodeClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// `host:port` as `http://host:port`; URLs unchanged.
pub fn normalise(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Sends one `QueryDht`.
pub async fn query(
    client: &mut DhtNodeClient<Channel>,
    ty: dht::OperationType,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<dht::QueryResult, ClientError> {
    let request = dht::Query {
        ty: ty as i32,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    };
    Ok(client.query_dht(request).await?.into_inner())
}

/// The ring as the nodes see it: starting at `addr`, each node's view, following
/// `next` links until the walk comes back to its first node (at most `limit` nodes).
/// Returned in ring order from the smallest ID.
pub async fn ring(addr: &str, limit: usize) -> Result<Vec<dht::NodeInfo>, ClientError> {
    let mut infos: Vec<dht::NodeInfo> = Vec::new();
    let mut at = normalise(addr);
    while infos.len() < limit {
        let info = connect(&at).await?.get_node_info(()).await?.into_inner();
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
