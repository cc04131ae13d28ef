//! `GET /keys/{key}?watch=true`: a key's changes as Server-Sent Events,
//! through [`Node::watch`](crate::node::Node::watch), which follows the key's
//! owner. Each event's `id` is the change's version, so a client that
//! reconnects (sending `Last-Event-ID`, as browsers do, or `?since=`) misses
//! nothing the owner still retains.

use super::keys::{Encoding, encode};
use super::problem::ApiError;
use crate::node::{Node, NodeError};
use crate::store::{Entry, Version, now_micros};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use tokio_stream::StreamExt;
use utoipa::ToSchema;

/// One change, as an event's data (`event: put` or `event: delete`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Change {
    /// The key.
    pub key: String,
    /// How `key` is encoded.
    pub key_encoding: Encoding,
    /// The value written (absent for a delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The change's version (also the event's `id`).
    pub version: String,
    /// Whether the change deleted the key.
    pub deleted: bool,
    /// For a value with a time to live: milliseconds left when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// One Server-Sent Event of a watch, as the OpenAPI document describes the
/// `text/event-stream` answer (the fields of each event, not a JSON body).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct WatchEvent {
    /// `put` or `delete`.
    event: String,
    /// The change's version: send it back as `Last-Event-ID` (or `?since=`)
    /// to resume after it.
    id: String,
    /// The change, as JSON (see the `Change` schema).
    data: String,
}

/// The `Last-Event-ID` header a reconnecting event stream sends, if any:
/// taken alone rather than with a copy of every header, as the read path
/// that `GET /keys/{key}` shares with watches would otherwise pay for.
#[derive(Debug)]
pub struct LastEventId(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        const NAME: HeaderName = HeaderName::from_static("last-event-id");
        Ok(LastEventId(parts.headers.get(NAME).cloned()))
    }
}

/// The version a watch resumes after: `Last-Event-ID`, else `since`.
pub fn resume_from(
    last_event: Option<&str>,
    since: Option<&str>,
) -> Result<Option<Version>, ApiError> {
    Ok(crate::node::resume_after(last_event.or(since))?)
}

fn change(e: &Entry) -> Change {
    let (key, key_encoding) = encode(&e.key);
    let (value, encoding) = match &e.value {
        Some(v) => {
            let (v, enc) = encode(v);
            (Some(v), Some(enc))
        }
        None => (None, None),
    };
    let now = now_micros();
    Change {
        key,
        key_encoding,
        value,
        encoding,
        version: e.version.token(),
        deleted: e.value.is_none(),
        ttl_ms: e.expires.map(|at| at.saturating_sub(now).div_ceil(1000)),
    }
}

/// The event stream of `key`'s changes after `since`.
pub fn stream(node: &Arc<Node>, key: Vec<u8>, since: Option<Version>) -> Response {
    events(node.watch(key, since))
}

/// The event stream of the changes of keys starting with `prefix` after
/// `since` (from now if none).
pub fn stream_prefix(node: &Arc<Node>, prefix: Vec<u8>, since: Option<Version>) -> Response {
    events(node.watch_prefix(prefix, since))
}

fn events(changes: tokio::sync::mpsc::Receiver<Result<Entry, NodeError>>) -> Response {
    let changes = tokio_stream::wrappers::ReceiverStream::new(changes);
    let events = changes.filter_map(|c| c.ok()).map(|e| {
        let kind = if e.value.is_some() { "put" } else { "delete" };
        Event::default()
            .event(kind)
            .id(e.version.token())
            .json_data(change(&e))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
