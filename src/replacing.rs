//! Replacing a dead `next`, as a state machine: when to ask the registry for
//! candidates, when to take the dead node's arc over, how many quick probes
//! the new `next` gets before it is passed over in turn, and when to stop.
//! `node`'s maintenance loop carries the steps out (the registry call, the
//! view change and lease note under the view lock, the probes, the
//! introduction); nothing here does I/O or reads a clock.
//!
//! The rules (the protocol is in `node::membership::maintain`):
//!
//! - a round starts from the node's view: with no backups left, the registry's
//!   live members after this node (if there is a registry) are asked for and
//!   become the backups, unless the view changed meanwhile;
//! - then the dead node's arc is taken over: the first backup becomes `next`
//!   (the view does nothing if its `next` is no longer the dead node: someone
//!   else repaired it first, and so does this replacement);
//! - a node left alone is done;
//! - otherwise the new `next` is probed at once, up to `misses` times
//!   [`QUICK_PROBE_PAUSE`] apart (the detector's criterion, without the wait
//!   between probe intervals): if it answers, this node introduces itself to
//!   it; if not (two adjacent nodes died), it is the dead node of the next
//!   round;
//! - at most `successors + 1` rounds in all, whether their candidates come
//!   from the backups or from the registry.

use crate::ring::Member;
use std::time::Duration;

/// The pause between two quick probes of a newly promoted `next`.
pub const QUICK_PROBE_PAUSE: Duration = Duration::from_millis(50);

/// What the node does next for a replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the registry for its live members after this node, without
    /// `dead`, make them the backups if the view's `next` is still `dead`
    /// and it still has no backups, then call [`Replacement::asked`].
    AskRegistry {
        /// The node being replaced.
        dead: Member,
    },
    /// Take `dead`'s arc over if the view's `next` is still `dead` (promote
    /// the first backup, note the takeover for leases), then call
    /// [`Replacement::took_over`] with what the view became.
    TakeOver {
        /// The node being replaced.
        dead: Member,
    },
    /// Probe `next`, after `pause`, then call [`Replacement::probed`].
    Probe {
        /// The promoted `next`.
        next: Member,
        /// How long to wait first.
        pause: Duration,
    },
    /// Introduce this node to `next` as its previous neighbour; done.
    Introduce {
        /// The promoted `next`, alive.
        next: Member,
    },
    /// Nothing more to do.
    Done,
}

/// What taking the arc over did to the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenOver {
    /// The view's `next` was no longer the dead node: nothing was taken.
    NotNext,
    /// Taken: the node is now alone in its ring.
    Alone,
    /// Taken: `next` is the new successor.
    Next(Member),
}

/// A replacement of a dead `next` in progress.
#[derive(Debug)]
pub struct Replacement {
    dead: Member,
    rounds_left: usize,
    misses: u32,
    probes_left: u32,
}

impl Replacement {
    /// Replacing `dead`, passing over at most `successors` more dead nodes
    /// after it, each promoted `next` probed up to `misses` times.
    pub fn new(dead: Member, successors: usize, misses: u32) -> Self {
        Self {
            dead,
            rounds_left: successors + 1,
            misses: misses.max(1),
            probes_left: 0,
        }
    }

    /// A round's first step, given whether the view has backups left.
    pub fn round(&mut self, has_backups: bool) -> Step {
        if self.rounds_left == 0 {
            return Step::Done;
        }
        self.rounds_left -= 1;
        if has_backups {
            self.take_over()
        } else {
            Step::AskRegistry {
                dead: self.dead.clone(),
            }
        }
    }

    /// The registry was asked (whatever it answered).
    pub fn asked(&mut self) -> Step {
        self.take_over()
    }

    fn take_over(&self) -> Step {
        Step::TakeOver {
            dead: self.dead.clone(),
        }
    }

