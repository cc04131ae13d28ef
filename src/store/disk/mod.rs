//! The on-disk store: redb (an embedded, ACID, pure-Rust B-tree store) holding
//! the entries, a compact in-memory index of them, and group commit.
//!
//! Why redb: a well-kept embedded engine with crash-safe transactions and an
//! explicit fsync-on-commit durability level, no C dependencies (nothing to
//! install), and ordered keys, so an arc is a range scan as in memory.
//!
//! Values stay on disk: memory holds the [`index`] (identity, version and digest
//! hash of every entry, no values; about 70 bytes a key), the [`overlay`] of
//! writes not yet committed, and redb's page cache, whose size is
//! [`DiskOptions::cache_bytes`] (`--cache-mb`). Counts, digests and version checks
//! run from the index; values (`get`, `entry`, `at_position`, `entries_in`) are
//! read from the overlay, then from redb.
//!
//! Every mutation is applied to the index and the overlay and queued, in the same
//! order, for the [`commit`] thread (group commit). [`Store::sync_point`] resolves
//! once every mutation queued so far is on disk, or at once in
//! [`SyncMode::Batched`], where the committer commits every interval instead.
//! [`Store::durable_point`] always waits for the disk.
//!
//! "On disk" means in the [`wal`] (write-ahead log) in [`SyncMode::Always`]:
//! redb is committed behind it in large checkpoints, and opening the store
//! replays the log's records that redb does not have yet.

mod commit;
mod index;
mod layout;
mod overlay;
mod read;
mod wal;

pub(super) use layout::FILE_NAME;

use super::expiring::Expiring;
use super::{Bucket, Entry, Store, StoreError, SyncFuture, Version, Written, now_micros};
use crate::ring::{Arc, Member, Position};
use commit::{Committer, Mutation, Work};
use index::{Index, IndexBuilder, Meta, Slot};
use layout::{ENTRIES, META, decode, header, identity, wal_generation, wal_salt};
use overlay::{Overlay, Pending};
use prometheus_client::metrics::histogram::Histogram;
use read::Found;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use std::collections::{BTreeSet, HashSet};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The default size of redb's page cache (`--cache-mb`), in MiB: at 1 M keys of
/// 100 bytes it keeps a node near 100 MB resident (see docs/performance.md).
pub const DEFAULT_CACHE_MB: usize = 32;

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// A write is acknowledged only once it is fsynced (group-committed).
    Always,
    /// Writes are acknowledged at once and fsynced every interval: a crash may
    /// lose the last interval's writes.
    Batched(Duration),
}

/// How to open a [`DiskStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// When a write counts as durable.
    pub sync: SyncMode,
    /// The size of redb's page cache, in bytes: the memory spent on values and
    /// keys read from disk (redb's own default, 1 GiB, would hold a node's
    /// whole data).
    pub cache_bytes: usize,
    /// In [`SyncMode::Always`], the longest a durable write waits in the
    /// write-ahead log before redb has it too (a checkpoint): longer gathers
    /// more writes per B-tree commit, and keeps more in the overlay.
    pub checkpoint_every: Duration,
    /// In [`SyncMode::Always`], how long the committer waits before a round's
    /// fsync while writes come faster than rounds (on average at least one
    /// arrives while a round runs), so that more of them share it, as
    /// PostgreSQL's `commit_delay`. A lone writer's writes make no round wait.
    /// Zero (the default): no wait, and the arrivals are not counted.
    pub commit_delay: Duration,
}

/// The default [`DiskOptions::checkpoint_every`].
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The default [`DiskOptions::commit_delay`]: none. It pays only with many
/// concurrent writers and costs a few, as measured in docs/performance.md
/// ("A commit delay").
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::ZERO;

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            cache_bytes: DEFAULT_CACHE_MB << 20,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

/// Entries in redb, indexed in memory. See the module docs.
pub struct DiskStore {
    db: std::sync::Arc<Database>,
    index: RwLock<Index>,
    overlay: std::sync::Arc<RwLock<Overlay>>,
    /// Held while applying a mutation and queueing it, so the queue's order is
    /// the order the index saw, and a write's read of the previous value is not
    /// raced by another write.
    order: Mutex<mpsc::Sender<Work>>,
    queued: AtomicU64,
    committed: watch::Receiver<u64>,
    /// The last sequence number redb has (the rest is in the log).
    #[cfg_attr(not(test), allow(dead_code))]
    checkpointed: watch::Receiver<u64>,
    failure: std::sync::Arc<Mutex<Option<String>>>,
    identity: Option<Member>,
    /// Keys written with an expiry, by expiry: what `purge_lapsed` removes
    /// (a key written again since is checked before it goes).
    expiring: Expiring,
    mode: SyncMode,
    /// How long each commit (its fsync included) took.
    commits: Histogram,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("keys", &self.len())
            .field("mode", &self.mode)
            .finish()
    }
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

