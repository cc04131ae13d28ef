//! Writes an owner has applied to its store but not yet had acknowledged.
//!
//! An owner applies a write, then sends it to the replicas and acknowledges
//! it once they hold it. In between, the value is in the owner's store only:
//! if the owner failed then, its successor in the arc (a replica) would serve
//! the key without it. A read answered from the store in that window would
//! have shown a value that then vanished: a later read returning an older
//! value than an earlier one, which no order of the operations explains.
//! So a read at the owner that meets a key with writes in flight waits for
//! them to settle (acknowledged, failed by their deadline, or abandoned by
//! their callers: then they count as failed, "may have been applied") and
//! reads again. Only the writes in flight when it first looked: writes that
//! begin while it waits may be answered before they are acknowledged, as the
//! price of a read never waiting for more than one round of writes to its key.
//!
//! Keyed by ring position (two keys at one position share an entry: the
//! worst a collision costs is a read waiting for the other key's write), in
//! [`SHARDS`] shards by position, each with its own lock and signal: a write
//! that settles wakes only the reads waiting in its shard, and writes to
//! different shards do not contend.
//! A read checks *after* it read: a write registers before it applies, so a
//! read that saw the write's value sees its registration too.

use super::NodeError;
use crate::ring::Position;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Shards of [`PendingWrites`].
const SHARDS: usize = 16;

/// The positions with a write applied but not yet acknowledged (each write
/// numbered in the order it began), and a signal for each that settles.
#[derive(Debug, Default)]
pub(super) struct PendingWrites {
    shards: [Shard; SHARDS],
    next: AtomicU64,
}

/// The writes in flight at some positions, and the signal that one settled.
#[derive(Debug, Default)]
struct Shard {
    writes: Mutex<HashMap<u64, BTreeSet<u64>>>,
    settled: Notify,
}

impl Shard {
    fn writes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, BTreeSet<u64>>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A write in flight at a position; it settles when dropped.
#[derive(Debug)]
pub(super) struct InFlight<'a> {
    pending: &'a PendingWrites,
    position: u64,
    number: u64,
}

impl PendingWrites {
    /// The shard of `position` (positions are hash prefixes: any bits do).
    fn shard(&self, position: u64) -> &Shard {
        &self.shards[(position % SHARDS as u64) as usize]
    }

