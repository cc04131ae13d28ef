//! `GET /ring` and `GET /ring/owner/{key}`: the ring as its nodes see it, with
//! each node's share and how far the largest is above the mean.

use super::keys::{Encoding, KeyParam, encode, key_from_path};
use super::problem::{ApiError, Problem};
use crate::node::{Node, NodeSummary};
use crate::ring::balance::largest_share_ratio;
use crate::ring::{self, Arc as RingArc, Member, Position};
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// An arc of the ring, `[start, end)`, in hex.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArcView {
    /// First position of the arc.
    pub start: String,
    /// First position after the arc (equal to `start`: the whole ring).
    pub end: String,
}

/// One node as it sees itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct RingNode {
    /// The node's ID, 16 hex digits.
    pub id: String,
    /// The node's ID in decimal (a string: JSON numbers lose precision past 2^53).
    pub id_decimal: String,
    /// The node's address.
    pub addr: String,
    /// `joining`, `serving`, `leaving` or `left`.
    pub state: String,
    /// Live keys stored on the node, owned and replicated alike.
    pub keys: u64,
    /// Live keys in the node's own arc.
    pub owned_keys: u64,
    /// Live keys the node holds as a replica of its successors' arcs. Once
    /// re-replication has finished after a change, the ring's `replica_keys`
    /// add up to `replication_factor - 1` times its `owned_keys` (when the
    /// ring has at least `replication_factor` nodes).
    pub replica_keys: u64,
    /// Copies of each key the node keeps (itself and its replicas).
    pub replication_factor: u32,
    /// The previous neighbour's ID.
    pub prev: String,
    /// The next neighbour's ID.
    pub next: String,
    /// The successor list: `next`, then the backups that take over if it fails.
    pub successors: Vec<String>,
    /// The nodes before `prev`, nearest first (`prev` and these hold the
    /// replicas of the node's arc).
    pub predecessors: Vec<String>,
    /// The arc the node owns.
    pub arc: ArcView,
    /// The arc's share of the ring, 0 to 1.
    pub share: f64,
}

/// The ring, walked from the answering node along `next` links.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "answered_by": "http://127.0.0.1:50001",
    "mean_share": 0.3333,
    "largest_share_ratio": 1.06,
    "nodes": [{
        "id": "2bb361ae3351c380", "id_decimal": "3149437593233933184",
        "addr": "http://127.0.0.1:50001", "state": "serving", "keys": 3,
        "owned_keys": 1, "replica_keys": 2, "replication_factor": 3,
        "prev": "7cbc7de0523bf372", "next": "353e13987644074c",
        "successors": ["353e13987644074c", "7cbc7de0523bf372"],
        "predecessors": ["353e13987644074c"],
        "arc": {"start": "2bb361ae3351c380", "end": "353e13987644074c"},
        "share": 0.0366
    }]
}))]
pub struct RingView {
    /// The node that walked the ring.
    pub answered_by: String,
    /// The nodes' mean share of the ring (1 / nodes in a ring that is not being
    /// repaired).
    pub mean_share: f64,
    /// The largest node's share over the mean share: 1 when every node owns as
    /// much as any other. How balanced the IDs are (`--id-choices`).
    pub largest_share_ratio: f64,
    /// Every node, in ID order.
    pub nodes: Vec<RingNode>,
}

/// A node, briefly.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeRef {
    /// Its ID, 16 hex digits.
    pub id: String,
    /// Its ID in decimal.
    pub id_decimal: String,
    /// Its address.
    pub addr: String,
}

/// Where a key lives.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "key": "1", "key_encoding": "utf8",
    "position": "6b86b273ff34fce1", "position_decimal": "7771807327155798241",
    "owner": {"id": "353e13987644074c", "id_decimal": "3836917226563856204", "addr": "http://127.0.0.1:50002"},
    "replicas": [{"id": "2bb361ae3351c380", "id_decimal": "3149437593233933184", "addr": "http://127.0.0.1:50001"}]
}))]
pub struct OwnerView {
    /// The key.
    pub key: String,
    /// How `key` is encoded.
    pub key_encoding: Encoding,
    /// The key's position, 16 hex digits.
    pub position: String,
    /// The key's position in decimal.
    pub position_decimal: String,
    /// The node that owns the position.
    pub owner: NodeRef,
    /// The nodes that hold its replicas: the owner's predecessors, nearest
    /// first (the owner's replication factor minus one, fewer in a small ring).
    pub replicas: Vec<NodeRef>,
}

