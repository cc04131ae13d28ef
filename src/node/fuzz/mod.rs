//! Hostile input from peers, fuzzed: arbitrary bytes decoded as each peer
//! message (`prost::Message::decode`) and converted to their domain types give
//! a value that keeps its invariants or a clear error (`INVALID_ARGUMENT`),
//! never a panic; conversions meant to be lossless round-trip; arbitrary
//! sequences of `HandOffChunk` messages are taken whole or change nothing; and
//! the node's RPC handlers (`Replicate`, `ListRange`, `Batch`) answer whatever
//! they are sent with a value or an error.
//!
//! Proptest, not cargo-fuzz: it runs on stable, in every `cargo test`, for a
//! bounded time ([`crate::fuzzing`] sets the cases a property runs). Raise it for a longer hunt:
//! `PROPTEST_CASES=20000 cargo test --lib fuzz`.
//!
//! `wire`: each message decoded and converted, and round trips; `handlers`:
//! the RPC handlers of a node in memory fed arbitrary input. The strategies
//! here make peer input: valid, or wrong in the ways a peer could be.

mod handlers;
mod wire;

use super::listing::{RangeAsk, check_reply};
use super::membership::handoff::HandOffHeader;
use super::query::{Answer, Condition, Limits, MAX_TTL, Operation, Outcome, Query, RouteTaken};
use super::rpc::entries::{entry_from_wire, wire_size};
use super::rpc::hand_off::header;
use super::rpc::queries::{answer_from_wire, answer_to_wire};
use super::rpc::wire::range_reply_from_wire;
use super::rpc::wire::{entry_of_event as entry_of, watch_event as event};
use super::view::{NodeState, View};
use super::watching::{Watched, resume_after};
use super::{Node, NodeConfig, NodeError, NodeSummary};
pub(crate) use crate::fuzzing::config;
use crate::proto::{dht, registry};
use crate::ring::{Arc as RingArc, Member, Position, key_position};
use crate::store::{Bucket, Entry, MemoryStore, Store, Version, bucket_count, now_micros};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Small limits, so that over-limit input is cheap to make.
pub(crate) fn limits() -> Limits {
    Limits {
        max_key_bytes: 16,
        max_value_bytes: 64,
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..=16)
}

fn version() -> impl Strategy<Value = Version> {
    (0..=now_micros(), any::<u64>()).prop_map(|(micros, node)| Version { micros, node })
}

/// A valid entry within [`limits`]: a value or a tombstone (which never
/// expires on the wire).
fn entry() -> impl Strategy<Value = Entry> {
    (
        key(),
        proptest::option::of(vec(any::<u8>(), 0..=64)),
        version(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(key, value, version, expires)| Entry {
            position: key_position(&key),
            expires: expires.filter(|_| value.is_some()),
            key,
            value,
            version,
        })
}

/// A peer's entry: valid, or wrong in one of the ways a peer could be.
fn wire_entry() -> impl Strategy<Value = (dht::KeyValueEntry, bool)> {
    (entry(), 0..6u8).prop_map(|(e, flaw)| {
        let mut wire = dht::KeyValueEntry::from(e);
        match flaw {
            0 => wire.raw_key = None,
            1 => wire.key = wire.key.wrapping_add(1),
            2 => wire.value = vec![0; 65],
            3 => wire.version_micros = u64::MAX,
            _ => return (wire, true),
        }
        (wire, false)
    })
}

fn member() -> impl Strategy<Value = Member> {
    (any::<u64>(), "[a-z0-9:/.]{0,24}").prop_map(|(id, addr)| Member::new(Position(id), addr))
}

pub(crate) fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Get),
        Just(Operation::Delete),
        vec(any::<u8>(), 0..=64).prop_map(Operation::Set),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::Always),
        Just(Condition::Present),
        Just(Condition::Absent),
        version().prop_map(Condition::Version),
    ]
}

/// Whether `condition` may guard `op` (what `Condition::from_wire` accepts).
pub(crate) fn guards(condition: Condition, op: &Operation) -> bool {
    match (op, condition) {
        (_, Condition::Always) => true,
        (Operation::Get, _) | (Operation::Delete, Condition::Absent) => false,
        _ => true,
    }
}
