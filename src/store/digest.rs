//! Digests of the entries in an arc, and the reconciliation of two copies of an
//! arc, for anti-entropy between replicas.
//!
//! Two replicas compare an arc without sending it: each splits the arc into the
//! same equal buckets of positions and sums, per bucket, a hash of every entry's
//! identity and version. Buckets whose digests match hold the same entries at the
//! same versions (up to a 64-bit hash collision); only the others are read and
//! reconciled, entry by entry, newest version winning. The sum is a wrapping
//! addition, so a digest does not depend on the order entries are visited in, and
//! a store can compute it from a range scan without copying values.

use super::{Entry, Version};
use crate::ring::{Arc, Position};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::ops::Range;

/// The digest of one bucket: the wrapping sum of its entries' hashes, and how
/// many entries (tombstones too) it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Wrapping sum of `entry_hash` over the bucket's entries.
    pub hash: u64,
    /// How many entries the bucket holds.
    pub count: u64,
}

impl Bucket {
    /// Adds one entry to the bucket.
    pub fn add(&mut self, hash: u64) {
        self.hash = self.hash.wrapping_add(hash);
        self.count += 1;
    }
}

/// The most buckets one digest may have (a peer asking for more is refused).
pub const MAX_BUCKETS: usize = 4096;

/// A stable hash of an entry's identity and version: position, key, version, and
/// whether it is a tombstone. Values are not hashed: a version names one write,
/// so equal versions mean equal values.
pub fn entry_hash(position: Position, key: &[u8], version: Version, tombstone: bool) -> u64 {
    let mut h = Sha256::new();
    h.update(position.0.to_be_bytes());
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(version.micros.to_be_bytes());
    h.update(version.node.to_be_bytes());
    h.update([u8::from(tombstone)]);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

/// How many positions `arc` spans (2^64 for the whole ring).
fn span(arc: Arc) -> u128 {
    if arc.start == arc.end {
        1u128 << 64
    } else {
        u128::from(arc.start.distance_to(arc.end))
    }
}

/// How many buckets to split `arc` into when `wanted` are asked for: at most
/// [`MAX_BUCKETS`], at least one, and never more than the arc has positions.
pub fn bucket_count(arc: Arc, wanted: usize) -> usize {
    let wanted = wanted.clamp(1, MAX_BUCKETS) as u128;
    wanted.min(span(arc)) as usize
}

/// The bucket of `position` (which lies in `arc`) when `arc` is split into
/// `buckets` equal parts.
pub fn bucket_index(arc: Arc, position: Position, buckets: usize) -> usize {
    let offset = u128::from(arc.start.distance_to(position));
    ((offset * buckets as u128) / span(arc)) as usize
}

/// The positions of buckets `run` of `arc` split into `buckets`, as an arc:
/// exactly the positions `bucket_index` puts in those buckets.
pub fn buckets_arc(arc: Arc, run: Range<usize>, buckets: usize) -> Arc {
    let span = span(arc);
    let n = buckets as u128;
    // The first offset of bucket i is ceil(i * span / n).
    let first = |i: usize| (i as u128 * span).div_ceil(n);
    let at = |offset: u128| Position(arc.start.0.wrapping_add(offset as u64));
    if run.end >= buckets {
        // Up to the arc's end (for the whole ring, back round to its start).
        return Arc::new(at(first(run.start)), arc.end);
    }
    Arc::new(at(first(run.start)), at(first(run.end)))
}

/// The digest of `entries` (all in `arc`) split into `buckets`.
pub fn digest<'a>(
    arc: Arc,
    buckets: usize,
    entries: impl IntoIterator<Item = (Position, &'a [u8], Version, bool)>,
) -> Vec<Bucket> {
    let mut out = vec![Bucket::default(); buckets];
    for (position, key, version, tombstone) in entries {
        out[bucket_index(arc, position, buckets)]
            .add(entry_hash(position, key, version, tombstone));
    }
    out
}

/// The runs of consecutive buckets whose digests differ.
pub fn differing_runs(mine: &[Bucket], theirs: &[Bucket]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let n = mine.len().max(theirs.len());
    for i in 0..n {
        if mine.get(i) == theirs.get(i) {
            continue;
        }
        match runs.last_mut() {
            Some(run) if run.end == i => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// What two copies of an arc lack from each other.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Entries of theirs that are newer than (or missing from) mine.
    pub take: Vec<Entry>,
    /// Entries of mine that are newer than (or missing from) theirs.
    pub give: Vec<Entry>,
}

/// Compares two copies of the same arc, entry by entry.
pub fn reconcile(mine: Vec<Entry>, theirs: Vec<Entry>) -> Reconciled {
    // Ordered, so that what is given goes in the same order every time (a
    // simulation replays exactly).
    let mut mine: BTreeMap<(Position, Vec<u8>), Entry> = mine
        .into_iter()
        .map(|e| ((e.position, e.key.clone()), e))
        .collect();
    let mut out = Reconciled::default();
    for e in theirs {
        match mine.remove(&(e.position, e.key.clone())) {
            Some(m) if m.version > e.version => out.give.push(m),
            Some(m) if m.version == e.version => {}
            _ => out.take.push(e),
        }
    }
    out.give.extend(mine.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(position: u64, key: &str, micros: u64, value: Option<&str>) -> Entry {
        Entry {
            position: Position(position),
            key: key.into(),
            value: value.map(Into::into),
            version: Version { micros, node: 1 },
            expires: None,
        }
    }

    fn digest_of(arc: Arc, buckets: usize, entries: &[Entry]) -> Vec<Bucket> {
        digest(
            arc,
            buckets,
            entries
                .iter()
                .map(|e| (e.position, &e.key[..], e.version, e.value.is_none())),
        )
    }

    #[test]
    fn equal_copies_have_equal_digests_whatever_their_order() {
        let arc = Arc::new(Position(0), Position(1000));
        let a = vec![entry(1, "a", 5, Some("x")), entry(900, "b", 6, None)];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(digest_of(arc, 8, &a), digest_of(arc, 8, &b));
    }

    #[test]
    fn a_newer_version_or_a_tombstone_changes_only_its_bucket() {
        let arc = Arc::new(Position(0), Position(1000));
        let a = vec![entry(1, "a", 5, Some("x")), entry(900, "b", 6, Some("y"))];
        let mut b = a.clone();
        b[1].version.micros = 7;
        assert_eq!(
            differing_runs(&digest_of(arc, 8, &a), &digest_of(arc, 8, &b)),
            vec![7..8]
        );
        let mut c = a.clone();
        c[0].value = None;
        assert_eq!(
            differing_runs(&digest_of(arc, 8, &a), &digest_of(arc, 8, &c)),
            vec![0..1]
        );
    }

    #[test]
    fn adjacent_differing_buckets_form_one_run() {
        let same = Bucket::default();
        let other = Bucket { hash: 1, count: 1 };
        let mine = [same, other, other, same, other];
        let theirs = [same; 5];
        assert_eq!(differing_runs(&mine, &theirs), vec![1..3, 4..5]);
    }

    #[test]
    fn reconciling_takes_the_newer_side_of_each_key() {
        let mine = vec![
            entry(1, "same", 5, Some("s")),
            entry(2, "mine-newer", 9, Some("m")),
            entry(3, "only-mine", 1, None),
            entry(4, "theirs-newer", 1, Some("old")),
        ];
        let theirs = vec![
            entry(1, "same", 5, Some("s")),
            entry(2, "mine-newer", 8, Some("t")),
            entry(4, "theirs-newer", 2, None),
            entry(5, "only-theirs", 3, Some("t")),
        ];
        let r = reconcile(mine, theirs);
        let keys = |v: &[Entry]| {
            let mut k: Vec<String> = v
                .iter()
                .map(|e| String::from_utf8(e.key.clone()).unwrap())
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(&r.take), ["only-theirs", "theirs-newer"]);
        assert_eq!(keys(&r.give), ["mine-newer", "only-mine"]);
    }

    #[test]
    fn a_tiny_arc_gets_no_more_buckets_than_positions() {
        let arc = Arc::new(Position(10), Position(13));
        assert_eq!(bucket_count(arc, 256), 3);
        assert_eq!(bucket_count(Arc::whole(Position(0)), 100_000), MAX_BUCKETS);
        assert_eq!(bucket_count(arc, 0), 1);
    }

    proptest! {
        /// Every position of an arc falls in exactly the bucket whose arc holds it,
        /// including arcs that wrap and the whole ring.
        #[test]
        fn bucket_arcs_hold_exactly_their_positions(
            start: u64, len in prop_oneof![Just(0u64), 1u64..u64::MAX], wanted in 1usize..300,
            probe: u64, from in 0usize..300, width in 1usize..300,
        ) {
            let arc = Arc::new(Position(start), Position(start.wrapping_add(len)));
            let n = bucket_count(arc, wanted);
            let position = if len == 0 {
                Position(probe)
            } else {
                Position(start.wrapping_add(probe % len))
            };
            let i = bucket_index(arc, position, n);
            prop_assert!(i < n);
            prop_assert!(buckets_arc(arc, i..i + 1, n).contains(position));
            let run = (from % n)..((from % n) + width).min(n);
            prop_assert_eq!(buckets_arc(arc, run.clone(), n).contains(position), run.contains(&i));
        }
    }
}
