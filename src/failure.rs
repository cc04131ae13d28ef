//! Failure detection as a state machine: what a node concludes from probing
//! its neighbours, with no I/O and no clock.
//!
//! Each probe interval the node asks `next` and then `prev` for their views
//! (`GetNodeInfo`) and feeds what came back into a [`Detector`]: a
//! [`Probe`] (an answer, in the ring's own terms, or a failure) in, a verdict
//! out, which the async shell (`node::maintain`) carries out. Probe ticks are
//! events: the detector counts misses, not time, so the same code runs under
//! the real clock and under a simulation's.
//!
//! # The rules
//!
//! - A neighbour is **dead** after `misses` failed probes in a row; any answer
//!   resets its count, and so does a new neighbour (it did not miss the
//!   probes of the node it replaced). A failed probe is one without an answer in time, or with
//!   an answer from a node that is not the member probed, or that has left the
//!   ring or is joining it again (a restarted node is not the neighbour it was).
//! - An answer from `next` gives its successor list (this node's backups) and
//!   what `next` takes for its previous neighbour:
//!   - this node: the link holds;
//!   - a node strictly between this node and `next`: a live node this node does
//!     not know (it joined through a predecessor that died before linking it
//!     in) is the rightful `next` (Chord's *stabilize*);
//!   - anything else: this node introduces itself to `next` (*rectify*).
//! - An answer from `prev` gives the chain of nodes before it (its own `prev`,
//!   then its predecessors): the nodes that, with `prev`, replicate this node's
//!   arc.
//! - The registry's list of live members is the only view from outside a
//!   node's own ring ([`registry_hint`]): a node alone introduces itself to
//!   the member that should be its `next`, and a node that is not alone takes
//!   a member strictly between itself and `next` as a stabilize candidate
//!   (adopted if a probe finds it serving). This is how the two rings of a
//!   split find each other once the cut heals: neither names a node of the
//!   other, so probes alone never would.
//! - Another node's introduction as `prev` ([`introduced`]) replaces `prev`
//!   when it lies between `prev` and this node, or when `prev` missed its
//!   last probe and the newcomer links to this node; otherwise only if a
//!   probe of `prev` fails.
//! - Between rounds, `prev` alone may be probed early ([`EarlyProbes`]): for
//!   a lease as soon as `prev` may grant one, or for the predecessors a
//!   write's replica set lacks. Such probes change no count of misses (a
//!   round between rounds would declare a node dead faster than `misses`
//!   probe intervals), run at most one every gap (a wish within it is put
//!   off, not dropped), and never while `prev` has missed a probe (waiting
//!   on it, up to the probe timeout, would hold the rounds up).

use crate::ring::{Arc, Member, Position};
use std::time::{Duration, Instant};

/// What a probe of a neighbour found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The member probed answered, serving.
    Answered(Report),
    /// No answer in time, or not from the member probed as it was (another
    /// node, one that has left, or one joining again).
    Failed,
}

/// A live neighbour's account of its own neighbourhood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Its previous neighbour, if it knows one.
    pub prev: Option<Member>,
    /// The nodes before its `prev`, nearest first.
    pub predecessors: Vec<Member>,
    /// Its successor list: its `next`, then the nodes after it.
    pub successors: Vec<Member>,
}

/// What to do about `next` after a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextVerdict {
    /// Alive and linked back to this node: adopt its successor list.
    Linked {
        /// `next`'s successor list.
        successors: Vec<Member>,
    },
    /// Alive, but a live node lies between: adopt the successor list, then
    /// take `closer` as `next` (after merging its arc into it).
    Closer {
        /// `next`'s successor list.
        successors: Vec<Member>,
        /// The node between this one and `next`.
        closer: Member,
    },
    /// Alive, but it does not know this node as its previous neighbour: adopt
    /// the successor list and introduce this node to it.
    Introduce {
        /// `next`'s successor list.
        successors: Vec<Member>,
    },
    /// No answer, but not yet `misses` in a row.
    Missed,
    /// Dead: replace it by the first live backup.
    Dead,
}

impl NextVerdict {
    /// The verdict on an answer of `next`, probed by `me`: linked, a closer
    /// node, or an introduction owed.
    pub fn answered(me: &Member, next: &Member, report: Report) -> Self {
        let successors = report.successors;
        match report.prev {
            Some(p) if p.id == me.id => Self::Linked { successors },
            Some(p) if p.id != next.id && Arc::new(me.id, next.id).contains(p.id) => Self::Closer {
                successors,
                closer: p,
            },
            _ => Self::Introduce { successors },
        }
    }
}

