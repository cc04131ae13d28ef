//! A replica write's wire form at the receiver: a peer's `Replicate` read
//! into checked entries (all of them, or the call is refused and nothing is
//! taken), handed to [`Node::accept_replicas`], and its answer, the count
//! merged and the copies held newer here, as a `ReplicateAck`.

use super::entries::entries_from_wire;
use crate::node::Node;
use crate::proto::dht;
use tonic::Status;

/// Serves a `Replicate` call; `requests` lists the client requests the
/// writes serve (for the log).
pub(in crate::node) async fn receive(
    node: &Node,
    request: dht::ReplicateRequest,
    requests: Option<&str>,
) -> Result<dht::ReplicateAck, Status> {
    let entries = entries_from_wire(request.entries, &node.config.limits)?;
    let merged = entries.len() as u64;
    let newer = node.accept_replicas(entries, requests).await?;
    Ok(dht::ReplicateAck {
        merged,
        newer: newer.into_iter().map(Into::into).collect(),
    })
}
