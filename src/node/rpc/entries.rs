//! Stored entries on the wire (`KeyValueEntry`), both ways, and the checks a
//! peer's entries pass before they are stored: a peer is not trusted to send keys
//! that hash where it says, or keys and values within this node's limits.

use crate::node::query::Limits;
use crate::proto::dht;
use crate::ring::{Position, key_position};
use crate::store::{Entry, Version};
use tonic::Status;

/// How far ahead of this node's clock a peer's version may be: versions are
/// write times, and one far in the future would win over every later write.
const MAX_CLOCK_LEAD_MICROS: u64 = 3600 * 1_000_000;

/// A peer's entries, each checked ([`entry_from_wire`]): all of them, or
/// the first one's failure.
pub(in crate::node) fn entries_from_wire(
    entries: Vec<dht::KeyValueEntry>,
    limits: &Limits,
) -> Result<Vec<Entry>, Status> {
    (entries.into_iter())
        .map(|e| entry_from_wire(e, limits))
        .collect()
}

/// A peer's entry, checked.
pub(in crate::node) fn entry_from_wire(
    e: dht::KeyValueEntry,
    limits: &Limits,
) -> Result<Entry, Status> {
    let key = e
        .raw_key
        .ok_or_else(|| Status::invalid_argument("an entry has no raw key (field 3, `raw_key`)"))?;
    if key.is_empty() || key.len() > limits.max_key_bytes {
        return Err(Status::invalid_argument(format!(
            "an entry's key is {} bytes long; keys are 1 to {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if e.value.len() > limits.max_value_bytes {
        return Err(Status::invalid_argument(format!(
            "an entry's value is {} bytes long; the limit is {} bytes",
            e.value.len(),
            limits.max_value_bytes
        )));
    }
    if key_position(&key) != Position(e.key) {
        return Err(Status::invalid_argument(
            "an entry's raw key does not hash to its position (field 1, `key`)",
        ));
    }
    let now = crate::clock::now_micros();
    if e.version_micros > now.saturating_add(MAX_CLOCK_LEAD_MICROS) {
        return Err(Status::invalid_argument(format!(
            "an entry's version ({} µs since the epoch) is more than an hour ahead of this node's clock ({now}): check the nodes' clocks",
            e.version_micros
        )));
    }
    Ok(Entry {
        position: Position(e.key),
        key,
        value: (!e.tombstone).then_some(e.value),
        version: Version {
            micros: e.version_micros,
            node: e.version_node,
        },
        expires: e.expires_micros.filter(|_| !e.tombstone),
    })
}

/// About how many bytes `entry` takes on the wire (key, value, field tags).
pub(in crate::node) fn wire_size(entry: &Entry) -> usize {
    entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 48
}

/// `entries` in batches for wire messages: each at most `max_count` entries and
/// `budget` bytes (an entry bigger than that goes alone), so that every message
/// fits a receiver's decoding limit (which admits one largest valid entry).
pub(in crate::node) fn batches(
    entries: Vec<Entry>,
    budget: usize,
    max_count: usize,
) -> Vec<Vec<dht::KeyValueEntry>> {
    let mut out: Vec<Vec<dht::KeyValueEntry>> = Vec::new();
    let mut size = 0;
    for entry in entries {
        let entry_size = wire_size(&entry);
        let fits = out
            .last()
            .is_some_and(|b| b.len() < max_count.max(1) && size + entry_size <= budget);
        if !fits {
            out.push(Vec::new());
            size = 0;
        }
        size += entry_size;
        if let Some(batch) = out.last_mut() {
            batch.push(entry.into());
        }
    }
    out
}

impl From<Entry> for dht::KeyValueEntry {
    fn from(e: Entry) -> Self {
        Self {
            key: e.position.0,
            tombstone: e.value.is_none(),
            value: e.value.unwrap_or_default(),
            raw_key: Some(e.key),
            version_micros: e.version.micros,
            version_node: e.version.node,
            expires_micros: e.expires,
        }
    }
}

/// An entry for tests: key `[i]` at position `i`, a value of `value_len` bytes.
#[cfg(test)]
pub(in crate::node) fn test_entry(i: u8, value_len: usize) -> Entry {
    Entry {
        position: Position(u64::from(i)),
        key: vec![i],
        value: Some(vec![0; value_len]),
        version: Version::default(),
        expires: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_entry as entry;
    use super::*;

    #[test]
    fn batches_keep_to_the_byte_budget_and_count_but_always_take_one() {
        let sizes: Vec<usize> = batches((0..5).map(|i| entry(i, 51)).collect(), 200, 10)
            .iter()
            .map(Vec::len)
            .collect();
        // 100 bytes each on the wire: two fit in 200.
        assert_eq!(sizes, [2, 2, 1]);
        let counted: Vec<usize> = batches((0..5).map(|i| entry(i, 0)).collect(), 10_000, 2)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(counted, [2, 2, 1]);
        // An entry over the budget still goes, alone.
        let big = batches(vec![entry(1, 500), entry(2, 1)], 200, 10);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert!(batches(Vec::new(), 200, 10).is_empty());
    }
}
