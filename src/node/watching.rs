//! Watching a key: its changes as they happen. Every node keeps a log of the
//! last [`RETAINED`] changes it applied (as owner, or as a replica taking
//! newer copies) and broadcasts each new one. A watch asked of any node follows
//! the key's owner: it streams from the owner's log (`Watch` with `local`),
//! and when that stream ends (the owner failed, left, or no longer holds the
//! key) it asks the key's owner again, resuming after the last version it
//! delivered. The new owner was a replica of the key, so its log holds the
//! same changes; a resume from a version older than the log reaches back gets
//! the key's current state instead of the changes in between.

use super::{Node, NodeError};
use crate::proto::dht;
use crate::ring::Member;
use crate::ring::key_position;
use crate::store::{Entry, Version, now_micros};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How many changes a node's log keeps at most.
pub const RETAINED: usize = 4096;
/// How many bytes of keys and values the log keeps at most: the oldest
/// changes go first.
pub const RETAINED_BYTES: usize = 8 << 20;
/// A prefix watch remembers the last version it delivered of at most this
/// many keys (to deliver each change once); past that it starts afresh.
const DEDUPE_KEYS: usize = 100_000;
/// How often a local watch checks that its node still holds the key.
const HOLD_CHECK: Duration = Duration::from_millis(500);

/// A node's recent changes, and a broadcast of new ones.
#[derive(Debug)]
pub(super) struct ChangeLog {
    recent: Mutex<(VecDeque<Entry>, usize)>,
    tx: broadcast::Sender<Entry>,
}

impl Default for ChangeLog {
    fn default() -> Self {
        Self {
            recent: Mutex::new((VecDeque::with_capacity(64), 0)),
            tx: broadcast::channel(1024).0,
        }
    }
}

fn size(e: &Entry) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len)
}

impl ChangeLog {
    /// Notes a change this node applied.
    pub fn record(&self, entry: &Entry) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(entry.clone());
        }
        let mut guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (recent, bytes) = &mut *guard;
        *bytes += size(entry);
        recent.push_back(entry.clone());
        while recent.len() > RETAINED || (*bytes > RETAINED_BYTES && recent.len() > 1) {
            if let Some(old) = recent.pop_front() {
                *bytes -= size(&old);
            }
        }
    }

    /// The retained changes of keys starting with `prefix` after `since`,
    /// oldest first.
    fn prefixed(&self, prefix: &[u8], since: Version) -> Vec<Entry> {
        let guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .iter()
            .filter(|e| e.key.starts_with(prefix) && e.version > since)
            .cloned()
            .collect()
    }

    /// The retained changes of `key` after `since`, oldest first, and whether
    /// the log reaches back to `since` (it holds an older change of anything).
    fn since(&self, key: &[u8], since: Version) -> (Vec<Entry>, bool) {
        let guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let recent = &guard.0;
        let reaches = recent.front().is_some_and(|e| e.version <= since);
        let changes = recent
            .iter()
            .filter(|e| e.key == key && e.version > since)
            .cloned()
            .collect();
        (changes, reaches)
    }
}

/// A change as a `WatchEvent`.
pub fn event(e: &Entry) -> dht::WatchEvent {
    let now = now_micros();
    dht::WatchEvent {
        key: e.key.clone(),
        deleted: e.value.is_none(),
        value: e.value.clone(),
        version: e.version.token(),
        ttl_ms: e.expires.map(|at| at.saturating_sub(now).div_ceil(1000)),
    }
}

