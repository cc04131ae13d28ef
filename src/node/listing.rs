//! Listing keys across the ring. A listing runs in (position, key) order from
//! position 0 to the last, so that a page ends at a key and the next one
//! resumes after it (the [`Cursor`]), whatever node is asked. Each range is
//! asked of the node that owns it (`ListRange`): by the routing table first,
//! and the owner answers only for what its own view says it owns, saying how
//! far that reaches, so a stale table costs a retry, never a key missed or
//! repeated. Prefixes do not narrow the scan (keys are spread by their hash):
//! a page with a rare prefix may visit every node.

use super::rpc::wire::range_reply_from_wire;
use super::{Node, NodeError, NodeState};
use crate::proto::dht;
use crate::ring::{Arc, Position};
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

/// What one `ListRange` asks of a range's owner (its wire form is
/// `dht::ListRangeRequest`, converted in `rpc::wire`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::node) struct RangeAsk {
    /// First position of the range (inclusive).
    pub start: u64,
    /// Last position of the range (inclusive).
    pub end: u64,
    /// Leave out the keys at `start` up to this one (the last key of the
    /// page before).
    pub after_key: Option<Vec<u8>>,
    /// Only keys that start with these bytes.
    pub prefix: Vec<u8>,
    /// At most this many keys (1 to [`MAX_PAGE`]).
    pub limit: u32,
    /// Send the values too (else they are left empty).
    pub values: bool,
}

