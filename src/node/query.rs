//! Queries as the node understands them, whichever door they came in by (gRPC
//! `QueryDht`, `ForwardQuery`, or the HTTP gateway), and their validation against the
//! node's limits. Their gRPC messages, and the answers', are read and
//! written in `rpc::queries`; a condition's two fields (`if_match`,
//! `if_absent`), which the HTTP gateway's headers map to as well, are read
//! here.

use super::error::NodeError;
use crate::request_id::RequestId;
use crate::ring::{Member, Position, key_position};
use crate::store::Version;
use std::time::Duration;

/// Size limits, the same through every API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Limits {
    /// Default longest key: 4 KiB.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
    /// Default largest value: 1 MiB.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

    /// The largest protobuf message a node decodes. Twice the largest valid query
    /// (plus room for framing), so that a query somewhat over a limit still reaches
    /// the validation that names the limit (`INVALID_ARGUMENT`); a grossly oversized
    /// message is refused by the transport unread (`OUT_OF_RANGE`, naming the byte
    /// limit) instead of being buffered.
    pub fn max_message_bytes(&self) -> usize {
        self.max_entry_bytes()
            .saturating_mul(2)
            .saturating_add(64 * 1024)
    }

    /// The largest valid entry: a key and a value at their limits, plus field tags.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_key_bytes
            .saturating_add(self.max_value_bytes)
            .saturating_add(64)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// What to do with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Read the value.
    Get,
    /// Write the value; answers the previous one.
    Set(Vec<u8>),
    /// Remove the key; answers the removed value.
    Delete,
}

/// When a write applies (compare-and-set), decided by the key's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always.
    #[default]
    Always,
    /// Only if the key is present (`If-Match: *`).
    Present,
    /// Only if the key's current version is this one (`If-Match`).
    Version(Version),
    /// Only if the key is absent (`If-None-Match: *`; Set only).
    Absent,
}

impl Condition {
    /// The condition a request's `if_match` and `if_absent` fields name, for
    /// operation `op`.
    pub fn from_wire(
        if_match: Option<&str>,
        if_absent: bool,
        op: &Operation,
    ) -> Result<Self, NodeError> {
        let condition = match (if_match, if_absent) {
            (None, false) => return Ok(Condition::Always),
            (Some(_), true) => return Err(NodeError::BadCondition(
                "if_match and if_absent cannot both be set: a key cannot be both".into(),
            )),
            (Some("*"), false) => Condition::Present,
            (Some(token), false) => Condition::Version(Version::from_token(token).ok_or_else(|| {
                NodeError::BadCondition(format!(
                    "{token:?} is not a version: a version is the 32 hex digits a read answers (or * for any)"
                ))
            })?),
            (None, true) => Condition::Absent,
        };
        match (op, condition) {
            (Operation::Get, _) => Err(NodeError::BadCondition(
                "conditions apply to Set and Delete only".into(),
            )),
            (Operation::Delete, Condition::Absent) => Err(NodeError::BadCondition(
                "a Delete on condition that the key is absent would never apply".into(),
            )),
            _ => Ok(condition),
        }
    }

    /// The `(if_match, if_absent)` fields that carry this condition.
    pub fn to_wire(self) -> (Option<String>, bool) {
        match self {
            Condition::Always => (None, false),
            Condition::Present => (Some("*".into()), false),
            Condition::Version(v) => (Some(v.token()), false),
            Condition::Absent => (None, true),
        }
    }

    /// Whether a write on this condition applies to a key whose current
    /// version is `current` (`None`: absent or deleted).
    pub fn holds(self, current: Option<Version>) -> bool {
        match self {
            Condition::Always => true,
            Condition::Present => current.is_some(),
            Condition::Version(v) => current == Some(v),
            Condition::Absent => current.is_none(),
        }
    }
}

/// A validated query, routed by `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The operation.
    pub op: Operation,
    /// The key's ring position.
    pub position: Position,
    /// The key as the user wrote it; `None` only for position-only `ForwardQuery`
    /// calls from clients of the original protocol.
    pub key: Option<Vec<u8>>,
    /// How many nodes have forwarded this query already.
    pub hops: u32,
    /// The client request this query serves, carried on its forwards and
    /// replica writes (`None`: a query made up inside the node).
    pub request_id: Option<RequestId>,
    /// When a write applies.
    pub condition: Condition,
    /// A Set's time to live: the key expires that long after the owner
    /// applies it.
    pub ttl: Option<Duration>,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Get: the value; Delete: the removed value; Set: the replaced value.
    Value(Vec<u8>),
    /// Set of a new key: there was no previous value.
    Created,
    /// Get or Delete of a key that is not there.
    Absent,
}

