//! A deterministic, seeded simulation of ring maintenance: many nodes under
//! thousands of random schedules of joins, leaves, failures and message delays
//! (some longer than the timeouts), with no sockets. After the schedule, the ring
//! is left alone for a while (quiescence) and the invariants are checked: every
//! live node's `next` and `prev` are the next and previous live nodes; every key
//! that no failure destroyed is stored exactly once, on its owner; no node holds a
//! key outside its arc.
//!
//! The simulated nodes run the protocol of `docs/protocol.md` step by step over
//! the node's own pure decision functions (`View::check_join`, `adopt_successors`,
//! `next_failed`, `prev_failed`, `may_take_previous`, `arc`): the same functions
//! the real node's async shell calls. Messages are delivered after random delays;
//! a request whose answer does not come within its timeout is cancelled (a late
//! hand-off is discarded, as a reset stream would be) and, for hand-offs, checked
//! with a probe before it is rolled back, as the real node does. Simplifications:
//! a node's membership lock refuses instead of queueing; the registry is the true
//! set of live members; the probes inside `RegisterAsNeighbor{Previous}` (is the
//! introduced node serving, is the current previous one alive) are judged from
//! the truth, except that 2% of the latter spuriously fail (a slow node).
//!
//! A failing run prints its seed and trace; `SIM_SEED=<seed>` reruns exactly it.

use crustyring::node::{JoinRefusal, NodeState, View};
use crustyring::ring::{self, Arc, Member, Position};
use std::collections::{BTreeMap, BTreeSet};

const PROBE: u64 = 500;
const PROBE_TIMEOUT: u64 = 500;
const MISSES: u32 = 3;
const SUCCESSORS: usize = 3;
const REQUEST_TIMEOUT: u64 = 5000;

/// xorshift64*: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
struct Header {
    from: Member,
    prev: Option<Member>,
    next: Member,
    merge: bool,
}

#[derive(Debug, Clone)]
struct Info {
    id: Position,
    state: NodeState,
    prev: Member,
    next: Member,
    successors: Vec<Member>,
}

#[derive(Debug, Clone)]
enum Msg {
    JoinReq {
        req: u64,
        joiner: Member,
    },
    JoinRefused {
        req: u64,
        towards: Option<Member>,
        taken: bool,
    },
    HandOff {
        req: u64,
        header: Header,
        keys: Vec<u64>,
    },
    HandOffReply {
        req: u64,
        ok: bool,
    },
    Probe {
        req: u64,
    },
    ProbeReply {
        req: u64,
        info: Info,
    },
    Introduce {
        prev: Member,
    },
}

#[derive(Debug, Clone)]
enum Event {
    Deliver { from: u64, to: u64, msg: Msg },
    Timeout { node: u64, req: u64 },
    Tick(u64),
    Join(u64),
    JoinRetry(u64),
    Leave(u64),
    Exit(u64),
    Crash(u64),
}

#[derive(Debug, Clone)]
enum Pending {
    JoinCall,
    JoinHandOff {
        joiner: Member,
        arc: Arc,
        old_next: Member,
    },
    JoinConfirm {
        joiner: Member,
        arc: Arc,
        old_next: Member,
    },
    LeaveHandOff {
        prev: Member,
        next: Member,
        arc: Arc,
    },
    LeaveConfirm {
        prev: Member,
        next: Member,
        arc: Arc,
    },
    MergeCheck {
        closer: Member,
        next: Member,
    },
    MergeHandOff {
        closer: Member,
        next: Member,
        arc: Arc,
    },
    ProbeNext(Member),
    ProbePrev(Member),
}

struct Node {
    view: View,
    alive: bool,
    keys: BTreeSet<u64>,
    busy: bool,
    misses_next: u32,
    misses_prev: u32,
    pending: BTreeMap<u64, Pending>,
}

struct Sim {
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<u64, Node>,
    rng: Rng,
    lost: BTreeSet<u64>,
    all_keys: BTreeSet<u64>,
    cancelled: BTreeSet<u64>,
    trace: Vec<String>,
    /// From this time on, messages are no longer delayed past the timeouts: the
    /// quiescent period in which the ring must converge.
    calm_from: u64,
}

