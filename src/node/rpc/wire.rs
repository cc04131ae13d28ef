//! The node's domain types in their wire forms: a node's summary as
//! `NodeInfo`, and the route a query took as response metadata. Here, at the
//! edge, rather than in [`crate::proto`], so that the generated code depends
//! on nothing above the ring.

use crate::node::{NodeSummary, RouteTaken};
use crate::proto::{dht, registry};
use crate::ring::{Member, Position};
use tonic::metadata::{MetadataMap, MetadataValue};

impl RouteTaken {
    /// Writes the route into a response's metadata.
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        metadata.insert(RouteTaken::HOPS, MetadataValue::from(self.hops));
        if let Some(owner) = &self.owner {
            if let Ok(addr) = owner.addr.parse() {
                metadata.insert(RouteTaken::OWNER, addr);
            }
            if let Ok(id) = owner.id.to_hex().parse() {
                metadata.insert(RouteTaken::OWNER_ID, id);
            }
        }
    }

    /// The route a peer's response reports, if it reports one (peers of the
    /// original protocol do not; malformed values count as absent).
    pub fn read_metadata(metadata: &MetadataMap) -> Option<Self> {
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let hops = text(RouteTaken::HOPS)?.parse().ok()?;
        let owner = match (text(RouteTaken::OWNER), text(RouteTaken::OWNER_ID)) {
            (Some(addr), Some(id)) => u64::from_str_radix(id, 16)
                .ok()
                .map(|id| Member::new(Position(id), addr)),
            _ => None,
        };
        Some(Self { hops, owner })
    }
}

impl From<&NodeSummary> for dht::NodeInfo {
    fn from(s: &NodeSummary) -> Self {
        Self {
            node: Some((&s.me).into()),
            prev: Some((&s.prev).into()),
            next: Some((&s.next).into()),
            state: s.state.clone(),
            keys: s.keys,
            successors: s.successors.iter().map(Into::into).collect(),
            predecessors: s.predecessors.iter().map(Into::into).collect(),
            owned_keys: s.owned_keys,
            replica_keys: s.replica_keys,
            replication_factor: s.replication_factor,
        }
    }
}

impl TryFrom<dht::NodeInfo> for NodeSummary {
    type Error = String;

    fn try_from(info: dht::NodeInfo) -> Result<Self, String> {
        let member = |n: Option<registry::Node>, what: &str| {
            n.map(Member::from)
                .ok_or_else(|| format!("a node's info lacks its {what}"))
        };
        Ok(Self {
            me: member(info.node, "own address")?,
            prev: member(info.prev, "previous neighbour")?,
            next: member(info.next, "next neighbour")?,
            successors: info.successors.into_iter().map(Member::from).collect(),
            predecessors: info.predecessors.into_iter().map(Member::from).collect(),
            state: info.state,
            keys: info.keys,
            owned_keys: info.owned_keys,
            replica_keys: info.replica_keys,
            replication_factor: info.replication_factor,
        })
    }
}
