//! The on-disk store's in-memory index: every entry's identity, version and
//! digest hash, and no value, so that a node's memory grows with its key count,
//! not with its data.
//!
//! Why it exists: counts ([`Store::len`](crate::store::Store::len), `count_in`),
//! digests for anti-entropy and every version check of a write (last writer wins,
//! `remove_exact`, tombstone expiry) then run from memory, without reading redb;
//! only reads of values go to disk.
//!
//! An entry is indexed by its position and a 64-bit hash of its raw key (SipHash
//! with keys drawn at random per process, so hashes cannot be aimed at each
//! other), not by the key itself: 48 bytes per entry whatever the key's length.
//! Two distinct keys at one position with the same key hash would share an index
//! slot (their counts and digests would merge); for `n` keys at one position the
//! chance is about `n² / 2^65`, and distinct keys share a position only through a
//! 64-bit SHA-256 prefix collision already, so this is assumed never to happen.

use crate::ring::{Arc, Position};
use crate::store::{Bucket, Version, digest};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// What the index knows of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    /// The version of the write that put the entry there.
    pub version: Version,
    /// `digest::entry_hash` of the entry, precomputed for digests.
    pub hash: u64,
    /// Whether the entry is a tombstone.
    pub tombstone: bool,
}

impl Meta {
    /// The index's record of the entry `(position, key)` at `version`.
    pub fn of(position: Position, key: &[u8], version: Version, tombstone: bool) -> Self {
        Self {
            version,
            hash: digest::entry_hash(position, key, version, tombstone),
            tombstone,
        }
    }
}

/// An entry's slot: its position, then its key's hash.
pub(super) type Slot = (u64, u64);

/// The index: entries by [`Slot`], and how many are live.
#[derive(Debug, Default)]
pub(super) struct Index {
    map: BTreeMap<Slot, Meta>,
    live: usize,
    keys: RandomState,
}

/// Builds an [`Index`] from the entries of a store being opened, a part at a
/// time.
///
/// `BTreeMap`'s own bulk build (collecting a vector) is the one that gives full
/// nodes, but it holds the whole vector of entries (48 bytes each) and a sort
/// buffer of half that beside the finished map: at 1 M keys about 72 MB on top
/// of the map's 49, which an allocator need not return to the system at once.
/// Here each part of about a sixteenth of the entries is bulk-built and merged
/// into the map with [`BTreeMap::append`], which builds full nodes too and frees
/// the old map's nodes as it goes: the transient memory is a few parts' worth
/// (the part, the copy its bulk build collects and sorts with a buffer, and its
/// map; about 12 MB at 1 M keys), for about eight passes over the entries in
/// all.
#[derive(Debug)]
pub(super) struct IndexBuilder {
    keys: RandomState,
    map: BTreeMap<Slot, Meta>,
    part: Vec<(Slot, Meta)>,
}

/// How many parts a build is split into (the merges cost about `PARTS / 2`
/// passes over the entries).
const PARTS: usize = 16;

/// The smallest part: below it the merges are not worth their passes.
const SMALLEST_PART: usize = 1 << 14;

impl IndexBuilder {
    /// A builder for about `expected` entries.
    pub fn new(expected: usize) -> Self {
        Self {
            keys: RandomState::new(),
            map: BTreeMap::new(),
            part: Vec::with_capacity(expected.div_ceil(PARTS).max(SMALLEST_PART)),
        }
    }

    /// Adds `meta` for `key` at `position` (a later push for the same slot wins).
    pub fn push(&mut self, position: Position, key: &[u8], meta: Meta) {
        self.part
            .push((Index::slot_with(&self.keys, position, key), meta));
        if self.part.len() == self.part.capacity() {
            self.merge_part();
        }
    }

    fn merge_part(&mut self) {
        let mut part: BTreeMap<Slot, Meta> = self.part.drain(..).collect();
        self.map.append(&mut part);
    }

    /// The index of everything pushed.
    pub fn finish(mut self) -> Index {
        self.merge_part();
        let live = self.map.values().filter(|m| !m.tombstone).count();
        Index {
            map: self.map,
            live,
            keys: self.keys,
        }
    }
}

impl Index {
    /// The slot of `key` at `position` under the hasher `keys`.
    pub fn slot_with(keys: &RandomState, position: Position, key: &[u8]) -> Slot {
        (position.0, keys.hash_one(key))
    }

    /// The key hasher of this index (for [`Index::slot_with`] without the index).
    pub fn keys(&self) -> RandomState {
        self.keys.clone()
    }

    /// The slot of `key` at `position`.
    pub fn slot(&self, position: Position, key: &[u8]) -> Slot {
        Self::slot_with(&self.keys, position, key)
    }

    /// What the index holds for `key` at `position`.
    pub fn get(&self, position: Position, key: &[u8]) -> Option<Meta> {
        self.map.get(&self.slot(position, key)).copied()
    }

