//! Reads of the on-disk store: the overlay of uncommitted writes first, then
//! redb through the read transaction the overlay holds, taken under the
//! overlay's lock so that the two are one consistent view (see the overlay's
//! docs).

use super::layout::{ENTRIES, decode};
use super::overlay::{Overlay, Pending, Snapshot};
use super::{DiskStore, engine, lock_read};
use crate::ring::{Arc, Position};
use crate::store::{Entry, StoreError};
use redb::ReadableDatabase;

/// An entry a scan found: encoded on disk, or pending in the overlay.
pub(super) enum Found<'a> {
    /// Encoded as [`encode`](super::layout::encode) writes it.
    Disk(&'a [u8]),
    /// Written but not yet committed.
    Pending(&'a Entry),
}

impl DiskStore {
    /// The read transaction under `overlay` (a fresh one if the store has
    /// none yet).
    fn snapshot(
        &self,
        overlay: &Overlay,
    ) -> Result<std::sync::Arc<redb::ReadTransaction>, StoreError> {
        match overlay.snapshot() {
            Some(Snapshot(txn)) => Ok(txn),
            None => Ok(std::sync::Arc::new(self.db.begin_read().map_err(engine)?)),
        }
    }

    /// The stored entry of `key`: pending in the overlay, else in redb.
    pub(super) fn stored(
        &self,
        position: Position,
        key: &[u8],
    ) -> Result<Option<Entry>, StoreError> {
        let txn = {
            let overlay = lock_read(&self.overlay);
            match overlay.get(position.0, key) {
                Some(Pending::Put(e)) => return Ok(Some(e.clone())),
                Some(Pending::Removed) => return Ok(None),
                // Taken under the overlay's lock: see the overlay's docs.
                None => self.snapshot(&overlay)?,
            }
        };
        let table = txn.open_table(ENTRIES).map_err(engine)?;
        let found = table.get((position.0, key)).map_err(engine)?;
        match found {
            Some(v) => decode(position.0, key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Visits every entry (tombstones too) in `arc`, in ring order from its
    /// start, as the overlay and redb together hold them, until `visit`
    /// answers `false`.
    pub(super) fn scan<V>(&self, arc: Arc, mut visit: V) -> Result<(), StoreError>
    where
        V: FnMut(u64, &[u8], Found<'_>) -> Result<bool, StoreError>,
    {
        for r in arc.ranges() {
            let (pending, txn) = {
                let overlay = lock_read(&self.overlay);
                (overlay.range(&r), self.snapshot(&overlay)?)
            };
            let table = txn.open_table(ENTRIES).map_err(engine)?;
            let start: (u64, &[u8]) = (*r.start(), &[]);
            let rows = match r.end().checked_add(1) {
                Some(end) => table.range::<(u64, &[u8])>(start..(end, &[])),
                None => table.range::<(u64, &[u8])>(start..),
            }
            .map_err(engine)?;
            let mut pending = pending.into_iter().peekable();
            let put = |visit: &mut V, (position, key): (u64, Vec<u8>), p: Pending| match p {
                Pending::Put(e) => visit(position, &key, Found::Pending(&e)),
                Pending::Removed => Ok(true),
            };
            for row in rows {
                let (k, v) = row.map_err(engine)?;
                let (position, key) = k.value();
                // Pending entries before this one come first.
                while let Some((id, p)) =
                    pending.next_if(|((pp, pk), _)| (*pp, pk.as_slice()) < (position, key))
                {
                    if !put(&mut visit, id, p)? {
                        return Ok(());
                    }
                }
                // A pending mutation of this very entry replaces it.
                let more = match pending
                    .next_if(|((pp, pk), _)| *pp == position && pk.as_slice() == key)
                {
                    Some((id, p)) => put(&mut visit, id, p)?,
                    None => visit(position, key, Found::Disk(v.value()))?,
                };
                if !more {
                    return Ok(());
                }
            }
            for (id, p) in pending {
                if !put(&mut visit, id, p)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