// A panic while holding a lock cannot leave the index or overlay half-updated
// in a way later calls rely on (each mutation is a few map calls), so a
// poisoned lock is still used.
fn lock_read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn lock_write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl DiskStore {
    /// Opens (or creates) the store in `dir` with the default cache size.
    pub fn open(dir: &Path, mode: SyncMode) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            DiskOptions {
                sync: mode,
                ..DiskOptions::default()
            },
        )
    }

    /// Opens (or creates) the store in `dir`: replays the write-ahead log into
    /// redb, indexes the entries in one scan (keeping no value) and loads its
    /// identity.
    pub fn open_with(dir: &Path, options: DiskOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| engine(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let open = || {
            redb::Builder::new()
                .set_cache_size(options.cache_bytes)
                .create(&path)
                .map_err(|e| engine(format!("cannot open {}: {e}", path.display())))
        };
        let db = open()?;
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(ENTRIES).map_err(engine)?;
        txn.open_table(META).map_err(engine)?;
        let salt = wal_salt(&txn)?;
        txn.commit().map_err(engine)?;

        // Replay what the log holds beyond redb, and start a new generation
        // whether or not it held anything: bytes of this one that were written
        // but never made durable must not become readable records later.
        let generation = {
            let read = db.begin_read().map_err(engine)?;
            wal_generation(&read.open_table(META).map_err(engine)?)?
        };
        let (wal, replayed) = wal::Wal::open(dir, generation, salt).map_err(engine)?;
        commit::checkpoint(&db, &replayed, wal.generation()).map_err(engine)?;
        if !replayed.is_empty() {
            tracing::info!(
                mutations = replayed.len(),
                "replayed the write-ahead log into the store"
            );
        }
        drop(replayed);
        // Opened again: after the commit above, opening took longer
        // (5 M keys: 4.4 and 5.3 against 3.7 s, two runs each; see
        // docs/performance.md), why is not known.
        db.close().map_err(engine)?;
        let db = open()?;

        let read = db.begin_read().map_err(engine)?;
        let entries = read.open_table(ENTRIES).map_err(engine)?;
        let mut index =
            IndexBuilder::new(usize::try_from(entries.len().map_err(engine)?).unwrap_or_default());
        let expiring = Expiring::default();
        for row in entries.iter().map_err(engine)? {
            let (k, v) = row.map_err(engine)?;
            let (position, key) = k.value();
            let (h, _) = header(position, v.value())?;
            if let Some(at) = h.expires {
                expiring.note_at(at, position, key);
            }
            let position = Position(position);
            index.push(
                position,
                key,
                Meta::of(position, key, h.version, h.tombstone),
            );
        }
        drop(entries);
        let index = index.finish();
        let identity = identity(&read.open_table(META).map_err(engine)?)?;
        drop(read);

        let db = std::sync::Arc::new(db);
        let mut overlay = Overlay::default();
        overlay.set_snapshot(Some(overlay::Snapshot(std::sync::Arc::new(
            db.begin_read().map_err(engine)?,
        ))));
        let overlay = std::sync::Arc::new(RwLock::new(overlay));
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(0);
        let (checkpointed_tx, checkpointed) = watch::channel(0);
        let failure = std::sync::Arc::new(Mutex::new(None));
        let commits = crate::metrics::latency_histogram();
        let committer = Committer {
            commits: commits.clone(),
            db: db.clone(),
            wal,
            queue: rx,
            reports: tx.clone(),
            committed: committed_tx,
            checkpointed: checkpointed_tx,
            checkpoint_every: options.checkpoint_every,
            commit_delay: options.commit_delay,
            failure: failure.clone(),
            overlay: overlay.clone(),
            mode: options.sync,
        };
        std::thread::Builder::new()
            .name("crustyring-commit".into())
            .spawn(move || committer.run())
            .map_err(engine)?;
        tracing::info!(path = %path.display(), keys = index.live(), "opened the on-disk store");
        Ok(Self {
            db,
            index: RwLock::new(index),
            overlay,
            order: Mutex::new(tx),
            queued: AtomicU64::new(0),
            committed,
            checkpointed,
            failure,
            identity,
            expiring,
            mode: options.sync,
            commits,
        })
    }

    fn order(&self) -> MutexGuard<'_, mpsc::Sender<Work>> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `mutations` in the overlay and queues them, in order; call with
    /// the order lock held.
    fn queue(&self, log: &mpsc::Sender<Work>, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        let mut overlay = lock_write(&self.overlay);
        for m in mutations {
            let seq = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
            match &m {
                Mutation::Put(e) => {
                    overlay.record(seq, e.position.0, e.key.clone(), Pending::Put(e.clone()));
                }
                Mutation::Remove(p, k) => overlay.record(seq, *p, k.clone(), Pending::Removed),
                Mutation::Identity(_) => {}
            }
            log.send(Work::Mutation(seq, m))
                .map_err(|_| engine("the commit thread has stopped"))?;
        }
        Ok(())
    }

    /// Writes `value` (`None`: delete) by `writer` with the next version for the
    /// key; returns the previous live value and the entry as written.
    fn write_next(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        writer: u64,
        expires: Option<u64>,
    ) -> Result<Written, StoreError> {
        let log = self.order();
        let before = lock_read(&self.index).get(position, &key);
        let now = now_micros();
        let previous = match before {
            Some(m) if !m.tombstone => self
                .stored(position, &key)?
                .filter(|e| e.is_live(now))
                .and_then(|e| e.value),
            _ => None,
        };
        let version = Version::next(before.map(|m| m.version), writer);
        let meta = Meta::of(position, &key, version, value.is_none());
        lock_write(&self.index).put(position, &key, meta);
        let entry = Entry {
            position,
            key,
            expires: expires.filter(|_| value.is_some()),
            value,
            version,
        };
        self.expiring.note(&entry);
        self.queue(&log, vec![Mutation::Put(entry.clone())])?;
        Ok(Written { previous, entry })
    }

    /// Forgets `ids` in the index and on disk; call with the order lock held.
    fn remove_ids(
        &self,
        log: &mpsc::Sender<Work>,
        ids: Vec<(u64, Vec<u8>)>,
    ) -> Result<usize, StoreError> {
        let n = ids.len();
        {
            let mut index = lock_write(&self.index);
            for (position, key) in &ids {
                let slot = index.slot(Position(*position), key);
                index.remove(slot);
            }
        }
        let removals = ids.into_iter().map(|(p, k)| Mutation::Remove(p, k));
        self.queue(log, removals.collect())?;
        Ok(n)
    }

    /// How many writes wait in the overlay for their commit.
    #[cfg(test)]
    fn pending(&self) -> usize {
        lock_read(&self.overlay).len()
    }
}

