//! A replicated write's acknowledgement, as a state machine: which replicas
//! still have to take the write, when it counts as acknowledged, and which
//! replica's copy of the key is newer than it. The owner's replication loop
//! (`node::replication::replicate`) sends the write and feeds the answers
//! back; nothing here does I/O or reads a clock.
//!
//! The rule (see "Replication" in docs/protocol.md):
//!
//! - a write is acknowledged once enough copies are durable: the owner's and
//!   `needed` replicas' of the owner's *current* replica set (a replica that
//!   left the set no longer counts; one that joined it must take the write);
//! - with leases, the node that would take the owner's arc over (its `prev`,
//!   which grants its lease) must be among them, so that an acknowledged
//!   write is there when it does; an owner that knows no `prev` acknowledges
//!   nothing until one links to it, unless it is alone and may serve alone;
//! - a replica that fails is tried again when the view changes, until the
//!   request's deadline: then the write fails, saying how many copies it got;
//! - a replica that holds the key at a newer version answers with it: the
//!   newest such copy is the write's result (the owner decides what to do).

use crate::ring::{Member, Position};
use crate::store::Entry;

/// Who must hold a write before it is acknowledged, besides the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// No leases: the count alone decides.
    Unchecked,
    /// This node takes the arc over if the owner dies: it must hold the write.
    By(Position),
    /// The owner knows no `prev`: it acknowledges only if it is alone in its
    /// ring and may serve alone (it did not get there by declaring a
    /// neighbour dead).
    NoPrev {
        /// Whether it is alone and may serve alone.
        may_serve_alone: bool,
    },
}

/// What the owner does in a round of sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// The write is acknowledged; the newest copy a replica held, if newer.
    Done(Option<Entry>),
    /// Send the write to these replicas (those of the set that do not hold it
    /// yet) and report each answer.
    Send(Vec<Member>),
}

/// Why a write was not acknowledged by its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// Copies durable, the owner's included.
    pub copies: usize,
    /// Copies needed, the owner's included.
    pub needed: usize,
    /// The last replica failure.
    pub reason: String,
}

/// One write's acknowledgement (see the module docs).
#[derive(Debug, Clone)]
pub struct WriteAcks {
    acked: Vec<Position>,
    newer: Option<Entry>,
    last_error: String,
    /// Replicas of the current set that hold the write, and how many must.
    have: usize,
    needed: usize,
}

impl Default for WriteAcks {
    fn default() -> Self {
        Self {
            acked: Vec::new(),
            newer: None,
            last_error: String::from("none"),
            have: 0,
            needed: 0,
        }
    }
}

impl WriteAcks {
    /// A write no replica holds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a round with the owner's current `replicas`, of which `needed`
    /// must hold the write: done, or whom to send it to. `takeover` is asked
    /// only once the count is reached (it reads the owner's view and leases).
    pub fn round(
        &mut self,
        replicas: &[Member],
        needed: usize,
        takeover: impl FnOnce() -> Takeover,
    ) -> Round {
        self.needed = needed;
        self.have = replicas
            .iter()
            .filter(|r| self.acked.contains(&r.id))
            .count();
        if self.done(takeover) {
            return Round::Done(self.newer.clone());
        }
        Round::Send(
            replicas
                .iter()
                .filter(|r| !self.acked.contains(&r.id))
                .cloned()
                .collect(),
        )
    }

    /// `replica` (one the round sent to) holds the write durably; `copies` are
    /// its copies of the key newer than the write. Whether the write is now
    /// acknowledged (the round's other calls need not be waited for).
    pub fn acked(
        &mut self,
        replica: Position,
        copies: Vec<Entry>,
        takeover: impl FnOnce() -> Takeover,
    ) -> bool {
        if !self.acked.contains(&replica) {
            self.acked.push(replica);
            self.have += 1;
        }
        for copy in copies {
            if self.newer.as_ref().is_none_or(|n| n.version < copy.version) {
                self.newer = Some(copy);
            }
        }
        self.done(takeover)
    }

    /// A replica of the round failed to take the write.
    pub fn failed(&mut self, reason: impl Into<String>) {
        self.last_error = reason.into();
    }

    /// The newest copy a replica held, if newer than the write.
    pub fn newer(&self) -> Option<&Entry> {
        self.newer.as_ref()
    }

    /// The write's state when its deadline passes unacknowledged.
    pub fn incomplete(&self) -> Incomplete {
        Incomplete {
            copies: self.have + 1,
            needed: self.needed + 1,
            reason: self.last_error.clone(),
        }
    }

