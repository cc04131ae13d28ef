//! The committer thread: group commit of the queued mutations.
//!
//! Mutations are queued in the order the store applied them to its index and
//! overlay. The committer drains whatever has queued up into one round; writers
//! that arrived while an fsync ran share the next one (group commit), so
//! fsync-before-acknowledge scales with concurrency. With a commit delay,
//! while writes come faster than rounds (on average at least one arrives
//! while a round runs), a round first waits the commit delay
//! ([`DiskOptions::commit_delay`]) for more to share its fsync; a lone
//! writer's writes make no round wait.
//!
//! In [`SyncMode::Always`] a round appends its mutations to the [`wal`] and
//! fsyncs that: the writes are then durable and the round's last sequence
//! number is published. redb gets them later, in a *checkpoint*: every
//! [`DiskOptions::checkpoint_every`], or once [`CHECKPOINT_AFTER`] mutations
//! wait, the committer hands the log's current generation to the checkpointer
//! thread and goes on appending to the next; the checkpointer commits it in one
//! redb transaction, which also advances the stored generation, settles it in
//! the overlay (those entries are now read from redb) and reports back. One
//! checkpoint is in flight at a time (a generation's file is reused two
//! generations later); once [`CHECKPOINT_AFTER`] more mutations have gathered
//! meanwhile, the committer waits for it (back-pressure: a checkpoint's size
//! stays bounded when writers outrun redb). A round that does not fit in the log, and the store's
//! close, wait for the checkpoint in flight and then checkpoint everything,
//! that round included, on the committer's own thread. In [`SyncMode::Batched`]
//! every round is such a checkpoint, one interval apart, and the log is not
//! written.
//!
//! [`wal`]: super::wal
//! [`DiskOptions::checkpoint_every`]: super::DiskOptions::checkpoint_every
//! [`DiskOptions::commit_delay`]: super::DiskOptions::commit_delay

use super::layout::{ENTRIES, META, WAL_GENERATION, encode};
use super::overlay::{Overlay, Snapshot};
use super::wal::{CAPACITY, Wal};
use super::{SyncMode, lock_write};
use crate::ring::Member;
use crate::store::Entry;
use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many mutations may wait in the log (and the overlay) before a
/// checkpoint, whatever the interval: this bounds the overlay's memory.
pub(super) const CHECKPOINT_AFTER: usize = 8_192;

/// What the committer is sent.
pub(super) enum Work {
    /// A mutation, with its sequence number.
    Mutation(u64, Mutation),
    /// The checkpoint in flight is done (or failed).
    Checkpointed(Result<(), String>),
    /// The store is closing: checkpoint what is left and stop.
    Close,
}

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

/// Applies `mutations` to redb's tables in `txn`.
pub(super) fn apply<'a>(
    txn: &redb::WriteTransaction,
    mutations: impl IntoIterator<Item = &'a Mutation>,
) -> Result<(), String> {
    let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
    let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
    for m in mutations {
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
    Ok(())
}

/// Commits `mutations` to redb, durably, with the log's generation advanced to
/// `generation` in the same transaction.
pub(super) fn checkpoint<'a>(
    db: &Database,
    mutations: impl IntoIterator<Item = &'a Mutation>,
    generation: u64,
) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    apply(&txn, mutations)?;
    txn.open_table(META)
        .map_err(|e| e.to_string())?
        .insert(WAL_GENERATION, generation.to_be_bytes().as_slice())
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}

/// What the committer shares with the store.
pub(super) struct Committer {
    /// The database (the store reads through its own handle).
    pub db: Arc<Database>,
    /// The write-ahead log.
    pub wal: Wal,
    /// Mutations in order, and the checkpointer's reports.
    pub queue: mpsc::Receiver<Work>,
    /// Where the checkpointer reports (a sender of `queue`).
    pub reports: mpsc::Sender<Work>,
    /// The last sequence number made durable (or failed: see `failure`).
    pub committed: watch::Sender<u64>,
    /// The last sequence number checkpointed into redb.
    pub checkpointed: watch::Sender<u64>,
    /// The first failure; once set, no write is durable any more.
    pub failure: Arc<Mutex<Option<String>>>,
    /// The writes reads see before redb has them.
    pub overlay: Arc<RwLock<Overlay>>,
    /// In batched mode, how long to let writes gather before each commit.
    pub mode: SyncMode,
    /// The longest a durable write waits in the log for its checkpoint.
    pub checkpoint_every: Duration,
    /// How long a round waits before its fsync while writes come faster
    /// than rounds ([`super::DiskOptions::commit_delay`]).
    pub commit_delay: Duration,
    /// Observes how long each round (log append, or checkpoint) took.
    pub commits: Histogram,
}

