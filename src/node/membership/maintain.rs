//! Ring maintenance: failure detection, successor lists, repair and heartbeats.
//!
//! Every serving node runs one loop, each `probe_interval`:
//!
//! 1. Probe `next` (`GetNodeInfo`). On an answer, adopt its successor list as this
//!    node's backups, and if `next` does not name this node as its previous
//!    neighbour, introduce itself ("rectify", `RegisterAsNeighbor{Previous}`).
//!    After `misses` failed probes in a row, `next` is dead: the first backup
//!    becomes `next`, and this node's arc grows over the dead node's arc (owner =
//!    greatest live ID <= position). It then introduces itself to its new next.
//! 2. Probe `prev` the same way; a dead `prev` is forgotten until a live
//!    predecessor introduces itself.
//! 3. Every `heartbeat_interval`, tell the registry (if any) that it is alive.
//!    On a loop of its own, every `heartbeat_interval` when alone and every
//!    fifth otherwise, ask it for its live members and follow
//!    [`registry_hint`]: a serving member between this node and its `next`
//!    is merged into and adopted as `next`, as when a probe of `next` names
//!    it.
//! 4. Every minute, purge tombstones older than `tombstone_grace`.
//!
//! A node accepts a new previous neighbour when it lies between the current one
//! and itself, or when the current one is unknown, dead (a probe now fails,
//! or it missed its last probe and the new one links to this node) or gone
//! (it answers that it has left). Pure decisions live in [`crate::failure`]
//! (what a probe means: a [`crate::failure::Detector`] counts misses and
//! judges answers) and
//! [`crate::node::view`] (how the view changes); this module does the I/O.

use crate::failure::{
    EarlyProbes, Introduced, NextVerdict, PrevVerdict, Probe, RegistryHint, Report, introduced,
    merge_arc, registry_hint,
};
use crate::lease::{self, Answered};
use crate::metrics::HandOff;
use crate::node::membership::handoff::HandOffHeader;
use crate::node::rpc::judging::Asked;
use crate::node::rpc::wire::{self, Link, RootAnswer};
use crate::node::view::{LinkError, Neighbours, NodeState};
use crate::node::{Node, NodeSummary};
use crate::proto::registry::{self as pb, registry_client::RegistryClient};
use crate::registry::Verdict;
use crate::replacing::{Replacement, Step, TakenOver};
use crate::ring::{Arc, Member};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// How a node watches its neighbours.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceSettings {
    /// How often to probe `next` and `prev`.
    pub probe_interval: Duration,
    /// Failed probes in a row after which a neighbour is dead.
    pub misses: u32,
    /// Length of the successor list (next and backups).
    pub successors: usize,
    /// How often to send the registry a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a delete's tombstone is kept (so that it beats older copies, such
    /// as those of a node that was down) before it is purged.
    pub tombstone_grace: Duration,
    /// How often the routing table is relearned by sweeping the ring.
    pub table_refresh: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(500),
            misses: 3,
            successors: 3,
            heartbeat_interval: Duration::from_secs(1),
            tombstone_grace: Duration::from_secs(24 * 3600),
            table_refresh: Duration::from_secs(1),
        }
    }
}

/// A node that is not alone follows the registry's hint every this many
/// heartbeat intervals (a node alone, every interval): each time it asks the
/// registry for every member, and a split that healed may wait this long
/// to start merging.
const LINKED_HINT_ROUNDS: u32 = 5;

/// The least time between two probes of `prev` between rounds
/// ([`EarlyProbes`]).
const EARLY_PROBE_GAP: Duration = Duration::from_millis(20);

/// What woke the maintenance loop.
enum Wake {
    /// A round is due: probe `next` and `prev`.
    Round,
    /// Something asked for an early probe of `prev` (`Node::prev_wanted`).
    PrevWanted,
    /// An early probe of `prev` is due ([`EarlyProbes::due`]).
    EarlyProbeDue,
}

/// What a probe of `prev` leaves to do ([`Node::after_prev_probe`]).
#[derive(Debug, Default)]
struct PrevProbed {
    /// `prev` refused a lease, saying one may be had then.
    lease_at: Option<std::time::Instant>,
    /// A lease granted again after a gap: `next` must confirm the arc.
    reconfirm: bool,
}

/// Sleeps until `at`, or for ever if `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often the maintenance loop purges expired tombstones.
const PURGE_EVERY: Duration = Duration::from_secs(60);

