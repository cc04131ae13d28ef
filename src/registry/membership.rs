//! The registry's membership table and ID assignment, as pure logic.

use crate::ring::{Member, Position, node_position, predecessor};
use std::collections::BTreeMap;

/// The registered members, by ID.
#[derive(Debug, Default)]
pub struct Membership {
    salt: String,
    members: BTreeMap<Position, String>,
}

/// What a registering node is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node's ID.
    pub id: Position,
    /// The member with the closest smaller ID (wrapping), if any other exists.
    pub contact: Option<Member>,
}

impl Membership {
    /// An empty table whose IDs are derived with `salt`.
    pub fn new(salt: impl Into<String>) -> Self {
        Self {
            salt: salt.into(),
            members: BTreeMap::new(),
        }
    }

    /// Registers `addr`: derives its ID with SHA-256 of the address and the salt
    /// (the same ID again if it registers again), and refers it to the member with
    /// the closest smaller ID. An ID already held by another address (a 64-bit
    /// SHA-256 collision) is re-derived with an attempt counter.
    pub fn register(&mut self, addr: &str) -> Registration {
        let mut attempt = 0;
        let id = loop {
            let id = node_position(addr, &self.salt, attempt);
            match self.members.get(&id) {
                Some(holder) if holder != addr => attempt += 1,
                _ => break id,
            }
        };
        self.members.insert(id, addr.to_string());
        let contact =
            predecessor(&self.members, id).map(|(id, addr)| Member::new(id, addr.clone()));
        Registration { id, contact }
    }

    /// Every member, ordered by ID.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|(id, addr)| Member::new(*id, addr.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_member_has_no_contact() {
        let mut m = Membership::new("s");
        assert_eq!(m.register("http://a").contact, None);
    }

    #[test]
    fn a_joiner_is_referred_to_the_closest_smaller_id() {
        let mut m = Membership::new("s");
        let addrs: Vec<String> = (0..8).map(|i| format!("http://n{i}")).collect();
        for a in &addrs {
            m.register(a);
        }
        let all = m.members();
        let r = m.register("http://joiner");
        let expected = all.iter().rfind(|x| x.id < r.id).or(all.last()).cloned();
        assert_eq!(r.contact, expected);
    }

    #[test]
    fn registering_again_keeps_the_id() {
        let mut m = Membership::new("s");
        let first = m.register("http://a").id;
        m.register("http://b");
        assert_eq!(m.register("http://a").id, first);
        assert_eq!(m.members().len(), 2);
    }

    #[test]
    fn ids_are_the_salted_sha256_of_the_address() {
        let mut m = Membership::new("s");
        assert_eq!(m.register("http://a").id, node_position("http://a", "s", 0));
    }
}