/// What to do about `prev` after a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrevVerdict {
    /// Alive: adopt the chain of nodes before it (nearest first).
    Alive {
        /// `prev`'s own previous neighbour and its predecessors, without
        /// `prev` itself.
        chain: Vec<Member>,
    },
    /// No answer, but not yet `misses` in a row.
    Missed,
    /// Dead: forget it until a live predecessor introduces itself.
    Dead,
}

impl PrevVerdict {
    /// The verdict on `prev` that answered with `report`.
    pub fn alive(prev: &Member, report: Report) -> Self {
        let mut chain: Vec<Member> = report
            .prev
            .filter(|p| p.id != prev.id)
            .into_iter()
            .collect();
        chain.extend(report.predecessors);
        PrevVerdict::Alive { chain }
    }
}

/// When to probe `prev` between the maintenance loop's rounds (see the
/// module docs): wishes in, the instant the next early probe is due out.
/// Two kinds of wish are kept apart, so that meeting one does not drop the
/// other: probes wanted now (the earliest kept), and the instant a `prev`
/// that refused a lease said it may grant one (the latest refusal's kept).
#[derive(Debug, Clone)]
pub struct EarlyProbes {
    /// The least time between two early probes.
    gap: Duration,
    /// When the last early probe ran.
    last: Option<Instant>,
    /// The earliest instant a probe was wanted at once, if one is.
    soon: Option<Instant>,
    /// When `prev` said it may grant a lease, if it refused one.
    lease_at: Option<Instant>,
}

impl EarlyProbes {
    /// No probe wanted yet; at most one every `gap`.
    pub fn new(gap: Duration) -> Self {
        Self {
            gap,
            last: None,
            soon: None,
            lease_at: None,
        }
    }

    /// A probe of `prev` is wanted at once (it is `now`).
    pub fn want(&mut self, now: Instant) {
        self.soon = Some(self.soon.map_or(now, |w| w.min(now)));
    }

    /// `prev` refused a lease, saying it may grant one at `at`: a probe is
    /// wanted then (instead of when an earlier refusal said).
    pub fn lease_at(&mut self, at: Instant) {
        self.lease_at = Some(at);
    }

    /// When the next early probe is due, if one is wanted: at the earliest
    /// wish, put off to a gap after the last.
    pub fn due(&self) -> Option<Instant> {
        let wanted = match (self.soon, self.lease_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.last.map_or(wanted, |last| wanted.max(last + self.gap)))
    }

    /// Whether to probe `prev` at `now`: yes once a probe is due, unless
    /// `prev_suspected` (it missed its last probe): then the wishes due are
    /// dropped, and the rounds probe it. A wish for later stays.
    pub fn fire(&mut self, now: Instant, prev_suspected: bool) -> bool {
        if self.due().is_none_or(|due| due > now) {
            return false;
        }
        self.met_by(now);
        if prev_suspected {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// A round probed `prev` at `now` (sent its probe then): the wishes due
    /// by then are met.
    pub fn rounded(&mut self, now: Instant) {
        self.met_by(now);
    }

    /// The node stopped serving: no early probe is owed.
    pub fn clear(&mut self) {
        (self.soon, self.lease_at) = (None, None);
    }

    /// Drops the wishes for `now` or earlier.
    fn met_by(&mut self, now: Instant) {
        self.soon = self.soon.filter(|w| *w > now);
        self.lease_at = self.lease_at.filter(|w| *w > now);
    }
}

/// Failed probes in a row, for each neighbour.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Misses in a row after which a neighbour is dead (at least 1).
    misses: u32,
    next: Misses,
    prev: Misses,
}

/// Failed probes in a row of one neighbour, and which member they were of:
/// a new neighbour starts from none (it did not miss its predecessor's
/// probes).
#[derive(Debug, Clone, Default)]
struct Misses {
    of: Option<Position>,
    count: u32,
}

impl Misses {
    /// A probe of `member` failed: whether that makes `misses` in a row
    /// (the count starts again then).
    fn missed(&mut self, member: &Member, misses: u32) -> bool {
        if self.of != Some(member.id) {
            *self = Self {
                of: Some(member.id),
                count: 0,
            };
        }
        count_miss(&mut self.count, misses)
    }

