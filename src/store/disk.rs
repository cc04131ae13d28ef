//! The on-disk store: redb (an embedded, ACID, pure-Rust B-tree store) behind an
//! in-memory index, with group commit.
//!
//! Why redb: a well-kept embedded engine with crash-safe transactions and an
//! explicit fsync-on-commit durability level, no C dependencies (nothing to
//! install), and ordered keys, so an arc is a range scan as in memory.
//!
//! How: every mutation is applied to the in-memory index (which serves reads)
//! and queued, in the same order, for a committer thread. The committer drains
//! whatever has queued up into one write transaction and commits it; writers that
//! arrived while an fsync ran share the next one (group commit), so
//! fsync-before-acknowledge scales with concurrency. [`Store::sync_point`]
//! resolves once every mutation queued so far is on disk, or at once in
//! [`SyncMode::Batched`], where the committer commits every interval instead.

use super::{Bucket, Entry, MemoryStore, Store, StoreError, SyncFuture, Version, Written};
use crate::ring::{Arc, Member, Position};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Entries by (position, raw key); the value is [`encode`]d with its version.
const ENTRIES: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("entries_v2");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// A write is acknowledged only once it is fsynced (group-committed).
    Always,
    /// Writes are acknowledged at once and fsynced every interval: a crash may
    /// lose the last interval's writes.
    Batched(Duration),
}

enum Mutation {
    /// Store this entry (a value or a tombstone) as it is.
    Put(Entry),
    /// Forget the key altogether (its arc moved elsewhere).
    Remove(u64, Vec<u8>),
    Identity(Member),
}

