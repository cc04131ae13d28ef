//! One exchange of a replica arc with its owner: digests in, the next part to
//! read out; both copies of a part in, what to store and send out.
//!
//! The exchange: the replica splits the arc into equal buckets
//! ([`bucket_count`]) and compares its digest with the owner's. Every run of
//! differing buckets is read from the owner [`READ_BUCKETS`] at a time (so one
//! read stays small even when a fresh replica differs everywhere), and each part
//! is reconciled with the replica's own entries there: the replica takes what
//! the owner has newer and gives the owner what it has newer. Both directions
//! merge newest-wins, so an exchange can only bring the copies closer.

use crate::ring::Arc;
use crate::store::{
    Bucket, Entry, Reconciled, bucket_count, buckets_arc, differing_runs, reconcile,
};
use std::collections::VecDeque;
use std::ops::Range;

/// Buckets per digest: enough that a few changed keys in a big arc mean reading
/// a small part of it, few enough that a digest is a small message.
pub const BUCKETS: usize = 256;

/// Buckets read at once at most (1/16 of an arc).
pub const READ_BUCKETS: usize = BUCKETS / 16;

/// What one exchange moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exchanged {
    /// Entries taken from the owner.
    pub taken: usize,
    /// Entries sent to the owner.
    pub given: usize,
}

/// What the exchange needs done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read the owner's entries in this part of the arc, and this node's own,
    /// then call [`ArcSync::on_read`].
    Read(Arc),
    /// The exchange is over.
    Done(Exchanged),
}

/// The owner's digest does not fit the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the owner answered {got} buckets for a digest of {asked}")]
pub struct WrongDigest {
    /// Buckets asked for.
    pub asked: usize,
    /// Buckets in the answer.
    pub got: usize,
}

/// One exchange of a replica arc with its owner.
#[derive(Debug)]
pub struct ArcSync {
    arc: Arc,
    buckets: usize,
    /// Bucket ranges still to read, in order.
    parts: VecDeque<Range<usize>>,
    exchanged: Exchanged,
}

impl ArcSync {
    /// An exchange of `arc`: compute this node's digest of it in
    /// [`ArcSync::buckets`] buckets, ask the owner for the same, then call
    /// [`ArcSync::on_digests`].
    pub fn new(arc: Arc) -> Self {
        Self {
            arc,
            buckets: bucket_count(arc, BUCKETS),
            parts: VecDeque::new(),
            exchanged: Exchanged::default(),
        }
    }

    /// The arc exchanged.
    pub fn arc(&self) -> Arc {
        self.arc
    }

    /// How many buckets both digests split the arc into.
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Takes both digests: the first part to read, or done if they agree.
    pub fn on_digests(&mut self, mine: &[Bucket], theirs: &[Bucket]) -> Result<Step, WrongDigest> {
        if theirs.len() != self.buckets {
            return Err(WrongDigest {
                asked: self.buckets,
                got: theirs.len(),
            });
        }
        self.parts = differing_runs(mine, theirs)
            .into_iter()
            .flat_map(|run| {
                (run.start..run.end)
                    .step_by(READ_BUCKETS)
                    .map(move |from| from..(from + READ_BUCKETS).min(run.end))
            })
            .collect();
        Ok(self.next())
    }

    /// Takes both copies of the part just read: what to store (`take`) and send
    /// the owner (`give`), and the next step.
    pub fn on_read(&mut self, mine: Vec<Entry>, theirs: Vec<Entry>) -> (Reconciled, Step) {
        let found = reconcile(mine, theirs);
        self.exchanged.taken += found.take.len();
        self.exchanged.given += found.give.len();
        (found, self.next())
    }

