//! Which keys expire when: the stores' index of entries written with a time
//! to live, ordered by expiry, so that freeing the expired ones
//! (`Store::purge_lapsed`, every maintenance tick) touches only those, not
//! every entry. A key written again since keeps its old note until it falls
//! due; the store then checks that the entry still holds that expiry before
//! it frees it.

use super::Entry;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Keys with an expiry, by expiry: `(expires, position, key)`.
#[derive(Debug, Default)]
pub(super) struct Expiring(Mutex<BTreeSet<(u64, u64, Vec<u8>)>>);

impl Expiring {
    /// Notes `entry`'s expiry, if it is a value that has one.
    pub fn note(&self, entry: &Entry) {
        if let (Some(at), Some(_)) = (entry.expires, &entry.value) {
            self.note_at(at, entry.position.0, &entry.key);
        }
    }

    /// Notes that the key `(position, key)` expires at `at`.
    pub fn note_at(&self, at: u64, position: u64, key: &[u8]) {
        self.set().insert((at, position, key.to_vec()));
    }

    /// Takes the notes due at `now_micros`: `(expires, position, key)`.
    pub fn due(&self, now_micros: u64) -> Vec<(u64, u64, Vec<u8>)> {
        let mut set = self.set();
        let later = set.split_off(&(now_micros.saturating_add(1), 0, Vec::new()));
        std::mem::replace(&mut *set, later).into_iter().collect()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64, Vec<u8>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;
    use crate::store::Version;

    #[test]
    fn only_notes_due_are_taken_and_tombstones_are_not_noted() {
        let e = |key: &str, expires, value: Option<&str>| Entry {
            position: Position(1),
            key: key.into(),
            value: value.map(Into::into),
            version: Version::default(),
            expires,
        };
        let x = Expiring::default();
        x.note(&e("a", Some(5), Some("v")));
        x.note(&e("b", Some(9), Some("v")));
        x.note(&e("c", None, Some("v")));
        x.note(&e("d", Some(1), None));
        assert_eq!(x.due(5), vec![(5, 1, b"a".to_vec())]);
        assert!(x.due(8).is_empty(), "taken once");
        assert_eq!(x.due(100).len(), 1);
    }
}
