//! Joins without stalls: the arc a joiner takes keeps being served by its old
//! owner while it streams, and only the writes made meanwhile are sent under
//! the fence.
//!
//! A join used to fence the whole moving arc while it streamed, so every query
//! into it waited for the whole hand-off (seconds for a million keys). Now the
//! predecessor streams a snapshot of the arc *unfenced*, piece by piece, while
//! serving it as before; a [`Recorder`] sitting in front of its store notes every
//! write into the arc meanwhile. Then it fences the arc, sends just those writes,
//! and the joiner switches over: the fence lasts for the last few messages and
//! the joiner's final fsync, not for the arc. Copies merge newest-wins, so a key
//! sent in the snapshot and again in the delta ends at its latest write.
//!
//! The recorder is a [`Store`] wrapper, so every write path (queries, replica
//! writes, anti-entropy, read repair) is noted without each knowing of joins.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::membership::admission::Admission;
use crate::node::membership::handoff::HandOffHeader;
use crate::node::membership::sending::{SNAPSHOT_PIECES, Sending, Stage};
use crate::node::rpc::hand_off::{entry_chunks, last_chunk};
use crate::node::rpc::peers::peer_error;
use crate::proto::dht;
use crate::ring::{Arc as RingArc, Member, Position};
use crate::store::{
    Bucket, Entry, Store, StoreError, SyncFuture, Version, Written, bucket_count, buckets_arc,
};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Messages a hand-off stream keeps queued ahead of the network.
const STREAM_AHEAD: usize = 4;

impl Node {
    /// Hands `arc` to `joiner` as described in the module docs. On return the
    /// arc is fenced (if the stream got that far), and the recording stopped;
    /// the caller links the joiner in or lifts the fence.
    pub(in crate::node) async fn stream_join(
        &self,
        joiner: &Member,
        header: HandOffHeader,
        admission: &Admission,
    ) -> Result<u64, NodeError> {
        let arc = admission.arc();
        let mut client = self.peers.client(&joiner.addr)?;
        let (tx, rx) = mpsc::channel(STREAM_AHEAD);
        self.recorder.start(arc);
        let call = client.hand_off(tokio_stream::wrappers::ReceiverStream::new(rx));
        let produce = self.produce_join_stream(tx, header, admission, &joiner.addr);
        tokio::pin!(call, produce);
        let request = self.config.timeouts.request;
        let mut answer_by: Option<Instant> = None;
        let outcome = loop {
            let overdue = async {
                match answer_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answered = &mut call => break answered
                    .map(|ack| ack.into_inner().entries)
                    .map_err(|status| peer_error(&joiner.addr, status)),
                produced = &mut produce, if answer_by.is_none() => match produced {
                    // Everything is sent: the joiner answers once it serves.
                    Ok(()) => answer_by = Some(Instant::now() + request),
                    Err(e) => break Err(e),
                },
                () = overdue => break Err(NodeError::Timeout { addr: joiner.addr.clone(), after: request }),
            }
        };
        self.recorder.stop();
        outcome
    }