fn member(id: u64) -> Member {
    Member::new(Position(id), format!("n{id:016x}"))
}

fn keys_in(keys: &BTreeSet<u64>, arc: Arc) -> Vec<u64> {
    keys.iter()
        .copied()
        .filter(|k| arc.contains(Position(*k)))
        .collect()
}

impl Sim {
    /// A correct ring of `n` nodes holding `keys` random keys.
    fn new(seed: u64, n: usize, keys: usize) -> Sim {
        let mut sim = Sim {
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            rng: Rng(seed.max(1)),
            lost: BTreeSet::new(),
            all_keys: BTreeSet::new(),
            cancelled: BTreeSet::new(),
            trace: Vec::new(),
            calm_from: u64::MAX,
        };
        let ids: BTreeSet<u64> = (0..n).map(|_| sim.rng.next()).collect();
        let ring: BTreeMap<Position, ()> = ids.iter().map(|i| (Position(*i), ())).collect();
        let order: Vec<u64> = ids.iter().copied().collect();
        for (i, id) in order.iter().enumerate() {
            let mut view = View::first(member(*id));
            if order.len() > 1 {
                view.prev = member(order[(i + order.len() - 1) % order.len()]);
                view.next = member(order[(i + 1) % order.len()]);
                let after: Vec<Member> = (2..=SUCCESSORS)
                    .map(|k| member(order[(i + k) % order.len()]))
                    .collect();
                view.adopt_successors(&after, SUCCESSORS);
            }
            sim.nodes.insert(*id, Node::new(view));
            let jitter = sim.rng.below(PROBE);
            sim.at(jitter, Event::Tick(*id));
        }
        for _ in 0..keys {
            let k = sim.rng.next();
            let owner = ring::owner(&ring, Position(k)).unwrap().0;
            sim.nodes.get_mut(&owner.0).unwrap().keys.insert(k);
            sim.all_keys.insert(k);
        }
        sim
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), event);
    }

    fn delay(&mut self) -> u64 {
        if self.now >= self.calm_from {
            return 1 + self.rng.below(50);
        }
        match self.rng.below(100) {
            0 => 700 + self.rng.below(6300),
            1..=4 => 100 + self.rng.below(600),
            _ => 1 + self.rng.below(50),
        }
    }

    fn send(&mut self, from: u64, to: u64, msg: Msg) {
        let d = self.delay();
        self.at(d, Event::Deliver { from, to, msg });
    }

    fn request(
        &mut self,
        from: u64,
        to: u64,
        timeout: u64,
        pending: Pending,
        make: impl FnOnce(u64) -> Msg,
    ) {
        self.seq += 1;
        let req = self.seq;
        self.node(from).pending.insert(req, pending);
        let msg = make(req);
        self.send(from, to, msg);
        self.at(timeout, Event::Timeout { node: from, req });
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("known node")
    }

    fn live_serving(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive && n.view.state == NodeState::Serving)
            .map(|(id, _)| *id)
            .collect()
    }

    fn run_until(&mut self, end: u64) {
        while let Some(((t, _), _)) = self.queue.first_key_value() {
            if *t > end {
                break;
            }
            let ((t, _), event) = self.queue.pop_first().unwrap();
            self.now = t;
            self.handle(event);
        }
        self.now = end;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, msg } => {
                let sender_alive = self.nodes.get(&from).is_some_and(|n| n.alive);
                let receiver_alive = self.nodes.get(&to).is_some_and(|n| n.alive);
                // A crashed sender's unfinished stream never completes.
                let stream = matches!(msg, Msg::HandOff { .. });
                if receiver_alive && (sender_alive || !stream) {
                    self.deliver(from, to, msg);
                }
            }
            Event::Timeout { node, req } => {
                if !self.nodes[&node].alive {
                    return;
                }
                if let Some(p) = self.node(node).pending.remove(&req) {
                    self.cancelled.insert(req);
                    self.timed_out(node, p);
                }
            }
            Event::Tick(id)
            | Event::Leave(id)
            | Event::Crash(id)
            | Event::Exit(id)
            | Event::JoinRetry(id)
                if !self.nodes.contains_key(&id) => {}
            Event::Tick(id) => self.tick(id),
            Event::Join(id) => self.join(id),
            Event::JoinRetry(id) => {
                if self.nodes[&id].alive && self.nodes[&id].view.state == NodeState::Joining {
                    self.join_attempt(id, None);
                }
            }
            Event::Leave(id) => self.leave(id),
            Event::Exit(id) => self.node(id).alive = false,
            Event::Crash(id) => self.crash(id),
        }
    }

    /// Node `at` drops its keys in `arc` (they were handed over). A key no live
    /// node holds any more is lost: it went down with the node it was handed to.
    fn drop_keys(&mut self, at: u64, arc: Arc) {
        let dropped: Vec<u64> = keys_in(&self.nodes[&at].keys, arc);
        self.node(at).keys.retain(|k| !arc.contains(Position(*k)));
        for k in dropped {
            if !self.nodes.values().any(|n| n.alive && n.keys.contains(&k)) {
                self.lost.insert(k);
            }
        }
    }

    fn crash(&mut self, id: u64) {
        if !self.nodes[&id].alive {
            return;
        }
        self.trace.push(format!("{} crash {id:016x}", self.now));
        self.node(id).alive = false;
        let held = self.nodes[&id].keys.clone();
        for k in held {
            let elsewhere = self
                .nodes
                .iter()
                .any(|(o, n)| *o != id && n.alive && n.keys.contains(&k));
            if !elsewhere {
                self.lost.insert(k);
            }
        }
    }

    fn join(&mut self, id: u64) {
        self.trace.push(format!("{} join {id:016x}", self.now));
        self.nodes.insert(id, Node::new(View::joining(member(id))));
        self.join_attempt(id, None);
    }

    fn join_attempt(&mut self, id: u64, towards: Option<Member>) {
        let live = self.live_serving();
        let contact = match towards {
            Some(t) => t.id.0,
            None if live.is_empty() => {
                // Nobody serves: start a ring (the registry names no contact).
                self.node(id).view = View::first(member(id));
                self.at(0, Event::Tick(id));
                return;
            }
            None => live[self.rng.below(live.len() as u64) as usize],
        };
        let joiner = member(id);
        self.request(id, contact, 2 * REQUEST_TIMEOUT, Pending::JoinCall, |req| {
            Msg::JoinReq { req, joiner }
        });
    }

    fn leave(&mut self, id: u64) {
        let n = &self.nodes[&id];
        if !n.alive || n.view.state != NodeState::Serving {
            return;
        }
        if n.busy || (n.view.prev == n.view.me && !n.view.alone()) {
            self.at(PROBE, Event::Leave(id));
            return;
        }
        self.trace.push(format!("{} leave {id:016x}", self.now));
        if n.view.alone() {
            self.node(id).view.state = NodeState::Left;
            self.at(self.rng.0 % 1000, Event::Exit(id));
            return;
        }
        let (prev, next, arc) = (n.view.prev.clone(), n.view.next.clone(), n.view.arc());
        let keys = keys_in(&n.keys, arc);
        let node = self.node(id);
        node.busy = true;
        node.view.state = NodeState::Leaving;
        node.view.handoff = Some(arc);
        let header = Header {
            from: member(id),
            prev: None,
            next: next.clone(),
            merge: false,
        };
        let pending = Pending::LeaveHandOff {
            prev: prev.clone(),
            next,
            arc,
        };
        self.request(id, prev.id.0, REQUEST_TIMEOUT, pending, |req| {
            Msg::HandOff { req, header, keys }
        });
    }

    fn tick(&mut self, id: u64) {
        if !self.nodes[&id].alive {
            return;
        }
        self.at(PROBE, Event::Tick(id));
        let view = self.nodes[&id].view.clone();
        if view.state != NodeState::Serving {
            return;
        }
        if !view.alone() {
            let to = view.next.id.0;
            self.request(
                id,
                to,
                PROBE_TIMEOUT,
                Pending::ProbeNext(view.next.clone()),
                |req| Msg::Probe { req },
            );
        }
        if view.prev != view.me {
            let to = view.prev.id.0;
            self.request(
                id,
                to,
                PROBE_TIMEOUT,
                Pending::ProbePrev(view.prev.clone()),
                |req| Msg::Probe { req },
            );
        }
    }

    fn deliver(&mut self, from: u64, to: u64, msg: Msg) {
        match msg {
            Msg::JoinReq { req, joiner } => self.on_join_req(from, to, req, joiner),
            Msg::JoinRefused {
                req,
                towards,
                taken,
            } => {
                if self.node(to).pending.remove(&req).is_none()
                    || self.nodes[&to].view.state != NodeState::Joining
                {
                    return;
                }
                if taken {
                    self.node(to).alive = false;
                } else if towards.is_some() {
                    self.join_attempt(to, towards);
                } else {
                    let d = 20 + self.rng.below(1000);
                    self.at(d, Event::JoinRetry(to));
                }
            }
            Msg::HandOff { req, header, keys } => {
                let ok = !self.cancelled.contains(&req) && self.on_hand_off(to, header, keys);
                if !self.cancelled.contains(&req) {
                    self.send(to, from, Msg::HandOffReply { req, ok });
                }
            }
            Msg::HandOffReply { req, ok } => {
                if let Some(p) = self.node(to).pending.remove(&req) {
                    self.hand_off_done(to, p, ok);
                }
            }
            Msg::Probe { req } => {
                let v = &self.nodes[&to].view;
                let info = Info {
                    id: v.me.id,
                    state: v.state,
                    prev: v.prev.clone(),
                    next: v.next.clone(),
                    successors: v.successors(),
                };
                self.send(to, from, Msg::ProbeReply { req, info });
            }
            Msg::ProbeReply { req, info } => {
                if let Some(p) = self.node(to).pending.remove(&req) {
                    self.probed(to, p, Some(info));
                }
            }
            Msg::Introduce { prev } => {
                let view = &self.nodes[&to].view;
                let old = view.prev.id.0;
                let old_gone = self
                    .nodes
                    .get(&old)
                    .is_none_or(|n| !n.alive || n.view.state == NodeState::Left);
                let spurious = self.rng.chance(2);
                let introduced_serving = self
                    .nodes
                    .get(&prev.id.0)
                    .is_some_and(|n| n.alive && n.view.state == NodeState::Serving);
                if introduced_serving
                    && (view.may_take_previous(&prev)
                        || (view.prev != view.me && (old_gone || spurious)))
                {
                    self.trace
                        .push(format!("{} {to:016x} prev := {:016x}", self.now, prev.id.0));
                    let node = self.node(to);
                    node.view.prev = prev;
                    if node.view.alone() && node.view.state == NodeState::Serving {
                        node.view.next = node.view.prev.clone();
                    }
                }
            }
        }
    }

    fn on_join_req(&mut self, from: u64, at: u64, req: u64, joiner: Member) {
        let refuse = |towards, taken| Msg::JoinRefused {
            req,
            towards,
            taken,
        };
        if self.nodes[&at].busy {
            self.send(at, from, refuse(None, false));
            return;
        }
        match self.nodes[&at].view.check_join(joiner.id) {
            Err(JoinRefusal::NotServing) => self.send(at, from, refuse(None, false)),
            Err(JoinRefusal::NotMyArc { towards }) => {
                self.send(at, from, refuse(Some(towards), false))
            }
            Err(JoinRefusal::Taken { .. }) => self.send(at, from, refuse(None, true)),
            Ok(arc) => {
                let node = self.node(at);
                node.busy = true;
                node.view.handoff = Some(arc);
                let old_next = node.view.next.clone();
                let keys = keys_in(&node.keys, arc);
                let header = Header {
                    from: member(at),
                    prev: Some(member(at)),
                    next: old_next.clone(),
                    merge: false,
                };
                let pending = Pending::JoinHandOff {
                    joiner: joiner.clone(),
                    arc,
                    old_next,
                };
                self.request(at, joiner.id.0, REQUEST_TIMEOUT, pending, |req| {
                    Msg::HandOff { req, header, keys }
                });
            }
        }
    }

    /// The receiving side of a hand-off: join, leave or merge.
    fn on_hand_off(&mut self, at: u64, header: Header, keys: Vec<u64>) -> bool {
        self.trace.push(format!(
            "{} {at:016x} receives hand-off from {:016x} (prev {:?}, next {:016x}, merge {}, {} keys)",
            self.now,
            header.from.id.0,
            header.prev.as_ref().map(|p| format!("{:016x}", p.id.0)),
            header.next.id.0,
            header.merge,
            keys.len()
        ));
        let node = self.node(at);
        if header.merge {
            if node.view.state != NodeState::Serving {
                return false;
            }
            let arc = node.view.arc();
            node.keys
                .extend(keys.into_iter().filter(|k| arc.contains(Position(*k))));
            return true;
        }
        match header.prev {
            Some(prev) => {
                if node.view.state != NodeState::Joining {
                    return false;
                }
                node.keys.extend(keys);
                node.view.prev = prev;
                node.view.next = header.next;
                node.view.state = NodeState::Serving;
                node.pending.retain(|_, p| !matches!(p, Pending::JoinCall));
                self.at(0, Event::Tick(at));
                true
            }
            None => {
                if node.busy
                    || node.view.state != NodeState::Serving
                    || node.view.next.id != header.from.id
                {
                    return false;
                }
                node.keys.extend(keys);
                let (leaver, next) = (header.from, header.next);
                node.view
                    .backups
                    .retain(|m| m.id != leaver.id && m.id != next.id);
                node.view.next = if next.id == node.view.me.id {
                    node.view.me.clone()
                } else {
                    next
                };
                if node.view.alone() {
                    node.view.prev = node.view.me.clone();
                    node.view.backups.clear();
                }
                true
            }
        }
    }

    fn hand_off_done(&mut self, at: u64, pending: Pending, ok: bool) {
        self.trace.push(format!(
            "{} {at:016x} hand-off done ok={ok}: {pending:?}",
            self.now
        ));
        match pending {
            Pending::JoinHandOff {
                joiner,
                arc,
                old_next,
            }
            | Pending::JoinConfirm {
                joiner,
                arc,
                old_next,
            } => {
                if ok {
                    let node = self.node(at);
                    if node.view.alone() {
                        node.view.prev = joiner.clone();
                    }
                    let after = node.view.successors();
                    node.view.next = joiner.clone();
                    node.view.adopt_successors(&after, SUCCESSORS);
                    self.drop_keys(at, arc);
                    if old_next.id.0 != at {
                        self.send(at, old_next.id.0, Msg::Introduce { prev: joiner });
                    }
                }
                let node = self.node(at);
                node.view.handoff = None;
                node.busy = false;
            }
            Pending::LeaveHandOff { prev, next, arc }
            | Pending::LeaveConfirm { prev, next, arc } => {
                let node = self.node(at);
                node.view.handoff = None;
                node.busy = false;
                if ok {
                    node.view.state = NodeState::Left;
                    self.drop_keys(at, arc);
                    if next != prev {
                        self.send(at, next.id.0, Msg::Introduce { prev });
                    }
                    let d = self.rng.below(1000);
                    self.at(d, Event::Exit(at));
                } else {
                    node.view.state = NodeState::Serving;
                    let d = 20 + self.rng.below(1000);
                    self.at(d, Event::Leave(at));
                }
            }
            Pending::MergeHandOff { closer, next, arc } => {
                let node = self.node(at);
                node.view.handoff = None;
                node.busy = false;
                if ok && node.view.next == next {
                    let after = node.view.successors();
                    node.view.next = closer.clone();
                    node.view.adopt_successors(&after, SUCCESSORS);
                    self.drop_keys(at, arc);
                    self.send(at, closer.id.0, Msg::Introduce { prev: member(at) });
                }
            }
            other => unreachable!("not a hand-off: {other:?}"),
        }
    }

    fn timed_out(&mut self, at: u64, pending: Pending) {
        match pending {
            Pending::JoinCall => {
                let d = 20 + self.rng.below(1000);
                self.at(d, Event::JoinRetry(at));
            }
            // A hand-off without an answer may still have been applied: probe.
            Pending::JoinHandOff {
                joiner,
                arc,
                old_next,
            } => {
                let to = joiner.id.0;
                self.request(
                    at,
                    to,
                    PROBE_TIMEOUT,
                    Pending::JoinConfirm {
                        joiner,
                        arc,
                        old_next,
                    },
                    |req| Msg::Probe { req },
                );
            }
            Pending::LeaveHandOff { prev, next, arc } => {
                let to = prev.id.0;
                self.request(
                    at,
                    to,
                    PROBE_TIMEOUT,
                    Pending::LeaveConfirm { prev, next, arc },
                    |req| Msg::Probe { req },
                );
            }
            p @ (Pending::JoinConfirm { .. }
            | Pending::LeaveConfirm { .. }
            | Pending::MergeHandOff { .. }) => self.hand_off_done(at, p, false),
            p => self.probed(at, p, None),
        }
    }

    fn probed(&mut self, at: u64, pending: Pending, info: Option<Info>) {
        let me = member(at);
        match pending {
            Pending::JoinConfirm {
                joiner,
                arc,
                old_next,
            } => {
                let ok = info.is_some_and(|i| i.state == NodeState::Serving && i.prev == me);
                self.hand_off_done(
                    at,
                    Pending::JoinConfirm {
                        joiner,
                        arc,
                        old_next,
                    },
                    ok,
                );
            }
            Pending::LeaveConfirm { prev, next, arc } => {
                let ok = info.is_some_and(|i| i.state == NodeState::Serving && i.next == next);
                self.hand_off_done(at, Pending::LeaveConfirm { prev, next, arc }, ok);
            }
            Pending::ProbeNext(next) => {
                let info = info.filter(|i| {
                    i.id == next.id && !matches!(i.state, NodeState::Left | NodeState::Joining)
                });
                match info {
                    Some(info) => {
                        let node = self.node(at);
                        node.misses_next = 0;
                        if node.view.next != next {
                            return;
                        }
                        node.view.adopt_successors(&info.successors, SUCCESSORS);
                        let between = Arc::new(me.id, next.id).contains(info.prev.id)
                            && info.prev.id != me.id;
                        if info.prev == me {
                        } else if between && !node.busy {
                            node.busy = true;
                            let closer = info.prev.clone();
                            let pending = Pending::MergeCheck {
                                closer: closer.clone(),
                                next,
                            };
                            self.request(at, closer.id.0, PROBE_TIMEOUT, pending, |req| {
                                Msg::Probe { req }
                            });
                        } else if !between {
                            self.send(at, next.id.0, Msg::Introduce { prev: me });
                        }
                    }
                    None => {
                        let node = self.node(at);
                        node.misses_next += 1;
                        if node.misses_next < MISSES || node.view.next != next {
                            return;
                        }
                        node.misses_next = 0;
                        if node.view.backups.is_empty() {
                            let mut live: Vec<u64> = self
                                .live_serving()
                                .into_iter()
                                .filter(|i| *i != at && *i != next.id.0)
                                .collect();
                            live.sort_by_key(|i| me.id.distance_to(Position(*i)));
                            self.node(at).view.backups =
                                live.into_iter().take(SUCCESSORS).map(member).collect();
                        }
                        let node = self.node(at);
                        node.view.next_failed();
                        let new_next = node.view.next.id.0;
                        self.trace.push(format!(
                            "{} {at:016x} next {:016x} failed -> {new_next:016x}",
                            self.now, next.id.0
                        ));
                        let node = self.node(at);
                        if !node.view.alone() {
                            let to = node.view.next.id.0;
                            self.send(at, to, Msg::Introduce { prev: me });
                        }
                    }
                }
            }
            Pending::ProbePrev(prev) => {
                let node = self.node(at);
                if info.is_some_and(|i| {
                    i.id == prev.id && !matches!(i.state, NodeState::Left | NodeState::Joining)
                }) {
                    node.misses_prev = 0;
                    return;
                }
                node.misses_prev += 1;
                if node.misses_prev >= MISSES && node.view.prev == prev {
                    node.misses_prev = 0;
                    node.view.prev_failed();
                    self.trace.push(format!(
                        "{} {at:016x} prev {:016x} failed",
                        self.now, prev.id.0
                    ));
                }
            }
            Pending::MergeCheck { closer, next } => {
                let node = self.node(at);
                let serving =
                    info.is_some_and(|i| i.id == closer.id && i.state == NodeState::Serving);
                if !serving || node.view.next != next {
                    node.busy = false;
                    return;
                }
                let arc = Arc::new(closer.id, next.id);
                node.view.handoff = Some(arc);
                let keys = keys_in(&node.keys, arc);
                let header = Header {
                    from: me,
                    prev: None,
                    next: next.clone(),
                    merge: true,
                };
                let pending = Pending::MergeHandOff {
                    closer: closer.clone(),
                    next,
                    arc,
                };
                self.request(at, closer.id.0, REQUEST_TIMEOUT, pending, |req| {
                    Msg::HandOff { req, header, keys }
                });
            }
            other => unreachable!("not a probe: {other:?}"),
        }
    }

    /// The invariants after quiescence; `Err` says which one fails.
    fn check(&self) -> Result<(), String> {
        for (id, n) in &self.nodes {
            if n.alive && n.view.state != NodeState::Serving {
                return Err(format!("{id:016x} is still {:?}", n.view.state));
            }
        }
        let live = self.live_serving();
        if live.is_empty() {
            return Ok(());
        }
        for (i, id) in live.iter().enumerate() {
            let v = &self.nodes[id].view;
            let next = live[(i + 1) % live.len()];
            let prev = live[(i + live.len() - 1) % live.len()];
            if v.next.id.0 != next || v.prev.id.0 != prev {
                return Err(format!(
                    "{id:016x}: prev {:016x} next {:016x}, expected {prev:016x} / {next:016x}",
                    v.prev.id.0, v.next.id.0
                ));
            }
            if let Some(k) = self.nodes[id]
                .keys
                .iter()
                .find(|k| !v.arc().contains(Position(**k)))
            {
                return Err(format!("{id:016x} holds key {k:016x} outside its arc"));
            }
        }
        let ring: BTreeMap<Position, ()> = live.iter().map(|i| (Position(*i), ())).collect();
        for k in &self.all_keys {
            let holders: Vec<u64> = live
                .iter()
                .copied()
                .filter(|i| self.nodes[i].keys.contains(k))
                .collect();
            let owner = ring::owner(&ring, Position(*k)).unwrap().0.0;
            let expected = if self.lost.contains(k) {
                vec![]
            } else {
                vec![owner]
            };
            if holders != expected {
                return Err(format!(
                    "key {k:016x} held by {holders:x?}, expected {expected:x?}"
                ));
            }
        }
        Ok(())
    }
}

