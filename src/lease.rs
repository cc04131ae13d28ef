//! Leases on ownership: when a node may serve the arc its view says it owns.
//! A state machine with no I/O; the time is passed in.
//!
//! Without leases, a node that is paused or cut off is declared dead by its
//! predecessor, which takes its arc over while the node itself still believes
//! it owns it: for a while the arc has two owners, and a read at the old one
//! can miss a write acknowledged by the new one. With leases an arc has at
//! most one serving owner at any instant (given the drift bound below):
//!
//! - **Grant.** A node holds a lease on its arc from its previous neighbour,
//!   the node that would take the arc over if it failed. The node asks as part
//!   of its probe of `prev`; an answer in which `prev`'s own `next` is this node
//!   grants the lease for [`LeaseSettings::length`], counted from when the
//!   probe was *sent* (before the grant, so never later than the grantor's
//!   moment). `prev` grants exactly while its view links to this node, and
//!   notes when it last did ([`Leases::granting`]); the answer says it did.
//! - **Takeover.** A node that declares its `next` dead (the only way a node's
//!   arc grows over a live node's) stops granting at that moment (its view no
//!   longer links to the dead node) and serves the taken arc only once every
//!   lease the dead node may hold has lapsed: [`LeaseSettings::takeover_wait`]
//!   after the later of its own last grant to it and the moment its view
//!   linked to it (a lease granted by an earlier `prev` of the dead node was
//!   granted before that moment), or after the declaration if it knows
//!   neither. After a real crash the last grant is about one probe interval
//!   old by then, so the wait adds little to failure detection. Until the
//!   wait has passed it grants no lease at all ([`Leases::granting`]): the
//!   dead node's lease may cover the arc of the node it now links to.
//! - **After a gap.** A node leased again after its lease lapsed may lack
//!   writes another node made into its arc meanwhile
//!   ([`Leases::answered`]): the node reads with its replicas until it
//!   has caught up (`crate::repair::CatchUp::forget`). And an owner
//!   acknowledges a write only under a lease once the replicas have it
//!   (waiting for a new grant until the request's deadline if its lease
//!   lapsed meanwhile), so that no write it acknowledges reaches `prev` only
//!   after `prev` took the arc over.
//! - **Judged by a registry** ([`Leases::judged_by_registry`]). Neighbour
//!   leases alone let a ring split into two groups of two or more serve on
//!   both sides: a lease only makes its grantor wait, and the node that
//!   takes an arc over there is not the one that leases its new owner. So
//!   the registry is the witness: a takeover is served only once the
//!   registry judged the dead node dead ([`Leases::judged_dead`]), which it
//!   does only once the root lease that each of its heartbeat answers grants
//!   has lapsed ([`Leases::rooted`]; `crate::registry::verdicts`); a node
//!   grants leases only while it holds one (so the lease of each node in a
//!   run of dead ones lapses at most a takeover wait after the one
//!   before's, which the taker waits for); and a node that hears it was
//!   judged dead ends its lease ([`Leases::registry_verdicts`]).
//! - **Serving.** A node serves a position of its arc only while it holds a
//!   lease, and not in an arc it took over before that arc's wait has passed,
//!   and (not alone) only in the part of its arc that its `next` confirmed
//!   ([`Leases::confirms`]): the lease comes from `prev`, which knows where
//!   the arc starts, not where it ends.
//!   A node alone in its ring has no `prev` to lease from: it serves only if
//!   it did not get there by declaring neighbours dead (it started the ring,
//!   or the others left gracefully), or (judged by a registry) while it
//!   holds a root lease; a node cut off from everyone, the registry
//!   included, declares them all dead and so serves nothing until a
//!   neighbour links to it again.
//!
//! The drift bound: each node's monotonic clock runs at a rate within
//! `±drift` of real time, and keeps running while the process is paused (true
//! of `CLOCK_MONOTONIC` under `SIGSTOP` or a stall; not across a suspend of
//! the whole machine).

use crate::ring::{Arc, Position};
use std::time::{Duration, Instant};

/// How long leases last, and the clock-drift bound they allow for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseSettings {
    /// How long a grant lasts, from when it was asked for.
    pub length: Duration,
    /// The most any node's clock rate may differ from real time, as a
    /// fraction (0.01: 1%).
    pub drift: f64,
}

impl LeaseSettings {
    /// Default [`LeaseSettings::length`] in milliseconds: four probe
    /// intervals, so that a lost probe or two do not let it lapse.
    pub const DEFAULT_LENGTH_MS: u64 = 2_000;
    /// Default [`LeaseSettings::drift`]: 1%, far above what NTP-disciplined
    /// or free-running quartz clocks drift.
    pub const DEFAULT_DRIFT: f64 = 0.01;

    /// How long after declaring its `next` dead a node waits before serving
    /// the taken arc: the lease length, stretched for a grantee clock running
    /// slow and this node's running fast, plus a millisecond.
    pub fn takeover_wait(&self) -> Duration {
        let drift = self.drift.clamp(0.0, 0.5);
        self.length.mul_f64((1.0 + drift) / (1.0 - drift)) + Duration::from_millis(1)
    }
}

impl LeaseSettings {
    /// How long after a refusal that said a lease may be had in `wait`
    /// (a takeover wait, on the grantor's clock) to ask again on this
    /// node's: stretched by twice the drift bound, since either clock may
    /// run off by it (asked too early, the refusal comes again).
    pub fn ask_again_after(&self, wait: Duration) -> Duration {
        wait.mul_f64(1.0 + 2.0 * self.drift.clamp(0.0, 0.5))
    }
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            length: Duration::from_millis(Self::DEFAULT_LENGTH_MS),
            drift: Self::DEFAULT_DRIFT,
        }
    }
}

/// Whether a position may be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Yes.
    Now,
    /// Not before this instant (an arc taken over is still waiting).
    From(Instant),
    /// Not until a lease is granted.
    Unleased,
}

/// Whether a node may hand part of its arc to a joiner ([`hand_over`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOver {
    /// Yes.
    Yes,
    /// Not now (the joiner retries).
    No,
    /// Alone after failures, with no `prev` to lease from: only a joiner can
    /// lease it again, so it takes one in if the registry answers that no
    /// other member lives (they died, rather than cut it off).
    IfNoOtherMember,
}

/// Whether a node may hand the part `serve` describes of its arc to a
/// joiner: only what it may serve now, and not while it is `catching_up`
/// after a lease gap (its store may lack writes another owner made), unless
/// it is `alone` after failures ([`HandOver::IfNoOtherMember`]). A node
/// that may not serve an arc may have been declared dead by its `prev`,
/// which then owns the arc: a joiner handed part of it would be a second
/// owner.
///
/// `judged`: a registry judges deaths. Then a node alone that may not serve
/// is cut off from the registry (or heard it was judged dead): its arc may
/// be owned by a node on the registry's side, and it takes no joiner in. (A
/// node alone after real failures holds root leases and serves.)
pub fn hand_over(serve: Serve, alone: bool, catching_up: bool, judged: bool) -> HandOver {
    match serve {
        Serve::Now if catching_up => HandOver::No,
        Serve::Now => HandOver::Yes,
        Serve::Unleased if alone && !judged => HandOver::IfNoOtherMember,
        Serve::Unleased | Serve::From(_) => HandOver::No,
    }
}