    /// Records `meta` for `key` at `position` (whatever was there).
    pub fn put(&mut self, position: Position, key: &[u8], meta: Meta) {
        let slot = self.slot(position, key);
        let old = self.map.insert(slot, meta);
        self.live =
            self.live + usize::from(!meta.tombstone) - old.map_or(0, |m| usize::from(!m.tombstone));
    }

    /// Forgets the entry in `slot`; returns what the index held.
    pub fn remove(&mut self, slot: Slot) -> Option<Meta> {
        let old = self.map.remove(&slot);
        if old.is_some_and(|m| !m.tombstone) {
            self.live -= 1;
        }
        old
    }

    /// How many live entries the index holds.
    pub fn live(&self) -> usize {
        self.live
    }

    /// How many live entries lie in `arc`.
    pub fn count_in(&self, arc: Arc) -> usize {
        if arc.start == arc.end {
            return self.live;
        }
        arc.ranges()
            .iter()
            .flat_map(|r| self.map.range(bounds(r)))
            .filter(|(_, m)| !m.tombstone)
            .count()
    }

    /// The digest of `arc` in `buckets`, from the precomputed entry hashes.
    pub fn digest(&self, arc: Arc, buckets: usize) -> Vec<Bucket> {
        let mut out = vec![Bucket::default(); buckets];
        for r in arc.ranges() {
            for ((position, _), meta) in self.map.range(bounds(&r)) {
                out[digest::bucket_index(arc, Position(*position), buckets)].add(meta.hash);
            }
        }
        out
    }

    /// The slots of the tombstones older than `before_micros`.
    pub fn expired(&self, before_micros: u64) -> Vec<Slot> {
        self.map
            .iter()
            .filter(|(_, m)| m.tombstone && m.version.micros < before_micros)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Index bounds covering every slot at positions `range`.
fn bounds(range: &std::ops::RangeInclusive<u64>) -> std::ops::RangeInclusive<Slot> {
    (*range.start(), 0)..=(*range.end(), u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(micros: u64) -> Version {
        Version { micros, node: 1 }
    }

    #[test]
    fn counts_follow_puts_and_removals() {
        let mut index = Index::default();
        let p = Position(7);
        index.put(p, b"a", Meta::of(p, b"a", version(1), false));
        index.put(p, b"b", Meta::of(p, b"b", version(1), false));
        assert_eq!(index.live(), 2);
        index.put(p, b"a", Meta::of(p, b"a", version(2), true));
        assert_eq!(index.live(), 1);
        assert_eq!(index.expired(3), vec![index.slot(p, b"a")]);
        assert!(index.remove(index.slot(p, b"b")).is_some());
        assert_eq!(index.live(), 0);
        assert_eq!(index.count_in(Arc::point(p)), 0);
    }

    #[test]
    fn a_built_index_equals_one_made_by_puts_across_several_parts() {
        // More than two parts' worth, with tombstones, and the last push of a
        // slot winning.
        let n = 2 * SMALLEST_PART + 123;
        let mut builder = IndexBuilder::new(n);
        let mut expected = Index {
            keys: builder.keys.clone(),
            ..Index::default()
        };
        let key = |i: usize| format!("k{i}").into_bytes();
        for i in 0..n {
            let p = Position(i as u64 * 7919);
            let meta = Meta::of(p, &key(i), version(i as u64), i % 5 == 0);
            builder.push(p, &key(i), meta);
            expected.put(p, &key(i), meta);
        }
        let again = Meta::of(Position(0), &key(0), version(u64::MAX), false);
        builder.push(Position(0), &key(0), again);
        expected.put(Position(0), &key(0), again);

        let built = builder.finish();
        assert_eq!(built.map, expected.map);
        assert_eq!(built.live(), expected.live());
        assert_eq!(built.live(), n - n.div_ceil(5) + 1);
    }

    #[test]
    fn a_digest_from_the_index_equals_one_from_the_entries() {
        let mut index = Index::default();
        let rows = [
            (5u64, "a", 1u64, false),
            (90, "b", 2, true),
            (u64::MAX, "c", 3, false),
        ];
        for (p, k, v, t) in rows {
            let meta = Meta::of(Position(p), k.as_bytes(), version(v), t);
            index.put(Position(p), k.as_bytes(), meta);
        }
        let arc = Arc::new(Position(80), Position(10));
        let expected = digest::digest(
            arc,
            8,
            rows.iter()
                .filter(|(p, ..)| arc.contains(Position(*p)))
                .map(|(p, k, v, t)| (Position(*p), k.as_bytes(), version(*v), *t)),
        );
        assert_eq!(index.digest(arc, 8), expected);
        assert_eq!(index.count_in(arc), 2);
    }
}
