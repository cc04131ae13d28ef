//! The in-memory store: an ordered map behind a read-write lock.

use super::{Entry, Store, StoreError};
use crate::ring::{Arc, Position};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Entries by (position, raw key).
type Map = BTreeMap<(u64, Vec<u8>), Vec<u8>>;

/// Ordered in-memory storage. A `std` lock, not a Tokio one: every operation is
/// short and never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RwLock<Map>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single map call), so a poisoned lock is still consistent.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
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

impl Store for MemoryStore {
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(&(position.0, key.to_vec())).cloned())
    }

    fn set(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.write().insert((position.0, key), value))
    }

    fn delete(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.write().remove(&(position.0, key.to_vec())))
    }

    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError> {
        self.entries_in(Arc::new(position, Position(position.0.wrapping_add(1))))
    }

    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError> {
        let map = self.read();
        Ok(arc
            .ranges()
            .iter()
            .flat_map(|r| map.range(bounds(r)))
            .map(|((p, k), v)| Entry {
                position: Position(*p),
                key: k.clone(),
                value: v.clone(),
            })
            .collect())
    }

    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut map = self.write();
        for e in entries {
            map.insert((e.position.0, e.key), e.value);
        }
        Ok(())
    }

    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError> {
        let mut map = self.write();
        let mut removed = 0;
        for r in arc.ranges() {
            let doomed: Vec<_> = map.range(bounds(&r)).map(|(k, _)| k.clone()).collect();
            removed += doomed.len();
            for k in doomed {
                map.remove(&k);
            }
        }
        Ok(removed)
    }

    fn len(&self) -> usize {
        self.read().len()
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