/// A range owner's answer to a [`RangeAsk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) struct RangeReply {
    /// The keys, in (position, key) order; values empty unless asked for.
    pub entries: Vec<Entry>,
    /// The last position (inclusive) the owner answered for.
    pub covered_end: u64,
    /// The page filled up before `covered_end`: ask again from the last
    /// entry.
    pub more: bool,
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
    ///
    /// Like a read, it answers no write that is applied here but not yet
    /// acknowledged ([`PendingWrites::read_settled`](super::pending::PendingWrites::read_settled)),
    /// waiting at most half the request timeout: the asker's call to this
    /// node started earlier, and should hear this node's answer, not its own
    /// timeout.
    pub(super) async fn list_range(&self, request: &RangeAsk) -> Result<RangeReply, NodeError> {
        let wait = self.config.timeouts.request / 2;
        self.pending
            .read_settled(wait, || self.listed_now(request))
            .await
    }

    /// [`Node::list_range`] as the store holds the range now, and the arc
    /// the reply answers for (up to its last key if the page is cut short).
    pub(super) fn listed_now(&self, request: &RangeAsk) -> Result<(RangeReply, Arc), NodeError> {
        let limit = request.limit as usize;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(NodeError::BadListing(format!(
                "limit {limit}: ask for 1 to {MAX_PAGE} keys"
            )));
        }
        if request.end < request.start {
            return Err(NodeError::BadListing(format!(
                "a range never wraps past the last position: end {:016x} is before start {:016x}",
                request.end, request.start
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
        // Like a query, a listing is answered only under a lease, and not from
        // an arc taken over whose old owner may still serve it.
        let range = Arc::new(start, Position(covered.wrapping_add(1)));
        if self.unleased_arc(range, view.alone()).is_some() {
            return Err(NodeError::Unleased(Duration::ZERO));
        }
        // Nor by an owner leased again after a gap, until it has caught up
        // with its `prev` (it may lack writes another owner of the arc
        // made): the listing retries.
        if self.after_lease_gap(&view) {
            return Err(NodeError::CatchingUp);
        }
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
        // A page cut short answers up to its last key only.
        let answered = match entries.last() {
            Some(last) if more => Arc::new(start, Position(last.position.0.wrapping_add(1))),
            _ => range,
        };
        if !request.values {
            for e in &mut entries {
                e.value = Some(Vec::new());
            }
        }
        let reply = RangeReply {
            entries,
            covered_end: covered,
            more,
        };
        Ok((reply, answered))
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
        let started = tokio::time::Instant::now();
        let deadline = started + self.config.timeouts.request;
        let mut entries: Vec<Entry> = Vec::new();
        let (mut at, mut after) = match request.after {
            Some(c) => (c.position.0, Some(c.key)),
            None => (0, None),
        };
        let mut delay = Duration::from_millis(50);
        loop {
            let ask = RangeAsk {
                start: at,
                end: u64::MAX,
                after_key: after.clone(),
                prefix: request.prefix.clone(),
                limit: (request.limit - entries.len()) as u32,
                values: request.values,
            };
            let reply = match self.ask_owner(ask.clone()).await {
                Ok(reply) => reply,
                Err(e) if retryable(&e) && tokio::time::Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(NodeError::Unleased(_)) => return Err(NodeError::Unleased(started.elapsed())),
                Err(e) => return Err(e),
            };
            let RangeReply {
                entries: got,
                covered_end,
                more,
            } = reply;
            // A reply that would move the listing backwards, skip past what it
            // covers, or stand still would loop or lose keys: refused.
            check_reply(&ask, &got, covered_end, more).map_err(|why| {
                NodeError::Peer(tonic::Status::internal(format!(
                    "a listing's range [{at:016x}, ...] came back malformed: {why}"
                )))
            })?;
            let last = got.last().map(Cursor::after);
            entries.extend(got);
            if entries.len() >= request.limit {
                let next = entries.last().map(Cursor::after);
                return Ok(Page { entries, next });
            }
            match last {
                Some(c) if more => (at, after) = (c.position.0, Some(c.key)),
                _ if covered_end == u64::MAX => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                _ => (at, after) = (covered_end + 1, None),
            }
        }
    }

    /// Sends `ask` to the owner of its start by the routing table (this node
    /// answers itself).
    ///
    /// A peer's entries are checked as any peer's are; this node's own come
    /// from its store unchecked (before, they went through the same checks,
    /// so an entry stored under larger limits than today's failed a local
    /// listing).
    async fn ask_owner(&self, ask: RangeAsk) -> Result<RangeReply, NodeError> {
        let owner = self.routes().owner(Position(ask.start)).clone();
        if owner == self.view().me {
            return self.list_range(&ask).await;
        }
        let request = dht::ListRangeRequest::from(&ask);
        let reply = (self.peers)
            .call(&owner, |mut c| async move { c.list_range(request).await })
            .await?;
        range_reply_from_wire(reply, &self.config.limits).map_err(NodeError::Peer)
    }
}

/// Whether `got` (from a `ListRange` reply covering up to `covered_end`,
/// `more` to come) answers `ask`: live keys with its prefix, no more than
/// asked for, in strictly increasing (position, key) order after where it
/// starts, within what the reply covers, and progress if `more` is set.
pub(super) fn check_reply(
    ask: &RangeAsk,
    got: &[Entry],
    covered_end: u64,
    more: bool,
) -> Result<(), String> {
    if covered_end < ask.start || covered_end > ask.end {
        return Err(format!(
            "it covers up to {covered_end:016x}, outside [{:016x}, {:016x}]",
            ask.start, ask.end
        ));
    }
    if got.len() > ask.limit as usize {
        return Err(format!("{} keys for a limit of {}", got.len(), ask.limit));
    }
    if more && got.is_empty() {
        return Err("more to come, but no keys".into());
    }
    let mut floor: (u64, &[u8]) = (ask.start, ask.after_key.as_deref().unwrap_or_default());
    let mut first = ask.after_key.is_none();
    for e in got {
        let at = (e.position.0, e.key.as_slice());
        let ordered = if first { at >= floor } else { at > floor };
        if !ordered || e.position.0 > covered_end {
            return Err(format!(
                "key at {:016x} out of order or range",
                e.position.0
            ));
        }
        if e.value.is_none() || !e.key.starts_with(&ask.prefix) {
            return Err(format!(
                "key at {:016x} is deleted or lacks the prefix",
                e.position.0
            ));
        }
        floor = at;
        first = false;
    }
    Ok(())
}

/// Whether a failed range may succeed when asked again: its node was not the
/// owner, or could not be reached.
fn retryable(e: &NodeError) -> bool {
    match e {
        NodeError::NotOwner { .. }
        | NodeError::Unreachable { .. }
        | NodeError::Interrupted { .. }
        | NodeError::CatchingUp
        | NodeError::Unleased(_) => true,
        NodeError::Peer(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Member, key_position};

    #[tokio::test]
    async fn a_range_is_listed_only_under_a_lease() {
        let node = crate::node::serving_beside(
            Member::new(Position(100), "http://me"),
            Member::new(Position(1000), "http://other"),
        );
        node.store
            .set(Position(500), b"k".to_vec(), b"v".to_vec(), 1)
            .unwrap();
        let ask = RangeAsk {
            start: 100,
            end: u64::MAX,
            limit: 10,
            ..Default::default()
        };
        assert!(matches!(
            node.list_range(&ask).await,
            Err(NodeError::Unleased(_))
        ));
        let now = tokio::time::Instant::now().into_std();
        node.update_leases(|l| l.granted(now));
        let reply = node.list_range(&ask).await.unwrap();
        assert_eq!(reply.entries.len(), 1);
        assert_eq!(reply.covered_end, 999);
        let backwards = RangeAsk {
            end: 99,
            ..ask.clone()
        };
        assert!(matches!(
            node.list_range(&backwards).await,
            Err(NodeError::BadListing(_))
        ));
        // Leased again after a gap, the owner may lack writes another owner
        // of the arc made meanwhile: no listing from its store alone until it
        // has caught up.
        node.behind_again();
        assert!(matches!(
            node.list_range(&ask).await,
            Err(NodeError::CatchingUp)
        ));
    }

    /// The owner's only replica cannot be reached, so a write is applied
    /// here and never acknowledged: a listing of its range meanwhile must not
    /// show it. It waits for the write to settle (here: its caller gives up
    /// on it), then answers with it (a write that did not settle as
    /// acknowledged may still have been applied); a write still in flight
    /// after half the request timeout makes the listing unavailable.
    #[tokio::test(start_paused = true)]
    async fn a_listing_waits_for_a_write_not_yet_acknowledged() {
        use std::sync::atomic::Ordering;
        let node = crate::node::owner_with_unreachable_replica();
        let key = b"k".to_vec();
        let position = key_position(&key);
        assert!(position.0 >= 100, "the key lies in the listed range");
        node.store
            .set(position, key.clone(), b"acknowledged".to_vec(), 1)
            .unwrap();
        let ask = RangeAsk {
            start: 100,
            end: u64::MAX,
            limit: 10,
            values: true,
            ..Default::default()
        };
        let (write, write_done) = crate::node::write_in_flight(&node, &key, b"in flight").await;
        let listing = tokio::spawn({
            let (node, ask) = (node.clone(), ask.clone());
            async move { node.list_range(&ask).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!listing.is_finished(), "answered with a write in flight");
        write.abort();
        let reply = listing.await.unwrap().unwrap();
        assert!(
            !write_done.load(Ordering::SeqCst),
            "the write was abandoned"
        );
        let listed = reply.entries;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].value.as_deref(), Some(&b"in flight"[..]));

        let (_write, _) = crate::node::write_in_flight(&node, &key, b"stuck").await;
        assert!(matches!(
            node.list_range(&ask).await,
            Err(NodeError::WriteInFlight(_))
        ));
    }

    fn entry(position: u64, key: &[u8]) -> Entry {
        Entry {
            position: Position(position),
            key: key.to_vec(),
            value: Some(Vec::new()),
            version: crate::store::Version::default(),
            expires: None,
        }
    }

    #[test]
    fn a_reply_that_would_loop_or_lose_keys_is_refused() {
        let ask = RangeAsk {
            start: 10,
            end: u64::MAX,
            after_key: Some(b"k/1".to_vec()),
            prefix: b"k/".to_vec(),
            limit: 3,
            values: false,
        };
        let ok = [entry(10, b"k/2"), entry(12, b"k/0")];
        assert_eq!(check_reply(&ask, &ok, 20, false), Ok(()));
        assert!(
            check_reply(&ask, &[], 5, false).is_err(),
            "covers backwards"
        );
        assert!(
            check_reply(&ask, &[], 20, true).is_err(),
            "more but no progress"
        );
        assert!(
            check_reply(&ask, &[entry(10, b"k/1")], 20, false).is_err(),
            "repeats the cursor"
        );
        assert!(
            check_reply(&ask, &[entry(12, b"k/0"), entry(10, b"k/2")], 20, false).is_err(),
            "unordered"
        );
        assert!(
            check_reply(&ask, &[entry(30, b"k/3")], 20, false).is_err(),
            "past its cover"
        );
        assert!(
            check_reply(&ask, &[entry(11, b"x/0")], 20, false).is_err(),
            "not the prefix"
        );
        let four = [
            entry(11, b"k/1"),
            entry(12, b"k/1"),
            entry(13, b"k/1"),
            entry(14, b"k/1"),
        ];
        assert!(
            check_reply(&ask, &four, 20, false).is_err(),
            "over the limit"
        );
        let from_start = RangeAsk {
            after_key: None,
            ..ask
        };
        assert_eq!(
            check_reply(&from_start, &[entry(10, b"k/1")], 20, false),
            Ok(())
        );
    }

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