impl Node {
    /// Ends every watch this node serves (it is shutting down).
    pub(super) fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// This node's own changes of `key` after `since` (or, without `since`,
    /// its current state first), until it no longer holds the key.
    pub fn watch_local(
        self: &std::sync::Arc<Self>,
        key: Vec<u8>,
        since: Option<Version>,
    ) -> mpsc::Receiver<Result<Entry, NodeError>> {
        let (tx, rx) = mpsc::channel(64);
        let node = self.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            let position = key_position(&key);
            let mut live = node.change_log.tx.subscribe();
            let mut last = since;
            let (backlog, reaches) = match since {
                Some(v) => node.change_log.since(&key, v),
                None => (Vec::new(), false),
            };
            // Where the log does not reach back: the current state.
            let mut first = backlog;
            if first.is_empty() && !reaches {
                match node.store.entry(position, &key) {
                    Ok(Some(e)) if since.is_none_or(|v| e.version > v) => first.push(e),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            for e in first {
                last = Some(e.version);
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut check = tokio::time::interval(HOLD_CHECK);
            loop {
                tokio::select! {
                    _ = closing.changed() => return,
                    got = live.recv() => match got {
                        Ok(e) if e.key == key && last.is_none_or(|v| e.version > v) => {
                            last = Some(e.version);
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // Fell behind the broadcast: end, so the watcher
                        // resumes from its last version.
                        Err(_) => return,
                    },
                    _ = check.tick() => {
                        let factor = node.config.replication.factor;
                        if !node.view().kept_arc(factor).contains(position) || tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }

    /// This node's own changes of keys starting with `prefix`: the retained
    /// ones after `since` (if given), then live ones, until the node shuts
    /// down or falls behind the broadcast.
    pub fn watch_local_prefix(
        self: &std::sync::Arc<Self>,
        prefix: Vec<u8>,
        since: Option<Version>,
    ) -> mpsc::Receiver<Result<Entry, NodeError>> {
        let (tx, rx) = mpsc::channel(256);
        let node = self.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            let mut live = node.change_log.tx.subscribe();
            let backlog = since.map_or_else(Vec::new, |v| node.change_log.prefixed(&prefix, v));
            for e in backlog {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    _ = closing.changed() => return,
                    got = live.recv() => match got {
                        Ok(e) if e.key.starts_with(&prefix) => {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
        });
        rx
    }

    /// The changes of keys starting with `prefix` after `since` (from now if
    /// none), gathered from every member: each change is logged by the key's
    /// owner and replicas, so a member's failure loses none, and each is
    /// delivered once (the newest version per key). Members are relearned
    /// from the routing table every second.
    pub fn watch_prefix(
        self: &std::sync::Arc<Self>,
        prefix: Vec<u8>,
        since: Option<Version>,
    ) -> mpsc::Receiver<Result<Entry, NodeError>> {
        let (tx, rx) = mpsc::channel(256);
        let node = self.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            // From now, when no version is given: changes before the watch
            // began are not replayed.
            let since = since.unwrap_or(Version {
                micros: now_micros(),
                node: 0,
            });
            let (merged, mut events) = mpsc::channel::<(String, Option<Entry>)>(256);
            let mut running: HashMap<String, Version> = HashMap::new();
            let mut streams: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
            let mut delivered: HashMap<Vec<u8>, Version> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = closing.changed() => break,
                    () = tx.closed() => break,
                    _ = tick.tick() => {
                        let members: Vec<Member> = node.routes().members().cloned().collect();
                        for m in members {
                            if streams.get(&m.addr).is_some_and(|h| !h.is_finished()) {
                                continue;
                            }
                            let from = *running.entry(m.addr.clone()).or_insert(since);
                            let handle = node.clone().relay_prefix(m, prefix.clone(), from, merged.clone());
                            streams.insert(handle.0, handle.1);
                        }
                    }
                    got = events.recv() => match got {
                        Some((addr, Some(e))) => {
                            let last = running.entry(addr).or_insert(since);
                            *last = (*last).max(e.version);
                            if delivered.get(&e.key).is_some_and(|v| *v >= e.version) {
                                continue;
                            }
                            if delivered.len() > DEDUPE_KEYS {
                                delivered.clear();
                            }
                            delivered.insert(e.key.clone(), e.version);
                            if tx.send(Ok(e)).await.is_err() {
                                break;
                            }
                        }
                        Some((addr, None)) => {
                            streams.remove(&addr);
                        }
                        None => break,
                    },
                }
            }
            for (_, h) in streams {
                h.abort();
            }
        });
        rx
    }

    /// Relays `member`'s local prefix stream into `merged` (`None` when it
    /// ends).
    fn relay_prefix(
        self: std::sync::Arc<Self>,
        member: Member,
        prefix: Vec<u8>,
        since: Version,
        merged: mpsc::Sender<(String, Option<Entry>)>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let addr = member.addr.clone();
        let handle = tokio::spawn(async move {
            let addr = member.addr.clone();
            if member == self.me() {
                let mut local = self.watch_local_prefix(prefix, Some(since));
                while let Some(Ok(e)) = local.recv().await {
                    if merged.send((addr.clone(), Some(e))).await.is_err() {
                        return;
                    }
                }
            } else if let Ok(mut client) = self.peers.client(&addr) {
                let request = dht::WatchRequest {
                    prefix: Some(prefix.clone()),
                    since: Some(since.token()),
                    local: true,
                    ..dht::WatchRequest::default()
                };
                if let Ok(stream) = client.watch(request).await {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(ev)) = stream.message().await {
                        let position = key_position(&ev.key);
                        let Some(e) = entry_of(ev, position) else {
                            break;
                        };
                        if merged.send((addr.clone(), Some(e))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = merged.send((addr, None)).await;
        });
        (addr, handle)
    }

    /// `key`'s changes after `since`, following its owner (see the module
    /// docs), until the receiver is dropped.
    pub fn watch(
        self: &std::sync::Arc<Self>,
        key: Vec<u8>,
        since: Option<Version>,
    ) -> mpsc::Receiver<Result<Entry, NodeError>> {
        let (tx, rx) = mpsc::channel(64);
        let node = self.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            // The watcher going away ends it at once, not at the next change.
            let watcher = tx.clone();
            tokio::select! {
                _ = closing.changed() => {}
                () = watcher.closed() => {}
                () = node.follow(key, since, tx) => {}
            }
        });
        rx
    }

    /// Streams `key`'s changes into `tx` from its owner, asking the owner
    /// again whenever its stream ends, until `tx` is closed.
    async fn follow(
        self: std::sync::Arc<Self>,
        key: Vec<u8>,
        since: Option<Version>,
        tx: mpsc::Sender<Result<Entry, NodeError>>,
    ) {
        let node = self;
        {
            let position = key_position(&key);
            let mut last = since;
            let mut delay = Duration::from_millis(50);
            while !tx.is_closed() {
                let owner = node.routes().owner(position).clone();
                let mut delivered = false;
                if owner == node.me() {
                    let mut local = node.watch_local(key.clone(), last);
                    while let Some(e) = local.recv().await {
                        let Ok(e) = e else { break };
                        last = Some(e.version);
                        delivered = true;
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                } else if let Ok(mut client) = node.peers.client(&owner.addr) {
                    let request = dht::WatchRequest {
                        key: key.clone(),
                        since: last.map(|v| v.token()),
                        local: true,
                        prefix: None,
                    };
                    if let Ok(stream) = client.watch(request).await {
                        let mut stream = stream.into_inner();
                        while let Ok(Some(ev)) = stream.message().await {
                            let Some(e) = entry_of(ev, position) else {
                                break;
                            };
                            last = Some(e.version);
                            delivered = true;
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                // The owner's stream ended: it failed, left or moved the key.
                // Ask again once the ring has had a moment to repair.
                if delivered {
                    delay = Duration::from_millis(50);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The change a peer's event describes.
fn entry_of(ev: dht::WatchEvent, position: crate::ring::Position) -> Option<Entry> {
    let now = now_micros();
    Some(Entry {
        position,
        version: Version::from_token(&ev.version)?,
        value: if ev.deleted {
            None
        } else {
            ev.value.or(Some(Vec::new()))
        },
        expires: ev
            .ttl_ms
            .map(|ms| now.saturating_add(ms.saturating_mul(1000))),
        key: ev.key,
    })
}
