//! When an owner may answer reads from its own store alone, and what a read
//! that cannot asks for instead.
//!
//! Writes reach the owner and every live replica before they are acknowledged,
//! so an owner that was part of every write to its arc has them all. An owner
//! that just took an arc (a restarted node rejoining with old data, a joiner
//! handed its arc by a predecessor that itself was behind, a node whose arc grew
//! over a failed neighbour's with a write quorum below the factor) may lack
//! writes its replicas hold. Such an owner is *behind* until it has reconciled
//! its arc with every one of its current replicas (the anti-entropy exchange,
//! driven by the owner); until then, reads in its arc also ask the replicas and
//! answer the newest copy, repairing the owner's ([`newest`]). This is Dynamo's
//! read repair, paid only while an owner is behind, not on every read.
//!
//! [`CatchUp`] records the arc and replica set the owner last reconciled. A new
//! replica (a node joined or died among its predecessors) or a wider arc makes
//! it behind again; a narrower arc (a joiner took part of it) does not. So does
//! a lease that lapsed ([`CatchUp::forget`]): meanwhile another node may have
//! taken the arc over and written to it.

use crate::ring::{Arc, Member, Position};
use crate::store::Entry;

/// What an owner last reconciled its arc with.
#[derive(Debug, Default)]
pub struct CatchUp {
    reconciled: Option<Reconciled>,
    /// Bumped by each [`CatchUp::forget`]: an exchange that began before it
    /// vouches for nothing.
    forgotten: u64,
    /// Forgotten after a lease gap, and not yet reconciled with `prev` since:
    /// the owner's store alone may lack writes another owner of the arc
    /// acknowledged (all held by `prev`).
    after_gap: bool,
}

/// The arc and replicas an owner last reconciled with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reconciled {
    arc: Arc,
    replicas: Vec<Position>,
}

impl CatchUp {
    /// Whether the owner of `arc`, replicated on `replicas`, has every write
    /// they hold: it has none, or it reconciled a wider arc with them all.
    pub fn caught_up(&self, arc: Arc, replicas: &[Member]) -> bool {
        replicas.is_empty()
            || self.reconciled.as_ref().is_some_and(|r| {
                r.arc.covers(&arc) && replicas.iter().all(|m| r.replicas.contains(&m.id))
            })
    }

    /// Behind again, whatever was reconciled: another node may have served
    /// the owner's arc (its lease lapsed).
    pub fn forget(&mut self) {
        self.reconciled = None;
        self.forgotten += 1;
        self.after_gap = true;
    }

    /// Whether the owner was forgotten after a lease gap and has not since
    /// reconciled with its `prev` ([`CatchUp::prev_reconciled`]): what reads
    /// its store alone (a listing, a watch's state) must wait.
    pub fn after_gap(&self) -> bool {
        self.after_gap
    }

    /// The owner reconciled its arc with its `prev`, in an exchange that
    /// began at `began`: no longer after a gap, if nothing was forgotten since.
    pub fn prev_reconciled(&mut self, began: u64) {
        if began == self.forgotten {
            self.after_gap = false;
        }
    }

    /// What an exchange beginning now passes to [`CatchUp::reconciled`].
    pub fn begin(&self) -> u64 {
        self.forgotten
    }

    /// The owner reconciled `arc` with each of `replicas`, in an exchange that
    /// began at `began` ([`CatchUp::begin`]); `now` is its arc and replicas
    /// after that. Recorded only if they did not change meanwhile (a replica
    /// that joined during the exchange was not reconciled with), and nothing
    /// was forgotten since it began (what it read may predate the writes that
    /// made the owner behind).
    pub fn reconciled(&mut self, began: u64, arc: Arc, replicas: &[Member], now: (Arc, &[Member])) {
        if now == (arc, replicas) && began == self.forgotten {
            self.reconciled = Some(Reconciled {
                arc,
                replicas: replicas.iter().map(|r| r.id).collect(),
            });
        }
    }
}