    /// Drops a handed-off arc from the store piece by piece, so that no
    /// removal holds the store's lock for the whole arc; returns how many
    /// entries went.
    pub(in crate::node) async fn drop_arc(&self, arc: RingArc) -> Result<usize, StoreError> {
        let pieces = bucket_count(arc, SNAPSHOT_PIECES);
        let mut removed = 0;
        for piece in 0..pieces {
            removed += self
                .store
                .remove_in(buckets_arc(arc, piece..piece + 1, pieces))?;
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    /// Sends the header, a snapshot of `arc` piece by piece (unfenced), then
    /// fences the arc and sends the writes made into it meanwhile. Stops early,
    /// unfenced, if the call ends first (its answer then says why), and fails
    /// if by the fence this node may no longer hand the arc over
    /// ([`Admission::may_switch_over`]).
    async fn produce_join_stream(
        &self,
        tx: mpsc::Sender<dht::HandOffChunk>,
        header: HandOffHeader,
        admission: &Admission,
        to: &str,
    ) -> Result<(), NodeError> {
        let arc = admission.arc();
        let request = self.config.timeouts.request;
        // Whether the message went (false: the call has ended).
        let send = |chunk: dht::HandOffChunk| {
            let tx = tx.clone();
            async move {
                match tokio::time::timeout(request, tx.send(chunk)).await {
                    Ok(sent) => Ok(sent.is_ok()),
                    Err(_) => Err(NodeError::Timeout {
                        addr: to.to_string(),
                        after: request,
                    }),
                }
            }
        };
        let budget = self.config.limits.max_entry_bytes();
        // What to send when: the decisions are `Sending`'s, this loop carries
        // them out.
        let mut sending = Sending::new(arc);
        loop {
            // The messages this step sends (none for the fence).
            let chunks: Vec<dht::HandOffChunk> = match sending.step() {
                Stage::Header => vec![header.first_chunk()],
                Stage::Piece(piece) => {
                    entry_chunks(self.store.entries_in(piece)?, budget).collect()
                }
                Stage::Fence => {
                    // From here queries into the arc wait (every one applied
                    // before has been noted), until the joiner serves it.
                    self.update_view(|view| view.handoff = Some(arc));
                    sending
                        .fenced(admission.may_switch_over(self.may_hand_over(arc, &self.view())));
                    Vec::new()
                }
                Stage::Recorded => entry_chunks(self.recorder.stop(), budget).collect(),
                // Only a stream that ends with this message is taken: one cut
                // short by a failure here (the channel closing early) is
                // refused.
                Stage::Last => vec![last_chunk()],
                Stage::Done => return Ok(()),
                // The caller lifts the fence; the joiner retries.
                Stage::Refused => return Err(NodeError::HandOverUnleased),
            };
            for chunk in chunks {
                if !send(chunk).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// The writes into one arc since recording started.
#[derive(Debug)]
struct Watch {
    arc: RingArc,
    log: Mutex<Vec<Entry>>,
}

/// Notes the writes into an arc while it streams to a joiner.
///
/// Every write to the store runs under the recorder's read lock, and the
/// write lock ends a recording: so a write is either in the store and noted
/// before [`Recorder::stop`] returns, or made after it. None can land in the
/// store yet miss the log (a replica or stray write racing the switch-over).
/// A write must not call back into the recorded store: the lock is not
/// re-entrant once `stop` waits for it.
#[derive(Debug, Default)]
pub(in crate::node) struct Recorder {
    watch: RwLock<Option<Watch>>,
}

impl Recorder {
    /// Starts noting writes into `arc` (forgetting any earlier recording).
    pub fn start(&self, arc: RingArc) {
        *self.watch.write().unwrap_or_else(|e| e.into_inner()) = Some(Watch {
            arc,
            log: Mutex::new(Vec::new()),
        });
    }

    /// Stops recording once the writes under way are done; returns the writes
    /// noted since [`Recorder::start`].
    pub fn stop(&self) -> Vec<Entry> {
        self.watch
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map_or_else(Vec::new, |w| {
                w.log.into_inner().unwrap_or_else(|e| e.into_inner())
            })
    }

    /// Runs the store write `write` as one step against [`Recorder::stop`];
    /// it notes what it wrote through the [`Notes`] it is given.
    fn write<T>(
        &self,
        write: impl FnOnce(&Notes<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let watch = self.watch.read().unwrap_or_else(|e| e.into_inner());
        write(&Notes {
            watch: watch.as_ref(),
        })
    }
}

/// Where a write notes its entries: the recording under way, if any.
struct Notes<'a> {
    watch: Option<&'a Watch>,
}

impl Notes<'_> {
    /// Notes the entries that fall into the recorded arc (nothing when no
    /// recording is under way).
    fn note<'e>(&self, entries: impl IntoIterator<Item = &'e Entry>) {
        if let Some(w) = self.watch {
            let mut log = w.log.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(
                entries
                    .into_iter()
                    .filter(|e| w.arc.contains(e.position))
                    .cloned(),
            );
        }
    }
}

/// A store whose writes a [`Recorder`] notes.
pub(in crate::node) struct RecordedStore {
    inner: Arc<dyn Store>,
    recorder: Arc<Recorder>,
}

impl RecordedStore {
    /// `inner`, with its writes noted by `recorder`.
    pub fn new(inner: Arc<dyn Store>, recorder: Arc<Recorder>) -> Self {
        Self { inner, recorder }
    }
}

impl Store for RecordedStore {
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(position, key)
    }

    fn set_expiring(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
        expires: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.recorder.write(|notes| {
            let written = self
                .inner
                .set_expiring(position, key, value, writer, expires)?;
            notes.note([&written.entry]);
            Ok(written)
        })
    }

    fn delete(&self, position: Position, key: &[u8], writer: u64) -> Result<Written, StoreError> {
        self.recorder.write(|notes| {
            let written = self.inner.delete(position, key, writer)?;
            notes.note([&written.entry]);
            Ok(written)
        })
    }

    fn entry(&self, position: Position, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.inner.entry(position, key)
    }

    fn get_versioned(
        &self,
        position: Position,
        key: &[u8],
    ) -> Result<Option<crate::store::Live>, StoreError> {
        self.inner.get_versioned(position, key)
    }

    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError> {
        self.inner.at_position(position)
    }

    fn entries_in(&self, arc: RingArc) -> Result<Vec<Entry>, StoreError> {
        self.inner.entries_in(arc)
    }

    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        // Noted as offered: the joiner merges them newest-wins, as this store did.
        self.recorder.write(|notes| {
            notes.note(&entries);
            self.inner.insert_all(entries)
        })
    }

    fn remove_in(&self, arc: RingArc) -> Result<usize, StoreError> {
        self.inner.remove_in(arc)
    }

    fn remove_exact(&self, entries: &[(Position, Vec<u8>, Version)]) -> Result<usize, StoreError> {
        self.inner.remove_exact(entries)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn count_in(&self, arc: RingArc) -> usize {
        self.inner.count_in(arc)
    }

    fn digest(&self, arc: RingArc, buckets: usize) -> Result<Vec<Bucket>, StoreError> {
        self.inner.digest(arc, buckets)
    }

    fn purge_tombstones(&self, before_micros: u64) -> Result<usize, StoreError> {
        self.inner.purge_tombstones(before_micros)
    }

    fn purge_lapsed(&self, now_micros: u64) -> Result<usize, StoreError> {
        self.inner.purge_lapsed(now_micros)
    }

    fn sync_point(&self) -> SyncFuture {
        self.inner.sync_point()
    }

    fn durable_point(&self) -> SyncFuture {
        self.inner.durable_point()
    }

    fn identity(&self) -> Option<Member> {
        self.inner.identity()
    }

    fn save_identity(&self, me: &Member) -> Result<(), StoreError> {
        self.inner.save_identity(me)
    }

    fn commit_seconds(&self) -> Option<prometheus_client::metrics::histogram::Histogram> {
        self.inner.commit_seconds()
    }

    fn page(
        &self,
        range: std::ops::RangeInclusive<u64>,
        after: Option<&[u8]>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.page(range, after, prefix, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn store() -> (RecordedStore, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let store = RecordedStore::new(Arc::new(MemoryStore::new()), recorder.clone());
        (store, recorder)
    }

    #[test]
    fn only_writes_into_the_arc_while_recording_are_noted() {
        let (store, recorder) = store();
        store
            .set(Position(15), b"before".to_vec(), b"1".to_vec(), 1)
            .unwrap();
        recorder.start(RingArc::new(Position(10), Position(20)));
        store
            .set(Position(15), b"in".to_vec(), b"2".to_vec(), 1)
            .unwrap();
        store
            .set(Position(25), b"out".to_vec(), b"3".to_vec(), 1)
            .unwrap();
        store.delete(Position(15), b"before", 1).unwrap();
        let noted = recorder.stop();
        let keys: Vec<&[u8]> = noted.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(keys, [&b"in"[..], &b"before"[..]]);
        assert!(
            noted[1].value.is_none(),
            "the delete is noted as its tombstone"
        );
        store
            .set(Position(15), b"after".to_vec(), b"4".to_vec(), 1)
            .unwrap();
        assert!(recorder.stop().is_empty(), "nothing is noted once stopped");
    }

    #[test]
    fn stopping_waits_for_a_write_under_way_and_returns_it_noted() {
        // The store under the recorder (a write through `RecordedStore` itself
        // would take the recorder's lock twice).
        let (inner, recorder) = (MemoryStore::new(), Arc::new(Recorder::default()));
        recorder.start(RingArc::new(Position(10), Position(20)));
        let (started, writing) = std::sync::mpsc::channel();
        let writer = {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                recorder.write(|notes| {
                    started.send(()).unwrap();
                    // Still writing when `stop` is called.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    let written = inner.set(Position(15), b"late".to_vec(), b"1".to_vec(), 1)?;
                    notes.note([&written.entry]);
                    Ok(())
                })
            })
        };
        writing.recv().unwrap();
        let noted = recorder.stop();
        writer.join().unwrap().unwrap();
        assert_eq!(noted.len(), 1, "the write under way is in the log");
        assert_eq!(noted[0].key, b"late");
    }

    #[test]
    fn merged_entries_are_noted_too() {
        let (store, recorder) = store();
        recorder.start(RingArc::new(Position(10), Position(20)));
        let entry = |p: u64| Entry {
            position: Position(p),
            key: vec![p as u8],
            value: Some(vec![1]),
            version: Version { micros: 5, node: 1 },
            expires: None,
        };
        store.insert_all(vec![entry(12), entry(30)]).unwrap();
        assert_eq!(recorder.stop(), vec![entry(12)]);
    }
}
