//! The registry's membership table, ID assignment and liveness, as pure logic:
//! every method takes the current time, so tests drive the clock.

use crate::ring::{Member, Position, node_position, predecessor};
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
    salt: String,
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
    /// An empty table whose IDs are derived with `salt`, started at `now`.
    pub fn new(salt: impl Into<String>, liveness: Liveness, now: Instant) -> Self {
        Self {
            salt: salt.into(),
            liveness,
            started: now,
            members: BTreeMap::new(),
        }
    }

    /// Registers `addr`: derives its ID with SHA-256 of the address and the salt
    /// (the same ID again if it registers again), and refers it to the live member
    /// with the closest smaller ID. An ID already held by another live address (a
    /// 64-bit SHA-256 collision) is re-derived with an attempt counter.
    pub fn register(&mut self, addr: &str, now: Instant) -> Result<Registration, Relearning> {
        self.expire(now);
        let since = now.saturating_duration_since(self.started);
        let others = self.members.values().any(|(a, _)| a != addr);
        if !others && since < self.liveness.relearn {
            return Err(Relearning { since });
        }
        let mut attempt = 0;
        let id = loop {
            let id = node_position(addr, &self.salt, attempt);
            match self.members.get(&id) {
                Some((holder, _)) if holder != addr => attempt += 1,
                _ => break id,
            }
        };
        self.members.insert(id, (addr.to_string(), now));
        let contact =
            predecessor(&self.members, id).map(|(id, (addr, _))| Member::new(id, addr.clone()));
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

    const TTL: Duration = Duration::from_secs(3);

    fn fresh() -> (Membership, Instant) {
        let now = Instant::now();
        let liveness = Liveness {
            ttl: TTL,
            relearn: Duration::ZERO,
        };
        (Membership::new("s", liveness, now), now)
    }

    #[test]
    fn the_first_member_has_no_contact() {
        let (mut m, now) = fresh();
        assert_eq!(m.register("http://a", now).unwrap().contact, None);
    }

    #[test]
    fn a_joiner_is_referred_to_the_closest_smaller_live_id() {
        let (mut m, now) = fresh();
        for i in 0..8 {
            m.register(&format!("http://n{i}"), now).unwrap();
        }
        let all = m.members(now);
        let r = m.register("http://joiner", now).unwrap();
        let expected = all.iter().rfind(|x| x.id < r.id).or(all.last()).cloned();
        assert_eq!(r.contact, expected);
    }

    #[test]
    fn registering_again_keeps_the_id() {
        let (mut m, now) = fresh();
        let first = m.register("http://a", now).unwrap().id;
        m.register("http://b", now).unwrap();
        assert_eq!(m.register("http://a", now).unwrap().id, first);
        assert_eq!(m.members(now).len(), 2);
    }

    #[test]
    fn ids_are_the_salted_sha256_of_the_address() {
        let (mut m, now) = fresh();
        assert_eq!(
            m.register("http://a", now).unwrap().id,
            node_position("http://a", "s", 0)
        );
    }

    #[test]
    fn silent_members_expire_and_heartbeats_keep_them() {
        let (mut m, now) = fresh();
        let a = m.register("http://a", now).unwrap().id;
        m.register("http://b", now).unwrap();
        let later = now + TTL + Duration::from_millis(1);
        m.heartbeat(&Member::new(a, "http://a"), now + TTL);
        let live: Vec<_> = m.members(later).into_iter().map(|x| x.addr).collect();
        assert_eq!(live, vec!["http://a".to_string()]);
        // Nobody is referred to an expired member.
        let c = m.register("http://c", later).unwrap();
        assert_eq!(c.contact.map(|x| x.addr), Some("http://a".into()));
    }

    #[test]
    fn a_restarted_registry_relearns_before_naming_a_first_member() {
        let now = Instant::now();
        let liveness = Liveness {
            ttl: TTL,
            relearn: Duration::from_secs(2),
        };
        let mut m = Membership::new("s", liveness, now);
        assert!(m.register("http://new", now).is_err());
        // A heartbeat from a running member arrives: now there is a contact.
        m.heartbeat(&Member::new(Position(5), "http://old"), now);
        let r = m.register("http://new", now).unwrap();
        assert_eq!(r.contact.map(|c| c.addr), Some("http://old".into()));
        // After the relearning window, an empty registry names a first member.
        let mut empty = Membership::new("s", liveness, now);
        assert!(
            empty
                .register("http://x", now + Duration::from_secs(2))
                .is_ok()
        );
    }

    #[test]
    fn deregistered_members_are_gone_at_once() {
        let (mut m, now) = fresh();
        let a = m.register("http://a", now).unwrap().id;
        m.deregister(&Member::new(a, "http://a"));
        assert!(m.members(now).is_empty());
    }
}