impl Node {
    fn new(view: View) -> Node {
        Node {
            view,
            alive: true,
            keys: BTreeSet::new(),
            busy: false,
            misses_next: 0,
            misses_prev: 0,
            pending: BTreeMap::new(),
        }
    }
}

/// One schedule: its operations as (time, event), from the seed.
type Schedule = fn(&mut Sim) -> Vec<(u64, Event)>;

/// Random joins, leaves and crashes over 30 s; at least two nodes stay alive.
fn random_churn(sim: &mut Sim) -> Vec<(u64, Event)> {
    let mut ops = Vec::new();
    let mut alive: Vec<u64> = sim.live_serving();
    for _ in 0..12 {
        let t = sim.rng.below(30_000);
        match sim.rng.below(100) {
            0..40 => {
                let id = sim.rng.next();
                alive.push(id);
                ops.push((t, Event::Join(id)));
            }
            40..65 if alive.len() > 2 => {
                let id = alive.remove(sim.rng.below(alive.len() as u64) as usize);
                ops.push((t, Event::Leave(id)));
            }
            _ if alive.len() > 2 => {
                let id = alive.remove(sim.rng.below(alive.len() as u64) as usize);
                ops.push((t, Event::Crash(id)));
            }
            _ => {}
        }
    }
    ops
}

