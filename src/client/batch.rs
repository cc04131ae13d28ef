//! `crustyring batch`: operations from the command line (or a `POST /batch`
//! body), sent to a node's `POST /batch` in one request, and one line per
//! answer. It speaks HTTP/JSON: the gRPC `Batch` is the nodes' own call, each
//! carrying one owner's share, while `POST /batch` takes a whole batch and
//! groups it by owner itself.

use super::{ClientError, normalise};
use crate::gateway::batch::{BatchOp, BatchOpKind, BatchRequest, BatchResponse, BatchResult};
use crate::gateway::keys::{Encoding, parse_ttl};
use crate::security::Credentials;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;

/// The operations' syntax, for help texts and errors.
pub const SYNTAX: &str = "get KEY | put KEY VALUE [ttl=DURATION] [if-match=VERSION] [if-absent] | delete KEY [if-match=VERSION]";

/// Reads operations from command-line words: `get KEY`, `put KEY VALUE`,
/// `delete KEY`, one after the other, each followed by its options
/// (`ttl=30s`, `if-match=VERSION`, `if-absent`). Keys and values are whole
/// words, so they may hold spaces and `=`.
pub fn parse_words(words: &[String]) -> Result<Vec<BatchOp>, String> {
    let mut ops = Vec::new();
    let mut words = words.iter().peekable();
    while let Some(word) = words.next() {
        let n = ops.len() + 1;
        let op = match word.as_str() {
            "get" => BatchOpKind::Get,
            "put" => BatchOpKind::Put,
            "delete" => BatchOpKind::Delete,
            other => {
                return Err(format!(
                    "operation {n}: `{other}` is not an operation; write {SYNTAX}"
                ));
            }
        };
        let mut arg = |what: &str| {
            words
                .next()
                .cloned()
                .ok_or_else(|| format!("operation {n}: `{word}` needs {what}; write {SYNTAX}"))
        };
        let key = arg("a key")?;
        let value = match op {
            BatchOpKind::Put => Some(arg("a key and a value")?),
            _ => None,
        };
        let mut batch_op = BatchOp {
            op,
            key,
            value,
            ..BatchOp::default()
        };
        while let Some(option) = words.next_if(|w| is_option(w)) {
            with_option(&mut batch_op, option).map_err(|e| format!("operation {n}: {e}"))?;
        }
        ops.push(batch_op);
    }
    if ops.is_empty() {
        return Err(format!("no operations given; write {SYNTAX}"));
    }
    Ok(ops)
}

fn is_option(word: &str) -> bool {
    word == "if-absent" || word.starts_with("ttl=") || word.starts_with("if-match=")
}

/// Applies one option word to `op`, if it is one `op` takes.
fn with_option(op: &mut BatchOp, word: &str) -> Result<(), String> {
    let only = |kinds: &[BatchOpKind], what: &str| {
        if kinds.contains(&op.op) {
            Ok(())
        } else {
            Err(format!("`{word}`: {what}"))
        }
    };
    if let Some(ttl) = word.strip_prefix("ttl=") {
        only(&[BatchOpKind::Put], "a time to live applies to put only")?;
        parse_ttl(ttl).map_err(|e| e.to_string())?;
        op.ttl = Some(ttl.to_string());
    } else if let Some(version) = word.strip_prefix("if-match=") {
        only(
            &[BatchOpKind::Put, BatchOpKind::Delete],
            "a condition applies to put and delete only",
        )?;
        op.if_match = Some(version.to_string());
    } else {
        only(&[BatchOpKind::Put], "if-absent applies to put only")?;
        op.if_absent = true;
    }
    if op.if_absent && op.if_match.is_some() {
        return Err("if-match and if-absent exclude each other".into());
    }
    Ok(())
}

/// Reads a `POST /batch` body (`{"ops": [...]}`).
pub fn parse_json(text: &str) -> Result<BatchRequest, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(r#"not a batch: {e} (expected {{"ops": [{{"op": "get", "key": "a"}}, ...]}})"#)
    })
}

