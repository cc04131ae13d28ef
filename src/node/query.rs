//! Queries as the node understands them, whichever door they came in by (gRPC
//! `QueryDht`, `ForwardQuery`, or the HTTP gateway), and their validation against the
//! node's limits.

use super::error::NodeError;
use crate::proto::dht;
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

impl Answer {
    /// The answer a peer's `result` gives for `op`, reached by `route`.
    pub fn from_result(result: dht::QueryResult, op: &Operation, route: RouteTaken) -> Self {
        let version = result.version.as_deref().and_then(Version::from_token);
        let expires = result
            .ttl_ms
            .map(|ms| crate::store::now_micros().saturating_add(ms.saturating_mul(1000)));
        Self {
            outcome: Outcome::from_result(result, op),
            route,
            version,
            expires,
        }
    }
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

fn operation(ty: i32, value: Option<Vec<u8>>) -> Result<Operation, NodeError> {
    match dht::OperationType::try_from(ty) {
        Ok(dht::OperationType::Get) => Ok(Operation::Get),
        Ok(dht::OperationType::Delete) => Ok(Operation::Delete),
        Ok(dht::OperationType::Set) => value.map(Operation::Set).ok_or(NodeError::MissingValue),
        Err(_) => Err(NodeError::UnknownOperation(ty)),
    }
}

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

    /// A client's `QueryDht` request.
    pub fn from_client(q: dht::Query, limits: &Limits) -> Result<Self, NodeError> {
        let op = operation(q.ty, q.value)?;
        let condition = Condition::from_wire(q.if_match.as_deref(), q.if_absent, &op)?;
        let ttl = ttl(q.ttl_ms, &op)?;
        Ok(Self {
            ttl,
            ..Self::new(op, q.key, limits)?.on_condition(condition)
        })
    }

    /// This query, applied only if `condition` holds.
    pub fn on_condition(self, condition: Condition) -> Self {
        Self { condition, ..self }
    }

    /// A peer's (or an original client's) `ForwardQuery` request.
    pub fn from_forward(q: dht::EncodedQuery, limits: &Limits) -> Result<Self, NodeError> {
        let op = operation(q.ty, q.value)?;
        check_op(&op, limits)?;
        let condition = Condition::from_wire(q.if_match.as_deref(), q.if_absent, &op)?;
        let ttl = ttl(q.ttl_ms, &op)?;
        let position = Position(q.key);
        match q.raw_key {
            Some(key) => {
                check_key(&key, limits)?;
                if key_position(&key) != position {
                    return Err(NodeError::PositionMismatch { position });
                }
                Ok(Self {
                    op,
                    position,
                    key: Some(key),
                    hops: q.hops,
                    request_id: None,
                    condition,
                    ttl,
                })
            }
            None if matches!(op, Operation::Set(_)) || condition != Condition::Always => {
                Err(NodeError::MissingRawKey)
            }
            None => Ok(Self {
                op,
                position,
                key: None,
                hops: q.hops,
                request_id: None,
                condition,
                ttl,
            }),
        }
    }

    /// This query, serving the client request `id`.
    pub fn with_request_id(self, id: RequestId) -> Self {
        Self {
            request_id: Some(id),
            ..self
        }
    }

    /// The message that forwards this query one hop further.
    pub fn to_forward(&self) -> dht::EncodedQuery {
        let (ty, value) = match &self.op {
            Operation::Get => (dht::OperationType::Get, None),
            Operation::Delete => (dht::OperationType::Delete, None),
            Operation::Set(v) => (dht::OperationType::Set, Some(v.clone())),
        };
        let (if_match, if_absent) = self.condition.to_wire();
        dht::EncodedQuery {
            ty: ty as i32,
            key: self.position.0,
            value,
            raw_key: self.key.clone(),
            hops: self.hops.saturating_add(1),
            if_match,
            if_absent,
            ttl_ms: self.ttl.map(|t| t.as_millis() as u64),
            request_id: None,
        }
    }
}

/// The longest time to live: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A request's time to live, checked: Set only, 1 ms to [`MAX_TTL`].
fn ttl(ms: Option<u64>, op: &Operation) -> Result<Option<Duration>, NodeError> {
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

fn check_key(key: &[u8], limits: &Limits) -> Result<(), NodeError> {
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

fn check_op(op: &Operation, limits: &Limits) -> Result<(), NodeError> {
    match op {
        Operation::Set(v) if v.len() > limits.max_value_bytes => Err(NodeError::ValueTooLarge {
            len: v.len(),
            max: limits.max_value_bytes,
        }),
        _ => Ok(()),
    }
}

impl From<Outcome> for dht::QueryResult {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Value(v) => Self {
                value: Some(v),
                ..Self::default()
            },
            Outcome::Created => Self::default(),
            Outcome::Absent => Self {
                error: Some(KEY_NOT_PRESENT.to_string()),
                ..Self::default()
            },
        }
    }
}

