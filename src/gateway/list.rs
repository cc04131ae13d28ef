//! `GET /keys`: the ring's keys, a page at a time, through
//! [`Node::list`](crate::node::Node::list).

use super::keys::{Encoding, encode};
use super::problem::{ApiError, Problem};
use crate::node::{Cursor, ListRequest, MAX_PAGE, Node, NodeError};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query as UrlQuery, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The page size when none is asked for.
const DEFAULT_PAGE: usize = 100;

/// Options of `GET /keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOptions {
    /// Only keys that start with this text.
    #[param(example = "user/")]
    pub prefix: Option<String>,
    /// At most this many keys (1 to 1000; default 100).
    #[param(example = 100, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Resume after the page that answered this `next`.
    pub cursor: Option<String>,
    /// `true`: the values too.
    #[param(example = false)]
    pub values: Option<bool>,
    /// `true`: instead of a page, the changes of keys with the prefix as
    /// Server-Sent Events, from now (or after `since`), from every node.
    #[param(example = false)]
    pub watch: Option<bool>,
    /// With `watch`: resume after this version (an event's `id`; a
    /// `Last-Event-ID` header does the same).
    #[param(pattern = "^[0-9a-f]{32}$")]
    pub since: Option<String>,
}

/// A listed key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedKey {
    /// The key.
    pub key: String,
    /// How `key` is encoded.
    pub key_encoding: Encoding,
    /// The key's ring position, 16 hex digits.
    pub position: String,
    /// The key's version (32 hex digits).
    pub version: String,
    /// The value, with `?values=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is encoded, with `?values=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// One page of keys.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "keys": [{"key": "user/1", "key_encoding": "utf8", "position": "0a3f5c9e21b4d870",
              "version": "00064a1b2c3d4e5f6b86b273ff34fce1"}],
    "next": "Cj9cniG02HB1c2VyLzE"
}))]
pub struct KeyList {
    /// The keys, in the order of their ring positions (then of the keys).
    pub keys: Vec<ListedKey>,
    /// Pass as `cursor` for the next page; `null` after the last.
    pub next: Option<String>,
}

/// Lists the ring's keys, in the order of their ring positions.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    params(ListOptions),
    responses(
        (status = 200, description = "A page of keys, and the cursor of the next page. Asked of each key's owner: any node answers. Keys written or deleted between pages may or may not show; in a stable ring no key is missed or repeated across pages. With `?watch=true`, the changes of the keys under `prefix` as Server-Sent Events instead.", body = KeyList,
            content((KeyList = "application/json"), (super::watch::WatchEvent = "text/event-stream"))),
        (status = 400, description = "Bad limit, cursor or query string.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "An owner could not be reached.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(
    State(node): State<Arc<Node>>,
    headers: axum::http::HeaderMap,
    options: Result<UrlQuery<ListOptions>, QueryRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let watched = match &options {
        Ok(UrlQuery(o)) if o.watch == Some(true) => o,
        _ => return list(node, options).await.into_response(),
    };
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = match super::watch::resume_from(last_event, watched.since.as_deref()) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    match checked_prefix(watched.prefix.clone(), &node) {
        Ok(prefix) => super::watch::stream_prefix(&node, prefix, since),
        Err(e) => e.into_response(),
    }
}

/// The prefix asked for, no longer than a key may be.
fn checked_prefix(prefix: Option<String>, node: &Node) -> Result<Vec<u8>, ApiError> {
    let prefix = prefix.unwrap_or_default().into_bytes();
    let max = node.config().limits.max_key_bytes;
    if prefix.len() > max {
        return Err(NodeError::BadListing(format!(
            "the prefix is {} bytes long; keys are at most {max} bytes",
            prefix.len()
        ))
        .into());
    }
    Ok(prefix)
}

async fn list(
    node: Arc<Node>,
    options: Result<UrlQuery<ListOptions>, QueryRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let UrlQuery(options) = options.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let limit = options.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            NodeError::BadListing(format!("limit={limit}: ask for 1 to {MAX_PAGE} keys")).into(),
        );
    }
    let prefix = checked_prefix(options.prefix, &node)?;
    // An empty cursor is no cursor: the first page.
    let cursor = options.cursor.as_deref().filter(|c| !c.is_empty());
    let after = cursor.map(Cursor::decode).transpose()?;
    let values = options.values == Some(true);
    let page = node
        .list(ListRequest {
            prefix,
            limit,
            after,
            values,
        })
        .await?;
    let keys = page
        .entries
        .into_iter()
        .map(|e| {
            let (key, key_encoding) = encode(&e.key);
            let (value, encoding) = match (values, &e.value) {
                (true, Some(v)) => {
                    let (v, enc) = encode(v);
                    (Some(v), Some(enc))
                }
                _ => (None, None),
            };
            ListedKey {
                key,
                key_encoding,
                position: e.position.to_hex(),
                version: e.version.token(),
                value,
                encoding,
            }
        })
        .collect();
    Ok(Json(KeyList {
        keys,
        next: page.next.map(|c| c.encode()),
    }))
}
