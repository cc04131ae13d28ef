//! Queries in their wire forms: a client's `Query` and a peer's
//! `EncodedQuery` read into a checked [`Query`], a query forwarded one hop
//! further, and answers as `QueryResult`s (the original protocol's: a
//! missing key is an error string). The node's own types, and the checks
//! against its limits, are `node::query`'s.

use crate::node::Node;
use crate::node::batch::MAX_BATCH;
use crate::node::error::NodeError;
use crate::node::query::{
    Answer, Condition, KEY_NOT_PRESENT, Limits, Operation, Outcome, Query, RouteTaken, check_key,
    check_op, ttl,
};
use crate::proto::dht;
use crate::ring::Member;
use crate::ring::{Position, key_position};
use crate::store::Version;
use futures_util::future::join_all;
use tonic::Status;

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

fn operation(ty: i32, value: Option<Vec<u8>>) -> Result<Operation, NodeError> {
    match dht::OperationType::try_from(ty) {
        Ok(dht::OperationType::Get) => Ok(Operation::Get),
        Ok(dht::OperationType::Delete) => Ok(Operation::Delete),
        Ok(dht::OperationType::Set) => value.map(Operation::Set).ok_or(NodeError::MissingValue),
        Err(_) => Err(NodeError::UnknownOperation(ty)),
    }
}

impl Query {
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

/// A `Batch` request of `queries`, each forwarded one hop further.
pub(in crate::node) fn batch_request<'a>(
    queries: impl Iterator<Item = &'a Query>,
) -> dht::BatchRequest {
    dht::BatchRequest {
        queries: queries.map(Query::to_forward).collect(),
    }
}

/// A peer's `Batch`: every query answered through [`Node::execute`].
pub(in crate::node) async fn accept_batch(
    node: &Node,
    request: dht::BatchRequest,
) -> Result<dht::BatchReply, Status> {
    if request.queries.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "a batch holds at most {MAX_BATCH} queries; this one holds {}",
            request.queries.len()
        )));
    }
    let limits = node.config.limits;
    let answers = join_all(request.queries.into_iter().map(|q| async move {
        match Query::from_forward(q, &limits) {
            Ok(query) => node.execute(query).await,
            Err(e) => Err(e),
        }
    }))
    .await;
    Ok(dht::BatchReply {
        answers: answers.into_iter().map(answer_to_wire).collect(),
    })
}

/// One answer of a `Batch` reply.
pub(in crate::node) fn answer_to_wire(answer: Result<Answer, NodeError>) -> dht::BatchAnswer {
    match answer {
        Ok(a) => dht::BatchAnswer {
            hops: a.route.hops,
            owner: a.route.owner.as_ref().map(Into::into),
            result: Some(a.into()),
            ..dht::BatchAnswer::default()
        },
        Err(e) => dht::BatchAnswer {
            code: e.code() as i32,
            current_version: match &e {
                NodeError::PreconditionFailed { current } => {
                    Some(current.map_or_else(|| "-".to_string(), |v| v.token()))
                }
                _ => None,
            },
            message: e.to_string(),
            ..dht::BatchAnswer::default()
        },
    }
}

/// The answer one `Batch` answer gives for `query`.
pub(in crate::node) fn answer_from_wire(
    a: dht::BatchAnswer,
    query: &Query,
) -> Result<Answer, NodeError> {
    result_from_wire(a).map(|(result, route)| Answer::from_result(result, &query.op, route))
}

/// The result and route one `Batch` (or `ForwardBatch`) answer gives, or its
/// query's failure, as a single query's call would have failed.
pub(in crate::node) fn result_from_wire(
    a: dht::BatchAnswer,
) -> Result<(dht::QueryResult, RouteTaken), NodeError> {
    match tonic::Code::from_i32(a.code) {
        tonic::Code::Ok => {
            let route = RouteTaken {
                hops: a.hops,
                owner: a.owner.map(Member::from),
            };
            Ok((a.result.unwrap_or_default(), route))
        }
        tonic::Code::FailedPrecondition if a.current_version.is_some() => {
            Err(NodeError::PreconditionFailed {
                current: a.current_version.as_deref().and_then(Version::from_token),
            })
        }
        code => Err(NodeError::Peer(Status::new(code, a.message))),
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
