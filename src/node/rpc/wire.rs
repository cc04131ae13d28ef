//! The node's domain types in their wire forms: a node's summary as
//! `NodeInfo`, and the route a query took as response metadata. Here, at the
//! edge, rather than in [`crate::proto`], so that the generated code depends
//! on nothing above the ring.

use crate::node::{NodeSummary, RouteTaken};
use crate::proto::{dht, registry};
use crate::ring::{Member, Position};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use tonic::metadata::MetadataMap;

impl RouteTaken {
    /// [`RouteTaken::HOPS`] as a header name, parsed once.
    pub const HOPS_HEADER: HeaderName = HeaderName::from_static(RouteTaken::HOPS);
    /// [`RouteTaken::OWNER`] as a header name, parsed once.
    pub const OWNER_HEADER: HeaderName = HeaderName::from_static(RouteTaken::OWNER);
    /// [`RouteTaken::OWNER_ID`] as a header name, parsed once.
    pub const OWNER_ID_HEADER: HeaderName = HeaderName::from_static(RouteTaken::OWNER_ID);

    /// Writes the route into a response's metadata.
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        self.write_headers(metadata.as_mut());
    }

    /// Writes the route into a response's headers: an HTTP answer's, or a
    /// gRPC answer's metadata (which are its HTTP/2 headers).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(Self::HOPS_HEADER, HeaderValue::from(self.hops));
        if let Some(owner) = &self.owner {
            let (addr, id) = owner_values(owner);
            if let Some(addr) = addr {
                headers.insert(Self::OWNER_HEADER, addr);
            }
            headers.insert(Self::OWNER_ID_HEADER, id);
        }
    }

    /// The route a peer's response reports, if it reports one (peers of the
    /// original protocol do not; malformed values count as absent).
    pub fn read_metadata(metadata: &MetadataMap) -> Option<Self> {
        let headers: &HeaderMap = metadata.as_ref();
        let text = |key: &HeaderName| headers.get(key).and_then(|v| v.to_str().ok());
        let hops = text(&Self::HOPS_HEADER)?.parse().ok()?;
        let owner = match (text(&Self::OWNER_HEADER), text(&Self::OWNER_ID_HEADER)) {
            (Some(addr), Some(id)) => u64::from_str_radix(id, 16)
                .ok()
                .map(|id| Member::new(Position(id), addr)),
            _ => None,
        };
        Some(Self { hops, owner })
    }
}

/// `owner`'s address (if it makes a header value) and ID as header values,
/// made once per owner and thread and cloned after (a reference count): an
/// answer's owner is one of a ring's few nodes, and copying its address and
/// writing its ID in hex for every answer cost a tenth of an HTTP GET's
/// instructions. At most [`OWNERS_KEPT`] owners are kept per thread.
fn owner_values(owner: &Member) -> (Option<HeaderValue>, HeaderValue) {
    type Made = (Member, Option<HeaderValue>, HeaderValue);
    thread_local! {
        static MADE: RefCell<Vec<Made>> = const { RefCell::new(Vec::new()) };
    }
    MADE.with_borrow_mut(|made| {
        if let Some((_, addr, id)) = made.iter().find(|(m, ..)| m == owner) {
            return (addr.clone(), id.clone());
        }
        let addr = HeaderValue::from_str(&owner.addr).ok();
        let id = HeaderValue::try_from(owner.id.to_hex()).expect("hex digits make a header value");
        if made.len() == OWNERS_KEPT {
            made.clear();
        }
        made.push((owner.clone(), addr.clone(), id.clone()));
        (addr, id)
    })
}

/// How many owners' header values [`owner_values`] keeps per thread.
const OWNERS_KEPT: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn written(route: &RouteTaken) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        route.write_metadata(&mut metadata);
        metadata
    }

    #[test]
    fn a_route_reads_back_as_it_was_written_every_time() {
        let route = RouteTaken {
            hops: 1,
            owner: Some(Member::new(Position(0xab), "http://127.0.0.1:7001")),
        };
        // The second answer for the same owner takes the kept header values.
        for _ in 0..2 {
            let metadata = written(&route);
            assert_eq!(RouteTaken::read_metadata(&metadata), Some(route.clone()));
            assert_eq!(
                metadata.get(RouteTaken::OWNER_ID).unwrap(),
                "00000000000000ab"
            );
        }
        let other = RouteTaken {
            hops: 0,
            owner: Some(Member::new(Position(0xab), "http://127.0.0.1:7002")),
        };
        assert_eq!(RouteTaken::read_metadata(&written(&other)), Some(other));
    }

    #[test]
    fn an_owner_whose_address_is_no_header_value_is_named_by_id_alone() {
        let route = RouteTaken {
            hops: 2,
            owner: Some(Member::new(Position(7), "bad\naddress")),
        };
        let metadata = written(&route);
        assert!(metadata.get(RouteTaken::OWNER).is_none());
        assert_eq!(
            metadata.get(RouteTaken::OWNER_ID).unwrap(),
            "0000000000000007"
        );
        // Without the owner's address, the route reports no owner.
        assert_eq!(
            RouteTaken::read_metadata(&metadata),
            Some(RouteTaken {
                hops: 2,
                owner: None
            })
        );
    }

    #[test]
    fn more_owners_than_are_kept_are_all_named_rightly() {
        for n in 0..(OWNERS_KEPT as u64 * 2 + 3) {
            let route = RouteTaken {
                hops: 0,
                owner: Some(Member::new(Position(n), format!("http://10.0.0.1:{n}"))),
            };
            assert_eq!(RouteTaken::read_metadata(&written(&route)), Some(route));
        }
    }
}
