//! The on-disk store's own checks, beside the conformance suite: reopening,
//! reads of writes not yet committed, the overlay emptying, corrupt data.

use super::*;
use redb::ReadableTableMetadata;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "crustyring-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn disk_store_conforms() {
    let base = temp_dir("conform");
    let n = std::sync::atomic::AtomicUsize::new(0);
    super::super::conformance::run(|| {
        let dir = base.join(n.fetch_add(1, Ordering::SeqCst).to_string());
        Box::new(DiskStore::open(&dir, SyncMode::Always).unwrap())
    });
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test]
async fn entries_and_identity_survive_a_reopen() {
    let dir = temp_dir("reopen");
    {
        let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
        put(&store, 5, "a", "1");
        put(&store, 9, "b", "2");
        store.delete(Position(9), b"b", 1).unwrap();
        store
            .save_identity(&Member::new(Position(42), "http://x:1"))
            .unwrap();
        store.sync_point().await.unwrap();
    }
    let store = reopen(&dir).await;
    assert_eq!(store.get(Position(5), b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get(Position(9), b"b").unwrap(), None);
    // The delete's tombstone survived the reopen too.
    let tombstones: Vec<Entry> = store
        .entries_in(Arc::whole(Position(0)))
        .unwrap()
        .into_iter()
        .filter(|e| e.value.is_none())
        .collect();
    assert_eq!(tombstones.len(), 1);
    assert_eq!(
        store.identity(),
        Some(Member::new(Position(42), "http://x:1"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn expiries_survive_a_reopen_and_are_still_purged() {
    let dir = temp_dir("expiry");
    let now = now_micros();
    {
        let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
        store
            .set_expiring(
                Position(5),
                b"a".to_vec(),
                b"1".to_vec(),
                1,
                Some(now + 60_000_000),
            )
            .unwrap();
        store
            .set_expiring(Position(6), b"b".to_vec(), b"2".to_vec(), 1, Some(now + 1))
            .unwrap();
        store.sync_point().await.unwrap();
    }
    let store = reopen(&dir).await;
    let a = store.entry(Position(5), b"a").unwrap().unwrap();
    assert_eq!(a.expires, Some(now + 60_000_000));
    assert_eq!(
        store.purge_lapsed(now + 2).unwrap(),
        1,
        "b, found again on reopen"
    );
    assert!(store.entry(Position(6), b"b").unwrap().is_none());
    assert_eq!(store.purge_lapsed(now + 60_000_001).unwrap(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `value` under `key` at `position`, as node 1.
fn put(store: &DiskStore, position: u64, key: &str, value: &str) -> Written {
    store
        .set(Position(position), key.into(), value.into(), 1)
        .unwrap()
}

/// Reopens `dir`, waiting until the previous store's committer lets go.
async fn reopen(dir: &Path) -> DiskStore {
    loop {
        match DiskStore::open(dir, SyncMode::Always) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// How many entries redb itself holds (committed ones only).
fn committed_entries(store: &DiskStore) -> u64 {
    let txn = store.db.begin_read().unwrap();
    txn.open_table(ENTRIES).unwrap().len().unwrap()
}

#[test]
fn writes_are_read_before_their_commit() {
    let dir = temp_dir("overlay");
    // The committer waits an hour before its first commit: nothing reaches redb.
    let store = DiskStore::open(&dir, SyncMode::Batched(Duration::from_secs(3600))).unwrap();
    let a = put(&store, 5, "a", "1");
    put(&store, 9, "b", "2");
    let gone = store.delete(Position(9), b"b", 1).unwrap();
    assert_eq!(gone.previous, Some(b"2".to_vec()));
    let c = Entry {
        position: Position(20),
        key: b"c".to_vec(),
        value: Some(b"3".to_vec()),
        version: Version { micros: 1, node: 2 },
        expires: None,
    };
    store.insert_all(vec![c.clone()]).unwrap();
    assert_eq!(committed_entries(&store), 0);

    assert_eq!(store.get(Position(5), b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        store.entry(Position(5), b"a").unwrap(),
        Some(a.entry.clone())
    );
    assert_eq!(store.get(Position(9), b"b").unwrap(), None);
    assert_eq!(store.at_position(Position(20)).unwrap(), vec![c.clone()]);
    let all = store.entries_in(Arc::whole(Position(0))).unwrap();
    assert_eq!(all, vec![a.entry, gone.entry, c]);
    assert_eq!(store.len(), 2);
    assert_eq!(store.count_in(Arc::new(Position(0), Position(10))), 1);
    // A removal before the commit hides the entry too.
    assert_eq!(
        store
            .remove_in(Arc::new(Position(0), Position(10)))
            .unwrap(),
        2
    );
    assert_eq!(store.get(Position(5), b"a").unwrap(), None);
    assert_eq!(store.entries_in(Arc::whole(Position(0))).unwrap().len(), 1);
    assert_eq!(store.len(), 1);
    assert_eq!(committed_entries(&store), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_overlay_empties_as_commits_land() {
    let dir = temp_dir("settle");
    let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
    for round in 0..3u8 {
        for i in 0..500u64 {
            store
                .set(Position(i), i.to_be_bytes().to_vec(), vec![round], 1)
                .unwrap();
        }
        store.durable_point().await.unwrap();
        // Memory does not grow with writes: committed entries left the overlay.
        assert_eq!(store.pending(), 0);
    }
    assert_eq!(committed_entries(&store), 500);
    assert_eq!(
        store.get(Position(7), &7u64.to_be_bytes()).unwrap(),
        Some(vec![2])
    );
    // Tombstones expire from redb and the index alike.
    store.delete(Position(7), &7u64.to_be_bytes(), 1).unwrap();
    assert_eq!(store.purge_tombstones(u64::MAX).unwrap(), 1);
    store.durable_point().await.unwrap();
    assert_eq!(store.pending(), 0);
    assert_eq!(committed_entries(&store), 499);
    assert_eq!(store.len(), 499);
    drop(store);
    let store = reopen(&dir).await;
    assert_eq!(store.len(), 499);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_corrupt_entry_is_an_error_not_a_panic() {
    let dir = temp_dir("damaged");
    let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
    put(&store, 1, "k", "v");
    store.durable_point().await.unwrap();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert((1u64, &b"k"[..]), &[7u8, 1, 2][..])
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(store.get(Position(1), b"k").is_err());
    drop(store);
    let reopened = loop {
        match DiskStore::open(&dir, SyncMode::Always) {
            Err(StoreError::Engine(e)) if e.contains("corrupt entry") => break e,
            Ok(_) => panic!("a store with a corrupt entry opened"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(reopened.contains("position 0000000000000001"), "{reopened}");
    let _ = std::fs::remove_dir_all(&dir);
}