/// An ID strictly inside the arc of `owner`.
fn id_in_arc(sim: &mut Sim, owner: u64) -> u64 {
    let arc = sim.nodes[&owner].view.arc();
    let span = arc.start.distance_to(arc.end).wrapping_sub(1).max(1);
    arc.start.0.wrapping_add(1 + sim.rng.below(span))
}

fn pick(sim: &mut Sim) -> u64 {
    let live = sim.live_serving();
    live[sim.rng.below(live.len() as u64) as usize]
}

/// A node fails right after a neighbour joins its arc.
fn fail_after_join(sim: &mut Sim) -> Vec<(u64, Event)> {
    let p = pick(sim);
    let j = id_in_arc(sim, p);
    let d = sim.rng.below(300);
    vec![(1000, Event::Join(j)), (1000 + d, Event::Crash(p))]
}

/// A joiner's successor fails mid-join.
fn successor_fails_mid_join(sim: &mut Sim) -> Vec<(u64, Event)> {
    let p = pick(sim);
    let n = sim.nodes[&p].view.next.id.0;
    let j = id_in_arc(sim, p);
    let d = sim.rng.below(300);
    vec![(1000, Event::Join(j)), (1000 + d, Event::Crash(n))]
}

/// Two joiners into one arc at once.
fn two_joiners_one_arc(sim: &mut Sim) -> Vec<(u64, Event)> {
    let p = pick(sim);
    let (a, b) = (id_in_arc(sim, p), id_in_arc(sim, p));
    let d = sim.rng.below(50);
    vec![(1000, Event::Join(a)), (1000 + d, Event::Join(b))]
}

