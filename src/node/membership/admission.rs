//! The contact's side of a join, as a state machine with no I/O: whether a
//! joiner is taken in, what the hand-off tells it, and how the contact's view
//! changes once the joiner serves. `join::accept_join` holds the membership
//! lock, asks the registry when told to, streams the arc (`migration`), and
//! carries the result out; nothing here reads a clock, calls a peer, touches
//! the store or builds a wire status.
//!
//! The rules (the module docs of `join` say why):
//!
//! - a joiner is refused unless its ID lies strictly inside the contact's arc
//!   (the refusal names the neighbour closer to it), the contact serves, and
//!   the ID is free;
//! - the contact hands over only what it may serve now ([`HandOver`]); a node
//!   alone after failures takes a joiner in only if the registry lists no
//!   other live member, and on that word goes on to the switch-over even
//!   without a lease;
//! - once the joiner serves, it is the contact's `next` (and its `prev` too,
//!   if the contact was alone), what is left of the contact's arc is confirmed
//!   by it, the fence is lifted, the contact keeps the arc's copy as the
//!   joiner's replica or drops it, and introduces the joiner to the old
//!   `next`.

use super::handoff::HandOffHeader;
use crate::lease::HandOver;
use crate::node::view::{JoinRefusal, View};
use crate::ring::{Arc as RingArc, Member, Position};

/// A joiner being taken in.
#[derive(Debug)]
pub(in crate::node) struct Admission {
    joiner: Member,
    /// The arc it takes, `[joiner, old next)`.
    arc: RingArc,
    me: Member,
    prev: Member,
    old_next: Member,
    /// Alone after failures, taken in on the registry's word (once it
    /// answered so).
    vouched: bool,
}

/// What the contact does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::node) enum Admit {
    /// Stream the arc to the joiner ([`Admission::header`]).
    HandOff,
    /// Ask the registry which members live ([`Admission::registry_answered`]).
    AskRegistry,
}

/// What the contact does once the joiner serves.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::node) struct Linked {
    /// What is left of the contact's arc, now confirmed by its new `next`
    /// (`Leases::confirms`): the joiner took its arc with the contact as its
    /// `prev`, and the contact served all of it, or was alone.
    pub confirmed: RingArc,
    /// The arc to drop from the store: `None` when the contact keeps it as
    /// the joiner's replica.
    pub drop: Option<RingArc>,
    /// Whom to tell that the joiner is its `prev` (the old `next`), unless
    /// the contact was alone.
    pub introduce: Option<Member>,
    /// The contact's neighbours before the join, as its answer
    /// (`PreviousNeighbors`) names them: its `prev` and its old `next`.
    pub reply: (Member, Member),
}

impl Admission {
    /// A join asked of a contact whose view is `view`, and which
    /// `may_hand_over` says may (or may not) hand over the arc the joiner
    /// would take: refused, or taken in.
    pub(in crate::node) fn ask(
        joiner: Member,
        view: &View,
        may_hand_over: impl FnOnce(RingArc) -> HandOver,
    ) -> Result<(Self, Admit), JoinRefusal> {
        let arc = view.check_join(joiner.id)?;
        let admit = match may_hand_over(arc) {
            HandOver::Yes => Admit::HandOff,
            HandOver::No => return Err(JoinRefusal::Unleased),
            HandOver::IfNoOtherMember => Admit::AskRegistry,
        };
        let admission = Self {
            joiner,
            arc,
            me: view.me.clone(),
            prev: view.prev.clone(),
            old_next: view.next.clone(),
            vouched: false,
        };
        Ok((admission, admit))
    }

    /// The registry's live `members` (`None`: it did not answer): the joiner
    /// is taken in only if they are this node and the joiner at most. A node
    /// cut off from the ring may well be cut off from the registry too, so
    /// no answer refuses.
    pub(in crate::node) fn registry_answered(
        &mut self,
        members: Option<&[Member]>,
    ) -> Result<(), JoinRefusal> {
        let me = self.me.id;
        match members {
            Some(members) if members.iter().all(|m| m.id == me || m.id == self.joiner.id) => {
                self.vouched = true;
                Ok(())
            }
            _ => Err(JoinRefusal::Unleased),
        }
    }

    /// The arc handed over.
    pub(in crate::node) fn arc(&self) -> RingArc {
        self.arc
    }