/// What a node answers its `next`'s request for a lease
/// ([`Leases::granting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Granted, and noted.
    Granted,
    /// Not while a takeover wait runs; not before this instant, when the
    /// last one ends (unless a takeover meanwhile starts another).
    NotBefore(Instant),
    /// Not now, and not known when: a takeover waits for the registry's
    /// verdict, or (judged by a registry) this node holds no lease itself.
    Refused,
}

/// What `prev` answered a probe that asked it for a lease (its form in the
/// answer's metadata: `crate::node`'s `rpc::wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Granted.
    Granted,
    /// Not now ([`Grant::NotBefore`]); one may be had after this long.
    After(Duration),
}

/// What a node does with its `prev`'s [`Answer`] ([`Leases::answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Granted: noted with [`Leases::granted`], if `prev` is still `prev`.
    Granted,
    /// Granted after a gap. First the node counts as behind until it has
    /// caught up (`crate::repair::CatchUp::forget`), and forgets what its
    /// `next` confirmed (its arc may have been split or taken meanwhile);
    /// then the grant is noted; then it asks `next` at once to confirm the
    /// arc again, rather than at its next round.
    GrantedAfterGap,
    /// Refused while `prev`'s takeover wait runs: probe `prev` again at this
    /// instant rather than at the next round.
    AskAgainAt(Instant),
    /// Nothing to do: no answer about the lease, or one from a `prev` that
    /// does not link to this node.
    Nothing,
}

/// An arc taken over from a failed next neighbour, and when it may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Taken {
    arc: Arc,
    /// The node declared dead.
    dead: Position,
    /// When it was declared dead: a verdict asked for earlier does not
    /// settle it ([`Leases::judged_dead`]).
    declared: Instant,
    /// Not before this instant.
    from: Instant,
    /// Not before the registry has judged `dead` dead ([`Leases::judged_dead`]).
    verdict_due: bool,
    /// Not before the takeover of this node, the dead one's `prev`, has
    /// settled: `dead` may hold a lease that one granted, which lapses at
    /// most a takeover wait after it. (The earlier takeover, by its dead node
    /// and when it was declared: the same node may have been taken over
    /// before.)
    after: Option<(Position, Instant)>,
}

impl Taken {
    /// When it may be served, once nothing more is awaited.
    fn settled(&self) -> Option<Instant> {
        (!self.verdict_due && self.after.is_none()).then_some(self.from)
    }
}

/// A node's lease on its arc and the waits on the arcs it took over.
#[derive(Debug, Clone)]
pub struct Leases {
    settings: LeaseSettings,
    /// Whether a registry judges deaths ([`Leases::judged_by_registry`]).
    judged: bool,
    /// This node's position (known when judged).
    me: Position,
    /// How many times the registry has judged this node dead, as far as
    /// this node has heard ([`Leases::registry_verdicts`]).
    verdicts_seen: u64,
    /// Whether this node heard it was judged dead and no `prev` has granted
    /// it a lease since: root leases do not count ([`Leases::rooted`]).
    relink_needed: bool,
    /// When it last heard it was judged dead: a grant asked for before then
    /// does not link it in again ([`Leases::granted`]).
    heard_at: Option<Instant>,
    /// The length of the registry's root leases, as last granted.
    root_length: Duration,
    /// Until when this node's arc is leased, on this node's clock.
    until: Option<Instant>,
    /// Whether this node has declared a neighbour dead since it was last
    /// linked to one: alone, it then serves nothing without a lease.
    failed_since_linked: bool,
    /// Arcs taken over from failed next neighbours.
    taken: Vec<Taken>,
    /// The dead node whose takeover made this node link to its `next`
    /// (noted by [`Leases::took_over`], used by the [`Leases::linked_to`]
    /// that follows).
    last_taken: Option<Position>,
    /// This node's `next`, and the dead node whose takeover linked it, if
    /// one did: that `next` may hold leases from the dead node.
    run: Option<(Position, Position)>,
    /// This node's `next`, and since when its view links to it.
    linked: Option<(Position, Instant)>,
    /// The last lease this node granted, to whom and when (its clock).
    granted_to: Option<(Position, Instant)>,
    /// How much of this node's arc its `next` confirmed when last asked
    /// ([`Leases::next_probed`]): `None`, nothing.
    confirmed: Option<Arc>,
    /// The last few next neighbours this node declared dead and took the
    /// arcs of (newest last).
    declared_dead: Vec<Position>,
}

/// How many of the next neighbours declared dead [`Leases`] remembers.
const DECLARED_DEAD_KEPT: usize = 8;