/// An outcome, and the route the query took to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What the owner answered.
    pub outcome: Outcome,
    /// How the query got there.
    pub route: RouteTaken,
    /// The key's version after the query: what a Get read, or what a Set
    /// wrote (`None`: the key is absent, or a peer of the original protocol
    /// answered).
    pub version: Option<Version>,
    /// When the key expires (microseconds since the epoch), if it does.
    pub expires: Option<u64>,
}

/// How a query reached the node that answered it from its store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTaken {
    /// How many times it was forwarded after entering the ring.
    pub hops: u32,
    /// The node that answered from its store; `None` when a peer that does not
    /// report routes (the original protocol's) answered.
    pub owner: Option<Member>,
}

impl RouteTaken {
    /// The name a route's hop count travels under, as gRPC metadata and as an
    /// HTTP header: forwards after the query entered the ring (0: the node
    /// asked owned the key).
    pub const HOPS: &'static str = "x-crusty-hops";
    /// The same for the owner's address.
    pub const OWNER: &'static str = "x-crusty-owner";
    /// The same for the owner's ID (16 hex digits).
    pub const OWNER_ID: &'static str = "x-crusty-owner-id";
}

/// The message of a missing key, as the original protocol words it.
pub const KEY_NOT_PRESENT: &str = "Key not present in database.";

impl Query {
    /// A query for the raw `key`, validated against `limits`.
    pub fn new(op: Operation, key: Vec<u8>, limits: &Limits) -> Result<Self, NodeError> {
        check_key(&key, limits)?;
        check_op(&op, limits)?;
        Ok(Self {
            op,
            position: key_position(&key),
            key: Some(key),
            hops: 0,
            request_id: None,
            condition: Condition::Always,
            ttl: None,
        })
    }

    /// This query, applied only if `condition` holds.
    pub fn on_condition(self, condition: Condition) -> Self {
        Self { condition, ..self }
    }

    /// This query, serving the client request `id`.
    pub fn with_request_id(self, id: RequestId) -> Self {
        Self {
            request_id: Some(id),
            ..self
        }
    }
}

/// The longest time to live: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A request's time to live, checked: Set only, 1 ms to [`MAX_TTL`].
pub(in crate::node) fn ttl(ms: Option<u64>, op: &Operation) -> Result<Option<Duration>, NodeError> {
    let Some(ms) = ms else { return Ok(None) };
    if !matches!(op, Operation::Set(_)) {
        return Err(NodeError::BadTtl(
            "a time to live applies to Set only".into(),
        ));
    }
    let ttl = Duration::from_millis(ms);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(NodeError::BadTtl(format!(
            "{ms} ms: a time to live is 1 ms to {} s",
            MAX_TTL.as_secs()
        )));
    }
    Ok(Some(ttl))
}

pub(in crate::node) fn check_key(key: &[u8], limits: &Limits) -> Result<(), NodeError> {
    if key.is_empty() {
        return Err(NodeError::EmptyKey);
    }
    if key.len() > limits.max_key_bytes {
        return Err(NodeError::KeyTooLong {
            len: key.len(),
            max: limits.max_key_bytes,
        });
    }
    Ok(())
}

pub(in crate::node) fn check_op(op: &Operation, limits: &Limits) -> Result<(), NodeError> {
    match op {
        Operation::Set(v) if v.len() > limits.max_value_bytes => Err(NodeError::ValueTooLarge {
            len: v.len(),
            max: limits.max_value_bytes,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_travel_as_32_hex_digits() {
        let v = Version {
            micros: 1_700_000_000_000_000,
            node: u64::MAX,
        };
        assert_eq!(v.token().len(), 32);
        assert_eq!(Version::from_token(&v.token()), Some(v));
        assert_eq!(Version::from_token("12"), None);
        assert_eq!(Version::from_token(&"g".repeat(32)), None);
    }

    #[test]
    fn conditions_hold_on_the_version_they_name() {
        let v = Version { micros: 5, node: 1 };
        let w = Version { micros: 6, node: 1 };
        assert!(Condition::Always.holds(None));
        assert!(Condition::Present.holds(Some(v)) && !Condition::Present.holds(None));
        assert!(Condition::Version(v).holds(Some(v)));
        assert!(!Condition::Version(v).holds(Some(w)) && !Condition::Version(v).holds(None));
        assert!(Condition::Absent.holds(None) && !Condition::Absent.holds(Some(v)));
    }
}