fn node_view(s: &NodeSummary) -> RingNode {
    let arc = RingArc::new(s.me.id, s.next.id);
    RingNode {
        id: s.me.id.to_hex(),
        id_decimal: s.me.id.0.to_string(),
        addr: s.me.addr.clone(),
        state: s
            .state
            .map_or("unknown", crate::node::NodeState::as_str)
            .to_string(),
        keys: s.keys,
        owned_keys: s.owned_keys,
        replica_keys: s.replica_keys,
        replication_factor: s.replication_factor,
        prev: s.prev.id.to_hex(),
        next: s.next.id.to_hex(),
        successors: s.successors.iter().map(|m| m.id.to_hex()).collect(),
        predecessors: s.predecessors.iter().map(|m| m.id.to_hex()).collect(),
        arc: ArcView {
            start: arc.start.to_hex(),
            end: arc.end.to_hex(),
        },
        share: arc.share(),
    }
}

fn node_ref(m: &Member) -> NodeRef {
    NodeRef {
        id: m.id.to_hex(),
        id_decimal: m.id.0.to_string(),
        addr: m.addr.clone(),
    }
}

/// The ring: every node with its ID, address, arc and share.
#[utoipa::path(
    get,
    path = "/ring",
    tag = "ring",
    responses(
        (status = 200, description = "Every node, in ID order, as each sees itself.", body = RingView),
        (status = 503, description = "A node on the walk is unreachable.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "A node on the walk did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_ring(State(node): State<Arc<Node>>) -> Result<Json<RingView>, ApiError> {
    let walk = node.walk_ring(crate::node::WALK_LIMIT).await?;
    let nodes: Vec<RingNode> = walk.iter().map(node_view).collect();
    let shares: Vec<f64> = nodes.iter().map(|n| n.share).collect();
    Ok(Json(RingView {
        answered_by: node.me().addr,
        mean_share: shares.iter().sum::<f64>() / shares.len().max(1) as f64,
        largest_share_ratio: largest_share_ratio(&shares).unwrap_or(1.0),
        nodes,
    }))
}

/// Which node owns a key, and the key's position.
#[utoipa::path(
    get,
    path = "/ring/owner/{key}",
    tag = "ring",
    params(KeyParam),
    responses(
        (status = 200, description = "The key's position and owner.", body = OwnerView),
        (status = 400, description = "Bad key.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A node on the walk is unreachable.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_owner(
    State(node): State<Arc<Node>>,
    uri: Uri,
) -> Result<Json<OwnerView>, ApiError> {
    let key = key_from_path(&uri, "/ring/owner/")?;
    // Validate as a query would, so that the answer is about a key one can write.
    let position = crate::node::Query::new(
        crate::node::Operation::Get,
        key.clone(),
        &node.config().limits,
    )?
    .position;
    let walk = node.walk_ring(crate::node::WALK_LIMIT).await?;
    let members: BTreeMap<Position, Member> = walk
        .iter()
        .filter(|s| s.state == Some(crate::node::NodeState::Serving))
        .map(|s| (s.me.id, s.me.clone()))
        .collect();
    let (owner_id, owner) =
        ring::owner(&members, position).ok_or(crate::node::NodeError::NotServing)?;
    let factor = walk
        .iter()
        .find(|s| s.me.id == owner_id)
        .map_or(1, |s| s.replication_factor.max(1) as usize);
    let mut replicas = Vec::new();
    let mut at = owner_id;
    while replicas.len() + 1 < factor.min(members.len()) {
        let Some((id, m)) = ring::predecessor(&members, at) else {
            break;
        };
        replicas.push(node_ref(m));
        at = id;
    }
    let (k, key_encoding) = encode(&key);
    Ok(Json(OwnerView {
        key: k,
        key_encoding,
        position: position.to_hex(),
        position_decimal: position.0.to_string(),
        owner: node_ref(owner),
        replicas,
    }))
}
