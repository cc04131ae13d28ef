//! Stray entries: what a node holds outside the arc it keeps (its own arc and
//! the arcs it replicates). A node that was the nearest replica of an arc stops
//! being one when a node joins nearer; a node restarted from its data directory
//! may hold keys of arcs that moved while it was down; a stabilize merge may
//! leave entries behind. Left alone, strays cost space and skew the key counts;
//! dropped carelessly, they may be the only copy of a write.
//!
//! So a sweep runs only when the kept arc has not changed since the previous
//! sweep ([`StraySweep::arc_to_sweep`]); each stray goes to the node that owns
//! its position among the serving members a ring walk found, and none goes
//! anywhere if the walk and this node's view disagree (the ring is changing:
//! a stray this node would own itself, or no owner at all)
//! ([`StraySweep::owners`]). The node drops a stray only once its owner has
//! acknowledged it, and only if the kept arc is still the same and the entry
//! still at the version handed over (`node::replication::strays`).

use crate::ring::{self, Arc, Member, Position};
use crate::store::Entry;
use std::collections::BTreeMap;

/// The sweeps of one node: what it kept last time it looked.
#[derive(Debug, Default)]
pub struct StraySweep {
    last_kept: Option<Arc>,
}

impl StraySweep {
    /// Notes that the node keeps `kept` now: the arc of strays to sweep (the
    /// rest of the ring), if `kept` is what it kept last time too and is not
    /// the whole ring.
    pub fn arc_to_sweep(&mut self, kept: Arc) -> Option<Arc> {
        let stable = self.last_kept.replace(kept) == Some(kept);
        (stable && kept.start != kept.end).then(|| Arc::new(kept.end, kept.start))
    }

    /// `strays` grouped by their owners among `members` (the serving members a
    /// ring walk found, by ID), in ring order; `None` if any would go to `me`
    /// or to no one.
    pub fn owners(
        me: Position,
        members: &BTreeMap<Position, Member>,
        strays: Vec<Entry>,
    ) -> Option<Vec<(Member, Vec<Entry>)>> {
        let mut by_owner: BTreeMap<Position, (Member, Vec<Entry>)> = BTreeMap::new();
        for entry in strays {
            let (id, owner) = ring::owner(members, entry.position)?;
            if id == me {
                return None;
            }
            by_owner
                .entry(id)
                .or_insert_with(|| (owner.clone(), Vec::new()))
                .1
                .push(entry);
        }
        Some(by_owner.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn stray(position: u64) -> Entry {
        Entry {
            position: Position(position),
            key: position.to_string().into_bytes(),
            value: Some(b"v".to_vec()),
            version: Version { micros: 1, node: 1 },
            expires: None,
        }
    }

    #[test]
    fn a_sweep_waits_for_the_kept_arc_to_hold_still() {
        let mut sweep = StraySweep::default();
        let kept = Arc::new(Position(100), Position(300));
        assert_eq!(sweep.arc_to_sweep(kept), None, "first look");
        assert_eq!(
            sweep.arc_to_sweep(kept),
            Some(Arc::new(Position(300), Position(100)))
        );
        let grown = Arc::new(Position(50), Position(300));
        assert_eq!(sweep.arc_to_sweep(grown), None, "changed since");
        assert_eq!(
            sweep.arc_to_sweep(grown),
            Some(Arc::new(Position(300), Position(50)))
        );
        // A node that keeps the whole ring has no strays.
        let whole = Arc::new(Position(7), Position(7));
        sweep.arc_to_sweep(whole);
        assert_eq!(sweep.arc_to_sweep(whole), None);
    }

    #[test]
    fn each_stray_goes_to_the_owner_of_its_position() {
        let members: BTreeMap<Position, Member> = [member(100), member(500), member(900)]
            .into_iter()
            .map(|m| (m.id, m))
            .collect();
        // This node is at 300 (not among the serving members the walk found).
        let grouped = StraySweep::owners(
            Position(300),
            &members,
            vec![stray(150), stray(600), stray(950), stray(50), stray(200)],
        )
        .unwrap();
        let got: Vec<(u64, Vec<u64>)> = grouped
            .iter()
            .map(|(m, es)| (m.id.0, es.iter().map(|e| e.position.0).collect()))
            .collect();
        // 50 lies before the first member: it wraps to the last one.
        assert_eq!(
            got,
            vec![
                (100, vec![150, 200]),
                (500, vec![600]),
                (900, vec![950, 50])
            ]
        );
    }

    #[test]
    fn a_walk_that_disagrees_with_the_view_gives_nothing_away() {
        let me = member(300);
        let members: BTreeMap<Position, Member> = [member(100), me.clone()]
            .into_iter()
            .map(|m| (m.id, m))
            .collect();
        // By the walk, this node owns 350: the ring is changing.
        assert_eq!(
            StraySweep::owners(me.id, &members, vec![stray(150), stray(350)]),
            None
        );
        assert_eq!(
            StraySweep::owners(me.id, &BTreeMap::new(), vec![stray(1)]),
            None
        );
        assert_eq!(StraySweep::owners(me.id, &members, vec![]), Some(vec![]));
    }
}
