//! Storage behind a small trait, so that an on-disk engine can slot in beside the
//! in-memory one without touching the node.
//!
//! Entries are keyed by `(position, raw key bytes)`: the position orders them on the
//! ring (so an arc is a range scan), and the raw key keeps two keys apart even if
//! their positions ever collide, and lets keys be listed.

mod digest;
mod disk;
mod expiring;
pub mod footprint;
mod memory;

pub use digest::{
    Bucket, MAX_BUCKETS, Reconciled, bucket_count, buckets_arc, differing_runs, reconcile,
};
pub use disk::{
    DEFAULT_CACHE_MB, DEFAULT_CHECKPOINT_EVERY, DEFAULT_COMMIT_DELAY, DiskOptions, DiskStore,
    SyncMode,
};
pub use memory::MemoryStore;

use crate::ring::{Arc, Member, Position};
use std::future::Future;
use std::pin::Pin;

/// Resolves once the mutations made before it was asked for are durable.
pub type SyncFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// The version of a write: microseconds since the Unix epoch, then the writing
/// node's ID to break ties. Copies of a key converge on the greatest version
/// (last writer wins), whatever order they arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Microseconds since the Unix epoch (at least one more than the version it
    /// replaced, so a node's writes to a key always move forward).
    pub micros: u64,
    /// The writing node's ID.
    pub node: u64,
}

impl Version {
    /// The version for a write by `node` now that replaces `previous`: the clock,
    /// or one past `previous` if the clock is behind it.
    pub fn next(previous: Option<Version>, node: u64) -> Version {
        let now = now_micros();
        let floor = previous.map_or(0, |p| p.micros.saturating_add(1));
        Version {
            micros: now.max(floor),
            node,
        }
    }
}

impl Version {
    /// The version's token as 32 hex digits, without allocating.
    pub fn hex(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let (m, n) = (self.micros, self.node);
        std::array::from_fn(|i| {
            let word = if i < 16 { m } else { n };
            HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize]
        })
    }

    /// The version as clients see it (`QueryResult.version`, the HTTP `ETag`):
    /// 32 hex digits, the microseconds then the writer.
    pub fn token(&self) -> String {
        String::from_utf8(self.hex().to_vec()).expect("hex digits are ASCII")
    }

    /// The version a [`Version::token`] names; `None` if `token` is not one.
    pub fn from_token(token: &str) -> Option<Version> {
        if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Version {
            micros: u64::from_str_radix(&token[..16], 16).ok()?,
            node: u64::from_str_radix(&token[16..], 16).ok()?,
        })
    }
}

/// One stored key: its value, or a tombstone if it was deleted, and the version
/// of the write that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's ring position (SHA-256 prefix of `key`).
    pub position: Position,
    /// The key as the user wrote it.
    pub key: Vec<u8>,
    /// The value; `None` is a tombstone (the key was deleted at `version`).
    pub value: Option<Vec<u8>>,
    /// The version of the write.
    pub version: Version,
    /// When the key expires, in microseconds since the Unix epoch (`None`:
    /// never). An expired entry reads as absent everywhere, and is purged.
    pub expires: Option<u64>,
}

impl Entry {
    /// Whether the entry is a live value at `now_micros`: not a tombstone, not
    /// expired.
    pub fn is_live(&self, now_micros: u64) -> bool {
        self.value.is_some() && !expired(self.expires, now_micros)
    }
}

/// A live value, its version and its expiry.
pub type Live = (Vec<u8>, Version, Option<u64>);

/// Whether an expiry has passed at `now_micros`.
pub fn expired(expires: Option<u64>, now_micros: u64) -> bool {
    expires.is_some_and(|at| at <= now_micros)
}

/// The wall clock in microseconds since the Unix epoch (what versions and
/// expiries are measured in).
pub use crate::clock::now_micros;

/// What a local write did: the live value it replaced, and the entry as written
/// (with its new version), which is what replicas are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The live value before the write, if any.
    pub previous: Option<Vec<u8>>,
    /// The entry as stored: the new value (or tombstone) at its new version.
    pub entry: Entry,
}

/// Errors a store reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying engine failed; the message says how.
    #[error("storage engine failure: {0}")]
    Engine(String),
}