    /// Whether `member` failed its last probe (and is not yet dead).
    fn suspects(&self, member: &Member) -> bool {
        self.of == Some(member.id) && self.count > 0
    }
}

impl Detector {
    /// A detector that declares a neighbour dead after `misses` failed probes
    /// in a row (at least one).
    pub fn new(misses: u32) -> Self {
        Self {
            misses: misses.max(1),
            next: Misses::default(),
            prev: Misses::default(),
        }
    }

    /// This node has no `next` to probe (it is alone): nothing is owed.
    pub fn next_absent(&mut self) {
        self.next = Misses::default();
    }

    /// This node has no `prev` to probe: nothing is owed.
    pub fn prev_absent(&mut self) {
        self.prev = Misses::default();
    }

    /// The verdict on `next`, probed by `me`.
    pub fn next_probed(&mut self, me: &Member, next: &Member, probe: Probe) -> NextVerdict {
        let report = match probe {
            Probe::Answered(report) => report,
            Probe::Failed => {
                return if self.next.missed(next, self.misses) {
                    NextVerdict::Dead
                } else {
                    NextVerdict::Missed
                };
            }
        };
        self.next = Misses::default();
        NextVerdict::answered(me, next, report)
    }

    /// Whether `prev` failed its last probe (and is not yet dead).
    pub fn prev_suspected(&self, prev: &Member) -> bool {
        self.prev.suspects(prev)
    }

    /// Whether `next` failed its last probe (and is not yet dead).
    pub fn next_suspected(&self, next: &Member) -> bool {
        self.next.suspects(next)
    }

    /// The verdict on `prev`.
    pub fn prev_probed(&mut self, prev: &Member, probe: Probe) -> PrevVerdict {
        match probe {
            Probe::Answered(report) => {
                self.prev = Misses::default();
                PrevVerdict::alive(prev, report)
            }
            Probe::Failed if self.prev.missed(prev, self.misses) => PrevVerdict::Dead,
            Probe::Failed => PrevVerdict::Missed,
        }
    }
}

/// Whether another node's introduction as this node's previous neighbour
/// (`RegisterAsNeighbor{Previous}`, "rectify"; the newcomer answered a probe
/// as serving) replaces `prev` at once, or only if a probe of `prev` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Introduced {
    /// `prev` is replaced.
    Replace,
    /// `prev` is replaced only if a probe of it fails now (it is dead or
    /// gone); otherwise the introduction is refused: a stale one must not
    /// displace a live predecessor.
    IfPrevSilent,
}

/// How an introduction is judged: `by_position`, the newcomer may take
/// `prev`'s place by where it lies (between `prev` and this node, `prev`
/// itself, or `prev` unknown: `View::may_take_previous`); `prev_suspected`,
/// `prev` missed its last probe; `links_here`, the newcomer's own `next` is
/// this node (it passed over whatever lay between, `prev` included). A
/// suspected `prev` passed over by the newcomer is not probed again: after a
/// crash that answers nothing, that probe waited its timeout while this
/// node's arc went unleased.
pub fn introduced(by_position: bool, prev_suspected: bool, links_here: bool) -> Introduced {
    if by_position || (prev_suspected && links_here) {
        Introduced::Replace
    } else {
        Introduced::IfPrevSilent
    }
}

/// What the registry's live members tell a node about its `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryHint {
    /// This node is alone but the registry lists others: it introduces
    /// itself to this one, the nearest after it, which should be its `next`.
    Rejoin(Member),
    /// A member strictly between this node and its `next`: if it answers a
    /// probe as a serving node, it is the rightful `next` (as
    /// [`NextVerdict::Closer`]).
    Closer(Member),
}

/// What `members` (the registry's live members, in any order) tell `me`,
/// whose `next` is `next` (`me` itself when alone): nothing, unless the
/// nearest member after `me` is not `next` and lies before it.
pub fn registry_hint(me: &Member, next: &Member, members: &[Member]) -> Option<RegistryHint> {
    let nearest = (members.iter())
        .filter(|m| m.id != me.id)
        .min_by_key(|m| me.id.distance_to(m.id))?;
    if next.id == me.id {
        return Some(RegistryHint::Rejoin(nearest.clone()));
    }
    // The arc is half-open: `next` itself is not in it.
    (Arc::new(me.id, next.id).contains(nearest.id)).then(|| RegistryHint::Closer(nearest.clone()))
}

