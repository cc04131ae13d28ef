//! Writes an owner has applied to its store but not yet had acknowledged.
//!
//! An owner applies a write, then sends it to the replicas and acknowledges
//! it once they hold it. In between, the value is in the owner's store only:
//! if the owner failed then, its successor in the arc (a replica) would serve
//! the key without it. A read answered from the store in that window would
//! have shown a value that then vanished: a later read returning an older
//! value than an earlier one, which no order of the operations explains.
//! So a read at the owner that meets a key with a write in flight waits for
//! that write to settle (acknowledged, or failed by its deadline) and reads
//! again.
//!
//! Keyed by ring position (two keys at one position share an entry: the
//! worst a collision costs is a read waiting for the other key's write).
//! A read checks *after* it read: a write registers before it applies, so a
//! read that saw the write's value sees its registration too.

use crate::ring::Position;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The positions with a write applied but not yet acknowledged, and a signal
/// for each that settles.
#[derive(Debug, Default)]
pub(super) struct PendingWrites {
    counts: Mutex<HashMap<u64, usize>>,
    settled: Notify,
}

/// A write in flight at a position; it settles when dropped.
#[derive(Debug)]
pub(super) struct InFlight<'a> {
    pending: &'a PendingWrites,
    position: u64,
}

impl PendingWrites {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write at `position` is about to be applied.
    pub fn begin(&self, position: Position) -> InFlight<'_> {
        *self.counts().entry(position.0).or_default() += 1;
        InFlight {
            pending: self,
            position: position.0,
        }
    }

    /// Whether a write at `position` is in flight.
    pub fn in_flight(&self, position: Position) -> bool {
        self.counts().contains_key(&position.0)
    }

    /// Waits until no write at `position` is in flight; `false` if
    /// `deadline` came first.
    pub async fn settled(&self, position: Position, deadline: Instant) -> bool {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.in_flight(position) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.in_flight(position);
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        {
            let mut counts = self.pending.counts();
            if let Some(n) = counts.get_mut(&self.position) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.position);
                }
            }
        }
        self.pending.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeConfig, Operation, Outcome, Query, serving_beside_with};
    use crate::ring::{Member, key_position};
    use crate::store::{Entry, Version};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// The owner's only replica cannot be reached, so a write is applied
    /// here and never acknowledged: a read of its key meanwhile must not
    /// answer it, and answers only once the write has failed.
    #[tokio::test(start_paused = true)]
    async fn a_read_waits_for_a_write_not_yet_acknowledged() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let replica = Member::new(
            Position(50),
            format!("http://{}", closed.local_addr().unwrap()),
        );
        drop(closed);
        let config = NodeConfig {
            leases: None,
            ..NodeConfig::default()
        };
        let node = serving_beside_with(
            Member::new(Position(100), "http://127.0.0.1:9"),
            replica,
            config,
        );
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
        let limits = node.config().limits;
        let query = |op| Query::new(op, key.clone(), &limits).unwrap();
        let write_done = Arc::new(AtomicBool::new(false));
        let write = tokio::spawn({
            let (node, done) = (node.clone(), write_done.clone());
            let q = query(Operation::Set(b"unacknowledged".to_vec()));
            async move {
                let answer = node.execute(q).await;
                done.store(true, Ordering::SeqCst);
                answer
            }
        });
        while !node.pending.in_flight(position) {
            tokio::task::yield_now().await;
        }
        // The read comes after the write (its deadline too).
        tokio::time::advance(Duration::from_millis(1)).await;
        let read = node.execute(query(Operation::Get)).await;
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
        assert!(pending.in_flight(p) && !pending.in_flight(other));
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(
            !pending.settled(p, soon).await,
            "still in flight at the deadline"
        );
        drop(first);
        assert!(pending.in_flight(p));
        let later = Instant::now() + Duration::from_secs(1);
        let (settled, ()) = tokio::join!(pending.settled(p, later), async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(second);
        });
        assert!(settled);
        assert!(!pending.in_flight(p));
        assert!(pending.settled(other, Instant::now()).await);
    }
}