/// A stored value: a tag (1: value, 0: tombstone), the version's microseconds
/// and node (big-endian), then the value's bytes.
fn encode(e: &Entry) -> Vec<u8> {
    let value = e.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(u8::from(e.value.is_some()));
    out.extend_from_slice(&e.version.micros.to_be_bytes());
    out.extend_from_slice(&e.version.node.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(position: u64, key: &[u8], stored: &[u8]) -> Result<Entry, StoreError> {
    if stored.len() < 17 || stored[0] > 1 {
        return Err(engine(format!(
            "corrupt entry at position {position:016x}: {} bytes",
            stored.len()
        )));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&stored[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Ok(Entry {
        position: Position(position),
        key: key.to_vec(),
        value: (stored[0] == 1).then(|| stored[17..].to_vec()),
        version: Version {
            micros: word(1),
            node: word(9),
        },
    })
}

/// Entries in redb, served from memory. See the module docs.
pub struct DiskStore {
    memory: MemoryStore,
    /// Held while applying a mutation and queueing it, so the queue's order is
    /// the order the index saw.
    order: Mutex<mpsc::Sender<(u64, Mutation)>>,
    queued: AtomicU64,
    committed: watch::Receiver<u64>,
    failure: std::sync::Arc<Mutex<Option<String>>>,
    identity: Option<Member>,
    mode: SyncMode,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("keys", &self.memory.len())
            .field("mode", &self.mode)
            .finish()
    }
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, loading its entries and identity.
    pub fn open(dir: &Path, mode: SyncMode) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| engine(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("crustyring.redb");
        let db = Database::create(&path)
            .map_err(|e| engine(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(ENTRIES).map_err(engine)?;
        txn.open_table(META).map_err(engine)?;
        txn.commit().map_err(engine)?;

        let memory = MemoryStore::new();
        let read = db.begin_read().map_err(engine)?;
        let mut loaded = Vec::new();
        for row in read
            .open_table(ENTRIES)
            .map_err(engine)?
            .iter()
            .map_err(engine)?
        {
            let (k, v) = row.map_err(engine)?;
            let (position, key) = k.value();
            loaded.push(decode(position, key, v.value())?);
        }
        memory.insert_all(loaded)?;
        let meta = read.open_table(META).map_err(engine)?;
        let get = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(name).map_err(engine)?.map(|v| v.value().to_vec()))
        };
        let identity = match (get("id")?, get("addr")?) {
            (Some(id), Some(addr)) if id.len() == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&id);
                Some(Member::new(
                    Position(u64::from_be_bytes(bytes)),
                    String::from_utf8_lossy(&addr).into_owned(),
                ))
            }
            _ => None,
        };
        drop(meta);
        drop(read);

        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(0);
        let failure = std::sync::Arc::new(Mutex::new(None));
        let thread_failure = failure.clone();
        std::thread::Builder::new()
            .name("crustyring-commit".into())
            .spawn(move || commit_loop(db, rx, committed_tx, thread_failure, mode))
            .map_err(engine)?;
        tracing::info!(path = %path.display(), keys = memory.len(), "opened the on-disk store");
        Ok(Self {
            memory,
            order: Mutex::new(tx),
            queued: AtomicU64::new(0),
            committed,
            failure,
            identity,
            mode,
        })
    }

    fn order(&self) -> MutexGuard<'_, mpsc::Sender<(u64, Mutation)>> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `mutation`; call with the order lock held.
    fn queue(
        &self,
        log: &mpsc::Sender<(u64, Mutation)>,
        mutation: Mutation,
    ) -> Result<(), StoreError> {
        let seq = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        log.send((seq, mutation))
            .map_err(|_| engine("the commit thread has stopped"))
    }
}

/// The committer: drains the queue into one transaction per round.
fn commit_loop(
    db: Database,
    rx: mpsc::Receiver<(u64, Mutation)>,
    committed: watch::Sender<u64>,
    failure: std::sync::Arc<Mutex<Option<String>>>,
    mode: SyncMode,
) {
    while let Ok(first) = rx.recv() {
        if let SyncMode::Batched(interval) = mode {
            std::thread::sleep(interval);
        }
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let last = batch.last().map_or(0, |(seq, _)| *seq);
        let result = (|| -> Result<(), String> {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
                let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
                for (_, m) in &batch {
                    match m {
                        Mutation::Put(e) => {
                            entries
                                .insert((e.position.0, e.key.as_slice()), encode(e).as_slice())
                                .map_err(|e| e.to_string())?;
                        }
                        Mutation::Remove(p, k) => {
                            entries
                                .remove((*p, k.as_slice()))
                                .map_err(|e| e.to_string())?;
                        }
                        Mutation::Identity(m) => {
                            meta.insert("id", m.id.0.to_be_bytes().as_slice())
                                .map_err(|e| e.to_string())?;
                            meta.insert("addr", m.addr.as_bytes())
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
            txn.commit().map_err(|e| e.to_string())
        })();
        match result {
            Ok(()) => {
                committed.send_replace(last);
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; writes are no longer durable");
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                committed.send_replace(last);
            }
        }
    }
}

impl Store for DiskStore {
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.memory.get(position, key)
    }

    fn set(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
    ) -> Result<Written, StoreError> {
        let log = self.order();
        let written = self.memory.write_next(position, key, Some(value), writer);
        self.queue(&log, Mutation::Put(written.entry.clone()))?;
        Ok(written)
    }

    fn delete(&self, position: Position, key: &[u8], writer: u64) -> Result<Written, StoreError> {
        let log = self.order();
        let written = self.memory.write_next(position, key.to_vec(), None, writer);
        self.queue(&log, Mutation::Put(written.entry.clone()))?;
        Ok(written)
    }

    fn entry(&self, position: Position, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.memory.entry(position, key)
    }

    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError> {
        self.memory.at_position(position)
    }

    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError> {
        self.memory.entries_in(arc)
    }

    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let log = self.order();
        // Persist what won the merge, as the index holds it.
        let ids: Vec<(Position, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.position, e.key.clone()))
            .collect();
        self.memory.insert_all(entries)?;
        for (position, key) in ids {
            if let Some(current) = self.memory.entry(position, &key)? {
                self.queue(&log, Mutation::Put(current))?;
            }
        }
        Ok(())
    }

    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError> {
        let log = self.order();
        let removed = self.memory.remove_arc(arc);
        for (position, key) in &removed {
            self.queue(&log, Mutation::Remove(*position, key.clone()))?;
        }
        Ok(removed.len())
    }

    fn remove_exact(&self, entries: &[(Position, Vec<u8>, Version)]) -> Result<usize, StoreError> {
        let log = self.order();
        let removed = self.memory.remove_versions(entries);
        for (position, key) in &removed {
            self.queue(&log, Mutation::Remove(*position, key.clone()))?;
        }
        Ok(removed.len())
    }

    fn len(&self) -> usize {
        self.memory.len()
    }

    fn count_in(&self, arc: Arc) -> usize {
        self.memory.count_in(arc)
    }

    fn digest(&self, arc: Arc, buckets: usize) -> Result<Vec<Bucket>, StoreError> {
        self.memory.digest(arc, buckets)
    }

    fn purge_tombstones(&self, before_micros: u64) -> Result<usize, StoreError> {
        let log = self.order();
        let expired = self.memory.purge_expired(before_micros);
        for (position, key) in &expired {
            self.queue(&log, Mutation::Remove(*position, key.clone()))?;
        }
        Ok(expired.len())
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
        self.queue(&log, Mutation::Identity(me.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "crustyring-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn disk_store_conforms() {
        let base = temp_dir("conform");
        let n = std::sync::atomic::AtomicUsize::new(0);
        super::super::conformance::run(|| {
            let dir = base.join(n.fetch_add(1, Ordering::SeqCst).to_string());
            Box::new(DiskStore::open(&dir, SyncMode::Always).unwrap())
        });
        let _ = std::fs::remove_dir_all(&base);
    }

    #[tokio::test]
    async fn entries_and_identity_survive_a_reopen() {
        let dir = temp_dir("reopen");
        {
            let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
            store
                .set(Position(5), b"a".to_vec(), b"1".to_vec(), 1)
                .unwrap();
            store
                .set(Position(9), b"b".to_vec(), b"2".to_vec(), 1)
                .unwrap();
            store.delete(Position(9), b"b", 1).unwrap();
            store
                .save_identity(&Member::new(Position(42), "http://x:1"))
                .unwrap();
            store.sync_point().await.unwrap();
        }
        // The committer thread may still hold the database: wait until it lets go.
        let store = loop {
            match DiskStore::open(&dir, SyncMode::Always) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert_eq!(store.get(Position(5), b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(Position(9), b"b").unwrap(), None);
        // The delete's tombstone survived the reopen too.
        let tombstones: Vec<Entry> = store
            .entries_in(Arc::whole(Position(0)))
            .unwrap()
            .into_iter()
            .filter(|e| e.value.is_none())
            .collect();
        assert_eq!(tombstones.len(), 1);
        assert_eq!(
            store.identity(),
            Some(Member::new(Position(42), "http://x:1"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
