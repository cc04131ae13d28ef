//! Relearning the whole membership by walking the ring along successor lists.
//!
//! Every node already knows a successor list (`next` and the nodes after it,
//! kept fresh by its probes). Asking the farthest member of that list for *its*
//! successor list and repeating goes round the ring in about `N / r` questions
//! for a list of length `r`, and sees every member on the way: each answer names
//! the next `r` nodes. The sweep is over when an answer's list comes back round
//! to this node.
//!
//! A member that does not answer (dead, or not serving) is left out, and the
//! sweep asks the next farthest member it has heard of instead; if none is left,
//! the sweep ends *incomplete* and its caller only adds what it saw rather than
//! replace the table with a partial ring. Each question goes strictly further
//! clockwise than the last answer, so a sweep always ends, even over
//! inconsistent or hostile answers, and `limit` bounds its length.

use crate::ring::{Member, Position};
use std::collections::{BTreeMap, BTreeSet};

/// What a member answered when asked during a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReply {
    /// The member that answered, as it names itself.
    pub node: Member,
    /// Whether it serves its arc (joining, leaving and departed members are not
    /// routed to, and their successor lists are not trusted).
    pub serving: bool,
    /// Its successor list, nearest first.
    pub successors: Vec<Member>,
}

/// What the sweep wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask this member for its successor list.
    Ask(Member),
    /// The sweep is over.
    Done {
        /// Every member seen, in ring order, this node excluded.
        members: Vec<Member>,
        /// Whether the sweep went all the way round: then `members` is the whole
        /// ring as far as its answers knew it.
        complete: bool,
    },
}

/// A walk round the ring in progress.
#[derive(Debug, Clone)]
pub struct Sweep {
    me: Member,
    /// Members seen so far, by ID.
    seen: BTreeMap<Position, Member>,
    /// Members that did not answer: left out even when later lists name them.
    failed: BTreeSet<Position>,
    /// Clockwise distance from this node to the last member that answered.
    reached: u64,
    /// Members heard of beyond `reached` and not asked yet, nearest first.
    candidates: Vec<Member>,
    /// The member asked and not answered yet.
    asking: Option<Member>,
    asked: usize,
    limit: usize,
}

impl Sweep {
    /// Starts a sweep from this node's own successor list, asking at most
    /// `limit` members. A node alone is done at once.
    pub fn start(me: Member, successors: &[Member], limit: usize) -> (Self, Step) {
        let mut sweep = Self {
            me,
            seen: BTreeMap::new(),
            failed: BTreeSet::new(),
            reached: 0,
            candidates: Vec::new(),
            asking: None,
            asked: 0,
            limit,
        };
        let step = match sweep.learn(successors) {
            true => sweep.done(true),
            false => sweep.ask_farthest(),
        };
        (sweep, step)
    }

    /// The asked member answered.
    pub fn on_reply(&mut self, reply: SweepReply) -> Step {
        let Some(asked) = self.asking.take() else {
            return self.done(false);
        };
        if reply.node != asked || !reply.serving {
            self.asking = Some(asked);
            return self.on_failure();
        }
        self.reached = self.distance(asked.id);
        self.seen.insert(asked.id, asked);
        match self.learn(&reply.successors) {
            true => self.done(true),
            false => self.ask_farthest(),
        }
    }

    /// The asked member did not answer (or answered that it does not serve).
    pub fn on_failure(&mut self) -> Step {
        if let Some(failed) = self.asking.take() {
            self.seen.remove(&failed.id);
            self.failed.insert(failed.id);
        }
        self.ask_farthest()
    }

    fn distance(&self, id: Position) -> u64 {
        self.me.id.distance_to(id)
    }

    /// Takes in a successor list; returns whether it came round to this node.
    fn learn(&mut self, successors: &[Member]) -> bool {
        let mut ahead: Vec<Member> = Vec::new();
        let mut wrapped = false;
        for s in successors {
            let d = self.distance(s.id);
            if s.id == self.me.id || d <= self.reached {
                wrapped = true;
                break;
            }
            if !self.failed.contains(&s.id) {
                ahead.push(s.clone());
            }
        }
        ahead.sort_by_key(|s| self.distance(s.id));
        ahead.dedup_by_key(|s| s.id);
        for s in &ahead {
            self.seen.entry(s.id).or_insert_with(|| s.clone());
        }
        self.candidates = ahead;
        wrapped
    }

    fn ask_farthest(&mut self) -> Step {
        if self.asked >= self.limit {
            return self.done(false);
        }
        match self.candidates.pop() {
            Some(next) => {
                self.asked += 1;
                self.asking = Some(next.clone());
                Step::Ask(next)
            }
            None => self.done(false),
        }
    }