/// A node's local key-value storage. Every method is synchronous and short, so the
/// node may call it while holding its view lock. Deletes leave tombstones, so
/// that a delete wins over an older copy of the value arriving later.
pub trait Store: Send + Sync + 'static {
    /// The value of `key` at `position`, if present (not deleted, not expired).
    fn get(&self, position: Position, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`, written by node `writer` (versioned with
    /// [`Version::next`]), expiring at `expires` (microseconds since the epoch)
    /// if given; returns the previous live value and the entry written.
    fn set_expiring(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
        expires: Option<u64>,
    ) -> Result<Written, StoreError>;
    /// [`Store::set_expiring`] with no expiry.
    fn set(
        &self,
        position: Position,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: u64,
    ) -> Result<Written, StoreError> {
        self.set_expiring(position, key, value, writer, None)
    }
    /// Removes the entries whose expiry has passed at `now_micros`; returns
    /// how many. (They read as absent from their expiry on; this frees them.)
    fn purge_lapsed(&self, now_micros: u64) -> Result<usize, StoreError>;
    /// Deletes `key` (leaving a tombstone), by node `writer`; returns the removed
    /// value and the tombstone written.
    fn delete(&self, position: Position, key: &[u8], writer: u64) -> Result<Written, StoreError>;
    /// The live value of `key`, its version and its expiry, if present.
    fn get_versioned(&self, position: Position, key: &[u8]) -> Result<Option<Live>, StoreError> {
        let now = now_micros();
        Ok(self
            .entry(position, key)?
            .filter(|e| e.is_live(now))
            .and_then(|e| e.value.map(|v| (v, e.version, e.expires))))
    }
    /// The stored entry (value or tombstone, with its version) of `key`, if any.
    fn entry(&self, position: Position, key: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// The live entries at `position` whatever their raw key (for position-only
    /// lookups).
    fn at_position(&self, position: Position) -> Result<Vec<Entry>, StoreError>;
    /// A copy of every entry (tombstones too) whose position lies in `arc`, in ring
    /// order from its start.
    fn entries_in(&self, arc: Arc) -> Result<Vec<Entry>, StoreError>;
    /// Merges `entries`: each one replaces the stored copy of its key only if its
    /// version is greater (last writer wins).
    fn insert_all(&self, entries: Vec<Entry>) -> Result<(), StoreError>;
    /// Removes every entry (tombstones too) whose position lies in `arc`; returns
    /// how many.
    fn remove_in(&self, arc: Arc) -> Result<usize, StoreError>;
    /// Removes each of `entries` (position, key, version) that is still stored
    /// at exactly that version (a newer write since is kept); returns how many.
    fn remove_exact(&self, entries: &[(Position, Vec<u8>, Version)]) -> Result<usize, StoreError>;
    /// How many live (not deleted) keys the store holds.
    fn len(&self) -> usize;
    /// How many live keys lie in `arc`.
    fn count_in(&self, arc: Arc) -> usize;
    /// The digest of the entries in `arc` split into `buckets` equal parts (see
    /// [`bucket_count`]), for anti-entropy.
    fn digest(&self, arc: Arc, buckets: usize) -> Result<Vec<Bucket>, StoreError>;
    /// Drops the tombstones of deletes older than `before_micros` (their grace
    /// period is over: no older copy is expected any more); returns how many.
    fn purge_tombstones(&self, before_micros: u64) -> Result<usize, StoreError>;
    /// Whether the store holds no live keys.
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
    /// One page of a listing: up to `limit` live entries with positions in
    /// `range`, in (position, key) order, whose keys start with `prefix`,
    /// leaving out those at `range.start()` whose keys are `after` or before.
    /// Stops scanning once the page is full.
    fn page(
        &self,
        range: std::ops::RangeInclusive<u64>,
        after: Option<&[u8]>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// The time each commit to disk took, for a store that commits to disk
    /// (exported as `crustyring_store_commit_duration_seconds`).
    fn commit_seconds(&self) -> Option<prometheus_client::metrics::histogram::Histogram> {
        None
    }
}

/// The conformance suite every [`Store`] implementation runs.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::ring::key_position;

    fn put(store: &dyn Store, key: &str, value: &str) -> Option<Vec<u8>> {
        store
            .set(key_position(key.as_bytes()), key.into(), value.into(), 1)
            .unwrap()
            .previous
    }

    fn entry(position: u64, key: &str, value: Option<&str>, micros: u64) -> Entry {
        Entry {
            position: Position(position),
            key: key.into(),
            value: value.map(Into::into),
            version: Version { micros, node: 9 },
            expires: None,
        }
    }

    /// Runs every check against stores made by `make`.
    pub fn run(make: impl Fn() -> Box<dyn Store>) {
        set_returns_the_previous_value(&*make());
        delete_returns_the_removed_value(&*make());
        colliding_positions_keep_distinct_keys(&*make());
        arcs_scan_and_remove_exactly_their_positions(&*make());
        merges_keep_the_newest_version(&*make());
        only_old_tombstones_are_purged(&*make());
        digests_and_counts_cover_exactly_their_arc(&*make());
        writes_report_the_entry_they_wrote(&*make());
        exact_removal_keeps_newer_writes(&*make());
        pages_list_live_keys_in_order_from_a_cursor(&*make());
        expired_values_read_as_absent_and_are_purged(&*make());
    }

    fn expired_values_read_as_absent_and_are_purged(store: &dyn Store) {
        let now = now_micros();
        let hour = 3_600_000_000;
        let at = |k: &str| key_position(k.as_bytes());
        let set = |k: &str, expires| {
            store
                .set_expiring(at(k), k.into(), b"v".to_vec(), 1, expires)
                .unwrap()
        };
        set("gone", Some(now - 1));
        set("later", Some(now + hour));
        set("again", Some(now - 1));
        assert_eq!(store.get(at("gone"), b"gone").unwrap(), None);
        assert!(store.get_versioned(at("gone"), b"gone").unwrap().is_none());
        assert_eq!(
            store.entry(at("gone"), b"gone").unwrap().unwrap().expires,
            Some(now - 1),
            "the entry keeps its expiry (for replicas and hand-offs)"
        );
        let (_, _, expires) = store.get_versioned(at("later"), b"later").unwrap().unwrap();
        assert_eq!(expires, Some(now + hour));
        let listed: Vec<Vec<u8>> = store
            .page(0..=u64::MAX, None, b"", 10)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, vec![b"later".to_vec()]);
        let rewritten = set("again", None);
        assert_eq!(
            rewritten.previous, None,
            "an expired value is no previous value"
        );
        store
            .insert_all(vec![Entry {
                expires: Some(now + hour),
                ..entry(7, "copied", Some("c"), now)
            }])
            .unwrap();
        assert_eq!(
            store
                .entry(Position(7), b"copied")
                .unwrap()
                .unwrap()
                .expires,
            Some(now + hour),
            "a replica's copy keeps its expiry"
        );
        assert_eq!(store.purge_lapsed(now).unwrap(), 1, "only the expired one");
        assert!(store.entry(at("gone"), b"gone").unwrap().is_none());
        assert!(store.get(at("again"), b"again").unwrap().is_some());
        assert!(store.get(at("later"), b"later").unwrap().is_some());
    }

    fn pages_list_live_keys_in_order_from_a_cursor(store: &dyn Store) {
        store
            .insert_all(vec![
                entry(5, "a/1", Some("x"), 5),
                entry(5, "a/0", Some("x"), 5),
                entry(5, "b/0", Some("x"), 5),
                entry(7, "a/2", None, 5),
                entry(9, "a/3", Some("x"), 5),
                entry(u64::MAX, "a/4", Some("x"), 5),
            ])
            .unwrap();
        let keys = |page: Vec<Entry>| -> Vec<String> {
            page.into_iter()
                .map(|e| String::from_utf8(e.key).unwrap())
                .collect()
        };
        assert_eq!(
            keys(store.page(0..=u64::MAX, None, b"a/", 10).unwrap()),
            ["a/0", "a/1", "a/3", "a/4"],
            "live keys with the prefix, in (position, key) order"
        );
        assert_eq!(
            keys(store.page(0..=u64::MAX, None, b"", 2).unwrap()),
            ["a/0", "a/1"]
        );
        assert_eq!(
            keys(store.page(5..=u64::MAX, Some(b"a/1"), b"", 10).unwrap()),
            ["b/0", "a/3", "a/4"],
            "after the cursor's key at its position"
        );
        assert_eq!(keys(store.page(6..=9, None, b"", 10).unwrap()), ["a/3"]);
        assert_eq!(
            keys(store.page(u64::MAX..=u64::MAX, None, b"", 10).unwrap()),
            ["a/4"]
        );
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=9;
        assert!(store.page(empty, None, b"", 10).unwrap().is_empty());
    }

    fn exact_removal_keeps_newer_writes(store: &dyn Store) {
        store
            .insert_all(vec![
                entry(1, "a", Some("1"), 5),
                entry(2, "b", Some("2"), 5),
            ])
            .unwrap();
        store.insert_all(vec![entry(2, "b", Some("3"), 6)]).unwrap();
        let seen = |p, k: &str| {
            (
                Position(p),
                k.as_bytes().to_vec(),
                Version { micros: 5, node: 9 },
            )
        };
        assert_eq!(
            store.remove_exact(&[seen(1, "a"), seen(2, "b")]).unwrap(),
            1
        );
        assert_eq!(store.get(Position(1), b"a").unwrap(), None);
        assert_eq!(store.get(Position(2), b"b").unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.len(), 1);
    }

    fn writes_report_the_entry_they_wrote(store: &dyn Store) {
        let first = store
            .set(Position(4), b"k".to_vec(), b"1".to_vec(), 7)
            .unwrap();
        assert_eq!(first.entry.value, Some(b"1".to_vec()));
        assert_eq!(first.entry.version.node, 7);
        let second = store
            .set(Position(4), b"k".to_vec(), b"2".to_vec(), 7)
            .unwrap();
        assert!(second.entry.version > first.entry.version);
        assert_eq!(
            store.entry(Position(4), b"k").unwrap(),
            Some(second.entry.clone())
        );
        assert_eq!(store.entry(Position(4), b"other").unwrap(), None);
        // The written entry is what a replica merges to reach the same state.
        let replica = MemoryStore::new();
        replica.insert_all(vec![second.entry, first.entry]).unwrap();
        assert_eq!(replica.get(Position(4), b"k").unwrap(), Some(b"2".to_vec()));
    }

    fn digests_and_counts_cover_exactly_their_arc(store: &dyn Store) {
        store
            .insert_all(vec![
                entry(10, "a", Some("1"), 5),
                entry(20, "b", None, 5),
                entry(30, "c", Some("3"), 5),
            ])
            .unwrap();
        let arc = Arc::new(Position(10), Position(30));
        assert_eq!(store.count_in(arc), 1);
        let entries = store.entries_in(arc).unwrap();
        let expected = digest::digest(
            arc,
            4,
            entries
                .iter()
                .map(|e| (e.position, &e.key[..], e.version, e.value.is_none())),
        );
        let got = store.digest(arc, 4).unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.iter().map(|b| b.count).sum::<u64>(), 2);
    }

    fn only_old_tombstones_are_purged(store: &dyn Store) {
        store
            .insert_all(vec![
                entry(1, "old", None, 100),
                entry(2, "young", None, 300),
                entry(3, "value", Some("v"), 100),
            ])
            .unwrap();
        assert_eq!(store.purge_tombstones(200).unwrap(), 1);
        let left: Vec<Vec<u8>> = store
            .entries_in(Arc::whole(Position(0)))
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left, vec![b"young".to_vec(), b"value".to_vec()]);
        assert_eq!(store.len(), 1);
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
        let deleted = store.delete(key_position(b"a"), b"a", 1).unwrap();
        assert_eq!(deleted.previous, Some(b"1".to_vec()));
        assert_eq!(deleted.entry.value, None);
        assert_eq!(
            store.delete(key_position(b"a"), b"a", 1).unwrap().previous,
            None
        );
        assert_eq!(store.get(key_position(b"a"), b"a").unwrap(), None);
        assert!(store.is_empty());
        // The tombstone stays, to win over older copies.
        let kept = store.entries_in(Arc::whole(Position(0))).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].value, None);
        // A set after the delete brings the key back.
        assert_eq!(put(store, "a", "2"), None);
        assert_eq!(store.len(), 1);
    }

    fn colliding_positions_keep_distinct_keys(store: &dyn Store) {
        let p = Position(7);
        store.set(p, b"x".to_vec(), b"1".to_vec(), 1).unwrap();
        store.set(p, b"y".to_vec(), b"2".to_vec(), 1).unwrap();
        assert_eq!(store.get(p, b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(p, b"y").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.at_position(p).unwrap().len(), 2);
    }

    fn arcs_scan_and_remove_exactly_their_positions(store: &dyn Store) {
        for p in [0u64, 5, 10, 15, u64::MAX] {
            store
                .set(Position(p), p.to_string().into_bytes(), vec![1], 1)
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

    fn merges_keep_the_newest_version(store: &dyn Store) {
        store
            .insert_all(vec![
                entry(1, "k", Some("new"), 200),
                entry(2, "d", None, 200),
            ])
            .unwrap();
        // Older copies lose, in whatever order they arrive.
        store
            .insert_all(vec![
                entry(1, "k", Some("old"), 100),
                entry(2, "d", Some("stale"), 100),
            ])
            .unwrap();
        assert_eq!(store.get(Position(1), b"k").unwrap(), Some(b"new".to_vec()));
        assert_eq!(store.get(Position(2), b"d").unwrap(), None);
        assert_eq!(store.len(), 1);
        // A newer tombstone wins over a value.
        store.insert_all(vec![entry(1, "k", None, 300)]).unwrap();
        assert_eq!(store.get(Position(1), b"k").unwrap(), None);
        assert!(store.is_empty());
        // A local write after a merged future-dated version still moves forward.
        store
            .insert_all(vec![entry(3, "f", Some("future"), u64::MAX / 2)])
            .unwrap();
        store
            .set(Position(3), b"f".to_vec(), b"now".to_vec(), 1)
            .unwrap();
        assert_eq!(store.get(Position(3), b"f").unwrap(), Some(b"now".to_vec()));
    }
}
