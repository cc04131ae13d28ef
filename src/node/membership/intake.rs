//! The receiving side of a hand-off, as a state machine with no I/O: whether
//! the offer is refused, what each message's entries are for, and what a
//! complete stream takes over. `handoff::accept_handoff` reads the stream
//! (each message within the request timeout; `rpc::hand_off` converts the
//! wire's messages and checks their entries), stores what a joiner is given
//! as it comes, and carries the result out; nothing here reads a clock,
//! touches the store or builds a wire status.
//!
//! The rules (the module docs of `handoff` say why):
//!
//! - an offer is refused before any entry is taken if the receiver would
//!   refuse it at the end: a join goes only to a joining node, a leave only
//!   from the receiver's serving `next`, a merge only to a serving node, and
//!   never from the receiver itself;
//! - a joiner stores each message's entries as they come (it serves nothing
//!   yet), so neither side holds a whole arc in memory;
//! - a serving receiver holds the entries until the last message, within a
//!   byte budget (`--max-peer-stream-mb`, counted as on the wire), and takes
//!   them in one step;
//! - a stream that ends without its last message takes nothing.

use super::handoff::HandOffHeader;
use crate::metrics::HandOff;
use crate::node::rpc::entries::wire_size;
use crate::node::view::{NodeState, View};
use crate::ring::Member;
use crate::store::Entry;

/// Why a hand-off is refused, or fails before anything is taken over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::node) enum IntakeError {
    /// The offer names the receiver as its sender.
    #[error("the hand-off names this node as its sender; a node hands nothing to itself")]
    FromItself,
    /// A join offered to a node that already serves.
    #[error("this node is already part of the ring")]
    AlreadyInRing,
    /// A merge offered to a node that does not serve.
    #[error("this node is not serving")]
    NotServing,
    /// A leave from a node that is not the receiver's serving `next`.
    #[error(
        "{leaver} is not my next neighbour (mine is {next}); hand your arc to your current previous neighbour"
    )]
    NotMyNext {
        /// The leaver's address.
        leaver: String,
        /// The receiver's `next`.
        next: String,
    },
    /// The entries held would pass the byte budget.
    #[error(
        "the hand-off carries more than {0} bytes of entries, the most this node holds from one stream (--max-peer-stream-mb); nothing was taken over"
    )]
    TooBig(usize),
    /// The stream ended before its last message.
    #[error("the hand-off ended before its last message; nothing was taken over")]
    CutShort,
}

/// What a complete hand-off takes over.
#[derive(Debug)]
pub(in crate::node) enum Taken {
    /// A joiner's arc (its entries stored as they came): link in and serve.
    Join(HandOffHeader),
    /// The arc of the leaving `next`, up to the leaver's own `next`.
    Leave {
        /// The leaver.
        leaver: Member,
        /// Its `next`, the receiver's new one.
        next: Member,
        /// The arc's entries.
        entries: Vec<Entry>,
    },
    /// Entries of the receiver's own arc, held by `from`: merged newest-wins.
    Merge {
        /// The node that held them.
        from: Member,
        /// The entries.
        entries: Vec<Entry>,
    },
}

impl Taken {
    /// The hand-off's kind, as the metrics count it.
    pub(in crate::node) fn kind(&self) -> HandOff {
        match self {
            Self::Join(_) => HandOff::Join,
            Self::Leave { .. } => HandOff::Leave,
            Self::Merge { .. } => HandOff::Merge,
        }
    }
}

/// One hand-off being received.
#[derive(Debug)]
pub(in crate::node) struct Intake {
    header: HandOffHeader,
    /// A join: entries are stored as they come, not held.
    joining: bool,
    held: Vec<Entry>,
    held_bytes: usize,
    max_bytes: usize,
    /// Entries received so far.
    count: u64,
    /// Whether the last message so far said it was the last.
    complete: bool,
}

impl Intake {
    /// The offer of `header` to a node whose view is `view`, holding at most
    /// `max_bytes` of entries: refused, or taken in.
    pub(in crate::node) fn offer(
        header: HandOffHeader,
        view: &View,
        max_bytes: usize,
    ) -> Result<Self, IntakeError> {
        refused(view, &header).map_or(Ok(()), Err)?;
        Ok(Self {
            joining: header.prev.is_some() && !header.merge,
            header,
            held: Vec::new(),
            held_bytes: 0,
            max_bytes,
            count: 0,
            complete: false,
        })
    }

    /// A message's `entries` (the first message's included), `last` if it
    /// says it is the last: what a joiner stores now, or nothing (the entries
    /// are held until the end).
    pub(in crate::node) fn message(
        &mut self,
        entries: Vec<Entry>,
        last: bool,
    ) -> Result<Vec<Entry>, IntakeError> {
        self.count += entries.len() as u64;
        self.complete = last;
        if self.joining {
            return Ok(entries);
        }
        self.held_bytes = entries
            .iter()
            .map(wire_size)
            .fold(self.held_bytes, usize::saturating_add);
        if self.held_bytes > self.max_bytes {
            return Err(IntakeError::TooBig(self.max_bytes));
        }
        self.held.extend(entries);
        Ok(Vec::new())
    }

    /// The stream ended: what it takes over, and how many entries it carried.
    /// A stream cut short (its sender failed half-way) takes nothing: taking
    /// it would serve or merge an arc missing entries.
    pub(in crate::node) fn end(self) -> Result<(Taken, u64), IntakeError> {
        if !self.complete {
            return Err(IntakeError::CutShort);
        }
        let Self {
            header,
            held: entries,
            count,
            ..
        } = self;
        let taken = match &header.prev {
            _ if header.merge => Taken::Merge {
                from: header.from,
                entries,
            },
            Some(_) => Taken::Join(header),
            None => Taken::Leave {
                leaver: header.from,
                next: header.next,
                entries,
            },
        };
        Ok((taken, count))
    }
}

