//! `PUT`, `GET` (and `HEAD`) and `DELETE /keys/{key}`: the same query path as gRPC
//! `QueryDht`, through [`Node::execute`].

use super::observe::{Observed, observe};
use super::problem::{ApiError, Problem, body_rejected};
use super::watch::LastEventId;
use crate::metrics::Op;
use crate::node::{Answer, Condition, Node, NodeError, Operation, Outcome, Query, RouteTaken};
use crate::request_id::RequestId;
use crate::ring::Position;
use crate::store::Version;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode, percent_encode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// How a byte string is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are valid UTF-8 and written as they are.
    Utf8,
    /// The bytes are not UTF-8 and written in standard base64.
    Base64,
}

/// `bytes` as JSON text, and how it is encoded.
pub fn encode(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), Encoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

/// A key and its value.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "key": "1", "key_encoding": "utf8",
    "value": "Ru1nnAfPu3Ya4v", "encoding": "utf8",
    "position": "6b86b273ff34fce1", "version": "00064a1b2c3d4e5f6b86b273ff34fce1"
}))]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// How `key` is encoded.
    pub key_encoding: Encoding,
    /// The value.
    pub value: String,
    /// How `value` is encoded.
    pub encoding: Encoding,
    /// The key's ring position, 16 hex digits.
    pub position: String,
    /// The version of the value (32 hex digits; also the `ETag`), for
    /// compare-and-set with `If-Match`. Absent on a delete's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How long the key has left to live, in milliseconds, if it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A value and how it is encoded.
#[derive(Debug, Serialize, ToSchema)]
pub struct EncodedValue {
    /// The value.
    pub value: String,
    /// How `value` is encoded.
    pub encoding: Encoding,
}

/// What a `PUT` did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "key": "1", "key_encoding": "utf8", "created": true,
    "position": "6b86b273ff34fce1", "previous": null,
    "version": "00064a1b2c3d4e5f6b86b273ff34fce1"
}))]
pub struct PutResult {
    /// The key.
    pub key: String,
    /// How `key` is encoded.
    pub key_encoding: Encoding,
    /// Whether the key is new (201) rather than replaced (200).
    pub created: bool,
    /// The key's ring position, 16 hex digits.
    pub position: String,
    /// The value that was replaced, if any.
    pub previous: Option<EncodedValue>,
    /// The version written (32 hex digits; also the `ETag`).
    pub version: String,
    /// The time to live the key was written with, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Options of `PUT /keys/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutOptions {
    /// A time to live: the key reads as absent on every node once it has
    /// passed, and is purged. A number and a unit (`500ms`, `30s`, `10m`,
    /// `2h`, `7d`; a bare number is seconds), up to ten years.
    #[param(example = "30s", pattern = "^[0-9]+(ms|s|m|h|d)?$")]
    pub ttl: Option<String>,
}

/// The header that says how long a key read has left to live.
pub const TTL_HEADER: &str = "x-crusty-ttl-ms";

/// A time to live as `PUT ?ttl=` writes it.
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, NodeError> {
    let bad = || {
        NodeError::BadTtl(format!(
            "ttl={text:?}: write a number and a unit, e.g. 500ms, 30s, 10m, 2h or 7d"
        ))
    };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    let ttl = std::time::Duration::from_millis(ms);
    if ttl.is_zero() || ttl > crate::node::MAX_TTL {
        return Err(NodeError::BadTtl(format!(
            "ttl={text}: a time to live is 1 ms to {} days",
            crate::node::MAX_TTL.as_secs() / 86_400
        )));
    }
    Ok(ttl)
}

/// The milliseconds left until `expires`.
fn ttl_left(expires: Option<u64>) -> Option<u64> {
    let now = crate::store::now_micros();
    expires.map(|at| at.saturating_sub(now).div_ceil(1000))
}

/// Compare-and-set on a write (`PUT`, `DELETE`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Conditions {
    /// Apply only if the key's version is this one (the `ETag` or `version`
    /// a read answered, quoted or not), or, with `*`, only if the key is
    /// present. Otherwise 412 with the current version in `ETag`.
    #[param(rename = "If-Match", pattern = "^(\\*|\"?[0-9a-f]{32}\"?)$")]
    pub if_match: Option<String>,
    /// `*`: a `PUT` applies only if the key is absent (create only).
    #[param(rename = "If-None-Match", pattern = "^\\*$")]
    pub if_none_match: Option<String>,
}

/// `version` as an HTTP entity tag.
pub fn etag(version: Version) -> HeaderValue {
    let mut tag = [b'"'; 34];
    tag[1..33].copy_from_slice(&version.hex());
    HeaderValue::from_bytes(&tag).expect("hex digits make a header value")
}

