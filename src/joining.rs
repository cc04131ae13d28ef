//! The joiner's side of a join, as a state machine: whom to ask to be taken
//! in next, how long to wait before asking again, when to fall back to the
//! registry's other members, when to start the ring alone, and when to give
//! up. `node`'s join loop sends the asks and feeds the answers back; nothing
//! here does I/O or reads a clock (time is passed in).
//!
//! The rules (the protocol is in `node::membership::join`):
//!
//! - a contact that refuses because the joiner does not fall in its arc
//!   names a neighbour closer to the joiner's predecessor: ask that one at
//!   once;
//! - an ID another live member holds ends the join;
//! - anything else (not up yet, still joining itself, unreachable, no answer
//!   in time) is retried after a delay that doubles up to a second, moving to
//!   the registry's other members, the closest predecessor first;
//! - with no other member alive and the registry naming no contact (the
//!   whole ring restarting), the joiner starts the ring alone;
//! - all of it within the join timeout.

use crate::ring::Member;
use std::time::{Duration, Instant};

/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// What the contact answered to "take me as your next".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Taken in: the joiner serves.
    Joined,
    /// The joiner's ID does not fall in the contact's arc; `towards` is the
    /// neighbour it names, if it names one.
    NotMine {
        /// Who to ask instead.
        towards: Option<Member>,
        /// The contact's words.
        reason: String,
    },
    /// Another live member holds the joiner's ID.
    IdTaken {
        /// Who holds it, in the contact's words.
        holder: String,
    },
    /// Anything else: not serving yet, unreachable, no answer in time.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// What the join loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask this member to take the joiner in.
    Ask(Member),
    /// Wait this long, then learn the registry's members if asked to
    /// ([`Joiner::waited`]).
    Wait(Duration),
    /// Learn the registry's live members, then [`Joiner::members`].
    LearnMembers,
    /// Ask the registry whether it names a contact, then
    /// [`Joiner::registry_contact`].
    AskRegistry,
    /// Start the ring alone.
    StartAlone,
    /// Joined.
    Done,
    /// Another live member holds the ID.
    IdTaken {
        /// Who holds it.
        holder: String,
    },
    /// The join timeout passed; the last failure.
    GiveUp {
        /// The last failure, with whom.
        last: String,
    },
}

/// The joiner's state.
#[derive(Debug, Clone)]
pub struct Joiner {
    me: Member,
    target: Member,
    delay: Duration,
    deadline: Instant,
    fallbacks: Vec<Member>,
    last: String,
}

impl Joiner {
    /// A join through `contact` by `me`, retrying from `retry_delay` until
    /// `timeout` after `now`.
    pub fn new(
        me: Member,
        contact: Member,
        retry_delay: Duration,
        timeout: Duration,
        now: Instant,
    ) -> Self {
        Self {
            me,
            target: contact,
            delay: retry_delay,
            deadline: now + timeout,
            fallbacks: Vec::new(),
            last: String::new(),
        }
    }

    /// The first step: ask the contact.
    pub fn start(&self) -> Step {
        Step::Ask(self.target.clone())
    }

    /// The member asked last.
    pub fn target(&self) -> &Member {
        &self.target
    }

    /// What the member asked last answered, at `now`.
    pub fn answered(&mut self, reply: Reply, now: Instant) -> Step {
        let reason = match reply {
            Reply::Joined => return Step::Done,
            Reply::IdTaken { holder } => return Step::IdTaken { holder },
            Reply::NotMine {
                towards: Some(towards),
                reason,
            } => {
                self.last = format!("{}: {reason}", self.target.addr);
                self.target = towards;
                return self.unless_late(Step::Ask(self.target.clone()), now);
            }
            Reply::NotMine {
                towards: None,
                reason,
            }
            | Reply::Failed { reason } => reason,
        };
        self.last = format!("{}: {reason}", self.target.addr);
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.unless_late(Step::Wait(wait), now)
    }

    /// The wait is over, at `now`: the next member to ask, or a request for
    /// the registry's members when none is left to fall back on.
    pub fn waited(&mut self, now: Instant) -> Step {
        let step = self.fall_back(Step::LearnMembers);
        self.unless_late(step, now)
    }

    /// The registry's live members (this node among them or not), at `now`.
    pub fn members(&mut self, members: Vec<Member>, now: Instant) -> Step {
        let me = self.me.id;
        let mut others: Vec<Member> = members.into_iter().filter(|m| m.id != me).collect();
        // Popped closest predecessor first: sorted farthest (counter-clockwise)
        // first.
        others.sort_by_key(|m| std::cmp::Reverse(m.id.distance_to(me)));
        self.fallbacks = others;
        // None left: the contact is gone and no other member is alive, a whole
        // ring restarting, unless the registry still names someone.
        let step = self.fall_back(Step::AskRegistry);
        self.unless_late(step, now)
    }