/// A generation of the log for the checkpointer to take into redb.
struct Generation {
    mutations: Vec<(u64, Mutation)>,
    /// The generation redb will be missing next.
    next: u64,
}

/// The committer's own state between rounds.
struct Rounds {
    /// Mutations durable in the current generation of the log, not yet
    /// handed to a checkpoint.
    unapplied: Vec<(u64, Mutation)>,
    /// When the oldest of them was made durable.
    since: Instant,
    /// Records being encoded for the log (kept to reuse its allocation).
    buffer: Vec<u8>,
    /// Whether a checkpoint is in flight.
    in_flight: bool,
    /// Mutations that arrived while waiting for a checkpoint, in order.
    stash: Vec<(u64, Mutation)>,
    /// Work that arrived while the last round ran (taken from the queue
    /// before its writers heard it was durable), in order: it comes before
    /// anything still queued.
    arrived: VecDeque<Work>,
    /// How many writes arrive while a round runs: a moving average, over
    /// rounds, of the writes in `arrived`.
    arriving: f64,
    /// Whether the store has closed.
    closing: bool,
    /// A log append or checkpoint failed (`--sync always`): the log is no
    /// longer written, so what it holds stays for the next open to replay.
    broken: bool,
}

/// How many writes must arrive, on average, while a round runs before the
/// next rounds wait the commit delay: fewer, and waiting gathers too few to
/// pay for itself (see docs/performance.md, "A commit delay").
const ARRIVING_TO_WAIT: f64 = 1.0;

/// How long a round lets writes gather after its first, before it commits:
/// in [`SyncMode::Batched`] the interval; in [`SyncMode::Always`] the commit
/// delay, but only while writes come faster than rounds (`arriving`, the
/// writes that arrive while a round runs, at least [`ARRIVING_TO_WAIT`]). An
/// fsync costs the same for one write or many, so more writers then share
/// each; a lone writer's writes (its next waits for the last to be durable)
/// make no round wait, though other writes arriving beside them may.
fn gather_for(mode: SyncMode, commit_delay: Duration, arriving: f64) -> Option<Duration> {
    match mode {
        SyncMode::Batched(interval) => Some(interval),
        SyncMode::Always if arriving >= ARRIVING_TO_WAIT && !commit_delay.is_zero() => {
            Some(commit_delay)
        }
        SyncMode::Always => None,
    }
}