/// The condition the `If-Match` and `If-None-Match` headers set on `op`.
pub(super) fn condition(headers: &HeaderMap, op: &Operation) -> Result<Condition, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<&str>, ApiError> {
        headers
            .get(&name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.to_str().map(str::trim).map_err(|_| {
                    NodeError::BadCondition(format!("the {name} header is not visible ASCII"))
                })
            })
            .transpose()
            .map_err(ApiError::from)
    };
    let if_match = match text(header::IF_MATCH)? {
        None => None,
        Some(v) if v.starts_with("W/") => {
            return Err(NodeError::BadCondition(
                "If-Match with a weak entity tag (W/...) cannot guard a write: send the strong tag"
                    .into(),
            )
            .into());
        }
        Some(v) if v.contains(',') => {
            return Err(NodeError::BadCondition(
                "If-Match takes one entity tag (or *), not a list".into(),
            )
            .into());
        }
        Some(v) => Some(v.trim_matches('"')),
    };
    let if_absent = match text(header::IF_NONE_MATCH)? {
        None => false,
        Some("*") => true,
        Some(_) => {
            return Err(NodeError::BadCondition(
                "a write takes If-None-Match: * only (create if absent)".into(),
            )
            .into());
        }
    };
    Ok(Condition::from_wire(if_match, if_absent, op)?)
}

/// `response` with `version` as its `ETag`.
fn with_etag(mut response: Response, version: Option<Version>) -> Response {
    if let Some(v) = version {
        response.headers_mut().insert(header::ETAG, etag(v));
    }
    response
}

/// The key in a path: `/keys/{key}`, `/ring/owner/{key}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyParam {
    /// The key, percent-encoded (`a%2Fb` is the key `a/b`; a raw `/keys/a/b` too).
    #[param(example = "1")]
    pub key: String,
}

/// The request ID a client may send (`x-request-id`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct RequestIdHeader {
    /// The request's ID (1 to 128 visible ASCII characters, no commas): carried
    /// on the request's forwards and replica writes, logged with its route,
    /// and echoed in the answer's `x-request-id`. One is made up if none is sent.
    #[param(
        rename = "x-request-id",
        example = "checkout-7f3a",
        pattern = "^[!-+\\--~]{1,128}$"
    )]
    pub x_request_id: Option<String>,
}

/// Options of `GET /keys/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetOptions {
    /// `true`: answer the value's bytes alone (`application/octet-stream`).
    #[param(example = false)]
    pub raw: Option<bool>,
    /// `true`: the key's changes as Server-Sent Events (`text/event-stream`;
    /// `event: put` or `delete`, `id` the version), starting with its current
    /// state, following its owner as the ring changes.
    #[param(example = false)]
    pub watch: Option<bool>,
    /// With `watch`: resume after this version (an event's `id`; a
    /// `Last-Event-ID` header does the same).
    #[param(pattern = "^[0-9a-f]{32}$")]
    pub since: Option<String>,
}

/// The key bytes named by the path after `prefix`, percent-decoded.
pub fn key_from_path(uri: &Uri, prefix: &str) -> Result<Vec<u8>, ApiError> {
    let segment = uri
        .path()
        .strip_prefix(prefix)
        .unwrap_or_default()
        .as_bytes();
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'%' {
            let hex = segment.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(ApiError::BadPercentEncoding { at: i });
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode(segment).collect())
}

fn query(op: Operation, key: Vec<u8>, node: &Node, id: RequestId) -> Result<Query, ApiError> {
    Ok(Query::new(op, key, &node.config().limits)?.with_request_id(id))
}

/// `response` with the route the query took in its headers.
fn with_route(mut response: Response, route: &RouteTaken) -> Response {
    route.write_headers(response.headers_mut());
    response
}

/// How many headers a key's answer ends with: its content type and length,
/// the route (3), `ETag`, the request ID, a time to live, CORS (3 or 4).
const ANSWER_HEADERS: usize = 13;

/// An answer of `content_type` whose header map has room for every header it
/// will carry, so that it is allocated once rather than grown on the way.
fn answer_of(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut response = Response::new(body.into());
    *response.headers_mut() = headers;
    response
}

/// A JSON answer, its header map grown once to take every header it will
/// carry (see [`answer_of`]).
fn json_answer(status: StatusCode, value: &impl Serialize) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    // It holds its content type already.
    response.headers_mut().reserve(ANSWER_HEADERS - 1);
    response
}

fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn key_value(
    key: &[u8],
    position: Position,
    value: &[u8],
    version: Option<Version>,
    ttl_ms: Option<u64>,
) -> KeyValue {
    let (key, key_encoding) = encode(key);
    let (value, encoding) = encode(value);
    KeyValue {
        key,
        key_encoding,
        value,
        encoding,
        position: position.to_hex(),
        version: version.map(|v| v.token()),
        ttl_ms,
    }
}

