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
pub(in crate::node) enum Send {
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
    /// Everything is sent: wait for the joiner's answer.
    Done,
    /// The switch-over may not go on: fail the hand-off (the caller lifts
    /// the fence, the joiner retries).
    Refused,
}

/// One join hand-off being sent.
#[derive(Debug)]
pub(in crate::node) struct Sending {
    arc: RingArc,
    pieces: usize,
    /// What comes next.
    at: Send,
    /// The next piece of the snapshot.
    piece: usize,
}

impl Sending {
    /// A hand-off of `arc`.
    pub(in crate::node) fn new(arc: RingArc) -> Self {
        Self {
            arc,
            pieces: bucket_count(arc, SNAPSHOT_PIECES),
            at: Send::Header,
            piece: 0,
        }
    }

    /// The next step; once it is done, the one after (a [`Send::Fence`] is
    /// answered with [`Sending::fenced`] instead).
    pub(in crate::node) fn next(&mut self) -> Send {
        let now = self.at;
        self.at = match now {
            Send::Header | Send::Piece(_) if self.piece < self.pieces => {
                let piece = buckets_arc(self.arc, self.piece..self.piece + 1, self.pieces);
                self.piece += 1;
                Send::Piece(piece)
            }
            Send::Header | Send::Piece(_) => Send::Fence,
            // Stays until `fenced` says how it went.
            Send::Fence => Send::Fence,
            Send::Recorded => Send::Last,
            Send::Last | Send::Done => Send::Done,
            Send::Refused => Send::Refused,
        };
        now
    }

    /// The fence is up; `may_switch_over`: the contact may still hand the arc
    /// over. The next step is the recorded writes, or the refusal.
    pub(in crate::node) fn fenced(&mut self, may_switch_over: bool) {
        if self.at == Send::Fence {
            self.at = match may_switch_over {
                true => Send::Recorded,
                false => Send::Refused,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    /// The steps of a whole hand-off of `arc`, the fence answered with
    /// `may_switch_over`.
    fn steps(arc: RingArc, may_switch_over: bool) -> Vec<Send> {
        let mut sending = Sending::new(arc);
        let mut steps = Vec::new();
        loop {
            let step = sending.next();
            steps.push(step);
            match step {
                Send::Fence => sending.fenced(may_switch_over),
                Send::Done | Send::Refused => return steps,
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
        assert_eq!(steps[0], Send::Header);
        let pieces: Vec<RingArc> = (steps.iter())
            .filter_map(|s| match s {
                Send::Piece(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(
            steps[1..=pieces.len()],
            pieces.iter().map(|p| Send::Piece(*p)).collect::<Vec<_>>()[..],
            "the pieces come right after the header"
        );
        assert_eq!(
            steps[pieces.len() + 1..],
            [Send::Fence, Send::Recorded, Send::Last, Send::Done]
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
        assert_eq!(steps.first(), Some(&Send::Header));
        assert_eq!(steps[steps.len() - 2..], [Send::Fence, Send::Refused]);
        assert!(!steps.contains(&Send::Recorded) && !steps.contains(&Send::Last));
    }

    #[test]
    fn the_whole_ring_is_handed_over_in_pieces_too() {
        let whole = RingArc::whole(Position(5));
        let steps = steps(whole, true);
        let pieces = steps.iter().filter(|s| matches!(s, Send::Piece(_))).count();
        assert_eq!(pieces, bucket_count(whole, SNAPSHOT_PIECES));
        assert!(pieces > 1);
    }
}
