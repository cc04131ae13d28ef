//! Stored entries on the wire (`KeyValueEntry`), both ways, and the checks a
//! peer's entries pass before they are stored: a peer is not trusted to send keys
//! that hash where it says, or keys and values within this node's limits.

use super::query::Limits;
use crate::proto::dht;
use crate::ring::{Position, key_position};
use crate::store::{Entry, Version};
use tonic::Status;

/// How far ahead of this node's clock a peer's version may be: versions are
/// write times, and one far in the future would win over every later write.
const MAX_CLOCK_LEAD_MICROS: u64 = 3600 * 1_000_000;

/// A peer's entry, checked.
pub(super) fn entry_from_wire(e: dht::KeyValueEntry, limits: &Limits) -> Result<Entry, Status> {
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
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
    })
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
        }
    }
}