/// The newest of an owner's copy of `key` (`mine`) and its replicas' copies
/// (`theirs`: whatever they hold at its position; other keys are passed over),
/// and whether the owner must store it (it is newer than its own).
pub fn newest(key: &[u8], mine: Option<Entry>, theirs: Vec<Entry>) -> (Option<Entry>, bool) {
    let mut newest = mine.clone();
    for e in theirs.into_iter().filter(|e| e.key == key) {
        if newest.as_ref().is_none_or(|n| n.version < e.version) {
            newest = Some(e);
        }
    }
    let repair = newest.is_some() && newest != mine;
    (newest, repair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn copy(key: &str, micros: u64) -> Entry {
        Entry {
            position: Position(7),
            key: key.into(),
            value: Some(micros.to_string().into_bytes()),
            version: Version { micros, node: 1 },
            expires: None,
        }
    }

    #[test]
    fn a_reconciliation_vouches_for_narrower_arcs_and_the_same_replicas_only() {
        let mut c = CatchUp::default();
        let arc = Arc::new(Position(100), Position(300));
        let replicas = [member(90), member(80)];
        assert!(!c.caught_up(arc, &replicas), "never reconciled");
        assert!(c.caught_up(arc, &[]), "no replicas to lack writes from");
        c.reconciled(c.begin(), arc, &replicas, (arc, &replicas));
        assert!(c.caught_up(arc, &replicas));
        assert!(c.caught_up(Arc::new(Position(100), Position(200)), &replicas));
        // The arc grew over a failed neighbour's.
        assert!(!c.caught_up(Arc::new(Position(100), Position(400)), &replicas));
        // A new replica joined among the predecessors.
        assert!(!c.caught_up(arc, &[member(95), member(90)]));
    }

    #[test]
    fn a_view_that_changed_during_the_exchange_is_not_recorded() {
        let mut c = CatchUp::default();
        let arc = Arc::new(Position(100), Position(300));
        let replicas = [member(90), member(80)];
        let joined = [member(95), member(90)];
        c.reconciled(c.begin(), arc, &replicas, (arc, &joined));
        assert!(!c.caught_up(arc, &replicas));
        let grown = Arc::new(Position(100), Position(400));
        c.reconciled(c.begin(), arc, &replicas, (grown, &replicas));
        assert!(!c.caught_up(arc, &replicas));
    }

    #[test]
    fn an_owner_whose_lease_lapsed_is_behind_until_an_exchange_begun_after() {
        let mut c = CatchUp::default();
        let arc = Arc::new(Position(100), Position(300));
        let replicas = [member(90), member(80)];
        c.reconciled(c.begin(), arc, &replicas, (arc, &replicas));
        let began = c.begin();
        c.forget();
        assert!(!c.caught_up(arc, &replicas), "forgotten");
        c.reconciled(began, arc, &replicas, (arc, &replicas));
        assert!(
            !c.caught_up(arc, &replicas),
            "an exchange begun before vouches for nothing"
        );
        c.reconciled(c.begin(), arc, &replicas, (arc, &replicas));
        assert!(c.caught_up(arc, &replicas));
    }

    #[test]
    fn a_read_takes_the_newest_copy_of_its_key_and_repairs_the_owner() {
        let (newest_, repair) = newest(b"k", Some(copy("k", 5)), vec![copy("k", 9), copy("k", 3)]);
        assert_eq!(newest_.unwrap().version.micros, 9);
        assert!(repair);
        // Another key at the same position is not this key's copy.
        let (newest_, repair) = newest(b"k", Some(copy("k", 5)), vec![copy("other", 9)]);
        assert_eq!(newest_.unwrap().version.micros, 5);
        assert!(!repair);
        // Only the replicas hold it: the owner stores it.
        let (newest_, repair) = newest(b"k", None, vec![copy("k", 2)]);
        assert_eq!(newest_.unwrap().version.micros, 2);
        assert!(repair);
        assert_eq!(newest(b"k", None, vec![]), (None, false));
    }

    #[test]
    fn after_a_gap_until_an_exchange_with_prev_begun_after_it() {
        let mut c = CatchUp::default();
        assert!(!c.after_gap());
        let before = c.begin();
        c.forget();
        assert!(c.after_gap());
        c.prev_reconciled(before);
        assert!(c.after_gap(), "an exchange begun before the gap");
        c.prev_reconciled(c.begin());
        assert!(!c.after_gap());
    }
}