    /// A write at `position` is about to be applied.
    pub fn begin(&self, position: Position) -> InFlight<'_> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(position.0)
            .writes()
            .entry(position.0)
            .or_default()
            .insert(number);
        InFlight {
            pending: self,
            position: position.0,
            number,
        }
    }

    /// The last write in flight at `position`, if any: what a read that
    /// checks now waits for ([`PendingWrites::settled`]).
    pub fn in_flight(&self, position: Position) -> Option<u64> {
        self.shard(position.0)
            .writes()
            .get(&position.0)
            .and_then(|w| w.last().copied())
    }

    /// The positions in `arc` with writes in flight, each with its last one:
    /// what a read of the arc that checks now waits for.
    fn in_flight_within(&self, arc: crate::ring::Arc) -> Vec<(Position, u64)> {
        let within = |shard: &Shard| -> Vec<(Position, u64)> {
            shard
                .writes()
                .iter()
                .filter_map(|(p, w)| {
                    let last = w.last().copied()?;
                    arc.contains(Position(*p)).then_some((Position(*p), last))
                })
                .collect()
        };
        if arc == crate::ring::Arc::point(arc.start) {
            return within(self.shard(arc.start.0));
        }
        self.shards.iter().flat_map(within).collect()
    }

    /// What `read` answers when no write it could see is in flight: `read`
    /// returns its answer and the arc it read; if writes in that arc were in
    /// flight once it had read, this waits (up to `wait`) for them to settle
    /// and reads again, once. So a key's state for a watch or a listing's
    /// page answers no write that is applied but not yet acknowledged, as a
    /// query's read does (one round: writes that begin meanwhile may show).
    pub async fn read_settled<T>(
        &self,
        wait: std::time::Duration,
        mut read: impl FnMut() -> Result<(T, crate::ring::Arc), NodeError>,
    ) -> Result<T, NodeError> {
        let (answer, arc) = read()?;
        let in_flight = self.in_flight_within(arc);
        if in_flight.is_empty() {
            return Ok(answer);
        }
        let deadline = Instant::now() + wait;
        for (position, last) in in_flight {
            if !self.settled(position, last, deadline).await {
                return Err(NodeError::WriteInFlight(wait));
            }
        }
        Ok(read()?.0)
    }

    /// Waits until every write at `position` up to `last` (from
    /// [`PendingWrites::in_flight`]) has settled; `false` if `deadline` came
    /// first. Writes that began later are not waited for, so a key written
    /// all the time cannot starve its reads.
    pub async fn settled(&self, position: Position, last: u64, deadline: Instant) -> bool {
        let shard = self.shard(position.0);
        let waited_for = || {
            shard
                .writes()
                .get(&position.0)
                .and_then(|w| w.first().copied())
                .is_some_and(|first| first <= last)
        };
        loop {
            let notified = shard.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !waited_for() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !waited_for();
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let shard = self.pending.shard(self.position);
        {
            let mut writes = shard.writes();
            if let Some(w) = writes.get_mut(&self.position) {
                w.remove(&self.number);
                if w.is_empty() {
                    writes.remove(&self.position);
                }
            }
        }
        shard.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Operation, Outcome, Query};
    use crate::ring::key_position;
    use crate::store::{Entry, Version};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// The owner's only replica cannot be reached, so a write is applied
    /// here and never acknowledged: a read of its key meanwhile must not
    /// answer it, and answers only once the write has failed.
    #[tokio::test(start_paused = true)]
    async fn a_read_waits_for_a_write_not_yet_acknowledged() {
        let node = crate::node::owner_with_unreachable_replica();
        let key = b"k".to_vec();
        let position = key_position(&key);
        node.store
            .insert_all(vec![Entry {
                position,
                key: key.clone(),
                value: Some(b"acknowledged".to_vec()),
                version: Version { micros: 1, node: 1 },
                expires: None,
            }])
            .unwrap();
        let (write, write_done) =
            crate::node::write_in_flight(&node, &key, b"unacknowledged").await;
        // The read comes after the write (its deadline too).
        tokio::time::advance(Duration::from_millis(1)).await;
        let get = Query::new(Operation::Get, key.clone(), &node.config().limits).unwrap();
        let read = node.execute(get).await;
        assert!(
            write_done.load(Ordering::SeqCst),
            "the read answered before the write settled"
        );
        assert!(write.await.unwrap().is_err(), "no replica holds the write");
        // Failed, it may still be applied (and spread by anti-entropy): the
        // read after it answers what the owner holds.
        assert_eq!(
            read.unwrap().outcome,
            Outcome::Value(b"unacknowledged".to_vec())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_position_settles_when_its_last_write_does() {
        let pending = PendingWrites::default();
        let (p, other) = (Position(7), Position(8));
        let first = pending.begin(p);
        let second = pending.begin(p);
        let last = pending.in_flight(p).unwrap();
        assert_eq!(pending.in_flight(other), None);
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(
            !pending.settled(p, last, soon).await,
            "in flight at the deadline"
        );
        drop(first);
        assert_eq!(pending.in_flight(p), Some(last));
        let later = Instant::now() + Duration::from_secs(1);
        let (settled, ()) = tokio::join!(pending.settled(p, last, later), async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(second);
        });
        assert!(settled);
        assert_eq!(pending.in_flight(p), None);
    }

    #[tokio::test(start_paused = true)]
    async fn positions_in_other_shards_are_independent() {
        let pending = PendingWrites::default();
        // One position in each shard, a write in flight at each.
        let positions: Vec<Position> = (0..SHARDS as u64).map(|i| Position(1 << 40 | i)).collect();
        let writes: Vec<_> = positions.iter().map(|p| pending.begin(*p)).collect();
        let lasts: Vec<u64> = positions
            .iter()
            .map(|p| pending.in_flight(*p).unwrap())
            .collect();
        let mut writes = writes.into_iter();
        drop(writes.next());
        let now = Instant::now();
        assert!(pending.settled(positions[0], lasts[0], now).await);
        for (p, last) in positions.iter().zip(&lasts).skip(1) {
            assert!(
                !pending.settled(*p, *last, now).await,
                "{p:?} still in flight"
            );
        }
        drop(writes);
        for (p, last) in positions.iter().zip(&lasts) {
            assert!(pending.settled(*p, *last, now).await);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_only_for_the_writes_in_flight_when_it_looked() {
        let pending = PendingWrites::default();
        let p = Position(7);
        let seen = pending.begin(p);
        let last = pending.in_flight(p).unwrap();
        let later_write = pending.begin(p);
        drop(seen);
        // The write that began after the read looked is still in flight.
        assert!(pending.in_flight(p).is_some());
        assert!(pending.settled(p, last, Instant::now()).await);
        drop(later_write);
    }
}
