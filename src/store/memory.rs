//! The in-memory store: an ordered map behind a read-write lock.

use super::expiring::Expiring;
use super::{Bucket, Entry, Store, StoreError, Version, Written, digest, now_micros};
use crate::ring::{Arc, Position};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// An entry's place: its position and key.
type Id = (u64, Vec<u8>);
/// An entry's value (`None`: a tombstone), version and expiry.
type Stored = (Option<Vec<u8>>, Version, Option<u64>);
/// Entries by (position, raw key): the value (`None`: a tombstone) and its version.
type Map = BTreeMap<Id, Stored>;

/// The map and how many of its entries are live (not tombstones).
#[derive(Debug, Default)]
struct Table {
    map: Map,
    live: usize,
}

impl Table {
    /// Puts `value` at `version` (expiring at `expires`) if it is newer than
    /// what is there; returns the live value it replaced, if it replaced one
    /// (an expired one does not count).
    fn put(
        &mut self,
        id: (u64, Vec<u8>),
        value: Option<Vec<u8>>,
        version: Version,
        expires: Option<u64>,
    ) -> Option<Vec<u8>> {
        let adds = usize::from(value.is_some());
        match self.map.get_mut(&id) {
            Some((_, v, _)) if *v >= version => None,
            Some(slot) => {
                let (old, _, lapse) = std::mem::replace(slot, (value, version, expires));
                self.live = self.live + adds - usize::from(old.is_some());
                old.filter(|_| !super::expired(lapse, now_micros()))
            }
            None => {
                self.map.insert(id, (value, version, expires));
                self.live += adds;
                None
            }
        }
    }
}

/// Ordered in-memory storage. A `std` lock, not a Tokio one: every operation is
/// short and never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    table: RwLock<Table>,
    /// Its entries with an expiry, by expiry.
    expiring: Expiring,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated
        // (mutations are single map calls and a counter), so a poisoned lock is
        // still consistent.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every entry in `arc`; returns their (position, key).
    pub(super) fn remove_arc(&self, arc: Arc) -> Vec<(u64, Vec<u8>)> {
        let mut table = self.write();
        let mut removed = Vec::new();
        for r in arc.ranges() {
            let doomed: Vec<_> = table
                .map
                .range(bounds(&r))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                if let Some((Some(_), _, _)) = table.map.remove(&k) {
                    table.live -= 1;
                }
                removed.push(k);
            }
        }
        removed
    }

    /// Removes the entries still stored at exactly the given versions; returns
    /// their (position, key).
    pub(super) fn remove_versions(
        &self,
        entries: &[(Position, Vec<u8>, Version)],
    ) -> Vec<(u64, Vec<u8>)> {
        let mut table = self.write();
        let mut removed = Vec::new();
        for (position, key, version) in entries {
            let id = (position.0, key.clone());
            if table.map.get(&id).is_some_and(|(_, v, _)| v == version) {
                if let Some((Some(_), _, _)) = table.map.remove(&id) {
                    table.live -= 1;
                }
                removed.push(id);
            }
        }
        removed
    }

    /// Drops tombstones older than `before_micros`; returns their (position, key).
    pub(super) fn purge_expired(&self, before_micros: u64) -> Vec<(u64, Vec<u8>)> {
        let mut table = self.write();
        let expired: Vec<(u64, Vec<u8>)> = table
            .map
            .iter()
            .filter(|(_, (value, version, _))| value.is_none() && version.micros < before_micros)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            table.map.remove(id);
        }
        expired
    }

    /// The stored entry (value or tombstone) of `key`, if any.
    fn stored(&self, position: Position, key: &[u8]) -> Option<Entry> {
        self.read()
            .map
            .get(&(position.0, key.to_vec()))
            .map(|(value, version, expires)| Entry {
                position,
                key: key.to_vec(),
                value: value.clone(),
                version: *version,
                expires: *expires,
            })
    }

    /// Writes `value` (`None`: delete) by `writer` with the next version for the
    /// key; returns the previous live value and the entry as written.
    pub(super) fn write_next(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        writer: u64,
        expires: Option<u64>,
    ) -> Written {
        let mut table = self.write();
        let id = (position.0, key);
        let previous = table.map.get(&id).map(|(_, v, _)| *v);
        let version = Version::next(previous, writer);
        let expires = expires.filter(|_| value.is_some());
        let entry = Entry {
            position,
            key: id.1.clone(),
            value: value.clone(),
            version,
            expires,
        };
        self.expiring.note(&entry);
        Written {
            previous: table.put(id, value, version, expires),
            entry,
        }
    }
}

type MapBounds = (Bound<(u64, Vec<u8>)>, Bound<(u64, Vec<u8>)>);

/// Map bounds covering every key at positions `range`.
fn bounds(range: &std::ops::RangeInclusive<u64>) -> MapBounds {
    let start = Bound::Included((*range.start(), Vec::new()));
    let end = match range.end().checked_add(1) {
        Some(next) => Bound::Excluded((next, Vec::new())),
        None => Bound::Unbounded,
    };
    (start, end)
}