impl From<Answer> for dht::QueryResult {
    fn from(a: Answer) -> Self {
        Self {
            version: a.version.map(|v| v.token()),
            ttl_ms: a
                .expires
                .map(|at| at.saturating_sub(crate::store::now_micros()).div_ceil(1000)),
            ..a.outcome.into()
        }
    }
}

impl Outcome {
    /// The outcome a peer's `QueryResult` describes, for the query it answered.
    pub fn from_result(r: dht::QueryResult, op: &Operation) -> Self {
        match (r.error, r.value, op) {
            (Some(_), _, _) => Outcome::Absent,
            (None, Some(v), _) => Outcome::Value(v),
            (None, None, Operation::Set(_)) => Outcome::Created,
            // A Get or Delete answered with neither a value nor an error cannot come
            // from a node of ours; read it as "absent" rather than invent a value.
            (None, None, _) => Outcome::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
        }
    }

    fn client(ty: i32, key: &[u8], value: Option<&[u8]>) -> Result<Query, NodeError> {
        Query::from_client(
            dht::Query {
                ty,
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                ..dht::Query::default()
            },
            &limits(),
        )
    }

    #[test]
    fn a_valid_set_is_placed_by_its_key_hash() {
        let q = client(2, b"1", Some(b"v")).unwrap();
        assert_eq!(q.position, key_position(b"1"));
        assert_eq!(q.op, Operation::Set(b"v".to_vec()));
    }

    #[test]
    fn an_empty_value_is_a_value() {
        assert!(client(2, b"1", Some(b"")).is_ok());
    }

    #[test]
    fn malformed_queries_say_what_is_wrong() {
        assert!(matches!(
            client(2, b"1", None),
            Err(NodeError::MissingValue)
        ));
        assert!(matches!(
            client(7, b"1", None),
            Err(NodeError::UnknownOperation(7))
        ));
        assert!(matches!(client(0, b"", None), Err(NodeError::EmptyKey)));
        assert!(matches!(
            client(0, b"123456789", None),
            Err(NodeError::KeyTooLong { len: 9, max: 8 })
        ));
        assert!(matches!(
            client(2, b"k", Some(b"12345")),
            Err(NodeError::ValueTooLarge { len: 5, max: 4 })
        ));
    }

    #[test]
    fn forwards_round_trip_and_count_hops() {
        let q = client(2, b"k", Some(b"v")).unwrap();
        let back = Query::from_forward(q.to_forward(), &limits()).unwrap();
        assert_eq!(back.op, q.op);
        assert_eq!(back.key, q.key);
        assert_eq!(back.hops, 1);
    }

    #[test]
    fn a_forward_whose_key_does_not_hash_to_its_position_is_refused() {
        let mut f = client(0, b"k", None).unwrap().to_forward();
        f.key ^= 1;
        assert!(matches!(
            Query::from_forward(f, &limits()),
            Err(NodeError::PositionMismatch { .. })
        ));
    }

    #[test]
    fn a_position_only_forward_may_read_but_not_write() {
        let get = dht::EncodedQuery {
            ty: 0,
            key: 5,
            ..Default::default()
        };
        assert_eq!(Query::from_forward(get, &limits()).unwrap().key, None);
        let set = dht::EncodedQuery {
            ty: 2,
            key: 5,
            value: Some(vec![1]),
            ..Default::default()
        };
        assert!(matches!(
            Query::from_forward(set, &limits()),
            Err(NodeError::MissingRawKey)
        ));
    }

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

    #[test]
    fn conditions_round_trip_and_bad_ones_are_named() {
        let set = Operation::Set(vec![]);
        for c in [
            Condition::Always,
            Condition::Present,
            Condition::Version(Version { micros: 9, node: 3 }),
            Condition::Absent,
        ] {
            let (m, a) = c.to_wire();
            assert_eq!(Condition::from_wire(m.as_deref(), a, &set).unwrap(), c);
        }
        let bad = |m: Option<&str>, a, op: &Operation| {
            matches!(
                Condition::from_wire(m, a, op),
                Err(NodeError::BadCondition(_))
            )
        };
        assert!(bad(Some("*"), true, &set), "both");
        assert!(bad(Some("zz"), false, &set), "not a version");
        assert!(bad(Some("*"), false, &Operation::Get), "on a read");
        assert!(bad(None, true, &Operation::Delete), "delete if absent");
        // A conditional forward must name its key.
        let mut f = client(2, b"k", Some(b"v"))
            .unwrap()
            .on_condition(Condition::Present)
            .to_forward();
        f.raw_key = None;
        f.ty = 1;
        f.value = None;
        assert!(matches!(
            Query::from_forward(f, &limits()),
            Err(NodeError::MissingRawKey)
        ));
    }

    #[test]
    fn outcomes_map_to_the_original_results() {
        let absent: dht::QueryResult = Outcome::Absent.into();
        assert_eq!(absent.error.as_deref(), Some(KEY_NOT_PRESENT));
        let created: dht::QueryResult = Outcome::Created.into();
        assert_eq!((created.error, created.value), (None, None));
    }
}
