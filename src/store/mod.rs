//! Storage behind a small trait, so that an on-disk engine can slot in beside the
//! in-memory one without touching the node.
//!
//! Entries are keyed by `(position, raw key bytes)`: the position orders them on the
//! ring (so an arc is a range scan), and the raw key keeps two keys apart even if
//! their positions ever collide, and lets keys be listed.

mod disk;
mod memory;

pub use disk::{DiskStore, SyncMode};
pub use memory::MemoryStore;

use crate::ring::{Arc, Member, Position};
use std::future::Future;
use std::pin::Pin;

/// Resolves once the mutations made before it was asked for are durable.
pub type SyncFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// One stored key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's ring position (SHA-256 prefix of `key`).
    pub position: Position,
    /// The key as the user wrote it.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// Errors a store reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying engine failed; the message says how.
    #[error("storage engine failure: {0}")]
    Engine(String),
}

/// A node's local key-value storage. Every method is synchronous and short, so the
/// node may call it while holding its view lock.
pub trait Store: Send + Sync + 'static {
    /// The value of `key` at `position`, if present.
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`; returns the previous value, if any.
    fn set(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes `key`; returns the removed value, if any.
    fn delete(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The entries at `position` whatever their raw key (for position-only lookups).
    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError>;
    /// A copy of every entry whose position lies in `arc`, in ring order from its start.
    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError>;
    /// Stores every entry of `entries`, replacing what is there.
    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError>;
    /// Removes every entry whose position lies in `arc`; returns how many.
    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError>;
    /// How many entries the store holds.
    fn len(&self) -> usize;
    /// Whether the store holds no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Resolves once every mutation made so far is as durable as the store
    /// promises (at once for stores that promise nothing more).
    fn sync_point(&self) -> SyncFuture {
        Box::pin(std::future::ready(Ok(())))
    }
    /// Resolves once every mutation made so far is on disk, whatever the sync
    /// mode (hand-offs wait for this: the sender drops its copy on our word).
    fn durable_point(&self) -> SyncFuture {
        self.sync_point()
    }
    /// The node identity saved with the data, if any.
    fn identity(&self) -> Option<Member> {
        None
    }
    /// Saves the node's identity with the data (durable at the next sync point).
    fn save_identity(&self, _me: &Member) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The conformance suite every [`Store`] implementation runs.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::ring::key_position;

    fn put(store: &dyn Store, key: &str, value: &str) -> Option<Vec<u8>> {
        store
            .set(key_position(key.as_bytes()), key.into(), value.into())
            .unwrap()
    }

    /// Runs every check against stores made by `make`.
    pub fn run(make: impl Fn() -> Box<dyn Store>) {
        set_returns_the_previous_value(&*make());
        delete_returns_the_removed_value(&*make());
        colliding_positions_keep_distinct_keys(&*make());
        arcs_scan_and_remove_exactly_their_positions(&*make());
    }

    fn set_returns_the_previous_value(store: &dyn Store) {
        assert_eq!(put(store, "a", "1"), None);
        assert_eq!(put(store, "a", "2"), Some(b"1".to_vec()));
        assert_eq!(
            store.get(key_position(b"a"), b"a").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(store.len(), 1);
    }

    fn delete_returns_the_removed_value(store: &dyn Store) {
        put(store, "a", "1");
        assert_eq!(
            store.delete(key_position(b"a"), b"a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(store.delete(key_position(b"a"), b"a").unwrap(), None);
        assert_eq!(store.get(key_position(b"a"), b"a").unwrap(), None);
        assert!(store.is_empty());
    }

    fn colliding_positions_keep_distinct_keys(store: &dyn Store) {
        let p = Position(7);
        store.set(p, b"x".to_vec(), b"1".to_vec()).unwrap();
        store.set(p, b"y".to_vec(), b"2".to_vec()).unwrap();
        assert_eq!(store.get(p, b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(p, b"y").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.at_position(p).unwrap().len(), 2);
    }

    fn arcs_scan_and_remove_exactly_their_positions(store: &dyn Store) {
        for p in [0u64, 5, 10, 15, u64::MAX] {
            store
                .set(Position(p), p.to_string().into_bytes(), vec![1])
                .unwrap();
        }
        let wrapping = Arc::new(Position(15), Position(5));
        let got: Vec<u64> = store
            .entries_in(wrapping)
            .unwrap()
            .iter()
            .map(|e| e.position.0)
            .collect();
        assert_eq!(got, vec![15, u64::MAX, 0]);
        assert_eq!(store.remove_in(wrapping).unwrap(), 3);
        assert_eq!(store.len(), 2);
        assert_eq!(store.entries_in(Arc::whole(Position(0))).unwrap().len(), 2);
    }
}