impl Leases {
    /// No lease yet.
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            judged: false,
            me: Position(0),
            verdicts_seen: 0,
            relink_needed: false,
            heard_at: None,
            root_length: settings.length,
            until: None,
            failed_since_linked: false,
            taken: Vec::new(),
            last_taken: None,
            run: None,
            linked: None,
            granted_to: None,
            confirmed: None,
            declared_dead: Vec::new(),
        }
    }

    /// Takeovers wait for the registry's verdict, a node grants leases only
    /// while it holds one, and the registry's root leases count
    /// ([`Leases::rooted`]): see "Leases" in docs/protocol.md. `me` is this
    /// node's position.
    pub fn judged_by_registry(mut self, me: Position) -> Self {
        self.judged = true;
        self.me = me;
        self
    }

    /// Whether a registry judges deaths.
    pub fn judged(&self) -> bool {
        self.judged
    }

    /// The registry turned out to judge deaths (a heartbeat's answer grants
    /// a root lease or reports verdicts), or not (a registry of an earlier
    /// version, which answers neither and knows no `JudgeDead`). Without
    /// one, leases work as without a registry: takeovers wait for no
    /// verdict, and grants need no lease of the grantor's own (else every
    /// failure would stop the ring, with no root lease to start leases
    /// again). Upgrade the registry first. The takeovers that awaited a
    /// verdict wait, from `now`, for any root lease their nodes may hold.
    pub fn registry_judges(&mut self, judges: bool, now: Instant) {
        if self.judged == judges {
            return;
        }
        self.judged = judges;
        if !judges {
            // The suspects may hold root leases granted until now.
            let roots = LeaseSettings {
                length: self.root_length,
                ..self.settings
            }
            .takeover_wait();
            for t in &mut self.taken {
                if t.verdict_due || t.after.is_some() {
                    t.from = t.from.max(now + roots);
                }
                t.verdict_due = false;
                t.after = None;
            }
        }
    }

    /// This node's view now links to `next` (its `next` changed at `now`).
    /// A takeover of `next`, or (judged) of a node beyond it, that still
    /// awaits the registry's verdict is dropped (this node links to a live
    /// node before it: it did not take its arc), and with it those that
    /// awaited it.
    pub fn linked_to(&mut self, next: Position, now: Instant) {
        self.linked = Some((next, now));
        self.run = self.last_taken.take().map(|dead| (next, dead));
        // Pending takeovers of nodes at or beyond the new `next` are no part
        // of this node's arc any more (it found a live node before them).
        // (A `next` that is this node, alone, ends before no one.)
        let me = self.me;
        let beyond = |t: &Taken| {
            self.judged
                && t.verdict_due
                && next != me
                && me.distance_to(t.dead) >= me.distance_to(next)
        };
        let mut dropped: Vec<Position> = (self.taken.iter())
            .filter(|t| beyond(t))
            .map(|t| t.dead)
            .chain([next])
            .collect();
        while let Some(gone) = dropped.pop() {
            self.taken.retain(|t| {
                let stale = (t.dead == gone && t.verdict_due)
                    || t.after.is_some_and(|(earlier, _)| earlier == gone);
                if stale {
                    dropped.push(t.dead);
                }
                !stale
            });
        }
        // And what is left of them ends at the new `next`.
        for t in self
            .taken
            .iter_mut()
            .filter(|t| self.judged && t.verdict_due)
        {
            if next != t.arc.start && t.arc.contains(next) {
                t.arc = Arc::new(t.arc.start, next);
            }
        }
    }

    /// Whether this node holds a lease at `now` (a new node gets its first
    /// from the registry within a heartbeat, or from its `prev`).
    fn anchored(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }

    /// Drops the takeovers whose waits are over, and over by a takeover
    /// wait (a later takeover in the same run counts from them).
    fn forget_settled(&mut self, now: Instant) {
        let wait = self.settings.takeover_wait();
        self.taken
            .retain(|t| t.settled().is_none_or(|from| from + wait > now));
    }

    /// Whether this node may grant its `next` a lease at `now` (it answers
    /// its probe while its view links to it), noting the grant if so: not
    /// while the wait on an arc it took over runs. The dead node's lease,
    /// granted by this node, may cover more than this node knows of (the dead
    /// node may itself have taken over the arc of the node after it, which
    /// this node now links to): a lease granted before it has lapsed could
    /// give an arc two serving owners.
    ///
    /// Refused while a wait runs ([`Grant::NotBefore`]), it says when the
    /// last wait ends, so that `next` asks again then rather than at its
    /// next probe round (up to a probe interval later, with its arc
    /// unleased meanwhile once the dead node's grant has lapsed). Refused
    /// while a takeover awaits the registry's verdict ([`Grant::Refused`]),
    /// it cannot say.
    ///
    /// Judged by a registry, it also grants nothing while it holds no lease
    /// itself ([`Grant::Refused`]): the node after it may be taken over by
    /// the node before it, which must know when the last lease in the run
    /// lapsed (see [`Leases::took_over`]).
    pub fn granting(&mut self, next: Position, now: Instant) -> Grant {
        self.forget_settled(now);
        if self.taken.iter().any(|t| t.settled().is_none()) || (self.judged && !self.anchored(now))
        {
            return Grant::Refused;
        }
        let waits = self.taken.iter().filter_map(Taken::settled);
        if let Some(last) = waits.filter(|from| *from > now).max() {
            return Grant::NotBefore(last);
        }
        self.granted_to = Some((next, now));
        Grant::Granted
    }

    /// Whether this node, having just granted its `next` a lease at `now`,
    /// should ask for one back at once rather than at its next probe round:
    /// when that `next` is also its `prev` (a ring of two) and this node holds
    /// no lease. Mostly that is a node alone that just took a joiner in:
    /// alone it served without a lease, linked it needs one from the joiner,
    /// and the joiner's first lease request is the first sign that it serves
    /// and may grant. (Asked at the next round instead, the arc waited up to
    /// a probe interval: writes stalled 345-421 ms on a fresh cluster.)
    pub fn ask_back(&self, next_is_prev: bool, now: Instant) -> bool {
        next_is_prev && self.until.is_none_or(|until| until <= now)
    }

    /// The settings.
    pub fn settings(&self) -> LeaseSettings {
        self.settings
    }

    /// What to do with `answer`, which `prev` gave at `at` to a probe that
    /// asked it for a lease, `links_here` if the answer names this node as
    /// `prev`'s `next` (a grant counts only then). Changes nothing: a grant
    /// takes effect with [`Leases::granted`], once the caller has done what
    /// [`Answered::GrantedAfterGap`] asks first.
    ///
    /// A grant follows a gap if this node held a lease that lapsed before
    /// the grant arrived. (A first lease is not counted: a joiner was handed
    /// its arc by the node that served it.) While it held none, its arc may
    /// have been taken over and written to by another node, whose writes
    /// this node lacks. A refusal that says when a lease may be had is asked
    /// again then, stretched by [`LeaseSettings::ask_again_after`].
    pub fn answered(&self, answer: Option<Answer>, links_here: bool, at: Instant) -> Answered {
        match answer {
            _ if !links_here => Answered::Nothing,
            Some(Answer::Granted) if self.until.is_some_and(|until| until < at) => {
                Answered::GrantedAfterGap
            }
            Some(Answer::Granted) => Answered::Granted,
            Some(Answer::After(wait)) => (at.checked_add(self.settings.ask_again_after(wait)))
                .map_or(Answered::Nothing, Answered::AskAgainAt),
            None => Answered::Nothing,
        }
    }

    /// `prev` granted a lease in answer to a probe sent at `asked_at` (its view
    /// linked to this node, and it noted the grant): the arc is leased until
    /// `asked_at` plus the lease length.
    ///
    /// A grant asked for before this node heard it was judged dead (an
    /// answer held up in the network) extends the lease (its grantor waits
    /// for it before it serves the arc), but does not count as being linked
    /// in again: root leases still do not count.
    pub fn granted(&mut self, asked_at: Instant) {
        let until = asked_at + self.settings.length;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
        self.failed_since_linked = false;
        if self.heard_at.is_none_or(|heard| asked_at > heard) {
            self.relink_needed = false;
        }
    }

    /// This node declared a neighbour dead (its next or its prev).
    pub fn neighbour_failed(&mut self) {
        self.failed_since_linked = true;
    }

    /// This node declared its next, `dead`, dead at `now` and took over `arc`
    /// (from the dead node's ID to the new next's): served once any lease
    /// `dead` may hold has lapsed.
    ///
    /// Judged by a registry, also only once the registry has judged `dead`
    /// dead ([`Leases::judged_dead`]): its root lease has lapsed, and it
    /// gets none again. And if this node linked to `dead` by taking over the
    /// node before it, `dead` may hold a lease from that one, which (judged,
    /// granting only while leased itself) lapses at most a takeover wait
    /// after that one's: the arc waits for that too.
    pub fn took_over(&mut self, arc: Arc, dead: Position, now: Instant) {
        self.failed_since_linked = true;
        let about_dead = |record: Option<(Position, Instant)>| {
            record.filter(|(id, _)| *id == dead).map(|(_, at)| at)
        };
        // Leases `dead` holds were granted by this node (the last noted) or,
        // before this node linked to it, by others.
        let since = match (about_dead(self.linked), about_dead(self.granted_to)) {
            (Some(linked), granted) => granted.map_or(linked, |g| g.max(linked)),
            (None, _) => now,
        };
        let wait = self.settings.takeover_wait();
        let mut taken = Taken {
            arc,
            dead,
            declared: now,
            from: (since + wait).max(now),
            verdict_due: self.judged,
            after: None,
        };
        // Only a node after the earlier one (going round from this node)
        // can hold a lease from it: the earlier node grants only its `next`,
        // and it could reach round past this node to one before itself only
        // by a takeover of this node, which the registry does not judge dead
        // while it heartbeats (a `next` found again among the registry's
        // members after passing over both is not in the run). No record of
        // the earlier takeover: it settled more than a takeover wait ago.
        let behind = |earlier: Position| self.me.distance_to(earlier) < self.me.distance_to(dead);
        let run = self
            .run
            .filter(|(next, earlier)| self.judged && *next == dead && behind(*earlier));
        if let Some((_, earlier)) = run
            && let Some(t) = self.taken.iter().rev().find(|t| t.dead == earlier)
        {
            match t.settled() {
                Some(at) => taken.from = taken.from.max(at + wait),
                None => taken.after = Some((earlier, t.declared)),
            }
        }
        self.taken.push(taken);
        self.last_taken = Some(dead);
        if self.declared_dead.len() >= DECLARED_DEAD_KEPT {
            self.declared_dead.remove(0);
        }
        self.declared_dead.push(dead);
    }

    /// Whether `position`, in this node's arc, may be served at `now`; `alone`
    /// says whether the node is alone in its ring.
    pub fn serves(&mut self, position: Position, alone: bool, now: Instant) -> Serve {
        self.serves_arc(Arc::point(position), alone, now)
    }

    /// The registry judged the nodes in `question` dead (from the dead node
    /// on), asked at `asked` (before the question was sent); this node heard
    /// so at `at`. Only takeovers declared by then, of arcs the question
    /// covers, are settled: a late answer must not settle a later takeover
    /// of the same node (linked to again meanwhile, leased again, and
    /// declared dead again, perhaps over a wider arc: the registry judged
    /// the earlier one). Whether any takeover was waiting for it.
    ///
    /// `others` is how many more nodes the registry judged in the arc (this
    /// node passed over them without knowing them): each may hold a lease
    /// from the one before it, which lapses a takeover wait after that
    /// one's, so the arc waits as many more takeover waits.
    pub fn judged_dead(&mut self, question: Arc, asked: Instant, at: Instant, others: u32) -> bool {
        let mut changed = false;
        let wait = self.settings.takeover_wait();
        let judged = |t: &Taken| {
            t.dead == question.start
                && t.verdict_due
                && t.declared <= asked
                && question.covers(&t.arc)
        };
        for t in self.taken.iter_mut().filter(|t| judged(t)) {
            t.verdict_due = false;
            t.from = t.from.max(at) + wait * others;
            changed = true;
        }
        // Takeovers that waited for this one (a run of dead nodes), and
        // those that waited for them, wait a takeover wait after it now.
        let mut more = changed;
        while more {
            let settled: Vec<((Position, Instant), Instant)> = (self.taken.iter())
                .filter_map(|t| t.settled().map(|from| ((t.dead, t.declared), from)))
                .collect();
            more = false;
            for t in self.taken.iter_mut() {
                let Some(earlier) = t.after else { continue };
                if let Some((_, from)) = settled.iter().find(|(which, _)| *which == earlier) {
                    t.from = t.from.max(*from + wait);
                    t.after = None;
                    more = true;
                }
            }
        }
        changed
    }

    /// The arcs taken over that wait for the registry's verdict, each from
    /// its dead node (the registry judges every node it knows there).
    pub fn verdicts_due(&self) -> Vec<Arc> {
        let mut due: Vec<Arc> = (self.taken.iter())
            .filter(|t| t.verdict_due)
            .map(|t| t.arc)
            .collect();
        due.sort_by_key(|a| (a.start, a.end));
        due.dedup();
        due
    }

    /// The registry granted this node a root lease of `length`, in answer
    /// to a heartbeat sent at `sent`: the arc is leased until `sent` plus
    /// `length`. The registry grants none to a node it judged dead that has
    /// not heard so, and judges no node dead before its last root lease has
    /// lapsed: while it has not, no other node took its arc over, so a root
    /// lease may also start a lease after a gap (a ring whose leases all
    /// lapsed, while the registry was down, leases itself again). Not once
    /// this node heard it was judged dead ([`Leases::registry_verdicts`]):
    /// its arc was taken over, and only a grant from a `prev` that links to
    /// it again makes it an owner again. Whether the lease changed.
    pub fn rooted(&mut self, sent: Instant, length: Duration) -> bool {
        if !self.judged || self.relink_needed {
            return false;
        }
        self.root_length = length;
        let until = sent + length;
        if self.until.is_some_and(|u| u >= until) {
            return false;
        }
        self.until = Some(until);
        true
    }

    /// The registry says it has judged this node dead `count` times (a
    /// heartbeat's answer): if that is news, its lease ends at `now` (the
    /// node that took its arc over relies on that), root leases count no
    /// more until a `prev` grants it a lease again, and it is as if it had
    /// declared a neighbour dead (alone, it serves nothing without a lease).
    /// Whether it was
    /// news.
    pub fn registry_verdicts(&mut self, count: u64, now: Instant) -> bool {
        if count <= self.verdicts_seen {
            return false;
        }
        self.verdicts_seen = count;
        self.until = self.until.map(|u| u.min(now));
        self.failed_since_linked = true;
        self.relink_needed = true;
        self.heard_at = Some(now);
        true
    }

    /// This process registered with the registry when it had judged this
    /// node's ID dead `count` times: those verdicts concern earlier processes
    /// (a restart), not this one, which joins afresh.
    pub fn registered(&mut self, count: u64) {
        self.verdicts_seen = self.verdicts_seen.max(count);
    }

    /// How many times this node heard the registry judged it dead.
    pub fn verdicts_seen(&self) -> u64 {
        self.verdicts_seen
    }

    /// Whether all of `arc`, in this node's arc, may be served at `now` (a
    /// listing's range): not before the last wait on any arc taken over that
    /// it overlaps, nor while one of them awaits the registry's verdict.
    pub fn serves_arc(&mut self, arc: Arc, alone: bool, now: Instant) -> Serve {
        self.forget_settled(now);
        let leased = match self.until {
            Some(until) => until > now,
            None => false,
        } || (alone && !self.failed_since_linked);
        if !leased {
            return Serve::Unleased;
        }
        let mut last = None;
        for t in self.taken.iter().filter(|t| t.arc.overlaps(&arc)) {
            match t.settled() {
                None => return Serve::Unleased,
                Some(from) if from > now => last = last.max(Some(from)),
                Some(_) => {}
            }
        }
        match last {
            Some(from) => Serve::From(from),
            None => Serve::Now,
        }
    }

    /// Whether this node, alone in its ring, may serve: it did not get there
    /// by declaring a neighbour dead.
    pub fn may_serve_alone(&self) -> bool {
        !self.failed_since_linked
    }

    /// What a probe of `next` (or a hand-off it took part in) confirmed of
    /// this node's arc: `Some` arc from this node up to `next`, which knows
    /// this node as its `prev`; `None`, nothing (the node was leased again
    /// after a gap and may have been replaced, became alone, or has a
    /// stand-in `next`). Whether it changed.
    pub fn next_probed(&mut self, confirmed: Option<Arc>) -> bool {
        std::mem::replace(&mut self.confirmed, confirmed) != confirmed
    }

    /// A probe of `next` found that it knows a node between this one and it
    /// as its `prev`, `closer`: `upto` runs from this node to that one,
    /// `to_next` to `next`. If this node declared `closer` dead and took its
    /// arc over (the node after a dead one names it until it declares it
    /// dead too), the arc up to `closer` confirmed before is confirmed up to
    /// `next` now: `closer`'s arc is this node's, its lease waited out.
    /// Otherwise it confirms nothing new (more nodes may lie between), and
    /// what was confirmed is kept only up to `closer`. Whether it changed.
    pub fn next_narrowed(&mut self, closer: Position, upto: Arc, to_next: Arc) -> bool {
        let Some(confirmed) = self.confirmed else {
            return false;
        };
        if self.declared_dead.contains(&closer) && confirmed.covers(&upto) {
            return self.next_probed(Some(to_next));
        }
        self.next_moved_closer(upto)
    }

    /// This node took a node nearer than its `next` as its `next` (found
    /// by a probe of `next`, [`Leases::next_narrowed`], or among the
    /// registry's members): what was confirmed is kept only up to it,
    /// `upto` running from this node to it. Whether it changed.
    pub fn next_moved_closer(&mut self, upto: Arc) -> bool {
        let Some(confirmed) = self.confirmed else {
            return false;
        };
        let now = if upto.covers(&confirmed) {
            confirmed
        } else {
            upto
        };
        self.next_probed(Some(now))
    }

    /// Whether `arc`, in this node's arc, lies in what its `next` confirmed
    /// ([`Leases::next_probed`]). A lease covers the arc as this node sees
    /// it, and that can reach further than its neighbours know: a node that
    /// rejoined the ring takes its new `prev` as a stand-in `next` until
    /// stabilize finds the true one, and a node that took its dead `next`'s
    /// arc over may reach past nodes it has not heard of. A node not alone
    /// serves only what its `next` confirmed.
    pub fn confirms(&self, arc: Arc) -> bool {
        self.confirmed.is_some_and(|c| c.covers(&arc))
    }

    /// Until when the arc is leased, if it ever was.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn leases() -> Leases {
        Leases::new(LeaseSettings {
            length: 2 * SECOND,
            drift: 0.01,
        })
    }

    #[test]
    fn a_lease_lasts_its_length_from_when_it_was_asked_for() {
        let (mut l, t0) = (leases(), Instant::now());
        assert_eq!(l.serves(Position(5), false, t0), Serve::Unleased);
        l.granted(t0);
        assert_eq!(l.serves(Position(5), false, t0 + SECOND), Serve::Now);
        assert_eq!(
            l.serves(Position(5), false, t0 + 2 * SECOND),
            Serve::Unleased
        );
    }

    #[test]
    fn a_late_answer_to_an_old_probe_does_not_shorten_the_lease() {
        let (mut l, t0) = (leases(), Instant::now());
        l.granted(t0 + SECOND);
        l.granted(t0);
        assert_eq!(
            l.serves(Position(5), false, t0 + 2500 * SECOND / 1000),
            Serve::Now
        );
    }

    #[test]
    fn the_takeover_wait_outlasts_any_lease_granted_before_it() {
        let settings = LeaseSettings {
            length: 2 * SECOND,
            drift: 0.01,
        };
        let wait = settings.takeover_wait();
        // The grantee's clock may run 1% slow, the taker's 1% fast: the wait
        // on the taker's clock must cover the lease on the grantee's.
        let lease_real = settings.length.as_secs_f64() / (1.0 - settings.drift);
        let wait_real = wait.as_secs_f64() / (1.0 + settings.drift);
        assert!(wait_real > lease_real, "{wait_real} <= {lease_real}");
        assert!(
            wait < settings.length.mul_f64(1.03),
            "no longer than needed: {wait:?}"
        );
    }

    #[test]
    fn an_arc_taken_over_is_served_only_after_the_wait() {
        let (mut l, t0) = (leases(), Instant::now());
        l.granted(t0);
        l.linked_to(Position(100), t0);
        l.took_over(Arc::new(Position(100), Position(200)), Position(100), t0);
        let wait = l.settings().takeover_wait();
        assert_eq!(l.serves(Position(150), false, t0), Serve::From(t0 + wait));
        // The rest of the arc is served as before.
        assert_eq!(l.serves(Position(50), false, t0), Serve::Now);
        l.granted(t0 + wait);
        assert_eq!(l.serves(Position(150), false, t0 + wait), Serve::Now);
    }

    #[test]
    fn a_range_waits_if_any_part_of_it_was_taken_over() {
        let (mut l, t0) = (leases(), Instant::now());
        l.granted(t0);
        l.linked_to(Position(100), t0);
        l.took_over(Arc::new(Position(100), Position(200)), Position(100), t0);
        let wait = l.settings().takeover_wait();
        let range = |s, e| Arc::new(Position(s), Position(e));
        assert_eq!(l.serves_arc(range(50, 100), false, t0), Serve::Now);
        assert_eq!(
            l.serves_arc(range(50, 101), false, t0),
            Serve::From(t0 + wait)
        );
        assert_eq!(
            l.serves_arc(range(199, 300), false, t0),
            Serve::From(t0 + wait)
        );
    }

    #[test]
    fn nothing_is_served_without_a_lease_even_past_a_takeover_wait() {
        let (mut l, t0) = (leases(), Instant::now());
        l.took_over(Arc::new(Position(100), Position(200)), Position(100), t0);
        let later = t0 + 10 * SECOND;
        assert_eq!(l.serves(Position(150), false, later), Serve::Unleased);
    }

    #[test]
    fn the_wait_counts_from_the_last_grant_to_the_dead_node() {
        let (mut l, t0) = (leases(), Instant::now());
        let (dead, arc) = (Position(100), Arc::new(Position(100), Position(200)));
        l.granted(t0);
        l.linked_to(dead, t0);
        assert_eq!(l.granting(dead, t0 + SECOND), Grant::Granted);
        // Declared dead 2.5 s in (three missed probes after the last grant).
        let declared = t0 + 2500 * SECOND / 1000;
        l.took_over(arc, dead, declared);
        let wait = l.settings().takeover_wait();
        l.granted(declared);
        assert_eq!(
            l.serves(Position(150), false, declared),
            Serve::From(t0 + SECOND + wait)
        );
        // Long after the last grant, the arc is served at once.
        l.took_over(arc, dead, t0 + 10 * SECOND);
        l.granted(t0 + 10 * SECOND);
        assert_eq!(l.serves(Position(150), false, t0 + 10 * SECOND), Serve::Now);
    }

    #[test]
    fn no_lease_is_granted_while_a_takeover_wait_runs() {
        // The dead node may have taken over the arc of the node after it,
        // which this node now links to: granting that node a lease before
        // the dead node's has lapsed would give the arc two serving owners.
        let (mut l, t0) = (leases(), Instant::now());
        let (dead, after) = (Position(100), Position(200));
        l.linked_to(dead, t0);
        assert_eq!(l.granting(dead, t0 + SECOND), Grant::Granted);
        let declared = t0 + 2500 * SECOND / 1000;
        l.took_over(Arc::new(dead, after), dead, declared);
        l.linked_to(after, declared);
        let lapsed = t0 + SECOND + l.settings().takeover_wait();
        assert_eq!(
            l.granting(after, declared),
            Grant::NotBefore(lapsed),
            "refused inside the wait, saying when it ends"
        );
        assert_eq!(
            l.granting(after, lapsed - Duration::from_millis(1)),
            Grant::NotBefore(lapsed)
        );
        assert_eq!(
            l.granting(after, lapsed),
            Grant::Granted,
            "the dead node's lease has lapsed"
        );
    }

    #[test]
    fn a_refused_node_asks_again_once_either_clock_may_have_run_off() {
        let settings = LeaseSettings::default();
        assert_eq!(
            settings.ask_again_after(Duration::from_millis(1000)),
            Duration::from_millis(1020),
            "1% drift, either way"
        );
        let odd = LeaseSettings {
            drift: 7.0,
            ..settings
        };
        assert_eq!(
            odd.ask_again_after(Duration::from_millis(1000)),
            Duration::from_millis(2000),
            "the drift is clamped as for the takeover wait"
        );
    }

    #[test]
    fn a_refusal_names_the_end_of_the_last_takeover_wait() {
        let (mut l, t0) = (leases(), Instant::now());
        let (first, second, after) = (Position(100), Position(150), Position(200));
        l.took_over(Arc::new(first, second), first, t0);
        l.took_over(Arc::new(second, after), second, t0 + SECOND);
        let last = t0 + SECOND + l.settings().takeover_wait();
        assert_eq!(l.granting(after, t0 + SECOND), Grant::NotBefore(last));
        assert_eq!(l.granting(after, last), Grant::Granted);
    }

    #[test]
    fn a_grant_that_follows_a_gap_says_so() {
        let (mut l, t0) = (leases(), Instant::now());
        let granted = Some(Answer::Granted);
        assert_eq!(
            l.answered(granted, true, t0),
            Answered::Granted,
            "a first lease: the arc was handed over"
        );
        l.granted(t0);
        let length = l.settings().length;
        assert_eq!(
            l.answered(granted, true, t0 + length),
            Answered::Granted,
            "renewed as it ends"
        );
        assert_eq!(
            l.answered(granted, true, t0 + length + Duration::from_millis(1)),
            Answered::GrantedAfterGap
        );
    }

    #[test]
    fn a_refusal_is_asked_again_when_it_says_stretched_by_the_drift() {
        let (l, t0) = (leases(), Instant::now());
        let refused = Some(Answer::After(SECOND));
        assert_eq!(
            l.answered(refused, true, t0),
            Answered::AskAgainAt(t0 + Duration::from_millis(1020))
        );
    }

    #[test]
    fn no_answer_and_any_answer_of_a_prev_that_links_elsewhere_change_nothing() {
        let (mut l, t0) = (leases(), Instant::now());
        l.granted(t0);
        let later = t0 + 3 * SECOND;
        assert_eq!(l.answered(None, true, later), Answered::Nothing);
        for answer in [Answer::Granted, Answer::After(SECOND)] {
            assert_eq!(l.answered(Some(answer), false, later), Answered::Nothing);
        }
    }

    #[test]
    fn leases_granted_before_this_node_linked_to_the_dead_one_count_too() {
        // Another node was the dead one's prev until this node linked to it
        // at t0 + 1 s (a join between them): its leases predate the link.
        let (mut l, t0) = (leases(), Instant::now());
        let (dead, arc) = (Position(100), Arc::new(Position(100), Position(200)));
        l.granted(t0);
        assert_eq!(l.granting(dead, t0), Grant::Granted);
        l.linked_to(Position(50), t0 + SECOND / 2);
        l.linked_to(dead, t0 + SECOND);
        l.took_over(arc, dead, t0 + 2 * SECOND);
        let wait = l.settings().takeover_wait();
        assert_eq!(
            l.serves(Position(150), false, t0),
            Serve::From(t0 + SECOND + wait)
        );
    }

    #[test]
    fn not_knowing_when_it_linked_waits_from_the_declaration() {
        let (mut l, t0) = (leases(), Instant::now());
        let (dead, arc) = (Position(100), Arc::new(Position(100), Position(200)));
        l.granted(t0);
        l.linked_to(Position(7), t0);
        l.took_over(arc, dead, t0 + SECOND);
        let wait = l.settings().takeover_wait();
        assert_eq!(
            l.serves(Position(150), false, t0),
            Serve::From(t0 + SECOND + wait)
        );
    }

    #[test]
    fn only_what_next_confirmed_is_served() {
        let mut l = Leases::new(LeaseSettings::default());
        assert!(!l.confirms(Arc::point(Position(150))), "nothing yet");
        // `next` at 200 knows this node (100) as its prev.
        assert!(l.next_probed(Some(Arc::new(Position(100), Position(200)))));
        assert!(l.confirms(Arc::new(Position(120), Position(180))));
        assert!(
            !l.next_probed(Some(Arc::new(Position(100), Position(200)))),
            "unchanged"
        );
        let to = |end| Arc::new(Position(100), Position(end));
        // A node at 150 between them that `next` knows: only up to that one
        // stays confirmed, and nothing beyond it is confirmed later by it.
        assert!(l.next_narrowed(Position(150), to(150), to(200)));
        assert!(l.confirms(Arc::point(Position(149))));
        assert!(!l.confirms(Arc::point(Position(150))));
        assert!(!l.confirms(Arc::new(Position(120), Position(180))));
        assert!(!l.next_narrowed(Position(190), to(190), to(200)));
        assert!(!l.confirms(Arc::point(Position(160))));
        // Gone after a gap: none of it, and narrowing confirms nothing.
        l.next_probed(None);
        assert!(!l.confirms(Arc::point(Position(120))));
        assert!(!l.next_narrowed(Position(150), to(150), to(200)));
        assert!(!l.confirms(Arc::point(Position(120))));
    }

    /// After a takeover, the node after the dead one names the dead one as
    /// its `prev` until it declares it dead too: the arc confirmed up to the
    /// dead node is confirmed up to the new `next`.
    #[test]
    fn a_taken_arc_is_confirmed_while_the_next_still_names_the_dead_node() {
        let t0 = Instant::now();
        let to = |end| Arc::new(Position(100), Position(end));
        let mut l = Leases::new(LeaseSettings::default());
        l.next_probed(Some(to(150)));
        l.took_over(Arc::new(Position(150), Position(200)), Position(150), t0);
        assert!(l.next_narrowed(Position(150), to(150), to(200)));
        assert!(l.confirms(to(200)));
        // Not for a node it did not declare dead.
        let mut l = Leases::new(LeaseSettings::default());
        l.next_probed(Some(to(150)));
        l.next_narrowed(Position(150), to(150), to(200));
        assert!(!l.confirms(Arc::point(Position(170))));
    }

    /// A node that granted a lease to a `next` that is also its `prev` asks
    /// for one back at once while it holds none, and only then.
    #[test]
    fn a_node_in_a_ring_of_two_asks_back_for_a_lease_it_lacks() {
        let t0 = Instant::now();
        let mut l = Leases::new(LeaseSettings::default());
        assert!(l.ask_back(true, t0), "never leased");
        assert!(!l.ask_back(false, t0), "its next is not its prev");
        l.granted(t0);
        assert!(!l.ask_back(true, t0 + SECOND), "leased");
        assert!(l.ask_back(true, t0 + 3 * SECOND), "the lease lapsed");
    }

    /// A `next` found among the registry's members moves the confirmed arc
    /// back to it, and never widens it, even over a node declared dead.
    #[test]
    fn a_closer_next_from_the_registry_only_narrows_what_is_confirmed() {
        let t0 = Instant::now();
        let to = |end| Arc::new(Position(100), Position(end));
        let mut l = Leases::new(LeaseSettings::default());
        l.next_probed(Some(to(200)));
        l.took_over(Arc::new(Position(150), Position(200)), Position(150), t0);
        assert!(l.next_moved_closer(to(150)));
        assert!(l.confirms(Arc::point(Position(149))));
        assert!(!l.confirms(Arc::point(Position(150))));
        assert!(!l.next_moved_closer(to(180)), "nothing is confirmed anew");
        assert!(!l.confirms(Arc::point(Position(160))));
        l.next_probed(None);
        assert!(!l.next_moved_closer(to(150)));
        assert!(!l.confirms(Arc::point(Position(120))));
    }

    #[test]
    fn an_arc_is_handed_to_a_joiner_only_by_a_node_that_may_serve_it() {
        let t0 = Instant::now();
        assert_eq!(hand_over(Serve::Now, false, false, false), HandOver::Yes);
        assert_eq!(hand_over(Serve::Now, true, false, false), HandOver::Yes);
        assert_eq!(hand_over(Serve::Now, false, true, false), HandOver::No);
        assert_eq!(
            hand_over(Serve::Unleased, false, false, false),
            HandOver::No
        );
        assert_eq!(
            hand_over(Serve::From(t0), false, false, false),
            HandOver::No
        );
        assert_eq!(hand_over(Serve::From(t0), true, false, false), HandOver::No);
        assert_eq!(
            hand_over(Serve::Unleased, true, false, false),
            HandOver::IfNoOtherMember
        );
        assert_eq!(hand_over(Serve::Unleased, true, false, true), HandOver::No);
        assert_eq!(hand_over(Serve::Now, true, false, true), HandOver::Yes);
    }

    #[test]
    fn a_node_that_started_alone_serves_alone() {
        let (mut l, t0) = (leases(), Instant::now());
        assert_eq!(l.serves(Position(5), true, t0), Serve::Now);
    }

    #[test]
    fn a_node_left_alone_by_failures_serves_nothing_until_linked_again() {
        let (mut l, t0) = (leases(), Instant::now());
        l.granted(t0);
        l.neighbour_failed();
        let later = t0 + 3 * SECOND;
        assert_eq!(l.serves(Position(5), true, later), Serve::Unleased);
        l.granted(later);
        assert_eq!(l.serves(Position(5), true, later), Serve::Now);
    }

    fn judged() -> Leases {
        leases().judged_by_registry(Position(0))
    }

    /// Judged by a registry, a takeover waits for its verdict as well as
    /// for the dead node's lease: served from the later of the two.
    #[test]
    fn judged_a_taken_arc_waits_for_the_registry_s_verdict() {
        let (mut l, t0) = (judged(), Instant::now());
        let (dead, after) = (Position(100), Position(200));
        l.granted(t0);
        l.linked_to(dead, t0);
        l.took_over(Arc::new(dead, after), dead, t0);
        l.linked_to(after, t0);
        let wait = l.settings().takeover_wait();
        let long_after = t0 + 10 * SECOND;
        l.granted(long_after);
        assert_eq!(l.serves(Position(150), false, long_after), Serve::Unleased);
        assert_eq!(l.granting(after, long_after), Grant::Refused);
        assert_eq!(l.verdicts_due(), vec![Arc::new(dead, after)]);
        assert!(l.judged_dead(Arc::new(dead, after), t0 + SECOND, t0 + SECOND, 0));
        assert!(l.verdicts_due().is_empty());
        assert_eq!(l.serves(Position(150), false, t0), Serve::From(t0 + wait));
        assert!(
            !l.judged_dead(Arc::new(dead, after), t0 + 2 * SECOND, t0 + 2 * SECOND, 0),
            "nothing more awaited"
        );
        // A verdict later than the lease's lapse sets the start.
        let mut l = judged();
        l.granted(t0);
        l.linked_to(dead, t0);
        l.took_over(Arc::new(dead, after), dead, t0);
        l.judged_dead(Arc::new(dead, after), t0 + 3 * SECOND, t0 + 3 * SECOND, 0);
        assert_eq!(
            l.serves(Position(150), false, t0),
            Serve::From(t0 + 3 * SECOND)
        );
    }

    /// Judged by a registry, a node grants only while it holds a lease
    /// itself (a new node, once the registry or its `prev` leased it).
    #[test]
    fn judged_a_node_grants_only_while_it_is_leased_itself() {
        let (mut l, t0) = (judged(), Instant::now());
        let next = Position(100);
        assert_eq!(l.granting(next, t0), Grant::Refused, "a new node");
        l.rooted(t0, SECOND);
        assert_eq!(l.granting(next, t0), Grant::Granted, "rooted");
        l.granted(t0);
        assert_eq!(l.granting(next, t0 + SECOND), Grant::Granted);
        assert_eq!(l.granting(next, t0 + 2 * SECOND), Grant::Refused);
        let mut unjudged = leases();
        unjudged.granted(t0);
        assert_eq!(unjudged.granting(next, t0 + 5 * SECOND), Grant::Granted);
    }

    /// Two adjacent nodes `A` (100) and `B` (150) cut off together: the
    /// node before them takes both over. `B`'s lease came from `A`, which
    /// grants only while it is leased itself, so it lapses at most a
    /// takeover wait after `A`'s takeover settles: `B`'s arc waits for that,
    /// and for `B`'s own verdict.
    #[test]
    fn judged_a_run_of_dead_nodes_is_served_a_wait_after_the_one_before() {
        let (mut l, t0) = (judged(), Instant::now());
        let (a, b, c) = (Position(100), Position(150), Position(200));
        let wait = l.settings().takeover_wait();
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, b), a, t0 + SECOND);
        l.linked_to(b, t0 + SECOND);
        l.took_over(Arc::new(b, c), b, t0 + 2 * SECOND);
        l.linked_to(c, t0 + 2 * SECOND);
        assert!(l.judged_dead(Arc::new(b, c), t0 + 2 * SECOND, t0 + 2 * SECOND, 0));
        assert_eq!(
            l.serves(Position(170), false, t0),
            Serve::Unleased,
            "A's takeover has not settled"
        );
        l.judged_dead(Arc::new(a, b), t0 + 3 * SECOND, t0 + 3 * SECOND, 0);
        assert_eq!(
            l.serves(Position(120), false, t0),
            Serve::From(t0 + 3 * SECOND)
        );
        assert_eq!(
            l.serves(Position(170), false, t0),
            Serve::From(t0 + 3 * SECOND + wait)
        );
        // Unjudged, B's arc waits only for B's own wait.
        let mut l = leases();
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, b), a, t0 + SECOND);
        l.linked_to(b, t0 + SECOND);
        l.took_over(Arc::new(b, c), b, t0 + 2 * SECOND);
        assert_eq!(
            l.serves(Position(170), false, t0),
            Serve::From(t0 + SECOND + wait)
        );
    }

    /// A takeover still waiting for its verdict is dropped when the node
    /// links to the suspected node again (it serves: it was cut off from
    /// this node only), and so are those that waited for it.
    #[test]
    fn judged_linking_back_to_a_suspected_node_drops_its_takeover() {
        let (mut l, t0) = (judged(), Instant::now());
        let (a, b, c) = (Position(100), Position(150), Position(200));
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, b), a, t0);
        l.linked_to(b, t0);
        l.took_over(Arc::new(b, c), b, t0);
        l.linked_to(c, t0);
        l.linked_to(a, t0 + SECOND);
        assert!(l.verdicts_due().is_empty());
        l.granted(t0 + SECOND);
        assert_eq!(l.granting(a, t0 + SECOND), Grant::Granted);
    }

    /// A root lease from the registry leases the arc, after a gap too (the
    /// registry judged this node dead to no one); once this node hears it
    /// was judged dead, its lease ends, and root leases count again only
    /// after a `prev` grants it one.
    #[test]
    fn judged_a_root_lease_counts_until_the_node_hears_it_was_judged_dead() {
        let (mut l, t0) = (judged(), Instant::now());
        assert!(l.rooted(t0, 2 * SECOND), "a new node");
        assert!(l.rooted(t0 + SECOND, 2 * SECOND));
        assert!(!l.rooted(t0, 2 * SECOND), "an older answer changes nothing");
        assert_eq!(l.serves(Position(5), false, t0 + 2 * SECOND), Serve::Now);
        assert_eq!(
            l.serves(Position(5), false, t0 + 4 * SECOND),
            Serve::Unleased
        );
        assert!(l.rooted(t0 + 4 * SECOND, 2 * SECOND), "after a gap");
        assert_eq!(l.serves(Position(5), false, t0 + 5 * SECOND), Serve::Now);
        // Heard of a verdict: the lease ends, roots count no more.
        assert!(l.registry_verdicts(1, t0 + 5 * SECOND));
        assert!(!l.registry_verdicts(1, t0 + 5 * SECOND), "not news");
        assert_eq!(l.verdicts_seen(), 1);
        assert_eq!(
            l.serves(Position(5), false, t0 + 5 * SECOND),
            Serve::Unleased
        );
        assert!(!l.rooted(t0 + 6 * SECOND, 2 * SECOND));
        l.granted(t0 + 6 * SECOND);
        assert!(l.rooted(t0 + 7 * SECOND, 2 * SECOND), "linked in again");
        // Unjudged, root leases do not count.
        let mut unjudged = leases();
        assert!(!unjudged.rooted(t0, 2 * SECOND));
    }

    /// A node that passed over two dead nodes `A` (100) and `B` (150) and
    /// finds `A` again as its `next` (among the registry's members, listed
    /// for a while after they died) does not chain `A`'s wait to `B`'s: `B`
    /// lies after `A`, so `A` holds no lease from it. (Chained, each pass
    /// added a takeover wait: a survivor of two crashes served nothing for
    /// seconds.)
    #[test]
    fn judged_a_next_found_again_before_the_run_does_not_wait_for_it() {
        let (mut l, t0) = (judged(), Instant::now());
        let (a, b, me) = (Position(100), Position(150), Position(0));
        let wait = l.settings().takeover_wait();
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, b), a, t0);
        l.linked_to(b, t0);
        l.judged_dead(Arc::new(a, b), t0, t0, 0);
        l.took_over(Arc::new(b, a), b, t0);
        let again = t0 + SECOND / 2;
        l.linked_to(a, again);
        l.judged_dead(Arc::new(b, a), t0, t0, 0);
        l.took_over(Arc::new(a, me), a, t0 + SECOND);
        l.linked_to(me, t0 + SECOND);
        l.judged_dead(Arc::new(a, me), t0 + SECOND, t0 + SECOND, 0);
        assert_eq!(
            l.serves(Position(120), true, t0),
            Serve::From(again + wait),
            "A's own wait, counted from when this node linked to it again"
        );
    }

    /// Under a registry that judges no deaths (an earlier version), the
    /// takeovers that waited for its verdict wait for the lease only, and
    /// grants need no lease of the grantor's own.
    #[test]
    fn judged_a_registry_that_does_not_judge_turns_judging_off() {
        let (mut l, t0) = (judged(), Instant::now());
        let (dead, after) = (Position(100), Position(200));
        l.granted(t0);
        l.linked_to(dead, t0);
        l.took_over(Arc::new(dead, after), dead, t0);
        l.linked_to(after, t0);
        assert_eq!(l.serves(Position(150), false, t0), Serve::Unleased);
        l.registry_judges(false, t0);
        assert!(!l.judged());
        let wait = l.settings().takeover_wait();
        assert_eq!(l.serves(Position(150), false, t0), Serve::From(t0 + wait));
        assert_eq!(l.granting(after, t0 + 10 * SECOND), Grant::Granted);
        assert!(!l.rooted(t0, 2 * SECOND));
        l.registry_judges(true, t0);
        assert!(l.rooted(t0 + 10 * SECOND, 2 * SECOND));
    }

    /// A verdict counts only for takeovers declared before it was asked,
    /// of arcs it covers: a late answer about an earlier takeover of the
    /// same node settles neither a later one nor a wider one.
    #[test]
    fn judged_a_late_verdict_settles_only_what_it_was_asked_about() {
        let (mut l, t0) = (judged(), Instant::now());
        let (a, b, c) = (Position(100), Position(150), Position(200));
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, c), a, t0 + SECOND);
        let later = t0 + 3 * SECOND;
        assert!(!l.judged_dead(Arc::new(a, b), later, later, 0), "narrower");
        assert!(!l.judged_dead(Arc::new(a, c), t0, later, 0), "asked before");
        assert!(l.judged_dead(Arc::new(a, c), later, later, 0));
    }

    /// A run's later takeover waits for the earlier takeover that linked it,
    /// not for an older, settled one of the same node.
    #[test]
    fn judged_a_run_waits_for_the_takeover_that_linked_it() {
        let (mut l, t0) = (judged(), Instant::now());
        let (a, b, c) = (Position(100), Position(150), Position(200));
        let wait = l.settings().takeover_wait();
        l.granted(t0);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, b), a, t0);
        l.linked_to(b, t0);
        l.judged_dead(Arc::new(a, b), t0, t0, 0);
        // Linked to A again (it came back), then A and B declared dead again.
        l.linked_to(a, t0 + SECOND);
        l.took_over(Arc::new(a, b), a, t0 + 2 * SECOND);
        l.linked_to(b, t0 + 2 * SECOND);
        l.took_over(Arc::new(b, c), b, t0 + 2 * SECOND);
        l.linked_to(c, t0 + 2 * SECOND);
        let at = t0 + 2 * SECOND;
        l.granted(at);
        l.judged_dead(Arc::new(b, c), at, at, 0);
        assert_eq!(
            l.serves(Position(170), false, at),
            Serve::Unleased,
            "A's new takeover has not settled"
        );
        l.judged_dead(Arc::new(a, b), at, at, 0);
        assert_eq!(
            l.serves(Position(170), false, at),
            Serve::From(t0 + SECOND + wait + wait),
            "a wait after A's new takeover (from its link at 1 s)"
        );
    }

    /// A node that heard it was judged dead, then was left alone, does not
    /// count root leases again when the registry judges every other node
    /// dead: those nodes may be cut off from the registry together and
    /// lease each other, serving its arc (found by a review: the cut
    /// moving from one side of a node to the other).
    #[test]
    fn judged_a_lone_node_judged_dead_waits_to_be_linked_in_again() {
        let (mut l, t0) = (judged(), Instant::now());
        let (me, a) = (Position(0), Position(100));
        l.rooted(t0, 2 * SECOND);
        l.registry_verdicts(1, t0 + SECOND);
        l.linked_to(a, t0);
        l.took_over(Arc::new(a, me), a, t0 + 2 * SECOND);
        l.linked_to(me, t0 + 2 * SECOND);
        l.judged_dead(Arc::new(a, me), t0 + 3 * SECOND, t0 + 3 * SECOND, 1);
        assert!(!l.rooted(t0 + 3 * SECOND, 2 * SECOND));
        assert_eq!(
            l.serves(Position(5), true, t0 + 3 * SECOND),
            Serve::Unleased
        );
    }
}
