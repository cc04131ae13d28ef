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

/// An entry as a peer sends it, version 1 of node 2.
fn entry(position: u64, key: &str, value: &str) -> Entry {
    Entry {
        position: Position(position),
        key: key.into(),
        value: Some(value.into()),
        version: Version { micros: 1, node: 2 },
        expires: None,
    }
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

/// Reads share one redb read transaction until the next checkpoint, which
/// replaces it as its entries leave the overlay: a reader running beside
/// checkpoints every millisecond finds every write made before its read,
/// whether the overlay or the snapshot holds it, and some reads do come from
/// the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_earlier_write_while_checkpoints_land() {
    const KEYS: u64 = 3000;
    let dir = temp_dir("snapshots");
    let options = DiskOptions {
        checkpoint_every: Duration::from_millis(1),
        ..DiskOptions::default()
    };
    let store = std::sync::Arc::new(DiskStore::open_with(&dir, options).unwrap());
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (store, written, done) = (store.clone(), written.clone(), done.clone());
        move || {
            let (mut reads, mut from_redb, mut passes_after) = (0u64, 0u64, 0);
            let mut at = 0u64;
            while passes_after < 2 {
                let finished = done.load(Ordering::SeqCst);
                let upto = written.load(Ordering::SeqCst);
                // Every seventh key from a moving start, and the newest.
                let newest = upto.saturating_sub(20)..upto;
                for i in (at % 7..upto).step_by(7).chain(newest) {
                    let key = i.to_string();
                    if lock_read(&store.overlay).get(i, key.as_bytes()).is_none() {
                        from_redb += 1;
                    }
                    let got = store.get(Position(i), key.as_bytes()).unwrap();
                    assert_eq!(got, Some(key.into_bytes()), "key {i} of {upto}");
                    reads += 1;
                }
                at += 1;
                if finished {
                    passes_after += 1;
                }
            }
            (reads, from_redb)
        }
    });
    for i in 0..KEYS {
        put(&store, i, &i.to_string(), &i.to_string());
        written.store(i + 1, Ordering::SeqCst);
    }
    store.durable_point().await.unwrap();
    checkpointed(&store).await;
    done.store(true, Ordering::SeqCst);
    let (reads, from_redb) = reader.join().unwrap();
    assert!(from_redb > 0, "no read reached redb ({reads} reads)");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resolves once redb has every mutation queued so far (a checkpoint took
/// them from the log).
async fn checkpointed(store: &DiskStore) {
    let target = store.queued.load(Ordering::SeqCst);
    store
        .checkpointed
        .clone()
        .wait_for(|c| *c >= target)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_overlay_empties_as_checkpoints_land() {
    let dir = temp_dir("settle");
    let store = DiskStore::open(&dir, SyncMode::Always).unwrap();
    for round in 0..3u8 {
        for i in 0..500u64 {
            store
                .set(Position(i), i.to_be_bytes().to_vec(), vec![round], 1)
                .unwrap();
        }
        store.durable_point().await.unwrap();
        checkpointed(&store).await;
        // Memory does not grow with writes: checkpointed entries left the
        // overlay.
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
    checkpointed(&store).await;
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
    checkpointed(&store).await;
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert((1u64, &b"k"[..]), &[7u8, 1, 2][..])
            .unwrap();
        txn.commit().unwrap();
    }
    // Reads see redb as of the last checkpoint: make one.
    put(&store, 2, "other", "v");
    store.durable_point().await.unwrap();
    checkpointed(&store).await;
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

/// Copies the store's files as a power cut would leave them: redb as last
/// committed, and the write-ahead log.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in [FILE_NAME, wal::FILE_NAMES[0], wal::FILE_NAMES[1]] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

fn checkpoint_hourly() -> DiskOptions {
    DiskOptions {
        checkpoint_every: Duration::from_secs(3600),
        ..DiskOptions::default()
    }
}

#[tokio::test]
async fn durable_writes_redb_does_not_have_yet_survive_a_crash() {
    let (dir, image) = (temp_dir("wal-live"), temp_dir("wal-image"));
    let store = DiskStore::open_with(&dir, checkpoint_hourly()).unwrap();
    put(&store, 5, "a", "1");
    put(&store, 9, "b", "2");
    put(&store, 5, "a", "3");
    store.delete(Position(9), b"b", 1).unwrap();
    store.insert_all(vec![entry(20, "c", "4")]).unwrap();
    store
        .save_identity(&Member::new(Position(42), "http://x:1"))
        .unwrap();
    store.durable_point().await.unwrap();
    // Durable, and only in the log: redb has none of it.
    assert_eq!(committed_entries(&store), 0);
    crash_image(&dir, &image);

    let replayed = DiskStore::open(&image, SyncMode::Always).unwrap();
    assert_eq!(
        replayed.get(Position(5), b"a").unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(replayed.get(Position(9), b"b").unwrap(), None);
    assert_eq!(
        replayed.get(Position(20), b"c").unwrap(),
        Some(b"4".to_vec())
    );
    assert_eq!(
        replayed.entry(Position(5), b"a").unwrap(),
        store.entry(Position(5), b"a").unwrap()
    );
    assert_eq!(replayed.len(), 2);
    assert_eq!(
        replayed.identity(),
        Some(Member::new(Position(42), "http://x:1"))
    );
    // The replay is in redb now: opening again (the log started over) still
    // has it all.
    assert_eq!(committed_entries(&replayed), 3);
    drop(replayed);
    let again = reopen(&image).await;
    assert_eq!(again.get(Position(5), b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(again.len(), 2);
    drop(again);
    for d in [dir, image] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test]
async fn a_torn_log_tail_loses_only_what_was_not_durable() {
    let (dir, image) = (temp_dir("wal-torn"), temp_dir("wal-torn-image"));
    let store = DiskStore::open_with(&dir, checkpoint_hourly()).unwrap();
    put(&store, 5, "a", "1");
    store.durable_point().await.unwrap();
    crash_image(&dir, &image);
    // A second write was being appended when the power went: half of it
    // reached the disk.
    // The log's one generation so far is in whichever of its files is not
    // empty.
    let len = |path: std::path::PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
    let name = *wal::FILE_NAMES
        .iter()
        .find(|n| len(image.join(n)) > 0)
        .unwrap();
    let whole = len(image.join(name));
    put(&store, 6, "b", "2");
    store.durable_point().await.unwrap();
    let log = std::fs::read(dir.join(name)).unwrap();
    let torn = &log[..(whole as usize + log.len()) / 2];
    std::fs::write(image.join(name), torn).unwrap();

    let replayed = DiskStore::open(&image, SyncMode::Always).unwrap();
    assert_eq!(
        replayed.get(Position(5), b"a").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(replayed.get(Position(6), b"b").unwrap(), None);
    // New writes after the replay land and survive the next crash too.
    put(&replayed, 7, "c", "3");
    replayed.durable_point().await.unwrap();
    let second = temp_dir("wal-torn-second");
    crash_image(&image, &second);
    let after = DiskStore::open(&second, SyncMode::Always).unwrap();
    assert_eq!(after.get(Position(5), b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(after.get(Position(7), b"c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(after.get(Position(6), b"b").unwrap(), None);
    drop((store, replayed, after));
    for d in [dir, image, second] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test]
async fn a_checkpoint_moves_the_log_into_redb() {
    let dir = temp_dir("wal-checkpoint");
    let store = DiskStore::open_with(
        &dir,
        DiskOptions {
            checkpoint_every: Duration::from_millis(1),
            ..DiskOptions::default()
        },
    )
    .unwrap();
    for i in 0..100u64 {
        put(&store, i, &i.to_string(), "v");
    }
    store.durable_point().await.unwrap();
    checkpointed(&store).await;
    assert_eq!(committed_entries(&store), 100);
    assert_eq!(store.pending(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_larger_than_the_log_goes_straight_to_redb() {
    let dir = temp_dir("wal-large");
    let store = DiskStore::open_with(&dir, checkpoint_hourly()).unwrap();
    put(&store, 1, "small", "v");
    store.durable_point().await.unwrap();
    assert_eq!(
        committed_entries(&store),
        0,
        "the small write is in the log"
    );
    let mib = "x".repeat(1 << 20);
    let large: Vec<Entry> = (0..(wal::CAPACITY >> 20) + 1)
        .map(|i| entry(100 + i, &i.to_string(), &mib))
        .collect();
    let n = large.len() as u64;
    assert_eq!(*store.checkpointed.borrow(), 0);
    store.insert_all(large).unwrap();
    store.durable_point().await.unwrap();
    // Durable without waiting for the hourly checkpoint: the round that did
    // not fit in the log was a checkpoint, and it took what the log held
    // along, the small write first. (The committer may have taken the large
    // entries in more than one round: those after it are in the log again.)
    assert!(*store.checkpointed.borrow() > 0);
    assert!(committed_entries(&store) >= 2);
    assert!(
        store
            .db
            .begin_read()
            .unwrap()
            .open_table(ENTRIES)
            .unwrap()
            .get((1u64, &b"small"[..]))
            .unwrap()
            .is_some()
    );
    drop(store);
    let store = reopen(&dir).await;
    assert_eq!(store.len() as u64, n + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn checkpoints_keep_their_interval_under_steady_writes() {
    let dir = temp_dir("wal-steady");
    let store = std::sync::Arc::new(
        DiskStore::open_with(
            &dir,
            DiskOptions {
                checkpoint_every: Duration::from_millis(1),
                ..DiskOptions::default()
            },
        )
        .unwrap(),
    );
    // Writers that never let the committer's queue run dry (a round's fsync
    // takes longer than their pause), at a rate that keeps a starved
    // committer's first round far below CHECKPOINT_AFTER.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    put(&store, w << 32 | i, &i.to_string(), "v");
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        })
        .collect();
    let mut checkpointed = store.checkpointed.clone();
    let first = tokio::time::timeout(Duration::from_secs(30), checkpointed.wait_for(|c| *c > 0))
        .await
        .expect("a checkpoint within 30 s")
        .map(|c| *c)
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // The interval, not the count of waiting mutations, started it.
    assert!(
        (first as usize) < commit::CHECKPOINT_AFTER,
        "first checkpoint at mutation {first}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A lone writer never waits for the commit delay: it has no one to share an
/// fsync with (the rule itself: `commit::tests`).
#[tokio::test]
async fn a_lone_writer_does_not_wait_for_the_commit_delay() {
    let dir = temp_dir("commit-delay");
    let delay = Duration::from_secs(10);
    let store = DiskStore::open_with(
        &dir,
        DiskOptions {
            commit_delay: delay,
            ..DiskOptions::default()
        },
    )
    .unwrap();
    for i in 0..5 {
        put(&store, i, &i.to_string(), "v");
        tokio::time::timeout(delay / 2, store.sync_point())
            .await
            .expect("durable well within the delay")
            .unwrap();
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a commit delay and checkpoints every millisecond, writers that
/// outpace the rounds (so that rounds wait) lose nothing: every write is
/// there after a reopen. (That no round is published before its writes are
/// in the log is argued in `commit`, not checked here.)
#[tokio::test]
async fn writes_gathered_by_the_commit_delay_are_all_durable() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 300;
    let dir = temp_dir("commit-delay-all");
    let store = std::sync::Arc::new(
        DiskStore::open_with(
            &dir,
            DiskOptions {
                commit_delay: Duration::from_millis(1),
                checkpoint_every: Duration::from_millis(1),
                ..DiskOptions::default()
            },
        )
        .unwrap(),
    );
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    put(&store, w << 32 | i, &format!("{w}-{i}"), "v");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    store.sync_point().await.unwrap();
    drop(store);
    let store = reopen(&dir).await;
    assert_eq!(store.len() as u64, WRITERS * EACH);
    let _ = std::fs::remove_dir_all(&dir);
}
