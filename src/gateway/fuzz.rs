//! Hostile input from HTTP clients, fuzzed: the key in a path
//! (percent-decoding), `?ttl=`, `If-Match` / `If-None-Match`, listing cursors,
//! request IDs and batch bodies each give a value or a 4xx problem naming what
//! is wrong, never a panic; and what a client is meant to send back (a
//! percent-encoded key, an `ETag`, a cursor, a batch of base64 keys) reads as
//! it was meant.
//!
//! Proptest-driven, like `node::fuzz` (same case count, same `PROPTEST_CASES`).

use super::batch::{BatchRequest, query as batch_query};
use super::keys::{condition, etag, key_from_path, parse_ttl};
use super::problem::ApiError;
use crate::node::fuzz::{config, guards, limits, operation};
use crate::node::{Condition, Cursor, MAX_TTL, NodeError, Operation};
use crate::request_id::RequestId;
use crate::ring::{Position, key_position};
use crate::store::Version;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use base64::Engine;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::collection::vec;
use proptest::prelude::*;
use std::time::Duration;
use tonic::Code;

/// Text made mostly of what the field's grammar uses, so that cases come near
/// valid input rather than all far from it.
fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[{alphabet}]{{0,{max}}}")).unwrap(),
        any::<String>(),
    ]
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_path_is_a_key_or_names_its_bad_escape(path in near("a-zA-Z0-9%/._~!$&'()*+,;=:@-", 40)) {
        let Ok(uri) = format!("/keys/{path}").parse::<Uri>() else { return Ok(()) };
        let segment = uri.path().strip_prefix("/keys/").unwrap_or_default().as_bytes().to_vec();
        let escapes = segment.iter().filter(|&&b| b == b'%').count();
        match key_from_path(&uri, "/keys/") {
            Ok(key) => prop_assert_eq!(key.len(), segment.len() - 2 * escapes),
            Err(ApiError::BadPercentEncoding { at }) => {
                prop_assert_eq!(segment[at], b'%');
                let hex = segment.get(at + 1..at + 3);
                prop_assert!(!hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
    }

    #[test]
    fn percent_encoded_keys_decode_to_their_bytes(key in vec(any::<u8>(), 1..40)) {
        let encoded: String = percent_encoding::percent_encode(&key, NON_ALPHANUMERIC).collect();
        let uri: Uri = format!("/keys/{encoded}").parse().unwrap();
        prop_assert_eq!(key_from_path(&uri, "/keys/").unwrap(), key.clone());
        // The page and the CLI encode text keys the same way.
        if let Ok(text) = std::str::from_utf8(&key) {
            let encoded = utf8_percent_encode(text, NON_ALPHANUMERIC);
            let uri: Uri = format!("/keys/{encoded}").parse().unwrap();
            prop_assert_eq!(key_from_path(&uri, "/keys/").unwrap(), key);
        }
    }

    #[test]
    fn any_ttl_is_a_duration_in_range_or_a_400(text in near("0-9msdh", 24)) {
        match parse_ttl(&text) {
            Ok(ttl) => prop_assert!(!ttl.is_zero() && ttl <= MAX_TTL),
            Err(e) => {
                prop_assert_eq!(e.code(), Code::InvalidArgument);
                prop_assert_eq!(ApiError::Node(e).status(), StatusCode::BAD_REQUEST);
            }
        }
    }

    #[test]
    fn ttls_read_as_written(
        n in 0..100_000u64,
        (unit, per) in prop::sample::select(vec![
            ("ms", 1), ("s", 1000), ("", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
        ]),
    ) {
        let meant = Duration::from_millis(n * per);
        match parse_ttl(&format!("{n}{unit}")) {
            Ok(ttl) => prop_assert_eq!(ttl, meant),
            Err(_) => prop_assert!(meant.is_zero() || meant > MAX_TTL),
        }
    }

    #[test]
    fn any_condition_headers_are_a_condition_or_a_400(
        if_match in proptest::option::of(near("0-9a-fW/\"*, ", 40)),
        if_none_match in proptest::option::of(near("*\" ", 4)),
        raw in proptest::option::of(vec(any::<u8>(), 0..8)),
        op in operation(),
    ) {
        let mut headers = HeaderMap::new();
        let fields = [(header::IF_MATCH, &if_match), (header::IF_NONE_MATCH, &if_none_match)];
        for (name, text) in fields {
            if let Some(v) = text.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
                headers.insert(name, v);
            }
        }
        // Bytes that are no text at all.
        if let Some(v) = raw.and_then(|r| HeaderValue::from_bytes(&r).ok()) {
            headers.append(header::IF_MATCH, v);
        }
        match condition(&headers, &op) {
            Ok(c) => prop_assert!(guards(c, &op), "{:?} on {:?}", c, op),
            Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn an_etag_sent_back_is_that_version(
        micros in any::<u64>(),
        node in any::<u64>(),
        quoted in any::<bool>(),
    ) {
        let v = Version { micros, node };
        let tag = if quoted { etag(v) } else { HeaderValue::from_str(&v.token()).unwrap() };
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, tag);
        prop_assert_eq!(condition(&headers, &Operation::Delete).unwrap(), Condition::Version(v));
    }

    #[test]
    fn any_cursor_is_a_cursor_or_a_400(text in near("A-Za-z0-9_=+/-", 40)) {
        match Cursor::decode(&text) {
            Ok(c) => prop_assert_eq!(Cursor::decode(&c.encode()).unwrap(), c),
            Err(e) => prop_assert_eq!(ApiError::Node(e).status(), StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn cursors_round_trip(key in vec(any::<u8>(), 1..40), position in any::<u64>()) {
        let cursor = Cursor { position: key_position(&key), key };
        prop_assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(cursor.clone()));
        // A cursor whose position is not its key's is forged.
        let forged = Cursor { position: Position(position), ..cursor.clone() };
        prop_assert_eq!(Cursor::decode(&forged.encode()).is_ok(), forged == cursor);
    }

    #[test]
    fn any_request_id_is_kept_as_sent_or_refused(id in vec(any::<u8>(), 0..140)) {
        let Ok(value) = HeaderValue::from_bytes(&id) else { return Ok(()) };
        match RequestId::from_header(Some(&value)) {
            Ok(kept) => {
                prop_assert_eq!(kept.as_str().as_bytes(), id.as_slice());
                prop_assert!((1..=128).contains(&id.len()));
                prop_assert!(id.iter().all(|b| b.is_ascii_graphic() && *b != b','));
            }
            Err(e) => prop_assert_eq!(NodeError::BadRequestId(e).code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn any_batch_body_is_queries_or_a_400(body in vec(any::<u8>(), 0..200)) {
        if let Ok(batch) = serde_json::from_slice::<BatchRequest>(&body) {
            for op in batch.ops {
                if let Err(e) = batch_query(op, &limits()) {
                    prop_assert_eq!(e.code(), Code::InvalidArgument);
                }
            }
        }
    }

    #[test]
    fn batch_operations_are_queries_or_a_400(ops in vec(batch_op(), 1..6)) {
        let jsons: Vec<&serde_json::Value> = ops.iter().map(|(json, _)| json).collect();
        let body = serde_json::json!({ "ops": jsons });
        let Ok(batch) = serde_json::from_value::<BatchRequest>(body) else {
            // Only a field of the wrong type or an unknown kind fails to parse.
            let kinds = ["get", "put", "delete"];
            prop_assert!(jsons.iter().any(|j| !kinds.contains(&j["op"].as_str().unwrap_or(""))));
            return Ok(());
        };
        for (op, (_, meant)) in batch.ops.into_iter().zip(&ops) {
            match (batch_query(op, &limits()), meant) {
                (Ok(q), Some((key, operation, ttl))) => {
                    prop_assert_eq!(q.key.as_ref(), Some(key));
                    prop_assert_eq!(&q.op, operation);
                    prop_assert_eq!(q.ttl, *ttl);
                }
                (Err(e), None) => {
                    let status = ApiError::Node(e).status();
                    let client_error = [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE];
                    prop_assert!(client_error.contains(&status), "{}", status);
                }
                (got, meant) => prop_assert!(false, "got {:?}, meant {:?}", got, meant),
            }
        }
    }
}

/// One batch operation as JSON, and the query it means if it is valid.
#[allow(clippy::type_complexity)]
fn batch_op() -> impl Strategy<
    Value = (
        serde_json::Value,
        Option<(Vec<u8>, Operation, Option<Duration>)>,
    ),
> {
    (
        prop::sample::select(vec!["get", "put", "delete", "patch"]),
        vec(any::<u8>(), 0..20),
        proptest::option::of(vec(any::<u8>(), 0..70)),
        proptest::option::of(prop_oneof![
            Just("30s".to_string()),
            Just("0".to_string()),
            "[0-9a-z]{0,4}"
        ]),
    )
        .prop_map(|(kind, key, value, ttl)| {
            let mut json =
                serde_json::json!({ "op": kind, "key": base64(&key), "key_encoding": "base64" });
            if let Some(v) = &value {
                json["value"] = base64(v).into();
                json["encoding"] = "base64".into();
            }
            if let Some(t) = &ttl {
                json["ttl"] = t.clone().into();
            }
            let operation = match (kind, value) {
                ("get", None) => Some(Operation::Get),
                ("delete", None) => Some(Operation::Delete),
                ("put", Some(v)) if v.len() <= 64 => Some(Operation::Set(v)),
                _ => None,
            };
            let ttl = match (&operation, ttl) {
                (_, None) => Some(None),
                (Some(Operation::Set(_)), Some(t)) => parse_ttl(&t).ok().map(Some),
                _ => None,
            };
            let valid_key = (1..=16).contains(&key.len());
            let meant = match (operation, ttl) {
                (Some(op), Some(ttl)) if valid_key => Some((key, op, ttl)),
                _ => None,
            };
            (json, meant)
        })
}