    /// The hand-off's first message: the joiner's neighbours (the contact and
    /// its `next` when the join was asked), and, from the contact's current
    /// `view`, the successors and predecessors the joiner starts from (the
    /// contact's replicas' chain).
    pub(in crate::node) fn header(&self, view: &View) -> HandOffHeader {
        HandOffHeader {
            from: self.me.clone(),
            prev: Some(self.me.clone()),
            next: self.old_next.clone(),
            merge: false,
            backups: view.backups.clone(),
            predecessors: view.replicas(usize::MAX),
        }
    }

    /// Whether the hand-off may switch over once the snapshot is sent and
    /// the fence is up, when `hand_over` says what the contact may hand over
    /// now. Checked before the stream too ([`Admission::ask`]): a lease that
    /// lapsed meanwhile may let the contact's `prev` take the arc over, and
    /// the joiner, leased by this contact, would serve part of it beside that
    /// `prev`. A contact alone after failures goes on once the registry said
    /// no other member lives ([`Admission::registry_answered`]).
    pub(in crate::node) fn may_switch_over(&self, hand_over: HandOver) -> bool {
        match hand_over {
            HandOver::Yes => true,
            HandOver::IfNoOtherMember => self.vouched,
            HandOver::No => false,
        }
    }

    /// Whether a joiner that answers with `prev` as its previous neighbour
    /// took the arc from this contact (asked after the hand-off timed out:
    /// the contact may keep the arc only if it did not).
    pub(in crate::node) fn taken_by_joiner(&self, prev: Option<Position>) -> bool {
        prev == Some(self.me.id)
    }