    fn done(&mut self, complete: bool) -> Step {
        self.candidates.clear();
        Step::Done {
            members: self.seen.values().cloned().collect(),
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    /// The successor list of `id` in a ring of `ids` (sorted), of length `r`.
    fn successors(ids: &[u64], id: u64, r: usize) -> Vec<Member> {
        let at = ids.iter().position(|i| *i == id).unwrap();
        (1..=r.min(ids.len() - 1))
            .map(|k| m(ids[(at + k) % ids.len()]))
            .collect()
    }

    /// Runs a sweep from `from` over a ring where `dead` never answer.
    fn run(ids: &[u64], from: u64, r: usize, dead: &BTreeSet<u64>) -> (Vec<u64>, bool, usize) {
        let (mut sweep, mut step) = Sweep::start(m(from), &successors(ids, from, r), 1000);
        let mut questions = 0;
        loop {
            match step {
                Step::Ask(who) => {
                    questions += 1;
                    step = if dead.contains(&who.id.0) {
                        sweep.on_failure()
                    } else {
                        sweep.on_reply(SweepReply {
                            node: who.clone(),
                            serving: true,
                            successors: successors(ids, who.id.0, r),
                        })
                    };
                }
                Step::Done { members, complete } => {
                    return (
                        members.iter().map(|x| x.id.0).collect(),
                        complete,
                        questions,
                    );
                }
            }
        }
    }

    #[test]
    fn a_node_alone_is_done_at_once() {
        // Alone, a node is its own next: its successor list names itself.
        let (_, step) = Sweep::start(m(1), &[m(1)], 10);
        assert_eq!(
            step,
            Step::Done {
                members: vec![],
                complete: true
            }
        );
    }

    #[test]
    fn a_sweep_sees_every_member_in_about_n_over_r_questions() {
        let ids: Vec<u64> = (1..=32).map(|i| i * 1000).collect();
        let (members, complete, questions) = run(&ids, 5000, 3, &BTreeSet::new());
        assert!(complete);
        assert_eq!(members.len(), 31);
        assert!(!members.contains(&5000));
        assert_eq!(questions, 10, "31 others seen 3 at a time");
    }

    #[test]
    fn a_dead_member_is_passed_over_by_asking_a_nearer_one() {
        let ids: Vec<u64> = (1..=12).collect();
        let dead = BTreeSet::from([4]);
        let (members, complete, _) = run(&ids, 1, 3, &dead);
        assert!(complete);
        assert!(!members.contains(&4));
        assert_eq!(members.len(), 10);
    }

    #[test]
    fn a_sweep_cut_short_says_it_is_incomplete() {
        let ids: Vec<u64> = (1..=12).collect();
        // Every member of 1's successor list is dead: nothing further is known.
        let dead = BTreeSet::from([2, 3, 4]);
        let (members, complete, _) = run(&ids, 1, 3, &dead);
        assert!(!complete);
        assert!(members.is_empty());
    }

    #[test]
    fn an_answer_from_someone_else_counts_as_a_failure() {
        let (mut sweep, step) = Sweep::start(m(1), &[m(2), m(3)], 10);
        assert_eq!(step, Step::Ask(m(3)));
        let step = sweep.on_reply(SweepReply {
            node: Member::new(Position(3), "http://elsewhere"),
            serving: true,
            successors: vec![m(1)],
        });
        assert_eq!(step, Step::Ask(m(2)));
    }

    proptest! {
        /// Over any ring and any set of dead members, a sweep ends within the
        /// ring's size of questions and names only members it was told of;
        /// without deaths it goes all the way round and sees every member.
        #[test]
        fn sweeps_end_and_see_the_ring(
            ids in proptest::collection::btree_set(any::<u64>(), 2..60),
            r in 1usize..5,
            dead_mask in any::<u64>(),
            start in any::<proptest::sample::Index>(),
        ) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let from = ids[start.index(ids.len())];
            let dead: BTreeSet<u64> = ids.iter().enumerate()
                .filter(|(i, id)| dead_mask >> (i % 64) & 1 == 1 && **id != from)
                .map(|(_, id)| *id)
                .collect();
            let (members, _, questions) = run(&ids, from, r, &dead);
            prop_assert!(questions <= ids.len());
            prop_assert!(members.iter().all(|x| ids.contains(x) && *x != from));
            let (all, complete, _) = run(&ids, from, r, &BTreeSet::new());
            prop_assert!(complete);
            prop_assert_eq!(all.len(), ids.len() - 1);
        }
    }
}