/// Reads a key.
#[utoipa::path(
    get,
    path = "/keys/{key}",
    tag = "keys",
    params(KeyParam, GetOptions, RequestIdHeader),
    responses(
        (status = 200, description = "The value (JSON; or its bytes alone with `?raw=true`; or, with `?watch=true`, its changes as Server-Sent Events).", body = KeyValue,
            content((KeyValue = "application/json"), (Vec<u8> = "application/octet-stream"), (super::watch::WatchEvent = "text/event-stream")),
            headers(
                ("x-crusty-hops" = u32, description = "How many times the request was forwarded after it entered the ring."),
                ("x-crusty-owner" = String, description = "The address of the node that answered from its store."),
                ("x-crusty-owner-id" = String, description = "That node's ID, 16 hex digits."))),
        (status = 400, description = "Bad key or query string.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key is not present.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key's owner is unreachable.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The key's owner did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_key(
    State(node): State<Arc<Node>>,
    Observed(id): Observed,
    uri: Uri,
    LastEventId(last_event): LastEventId,
    options: Result<UrlQuery<GetOptions>, QueryRejection>,
) -> Response {
    if let Ok(UrlQuery(GetOptions {
        watch: Some(true),
        since,
        ..
    })) = &options
    {
        let last_event = last_event.as_ref().and_then(|v| v.to_str().ok());
        let watched = key_from_path(&uri, "/keys/").and_then(|key| {
            // The key is checked as a read of it would be.
            Query::new(Operation::Get, key.clone(), &node.config().limits)?;
            let since = super::watch::resume_from(last_event, since.as_deref())?;
            Ok((key, since))
        });
        return match watched {
            Ok((key, since)) => super::watch::stream(&node, key, since),
            Err(e) => e.into_response(),
        };
    }
    observe(node.clone(), Op::Get, id, |id| get(node, id, uri, options)).await
}

async fn get(
    node: Arc<Node>,
    id: RequestId,
    uri: Uri,
    options: Result<UrlQuery<GetOptions>, QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(options) = options.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let key = key_from_path(&uri, "/keys/")?;
    let q = query(Operation::Get, key.clone(), &node, id)?;
    let position = q.position;
    let Answer {
        outcome,
        route,
        version,
        expires,
    } = node.execute(q).await?;
    // Once, so that the header and the body say the same.
    let ttl_ms = ttl_left(expires);
    let mut response = match outcome {
        Outcome::Value(value) if options.raw == Some(true) => {
            answer_of("application/octet-stream", value)
        }
        Outcome::Value(value) => json_answer(
            StatusCode::OK,
            &key_value(&key, position, &value, version, ttl_ms),
        ),
        Outcome::Absent | Outcome::Created => ApiError::KeyNotFound(shown(&key)).into_response(),
    };
    if let Some(ms) = ttl_ms {
        response
            .headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ms));
    }
    Ok(with_route(with_etag(response, version), &route))
}

/// Writes a key: the body is the value, as raw bytes.
#[utoipa::path(
    put,
    path = "/keys/{key}",
    tag = "keys",
    params(KeyParam, PutOptions, Conditions, RequestIdHeader),
    request_body(content = String, content_type = "text/plain", description = "The value, as raw bytes (any content type).", example = "Ru1nnAfPu3Ya4v"),
    responses(
        (status = 201, description = "The key was created.", body = PutResult,
            headers(
                ("location" = String, description = "The key's URL."),
                ("x-crusty-hops" = u32, description = "How many times the request was forwarded after it entered the ring."),
                ("x-crusty-owner" = String, description = "The address of the node that answered from its store."),
                ("x-crusty-owner-id" = String, description = "That node's ID, 16 hex digits."))),
        (status = 200, description = "The key's value was replaced; `previous` holds the old one.", body = PutResult,
            example = json!({"key": "1", "key_encoding": "utf8", "created": false, "position": "6b86b273ff34fce1",
                             "previous": {"value": "Ru1nnAfPu3Ya4v", "encoding": "utf8"}})),
        (status = 400, description = "Bad key.", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The value did not arrive within --body-timeout-ms of the headers; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The condition (`If-Match`, `If-None-Match`) does not hold; nothing was written. `ETag` holds the key's current version, if it is present.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The value is over the limit.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key's owner is unreachable.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The key's owner did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_key(
    State(node): State<Arc<Node>>,
    Observed(id): Observed,
    uri: Uri,
    headers: HeaderMap,
    options: Result<UrlQuery<PutOptions>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    observe(node.clone(), Op::Set, id, |id| {
        put(node, id, uri, headers, options, body)
    })
    .await
}

async fn put(
    node: Arc<Node>,
    id: RequestId,
    uri: Uri,
    headers: HeaderMap,
    options: Result<UrlQuery<PutOptions>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(options) = options.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let ttl = options.ttl.as_deref().map(parse_ttl).transpose()?;
    let key = key_from_path(&uri, "/keys/")?;
    let value = body.map_err(|e| body_rejected(e, node.config()))?;
    let op = Operation::Set(value.to_vec());
    let condition = condition(&headers, &op)?;
    let q = Query {
        ttl,
        ..query(op, key.clone(), &node, id)?.on_condition(condition)
    };
    let position = q.position;
    let Answer {
        outcome,
        route,
        version,
        ..
    } = node.execute(q).await?;
    let (k, key_encoding) = encode(&key);
    let mut result = PutResult {
        key: k,
        key_encoding,
        created: true,
        position: position.to_hex(),
        previous: None,
        version: version.map(|v| v.token()).unwrap_or_default(),
        ttl_ms: ttl.map(|t| t.as_millis() as u64),
    };
    if let Outcome::Value(previous) = outcome {
        let (value, encoding) = encode(&previous);
        result.created = false;
        result.previous = Some(EncodedValue { value, encoding });
        let response = with_etag(json_answer(StatusCode::OK, &result), version);
        return Ok(with_route(response, &route));
    }
    let mut response = json_answer(StatusCode::CREATED, &result);
    let location = format!("/keys/{}", percent_encode(&key, NON_ALPHANUMERIC));
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_route(with_etag(response, version), &route))
}

