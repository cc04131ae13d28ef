//! Choosing a joiner's ID so that the ring stays balanced. Pure: the members are
//! an input, so the registry (its membership table) and a node joining through a
//! member (a walk of the ring) apply the same rule.
//!
//! # Why
//!
//! With one SHA-256 position per node, arcs are as uneven as random points on a
//! circle: the largest of `n` arcs is about `ln(n)/n` of the ring, so one node can
//! own several times its share of the keys and of the load. Virtual nodes would
//! even this out but give every node many arcs and a join many predecessors to take
//! keys from. Instead, a joiner still gets one position, still a SHA-256 hash, but
//! the best of several: the "power of choices".
//!
//! # The rule
//!
//! Candidate `i` of an address is `node_position(addr, salt, i)` (SHA-256 of the
//! address, the salt and the counter `i`; candidate 0 is the single-hash ID of
//! earlier versions). The first `choices` candidates that no member holds are
//! considered, in counter order. A candidate `c` falls into some member's arc
//! `[P, N)`, which it would split into `[P, c)` and `[c, N)`; the joiner gets the
//! candidate whose *smaller* piece is largest, the first in counter order on a
//! tie. That prefers the largest arcs and, within an arc, points near its middle.
//! With no members, candidate 0.
//!
//! With enough candidates this halves the largest arcs in turn: at a power of two
//! of nodes the arcs are nearly equal, and in between the ratio of the largest
//! share to the mean climbs towards 2 (12 nodes: eight arcs of 1/16 and four of
//! 1/8 give 1.5), still well under the `ln(n)` of single hashes. Too few
//! candidates miss the largest arc now and then and leave it unsplit: 512, the
//! default, was the smallest power of two that kept 8 and 32 nodes under the
//! targets of issue #9 over a thousand salts (`docs/performance.md`).
//!
//! Invariants (checked by the property tests below):
//! - the ID is one of the candidates, never a member's ID;
//! - no other candidate leaves a larger smaller piece;
//! - with one choice it is candidate 0 (unless a member holds it);
//! - the same members, address and rule give the same ID;
//! - a join still splits only its predecessor's arc: balance costs no extra moves.

use super::{Position, arc_of, node_position, owner};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// How node IDs are derived: the salt mixed into every candidate and how many
/// candidates a joiner chooses among.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRule {
    /// Salt mixed into the hashes, so that separate rings place nodes differently.
    pub salt: String,
    /// How many hashed candidates to choose among (at least 1; 1 gives every
    /// node its single-hash ID, as before balancing).
    pub choices: u32,
}

impl IdRule {
    /// The default number of candidates, chosen by measurement (see the module
    /// docs and `docs/performance.md`). Hashing them is all it costs.
    pub const DEFAULT_CHOICES: u32 = 512;

    /// A rule with `salt` and `choices` candidates (at least one).
    pub fn new(salt: impl Into<String>, choices: u32) -> Self {
        Self {
            salt: salt.into(),
            choices: choices.max(1),
        }
    }

    /// The candidates for `addr`: its hashed positions in counter order, skipping
    /// those `taken` (held by another node), as many as the rule's choices.
    pub fn candidates(&self, addr: &str, taken: impl Fn(Position) -> bool) -> Vec<Position> {
        (0..=u32::MAX)
            .map(|i| node_position(addr, &self.salt, i))
            .filter(|c| !taken(*c))
            .take(self.choices.max(1) as usize)
            .collect()
    }

    /// The ID `addr` gets when it joins a ring of `members` (by ID).
    pub fn choose<V>(&self, addr: &str, members: &BTreeMap<Position, V>) -> Position {
        let candidates = self.candidates(addr, |c| members.contains_key(&c));
        best_split(members, &candidates).unwrap_or_else(|| node_position(addr, &self.salt, 0))
    }
}

/// The smaller of the two pieces a joiner at `c` would cut the arc it falls into:
/// how evenly it shares that arc with its predecessor. 0 when `c` is a member's ID;
/// with no members, the whole ring is one arc starting at `c`, so also 0.
pub fn smaller_piece<V>(members: &BTreeMap<Position, V>, c: Position) -> u64 {
    let Some((start, _)) = owner(members, c) else {
        return 0;
    };
    let before = u128::from(start.distance_to(c));
    let after = arc_of(members, start).span() - before;
    // At most half of 2^64: fits.
    u64::try_from(before.min(after)).unwrap_or(u64::MAX)
}

/// Among `candidates`, the one whose smaller piece is largest; the earliest on a
/// tie. `None` when there are no candidates.
pub fn best_split<V>(members: &BTreeMap<Position, V>, candidates: &[Position]) -> Option<Position> {
    candidates
        .iter()
        .enumerate()
        .max_by_key(|(i, c)| (smaller_piece(members, **c), Reverse(*i)))
        .map(|(_, c)| *c)
}

/// Each member's share of the ring (its arc), in ID order.
pub fn shares<V>(members: &BTreeMap<Position, V>) -> Vec<f64> {
    members
        .keys()
        .map(|id| arc_of(members, *id).share())
        .collect()
}