/// Why a node with `view` would refuse the hand-off `header` offers, if it
/// would: checked before any entry is taken, and again (by the step that
/// takes the entries) at the end.
fn refused(view: &View, header: &HandOffHeader) -> Option<IntakeError> {
    if header.from.id == view.me.id {
        return Some(IntakeError::FromItself);
    }
    match (header.merge, &header.prev) {
        (false, Some(_)) if view.state != NodeState::Joining => Some(IntakeError::AlreadyInRing),
        (false, None) => leave_refused(view, &header.from),
        (true, _) if view.state != NodeState::Serving => Some(IntakeError::NotServing),
        _ => None,
    }
}

/// Why a node with `view` would refuse the arc of `leaver`, if it would:
/// only its serving next neighbour, another node, hands it an arc.
pub(in crate::node) fn leave_refused(view: &View, leaver: &Member) -> Option<IntakeError> {
    if view.state != NodeState::Serving || view.next.id != leaver.id || leaver.id == view.me.id {
        return Some(IntakeError::NotMyNext {
            leaver: leaver.addr.clone(),
            next: view.next.addr.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::rpc::entries::test_entry;
    use crate::ring::Position;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn entry(i: u8) -> Entry {
        test_entry(i, 10)
    }

    fn header(from: u64, prev: Option<u64>, next: u64, merge: bool) -> HandOffHeader {
        HandOffHeader {
            from: member(from),
            prev: prev.map(member),
            next: member(next),
            merge,
            backups: Vec::new(),
            predecessors: Vec::new(),
        }
    }

    /// Node 20, serving, between 10 and 30.
    fn serving() -> View {
        let mut view = View::first(member(20));
        view.prev = member(10);
        view.next = member(30);
        view
    }

    #[test]
    fn a_joiner_stores_each_message_as_it_comes_and_takes_the_arc_at_the_last() {
        let mut intake = Intake::offer(
            header(10, Some(10), 30, false),
            &View::joining(member(20)),
            0,
        )
        .unwrap();
        // Nothing is held, so no budget applies.
        assert_eq!(
            intake.message(vec![entry(21), entry(22)], false).unwrap(),
            vec![entry(21), entry(22)]
        );
        assert_eq!(
            intake.message(vec![entry(23)], true).unwrap(),
            vec![entry(23)]
        );
        let (taken, count) = intake.end().unwrap();
        assert!(matches!(&taken, Taken::Join(h) if h.next == member(30)));
        assert_eq!((taken.kind(), count), (HandOff::Join, 3));
    }

    #[test]
    fn a_leaving_next_s_arc_is_held_until_the_last_message_then_taken_whole() {
        let mut intake = Intake::offer(header(30, None, 40, false), &serving(), 1 << 20).unwrap();
        assert!(intake.message(vec![entry(31)], false).unwrap().is_empty());
        assert!(intake.message(vec![entry(32)], true).unwrap().is_empty());
        match intake.end().unwrap() {
            (
                Taken::Leave {
                    leaver,
                    next,
                    entries,
                },
                2,
            ) => {
                assert_eq!((leaver, next), (member(30), member(40)));
                assert_eq!(entries, vec![entry(31), entry(32)]);
            }
            other => panic!("not a leave: {other:?}"),
        }
    }

    #[test]
    fn entries_past_the_byte_budget_refuse_the_stream() {
        let budget = wire_size(&entry(31)) * 2;
        let mut intake = Intake::offer(header(30, None, 40, false), &serving(), budget).unwrap();
        intake.message(vec![entry(31), entry(32)], false).unwrap();
        assert_eq!(
            intake.message(vec![entry(33)], true),
            Err(IntakeError::TooBig(budget))
        );
    }

    #[test]
    fn a_stream_that_ends_before_its_last_message_takes_nothing() {
        let mut intake = Intake::offer(header(30, None, 40, false), &serving(), 1 << 20).unwrap();
        intake.message(vec![entry(31)], false).unwrap();
        assert_eq!(intake.end().unwrap_err(), IntakeError::CutShort);
        let mut join = Intake::offer(
            header(10, Some(10), 30, false),
            &View::joining(member(20)),
            0,
        )
        .unwrap();
        join.message(vec![entry(21)], false).unwrap();
        assert_eq!(join.end().unwrap_err(), IntakeError::CutShort);
    }

    #[test]
    fn offers_the_receiver_would_refuse_at_the_end_are_refused_at_once() {
        let offer = |h, view: &View| Intake::offer(h, view, 1 << 20).map(|_| ()).unwrap_err();
        assert_eq!(
            offer(header(20, None, 40, false), &serving()),
            IntakeError::FromItself
        );
        assert_eq!(
            offer(header(10, Some(10), 30, false), &serving()),
            IntakeError::AlreadyInRing
        );
        assert_eq!(
            offer(header(40, None, 50, false), &serving()),
            IntakeError::NotMyNext {
                leaver: "http://n40".into(),
                next: "http://n30".into()
            }
        );
        assert_eq!(
            offer(header(30, None, 40, true), &View::joining(member(20))),
            IntakeError::NotServing
        );
        // A merge to a serving node is taken, whoever sends it.
        let merge = Intake::offer(header(40, None, 50, true), &serving(), 1 << 20).unwrap();
        assert!(matches!(merge.end(), Err(IntakeError::CutShort)));
    }
}
