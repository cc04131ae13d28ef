//! Measures what an on-disk store costs: resident memory and disk use after
//! filling it with `keys` entries, after reopening it, and after random reads
//! (`crustyring store-bench`, hidden; the figures are in `docs/performance.md`).
//!
//! Entries go in through the [`Store`] trait, in batches of 10 000: `insert_all`,
//! then `durable_point`, as a hand-off receiver takes each chunk, so the figures
//! are those of the store a node runs. Memory is read from `/proc/self/status` (Linux only): run
//! the fill and the reopen as separate processes to see the reopened store alone,
//! since memory the fill freed is not always returned to the system.

use super::{DiskOptions, DiskStore, Entry, Store, StoreError, Version};
use crate::ring::key_position;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Entries per `insert_all` call while filling.
const BATCH: usize = 10_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct FootprintPlan {
    /// The store's directory.
    pub dir: PathBuf,
    /// How many keys to write (`key-00000000` and on); 0 only reopens.
    pub keys: usize,
    /// Each value's size.
    pub value_bytes: usize,
    /// How many random keys (among `0..reads_over`) to read after reopening.
    pub reads: usize,
    /// The key range the reads pick from (the keys a previous fill wrote).
    pub reads_over: usize,
    /// The store's options (cache size).
    pub options: DiskOptions,
}

/// One line of the report: what was done, how long it took, memory after it.
#[derive(Debug, Clone)]
pub struct Step {
    /// What was done.
    pub what: String,
    /// How long it took.
    pub took: Duration,
    /// Resident memory afterwards (VmRSS), in bytes.
    pub rss: u64,
    /// The database file's size afterwards, in bytes.
    pub disk: u64,
}

/// The key with index `i`.
pub fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// The value of key `i`: `bytes` bytes derived from `i`, so reads can be checked.
fn value(i: usize, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|j| (i.wrapping_add(j) % 251) as u8)
        .collect()
}

/// A field of `/proc/self/status` in bytes (it reports kB), 0 if unavailable.
pub fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `plan`: fills (unless `keys` is 0), closes, reopens, reads; returns one
/// [`Step`] per phase.
pub async fn measure(plan: &FootprintPlan) -> Result<Vec<Step>, StoreError> {
    let file = plan.dir.join(super::disk::FILE_NAME);
    let disk = || std::fs::metadata(&file).map_or(0, |m| m.len());
    let step = |what: String, start: Instant| Step {
        what,
        took: start.elapsed(),
        rss: proc_status_bytes("VmRSS"),
        disk: disk(),
    };
    let mut steps = Vec::new();
    if plan.keys > 0 {
        let start = Instant::now();
        let store = DiskStore::open_with(&plan.dir, plan.options)?;
        for first in (0..plan.keys).step_by(BATCH) {
            let batch = (first..plan.keys.min(first + BATCH))
                .map(|i| {
                    let key = key(i);
                    Entry {
                        position: key_position(&key),
                        key,
                        value: Some(value(i, plan.value_bytes)),
                        version: Version {
                            micros: 1 + i as u64,
                            node: 1,
                        },
                        expires: None,
                    }
                })
                .collect();
            // As a hand-off receiver does with each chunk.
            store.insert_all(batch)?;
            store.durable_point().await?;
        }
        steps.push(step(format!("fill {} keys", plan.keys), start));
        drop(store);
    }
    // The committer thread may still hold the database for a moment.
    let start = Instant::now();
    let store = loop {
        match DiskStore::open_with(&plan.dir, plan.options) {
            Ok(s) => break s,
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    steps.push(step(format!("open ({} keys)", store.len()), start));
    let start = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..plan.reads {
        // xorshift: reproducible, and spread over the whole key range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % plan.reads_over.max(1) as u64) as usize;
        let key = key(i);
        let got = store.get(key_position(&key), &key)?;
        if got.as_deref() != Some(&value(i, plan.value_bytes)[..]) {
            return Err(StoreError::Engine(format!(
                "key {i} read back wrong: {} bytes",
                got.map_or(0, |v| v.len())
            )));
        }
    }
    steps.push(step(format!("{} random reads", plan.reads), start));
    Ok(steps)
}
