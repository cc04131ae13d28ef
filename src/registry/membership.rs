//! The registry's membership table, ID assignment and liveness, as pure logic:
//! every method takes the current time, so tests drive the clock.
//!
//! IDs are assigned by the balancing rule of [`crate::ring::balance`] over the live
//! members, so a registry's IDs depend only on its salt, its `--id-choices` and the
//! order in which addresses join: two registries given the same assign the same.

use crate::ring::{IdRule, Member, Position, owner, predecessor};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How the registry judges liveness.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// A member not heard from (registration or heartbeat) for this long is gone.
    pub ttl: Duration,
    /// For this long after the registry starts, it does not tell a registering node
    /// that it is the first member: a restarted registry first relearns the live
    /// members from their heartbeats, so that it never splits a running ring.
    pub relearn: Duration,
}

/// The members, by ID, with when each was last heard from.
#[derive(Debug)]
pub struct Membership {
    ids: IdRule,
    liveness: Liveness,
    started: Instant,
    members: BTreeMap<Position, (String, Instant)>,
}

/// What a registering node is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node's ID.
    pub id: Position,
    /// The live member with the closest smaller ID (wrapping), if any other exists.
    pub contact: Option<Member>,
}

/// Why the registry cannot answer a registration yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the registry restarted {since:?} ago and is relearning the live members; retry shortly")]
pub struct Relearning {
    /// Time since the registry started.
    pub since: Duration,
}

impl Membership {
    /// An empty table whose IDs are chosen by `ids`, started at `now`.
    pub fn new(ids: IdRule, liveness: Liveness, now: Instant) -> Self {
        Self {
            ids,
            liveness,
            started: now,
            members: BTreeMap::new(),
        }
    }

    /// Registers `addr` and refers it to the live member with the closest smaller
    /// ID. Its ID is, in order of preference:
    ///
    /// 1. `held`, the ID it already has (a node restarted from its data). It is
    ///    recorded unless another live address holds it (then that one is the
    ///    contact if no other member precedes it, and the join settles who keeps
    ///    it); what the registry had recorded for `addr` before is dropped, so no
    ///    phantom ID skews later choices;
    /// 2. the ID it has as a live member already (registering again keeps it);
    /// 3. the balancing rule's choice among the live members.
    pub fn register(
        &mut self,
        addr: &str,
        held: Option<Position>,
        now: Instant,
    ) -> Result<Registration, Relearning> {
        self.expire(now);
        let since = now.saturating_duration_since(self.started);
        let others = self.members.values().any(|(a, _)| a != addr);
        if !others && since < self.liveness.relearn {
            return Err(Relearning { since });
        }
        let recorded = self
            .members
            .iter()
            .find(|(_, (a, _))| a == addr)
            .map(|(id, _)| *id);
        let id = held
            .or(recorded)
            .unwrap_or_else(|| self.ids.choose(addr, &self.members));
        if let Some(old) = recorded.filter(|old| *old != id) {
            self.members.remove(&old);
        }
        if self.members.get(&id).is_none_or(|(a, _)| a == addr) {
            self.members.insert(id, (addr.to_string(), now));
        }
        let contact = predecessor(&self.members, id)
            .or_else(|| owner(&self.members, id))
            .filter(|(_, (a, _))| a != addr)
            .map(|(id, (addr, _))| Member::new(id, addr.clone()));
        Ok(Registration { id, contact })
    }

    /// `member` says it is alive; a member the registry did not know (because it
    /// restarted) is learnt again with the ID it reports.
    pub fn heartbeat(&mut self, member: &Member, now: Instant) {
        self.members.insert(member.id, (member.addr.clone(), now));
    }

    /// `member` left the ring.
    pub fn deregister(&mut self, member: &Member) {
        if self
            .members
            .get(&member.id)
            .is_some_and(|(a, _)| *a == member.addr)
        {
            self.members.remove(&member.id);
        }
    }

