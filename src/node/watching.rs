//! Watching a key (or every key with a prefix): its changes as they happen.
//!
//! Every node keeps a log of the last [`RETAINED`] changes it applied (as
//! owner, each once it settles, acknowledged or failed, so that a watch
//! through the owner reports no write a read would still wait for; or as a
//! replica taking newer copies) and broadcasts each new one
//! ([`ChangeLog`], plain state). A member's *local* stream serves that log
//! (`Watch` with `local`).
//!
//! A key watch asked of any node follows the key's owner: it relays the
//! owner's local stream, and when that ends (the owner failed, left, or no
//! longer holds the key) it asks the owner again, resuming after the last
//! version it delivered. The new owner was a replica of the key, so its log
//! holds the same changes; a resume from further back than the log reaches
//! gets the key's current state instead of the changes in between.
//!
//! A prefix watch relays the local streams of every member (each change comes
//! from the key's owner and its replicas, so a member's failure loses none) and
//! delivers each change once ([`Deliveries`]). A member's prefix stream holds
//! the copies it took as a replica for the request timeout
//! ([`super::copy_hold`]), so the watcher hears of a write from its owner, when
//! it settles, and from a replica only if the owner failed to tell it.

use super::copy_hold::CopyHold;
use super::{Node, NodeError};
use crate::node::rpc::wire::{entry_of_event, local_watch_request};
use crate::ring::{Member, key_position};
use crate::store::{Entry, Version, now_micros};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How many changes a node's log keeps by default (`--watch-retained`).
pub const RETAINED: usize = 4096;
/// How many bytes of keys and values the log keeps by default
/// (`--watch-retained-mb`): past either bound, the oldest changes go first.
pub const RETAINED_BYTES: usize = 8 << 20;

/// How much a node's change log keeps: what a watch that reconnects can still
/// resume from rather than start again from the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// Changes kept at most.
    pub retained: usize,
    /// Bytes of keys and values kept at most.
    pub retained_bytes: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            retained: RETAINED,
            retained_bytes: RETAINED_BYTES,
        }
    }
}
/// A prefix watch remembers the last version it delivered of at least this
/// many keys (to deliver each change once; see [`Deliveries`]).
const DEDUPE_KEYS: usize = 100_000;
/// How often a local key watch checks that its node still holds the key.
const HOLD_CHECK: Duration = Duration::from_millis(500);

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// One key.
    Key(Vec<u8>),
    /// Every key that starts with these bytes.
    Prefix(Vec<u8>),
}

impl Watched {
    /// What a request asks to watch: `prefix` if given, else `key`, checked
    /// against `limits` as a key is.
    pub fn checked(
        key: Vec<u8>,
        prefix: Option<Vec<u8>>,
        limits: &super::Limits,
    ) -> Result<Self, NodeError> {
        match prefix {
            Some(p) if p.len() > limits.max_key_bytes => Err(NodeError::KeyTooLong {
                len: p.len(),
                max: limits.max_key_bytes,
            }),
            Some(p) => Ok(Watched::Prefix(p)),
            None => {
                super::Query::new(super::Operation::Get, key.clone(), limits)?;
                Ok(Watched::Key(key))
            }
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Watched::Key(k) => k == key,
            Watched::Prefix(p) => key.starts_with(p),
        }
    }
}

/// A node's recent changes, and a broadcast of new ones. Each change is
/// copied once, when recorded, and shared from then on.
#[derive(Debug)]
pub(super) struct ChangeLog {
    recent: Mutex<Recent>,
    tx: broadcast::Sender<Logged>,
    keep: WatchSettings,
}

/// The retained changes, oldest recorded first, the bytes of their keys and
/// values, and the newest version of those dropped.
#[derive(Debug, Default)]
struct Recent {
    changes: VecDeque<Logged>,
    bytes: usize,
    dropped: Option<Version>,
}