impl Committer {
    /// Runs rounds until the store closes, then checkpoints what is left.
    pub fn run(mut self) {
        let (to_checkpointer, generations) = mpsc::channel::<Generation>();
        let checkpointer = self.checkpointer();
        let spawned = std::thread::Builder::new()
            .name("crustyring-checkpoint".into())
            .spawn(move || checkpointer.run(generations));
        if let Err(e) = spawned {
            self.fail(format!("cannot start the checkpoint thread: {e}"));
        }
        let mut rounds = Rounds {
            unapplied: Vec::new(),
            since: Instant::now(),
            buffer: Vec::new(),
            in_flight: false,
            stash: Vec::new(),
            arrived: VecDeque::new(),
            arriving: 0.0,
            closing: false,
            broken: false,
        };
        while !rounds.closing {
            // Mutations that arrived while a round waited for a checkpoint
            // make a round of their own.
            if !rounds.stash.is_empty() {
                self.round(&mut rounds, Vec::new(), &to_checkpointer);
                continue;
            }
            let due = !rounds.unapplied.is_empty() && !rounds.in_flight && !rounds.broken;
            // Checked before receiving: under steady load the queue is never
            // empty, and a timed receive would never time out.
            let left = self.checkpoint_every.saturating_sub(rounds.since.elapsed());
            if due && left.is_zero() {
                self.hand_over(&mut rounds, &to_checkpointer);
                continue;
            }
            let next = match rounds.arrived.pop_front() {
                Some(work) => work,
                None if due => match self.queue.recv_timeout(left) {
                    Ok(work) => work,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.queue.recv() {
                    Ok(work) => work,
                    Err(_) => break,
                },
            };
            match next {
                Work::Mutation(seq, m) => {
                    let mut batch = vec![(seq, m)];
                    for work in std::mem::take(&mut rounds.arrived) {
                        self.take(&mut rounds, &mut batch, work);
                    }
                    if let Some(wait) = gather_for(self.mode, self.commit_delay, rounds.arriving) {
                        std::thread::sleep(wait);
                    }
                    for work in self.queue.try_iter() {
                        self.take(&mut rounds, &mut batch, work);
                    }
                    self.round(&mut rounds, batch, &to_checkpointer);
                }
                work => self.take(&mut rounds, &mut Vec::new(), work),
            }
        }
        self.await_checkpoint(&mut rounds);
        let left = std::mem::take(&mut rounds.stash);
        let last = left.last().map(|(seq, _)| *seq);
        if !(left.is_empty() && rounds.unapplied.is_empty()) {
            let started = Instant::now();
            let done = self.checkpoint_here(&mut rounds, left);
            self.observe(started, done);
        }
        if let Some(last) = last {
            self.committed.send_replace(last);
        }
        // The shared read transaction goes before the database does, so
        // that redb closes with no reader open.
        let snapshot = lock_write(&self.overlay).set_snapshot(None);
        drop(snapshot);
    }

    /// Takes `work` that arrived while gathering or waiting: mutations into
    /// `batch`, reports and the close into `rounds`.
    fn take(&self, rounds: &mut Rounds, batch: &mut Vec<(u64, Mutation)>, work: Work) {
        match work {
            Work::Mutation(seq, m) => batch.push((seq, m)),
            Work::Checkpointed(done) => {
                rounds.in_flight = false;
                if let Err(e) = done {
                    rounds.broken = true;
                    self.fail(e);
                }
            }
            Work::Close => rounds.closing = true,
        }
    }

    /// Makes `batch` durable: in the log, or by a checkpoint that takes it too.
    fn round(
        &mut self,
        rounds: &mut Rounds,
        mut batch: Vec<(u64, Mutation)>,
        to_checkpointer: &mpsc::Sender<Generation>,
    ) {
        if !rounds.stash.is_empty() {
            let mut stash = std::mem::take(&mut rounds.stash);
            stash.append(&mut batch);
            batch = stash;
        }
        let mut last = batch.last().map_or(0, |(seq, _)| *seq);
        let started = Instant::now();
        let done = if rounds.broken {
            Err("the store has failed".to_string())
        } else if self.mode == SyncMode::Always && self.fits(rounds, &batch) {
            let appended = self.wal.append(&rounds.buffer);
            if appended.is_ok() {
                if rounds.unapplied.is_empty() {
                    rounds.since = Instant::now();
                }
                rounds.unapplied.extend(batch);
                if rounds.unapplied.len() >= CHECKPOINT_AFTER {
                    // Back-pressure: a checkpoint never takes much more than
                    // CHECKPOINT_AFTER (its dirty pages, the overlay and the
                    // file's growth stay bounded), so writers faster than
                    // redb wait here for the one in flight.
                    self.await_checkpoint(rounds);
                    self.hand_over(rounds, to_checkpointer);
                }
            } else {
                rounds.broken = true;
            }
            appended
        } else {
            self.await_checkpoint(rounds);
            let stashed = std::mem::take(&mut rounds.stash);
            batch.extend(stashed);
            last = batch.last().map_or(last, |(seq, _)| *seq);
            self.checkpoint_here(rounds, batch)
        };
        if rounds.buffer.capacity() > CAPACITY as usize {
            rounds.buffer = Vec::new();
        }
        self.observe(started, done);
        // Before the round's writers hear of it: what is queued now came
        // while it ran (none from a lone writer, who waits for its write).
        // Counted only for a commit delay: without one, nothing reads it.
        if !self.commit_delay.is_zero() {
            let before = rounds.arrived.len();
            rounds.arrived.extend(self.queue.try_iter());
            let writes = (rounds.arrived.iter().skip(before))
                .filter(|w| matches!(w, Work::Mutation(..)))
                .count();
            rounds.arriving = 0.8 * rounds.arriving + 0.2 * writes as f64;
        }
        self.committed.send_replace(last);
    }

    /// Whether `batch` fits in the log's current generation; encodes it into
    /// `rounds.buffer`.
    fn fits(&self, rounds: &mut Rounds, batch: &[(u64, Mutation)]) -> bool {
        rounds.buffer.clear();
        self.wal
            .encode(batch.iter().map(|(_, m)| m), &mut rounds.buffer);
        self.wal.fits(rounds.buffer.len())
    }

    /// Hands the current generation to the checkpointer and goes on with the
    /// next, unless a checkpoint is in flight (then it waits for its turn).
    fn hand_over(&mut self, rounds: &mut Rounds, to_checkpointer: &mpsc::Sender<Generation>) {
        if rounds.in_flight || rounds.broken || rounds.unapplied.is_empty() {
            return;
        }
        let generation = Generation {
            mutations: std::mem::take(&mut rounds.unapplied),
            next: self.wal.generation() + 1,
        };
        if to_checkpointer.send(generation).is_err() {
            rounds.broken = true;
            self.fail("the checkpoint thread has stopped".into());
            return;
        }
        rounds.in_flight = true;
        self.wal.switch();
    }

    /// Waits for the checkpoint in flight, if any, keeping what else arrives.
    fn await_checkpoint(&self, rounds: &mut Rounds) {
        while rounds.in_flight {
            // What arrived during the last round comes before anything
            // queued after it.
            let work = match rounds.arrived.pop_front() {
                Some(work) => work,
                None => match self.queue.recv() {
                    Ok(work) => work,
                    Err(_) => return,
                },
            };
            let mut stash = std::mem::take(&mut rounds.stash);
            self.take(rounds, &mut stash, work);
            rounds.stash = stash;
        }
    }

    /// Checkpoints every unapplied mutation and `more` on this thread (no
    /// checkpoint is in flight), and starts the next generation of the log.
    fn checkpoint_here(
        &mut self,
        rounds: &mut Rounds,
        more: Vec<(u64, Mutation)>,
    ) -> Result<(), String> {
        if rounds.broken {
            return Err("the store has failed".into());
        }
        let mut mutations = std::mem::take(&mut rounds.unapplied);
        mutations.extend(more);
        let next = self.wal.generation() + 1;
        let done = self.checkpointer().take(Generation { mutations, next });
        match &done {
            Ok(()) => self.wal.switch(),
            // The log holds what redb lacks: it must not be written over.
            // Without a log (batched), later rounds go on committing.
            Err(_) => rounds.broken = self.mode == SyncMode::Always,
        }
        done
    }

    /// What the checkpointer needs.
    fn checkpointer(&self) -> Checkpointer {
        Checkpointer {
            db: self.db.clone(),
            overlay: self.overlay.clone(),
            checkpointed: self.checkpointed.clone(),
            reports: self.reports.clone(),
        }
    }

    /// Records a round's duration.
    fn observe(&self, started: Instant, done: Result<(), String>) {
        self.commits.observe(started.elapsed().as_secs_f64());
        if let Err(e) = done {
            self.fail(e);
        }
    }

    /// Records a failure: the mutations stay in the overlay, so reads still see
    /// them; the store reports every later sync point as failed.
    fn fail(&self, e: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(error = %e, "the store failed; writes are no longer durable");
            *failure = Some(e);
        }
    }
}