/// The largest share over the mean share: 1 for a perfectly even ring, `n` when
/// one of `n` nodes owns everything. `None` for no shares.
pub fn largest_share_ratio(shares: &[f64]) -> Option<f64> {
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let largest = shares.iter().copied().reduce(f64::max)?;
    (mean > 0.0).then(|| largest / mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::predecessor;
    use crate::ring::tests::ring;
    use proptest::prelude::*;

    #[test]
    fn the_first_member_gets_candidate_zero() {
        let rule = IdRule::new("s", 8);
        assert_eq!(
            rule.choose("http://a", &ring(&[])),
            node_position("http://a", "s", 0)
        );
    }

    #[test]
    fn a_point_at_the_middle_of_the_largest_arc_wins() {
        // Arcs: [0, 2^62) a quarter, [2^62, 0) three quarters.
        let r = ring(&[0, 1 << 62]);
        let middle_of_large = Position((1 << 62) + (3 << 61));
        let middle_of_small = Position(1 << 61);
        assert_eq!(
            best_split(&r, &[middle_of_small, middle_of_large]),
            Some(middle_of_large)
        );
        assert_eq!(smaller_piece(&r, Position(0)), 0, "a member's own ID");
    }

    #[test]
    fn ties_go_to_the_lowest_counter() {
        let r = ring(&[0]);
        assert_eq!(
            best_split(&r, &[Position(1 << 62), Position(3 << 62)]),
            Some(Position(1 << 62))
        );
    }

    #[test]
    fn an_even_ring_has_ratio_one_and_a_lone_owner_ratio_n() {
        let even = ring(&[0, 1 << 62, 1 << 63, 3 << 62]);
        assert_eq!(largest_share_ratio(&shares(&even)), Some(1.0));
        assert_eq!(largest_share_ratio(&[1.0, 0.0, 0.0]), Some(3.0));
        assert_eq!(largest_share_ratio(&[]), None);
    }

    fn members() -> impl Strategy<Value = BTreeMap<Position, ()>> {
        proptest::collection::btree_set(any::<u64>(), 0..40)
            .prop_map(|ids| ids.into_iter().map(|i| (Position(i), ())).collect())
    }

    proptest! {
        #[test]
        fn the_id_is_a_free_candidate_with_the_largest_smaller_piece(
            r in members(), port in any::<u16>(), choices in 1u32..20,
        ) {
            let rule = IdRule::new("s", choices);
            let addr = format!("http://127.0.0.1:{port}");
            let candidates = rule.candidates(&addr, |c| r.contains_key(&c));
            let id = rule.choose(&addr, &r);
            prop_assert!(candidates.contains(&id));
            prop_assert!(!r.contains_key(&id));
            let best = smaller_piece(&r, id);
            let first = candidates.iter().position(|c| *c == id).unwrap();
            for (i, c) in candidates.iter().enumerate() {
                let piece = smaller_piece(&r, *c);
                prop_assert!(piece <= best);
                // Among equals, the lowest counter.
                prop_assert!(piece < best || i >= first);
            }
        }

        #[test]
        fn one_choice_gives_the_single_hash_id(r in members(), port in any::<u16>()) {
            let addr = format!("http://127.0.0.1:{port}");
            let single = node_position(&addr, "s", 0);
            prop_assume!(!r.contains_key(&single));
            prop_assert_eq!(IdRule::new("s", 1).choose(&addr, &r), single);
        }

        #[test]
        fn the_same_members_give_the_same_id(
            ids in proptest::collection::vec(any::<u64>(), 0..40), port in any::<u16>(),
        ) {
            let addr = format!("http://127.0.0.1:{port}");
            let forwards: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
            let backwards: BTreeMap<Position, usize> =
                ids.iter().rev().enumerate().map(|(n, i)| (Position(*i), n)).collect();
            let rule = IdRule::new("s", 8);
            prop_assert_eq!(rule.choose(&addr, &forwards), rule.choose(&addr, &backwards));
        }

        #[test]
        fn a_chosen_join_moves_positions_only_from_its_predecessor(
            r in members(), port in any::<u16>(),
            probes in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            prop_assume!(!r.is_empty());
            let id = IdRule::new("s", 8).choose(&format!("http://127.0.0.1:{port}"), &r);
            let pred = predecessor(&r, id).unwrap().0;
            let mut after = r.clone();
            after.insert(id, ());
            for p in probes {
                let (was, is) = (owner(&r, Position(p)).unwrap().0, owner(&after, Position(p)).unwrap().0);
                if was != is {
                    prop_assert_eq!(was, pred);
                    prop_assert_eq!(is, id);
                }
            }
        }

        #[test]
        fn shares_add_up_to_the_ring_and_the_ratio_is_at_least_one(r in members()) {
            prop_assume!(!r.is_empty());
            let s = shares(&r);
            prop_assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let ratio = largest_share_ratio(&s).unwrap();
            prop_assert!(ratio >= 1.0 - 1e-9 && ratio <= r.len() as f64 + 1e-9);
        }
    }
}