    /// Asks the next member to fall back on, or does `otherwise` if none is
    /// left.
    fn fall_back(&mut self, otherwise: Step) -> Step {
        match self.fallbacks.pop() {
            Some(next) => {
                self.target = next;
                Step::Ask(self.target.clone())
            }
            None => otherwise,
        }
    }

    /// Whether the registry names a contact for this node, at `now`.
    pub fn registry_contact(&mut self, names_one: bool, now: Instant) -> Step {
        if names_one {
            self.unless_late(Step::Ask(self.target.clone()), now)
        } else {
            Step::StartAlone
        }
    }

    fn unless_late(&self, step: Step, now: Instant) -> Step {
        if now >= self.deadline {
            Step::GiveUp {
                last: self.last.clone(),
            }
        } else {
            step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    fn m(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn joiner(now: Instant) -> Joiner {
        Joiner::new(
            m(50),
            m(10),
            Duration::from_millis(20),
            Duration::from_secs(30),
            now,
        )
    }

    fn failed() -> Reply {
        Reply::Failed {
            reason: "not serving".into(),
        }
    }

    #[test]
    fn a_refusal_that_names_a_closer_member_is_followed_at_once() {
        let now = Instant::now();
        let mut j = joiner(now);
        assert_eq!(j.start(), Step::Ask(m(10)));
        let refused = Reply::NotMine {
            towards: Some(m(40)),
            reason: "not in my arc".into(),
        };
        assert_eq!(j.answered(refused, now), Step::Ask(m(40)));
        assert_eq!(j.answered(Reply::Joined, now), Step::Done);
    }

    #[test]
    fn failures_back_off_doubling_up_to_a_second() {
        let now = Instant::now();
        let mut j = joiner(now);
        let waits: Vec<Step> = (0..8).map(|_| j.answered(failed(), now)).collect();
        let expected =
            [20, 40, 80, 160, 320, 640, 1000, 1000].map(|ms| Step::Wait(Duration::from_millis(ms)));
        assert_eq!(waits, expected);
    }

    #[test]
    fn after_a_wait_the_registry_s_members_are_tried_closest_predecessor_first() {
        let now = Instant::now();
        let mut j = joiner(now);
        j.answered(failed(), now);
        assert_eq!(j.waited(now), Step::LearnMembers);
        // 50 is this node; 40 precedes it most closely, then 10, then 90
        // (going counter-clockwise, 90 is the farthest).
        assert_eq!(
            j.members(vec![m(10), m(40), m(50), m(90)], now),
            Step::Ask(m(40))
        );
        j.answered(failed(), now);
        assert_eq!(j.waited(now), Step::Ask(m(10)));
        j.answered(failed(), now);
        assert_eq!(j.waited(now), Step::Ask(m(90)));
        j.answered(failed(), now);
        assert_eq!(j.waited(now), Step::LearnMembers);
    }

    #[test]
    fn with_no_other_member_and_no_contact_named_the_joiner_starts_the_ring() {
        let now = Instant::now();
        let mut j = joiner(now);
        j.answered(failed(), now);
        j.waited(now);
        assert_eq!(j.members(vec![m(50)], now), Step::AskRegistry);
        assert_eq!(j.registry_contact(false, now), Step::StartAlone);
    }

    #[test]
    fn a_registry_that_still_names_a_contact_keeps_the_joiner_asking() {
        let now = Instant::now();
        let mut j = joiner(now);
        j.answered(failed(), now);
        j.waited(now);
        j.members(Vec::new(), now);
        assert_eq!(j.registry_contact(true, now), Step::Ask(m(10)));
    }

    #[test]
    fn a_taken_id_ends_the_join() {
        let now = Instant::now();
        let mut j = joiner(now);
        let taken = Reply::IdTaken {
            holder: "http://other".into(),
        };
        assert_eq!(
            j.answered(taken, now),
            Step::IdTaken {
                holder: "http://other".into()
            }
        );
    }

    #[test]
    fn past_the_timeout_the_join_gives_up_with_the_last_failure() {
        let now = Instant::now();
        let mut j = joiner(now);
        let late = now + Duration::from_secs(30);
        assert_eq!(
            j.answered(failed(), late),
            Step::GiveUp {
                last: "http://n10: not serving".into()
            }
        );
    }
}