    fn done(&self, takeover: impl FnOnce() -> Takeover) -> bool {
        self.have >= self.needed
            && match takeover() {
                Takeover::Unchecked => true,
                Takeover::By(prev) => self.acked.contains(&prev),
                Takeover::NoPrev { may_serve_alone } => may_serve_alone,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn copy(micros: u64) -> Entry {
        Entry {
            position: Position(9),
            key: b"k".to_vec(),
            value: Some(micros.to_string().into_bytes()),
            version: Version { micros, node: 1 },
            expires: None,
        }
    }

    fn sent(round: Round) -> Vec<u64> {
        match round {
            Round::Send(to) => to.iter().map(|m| m.id.0).collect(),
            Round::Done(_) => panic!("done before anything was sent"),
        }
    }

    #[test]
    fn a_write_is_acknowledged_once_the_needed_replicas_hold_it() {
        let mut acks = WriteAcks::new();
        let set = [member(1), member(2)];
        assert_eq!(sent(acks.round(&set, 2, || Takeover::Unchecked)), [1, 2]);
        assert!(!acks.acked(Position(1), vec![], || Takeover::Unchecked));
        assert!(acks.acked(Position(2), vec![], || Takeover::Unchecked));
    }

    #[test]
    fn a_failed_replica_is_sent_the_write_again_in_the_next_round_and_alone() {
        let mut acks = WriteAcks::new();
        let set = [member(1), member(2)];
        acks.round(&set, 2, || Takeover::Unchecked);
        acks.acked(Position(1), vec![], || Takeover::Unchecked);
        acks.failed("n2 did not answer");
        assert_eq!(sent(acks.round(&set, 2, || Takeover::Unchecked)), [2]);
        assert_eq!(
            acks.incomplete(),
            Incomplete {
                copies: 2,
                needed: 3,
                reason: "n2 did not answer".into()
            }
        );
    }

    #[test]
    fn only_replicas_of_the_current_set_count() {
        let mut acks = WriteAcks::new();
        acks.round(&[member(1), member(2)], 2, || Takeover::Unchecked);
        acks.acked(Position(1), vec![], || Takeover::Unchecked);
        // Replica 1 left the set (repair replaced it by 3): 3 must take it too.
        let round = acks.round(&[member(2), member(3)], 2, || Takeover::Unchecked);
        assert_eq!(sent(round), [2, 3]);
        assert_eq!(acks.incomplete().copies, 1);
    }

    #[test]
    fn with_leases_the_node_that_would_take_over_must_hold_the_write() {
        let mut acks = WriteAcks::new();
        let set = [member(1), member(2)];
        let takeover = Takeover::By(Position(1));
        // A quorum of one, but the prev (1) has not answered.
        acks.round(&set, 1, || takeover);
        assert!(!acks.acked(Position(2), vec![], || takeover));
        assert!(acks.acked(Position(1), vec![], || takeover));
        // Already held by both: done at the start of the next write's round.
        assert_eq!(acks.round(&set, 1, || takeover), Round::Done(None));
    }

    #[test]
    fn an_owner_without_a_prev_acknowledges_only_if_it_may_serve_alone() {
        let mut acks = WriteAcks::new();
        let alone = |may_serve_alone| Takeover::NoPrev { may_serve_alone };
        assert_eq!(acks.round(&[], 0, || alone(true)), Round::Done(None));
        assert_eq!(acks.round(&[], 0, || alone(false)), Round::Send(vec![]));
    }

    #[test]
    fn the_newest_copy_a_replica_held_is_the_result() {
        let mut acks = WriteAcks::new();
        let set = [member(1), member(2)];
        acks.round(&set, 2, || Takeover::Unchecked);
        acks.acked(Position(1), vec![copy(5)], || Takeover::Unchecked);
        acks.acked(Position(2), vec![copy(7), copy(6)], || Takeover::Unchecked);
        assert_eq!(acks.newer(), Some(&copy(7)));
        assert_eq!(
            acks.round(&set, 2, || Takeover::Unchecked),
            Round::Done(Some(copy(7)))
        );
    }

    #[test]
    fn an_answer_counted_twice_counts_once() {
        let mut acks = WriteAcks::new();
        let set = [member(1), member(2)];
        acks.round(&set, 2, || Takeover::Unchecked);
        acks.acked(Position(1), vec![], || Takeover::Unchecked);
        assert!(!acks.acked(Position(1), vec![], || Takeover::Unchecked));
    }
}