/// Deletes a key; answers what was deleted.
#[utoipa::path(
    delete,
    path = "/keys/{key}",
    tag = "keys",
    params(KeyParam, Conditions, RequestIdHeader),
    responses(
        (status = 200, description = "The key was deleted; this was its value.", body = KeyValue,
            headers(
                ("x-crusty-hops" = u32, description = "How many times the request was forwarded after it entered the ring."),
                ("x-crusty-owner" = String, description = "The address of the node that answered from its store."),
                ("x-crusty-owner-id" = String, description = "That node's ID, 16 hex digits."))),
        (status = 400, description = "Bad key.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The condition (`If-Match`) does not hold; nothing was deleted. `ETag` holds the key's current version, if it is present.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key is not present.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key's owner is unreachable.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The key's owner did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_key(
    State(node): State<Arc<Node>>,
    Observed(id): Observed,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    observe(node.clone(), Op::Delete, id, |id| {
        delete(node, id, uri, headers)
    })
    .await
}

async fn delete(
    node: Arc<Node>,
    id: RequestId,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, "/keys/")?;
    let condition = condition(&headers, &Operation::Delete)?;
    let q = query(Operation::Delete, key.clone(), &node, id)?.on_condition(condition);
    let position = q.position;
    let Answer { outcome, route, .. } = node.execute(q).await?;
    let response = match outcome {
        Outcome::Value(value) => json_answer(
            StatusCode::OK,
            &key_value(&key, position, &value, None, None),
        ),
        Outcome::Absent | Outcome::Created => ApiError::KeyNotFound(shown(&key)).into_response(),
    };
    Ok(with_route(response, &route))
}

/// `/keys/` with no key.
pub async fn empty_key() -> ApiError {
    ApiError::Node(NodeError::EmptyKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &str) -> Result<Vec<u8>, ApiError> {
        key_from_path(&path.parse().unwrap(), "/keys/")
    }

    #[test]
    fn percent_encoded_keys_decode_to_the_bytes_meant() {
        assert_eq!(decode("/keys/a%2Fb").unwrap(), b"a/b");
        assert_eq!(decode("/keys/a/b").unwrap(), b"a/b");
        assert_eq!(
            decode("/keys/hello%20w%C3%B6rld").unwrap(),
            "hello wörld".as_bytes()
        );
        assert_eq!(decode("/keys/%FF%00").unwrap(), vec![0xff, 0]);
        assert_eq!(decode("/keys/a+b").unwrap(), b"a+b");
    }

    #[test]
    fn bad_percent_encoding_is_refused_with_its_offset() {
        assert!(matches!(
            decode("/keys/a%G1"),
            Err(ApiError::BadPercentEncoding { at: 1 })
        ));
        assert!(matches!(
            decode("/keys/ab%4"),
            Err(ApiError::BadPercentEncoding { at: 2 })
        ));
        assert!(matches!(
            decode("/keys/%"),
            Err(ApiError::BadPercentEncoding { at: 0 })
        ));
    }

    #[test]
    fn values_are_utf8_when_they_can_be_and_base64_otherwise() {
        assert_eq!(encode(b"abc"), ("abc".to_string(), Encoding::Utf8));
        assert_eq!(
            encode(&[0xff, 0x00]),
            ("/wA=".to_string(), Encoding::Base64)
        );
    }
}
