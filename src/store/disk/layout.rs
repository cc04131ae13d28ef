//! The on-disk layout: redb's tables, and how an entry is encoded in them.
//!
//! Entries are keyed by `(position, raw key)`, so an arc is a range scan in ring
//! order. Every read of a stored entry is checked: corrupt bytes give a
//! [`StoreError`], never a panic.

use crate::ring::{Member, Position};
use crate::store::{Entry, StoreError, Version};
use redb::{ReadableTable, TableDefinition};

/// The file name of the database in the store's directory.
pub(in crate::store) const FILE_NAME: &str = "crustyring.redb";

/// Entries by (position, raw key); the value is [`encode`]d with its version.
pub(super) const ENTRIES: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("entries_v2");
/// The node's identity: `id` (8 bytes, big-endian) and `addr` (UTF-8); and
/// [`WAL_GENERATION`] and [`WAL_SALT`].
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The meta key of the write-ahead log's generation (8 bytes, big-endian): the
/// generation whose records redb does not have yet (see [`super::wal`]).
pub(super) const WAL_GENERATION: &str = "wal";

/// The meta key of the write-ahead log's salt (8 bytes, big-endian).
pub(super) const WAL_SALT: &str = "wal_salt";

/// The write-ahead log salt saved in the meta table, or a new one saved in
/// `txn` (a store created now, or by a version without the log).
pub(super) fn wal_salt(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let engine = |e: redb::Error| StoreError::Engine(e.to_string());
    let mut meta = txn.open_table(META).map_err(|e| engine(e.into()))?;
    let stored = meta
        .get(WAL_SALT)
        .map_err(|e| engine(e.into()))?
        .map(|v| <[u8; 8]>::try_from(v.value()));
    match stored {
        Some(Ok(bytes)) => Ok(u64::from_be_bytes(bytes)),
        Some(Err(_)) => Err(StoreError::Engine("corrupt write-ahead log salt".into())),
        None => {
            let salt = super::wal::new_salt();
            meta.insert(WAL_SALT, salt.to_be_bytes().as_slice())
                .map_err(|e| engine(e.into()))?;
            Ok(salt)
        }
    }
}

/// The write-ahead log generation saved in the meta table (1 when none is).
pub(super) fn wal_generation(meta: &redb::ReadOnlyTable<&str, &[u8]>) -> Result<u64, StoreError> {
    let stored = meta
        .get(WAL_GENERATION)
        .map_err(|e| StoreError::Engine(e.to_string()))?;
    match stored {
        None => Ok(1),
        Some(v) => <[u8; 8]>::try_from(v.value())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Engine("corrupt write-ahead log generation".into())),
    }
}

/// The node identity saved in the meta table, if a whole one is there.
pub(super) fn identity(
    meta: &redb::ReadOnlyTable<&str, &[u8]>,
) -> Result<Option<Member>, StoreError> {
    let get = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta
            .get(name)
            .map_err(|e| StoreError::Engine(e.to_string()))?
            .map(|v| v.value().to_vec()))
    };
    Ok(match (get("id")?, get("addr")?) {
        (Some(id), Some(addr)) => <[u8; 8]>::try_from(id.as_slice()).ok().map(|id| {
            Member::new(
                Position(u64::from_be_bytes(id)),
                String::from_utf8_lossy(&addr).into_owned(),
            )
        }),
        _ => None,
    })
}

/// The length of an encoded entry's header: tag, micros, node.
const HEADER: usize = 17;

/// Tags: what follows the version.
const TOMBSTONE: u8 = 0;
const VALUE: u8 = 1;
/// A value with an expiry (8 bytes, big-endian microseconds) before it.
const EXPIRING: u8 = 2;

/// What an encoded entry's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// The write's version.
    pub version: Version,
    /// A delete's tombstone.
    pub tombstone: bool,
    /// When the value expires.
    pub expires: Option<u64>,
}

/// A stored entry: a tag (1: value, 0: tombstone, 2: value with an expiry), the
/// version's microseconds and node (big-endian), for tag 2 the expiry
/// (microseconds, big-endian), then the value's bytes.
pub(super) fn encode(e: &Entry) -> Vec<u8> {
    let value = e.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + 8 + value.len());
    out.push(match (&e.value, e.expires) {
        (None, _) => TOMBSTONE,
        (Some(_), None) => VALUE,
        (Some(_), Some(_)) => EXPIRING,
    });
    out.extend_from_slice(&e.version.micros.to_be_bytes());
    out.extend_from_slice(&e.version.node.to_be_bytes());
    if let (Some(_), Some(at)) = (&e.value, e.expires) {
        out.extend_from_slice(&at.to_be_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// The header of a stored entry and where its value starts, without copying
/// its value.
pub(super) fn header(position: u64, stored: &[u8]) -> Result<(Header, usize), StoreError> {
    let corrupt = || {
        StoreError::Engine(format!(
            "corrupt entry at position {position:016x}: {} bytes",
            stored.len()
        ))
    };
    let (&tag, rest) = stored.split_first().ok_or_else(corrupt)?;
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(rest.get(at..at + 8)?.try_into().ok()?))
    };
    let (micros, node) = word(0).zip(word(8)).ok_or_else(corrupt)?;
    let version = Version { micros, node };
    match tag {
        TOMBSTONE | VALUE => Ok((
            Header {
                version,
                tombstone: tag == TOMBSTONE,
                expires: None,
            },
            HEADER,
        )),
        EXPIRING => Ok((
            Header {
                version,
                tombstone: false,
                expires: Some(word(16).ok_or_else(corrupt)?),
            },
            HEADER + 8,
        )),
        _ => Err(corrupt()),
    }
}

/// The entry `(position, key)` stored as `stored`.
pub(super) fn decode(position: u64, key: &[u8], stored: &[u8]) -> Result<Entry, StoreError> {
    let (h, start) = header(position, stored)?;
    Ok(Entry {
        position: Position(position),
        key: key.to_vec(),
        value: (!h.tombstone).then(|| stored[start..].to_vec()),
        version: h.version,
        expires: h.expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corrupt_bytes_are_errors() {
        let e = Entry {
            position: Position(3),
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
            version: Version { micros: 5, node: 6 },
            expires: None,
        };
        assert_eq!(decode(3, b"k", &encode(&e)).unwrap(), e);
        let gone = Entry {
            value: None,
            ..e.clone()
        };
        assert_eq!(decode(3, b"k", &encode(&gone)).unwrap(), gone);
        let expiring = Entry {
            expires: Some(1 << 60),
            ..e
        };
        assert_eq!(decode(3, b"k", &encode(&expiring)).unwrap(), expiring);
        assert!(
            decode(3, b"k", &encode(&expiring)[..20]).is_err(),
            "a cut expiry"
        );
        assert!(decode(3, b"k", &[1, 2, 3]).is_err());
        assert!(decode(3, b"k", &[7; 20]).is_err());
        assert!(decode(3, b"k", &[]).is_err());
    }
}
