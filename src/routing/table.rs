//! The routing table: the ring's members as this node last learned them.

use crate::ring::{Member, Position, owner};
use std::collections::BTreeMap;

/// The members of the ring by ID, always including this node itself.
///
/// It may lag behind the ring (a joiner not yet learned, a dead member not yet
/// dropped): it names the member that *probably* owns a position.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: Member,
    members: BTreeMap<Position, Member>,
}

impl RoutingTable {
    /// A table that knows only this node.
    pub fn new(me: Member) -> Self {
        let members = BTreeMap::from([(me.id, me.clone())]);
        Self { me, members }
    }

    /// The member that owns `position` by this table (this node included).
    pub fn owner(&self, position: Position) -> &Member {
        // The table always holds `me`, so there is always an owner.
        owner(&self.members, position).map_or(&self.me, |(_, m)| m)
    }

    /// Learns one member (a joiner, or a member named by a peer). A member at
    /// a known ID with another address replaces it (a restart elsewhere).
    pub fn insert(&mut self, member: Member) {
        if member.id != self.me.id {
            self.members.insert(member.id, member);
        }
    }

    /// Forgets a member (it failed, left, or could not be reached).
    pub fn remove(&mut self, member: &Member) {
        if member.id != self.me.id && self.members.get(&member.id) == Some(member) {
            self.members.remove(&member.id);
        }
    }

    /// Replaces every member with those of a completed sweep (this node stays).
    pub fn replace(&mut self, members: impl IntoIterator<Item = Member>) {
        self.members = BTreeMap::from([(self.me.id, self.me.clone())]);
        for m in members {
            self.insert(m);
        }
    }

    /// Adds the members of a sweep that did not complete, keeping the others.
    pub fn extend(&mut self, members: impl IntoIterator<Item = Member>) {
        for m in members {
            self.insert(m);
        }
    }

    /// How many members the table holds, this node included.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the table knows only this node.
    pub fn is_empty(&self) -> bool {
        self.members.len() <= 1
    }

    /// The members in ring order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    #[test]
    fn a_new_table_routes_everything_to_this_node() {
        let t = RoutingTable::new(m(10));
        assert_eq!(t.owner(Position(3)), &m(10));
        assert_eq!(t.owner(Position(u64::MAX)), &m(10));
        assert!(t.is_empty());
    }

    #[test]
    fn owners_follow_the_ring_rule() {
        let mut t = RoutingTable::new(m(10));
        t.extend([m(20), m(30)]);
        assert_eq!(t.owner(Position(25)), &m(20));
        assert_eq!(t.owner(Position(5)), &m(30));
        assert_eq!(t.owner(Position(10)), &m(10));
    }

    #[test]
    fn this_node_is_never_forgotten_or_replaced() {
        let mut t = RoutingTable::new(m(10));
        t.remove(&m(10));
        t.insert(Member::new(Position(10), "http://impostor"));
        t.replace([m(20)]);
        assert_eq!(t.owner(Position(15)), &m(10));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn removing_takes_only_the_member_named() {
        let mut t = RoutingTable::new(m(10));
        t.insert(m(20));
        // Another address at the same ID (the member restarted elsewhere) stays.
        t.remove(&Member::new(Position(20), "http://old"));
        assert_eq!(t.owner(Position(25)), &m(20));
        t.remove(&m(20));
        assert_eq!(t.owner(Position(25)), &m(10));
    }

    #[test]
    fn a_completed_sweep_drops_members_it_did_not_see() {
        let mut t = RoutingTable::new(m(10));
        t.extend([m(20), m(30)]);
        t.replace([m(30)]);
        assert_eq!(t.owner(Position(25)), &m(10));
        assert_eq!(t.len(), 2);
    }

    proptest! {
        /// With the full membership, the table's owner is the ring's owner.
        #[test]
        fn a_full_table_names_the_true_owner(
            ids in proptest::collection::btree_set(any::<u64>(), 1..40),
            p in any::<u64>(),
        ) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let mut t = RoutingTable::new(m(ids[0]));
            t.replace(ids.iter().map(|i| m(*i)));
            let ring: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
            prop_assert_eq!(t.owner(Position(p)).id, owner(&ring, Position(p)).unwrap().0);
        }
    }
}