impl Node {
    /// Runs the maintenance loop until `stop` turns true.
    pub(in crate::node) async fn maintain(
        self: std::sync::Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) {
        let settings = self.config.maintenance;
        let mut tick = ticker(settings.probe_interval);
        tokio::spawn(self.clone().keep_registered(stop.clone()));
        tokio::spawn(self.clone().judge_deaths(stop.clone()));
        tokio::spawn(self.clone().follow_registry(stop.clone()));
        let mut last_purge = Instant::now();
        let mut early = EarlyProbes::new(EARLY_PROBE_GAP);
        loop {
            let due = early.due().map(Instant::from_std);
            // The rounds first: a stream of wakes must not put them off;
            // then a due probe, which a stream of wishes must not put off.
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => Wake::Round,
                () = sleep_until_some(due) => Wake::EarlyProbeDue,
                () = self.prev_wanted.notified() => Wake::PrevWanted,
            };
            if self.view().state != NodeState::Serving {
                early.clear();
                continue;
            }
            let now = Instant::now().into_std();
            match wake {
                Wake::PrevWanted => early.want(now),
                Wake::EarlyProbeDue => {
                    let prev = self.view().prev.clone();
                    let suspected = self.detector().prev_suspected(&prev);
                    if early.fire(now, suspected) {
                        let probed = self.probe_prev(false).await;
                        self.after_prev_probe(probed, &mut early).await;
                    }
                }
                Wake::Round => {
                    self.check_next().await;
                    let probed_at = Instant::now().into_std();
                    let probed = self.probe_prev(true).await;
                    early.rounded(probed_at);
                    self.after_prev_probe(probed, &mut early).await;
                    if last_purge.elapsed() >= PURGE_EVERY {
                        last_purge = Instant::now();
                        self.purge_tombstones();
                    }
                    self.purge_lapsed();
                }
            }
        }
    }

    /// Heartbeats to the registry, and rejoins through it when alone, every
    /// heartbeat interval until `stop` turns true: on a loop of their own,
    /// because a registry call may wait the request timeout (a registry
    /// down, or a connection to it wedged by a partition), and the probes of
    /// the neighbours must not wait with it. (The simulation found this: a
    /// node that had been cut off took 6 s instead of 1.5 s to declare its
    /// crashed next dead, its probe loop held up by heartbeats on a wedged
    /// connection.)
    async fn keep_registered(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = ticker(self.config.maintenance.heartbeat_interval);
        while next_round(&mut tick, &mut stop).await {
            if self.view().state == NodeState::Serving {
                self.heartbeat().await;
            }
        }
    }

    /// Asks the registry to judge the nodes whose arcs this node took over
    /// and that await its verdict ([`crate::lease::Leases::judged_dead`]),
    /// until `stop` turns true: woken by each takeover, then again when the
    /// registry says a verdict may come (stretched by twice the drift bound),
    /// or a heartbeat interval later if it did not answer. A node that
    /// heartbeats is never judged dead: its takeover waits until this node
    /// links to it again (`Leases::linked_to` drops it).
    async fn judge_deaths(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(settings) = self.config.leases else {
            return;
        };
        let interval = self.config.maintenance.heartbeat_interval;
        loop {
            // A verdict settles only the takeovers declared by now.
            let asked = tokio::time::Instant::now().into_std();
            let due = (self.leases.as_ref())
                .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).verdicts_due())
                .unwrap_or_default();
            let me = self.me().id;
            let mut again = (!due.is_empty()).then_some(interval);
            for arc in due {
                match self.judge_call(arc, me).await {
                    Asked::Answered(Verdict::Dead { others }) => {
                        let now = tokio::time::Instant::now().into_std();
                        tracing::info!(dead = %arc.start, others, "the registry judged the declared-dead node dead");
                        self.change_leases(|l| l.judged_dead(arc, asked, now, others));
                    }
                    Asked::Answered(Verdict::NotBefore(after)) => {
                        let after = after.min(interval).max(EARLY_PROBE_GAP);
                        again = again.map(|a| a.min(settings.ask_again_after(after)));
                    }
                    Asked::NotJudging => self.registry_judges_not(),
                    Asked::Failed(why) => {
                        tracing::debug!(error = %why, dead = %arc.start, "the registry did not judge")
                    }
                }
            }
            let sleep = sleep_until_some(again.map(|a| Instant::now() + a));
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = sleep => {}
                () = self.verdicts_wanted.notified() => {}
            }
        }
    }

    /// The registry judges no deaths (an earlier version): leases work as
    /// without one ([`crate::lease::Leases::registry_judges`]).
    fn registry_judges_not(&self) {
        let (mut was, now) = (false, tokio::time::Instant::now().into_std());
        self.change_leases(|l| {
            was = l.judged();
            l.registry_judges(false, now);
            was
        });
        if was {
            tracing::warn!(
                "the registry judges no deaths (an earlier version): a split of the ring can give an arc two owners; upgrade the registry"
            );
        }
    }

    /// Follows the registry's hint ([`Node::follow_registry_hint`]) every
    /// heartbeat interval while alone, every [`LINKED_HINT_ROUNDS`] otherwise,
    /// until `stop` turns true: on a loop of its own, because a merge waits
    /// for the membership lock (which a join holds while it streams an arc)
    /// and streams what it merges, and heartbeats must not wait with it (two
    /// missed ones and the registry counts this node dead).
    async fn follow_registry(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = ticker(self.config.maintenance.heartbeat_interval);
        let mut round: u32 = 0;
        while next_round(&mut tick, &mut stop).await {
            round = round.wrapping_add(1);
            let serving = self.view().state == NodeState::Serving;
            if serving && (self.view().alone() || round.is_multiple_of(LINKED_HINT_ROUNDS)) {
                self.follow_registry_hint().await;
            }
        }
    }

    /// Drops tombstones older than the grace period.
    fn purge_tombstones(&self) {
        let now = crate::clock::now_micros();
        let grace = self.config.maintenance.tombstone_grace.as_micros() as u64;
        match self.store.purge_tombstones(now.saturating_sub(grace)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(tombstones = n, "purged expired tombstones"),
            Err(e) => tracing::warn!(error = %e, "could not purge tombstones"),
        }
    }

    /// Frees the entries whose time to live has passed (they read as absent
    /// from then on already). Every copy does this by its own clock, so
    /// replicas free them at about the same time.
    fn purge_lapsed(&self) {
        match self.store.purge_lapsed(crate::store::now_micros()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "purged entries whose time to live passed"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired entries"),
        }
    }

    /// How long one probe may take.
    fn probe_timeout(&self) -> Duration {
        self.config
            .maintenance
            .probe_interval
            .max(Duration::from_millis(200))
    }

    /// Asks `peer` for its view; `None` if it is dead, has left the ring, is
    /// joining it (again), is another node now, or answers with a summary
    /// that lacks a neighbour. (A state this build does not know counts as
    /// alive: the peer answered.)
    pub(in crate::node) async fn probe(&self, peer: &Member) -> Option<NodeSummary> {
        self.probe_asking_lease(peer, None).await.0
    }

    /// [`Node::probe`], asking `peer` (this node's `prev`) for a lease on the
    /// arc of `lease_for` if given: the answer, and what it said of the
    /// lease.
    async fn probe_asking_lease(
        &self,
        peer: &Member,
        lease_for: Option<&Member>,
    ) -> (Option<NodeSummary>, Option<lease::Answer>) {
        let asked = (self.probes)
            .node_info(peer, self.probe_timeout(), lease_for.map(|m| m.id))
            .await;
        let Ok((summary, lease)) = asked else {
            return (None, None);
        };
        // A node that left, or that restarted and is joining again, is not
        // the neighbour it was.
        let neighbour = summary.filter(|s| {
            s.me.id == peer.id && !matches!(s.state, Some(NodeState::Left | NodeState::Joining))
        });
        (neighbour, lease)
    }

    /// Probes `next` and acts on the detector's verdict.
    async fn check_next(&self) {
        let view = self.view_snapshot();
        if view.alone() {
            self.detector().next_absent();
            return;
        }
        let probe = to_probe(self.probe(&view.next).await);
        let verdict = self.detector().next_probed(&view.me, &view.next, probe);
        let successors = match &verdict {
            NextVerdict::Missed => return self.metrics.probe_failed(true),
            NextVerdict::Dead => {
                self.metrics.probe_failed(true);
                return self.replace_dead_next(&view.next).await;
            }
            NextVerdict::Linked { successors }
            | NextVerdict::Closer { successors, .. }
            | NextVerdict::Introduce { successors } => successors,
        };
        let length = self.config.maintenance.successors;
        self.update_view(|v| {
            if v.next == view.next {
                v.adopt_successors(successors, length);
            }
        });
        // How much of this node's arc `next` confirms (`Leases::confirms`),
        // if `next` is still `next`.
        let to_next = Arc::new(view.me.id, view.next.id);
        match verdict {
            NextVerdict::Linked { .. } => {
                self.change_confirmed_by(&view.next, |l| l.next_probed(Some(to_next)));
            }
            NextVerdict::Closer { closer, .. } => {
                let upto = Arc::new(view.me.id, closer.id);
                self.change_confirmed_by(&view.next, |l| l.next_narrowed(closer.id, upto, to_next));
                self.adopt_closer_next(closer, view.next.clone()).await;
            }
            // Confirmed if it takes this node (a refusal changes nothing).
            NextVerdict::Introduce { .. } => {
                self.introduce_to(&view.next).await;
            }
            _ => {}
        }
    }

    /// Carries out what a probe of `prev` left to do: an early probe when
    /// `prev` said a lease may be had, and a probe of `next` for a
    /// confirmation after a lease granted again following a gap, unless
    /// `next` missed its last probe (waiting on it, up to the probe timeout,
    /// would hold the rounds up; the rounds probe it).
    async fn after_prev_probe(&self, probed: PrevProbed, early: &mut EarlyProbes) {
        if let Some(at) = probed.lease_at {
            early.lease_at(at);
        }
        let next = self.view().next.clone();
        if probed.reconfirm && !self.detector().next_suspected(&next) {
            self.reconfirm_next().await;
        }
    }

    /// Asks `next` at once to confirm this node's arc, rather than at the
    /// next round (up to a probe interval later): after a lease granted
    /// again following a gap, nothing of the arc is served until `next`
    /// confirms it. Only an answer that links `next` to this node counts;
    /// anything else (a failure, a closer node, an introduction owed) is
    /// left to the rounds, and no miss is counted.
    async fn reconfirm_next(&self) {
        let view = self.view_snapshot();
        if view.alone() {
            return;
        }
        let Some(info) = self.probe(&view.next).await else {
            return;
        };
        if let NextVerdict::Linked { .. } =
            NextVerdict::answered(&view.me, &view.next, to_report(info))
        {
            let to_next = Arc::new(view.me.id, view.next.id);
            self.change_confirmed_by(&view.next, |l| l.next_probed(Some(to_next)));
        }
    }

    /// `closer` lies between this node and `next` and is alive: it becomes `next`.
    /// The entries this node holds in `closer`'s arc (written while it did not
    /// know `closer`) are merged into `closer` first.
    async fn adopt_closer_next(&self, closer: Member, next: Member) {
        let _membership = self.membership.lock().await;
        let view = self.view_snapshot();
        if view.next != next || view.state != NodeState::Serving {
            return;
        }
        let Some(info) = self
            .probe(&closer)
            .await
            .filter(|i| i.state == Some(NodeState::Serving))
        else {
            return;
        };
        // `closer` keeps only its own arc: hand over (and later drop) just that.
        let closers_next = Some(info.next.id);
        let arc = merge_arc(closer.id, closers_next, next.id);
        self.update_view(|v| v.handoff = Some(arc));
        let header = HandOffHeader::merge(self.me(), next.clone());
        let merged = match self.store.entries_in(arc) {
            Ok(entries) => {
                tracing::info!(to = %closer.addr, ?arc, entries = entries.len(), "merging the entries held of a closer node's arc into it");
                self.hand_off(&closer, header, entries).await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &merged {
            tracing::info!(to = %closer.addr, error = %e, "the merge into a closer node failed; not adopted");
        }
        if let Ok(n) = &merged {
            self.metrics.handoff(true, HandOff::Merge, *n);
        }
        let length = self.config.maintenance.successors;
        let adopted = self.update_view(|v| {
            v.handoff = None;
            if merged.is_err() || v.next != next {
                return false;
            }
            let after = v.successors();
            v.next = closer.clone();
            v.adopt_successors(&after, length);
            true
        });
        if adopted {
            // What `next` confirmed reaches past `closer` no more.
            let upto = Arc::new(view.me.id, closer.id);
            self.change_confirmed_by(&closer, |l| l.next_moved_closer(upto));
            // With replication this node is `closer`'s nearest replica: it
            // keeps the copy.
            let replica = self.config.replication.factor > 1;
            if !replica && let Err(e) = self.store.remove_in(arc) {
                tracing::error!(error = %e, "could not drop merged entries");
            }
            tracing::warn!(next = %closer.addr, "found a closer next neighbour; adopted it");
            self.introduce_to(&closer).await;
        }
    }

    /// `dead` (this node's next) failed: promote the first backup (asking the
    /// registry for candidates if there is none) and introduce this node to
    /// it, as [`Replacement`] decides. A promoted backup that fails `misses`
    /// quick probes in a row (as a killed neighbour's neighbour does, when two
    /// fail at once) is passed over at once rather than a probe interval
    /// later.
    async fn replace_dead_next(&self, dead: &Member) {
        // Not while a join into this node's arc is linking the joiner in.
        let _membership = self.membership.lock().await;
        let settings = self.config.maintenance;
        let mut replacement = Replacement::new(dead.clone(), settings.successors, settings.misses);
        let has_backups = || !self.view().backups.is_empty();
        let mut step = replacement.round(has_backups());
        loop {
            step = match step {
                Step::Done => return,
                Step::AskRegistry { dead } => {
                    let candidates = self.registry_successors(&dead).await;
                    self.update_view(|v| {
                        if v.next == dead && v.backups.is_empty() {
                            v.backups = candidates.into_iter().take(settings.successors).collect();
                        }
                    });
                    replacement.asked()
                }
                Step::TakeOver { dead } => replacement.took_over(self.take_over_next(&dead)),
                Step::Probe { next, pause } => {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    let alive = self.probe(&next).await.is_some();
                    replacement.probed(next, alive, has_backups())
                }
                Step::Introduce { next } => {
                    self.introduce_to(&next).await;
                    return;
                }
            };
        }
    }

    /// Takes the arc of `dead` over if it is still this node's next: the
    /// first backup becomes `next`. The dead node's arc is served only once
    /// any lease this node granted it has lapsed: noted under the view lock,
    /// with the change, so that no query waiting for the arc routes into it
    /// before its wait is known.
    fn take_over_next(&self, dead: &Member) -> TakenOver {
        let now = tokio::time::Instant::now().into_std();
        let taken = self.update_view(|v| {
            (v.next == *dead).then(|| {
                v.next_failed();
                let arc = Arc::new(dead.id, v.next.id);
                self.with_leases(|l| l.took_over(arc, dead.id, now));
            })
        });
        if taken.is_none() {
            return TakenOver::NotNext;
        }
        self.verdicts_wanted.notify_one();
        self.metrics.neighbour_failed(true);
        self.forget_route(dead);
        let view = self.view_snapshot();
        tracing::warn!(dead = %dead.addr, next = %view.next.addr, "next neighbour failed; arc extended over it");
        if view.alone() {
            // Whatever `next` confirmed is gone with it: once linked again,
            // the arc is served as far as the new `next` confirms.
            self.next_confirmed(None);
            TakenOver::Alone
        } else {
            TakenOver::Next(view.next)
        }
    }

    /// Acts on what the registry's live members say of this node's `next`
    /// ([`registry_hint`]). A node alone in its ring while the registry knows
    /// other live members was cut off from them (it declared them all dead,
    /// and they it): it introduces itself to the one that should be its next,
    /// which takes it as its previous neighbour; stabilize then links the rest
    /// (and merges what each side holds of the other's arcs). Without this a
    /// node cut off from every other stayed alone for good. A node that is not
    /// alone but does not know a serving member the registry lists between it
    /// and its `next` missed that member: most often it is one side of a
    /// split (two adjacent nodes cut off together from the rest, which then
    /// formed a ring of their own), and probes alone would never name the
    /// other side. It adopts that member as its `next` as when a probe of
    /// `next` names it (`adopt_closer_next`), and the other links follow from
    /// the probes. Without this the two rings of a split stayed apart for
    /// good. (Without a registry, nothing brings them together.)
    async fn follow_registry_hint(&self) {
        let view = self.view_snapshot();
        let members = self.registry_members().await;
        let Some(hint) = registry_hint(&view.me, &view.next, &members) else {
            return;
        };
        // The member is probed first (without the membership lock, which a
        // merge takes): the registry lists a node from its registration,
        // before it serves (the first node of every new ring, alone, sees
        // the second register and join), and for its time-to-live after it
        // died. Neither is a ring to link to. (Without the probe, every new
        // cluster logged a rejoin.)
        let (RegistryHint::Rejoin(member) | RegistryHint::Closer(member)) = &hint;
        if !self.serves(member).await {
            return;
        }
        match hint {
            RegistryHint::Rejoin(next) => {
                // A joiner serves a moment before its contact links it in,
                // under this lock: alone still once it is free, or not.
                let _membership = self.membership.lock().await;
                if !self.view().alone() {
                    return;
                }
                tracing::warn!(next = %next.addr, "alone while the registry knows other members; rejoining through them");
                self.introduce_to(&next).await;
            }
            RegistryHint::Closer(closer) => {
                tracing::warn!(closer = %closer.addr, next = %view.next.addr, "the registry lists a live member between this node and its next; linking to it");
                self.adopt_closer_next(closer, view.next).await;
            }
        }
    }

    /// Whether `member` answers a probe as a serving node.
    async fn serves(&self, member: &Member) -> bool {
        (self.probe(member).await).is_some_and(|i| i.state == Some(NodeState::Serving))
    }

    /// The registry's live members after this node in ring order, without `dead`.
    async fn registry_successors(&self, dead: &Member) -> Vec<Member> {
        let me = self.me();
        let mut members: Vec<Member> = self
            .registry_members()
            .await
            .into_iter()
            .filter(|m| m.id != me.id && m.id != dead.id)
            .collect();
        members.sort_by_key(|m| me.id.distance_to(m.id));
        members
    }

    /// Probes `prev`, asking for a lease, and acts on the detector's verdict;
    /// if not `counted` (`prev` probed between rounds), an answer is taken
    /// as from a live `prev`, and neither a failure nor an answer changes the
    /// count of misses. Returns what is left to do
    /// ([`Node::after_prev_probe`]).
    async fn probe_prev(&self, counted: bool) -> PrevProbed {
        // A lease runs from before it was asked for (`crate::lease`), and
        // before the view the probe goes by was read.
        let asked_at = tokio::time::Instant::now().into_std();
        let view = self.view_snapshot();
        if view.prev == view.me {
            if counted {
                self.detector().prev_absent();
            }
            return PrevProbed::default();
        }
        let (info, lease) = self.probe_asking_lease(&view.prev, Some(&view.me)).await;
        let at = tokio::time::Instant::now().into_std();
        let links_here = (info.as_ref()).is_some_and(|i| i.next.id == view.me.id);
        let verdict = match (counted, info) {
            (true, info) => self.detector().prev_probed(&view.prev, to_probe(info)),
            (false, None) => return PrevProbed::default(),
            (false, Some(info)) => PrevVerdict::alive(&view.prev, to_report(info)),
        };
        match verdict {
            PrevVerdict::Alive { chain } => {
                let length = self.config.maintenance.successors;
                self.update_view(|v| {
                    if v.prev == view.prev {
                        v.adopt_predecessors(&chain, length);
                    }
                });
                // `prev` would take this node's arc over: while its view
                // links here, it grants the lease on it, and notes it. A
                // grant from a node that is no longer `prev` is ignored.
                let answered = (self.leases.as_ref()).map_or(Answered::Nothing, |l| {
                    (l.lock().unwrap_or_else(|e| e.into_inner())).answered(lease, links_here, at)
                });
                match answered {
                    Answered::Granted | Answered::GrantedAfterGap
                        if self.view().prev == view.prev =>
                    {
                        let after_gap = answered == Answered::GrantedAfterGap;
                        if after_gap {
                            tracing::info!(prev = %view.prev.addr, "leased again after a gap: reads ask the replicas until caught up");
                            // Behind, and the arc served once `next`
                            // confirms it again, before the lease takes
                            // effect.
                            self.behind_again();
                            self.next_confirmed(None);
                        }
                        self.update_view(|v| {
                            if v.prev == view.prev {
                                self.with_leases(|l| l.granted(asked_at));
                            }
                        });
                        return PrevProbed {
                            lease_at: None,
                            reconfirm: after_gap,
                        };
                    }
                    Answered::AskAgainAt(when) => {
                        return PrevProbed {
                            lease_at: Some(when),
                            reconfirm: false,
                        };
                    }
                    _ => {}
                }
            }
            PrevVerdict::Missed => self.metrics.probe_failed(false),
            PrevVerdict::Dead => {
                self.metrics.probe_failed(false);
                self.metrics.neighbour_failed(false);
                self.update_view(|v| {
                    if v.prev == view.prev {
                        v.prev_failed();
                        self.with_leases(|l| l.neighbour_failed());
                    }
                });
                tracing::warn!(dead = %view.prev.addr, "previous neighbour failed");
            }
        }
        PrevProbed::default()
    }

    /// Tells `next` that this node is its previous neighbour. If it takes
    /// it, and is still this node's `next`, it confirms this node's arc
    /// (`Leases::confirms`).
    async fn introduce_to(&self, next: &Member) {
        if self.introduce(&self.me(), next).await {
            let to_next = Arc::new(self.me().id, next.id);
            self.change_confirmed_by(next, |l| l.next_probed(Some(to_next)));
        }
    }

    /// Tells `to` that `prev` is its previous neighbour
    /// (`RegisterAsNeighbor{Previous}`); whether it took it. A refusal or
    /// failure is logged: the maintenance loop of `prev` introduces itself
    /// again until it holds.
    pub(in crate::node) async fn introduce(&self, prev: &Member, to: &Member) -> bool {
        let request = wire::register_as(Link::Previous, prev);
        if let Err(e) = self
            .peers
            .call(
                to,
                |mut c| async move { c.register_as_neighbor(request).await },
            )
            .await
        {
            tracing::debug!(prev = %prev.addr, to = %to.addr, error = %e, "introduction refused");
            return false;
        }
        true
    }

    /// A node says it is this node's previous neighbour ("rectify"). Accepted when
    /// it lies between the current previous neighbour and this node, or when the
    /// current one is unknown, dead or gone, and only if it is serving (a probe
    /// says so). A node alone also takes it as next.
    pub(in crate::node) async fn accept_previous(
        &self,
        new: Member,
    ) -> Result<Neighbours, LinkError> {
        // The introduction may be stale (delayed, or sent on behalf of a node that
        // has since left or died): the new predecessor must be serving now.
        let offered = self.probe(&new).await;
        // Whether the newcomer links to this node: it passed over the nodes
        // between (it declared them dead, or joined between).
        let links_here = (offered.as_ref()).is_some_and(|i| i.next.id == self.me().id);
        let state = offered.map(|i| i.state);
        if state != Some(Some(NodeState::Serving)) {
            let seen = match state {
                None => "did not answer a probe as a member (unreachable, joining, left, another \
                         ID, or an answer without its neighbours)"
                    .to_string(),
                Some(None) => "is in a state this node does not know".to_string(),
                Some(Some(s)) => format!("is {}", s.as_str()),
            };
            return Err(LinkError::NotPrevious(format!(
                "{} {seen}, not serving; it cannot be my previous neighbour",
                new.addr
            )));
        }
        let view = self.view_snapshot();
        let suspected = self.detector().prev_suspected(&view.prev);
        let replaceable = match introduced(view.may_take_previous(&new), suspected, links_here) {
            Introduced::Replace => true,
            Introduced::IfPrevSilent => self.probe(&view.prev).await.is_none(),
        };
        if !replaceable {
            return Err(LinkError::NotPrevious(format!(
                "{} ({}) does not lie between my live previous neighbour {} and me",
                new.addr, new.id, view.prev.addr
            )));
        }
        let length = self.config.maintenance.successors;
        let old = self.update_view(|v| {
            let old = Neighbours {
                prev: v.prev.clone(),
                next: v.next.clone(),
            };
            v.take_previous(new, length);
            // A node alone that is told it has a predecessor is not alone: it
            // was cut off (its probes of a live next failed, or it started a ring
            // beside this one). Linking to it rejoins the rings; stabilization
            // then finds the true next and merges what this node holds.
            if v.alone() && v.state == NodeState::Serving {
                v.next = v.prev.clone();
                // A stand-in `next`: nothing of the arc it spans is
                // confirmed until stabilize finds the true one.
                self.with_leases(|l| {
                    l.next_probed(None);
                });
            }
            old
        });
        // The lease on this node's arc now comes from the new `prev`: asked
        // for at once rather than at the next round (after a failure, the
        // dead node's grant may lapse before then).
        if self.leases.is_some() {
            self.prev_wanted.notify_one();
        }
        Ok(old)
    }

    /// Calls the registry, if this node uses one (`None` if not), within the
    /// request timeout. A call that times out drops the registry's channel,
    /// as a peer's (`Peers::forget`): a connection wedged by a partition
    /// would fail every heartbeat until HTTP/2's keep-alive noticed, and the
    /// registry would count this node dead meanwhile.
    pub(in crate::node) async fn ask_registry<T, F, Fut>(
        &self,
        call: F,
    ) -> Option<Result<T, tonic::Status>>
    where
        F: FnOnce(RegistryClient<crate::security::AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let addr = self.registry.as_deref()?;
        let (client, made) = match self.peers.registry_client_made(addr) {
            Ok(client) => client,
            Err(e) => return Some(Err(tonic::Status::unavailable(e.to_string()))),
        };
        let after = self.config.timeouts.request;
        Some(match tokio::time::timeout(after, call(client)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => {
                self.peers.forget(addr, made);
                Err(tonic::Status::deadline_exceeded(format!(
                    "the registry did not answer within {after:?}"
                )))
            }
        })
    }

    /// Tells the registry (if any) that this node is alive, and notes the
    /// root lease its answer grants (from when it was sent), or the verdicts
    /// on this node it reports (`crate::registry::Verdicts`).
    async fn heartbeat(&self) {
        if self.registry.is_none() {
            return;
        }
        let seen = (self.leases.as_ref()).map_or(0, |l| {
            l.lock().unwrap_or_else(|e| e.into_inner()).verdicts_seen()
        });
        let sent = tokio::time::Instant::now().into_std();
        match self.heartbeat_call(seen).await {
            Asked::Answered(root) => match root {
                RootAnswer::Granted(length) => {
                    let now = tokio::time::Instant::now().into_std();
                    self.change_leases(|l| {
                        l.registry_judges(true, now);
                        l.rooted(sent, length)
                    });
                }
                RootAnswer::Dead(count) => {
                    let now = tokio::time::Instant::now().into_std();
                    let mut news = false;
                    self.change_leases(|l| {
                        news = l.registry_verdicts(count, now);
                        news
                    });
                    if news {
                        tracing::warn!(count, "the registry judged this node dead: its lease ends");
                    }
                }
                RootAnswer::Unreadable => {
                    tracing::debug!("a heartbeat's answer about the root lease does not parse");
                }
            },
            Asked::NotJudging => self.registry_judges_not(),
            Asked::Failed(why) => tracing::debug!(error = %why, "registry heartbeat failed"),
        }
    }

    /// Tells the registry (if any) that this node left.
    pub(in crate::node) async fn deregister(&self) {
        let me: pb::Node = (&self.me()).into();
        let _ = self
            .ask_registry(|mut r| async move { r.deregister(me).await })
            .await;
    }

    /// The registry's live members (empty without a registry or an answer).
    pub(in crate::node) async fn registry_members(&self) -> Vec<Member> {
        self.registry_answer().await.unwrap_or_default()
    }

    /// The registry's live members: empty without a registry, `None` if it
    /// did not answer.
    pub(in crate::node) async fn registry_answer(&self) -> Option<Vec<Member>> {
        let asked = self
            .ask_registry(|mut r| async move { r.get_connected_nodes(()).await })
            .await;
        match asked {
            None => Some(Vec::new()),
            Some(Ok(nodes)) => Some(nodes.nodes.into_iter().map(Member::from).collect()),
            Some(Err(_)) => None,
        }
    }
}

/// A timer for a loop that runs a round every `period`; a round that
/// overruns delays the next rather than bunching them.
pub(in crate::node) fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Waits for the next round of `tick`: false once `stop` turns true.
pub(in crate::node) async fn next_round(
    tick: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// A probe's answer (as [`Node::probe`] filters it) in the detector's terms.
fn to_probe(info: Option<NodeSummary>) -> Probe {
    match info {
        None => Probe::Failed,
        Some(info) => Probe::Answered(to_report(info)),
    }
}

/// A live neighbour's answer in the detector's terms.
fn to_report(info: NodeSummary) -> Report {
    Report {
        prev: Some(info.prev),
        predecessors: info.predecessors,
        successors: info.successors,
    }
}
