//! Generated protobuf and gRPC code, fenced into one module, plus the wire
//! forms of the ring's and the store's plain types (`Member`, `Bucket`). It
//! depends on nothing above them: the node's own types convert in
//! `node::rpc::wire`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `registry.proto`: the registry service and the shared `Node` message.
pub mod registry {
    tonic::include_proto!("registry");
}

/// `dht.proto`: the DHT node service.
pub mod dht {
    tonic::include_proto!("dht");
}

/// The encoded descriptor set of every proto (with its imports), for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crustyring_descriptor.bin"));

use crate::ring::{Member, Position};

impl From<&Member> for registry::Node {
    fn from(m: &Member) -> Self {
        Self {
            id: m.id.0,
            addr: m.addr.clone(),
        }
    }
}

impl From<registry::Node> for Member {
    fn from(n: registry::Node) -> Self {
        Member::new(Position(n.id), n.addr)
    }
}

impl From<crate::store::Bucket> for dht::BucketDigest {
    fn from(b: crate::store::Bucket) -> Self {
        Self {
            hash: b.hash,
            count: b.count,
        }
    }
}

impl From<dht::BucketDigest> for crate::store::Bucket {
    fn from(b: dht::BucketDigest) -> Self {
        Self {
            hash: b.hash,
            count: b.count,
        }
    }
}