/// Sends `batch` to `POST /batch` on the node at `addr` (with `credentials`:
/// the client token, the CA for an `https://` node): one result per
/// operation, in order.
pub async fn send(
    addr: &str,
    batch: &BatchRequest,
    credentials: &Credentials,
) -> Result<BatchResponse, ClientError> {
    let url = format!("{}/batch", normalise(addr).trim_end_matches('/'));
    let bad_address = |reason: String| ClientError::BadAddress {
        addr: addr.to_string(),
        reason,
    };
    let body = serde_json::to_vec(batch).map_err(|e| bad_address(e.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| bad_address(e.to_string()))?;
    let (status, body) = super::http::send(request, credentials).await?;
    let refused = |detail: String| ClientError::Refused {
        status: status.as_u16(),
        detail,
    };
    if status != StatusCode::OK {
        // A problem document's detail, or whatever came back.
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|p| p["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(refused(detail));
    }
    let answer: BatchResponse = serde_json::from_slice(&body)
        .map_err(|e| refused(format!("the answer is not a batch's: {e}")))?;
    if answer.results.len() != batch.ops.len() {
        return Err(refused(format!(
            "{} results for {} operations",
            answer.results.len(),
            batch.ops.len()
        )));
    }
    Ok(answer)
}

/// An error and its causes, `: `-separated.
pub(super) fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// Whether an operation succeeded (a missing key did not).
pub fn succeeded(result: &BatchResult) -> bool {
    StatusCode::from_u16(result.status).is_ok_and(|s| s.is_success())
}

/// One line for an operation and its result: `get "a": "1"`, `put "b":
/// created`, `delete "c": deleted (was "1")`, `get "e": not found`, `put
/// "d": failed, 412 Precondition Failed: ...`. Texts are quoted (escaped), so
/// each line is one answer; bytes that are not UTF-8 are shown in hex.
pub fn describe(op: &BatchOp, result: &BatchResult, with_version: bool) -> String {
    let kind = match op.op {
        BatchOpKind::Get => "get",
        BatchOpKind::Put => "put",
        BatchOpKind::Delete => "delete",
    };
    let key = shown(&op.key, op.key_encoding);
    let value = result
        .value
        .as_deref()
        .map(|v| shown(v, result.encoding))
        .unwrap_or_default();
    let outcome = match (op.op, result.status) {
        (BatchOpKind::Get, 200) => value,
        (BatchOpKind::Put, 201) => "created".to_string(),
        (BatchOpKind::Put, 200) => format!("replaced (was {value})"),
        (BatchOpKind::Delete, 200) => format!("deleted (was {value})"),
        (_, 404) => "not found".to_string(),
        (_, status) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let detail = result.detail.as_deref().unwrap_or("");
            format!("failed, {status} {reason}: {detail}")
        }
    };
    match (&result.version, with_version) {
        (Some(v), true) => format!("{kind} {key}: {outcome} (version {v})"),
        _ => format!("{kind} {key}: {outcome}"),
    }
}

/// JSON text as the user reads it: quoted if it is (or decodes to) UTF-8,
/// else its bytes in hex.
fn shown(text: &str, encoding: Option<Encoding>) -> String {
    let bytes = match encoding {
        Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|_| text.as_bytes().to_vec()),
        _ => text.as_bytes().to_vec(),
    };
    match std::str::from_utf8(&bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => super::hex(&bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn operations_take_their_words_and_options() {
        let mut argv = words("get a put b");
        argv.push("two words = one value".into());
        argv.extend(words("ttl=30s if-absent delete ttl=5 if-match=*"));
        let ops = parse_words(&argv).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].op, ops[0].key.as_str()), (BatchOpKind::Get, "a"));
        assert_eq!(ops[1].value.as_deref(), Some("two words = one value"));
        assert_eq!(ops[1].ttl.as_deref(), Some("30s"));
        assert!(ops[1].if_absent);
        assert_eq!(ops[2].key, "ttl=5", "a key is whatever word follows");
        assert_eq!(ops[2].if_match.as_deref(), Some("*"));
    }

    #[test]
    fn bad_operations_say_which_and_why() {
        for (line, says) in [
            ("get a fly b", "operation 2: `fly` is not an operation"),
            ("put a", "operation 1: `put` needs a key and a value"),
            ("get", "`get` needs a key"),
            ("get a ttl=1s", "applies to put only"),
            ("put a b ttl=soon", "ttl=\"soon\""),
            ("put a b if-absent if-match=*", "exclude each other"),
            ("", "not an operation"),
        ] {
            let e = parse_words(&words(line)).unwrap_err();
            assert!(e.contains(says), "{line:?}: {e}");
        }
        assert!(parse_words(&[]).unwrap_err().contains("no operations"));
    }

    #[test]
    fn each_answer_is_one_line() {
        let op = |op, key: &str| BatchOp {
            op,
            key: key.into(),
            ..BatchOp::default()
        };
        let result = |status, value: Option<&str>, encoding| BatchResult {
            status,
            value: value.map(str::to_string),
            encoding,
            version: Some("00ab".into()),
            detail: (status >= 400).then(|| "why".to_string()),
            hops: None,
            owner: None,
        };
        let get = op(BatchOpKind::Get, "a");
        let line = describe(&get, &result(200, Some("x\ny"), None), true);
        assert_eq!(line, r#"get "a": "x\ny" (version 00ab)"#);
        let bytes = result(200, Some("/wA="), Some(Encoding::Base64));
        assert_eq!(describe(&get, &bytes, false), r#"get "a": 0xff00"#);
        assert_eq!(
            describe(&op(BatchOpKind::Put, "b"), &result(412, None, None), false),
            r#"put "b": failed, 412 Precondition Failed: why"#
        );
        let missing = result(404, None, None);
        assert_eq!(describe(&get, &missing, false), r#"get "a": not found"#);
        assert!(!succeeded(&missing));
    }
}