    /// What taking the arc over did.
    pub fn took_over(&mut self, taken: TakenOver) -> Step {
        match taken {
            TakenOver::NotNext | TakenOver::Alone => Step::Done,
            TakenOver::Next(next) => {
                self.probes_left = self.misses - 1;
                Step::Probe {
                    next,
                    pause: Duration::ZERO,
                }
            }
        }
    }

    /// `next` answered the probe (`alive`) or not: introduce this node to
    /// it, probe it again, or, once it has failed every quick probe, start
    /// the next round with it as the dead node (given whether the view has
    /// backups left).
    pub fn probed(&mut self, next: Member, alive: bool, has_backups: bool) -> Step {
        if alive {
            return Step::Introduce { next };
        }
        if self.probes_left > 0 {
            self.probes_left -= 1;
            return Step::Probe {
                next,
                pause: QUICK_PROBE_PAUSE,
            };
        }
        self.dead = next;
        self.round(has_backups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn probe(next: &Member, pause: Duration) -> Step {
        Step::Probe {
            next: next.clone(),
            pause,
        }
    }

    #[test]
    fn a_dead_next_is_passed_over_to_the_first_backup_which_is_introduced_to() {
        let (dead, backup) = (member(5), member(9));
        let mut r = Replacement::new(dead.clone(), 3, 3);
        assert_eq!(r.round(true), Step::TakeOver { dead });
        assert_eq!(
            r.took_over(TakenOver::Next(backup.clone())),
            probe(&backup, Duration::ZERO),
            "probed at once"
        );
        assert_eq!(
            r.probed(backup.clone(), true, true),
            Step::Introduce { next: backup }
        );
    }

    #[test]
    fn with_no_backups_left_the_registry_is_asked_first() {
        let dead = member(5);
        let mut r = Replacement::new(dead.clone(), 3, 3);
        assert_eq!(r.round(false), Step::AskRegistry { dead: dead.clone() });
        assert_eq!(r.asked(), Step::TakeOver { dead });
    }

    #[test]
    fn a_repair_made_first_by_someone_else_or_a_node_left_alone_ends_it() {
        let mut r = Replacement::new(member(5), 3, 3);
        r.round(true);
        assert_eq!(r.took_over(TakenOver::NotNext), Step::Done);
        let mut r = Replacement::new(member(5), 3, 3);
        r.round(true);
        assert_eq!(r.took_over(TakenOver::Alone), Step::Done);
    }

    #[test]
    fn a_promoted_next_that_fails_its_quick_probes_is_the_next_dead_node() {
        let (first, second, third) = (member(5), member(9), member(12));
        let mut r = Replacement::new(first, 3, 3);
        r.round(true);
        r.took_over(TakenOver::Next(second.clone()));
        // Three probes in all: the first at once, two more 50 ms apart.
        for _ in 0..2 {
            assert_eq!(
                r.probed(second.clone(), false, true),
                probe(&second, QUICK_PROBE_PAUSE)
            );
        }
        assert_eq!(
            r.probed(second.clone(), false, true),
            Step::TakeOver {
                dead: second.clone()
            }
        );
        assert_eq!(
            r.took_over(TakenOver::Next(third.clone())),
            probe(&third, Duration::ZERO)
        );
        // Once the backups are used up, the registry is asked.
        for _ in 0..2 {
            r.probed(third.clone(), false, false);
        }
        assert_eq!(
            r.probed(third.clone(), false, false),
            Step::AskRegistry { dead: third }
        );
    }

    #[test]
    fn it_stops_after_one_round_per_successor_and_one_more() {
        let mut r = Replacement::new(member(1), 2, 1);
        let mut rounds = 0;
        let mut step = r.round(true);
        while let Step::TakeOver { .. } = step {
            rounds += 1;
            let next = member(10 + rounds);
            r.took_over(TakenOver::Next(next.clone()));
            step = r.probed(next, false, true);
        }
        assert_eq!(step, Step::Done);
        assert_eq!(rounds, 3);
    }
}