/// A change in the log: the entry, and when it was stored if this node took
/// it as a replica's copy (`None`: an owner's write, logged when it settled).
#[derive(Debug, Clone)]
struct Logged {
    entry: Arc<Entry>,
    copied: Option<tokio::time::Instant>,
}

impl ChangeLog {
    /// An empty log keeping what `keep` says.
    pub fn new(keep: WatchSettings) -> Self {
        Self {
            recent: Mutex::new(Recent::default()),
            tx: broadcast::channel(1024).0,
            keep,
        }
    }
}

/// Records its change in a [`ChangeLog`] when dropped
/// ([`ChangeLog::when_settled`]).
pub(super) struct Settling<'a> {
    log: &'a ChangeLog,
    change: Option<Entry>,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if let Some(change) = self.change.take() {
            self.log.record(change);
        }
    }
}

fn size(e: &Entry) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len)
}

impl ChangeLog {
    /// Notes a change this node applied as owner, once settled.
    pub fn record(&self, change: Entry) {
        self.log(Logged {
            entry: Arc::new(change),
            copied: None,
        });
    }

    /// Notes a replica's copy this node stored (newer than its own), before
    /// its owner's acknowledgement.
    pub fn record_copy(&self, copy: Arc<Entry>) {
        self.log(Logged {
            entry: copy,
            copied: Some(tokio::time::Instant::now()),
        });
    }

