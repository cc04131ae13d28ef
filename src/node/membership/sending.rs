//! The sending side of a join's hand-off, as a state machine with no I/O: in
//! which order the contact sends the arc, and when it fences it.
//! `migration::produce_join_stream` reads the store, sends each message, sets
//! the fence and asks the leases; nothing here does.
//!
//! The order (the module docs of `migration` say why):
//!
//! 1. the header (the joiner's neighbours);
//! 2. a snapshot of the arc, unfenced, one piece at a time, so that no read
//!    holds the store's lock for the whole arc;
//! 3. the fence goes up (queries into the arc wait from here), and the
//!    contact checks that it may still hand the arc over
//!    ([`super::admission::Admission::may_switch_over`]): if not, nothing
//!    more is sent;
//! 4. the writes recorded into the arc while the snapshot streamed;
//! 5. the last message: only a stream that ends with it is taken.
//!
//! A stream the joiner ends early (its answer says why) stops wherever it is.

use crate::ring::Arc as RingArc;
use crate::store::{bucket_count, buckets_arc};

/// How many pieces the snapshot of a moving arc is read in: each read holds
/// the store's lock for one piece, not for the arc.
pub(in crate::node) const SNAPSHOT_PIECES: usize = 256;

/// What the contact does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::node) enum Stage {
    /// Send the hand-off's first message.
    Header,
    /// Read this piece of the arc and send its entries.
    Piece(RingArc),
    /// Fence the arc, then report whether the switch-over may go on
    /// ([`Sending::fenced`]).
    Fence,
    /// Send the writes recorded into the arc meanwhile.
    Recorded,
    /// Send the last message.
    Last,
    /// Everything is sent: wait for the joiner's answer (and stays so).
    Done,
    /// The switch-over may not go on: fail the hand-off (the caller lifts
    /// the fence, the joiner retries; and stays so).
    Refused,
}

/// One join hand-off being sent.
#[derive(Debug)]
pub(in crate::node) struct Sending {
    arc: RingArc,
    pieces: usize,
    /// What comes next.
    at: Stage,
    /// The next piece of the snapshot.
    piece: usize,
    /// The last step was the fence, not answered yet.
    fencing: bool,
}

impl Sending {
    /// A hand-off of `arc`.
    pub(in crate::node) fn new(arc: RingArc) -> Self {
        Self {
            arc,
            pieces: bucket_count(arc, SNAPSHOT_PIECES),
            at: Stage::Header,
            piece: 0,
            fencing: false,
        }
    }

    /// The next step; once it is done, the one after. A [`Stage::Fence`] is
    /// answered with [`Sending::fenced`]; unanswered, the next step is
    /// [`Stage::Refused`].
    pub(in crate::node) fn step(&mut self) -> Stage {
        let now = self.at;
        self.at = match now {
            Stage::Header | Stage::Piece(_) if self.piece < self.pieces => {
                let piece = buckets_arc(self.arc, self.piece..self.piece + 1, self.pieces);
                self.piece += 1;
                Stage::Piece(piece)
            }
            Stage::Header | Stage::Piece(_) => Stage::Fence,
            // Until `fenced` says the switch-over may go on.
            Stage::Fence | Stage::Refused => Stage::Refused,
            Stage::Recorded => Stage::Last,
            Stage::Last | Stage::Done => Stage::Done,
        };
        self.fencing = now == Stage::Fence;
        now
    }

    /// The fence is up (the last step was [`Stage::Fence`]; otherwise this
    /// changes nothing); `may_switch_over`: the contact may still hand the
    /// arc over. The next step is the recorded writes, or the refusal.
    pub(in crate::node) fn fenced(&mut self, may_switch_over: bool) {
        if self.fencing && may_switch_over {
            self.at = Stage::Recorded;
        }
        self.fencing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    /// The steps of a whole hand-off of `arc`, the fence answered with
    /// `may_switch_over`.
    fn steps(arc: RingArc, may_switch_over: bool) -> Vec<Stage> {
        let mut sending = Sending::new(arc);
        let mut steps = Vec::new();
        loop {
            let step = sending.step();
            steps.push(step);
            match step {
                Stage::Fence => sending.fenced(may_switch_over),
                Stage::Done | Stage::Refused => return steps,
                _ => {}
            }
            assert!(steps.len() < 10 * SNAPSHOT_PIECES, "no end: {steps:?}");
        }
    }

    #[test]
    fn the_header_goes_first_then_the_snapshot_unfenced_then_the_fence_the_recorded_writes_and_the_last_message()
     {
        let arc = RingArc::new(Position(1 << 60), Position(3 << 60));
        let steps = steps(arc, true);
        assert_eq!(steps[0], Stage::Header);
        let pieces: Vec<RingArc> = (steps.iter())
            .filter_map(|s| match s {
                Stage::Piece(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(
            steps[1..=pieces.len()],
            pieces.iter().map(|p| Stage::Piece(*p)).collect::<Vec<_>>()[..],
            "the pieces come right after the header"
        );
        assert_eq!(
            steps[pieces.len() + 1..],
            [Stage::Fence, Stage::Recorded, Stage::Last, Stage::Done]
        );
        // The pieces cover the arc, in order, each position once.
        assert_eq!(pieces.len(), bucket_count(arc, SNAPSHOT_PIECES));
        assert_eq!(pieces[0].start, arc.start);
        assert_eq!(pieces.last().unwrap().end, arc.end);
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
    }

    #[test]
    fn a_switch_over_no_longer_allowed_sends_nothing_after_the_fence() {
        let arc = RingArc::new(Position(10), Position(20));
        let steps = steps(arc, false);
        assert_eq!(steps.first(), Some(&Stage::Header));
        assert_eq!(steps[steps.len() - 2..], [Stage::Fence, Stage::Refused]);
        assert!(!steps.contains(&Stage::Recorded) && !steps.contains(&Stage::Last));
    }

    #[test]
    fn the_whole_ring_is_handed_over_in_pieces_too() {
        let whole = RingArc::whole(Position(5));
        let pieces: Vec<RingArc> = (steps(whole, true).iter())
            .filter_map(|s| match s {
                Stage::Piece(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(pieces.len(), bucket_count(whole, SNAPSHOT_PIECES));
        assert!(pieces.len() > 1);
        assert_eq!(pieces[0].start, Position(5));
        assert_eq!(
            pieces.last().unwrap().end,
            Position(5),
            "round to the start"
        );
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
    }

    #[test]
    fn a_fence_left_unanswered_refuses_and_an_answer_out_of_turn_changes_nothing() {
        let arc = RingArc::new(Position(10), Position(12));
        let mut sending = Sending::new(arc);
        sending.fenced(true);
        assert_eq!(sending.step(), Stage::Header, "fenced before any fence");
        while sending.step() != Stage::Fence {}
        // Not answered: fail closed.
        assert_eq!(sending.step(), Stage::Refused);
        sending.fenced(true);
        assert_eq!(sending.step(), Stage::Refused, "refused stays refused");

        let mut done = Sending::new(arc);
        while done.step() != Stage::Fence {}
        done.fenced(true);
        assert_eq!(
            [done.step(), done.step(), done.step(), done.step()],
            [Stage::Recorded, Stage::Last, Stage::Done, Stage::Done]
        );
    }
}