/// The entry a map row holds.
fn stored_entry(((p, k), (v, version, expires)): (&Id, &Stored)) -> Entry {
    Entry {
        position: Position(*p),
        key: k.clone(),
        value: v.clone(),
        version: *version,
        expires: *expires,
    }
}

impl Store for MemoryStore {
    fn page(
        &self,
        range: std::ops::RangeInclusive<u64>,
        after: Option<&[u8]>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let (_, end) = bounds(&range);
        let start = match after {
            Some(key) => Bound::Excluded((*range.start(), key.to_vec())),
            None => Bound::Included((*range.start(), Vec::new())),
        };
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let table = self.read();
        Ok(table
            .map
            .range((start, end))
            .filter(|((_, k), (v, _, lapse))| {
                v.is_some() && !super::expired(*lapse, now) && k.starts_with(prefix)
            })
            .take(limit)
            .map(stored_entry)
            .collect())
    }

    fn get_versioned(
        &self,
        position: Position,
        key: &[u8],
    ) -> Result<Option<super::Live>, StoreError> {
        let table = self.read();
        let found = table.map.get(&(position.0, key.to_vec()));
        let now = now_micros();
        Ok(found
            .filter(|(_, _, lapse)| !super::expired(*lapse, now))
            .and_then(|(v, version, lapse)| v.clone().map(|v| (v, *version, *lapse))))
    }

    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .read()
            .map
            .get(&(position.0, key.to_vec()))
            .filter(|(_, _, lapse)| !super::expired(*lapse, now_micros()))
            .and_then(|(v, _, _)| v.clone()))
    }

    fn set_expiring(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
        expires: Option<u64>,
    ) -> Result<Written, StoreError> {
        Ok(self.write_next(position, key, Some(value), writer, expires))
    }

    fn delete(&self, position: Position, key: &[u8], writer: u64) -> Result<Written, StoreError> {
        Ok(self.write_next(position, key.to_vec(), None, writer, None))
    }

    fn purge_lapsed(&self, now_micros: u64) -> Result<usize, StoreError> {
        let due = self.expiring.due(now_micros);
        if due.is_empty() {
            return Ok(0);
        }
        let mut table = self.write();
        let mut freed = 0;
        for (at, position, key) in due {
            let id = (position, key);
            // Only what still holds that expiry: a key written since stays.
            if let Some((Some(_), _, Some(lapse))) = table.map.get(&id)
                && *lapse == at
            {
                table.map.remove(&id);
                table.live -= 1;
                freed += 1;
            }
        }
        Ok(freed)
    }

    fn entry(&self, position: Position, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self.stored(position, key))
    }

    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError> {
        let mut entries = self.entries_in(Arc::point(position))?;
        entries.retain(|e| e.value.is_some());
        Ok(entries)
    }

    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError> {
        let table = self.read();
        Ok(arc
            .ranges()
            .iter()
            .flat_map(|r| table.map.range(bounds(r)))
            .map(stored_entry)
            .collect())
    }

    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut table = self.write();
        for e in entries {
            self.expiring.note(&e);
            table.put((e.position.0, e.key), e.value, e.version, e.expires);
        }
        Ok(())
    }

    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError> {
        Ok(self.remove_arc(arc).len())
    }

    fn remove_exact(&self, entries: &[(Position, Vec<u8>, Version)]) -> Result<usize, StoreError> {
        Ok(self.remove_versions(entries).len())
    }

    fn len(&self) -> usize {
        self.read().live
    }

    fn count_in(&self, arc: Arc) -> usize {
        let table = self.read();
        if arc.start == arc.end {
            return table.live;
        }
        arc.ranges()
            .iter()
            .flat_map(|r| table.map.range(bounds(r)))
            .filter(|(_, (value, _, _))| value.is_some())
            .count()
    }

    fn digest(&self, arc: Arc, buckets: usize) -> Result<Vec<Bucket>, StoreError> {
        // Copy the identities out and hash them without the lock, so that
        // writes wait for a scan, not for the hashing.
        let ids: Vec<(Position, Vec<u8>, Version, bool)> = {
            let table = self.read();
            arc.ranges()
                .into_iter()
                .flat_map(|r| table.map.range(bounds(&r)))
                .map(|((p, k), (v, version, _))| (Position(*p), k.clone(), *version, v.is_none()))
                .collect()
        };
        let entries = ids.iter().map(|(p, k, v, t)| (*p, &k[..], *v, *t));
        Ok(digest::digest(arc, buckets, entries))
    }

    fn purge_tombstones(&self, before_micros: u64) -> Result<usize, StoreError> {
        Ok(self.purge_expired(before_micros).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_conforms() {
        super::super::conformance::run(|| Box::new(MemoryStore::new()));
    }
}