    /// The joiner serves: links it into `view` as the contact's `next`
    /// (keeping a successor list of `successors`) and lifts the fence, and
    /// says what else to do.
    /// `keep_copy`: the contact is the joiner's nearest replica
    /// (replication factor above 1).
    pub(in crate::node) fn linked(
        self,
        view: &mut View,
        successors: usize,
        keep_copy: bool,
    ) -> Linked {
        let was_alone = view.alone();
        if was_alone {
            view.prev = self.joiner.clone();
        }
        let after = view.successors();
        view.next = self.joiner.clone();
        view.adopt_successors(&after, successors);
        view.handoff = None;
        Linked {
            confirmed: RingArc::new(self.me.id, self.joiner.id),
            drop: (!keep_copy).then_some(self.arc),
            introduce: (self.old_next != self.me).then(|| self.old_next.clone()),
            reply: (self.prev, self.old_next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    /// Node 20, serving, between 10 and 30, with 40 after 30.
    fn serving() -> View {
        let mut view = View::first(member(20));
        view.prev = member(10);
        view.next = member(30);
        view.backups = vec![member(40)];
        view
    }

    fn asked(joiner: u64, view: &View, hand_over: HandOver) -> Result<Admit, JoinRefusal> {
        Admission::ask(member(joiner), view, |_| hand_over).map(|(_, admit)| admit)
    }

    #[test]
    fn a_joiner_inside_the_arc_is_handed_its_part_of_it() {
        let view = serving();
        let mut asked_about = None;
        let (admission, admit) = Admission::ask(member(25), &view, |arc| {
            asked_about = Some(arc);
            HandOver::Yes
        })
        .unwrap();
        assert_eq!(admit, Admit::HandOff);
        assert_eq!(
            asked_about,
            Some(RingArc::new(Position(25), Position(30))),
            "the leases are asked about the arc the joiner takes"
        );
        assert_eq!(admission.arc(), RingArc::new(Position(25), Position(30)));
        let header = admission.header(&view);
        assert_eq!(header.from, member(20));
        assert_eq!(header.prev, Some(member(20)));
        assert_eq!(header.next, member(30));
        assert!(!header.merge);
        assert_eq!(header.backups, vec![member(40)]);
        assert_eq!(header.predecessors, vec![member(10)]);
    }

    #[test]
    fn a_joiner_is_refused_outside_the_arc_on_a_taken_id_or_by_a_contact_not_serving() {
        let view = serving();
        let refused = Admission::ask(member(35), &view, |_| {
            panic!("no lease is asked about an arc the joiner may not take")
        });
        assert!(refused.is_err());
        assert!(matches!(
            asked(35, &view, HandOver::Yes),
            Err(JoinRefusal::NotMyArc { .. })
        ));
        assert_eq!(
            asked(20, &view, HandOver::Yes),
            Err(JoinRefusal::Taken { holder: member(20) })
        );
        assert_eq!(
            asked(25, &View::joining(member(20)), HandOver::Yes),
            Err(JoinRefusal::NotServing)
        );
    }

    #[test]
    fn a_contact_that_may_not_hand_its_arc_over_refuses_and_the_joiner_retries() {
        assert_eq!(
            asked(25, &serving(), HandOver::No),
            Err(JoinRefusal::Unleased)
        );
    }

    #[test]
    fn a_node_alone_after_failures_asks_the_registry_and_takes_the_joiner_only_if_no_one_else_lives()
     {
        let view = View::first(member(20));
        let (mut admission, admit) =
            Admission::ask(member(25), &view, |_| HandOver::IfNoOtherMember).unwrap();
        assert_eq!(admit, Admit::AskRegistry);
        assert!(
            !admission.may_switch_over(HandOver::IfNoOtherMember),
            "not before the registry answered"
        );
        // No registry, or one listing only these two: the others died.
        assert_eq!(admission.registry_answered(Some(&[])), Ok(()));
        assert_eq!(
            admission.registry_answered(Some(&[member(20), member(25)])),
            Ok(())
        );
        // Another member lives (this node was cut off), or no answer: refused.
        assert_eq!(
            admission.registry_answered(Some(&[member(20), member(7)])),
            Err(JoinRefusal::Unleased)
        );
        assert_eq!(
            admission.registry_answered(None),
            Err(JoinRefusal::Unleased)
        );
        assert!(admission.may_switch_over(HandOver::IfNoOtherMember));
    }

    #[test]
    fn the_switch_over_waits_for_the_same_permission_the_join_was_taken_in_with() {
        let (leased, _) = Admission::ask(member(25), &serving(), |_| HandOver::Yes).unwrap();
        assert!(leased.may_switch_over(HandOver::Yes));
        assert!(!leased.may_switch_over(HandOver::No), "the lease lapsed");
        assert!(
            !leased.may_switch_over(HandOver::IfNoOtherMember),
            "not vouched for by the registry"
        );
        let (mut alone, _) = Admission::ask(member(25), &View::first(member(20)), |_| {
            HandOver::IfNoOtherMember
        })
        .unwrap();
        alone.registry_answered(Some(&[])).unwrap();
        assert!(alone.may_switch_over(HandOver::IfNoOtherMember));
        assert!(!alone.may_switch_over(HandOver::No));
    }

    #[test]
    fn a_linked_joiner_becomes_next_and_the_old_next_hears_of_it() {
        let mut view = serving();
        view.handoff = Some(RingArc::new(Position(25), Position(30)));
        let (admission, _) = Admission::ask(member(25), &view, |_| HandOver::Yes).unwrap();
        let linked = admission.linked(&mut view, 3, false);
        assert_eq!(view.prev, member(10));
        assert_eq!(view.next, member(25));
        assert_eq!(view.backups, vec![member(30), member(40)]);
        assert_eq!(view.handoff, None);
        assert_eq!(
            linked,
            Linked {
                confirmed: RingArc::new(Position(20), Position(25)),
                drop: Some(RingArc::new(Position(25), Position(30))),
                introduce: Some(member(30)),
                reply: (member(10), member(30)),
            }
        );
    }

    #[test]
    fn a_contact_alone_links_the_joiner_as_both_neighbours_and_keeps_a_replica_s_copy() {
        let mut view = View::first(member(20));
        let (admission, _) = Admission::ask(member(25), &view, |_| HandOver::Yes).unwrap();
        assert_eq!(admission.arc(), RingArc::new(Position(25), Position(20)));
        let linked = admission.linked(&mut view, 3, true);
        assert_eq!(
            (view.prev.clone(), view.next.clone()),
            (member(25), member(25))
        );
        assert_eq!(
            linked.confirmed,
            RingArc::new(Position(20), Position(25)),
            "the whole ring was served: what is left is confirmed"
        );
        assert_eq!(linked.drop, None, "kept as the joiner's replica");
        assert_eq!(linked.introduce, None, "no old next to tell");
        assert_eq!(linked.reply, (member(20), member(20)));
    }

    #[test]
    fn after_a_timeout_the_arc_counts_as_taken_only_if_the_joiner_names_this_node_its_prev() {
        let (admission, _) = Admission::ask(member(25), &serving(), |_| HandOver::Yes).unwrap();
        assert!(admission.taken_by_joiner(Some(Position(20))));
        assert!(!admission.taken_by_joiner(Some(Position(10))));
        assert!(!admission.taken_by_joiner(None));
    }
}