/// The arc a node merges into `closer`, a live node it found between itself
/// and its `next` ([`NextVerdict::Closer`], [`RegistryHint::Closer`]): from
/// `closer` up to `closer`'s own `next` if that lies before `next`, else up
/// to `next`. Only that arc is `closer`'s: the node may hold entries past it
/// (of nodes it does not know yet either), which are not `closer`'s to take.
pub fn merge_arc(closer: Position, closers_next: Option<Position>, next: Position) -> Arc {
    let end = match closers_next {
        Some(end) if end != closer && Arc::new(closer, next).contains(end) => end,
        _ => next,
    };
    Arc::new(closer, end)
}

/// Counts one more miss; true (and the count starts again) at `misses`.
fn count_miss(count: &mut u32, misses: u32) -> bool {
    *count += 1;
    if *count >= misses {
        *count = 0;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(20);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_early_probe_is_due_when_wanted_and_runs_once() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        assert_eq!(e.due(), None, "nothing wanted, nothing due");
        e.want(t0);
        assert_eq!(e.due(), Some(t0));
        assert!(e.fire(t0, false));
        assert_eq!(e.due(), None, "the wish was met");
        assert!(!e.fire(t0 + ms(100), false), "nothing wanted");
    }

    #[test]
    fn a_wish_within_the_gap_is_put_off_not_dropped() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        e.want(t0);
        assert!(e.fire(t0, false));
        e.want(t0 + ms(5));
        assert_eq!(e.due(), Some(t0 + GAP), "put off to a gap after the last");
        assert!(!e.fire(t0 + ms(5), false), "not yet due");
        assert!(e.fire(t0 + GAP, false));
    }

    #[test]
    fn a_lease_probe_waits_for_the_instant_prev_named() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        e.lease_at(t0 + ms(700));
        assert!(!e.fire(t0 + ms(699), false));
        e.lease_at(t0 + ms(900));
        assert_eq!(e.due(), Some(t0 + ms(900)), "the latest refusal's");
        assert!(e.fire(t0 + ms(900), false));
        assert_eq!(e.due(), None);
    }

    #[test]
    fn a_probe_wanted_now_does_not_drop_a_later_lease_probe() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        e.lease_at(t0 + ms(700));
        e.want(t0);
        assert_eq!(e.due(), Some(t0), "the earlier wish first");
        assert!(e.fire(t0, false));
        assert_eq!(e.due(), Some(t0 + ms(700)), "the lease probe is still owed");
        e.want(t0 + ms(100));
        assert!(!e.fire(t0 + ms(100), true), "prev suspected");
        assert_eq!(e.due(), Some(t0 + ms(700)), "only the wish due was dropped");
        e.rounded(t0 + ms(200));
        assert_eq!(
            e.due(),
            Some(t0 + ms(700)),
            "a round before it does not meet it"
        );
        e.rounded(t0 + ms(700));
        assert_eq!(e.due(), None);
    }

    #[test]
    fn a_suspected_prev_gets_no_early_probe_and_the_wish_is_dropped() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        e.want(t0);
        assert!(!e.fire(t0, true), "the rounds probe a suspected prev");
        assert_eq!(e.due(), None);
    }

    #[test]
    fn a_round_meets_the_wishes_due_by_then_and_clear_drops_all() {
        let (mut e, t0) = (EarlyProbes::new(GAP), Instant::now());
        e.want(t0);
        e.rounded(t0 + ms(1));
        assert_eq!(e.due(), None, "the round probed prev after the wish");
        e.lease_at(t0 + ms(500));
        e.rounded(t0 + ms(1));
        assert_eq!(e.due(), Some(t0 + ms(500)), "a later wish outlives it");
        e.want(t0 + ms(2));
        e.clear();
        assert_eq!(e.due(), None);
    }

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn answer(prev: Option<u64>, successors: &[u64]) -> Probe {
        Probe::Answered(Report {
            prev: prev.map(member),
            predecessors: vec![],
            successors: successors.iter().copied().map(member).collect(),
        })
    }

    #[test]
    fn a_merge_hands_a_closer_node_its_own_arc_and_nothing_past_it() {
        let p = Position;
        // `closer` (20) knows a node (30) before this node's `next` (40).
        assert_eq!(merge_arc(p(20), Some(p(30)), p(40)), Arc::new(p(20), p(30)));
        // Its next is this node's `next`, lies past it, is itself (alone) or
        // unknown: up to `next`.
        for its_next in [Some(40), Some(90), Some(5), Some(20), None] {
            assert_eq!(
                merge_arc(p(20), its_next.map(p), p(40)),
                Arc::new(p(20), p(40)),
                "closer's next {its_next:?}"
            );
        }
        // Across the top of the ring.
        let top = u64::MAX - 10;
        assert_eq!(merge_arc(p(top), Some(p(3)), p(40)), Arc::new(p(top), p(3)));
        assert_eq!(
            merge_arc(p(top), Some(p(60)), p(40)),
            Arc::new(p(top), p(40))
        );
    }

    #[test]
    fn the_registry_hints_only_at_a_member_before_next_or_at_a_node_alone() {
        let (me, next) = (member(10), member(40));
        let listed = |ids: &[u64]| ids.iter().copied().map(member).collect::<Vec<_>>();
        // The ring as this node knows it, or members beyond `next`: nothing.
        assert_eq!(registry_hint(&me, &next, &listed(&[10, 40, 90])), None);
        assert_eq!(registry_hint(&me, &next, &listed(&[90, 5])), None);
        assert_eq!(registry_hint(&me, &next, &listed(&[])), None);
        // A member between this node and `next`: the nearest one.
        assert_eq!(
            registry_hint(&me, &next, &listed(&[90, 30, 20, 40, 10])),
            Some(RegistryHint::Closer(member(20)))
        );
        // A `next` across the top of the ring: members past the top and
        // before it.
        let (high, low_next) = (member(u64::MAX - 5), member(50));
        assert_eq!(
            registry_hint(&high, &low_next, &listed(&[60, 3, u64::MAX - 5])),
            Some(RegistryHint::Closer(member(3)))
        );
        assert_eq!(
            registry_hint(&high, &low_next, &listed(&[3, u64::MAX - 2])),
            Some(RegistryHint::Closer(member(u64::MAX - 2)))
        );
        assert_eq!(registry_hint(&high, &low_next, &listed(&[50, 60])), None);
        // Only this node listed.
        assert_eq!(registry_hint(&me, &next, &listed(&[10])), None);
        // Alone: the nearest member after this node, wherever it is.
        assert_eq!(
            registry_hint(&me, &me, &listed(&[5, 10, 90])),
            Some(RegistryHint::Rejoin(member(90)))
        );
        assert_eq!(
            registry_hint(&me, &me, &listed(&[5])),
            Some(RegistryHint::Rejoin(member(5)))
        );
        assert_eq!(registry_hint(&me, &me, &listed(&[10])), None);
    }

    #[test]
    fn a_neighbour_is_dead_after_three_misses_in_a_row_and_not_before() {
        let mut d = Detector::new(3);
        let (me, next) = (member(10), member(20));
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
        assert_eq!(d.next_probed(&me, &next, Probe::Failed), NextVerdict::Dead);
        // Counting starts again for whichever node is next now.
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
    }

    #[test]
    fn an_answer_resets_the_count() {
        let mut d = Detector::new(3);
        let (me, next) = (member(10), member(20));
        d.next_probed(&me, &next, Probe::Failed);
        d.next_probed(&me, &next, Probe::Failed);
        d.next_probed(&me, &next, answer(Some(10), &[30]));
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
        assert_eq!(d.next_probed(&me, &next, Probe::Failed), NextVerdict::Dead);
    }

    #[test]
    fn next_and_prev_are_counted_apart() {
        let mut d = Detector::new(2);
        let (me, next, prev) = (member(10), member(20), member(5));
        d.next_probed(&me, &next, Probe::Failed);
        assert!(
            !d.prev_suspected(&prev),
            "a miss of next is not one of prev"
        );
        assert!(d.next_suspected(&next));
        assert_eq!(d.prev_probed(&prev, Probe::Failed), PrevVerdict::Missed);
        assert!(d.prev_suspected(&prev));
        assert_eq!(d.next_probed(&me, &next, Probe::Failed), NextVerdict::Dead);
        assert_eq!(d.prev_probed(&prev, Probe::Failed), PrevVerdict::Dead);
        assert!(!d.prev_suspected(&prev), "dead, and counting starts again");
        d.prev_probed(&prev, Probe::Failed);
        d.prev_probed(&prev, answer(None, &[]));
        assert!(!d.prev_suspected(&prev), "an answer clears the suspicion");
    }

    #[test]
    fn a_new_neighbour_does_not_inherit_the_misses_of_the_old() {
        let mut d = Detector::new(3);
        let (me, old, new) = (member(10), member(5), member(7));
        d.prev_probed(&old, Probe::Failed);
        d.prev_probed(&old, Probe::Failed);
        assert!(d.prev_suspected(&old));
        assert!(!d.prev_suspected(&new), "the new prev missed nothing");
        assert_eq!(
            d.prev_probed(&new, Probe::Failed),
            PrevVerdict::Missed,
            "its first miss is its first, not the old one's third"
        );
        let (next, closer) = (member(20), member(15));
        d.next_probed(&me, &next, Probe::Failed);
        d.next_probed(&me, &next, Probe::Failed);
        assert!(!d.next_suspected(&closer));
        assert_eq!(
            d.next_probed(&me, &closer, Probe::Failed),
            NextVerdict::Missed
        );
    }

    #[test]
    fn an_introduction_replaces_prev_by_position_or_when_prev_is_suspected_and_passed_over() {
        use Introduced::*;
        assert_eq!(introduced(true, false, false), Replace, "a joiner between");
        assert_eq!(
            introduced(false, true, true),
            Replace,
            "the newcomer passed over a prev that missed its last probe"
        );
        assert_eq!(
            introduced(false, true, false),
            IfPrevSilent,
            "a stale introduction: its sender no longer links here"
        );
        assert_eq!(
            introduced(false, false, true),
            IfPrevSilent,
            "prev answered its last probe: probed again"
        );
    }

    #[test]
    fn being_alone_owes_nothing() {
        let mut d = Detector::new(2);
        let (me, next) = (member(10), member(20));
        d.next_probed(&me, &next, Probe::Failed);
        d.next_absent();
        assert_eq!(
            d.next_probed(&me, &next, Probe::Failed),
            NextVerdict::Missed
        );
    }

    #[test]
    fn a_next_that_names_this_node_is_linked() {
        let mut d = Detector::new(3);
        let verdict = d.next_probed(&member(10), &member(20), answer(Some(10), &[30, 40]));
        assert_eq!(
            verdict,
            NextVerdict::Linked {
                successors: vec![member(30), member(40)]
            }
        );
    }

    #[test]
    fn a_live_node_between_this_one_and_next_is_the_rightful_next() {
        let mut d = Detector::new(3);
        let verdict = d.next_probed(&member(10), &member(20), answer(Some(15), &[30]));
        assert_eq!(
            verdict,
            NextVerdict::Closer {
                successors: vec![member(30)],
                closer: member(15)
            }
        );
        // Across the wrap: this node at the top of the ring, next near zero.
        let verdict = d.next_probed(&member(u64::MAX - 5), &member(20), answer(Some(3), &[]));
        assert!(matches!(verdict, NextVerdict::Closer { closer, .. } if closer == member(3)));
    }

    #[test]
    fn a_next_that_names_another_node_outside_the_gap_is_told_of_this_one() {
        let mut d = Detector::new(3);
        for prev in [Some(5), Some(20), Some(25), None] {
            let verdict = d.next_probed(&member(10), &member(20), answer(prev, &[30]));
            assert_eq!(
                verdict,
                NextVerdict::Introduce {
                    successors: vec![member(30)]
                },
                "next's prev {prev:?}"
            );
        }
    }

    #[test]
    fn prevs_chain_is_its_prev_then_its_predecessors_without_itself() {
        let mut d = Detector::new(3);
        let report = Report {
            prev: Some(member(3)),
            predecessors: vec![member(1), member(90)],
            successors: vec![],
        };
        assert_eq!(
            d.prev_probed(&member(5), Probe::Answered(report)),
            PrevVerdict::Alive {
                chain: vec![member(3), member(1), member(90)]
            }
        );
        // A prev that names itself (it is alone, as it believes) adds nothing.
        let alone = Report {
            prev: Some(member(5)),
            ..Report::default()
        };
        assert_eq!(
            d.prev_probed(&member(5), Probe::Answered(alone)),
            PrevVerdict::Alive { chain: vec![] }
        );
    }
}