    fn log(&self, change: Logged) {
        // Logged and sent under one lock, which a new watch takes to
        // subscribe and read the log (`subscribe_since`): each change reaches
        // it one way or the other.
        let mut recent = self.recent();
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(change.clone());
        }
        recent.bytes += size(&change.entry);
        recent.changes.push_back(change);
        while recent.changes.len() > self.keep.retained
            || (recent.bytes > self.keep.retained_bytes && recent.changes.len() > 1)
        {
            if let Some(old) = recent.changes.pop_front() {
                recent.bytes -= size(&old.entry);
                recent.dropped = recent.dropped.max(Some(old.entry.version));
            }
        }
    }

    /// A subscription to the changes from now on, and [`ChangeLog::since`]
    /// `since` (nothing, without one), taken together: no change falls
    /// between them.
    fn subscribe_since(
        &self,
        watched: &Watched,
        since: Option<Version>,
    ) -> (broadcast::Receiver<Logged>, Vec<Logged>, bool) {
        let recent = self.recent();
        let live = self.tx.subscribe();
        let (backlog, reaches) = match since {
            Some(v) => Self::retained_since(&recent, watched, v),
            None => (Vec::new(), false),
        };
        (live, backlog, reaches)
    }

    /// The retained changes `watched` follows after `since`, in version order
    /// (an owner logs its writes as they settle, which need not be the order
    /// they were made in), and whether the log reaches back to `since` (it
    /// holds an older change, and dropped none newer).
    #[cfg(test)]
    fn since(&self, watched: &Watched, since: Version) -> (Vec<Arc<Entry>>, bool) {
        let (changes, reaches) = Self::retained_since(&self.recent(), watched, since);
        (changes.into_iter().map(|c| c.entry).collect(), reaches)
    }

    fn retained_since(recent: &Recent, watched: &Watched, since: Version) -> (Vec<Logged>, bool) {
        let reaches = recent.changes.iter().any(|c| c.entry.version <= since)
            && recent.dropped.is_none_or(|d| d <= since);
        let mut changes: Vec<_> = recent
            .changes
            .iter()
            .filter(|c| watched.matches(&c.entry.key) && c.entry.version > since)
            .cloned()
            .collect();
        changes.sort_by_key(|c| c.entry.version);
        (changes, reaches)
    }

    /// A change to record when the returned guard is dropped: when the write
    /// settles, or when its caller abandons it (a client that went away, a
    /// forward that timed out), since it is applied either way.
    #[must_use = "the change is recorded when the guard is dropped"]
    pub fn when_settled(&self, change: Entry) -> Settling<'_> {
        Settling {
            log: self,
            change: Some(change),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a prefix watch has delivered: the newest version of each key, so
/// that a change arriving again (from another replica, or a copy a replica
/// held) is not delivered twice. Two generations of up to [`DEDUPE_KEYS`]
/// keys each: when the newer fills, the older is forgotten, so a key is
/// remembered for at least the last `DEDUPE_KEYS` keys delivered.
#[derive(Debug, Default)]
struct Deliveries {
    newer: HashMap<Vec<u8>, Version>,
    older: HashMap<Vec<u8>, Version>,
}

impl Deliveries {
    /// Whether `e` is new, noting it if so.
    fn first_time(&mut self, e: &Entry) -> bool {
        let known = self.newer.get(&e.key).or_else(|| self.older.get(&e.key));
        if known.is_some_and(|v| *v >= e.version) {
            return false;
        }
        if self.newer.len() >= DEDUPE_KEYS && !self.newer.contains_key(&e.key) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(e.key.clone(), e.version);
        true
    }
}

/// The version a watch resumes after, as a client names it (an event's
/// version: 32 hex digits).
pub fn resume_after(token: Option<&str>) -> Result<Option<Version>, NodeError> {
    token
        .map(|t| {
            Version::from_token(t).ok_or_else(|| {
                NodeError::BadVersion(format!(
                    "{t:?}: a version is the 32 hex digits an event or a read answers"
                ))
            })
        })
        .transpose()
}

type Changes = mpsc::Receiver<Result<Entry, NodeError>>;

impl Node {
    /// Ends every watch this node serves (it is shutting down).
    pub(crate) fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Runs `stream` (which feeds the returned receiver) until it ends, its
    /// receiver goes away, or the node shuts down: a watch must not keep
    /// graceful shutdown waiting.
    fn spawn_stream<F>(
        self: &Arc<Self>,
        capacity: usize,
        stream: impl FnOnce(Arc<Self>, mpsc::Sender<Result<Entry, NodeError>>) -> F,
    ) -> Changes
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let mut closing = self.closing.subscribe();
        let watcher = tx.clone();
        let run = stream(self.clone(), tx);
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = closing.changed() => {}
                () = watcher.closed() => {}
                () = run => {}
            }
        });
        rx
    }

    /// This node's own changes that `watched` follows: for a key, those after
    /// `since` it retains (or, if its log does not reach back that far or no
    /// `since` is given, the key's current state), then live ones until it no
    /// longer keeps the key; for a prefix, those after `since` it retains,
    /// then live ones, each copy it took as a replica once its hold has ended
    /// (`node::copy_hold`). Ends if it falls behind its broadcast.
    pub fn watch_local(self: &Arc<Self>, watched: Watched, since: Option<Version>) -> Changes {
        self.spawn_stream(256, move |node, tx| async move {
            let (mut live, backlog, reaches) = node.change_log.subscribe_since(&watched, since);
            let mut last = since;
            let prefix = matches!(watched, Watched::Prefix(_));
            let mut held = CopyHold::new(node.config.timeouts.request, node.config.watch);
            // What a prefix stream sends now of a logged change.
            let now_or_held = |c: Logged, held: &mut CopyHold| match c.copied {
                Some(at) if prefix => held.take(at, c.entry, tokio::time::Instant::now()),
                _ => Some(c.entry),
            };
            let mut first: Vec<Entry> = backlog
                .into_iter()
                .filter_map(|c| now_or_held(c, &mut held))
                .map(|e| (*e).clone())
                .collect();
            // A key's state, read for a watch, is a read like any other: only
            // under a lease (the follower asks again, from its last version).
            if let Watched::Key(key) = &watched
                && node.owns_unleased(key_position(key))
            {
                let _ = tx.send(Err(NodeError::Unleased(Duration::ZERO))).await;
                return;
            }
            // Nor from an owner that is catching up (its store may lack
            // writes another owner of the arc made).
            if let Watched::Key(key) = &watched
                && node.owns_behind(key_position(key))
            {
                let _ = tx.send(Err(NodeError::CatchingUp)).await;
                return;
            }
            if let Watched::Key(key) = &watched
                && first.is_empty()
                && !reaches
            {
                // Nor does it answer a write not yet acknowledged (its
                // change comes on `live` once it settles).
                let position = key_position(key);
                let state = node
                    .pending
                    .read_settled(node.config.timeouts.request, || {
                        Ok((
                            node.store.entry(position, key)?,
                            crate::ring::Arc::point(position),
                        ))
                    })
                    .await;
                match state {
                    Ok(Some(e)) if since.is_none_or(|v| e.version > v) => first.push(e),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            for e in first {
                if let Watched::Key(_) = watched
                    && last.is_some_and(|v| e.version <= v)
                {
                    continue;
                }
                last = Some(last.map_or(e.version, |l| l.max(e.version)));
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut check = tokio::time::interval(HOLD_CHECK);
            loop {
                let next_due = held.next_due();
                tokio::select! {
                    got = live.recv() => match got {
                        Ok(c) if watched.matches(&c.entry.key) => {
                            let Some(e) = now_or_held(c, &mut held) else {
                                continue;
                            };
                            // A key's changes in version order; a prefix's as
                            // they come.
                            if let Watched::Key(_) = watched {
                                if last.is_some_and(|v| e.version <= v) {
                                    continue;
                                }
                                last = Some(e.version);
                            }
                            if tx.send(Ok((*e).clone())).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // Fell behind the broadcast: end, so the watcher
                        // resumes from its last version.
                        Err(_) => return,
                    },
                    () = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)),
                        if next_due.is_some() =>
                    {
                        for e in held.due(tokio::time::Instant::now()) {
                            if tx.send(Ok((*e).clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = check.tick() => {
                        let factor = node.config.replication.factor;
                        // A key this node no longer keeps, or owns without a
                        // lease (it may be cut off while another takes the
                        // arc over): the follower asks the owner again.
                        if let Watched::Key(key) = &watched
                            && (!node.view().kept_arc(factor).contains(key_position(key))
                                || node.owns_unleased(key_position(key)))
                        {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// `member`'s local stream of what `watched` follows after `since`
    /// (this node's own if it is `member`). Ends when that stream ends or
    /// cannot be opened.
    fn member_stream(
        self: &Arc<Self>,
        member: &Member,
        watched: &Watched,
        since: Option<Version>,
    ) -> Changes {
        if *member == self.me() {
            return self.watch_local(watched.clone(), since);
        }
        let request = local_watch_request(watched, since);
        let addr = member.addr.clone();
        self.spawn_stream(256, move |node, tx| async move {
            let Ok(mut client) = node.peers.client(&addr) else {
                return;
            };
            let Ok(stream) = client.watch(request).await else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(ev)) = stream.message().await {
                let Some(e) = entry_of_event(ev) else { return };
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        })
    }

    /// `key`'s changes after `since`, following its owner (see the module
    /// docs), until the receiver is dropped.
    pub fn watch(self: &Arc<Self>, key: Vec<u8>, since: Option<Version>) -> Changes {
        self.spawn_stream(64, move |node, tx| async move {
            let watched = Watched::Key(key.clone());
            let position = key_position(&key);
            let mut last = since;
            let mut delay = Duration::from_millis(50);
            while !tx.is_closed() {
                let owner = node.routes().owner(position).clone();
                let mut changes = node.member_stream(&owner, &watched, last);
                while let Some(change) = changes.recv().await {
                    let Ok(e) = change else { break };
                    last = Some(last.map_or(e.version, |l| l.max(e.version)));
                    delay = Duration::from_millis(50);
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                // The owner's stream ended: it failed, left or moved the key.
                // Ask again once the ring has had a moment to repair.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        })
    }

    /// The changes of keys starting with `prefix` after `since` (from now if
    /// none), gathered from every member of the routing table (relearned
    /// every second; a member's stream that ends is opened again from the
    /// last version it sent), each delivered once.
    pub fn watch_prefix(self: &Arc<Self>, prefix: Vec<u8>, since: Option<Version>) -> Changes {
        self.spawn_stream(256, move |node, tx| async move {
            let watched = Watched::Prefix(prefix);
            // Changes before the watch began are not replayed.
            let since = since.unwrap_or(Version {
                micros: now_micros(),
                node: 0,
            });
            let (merged, mut events) = mpsc::channel::<(String, Option<Entry>)>(256);
            // Ordered: relays start and are aborted in the same order in
            // every process, so a simulated run replays exactly.
            let mut resume: BTreeMap<String, Version> = BTreeMap::new();
            let mut open: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
            let mut delivered = Deliveries::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let members: Vec<Member> = node.routes().members().cloned().collect();
                        for m in members {
                            if open.get(&m.addr).is_some_and(|h| !h.is_finished()) {
                                continue;
                            }
                            let from = *resume.entry(m.addr.clone()).or_insert(since);
                            let mut changes = node.member_stream(&m, &watched, Some(from));
                            let merged = merged.clone();
                            let addr = m.addr.clone();
                            open.insert(m.addr, tokio::spawn(async move {
                                while let Some(Ok(e)) = changes.recv().await {
                                    if merged.send((addr.clone(), Some(e))).await.is_err() {
                                        return;
                                    }
                                }
                                let _ = merged.send((addr, None)).await;
                            }));
                        }
                    }
                    got = events.recv() => match got {
                        Some((addr, Some(e))) => {
                            let from = resume.entry(addr).or_insert(since);
                            *from = (*from).max(e.version);
                            if delivered.first_time(&e) && tx.send(Ok(e)).await.is_err() {
                                break;
                            }
                        }
                        Some((addr, None)) => {
                            open.remove(&addr);
                        }
                        None => break,
                    },
                }
            }
            for (_, relay) in open {
                relay.abort();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    /// The owner's only replica cannot be reached, so a write is applied
    /// here and never acknowledged: a watch open before it, and one opened
    /// while it is in flight, hear of it only once it has settled (failed),
    /// as a read of the key would.
    #[tokio::test(start_paused = true)]
    async fn a_watch_hears_of_a_write_when_it_settles() {
        let node = crate::node::owner_with_unreachable_replica();
        let key = b"k".to_vec();
        let mut before = node.watch_local(Watched::Key(key.clone()), None);
        let (write, _) = crate::node::write_in_flight(&node, &key, b"v").await;
        let mut during = node.watch_local(Watched::Key(key.clone()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(before.try_recv().is_err(), "heard of a write in flight");
        assert!(during.try_recv().is_err(), "a state with a write in flight");
        assert!(!write.is_finished());

        assert!(write.await.unwrap().is_err(), "no replica holds the write");
        for watch in [&mut before, &mut during] {
            let heard = watch.recv().await.expect("a change").expect("not an error");
            assert_eq!(heard.value.as_deref(), Some(&b"v"[..]));
        }
    }

    /// A write's caller goes away (a client, or a forward that timed out)
    /// while the write is in flight: the write is applied, so watchers hear
    /// of it all the same.
    #[tokio::test(start_paused = true)]
    async fn a_watch_hears_of_a_write_its_caller_abandoned() {
        let node = crate::node::owner_with_unreachable_replica();
        let key = b"k".to_vec();
        let mut watch = node.watch_local(Watched::Key(key.clone()), None);
        let (write, _) = crate::node::write_in_flight(&node, &key, b"v").await;
        write.abort();
        assert!(write.await.unwrap_err().is_cancelled());
        let heard = tokio::time::timeout(Duration::from_secs(60), watch.recv())
            .await
            .expect("the watch heard nothing of the abandoned write")
            .expect("a change")
            .expect("not an error");
        assert_eq!(heard.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(node.pending.in_flight(key_position(&key)), None);
    }

    /// The next change `stream` sends, within twice `timeout`.
    async fn next(stream: &mut Changes, timeout: Duration) -> Entry {
        tokio::time::timeout(timeout * 2, stream.recv())
            .await
            .expect("a change in time")
            .expect("the stream is open")
            .expect("not an error")
    }

    /// A replica stores a copy before its owner has heard from every
    /// replica: its prefix stream sends its owner's settled writes at once,
    /// and the copy only once the request timeout has passed (by then the
    /// owner has told the watcher itself, or failed).
    #[tokio::test(start_paused = true)]
    async fn a_prefix_stream_holds_a_replicas_copy_for_the_request_timeout() {
        // The other node owns the key; this one replicates its arc.
        let other = Position(key_position(b"p/copy").0.wrapping_sub(1));
        let node = crate::node::serving_beside(
            Member::new(Position(other.0.wrapping_add(1 << 63)), "http://me"),
            Member::new(other, "http://other"),
        );
        let timeout = node.config.timeouts.request;
        let mut stream = node.watch_local(Watched::Prefix(b"p/".to_vec()), None);
        // The stream subscribes to the log once its task runs.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let copy = Entry {
            position: key_position(b"p/copy"),
            key: b"p/copy".to_vec(),
            value: Some(b"v".to_vec()),
            version: Version { micros: 1, node: 2 },
            expires: None,
        };
        node.accept_replicas(vec![copy.clone()], None)
            .await
            .unwrap();
        node.change_log.record(Entry {
            key: b"p/own".to_vec(),
            version: Version { micros: 2, node: 1 },
            ..copy.clone()
        });
        let first = next(&mut stream, timeout).await;
        assert_eq!(first.key, b"p/own", "the owner's write comes at once");
        // A stream that resumes over the log holds the copy as long (from
        // when it was stored); a key's stream, which follows the owner, does
        // not hold it.
        tokio::time::advance(timeout / 2).await;
        let mut resumed =
            node.watch_local(Watched::Prefix(b"p/".to_vec()), Some(Version::default()));
        let mut key = node.watch_local(Watched::Key(b"p/copy".to_vec()), Some(Version::default()));
        assert_eq!(next(&mut key, timeout).await.version, copy.version);
        assert_eq!(next(&mut resumed, timeout).await.key, b"p/own");
        tokio::time::advance(timeout / 2 - Duration::from_millis(1)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            stream.try_recv().is_err(),
            "the copy came before its hold ended"
        );
        assert!(
            resumed.try_recv().is_err(),
            "the copy came before its hold ended"
        );
        let started = tokio::time::Instant::now();
        assert_eq!(next(&mut stream, timeout).await.key, b"p/copy");
        assert_eq!(next(&mut resumed, timeout).await.key, b"p/copy");
        assert!(
            started.elapsed() <= Duration::from_millis(1),
            "sent as its hold ended"
        );
    }

    #[tokio::test]
    async fn an_owner_without_a_lease_gives_a_watch_no_state() {
        let key = b"k".to_vec();
        let at = key_position(&key);
        // This node owns the arc from just below the key to well past it.
        let node = crate::node::serving_beside(
            Member::new(Position(at.0.wrapping_sub(10)), "http://me"),
            Member::new(Position(at.0.wrapping_add(1 << 40)), "http://other"),
        );
        node.store.set(at, key.clone(), b"v".to_vec(), 1).unwrap();
        let mut unleased = node.watch_local(Watched::Key(key.clone()), None);
        assert!(matches!(
            unleased.recv().await,
            Some(Err(NodeError::Unleased(_)))
        ));
        assert!(unleased.recv().await.is_none(), "the stream ends");
        let now = tokio::time::Instant::now().into_std();
        node.update_leases(|l| l.granted(now));
        let mut leased = node.watch_local(Watched::Key(key), None);
        let state = leased.recv().await.expect("a state").expect("not an error");
        assert_eq!(state.value.as_deref(), Some(&b"v"[..]));
    }

    fn change(key: &str, micros: u64, value_len: usize) -> Entry {
        Entry {
            position: Position(0),
            key: key.into(),
            value: Some(vec![0; value_len]),
            version: Version { micros, node: 1 },
            expires: None,
        }
    }

    #[test]
    fn the_log_keeps_the_newest_changes_within_its_count_and_bytes() {
        let log = ChangeLog::new(WatchSettings::default());
        for i in 0..(RETAINED as u64 + 10) {
            log.record(change("k", i + 1, 1));
        }
        let (kept, reaches) = log.since(&Watched::Key(b"k".to_vec()), Version::default());
        assert_eq!(kept.len(), RETAINED);
        assert_eq!(kept[0].version.micros, 11, "the oldest went first");
        assert!(!reaches, "it no longer reaches back to the start");
        let big = ChangeLog::new(WatchSettings::default());
        big.record(change("a", 1, RETAINED_BYTES / 2));
        big.record(change("b", 2, RETAINED_BYTES / 2));
        big.record(change("c", 3, 10));
        let (kept, _) = big.since(&Watched::Prefix(Vec::new()), Version::default());
        let keys: Vec<&[u8]> = kept.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(keys, [b"b".as_slice(), b"c"], "over 8 MiB: the oldest went");
    }

    #[test]
    fn a_watch_gets_the_changes_after_its_version_of_what_it_follows() {
        let log = ChangeLog::new(WatchSettings::default());
        log.record(change("p/1", 5, 1));
        log.record(change("q/1", 6, 1));
        log.record(change("p/2", 7, 1));
        log.record(change("p/1", 8, 1));
        let since = Version { micros: 5, node: 1 };
        let (key, reaches) = log.since(&Watched::Key(b"p/1".to_vec()), since);
        assert_eq!(
            key.iter().map(|e| e.version.micros).collect::<Vec<_>>(),
            [8]
        );
        assert!(reaches);
        let (prefix, _) = log.since(&Watched::Prefix(b"p/".to_vec()), since);
        assert_eq!(
            prefix.iter().map(|e| e.version.micros).collect::<Vec<_>>(),
            [7, 8]
        );
    }

    #[test]
    fn changes_logged_out_of_order_come_in_version_order() {
        // Writes settle in any order: the later one (8) was logged first.
        let log = ChangeLog::new(WatchSettings {
            retained: 3,
            ..WatchSettings::default()
        });
        log.record(change("k", 4, 1));
        log.record(change("k", 8, 1));
        log.record(change("k", 7, 1));
        let since = Version { micros: 4, node: 1 };
        let (changes, reaches) = log.since(&Watched::Key(b"k".to_vec()), since);
        assert_eq!(
            changes.iter().map(|e| e.version.micros).collect::<Vec<_>>(),
            [7, 8]
        );
        assert!(reaches);
        // 4 is dropped, then 8: the log still holds 7, but no longer all
        // that came after it.
        log.record(change("k", 9, 1));
        log.record(change("k", 10, 1));
        let seven = Version { micros: 7, node: 1 };
        let (_, reaches) = log.since(&Watched::Key(b"k".to_vec()), seven);
        assert!(!reaches);
    }

    #[test]
    fn each_change_is_delivered_once_whichever_copy_comes_first() {
        let mut d = Deliveries::default();
        assert!(d.first_time(&change("k", 5, 1)));
        assert!(!d.first_time(&change("k", 5, 1)), "a replica's copy");
        assert!(!d.first_time(&change("k", 4, 1)), "an older change, late");
        assert!(d.first_time(&change("k", 6, 1)));
        assert!(d.first_time(&change("other", 1, 1)));
    }

    #[test]
    fn a_key_delivered_within_the_last_dedupe_keys_is_remembered() {
        let mut d = Deliveries::default();
        assert!(d.first_time(&change("k", 5, 1)));
        for i in 0..DEDUPE_KEYS {
            assert!(d.first_time(&change(&format!("fill/{i}"), 1, 1)));
        }
        assert!(
            !d.first_time(&change("k", 5, 1)),
            "a late copy, after a full generation"
        );
        assert!(!d.first_time(&change("fill/0", 1, 1)));
    }
}