/// A failed node's predecessor fails too.
fn predecessor_of_failed_fails(sim: &mut Sim) -> Vec<(u64, Event)> {
    let x = pick(sim);
    let p = sim.nodes[&x].view.prev.id.0;
    let d = sim.rng.below(2500);
    vec![(1000, Event::Crash(x)), (1000 + d, Event::Crash(p))]
}

/// A node leaves while its successor fails.
fn leave_while_next_fails(sim: &mut Sim) -> Vec<(u64, Event)> {
    let l = pick(sim);
    let n = sim.nodes[&l].view.next.id.0;
    let d = sim.rng.below(300);
    vec![(1000, Event::Leave(l)), (1000 + d, Event::Crash(n))]
}

fn run(seed: u64, nodes: usize, schedule: Schedule) -> Result<(), (String, Vec<String>)> {
    let mut sim = Sim::new(seed, nodes, 300);
    let ops = schedule(&mut sim);
    let last = ops.iter().map(|(t, _)| *t).max().unwrap_or(0);
    // Delays past the timeouts go on for 10 s after the last operation; then 60 s
    // of calm in which the ring must converge.
    sim.calm_from = last + 10_000;
    let end = sim.calm_from + 60_000;
    for (t, e) in ops {
        sim.at(t, e);
    }
    sim.run_until(end);
    sim.check().map_err(|e| (e, sim.trace))
}