    /// The live members, ordered by ID.
    pub fn members(&mut self, now: Instant) -> Vec<Member> {
        self.expire(now);
        self.members
            .iter()
            .map(|(id, (addr, _))| Member::new(*id, addr.clone()))
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.liveness.ttl;
        self.members
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::node_position;

    const TTL: Duration = Duration::from_secs(3);

    fn fresh() -> (Membership, Instant) {
        let now = Instant::now();
        let liveness = Liveness {
            ttl: TTL,
            relearn: Duration::ZERO,
        };
        (
            Membership::new(IdRule::new("s", IdRule::DEFAULT_CHOICES), liveness, now),
            now,
        )
    }

    #[test]
    fn the_first_member_has_no_contact() {
        let (mut m, now) = fresh();
        assert_eq!(m.register("http://a", None, now).unwrap().contact, None);
    }

    #[test]
    fn a_joiner_is_referred_to_the_closest_smaller_live_id() {
        let (mut m, now) = fresh();
        for i in 0..8 {
            m.register(&format!("http://n{i}"), None, now).unwrap();
        }
        let all = m.members(now);
        let r = m.register("http://joiner", None, now).unwrap();
        let expected = all.iter().rfind(|x| x.id < r.id).or(all.last()).cloned();
        assert_eq!(r.contact, expected);
    }

    #[test]
    fn registering_again_keeps_the_id() {
        let (mut m, now) = fresh();
        let first = m.register("http://a", None, now).unwrap().id;
        m.register("http://b", None, now).unwrap();
        assert_eq!(m.register("http://a", None, now).unwrap().id, first);
        assert_eq!(m.members(now).len(), 2);
    }

    #[test]
    fn the_first_id_is_the_salted_sha256_of_the_address() {
        let (mut m, now) = fresh();
        assert_eq!(
            m.register("http://a", None, now).unwrap().id,
            node_position("http://a", "s", 0)
        );
    }

    /// Registers `http://n0..` in order; their IDs.
    fn join_in_order(m: &mut Membership, n: usize, now: Instant) -> Vec<Position> {
        (0..n)
            .map(|i| m.register(&format!("http://n{i}"), None, now).unwrap().id)
            .collect()
    }

    #[test]
    fn each_id_is_the_balancing_rule_s_choice_among_the_live_members() {
        let (mut m, now) = fresh();
        let rule = IdRule::new("s", IdRule::DEFAULT_CHOICES);
        for i in 0..16 {
            let before: BTreeMap<Position, ()> =
                m.members(now).into_iter().map(|x| (x.id, ())).collect();
            let addr = format!("http://n{i}");
            let id = m.register(&addr, None, now).unwrap().id;
            assert_eq!(id, rule.choose(&addr, &before), "member {i}");
        }
    }

    #[test]
    fn one_choice_gives_the_single_hash_ids() {
        let (_, now) = fresh();
        let liveness = Liveness {
            ttl: TTL,
            relearn: Duration::ZERO,
        };
        let mut m = Membership::new(IdRule::new("s", 1), liveness, now);
        for (i, id) in join_in_order(&mut m, 8, now).into_iter().enumerate() {
            assert_eq!(id, node_position(&format!("http://n{i}"), "s", 0));
        }
    }

    #[test]
    fn two_registries_with_the_same_salt_and_join_order_assign_the_same_ids() {
        let (mut one, now) = fresh();
        let (mut other, _) = fresh();
        assert_eq!(
            join_in_order(&mut one, 12, now),
            join_in_order(&mut other, 12, now)
        );
    }

    #[test]
    fn a_saved_id_is_registered_instead_of_a_new_one() {
        let (mut m, now) = fresh();
        join_in_order(&mut m, 4, now);
        let saved = Position(12345);
        let r = m.register("http://back", Some(saved), now).unwrap();
        assert_eq!(r.id, saved);
        let before: BTreeMap<Position, Member> =
            m.members(now).into_iter().map(|x| (x.id, x)).collect();
        assert_eq!(
            r.contact.as_ref(),
            predecessor(&before, saved).map(|(_, x)| x)
        );
        // Exactly one entry for the address: the saved ID.
        let held: Vec<_> = before
            .values()
            .filter(|x| x.addr == "http://back")
            .collect();
        assert_eq!(held, vec![&Member::new(saved, "http://back")]);
    }

    #[test]
    fn a_saved_id_replaces_what_the_registry_had_for_the_address() {
        let (mut m, now) = fresh();
        join_in_order(&mut m, 3, now);
        let derived = m.register("http://back", None, now).unwrap().id;
        let saved = Position(derived.0.wrapping_add(1 << 40));
        assert_eq!(
            m.register("http://back", Some(saved), now).unwrap().id,
            saved
        );
        let ids: Vec<_> = m
            .members(now)
            .into_iter()
            .filter(|x| x.addr == "http://back")
            .map(|x| x.id)
            .collect();
        assert_eq!(ids, vec![saved]);
    }

    #[test]
    fn a_saved_id_another_live_address_holds_is_not_taken_over() {
        let (mut m, now) = fresh();
        let a = m.register("http://a", None, now).unwrap().id;
        // Alone, the holder itself is the contact: its join is refused if it lives.
        let r = m.register("http://copy", Some(a), now).unwrap();
        assert_eq!(
            r,
            Registration {
                id: a,
                contact: Some(Member::new(a, "http://a"))
            }
        );
        let b = m.register("http://b", None, now).unwrap().id;
        let r = m.register("http://copy", Some(a), now).unwrap();
        assert_eq!(r.contact, Some(Member::new(b, "http://b")));
        let addrs: Vec<_> = m.members(now).into_iter().map(|x| x.addr).collect();
        assert!(!addrs.contains(&"http://copy".to_string()), "{addrs:?}");
    }

    #[test]
    fn silent_members_expire_and_heartbeats_keep_them() {
        let (mut m, now) = fresh();
        let a = m.register("http://a", None, now).unwrap().id;
        m.register("http://b", None, now).unwrap();
        let later = now + TTL + Duration::from_millis(1);
        m.heartbeat(&Member::new(a, "http://a"), now + TTL);
        let live: Vec<_> = m.members(later).into_iter().map(|x| x.addr).collect();
        assert_eq!(live, vec!["http://a".to_string()]);
        // Nobody is referred to an expired member.
        let c = m.register("http://c", None, later).unwrap();
        assert_eq!(c.contact.map(|x| x.addr), Some("http://a".into()));
    }

    #[test]
    fn a_restarted_registry_relearns_before_naming_a_first_member() {
        let now = Instant::now();
        let liveness = Liveness {
            ttl: TTL,
            relearn: Duration::from_secs(2),
        };
        let mut m = Membership::new(IdRule::new("s", IdRule::DEFAULT_CHOICES), liveness, now);
        assert!(m.register("http://new", None, now).is_err());
        // A heartbeat from a running member arrives: now there is a contact.
        m.heartbeat(&Member::new(Position(5), "http://old"), now);
        let r = m.register("http://new", None, now).unwrap();
        assert_eq!(r.contact.map(|c| c.addr), Some("http://old".into()));
        // After the relearning window, an empty registry names a first member.
        let mut empty = Membership::new(IdRule::new("s", IdRule::DEFAULT_CHOICES), liveness, now);
        assert!(
            empty
                .register("http://x", None, now + Duration::from_secs(2))
                .is_ok()
        );
    }

    #[test]
    fn deregistered_members_are_gone_at_once() {
        let (mut m, now) = fresh();
        let a = m.register("http://a", None, now).unwrap().id;
        m.deregister(&Member::new(a, "http://a"));
        assert!(m.members(now).is_empty());
    }
}