/// The checkpoint thread's part.
struct Checkpointer {
    db: Arc<Database>,
    overlay: Arc<RwLock<Overlay>>,
    checkpointed: watch::Sender<u64>,
    reports: mpsc::Sender<Work>,
}

impl Checkpointer {
    /// Takes each generation it is sent into redb, and reports (a panic as a
    /// failure, so that the committer does not wait for it forever).
    fn run(self, generations: mpsc::Receiver<Generation>) {
        for generation in generations {
            let taken =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.take(generation)));
            let done = taken.unwrap_or_else(|_| Err("the checkpoint thread panicked".into()));
            if self.reports.send(Work::Checkpointed(done)).is_err() {
                return;
            }
        }
    }

    /// Commits `generation` to redb and settles it in the overlay.
    fn take(&self, generation: Generation) -> Result<(), String> {
        let Generation { mutations, next } = generation;
        checkpoint(&self.db, mutations.iter().map(|(_, m)| m), next)?;
        // Opened after the commit, and in place as the batch leaves the
        // overlay: see the overlay's docs. Without one (it could not be
        // opened), reads open a transaction each, which is consistent too.
        let snapshot = match self.db.begin_read() {
            Ok(txn) => Some(Snapshot(Arc::new(txn))),
            Err(e) => {
                tracing::warn!(error = %e, "no shared read transaction after a checkpoint; reads open their own");
                None
            }
        };
        let mut overlay = lock_write(&self.overlay);
        for (seq, m) in &mutations {
            if let Some((position, key)) = m.id() {
                overlay.settle(*seq, position, key);
            }
        }
        let replaced = overlay.set_snapshot(snapshot);
        drop(overlay);
        drop(replaced);
        if let Some((seq, _)) = mutations.last() {
            self.checkpointed.send_replace(*seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_that_come_faster_than_rounds_wait_for_others_to_share_their_fsync() {
        let delay = Duration::from_micros(500);
        assert_eq!(gather_for(SyncMode::Always, delay, 0.0), None);
        assert_eq!(
            gather_for(SyncMode::Always, delay, ARRIVING_TO_WAIT - 0.1),
            None
        );
        assert_eq!(
            gather_for(SyncMode::Always, delay, ARRIVING_TO_WAIT),
            Some(delay)
        );
        assert_eq!(gather_for(SyncMode::Always, Duration::ZERO, 10.0), None);
        let interval = Duration::from_millis(50);
        assert_eq!(
            gather_for(SyncMode::Batched(interval), delay, 0.0),
            Some(interval)
        );
    }
}
