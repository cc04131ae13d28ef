//! The committer thread: group commit of the queued mutations.
//!
//! Mutations are queued in the order the store applied them to its index and
//! overlay. The committer drains whatever has queued up into one write
//! transaction and commits it; writers that arrived while an fsync ran share the
//! next one (group commit), so fsync-before-acknowledge scales with concurrency.
//! After a commit it settles the batch in the overlay (those entries are now read
//! from redb) and publishes the last sequence number it committed.

use super::layout::{ENTRIES, META, encode};
use super::overlay::Overlay;
use super::{SyncMode, lock_write};
use crate::ring::Member;
use crate::store::Entry;
use prometheus_client::metrics::histogram::Histogram;
use redb::Database;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// One queued change to the database.
pub(super) enum Mutation {
    /// Store this entry (a value or a tombstone) as it is.
    Put(Entry),
    /// Forget the key altogether (its arc moved elsewhere, or its tombstone
    /// expired).
    Remove(u64, Vec<u8>),
    /// Save the node's identity.
    Identity(Member),
}

impl Mutation {
    /// The entry this mutation changes, if it changes one.
    pub fn id(&self) -> Option<(u64, &[u8])> {
        match self {
            Mutation::Put(e) => Some((e.position.0, &e.key)),
            Mutation::Remove(p, k) => Some((*p, k)),
            Mutation::Identity(_) => None,
        }
    }
}

/// What the committer shares with the store.
pub(super) struct Committer {
    /// The database (the store reads through its own handle).
    pub db: Arc<Database>,
    /// Mutations with their sequence numbers, in order.
    pub queue: mpsc::Receiver<(u64, Mutation)>,
    /// The last sequence number committed (or failed: see `failure`).
    pub committed: watch::Sender<u64>,
    /// The first commit failure; once set, no write is durable any more.
    pub failure: Arc<Mutex<Option<String>>>,
    /// The uncommitted writes reads see.
    pub overlay: Arc<RwLock<Overlay>>,
    /// In batched mode, how long to let writes gather before each commit.
    pub mode: SyncMode,
    /// Observes how long each commit took.
    pub commits: Histogram,
}

impl Committer {
    /// Drains the queue into one transaction per round, until the store is
    /// dropped.
    pub fn run(self) {
        while let Ok(first) = self.queue.recv() {
            if let SyncMode::Batched(interval) = self.mode {
                std::thread::sleep(interval);
            }
            let mut batch = vec![first];
            batch.extend(self.queue.try_iter());
            let last = batch.last().map_or(0, |(seq, _)| *seq);
            let started = std::time::Instant::now();
            let committed = self.commit(&batch);
            self.commits.observe(started.elapsed().as_secs_f64());
            match committed {
                Ok(()) => {
                    let mut overlay = lock_write(&self.overlay);
                    for (seq, m) in &batch {
                        if let Some((position, key)) = m.id() {
                            overlay.settle(*seq, position, key);
                        }
                    }
                }
                Err(e) => {
                    // The batch stays in the overlay, so reads still see it; the
                    // store reports every later sync point as failed.
                    tracing::error!(error = %e, "commit failed; writes are no longer durable");
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            self.committed.send_replace(last);
        }
    }

    fn commit(&self, batch: &[(u64, Mutation)]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            for (_, m) in batch {
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
    }
}
