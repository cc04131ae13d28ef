//! The leaver's side of a graceful leave, as a state machine: whether there is
//! anything to leave, whom to hand the arc to, whom to introduce to whom
//! afterwards, how long to wait before trying again, and when to give up.
//! `node`'s leave loop carries the steps out (the hand-off, the fence, the
//! registry); nothing here does I/O or reads a clock (time is passed in).
//!
//! The rules (the protocol is in `node::membership::leave`):
//!
//! - a node that has already left, or has not joined yet, has nothing to leave;
//! - a node alone in the ring just stops serving;
//! - otherwise it hands its whole arc to its predecessor, telling it its new
//!   next neighbour, and once that is done introduces the two (unless they are
//!   one node);
//! - an attempt that fails (the predecessor refused, being no longer linked to
//!   the leaver, or could not be reached) is tried again, from the node's view
//!   then, after a delay that doubles up to a second;
//! - all of it within the join timeout; after it the node serves again.

use crate::ring::Member;
use std::time::{Duration, Instant};

/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Where the leaver stands, from its view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It has left already, or never joined.
    Outside,
    /// It is the ring's only member.
    Alone,
    /// It is linked between `prev` and `next`.
    Linked {
        /// Its predecessor.
        prev: Member,
        /// Its successor.
        next: Member,
    },
}

/// What an attempt does, given where the leaver stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to leave.
    Done,
    /// Stop serving: the ring is left empty.
    LeaveAlone,
    /// Hand the whole arc to `to`, telling it its next is now `next`; then
    /// call [`Leaver::handed_off`] or, on failure, [`Leaver::failed`].
    HandOff {
        /// The predecessor.
        to: Member,
        /// The leaver's successor, the predecessor's next from now on.
        next: Member,
    },
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Wait this long, then look at the view again ([`Leaver::plan`]).
    Wait(Duration),
    /// The timeout passed: serve again.
    GiveUp,
}

/// What follows a hand-off that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlink {
    /// Introduce `to` to `next` as its previous neighbour, if they differ.
    pub introduce: Option<(Member, Member)>,
}

/// The leaver's state.
#[derive(Debug)]
pub struct Leaver {
    deadline: Instant,
    delay: Duration,
}

impl Leaver {
    /// A leave that must be done within `timeout` of `now`, retrying first
    /// after `retry_delay`.
    pub fn new(now: Instant, timeout: Duration, retry_delay: Duration) -> Self {
        Self {
            deadline: now + timeout,
            delay: retry_delay,
        }
    }

    /// What to do, given where the leaver stands now.
    pub fn plan(&self, standing: Standing) -> Plan {
        match standing {
            Standing::Outside => Plan::Done,
            Standing::Alone => Plan::LeaveAlone,
            Standing::Linked { prev, next } => Plan::HandOff { to: prev, next },
        }
    }

    /// The predecessor took the arc, telling it `next`: what is left to do.
    pub fn handed_off(&self, to: &Member, next: &Member) -> Unlink {
        Unlink {
            introduce: (to != next).then(|| (to.clone(), next.clone())),
        }
    }

    /// The attempt failed at `now`: wait and try again, or give up.
    pub fn failed(&mut self, now: Instant) -> Retry {
        if now >= self.deadline {
            return Retry::GiveUp;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Retry::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn leaver(now: Instant) -> Leaver {
        Leaver::new(now, Duration::from_secs(5), Duration::from_millis(100))
    }

    #[test]
    fn a_node_outside_the_ring_has_nothing_to_leave_and_one_alone_just_stops() {
        let l = leaver(Instant::now());
        assert_eq!(l.plan(Standing::Outside), Plan::Done);
        assert_eq!(l.plan(Standing::Alone), Plan::LeaveAlone);
    }

    #[test]
    fn the_arc_goes_to_the_predecessor_who_is_then_introduced_to_the_successor() {
        let l = leaver(Instant::now());
        let (prev, next) = (member(1), member(9));
        assert_eq!(
            l.plan(Standing::Linked {
                prev: prev.clone(),
                next: next.clone()
            }),
            Plan::HandOff {
                to: prev.clone(),
                next: next.clone()
            }
        );
        assert_eq!(
            l.handed_off(&prev, &next).introduce,
            Some((prev.clone(), next))
        );
        // In a ring of two the predecessor is also the successor: it already
        // knows it is alone.
        assert_eq!(l.handed_off(&prev, &prev).introduce, None);
    }

    #[test]
    fn failed_attempts_wait_longer_each_time_up_to_a_second_then_give_up() {
        let start = Instant::now();
        let mut l = leaver(start);
        let waits: Vec<Retry> = (0..6).map(|_| l.failed(start)).collect();
        let ms = |n| Retry::Wait(Duration::from_millis(n));
        assert_eq!(
            waits,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(l.failed(start + Duration::from_secs(5)), Retry::GiveUp);
    }
}