impl Drop for DiskStore {
    /// Lets the committer checkpoint what is left and stop.
    fn drop(&mut self) {
        let _ = self.order().send(Work::Close);
    }
}

impl Store for DiskStore {
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let now = now_micros();
        Ok(self
            .stored(position, key)?
            .filter(|e| e.is_live(now))
            .and_then(|e| e.value))
    }

    fn set_expiring(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
        expires: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.write_next(position, key, Some(value), writer, expires)
    }

    fn delete(&self, position: Position, key: &[u8], writer: u64) -> Result<Written, StoreError> {
        self.write_next(position, key.to_vec(), None, writer, None)
    }

    fn purge_lapsed(&self, now_micros: u64) -> Result<usize, StoreError> {
        let due = self.expiring.due(now_micros);
        if due.is_empty() {
            return Ok(0);
        }
        let log = self.order();
        // Only what still holds that expiry: a key written since stays.
        let mut ids = Vec::new();
        for (at, position, key) in due {
            if self
                .stored(Position(position), &key)?
                .is_some_and(|e| e.expires == Some(at))
            {
                ids.push((position, key));
            }
        }
        self.remove_ids(&log, ids)
    }

    fn entry(&self, position: Position, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.stored(position, key)
    }

    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError> {
        let mut entries = self.entries_in(Arc::point(position))?;
        entries.retain(|e| e.value.is_some());
        Ok(entries)
    }

    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        self.scan(arc, |position, key, found| {
            out.push(match found {
                Found::Disk(stored) => decode(position, key, stored)?,
                Found::Pending(e) => e.clone(),
            });
            Ok(true)
        })?;
        Ok(out)
    }

    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        // Hash before taking the locks.
        let metas: Vec<Meta> = entries
            .iter()
            .map(|e| Meta::of(e.position, &e.key, e.version, e.value.is_none()))
            .collect();
        let log = self.order();
        let mut winners = Vec::new();
        {
            let mut index = lock_write(&self.index);
            for (e, meta) in entries.into_iter().zip(metas) {
                let stored = index.get(e.position, &e.key);
                if stored.is_some_and(|m| m.version >= e.version) {
                    continue;
                }
                index.put(e.position, &e.key, meta);
                self.expiring.note(&e);
                winners.push(Mutation::Put(e));
            }
        }
        self.queue(&log, winners)
    }

    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError> {
        let log = self.order();
        let mut ids = Vec::new();
        self.scan(arc, |position, key, _| {
            ids.push((position, key.to_vec()));
            Ok(true)
        })?;
        self.remove_ids(&log, ids)
    }

    fn remove_exact(&self, entries: &[(Position, Vec<u8>, Version)]) -> Result<usize, StoreError> {
        let log = self.order();
        let ids = {
            let index = lock_read(&self.index);
            entries
                .iter()
                .filter(|(p, k, v)| index.get(*p, k).is_some_and(|m| m.version == *v))
                .map(|(p, k, _)| (p.0, k.clone()))
                .collect()
        };
        self.remove_ids(&log, ids)
    }

    fn len(&self) -> usize {
        lock_read(&self.index).live()
    }

    fn count_in(&self, arc: Arc) -> usize {
        lock_read(&self.index).count_in(arc)
    }

    fn digest(&self, arc: Arc, buckets: usize) -> Result<Vec<Bucket>, StoreError> {
        Ok(lock_read(&self.index).digest(arc, buckets))
    }

    fn purge_tombstones(&self, before_micros: u64) -> Result<usize, StoreError> {
        let log = self.order();
        let (expired, keys): (HashSet<Slot>, _) = {
            let index = lock_read(&self.index);
            (
                index.expired(before_micros).into_iter().collect(),
                index.keys(),
            )
        };
        // The index knows the expired tombstones by slot; their raw keys are on
        // disk (or pending), at their positions.
        let positions: BTreeSet<u64> = expired.iter().map(|(p, _)| *p).collect();
        let mut ids = Vec::new();
        for position in positions {
            self.scan(Arc::point(Position(position)), |p, key, _| {
                if expired.contains(&Index::slot_with(&keys, Position(p), key)) {
                    ids.push((p, key.to_vec()));
                }
                Ok(true)
            })?;
        }
        self.remove_ids(&log, ids)
    }

    fn sync_point(&self) -> SyncFuture {
        if matches!(self.mode, SyncMode::Batched(_)) {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.durable_point()
    }

    fn durable_point(&self) -> SyncFuture {
        let target = self.queued.load(Ordering::SeqCst);
        let mut committed = self.committed.clone();
        let failure = self.failure.clone();
        Box::pin(async move {
            committed
                .wait_for(|c| *c >= target)
                .await
                .map_err(|_| engine("the commit thread has stopped"))?;
            match failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                Some(e) => Err(engine(format!("the write is not durable: {e}"))),
                None => Ok(()),
            }
        })
    }

    fn identity(&self) -> Option<Member> {
        self.identity.clone()
    }

    fn save_identity(&self, me: &Member) -> Result<(), StoreError> {
        let log = self.order();
        self.queue(&log, vec![Mutation::Identity(me.clone())])
    }

    fn page(
        &self,
        range: RangeInclusive<u64>,
        after: Option<&[u8]>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let (start, end) = (*range.start(), *range.end());
        let arc = Arc::new(Position(start), Position(end.wrapping_add(1)));
        let whole = start == 0 && end == u64::MAX;
        let mut out = Vec::new();
        let now = now_micros();
        if limit == 0 || (start > end) || (arc.start == arc.end && !whole) {
            return Ok(out);
        }
        self.scan(arc, |position, key, found| {
            let skip =
                (position == start && after.is_some_and(|a| key <= a)) || !key.starts_with(prefix);
            if !skip {
                let entry = match found {
                    Found::Disk(stored) => decode(position, key, stored)?,
                    Found::Pending(e) => e.clone(),
                };
                if entry.is_live(now) {
                    out.push(entry);
                }
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn commit_seconds(&self) -> Option<Histogram> {
        Some(self.commits.clone())
    }
}

#[cfg(test)]
mod tests;
