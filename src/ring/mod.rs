//! Pure ring maths: positions, hashing, arcs and ownership. No I/O.
//!
//! The ring is the `u64` space `0 ..= 2^64-1`, closed into a circle. A key sits at
//! the first 8 bytes (big-endian) of SHA-256 of its bytes, the rule of the original
//! study project, so positions compare across versions.
//!
//! Ownership is *not* Chord's successor rule: a node owns the half-open arc from its
//! own ID up to its next neighbour's ID, so `owner(p)` is the member with the greatest
//! ID `<= p`, wrapping past 0 to the greatest ID overall.
//!
//! Invariants (checked by the property tests below):
//! - every position has exactly one owner among the members;
//! - a join moves positions only to the joiner, and only from its predecessor;
//! - a departure moves only the departing node's positions, all to its predecessor;
//! - arcs wrap correctly at 0 and `u64::MAX`.
//!
//! Which of several hashed positions a joining node takes, so that no node owns
//! several times its share, is decided in [`balance`].

mod arc;
pub mod balance;
mod position;

pub use arc::Arc;
pub use balance::IdRule;
pub use position::{Position, key_position, node_position};

use std::collections::BTreeMap;

/// A ring member: its ID (a ring position) and its address (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's ID.
    pub id: Position,
    /// Where to reach it, as a URL.
    pub addr: String,
}

impl Member {
    /// A member at `id`, reachable at `addr`.
    pub fn new(id: Position, addr: impl Into<String>) -> Self {
        Self {
            id,
            addr: addr.into(),
        }
    }
}

/// The owner of `position` among `members` (ID to value): the member with the
/// greatest ID `<= position`, wrapping to the greatest ID overall. `None` when there
/// are no members.
pub fn owner<V>(members: &BTreeMap<Position, V>, position: Position) -> Option<(Position, &V)> {
    members
        .range(..=position)
        .next_back()
        .or_else(|| members.iter().next_back())
        .map(|(id, v)| (*id, v))
}

/// The member before `id` on the ring (the greatest ID `< id`, wrapping): the node
/// whose arc a joiner at `id` splits. `None` when there are no other members.
pub fn predecessor<V>(members: &BTreeMap<Position, V>, id: Position) -> Option<(Position, &V)> {
    members
        .range(..id)
        .next_back()
        .or_else(|| members.range(id..).rfind(|(m, _)| **m != id))
        .map(|(id, v)| (*id, v))
}

/// The member after `id` on the ring (the least ID `> id`, wrapping). `None` when
/// there are no other members.
pub fn successor<V>(members: &BTreeMap<Position, V>, id: Position) -> Option<(Position, &V)> {
    use std::ops::Bound::{Excluded, Unbounded};
    members
        .range((Excluded(id), Unbounded))
        .next()
        .or_else(|| members.range(..id).next())
        .map(|(id, v)| (*id, v))
}

/// The arc a member at `id` owns: from `id` up to its successor's ID, or the whole
/// ring when it is alone.
pub fn arc_of<V>(members: &BTreeMap<Position, V>, id: Position) -> Arc {
    match successor(members, id) {
        Some((next, _)) => Arc::new(id, next),
        None => Arc::whole(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring of members at `ids`.
    pub(super) fn ring(ids: &[u64]) -> BTreeMap<Position, ()> {
        ids.iter().map(|id| (Position(*id), ())).collect()
    }

    #[test]
    fn owner_is_the_greatest_id_at_or_below_the_position() {
        let r = ring(&[10, 20, 30]);
        assert_eq!(owner(&r, Position(10)).unwrap().0, Position(10));
        assert_eq!(owner(&r, Position(19)).unwrap().0, Position(10));
        assert_eq!(owner(&r, Position(20)).unwrap().0, Position(20));
        assert_eq!(owner(&r, Position(u64::MAX)).unwrap().0, Position(30));
    }

    #[test]
    fn positions_below_the_smallest_id_wrap_to_the_greatest() {
        let r = ring(&[10, 20, 30]);
        assert_eq!(owner(&r, Position(0)).unwrap().0, Position(30));
        assert_eq!(owner(&r, Position(9)).unwrap().0, Position(30));
    }

    #[test]
    fn an_empty_ring_has_no_owner() {
        assert!(owner(&ring(&[]), Position(5)).is_none());
    }

    #[test]
    fn neighbours_wrap_around() {
        let r = ring(&[10, 20, 30]);
        assert_eq!(predecessor(&r, Position(10)).unwrap().0, Position(30));
        assert_eq!(predecessor(&r, Position(15)).unwrap().0, Position(10));
        assert_eq!(successor(&r, Position(30)).unwrap().0, Position(10));
        assert_eq!(successor(&r, Position(25)).unwrap().0, Position(30));
        let alone = ring(&[7]);
        assert!(predecessor(&alone, Position(7)).is_none());
        assert!(successor(&alone, Position(7)).is_none());
        assert_eq!(predecessor(&alone, Position(9)).unwrap().0, Position(7));
    }

    proptest! {
        #[test]
        fn every_position_has_exactly_one_owner(
            ids in proptest::collection::btree_set(any::<u64>(), 1..20),
            p in any::<u64>(),
        ) {
            let r: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
            let owners: Vec<_> = r.keys().filter(|id| arc_of(&r, **id).contains(Position(p))).collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(*owners[0], owner(&r, Position(p)).unwrap().0);
        }

        #[test]
        fn a_join_moves_positions_only_from_the_predecessor_to_the_joiner(
            ids in proptest::collection::btree_set(any::<u64>(), 1..20),
            joiner in any::<u64>(),
            probes in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            prop_assume!(!ids.contains(&joiner));
            let before: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
            let mut after = before.clone();
            after.insert(Position(joiner), ());
            let pred = predecessor(&before, Position(joiner)).unwrap().0;
            for p in probes {
                let (was, is) = (owner(&before, Position(p)).unwrap().0, owner(&after, Position(p)).unwrap().0);
                if was != is {
                    prop_assert_eq!(was, pred);
                    prop_assert_eq!(is, Position(joiner));
                }
            }
        }

        #[test]
        fn a_departure_moves_only_the_departed_arc_to_the_predecessor(
            ids in proptest::collection::btree_set(any::<u64>(), 2..20),
            pick in any::<proptest::sample::Index>(),
            probes in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            let before: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
            let gone = *before.keys().nth(pick.index(before.len())).unwrap();
            let mut after = before.clone();
            after.remove(&gone);
            let pred = predecessor(&before, gone).unwrap().0;
            for p in probes {
                let (was, is) = (owner(&before, Position(p)).unwrap().0, owner(&after, Position(p)).unwrap().0);
                if was != is {
                    prop_assert_eq!(was, gone);
                    prop_assert_eq!(is, pred);
                }
            }
        }
    }
}