fn run_many(name: &str, schedule: Schedule, nodes: usize, runs: u64) {
    let only: Option<u64> = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (1..=runs)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect(),
    };
    for seed in seeds {
        if let Err((e, trace)) = run(seed, nodes, schedule) {
            panic!(
                "{name}: SIM_SEED={seed} fails: {e}\ntrace:\n{}",
                trace.join("\n")
            );
        }
    }
}

#[test]
fn random_churn_with_message_delays_converges() {
    run_many("random churn", random_churn, 8, 1500);
}

#[test]
fn a_node_failing_right_after_a_neighbour_joins_is_repaired() {
    run_many("fail after join", fail_after_join, 6, 400);
}

#[test]
fn a_joiners_successor_failing_mid_join_is_repaired() {
    run_many("successor fails mid-join", successor_fails_mid_join, 6, 400);
}

#[test]
fn two_joiners_into_one_arc_both_join() {
    run_many("two joiners", two_joiners_one_arc, 6, 400);
}

#[test]
fn a_failed_nodes_predecessor_failing_too_is_repaired() {
    run_many(
        "predecessor of failed fails",
        predecessor_of_failed_fails,
        6,
        400,
    );
}

#[test]
fn a_leave_while_the_next_node_fails_loses_nothing_more() {
    run_many("leave while next fails", leave_while_next_fails, 6, 400);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let trace = |seed| {
        let mut sim = Sim::new(seed, 8, 100);
        let ops = random_churn(&mut sim);
        for (t, e) in ops {
            sim.at(t, e);
        }
        sim.run_until(40_000);
        let views: Vec<String> = sim
            .nodes
            .values()
            .map(|n| format!("{:?}{:?}", n.view.next, n.keys))
            .collect();
        (sim.trace, views)
    };
    assert_eq!(trace(42), trace(42));
}
