//! `POST /batch`: several gets, puts and deletes in one request, each answered
//! on its own (not atomic across keys), through
//! [`Node::batch`](crate::node::Node::batch), which sends each owner its
//! share in one call.

use super::keys::{Encoding, encode, parse_ttl};
use super::problem::{ApiError, Problem, body_rejected};
use crate::node::{
    Answer, Condition, Limits, MAX_BATCH, Node, NodeError, Operation, Outcome, Query,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// What one operation of a batch does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchOpKind {
    /// Read the key.
    #[default]
    Get,
    /// Write the value.
    Put,
    /// Delete the key.
    Delete,
}

/// One operation of a batch.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOp {
    /// What to do.
    pub op: BatchOpKind,
    /// The key.
    pub key: String,
    /// How `key` is written (default `utf8`; `base64` for bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_encoding: Option<Encoding>,
    /// The value, for `put`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is written (default `utf8`; `base64` for bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// For `put`: a time to live (`30s`, `10m`, ...).
    #[schema(pattern = "^[0-9]+(ms|s|m|h|d)?$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// For `put` and `delete`: apply only on this version (or `*`: if present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// For `put`: apply only if the key is absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_absent: bool,
}

/// A batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ops": [
    {"op": "put", "key": "a", "value": "1"},
    {"op": "get", "key": "b"},
    {"op": "delete", "key": "c"}
]}))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations, 1 to 1000.
    #[schema(min_items = 1, max_items = 1000)]
    pub ops: Vec<BatchOp>,
}

/// What one operation of a batch got.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// The status the operation would have had on its own (200, 201, 404,
    /// 412, 400, 503, ...).
    pub status: u16,
    /// The value (a `get`'s, or what a `put` or `delete` replaced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The key's version after the operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What went wrong, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Forwards after the batch entered the ring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// The node that answered from its store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The results, one per operation, in order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One per operation, in the order they were sent.
    pub results: Vec<BatchResult>,
}

/// Runs several operations, each answered on its own.
#[utoipa::path(
    post,
    path = "/batch",
    tag = "keys",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per operation, in order; each has the status it would have had alone. Not atomic: some may fail while others apply.", body = BatchResponse),
        (status = 400, description = "The body is not a batch (bad JSON, no operations, over 1000).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within --body-timeout-ms of the headers; nothing was run.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over --max-value-bytes.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn run_batch(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    // JSON whatever the content type says (curl -d sends a form's).
    let body = body.map_err(|e| body_rejected(e, node.config()))?;
    let batch: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadBody(format!("the body is not a batch: {e}")))?;
    if batch.ops.is_empty() || batch.ops.len() > MAX_BATCH {
        return Err(NodeError::BadBatch(format!(
            "{} operations: a batch holds 1 to {MAX_BATCH}",
            batch.ops.len()
        ))
        .into());
    }
    // The valid queries go to the node; each operation keeps its place, and
    // whether it was a put (an absent previous value then means "created").
    let mut valid = Vec::new();
    let mut places: Vec<Result<bool, NodeError>> = Vec::new();
    for op in batch.ops {
        places.push(query(op, &node.config().limits).map(|q| {
            let put = matches!(q.op, Operation::Set(_));
            valid.push(q);
            put
        }));
    }
    let mut answers = node.batch(valid).await.into_iter();
    let results = places
        .into_iter()
        .map(|place| match place {
            Ok(put) => match answers.next() {
                Some(answer) => result(put, answer),
                None => failed(NodeError::BadBatch(
                    "the node answered fewer queries than it was given".into(),
                )),
            },
            Err(e) => failed(e),
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}

fn bytes(text: String, encoding: Option<Encoding>, what: &str) -> Result<Vec<u8>, NodeError> {
    match encoding.unwrap_or(Encoding::Utf8) {
        Encoding::Utf8 => Ok(text.into_bytes()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| NodeError::BadBatch(format!("the {what} is not base64: {e}"))),
    }
}

/// The query one operation asks for, within `limits`.
pub(super) fn query(op: BatchOp, limits: &Limits) -> Result<Query, NodeError> {
    let key = bytes(op.key, op.key_encoding, "key")?;
    let operation = match (op.op, op.value) {
        (BatchOpKind::Get, None) => Operation::Get,
        (BatchOpKind::Delete, None) => Operation::Delete,
        (BatchOpKind::Put, Some(v)) => Operation::Set(bytes(v, op.encoding, "value")?),
        (BatchOpKind::Put, None) => {
            return Err(NodeError::BadBatch("a put needs a value".into()));
        }
        (_, Some(_)) => {
            return Err(NodeError::BadBatch("only a put takes a value".into()));
        }
    };
    let condition = Condition::from_wire(op.if_match.as_deref(), op.if_absent, &operation)?;
    let ttl = match (&operation, op.ttl) {
        (_, None) => None,
        (Operation::Set(_), Some(t)) => Some(parse_ttl(&t)?),
        (_, Some(_)) => {
            return Err(NodeError::BadTtl(
                "a time to live applies to put only".into(),
            ));
        }
    };
    Ok(Query {
        ttl,
        ..Query::new(operation, key, limits)?.on_condition(condition)
    })
}

/// One operation's result.
fn result(put: bool, answer: Result<Answer, NodeError>) -> BatchResult {
    let a = match answer {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let status = match (&a.outcome, put) {
        (Outcome::Absent, true) | (Outcome::Created, _) => StatusCode::CREATED,
        (Outcome::Absent, _) => StatusCode::NOT_FOUND,
        (Outcome::Value(_), _) => StatusCode::OK,
    };
    let (value, encoding) = match a.outcome {
        Outcome::Value(v) => {
            let (v, e) = encode(&v);
            (Some(v), Some(e))
        }
        _ => (None, None),
    };
    BatchResult {
        status: status.as_u16(),
        value,
        encoding,
        version: a.version.map(|v| v.token()),
        detail: None,
        hops: Some(a.route.hops),
        owner: a.route.owner.map(|o| o.addr),
    }
}

fn failed(e: NodeError) -> BatchResult {
    let e = ApiError::Node(e);
    BatchResult {
        status: e.status().as_u16(),
        value: None,
        encoding: None,
        version: None,
        detail: Some(e.to_string()),
        hops: None,
        owner: None,
    }
}