    fn next(&mut self) -> Step {
        match self.parts.pop_front() {
            Some(part) => Step::Read(buckets_arc(self.arc, part, self.buckets)),
            None => Step::Done(self.exchanged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;
    use crate::store::{MemoryStore, Store, Version};

    /// An arc of 2^20 positions, so that it has all [`BUCKETS`] buckets.
    fn arc() -> Arc {
        Arc::new(Position(1 << 40), Position((1 << 40) + (1 << 20)))
    }

    fn entry(offset: u64, key: &str, micros: u64) -> Entry {
        Entry {
            position: Position((1 << 40) + offset),
            key: key.into(),
            value: Some(key.into()),
            version: Version { micros, node: 1 },
            expires: None,
        }
    }

    fn store(entries: &[Entry]) -> MemoryStore {
        let store = MemoryStore::new();
        store.insert_all(entries.to_vec()).unwrap();
        store
    }

    /// Runs an exchange between two stores to its end, the way the node
    /// does; returns what it moved and every part it read.
    fn exchange(replica: &MemoryStore, owner: &MemoryStore) -> (Exchanged, Vec<Arc>) {
        exchange_of(arc(), replica, owner)
    }

    fn exchange_of(arc: Arc, replica: &MemoryStore, owner: &MemoryStore) -> (Exchanged, Vec<Arc>) {
        let mut sync = ArcSync::new(arc);
        let (mine, theirs) = (
            replica.digest(sync.arc(), sync.buckets()).unwrap(),
            owner.digest(sync.arc(), sync.buckets()).unwrap(),
        );
        let mut step = sync.on_digests(&mine, &theirs).unwrap();
        let mut reads = Vec::new();
        loop {
            match step {
                Step::Read(part) => {
                    reads.push(part);
                    let (found, next) = sync.on_read(
                        replica.entries_in(part).unwrap(),
                        owner.entries_in(part).unwrap(),
                    );
                    replica.insert_all(found.take).unwrap();
                    owner.insert_all(found.give).unwrap();
                    step = next;
                }
                Step::Done(x) => return (x, reads),
            }
        }
    }

    #[test]
    fn copies_that_agree_are_not_read() {
        let both = [entry(5, "a", 1), entry(900_000, "b", 2)];
        let (x, reads) = exchange(&store(&both), &store(&both));
        assert_eq!(x, Exchanged::default());
        assert!(reads.is_empty());
    }

    #[test]
    fn only_the_differing_bucket_is_read_and_both_sides_get_the_newer_copy() {
        // Same bucket (4096 positions a bucket): the owner is newer on "a",
        // the replica on "b"; "c", elsewhere, agrees.
        let replica = store(&[entry(5, "a", 1), entry(6, "b", 9), entry(500_000, "c", 1)]);
        let owner = store(&[entry(5, "a", 7), entry(6, "b", 2), entry(500_000, "c", 1)]);
        let (x, reads) = exchange(&replica, &owner);
        assert_eq!(x, Exchanged { taken: 1, given: 1 });
        assert_eq!(reads.len(), 1);
        assert!(reads[0].contains(Position((1 << 40) + 5)));
        assert!(!reads[0].contains(Position((1 << 40) + 500_000)));
        for s in [&replica, &owner] {
            let a = s.entry(Position((1 << 40) + 5), b"a").unwrap().unwrap();
            let b = s.entry(Position((1 << 40) + 6), b"b").unwrap().unwrap();
            assert_eq!((a.version.micros, b.version.micros), (7, 9));
        }
        // A second exchange finds nothing left to do.
        assert_eq!(exchange(&replica, &owner), (Exchanged::default(), vec![]));
    }

    #[test]
    fn an_empty_replica_reads_the_arc_a_sixteenth_at_a_time() {
        // One entry in every bucket of the owner's copy.
        let all: Vec<Entry> = (0..BUCKETS as u64)
            .map(|i| entry(i * 4096 + 1, &i.to_string(), 1))
            .collect();
        let (replica, owner) = (store(&[]), store(&all));
        let (x, reads) = exchange(&replica, &owner);
        assert_eq!(
            x,
            Exchanged {
                taken: BUCKETS,
                given: 0
            }
        );
        assert_eq!(reads.len(), BUCKETS / READ_BUCKETS);
        // The parts cover the arc, in order, without overlap.
        assert_eq!(reads[0].start, arc().start);
        assert_eq!(reads.last().unwrap().end, arc().end);
        for pair in reads.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(replica.len(), BUCKETS);
    }

    #[test]
    fn separate_runs_are_read_separately_and_short_runs_whole() {
        // Buckets 3 and 200 differ (4096 positions a bucket), nothing between.
        let replica = store(&[entry(3 * 4096 + 1, "a", 1), entry(200 * 4096 + 1, "b", 1)]);
        let owner = store(&[entry(3 * 4096 + 1, "a", 2), entry(200 * 4096 + 1, "b", 2)]);
        let (x, reads) = exchange(&replica, &owner);
        assert_eq!(x, Exchanged { taken: 2, given: 0 });
        assert_eq!(reads.len(), 2);
        assert!(reads[0].contains(Position((1 << 40) + 3 * 4096 + 1)));
        assert!(reads[1].contains(Position((1 << 40) + 200 * 4096 + 1)));
        assert!(!reads[0].contains(Position((1 << 40) + 100 * 4096)));
    }

    #[test]
    fn an_arc_across_the_top_of_the_ring_and_tombstones_are_exchanged_too() {
        let wraps = Arc::new(Position(u64::MAX - (1 << 19)), Position(1 << 19));
        let at = |position: u64, key: &str, micros: u64, live: bool| Entry {
            position: Position(position),
            key: key.into(),
            value: live.then(|| key.into()),
            version: Version { micros, node: 1 },
            expires: None,
        };
        // The owner deleted "top" after the replica's copy; the replica holds
        // a newer "bottom" than the owner.
        let replica = store(&[at(u64::MAX - 5, "top", 1, true), at(5, "bottom", 9, true)]);
        let owner = store(&[at(u64::MAX - 5, "top", 4, false), at(5, "bottom", 2, true)]);
        let (x, _) = exchange_of(wraps, &replica, &owner);
        assert_eq!(x, Exchanged { taken: 1, given: 1 });
        for s in [&replica, &owner] {
            let top = s.entry(Position(u64::MAX - 5), b"top").unwrap().unwrap();
            assert_eq!((top.version.micros, top.value), (4, None));
            let bottom = s.entry(Position(5), b"bottom").unwrap().unwrap();
            assert_eq!(bottom.version.micros, 9);
        }
        assert_eq!(exchange_of(wraps, &replica, &owner).0, Exchanged::default());
    }

    #[test]
    fn a_digest_of_the_wrong_size_is_an_error() {
        let mut sync = ArcSync::new(arc());
        let mine = vec![Bucket::default(); sync.buckets()];
        assert_eq!(
            sync.on_digests(&mine, &mine[1..]),
            Err(WrongDigest {
                asked: BUCKETS,
                got: BUCKETS - 1
            })
        );
    }
}
