//! Listing keys across the ring. A listing runs in (position, key) order from
//! position 0 to the last, so that a page ends at a key and the next one
//! resumes after it (the [`Cursor`]), whatever node is asked. Each range is
//! asked of the node that owns it (`ListRange`): by the routing table first,
//! and the owner answers only for what its own view says it owns, saying how
//! far that reaches, so a stale table costs a retry, never a key missed or
//! repeated. Prefixes do not narrow the scan (keys are spread by their hash):
//! a page with a rare prefix may visit every node.

use super::entries::entry_from_wire;
use super::{Node, NodeError, NodeState};
use crate::proto::dht;
use crate::ring::Position;
use crate::store::Entry;
use base64::Engine;
use std::time::Duration;

/// The most keys one page may ask for.
pub const MAX_PAGE: usize = 1000;
/// A `ListRange` reply stops growing past this many bytes of entries (at least
/// one entry is always sent), so that pages of large values stay well under
/// the message limit.
const REPLY_BUDGET: usize = 4 << 20;

/// Where a listing resumes: after this key, at this position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last key's position.
    pub position: Position,
    /// The last key.
    pub key: Vec<u8>,
}

impl Cursor {
    /// The cursor after `entry`.
    pub fn after(entry: &Entry) -> Self {
        Self {
            position: entry.position,
            key: entry.key.clone(),
        }
    }

    /// The cursor as opaque text: URL-safe base64 of the position (8 bytes,
    /// big-endian) and the key.
    pub fn encode(&self) -> String {
        let mut bytes = self.position.0.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor `text` names.
    pub fn decode(text: &str) -> Result<Self, NodeError> {
        let bad = || NodeError::BadCursor(format!("{text:?} is not a cursor a listing returned"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        if bytes.len() < 9 {
            return Err(bad());
        }
        let (position, key) = bytes.split_at(8);
        let position = Position(u64::from_be_bytes(position.try_into().map_err(|_| bad())?));
        if crate::ring::key_position(key) != position {
            return Err(bad());
        }
        Ok(Self {
            position,
            key: key.to_vec(),
        })
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only keys that start with these bytes.
    pub prefix: Vec<u8>,
    /// At most this many keys (1 to [`MAX_PAGE`]).
    pub limit: usize,
    /// Resume after this key (`None`: from the start).
    pub after: Option<Cursor>,
    /// Keep the values (else they are left empty).
    pub values: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The keys, in (position, key) order; values empty unless asked for.
    pub entries: Vec<Entry>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<Cursor>,
}

impl Node {
    /// `ListRange`: the live keys this node owns from `start`, up to `end` or
    /// the end of its arc (whichever is first; never past the last position).
    pub(super) fn list_range(
        &self,
        request: &dht::ListRangeRequest,
    ) -> Result<dht::ListRangeReply, NodeError> {
        let limit = request.limit as usize;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(NodeError::BadListing(format!(
                "limit {limit}: ask for 1 to {MAX_PAGE} keys"
            )));
        }
        let view = self.view();
        let start = Position(request.start);
        if view.state != NodeState::Serving || !view.arc().contains(start) {
            return Err(NodeError::NotOwner { position: start });
        }
        // The arc's last position, as reached going up from `start`.
        let last = view.next.id.0.wrapping_sub(1);
        let covered = match (view.alone(), last < request.start) {
            (true, _) | (false, true) => request.end,
            (false, false) => last.min(request.end),
        };
        let mut entries = self.store.page(
            request.start..=covered,
            request.after_key.as_deref(),
            &request.prefix,
            limit,
        )?;
        drop(view);
        let mut more = entries.len() == limit;
        let mut bytes = 0;
        if let Some(cut) = entries.iter().position(|e| {
            bytes += e.key.len() + e.value.as_ref().map_or(0, Vec::len);
            bytes > REPLY_BUDGET
        }) {
            entries.truncate(cut.max(1));
            more = true;
        }
        Ok(dht::ListRangeReply {
            entries: entries
                .into_iter()
                .map(|mut e| {
                    if !request.values {
                        e.value = Some(Vec::new());
                    }
                    e.into()
                })
                .collect(),
            covered_end: covered,
            more,
        })
    }

    /// One page of the ring's live keys, asking each range of it of its
    /// owner. A node that turns out not to own what the routing table says
    /// (a join or failure since the table was learned) is asked again once the
    /// table is relearned, within the request timeout.
    pub async fn list(&self, request: ListRequest) -> Result<Page, NodeError> {
        if !(1..=MAX_PAGE).contains(&request.limit) {
            return Err(NodeError::BadListing(format!(
                "limit {}: ask for 1 to {MAX_PAGE} keys",
                request.limit
            )));
        }
        let deadline = tokio::time::Instant::now() + self.config.timeouts.request;
        let mut entries: Vec<Entry> = Vec::new();
        let (mut at, mut after) = match request.after {
            Some(c) => (c.position.0, Some(c.key)),
            None => (0, None),
        };
        let mut delay = Duration::from_millis(50);
        loop {
            let ask = dht::ListRangeRequest {
                start: at,
                end: u64::MAX,
                after_key: after.clone(),
                prefix: request.prefix.clone(),
                limit: (request.limit - entries.len()) as u32,
                values: request.values,
            };
            let reply = match self.ask_owner(ask).await {
                Ok(reply) => reply,
                Err(e) if retryable(&e) && tokio::time::Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let got = reply
                .entries
                .into_iter()
                .map(|e| entry_from_wire(e, &self.config.limits))
                .collect::<Result<Vec<Entry>, _>>()
                .map_err(NodeError::Peer)?;
            let last = got.last().map(Cursor::after);
            entries.extend(got);
            if entries.len() >= request.limit {
                let next = entries.last().map(Cursor::after);
                return Ok(Page { entries, next });
            }
            match last {
                Some(c) if reply.more => (at, after) = (c.position.0, Some(c.key)),
                _ if reply.covered_end == u64::MAX => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                _ => (at, after) = (reply.covered_end + 1, None),
            }
        }
    }

    /// Sends `ask` to the owner of its start by the routing table (this node
    /// answers itself).
    async fn ask_owner(
        &self,
        ask: dht::ListRangeRequest,
    ) -> Result<dht::ListRangeReply, NodeError> {
        let owner = self.routes().owner(Position(ask.start)).clone();
        if owner == self.view().me {
            return self.list_range(&ask);
        }
        self.peers
            .call(&owner, |mut c| async move { c.list_range(ask).await })
            .await
    }
}

/// Whether a failed range may succeed when asked again: its node was not the
/// owner, or could not be reached.
fn retryable(e: &NodeError) -> bool {
    match e {
        NodeError::NotOwner { .. } | NodeError::Unreachable { .. } => true,
        NodeError::Peer(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::key_position;

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let c = Cursor {
            position: key_position(b"k/1"),
            key: b"k/1".to_vec(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        let forged = Cursor {
            position: Position(7),
            key: b"k/1".to_vec(),
        };
        assert!(matches!(
            Cursor::decode(&forged.encode()),
            Err(NodeError::BadCursor(_))
        ));
        assert!(matches!(Cursor::decode("!!"), Err(NodeError::BadCursor(_))));
        assert!(matches!(Cursor::decode(""), Err(NodeError::BadCursor(_))));
    }
}
