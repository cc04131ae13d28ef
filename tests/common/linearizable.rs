//! A small linearizability checker for key-value histories recorded by
//! tests: the simulation's (in virtual time) and real-process tests' (in
//! microseconds of the test's clock). Shared by both test binaries (the
//! simulation includes it by path), so its own tests run in each.
//!
//! # Model
//!
//! Every key is an independent register that starts absent (`None`): a
//! [`Call::Write`] stores a value, a [`Call::Delete`] makes the key absent and
//! a [`Call::Read`] returns the current value. Linearizability is
//! compositional (Herlihy & Wing 1990): a history is linearizable iff the
//! sub-history of every object is, so [`check`] checks each key on its own.
//!
//! An [`Operation`] spans the closed interval `[invoked, returned]` of the
//! history's time. One operation precedes another only if it returned *strictly* before
//! the other was invoked; operations touching at an instant are concurrent
//! (this errs towards accepting, never towards false alarms).
//!
//! * [`Return::Unknown`] means the client never learnt the outcome: the
//!   operation may take effect at any instant after `invoked`, or never
//!   (`returned` is ignored). An unknown read has no effect and is ignored.
//! * The caller must leave an operation out of the history only when it
//!   *certainly* did not take effect (e.g. rejected before reaching the
//!   store). Anything that may have been applied must be recorded, as
//!   [`Return::Unknown`] if need be, or correct stores will be reported broken.
//! * Write values should be unique per key, as most reductions below rely on
//!   it. Duplicates are still checked correctly, only less efficiently.
//!
//! # Algorithm
//!
//! The search is that of Wing & Gong (1993) with the memoisation of Lowe
//! ("Testing for linearizability", 2017), in the linked-list form used by
//! Porcupine and Knossos's `wgl` checker. Each operation has a *call* and a
//! *return* event; all events, sorted by time (calls first on ties), form a
//! doubly linked list that the search scans from its head:
//!
//! * at a call event, it tries to linearize that operation next: if the
//!   register allows it and the resulting configuration is new, it pushes a
//!   frame, unlinks both events of the operation (O(1), "dancing links") and
//!   restarts the scan from the head;
//! * at the return event of an operation not yet linearized, nothing invoked
//!   later can go first, so it backtracks: it pops the last frame, relinks its
//!   events, restores the register and resumes the scan after its call.
//!
//! It succeeds once every mandatory operation is linearized. An operation
//! *may go next* when its call precedes every remaining return event, i.e.
//! all operations that really preceded it are linearized. The search is
//! *sound*: it linearizes an operation only if it may go next and the
//! register allows it. It is *complete*: the next operation of any valid
//! linearization may go next, and the scan tries all those. A configuration is the set of resolved operations plus
//! the register (plus the flag below); the rest of the search depends on
//! nothing else, so a configuration met again has already failed and is
//! pruned. The set is stored as "the first `k` operations in invocation order
//! and a short bitset", which stays small because concurrency is small.
//!
//! On top of this, rules that keep completeness prune the search:
//!
//! * *Greedy reads.* A read of the current register value that may go next is
//!   linearized at once, without trying alternatives: moving it earlier in any
//!   valid linearization keeps it valid, as reads do not change the register.
//! * *Unknown writes.* An unknown write of a value `v` written once and never
//!   read is dropped: removing it from a linearization only changes the
//!   register until the next write or delete, when no read can take place (it
//!   would return `v`). If `v` is read, the write is mandatory and must precede
//!   the reads of `v`: it becomes an ordinary operation returning at the
//!   earliest return of a read of `v`.
//! * *Optional operations.* An unknown delete (or unknown write of a value
//!   written twice) is only observable by reads returning its value that end
//!   after its invocation: it is dropped if there are none, and otherwise has
//!   a deadline, the last such return, after which taking effect is the same as
//!   never. When the scan reaches its deadline with the operation unresolved,
//!   the search resolves it as dropped (instead of backtracking), and undoing
//!   that backtracks further, since all other continuations place it later.
//!   Of interchangeable optional operations (same effect and deadline) that
//!   may go next, only the first in the list is tried, as resolving either
//!   leaves equivalent configurations.
//! * *Lazy operations.* A write of a value `v` written once and read must be
//!   immediately followed by a read of `v` in any linearization (the reads of
//!   `v` can only sit between it and the next write or delete). Likewise an
//!   unknown delete is only useful on a present key and right before a read of
//!   absent. So after linearizing such an operation, the next one must be a
//!   read; configurations carry that flag.
//! * *Dead writes.* An acknowledged write of a value that no read returned is
//!   followed by a write or delete, or comes last, and removing it from a
//!   linearization keeps it valid. So when a write or delete is linearized,
//!   all the dead writes that may go next (or may once those are linearized)
//!   are linearized just before it: a continuation that leaves some pending
//!   stays valid without them. A dead write is otherwise linearized only when
//!   the scan reaches its return, again with all the dead writes that may go.
//!
//! When a violation is found, a second search without the lazy rule (which
//! cuts failing branches early, far from the cause) finds a longer partial
//! linearization to explain it, if it fits in a smaller budget.
//!
//! The problem is NP-complete, so the search gives up after a budget of
//! memoised configurations and reports [`Violation::TooHard`], which means
//! "undecided", not "incorrect".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Cap on memoised search configurations per key used by [`check`].
pub const DEFAULT_MAX_STATES: usize = 500_000;

/// Budget of the search explaining a violation already found.
const REPORT_STATES: usize = 200_000;

/// How many operations of the best partial linearization a report shows.
const RECENT: usize = 8;

/// "No event" in the event list.
const NIL: usize = usize::MAX;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Read the key's current value.
    Read,
    /// Store a value (unique per key, see the module documentation).
    Write(u64),
    /// Make the key absent.
    Delete,
}

/// What a client got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// A read's answer: the value, or `None` for absent/deleted.
    Read(Option<u64>),
    /// A write or delete was acknowledged.
    Done,
    /// No answer (timeout, lost connection, ambiguous error): the operation
    /// may take effect at any time after it was invoked, or never.
    Unknown,
}

/// One operation of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the operation (only used in reports).
    pub client: u32,
    /// The key operated on.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// What was answered.
    pub ret: Return,
    /// When (in the history's time unit) the call was issued.
    pub invoked: u64,
    /// When (the same unit) the answer arrived; ignored for [`Return::Unknown`].
    pub returned: u64,
}

/// Details of a history that is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The key whose sub-history is not linearizable.
    pub key: String,
    /// The operation (index in the history, operation) that the longest
    /// partial linearization found could not be extended with.
    pub culprit: (usize, Operation),
    /// The register value at the end of that partial linearization.
    pub state: Option<u64>,
    /// How many operations of the key that partial linearization resolved.
    pub linearized: usize,
    /// Its last few operations, oldest first.
    pub recent: Vec<(usize, Operation)>,
    /// All operations of the key whose intervals overlap the culprit's.
    pub concurrent: Vec<(usize, Operation)>,
}

/// Why [`check`] did not accept a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The history is definitely not linearizable.
    NotLinearizable(Box<Failure>),
    /// The search budget ran out: the outcome is undecided, not a violation.
    TooHard {
        /// The key whose search was abandoned.
        key: String,
        /// How many configurations were memoised before giving up.
        states: usize,
    },
    /// An operation is inconsistent (e.g. a read acknowledged as a write).
    Malformed {
        /// Index of the operation in the history.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: ", self.client)?;
        match self.call {
            Call::Read => write!(f, "read")?,
            Call::Write(v) => write!(f, "write({v})")?,
            Call::Delete => write!(f, "delete")?,
        }
        let (invoked, returned) = (self.invoked, self.returned);
        match self.ret {
            Return::Read(v) => write!(f, " -> {}, [{invoked}, {returned}]", show(v)),
            Return::Done => write!(f, " -> ok, [{invoked}, {returned}]"),
            Return::Unknown => write!(f, " -> unknown, [{invoked}, ?)"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (index, op) = &self.culprit;
        writeln!(f, "key {:?}: history is not linearizable", self.key)?;
        writeln!(f, "  no linearization can place #{index} {op}")?;
        let (count, state) = (self.linearized, show(self.state));
        write!(f, "  longest partial linearization: {count} operations, ")?;
        write!(f, "register = {state}; it ends with:")?;
        for (i, o) in &self.recent {
            write!(f, "\n    #{i} {o}")?;
        }
        write!(f, "\n  operations concurrent with #{index}:")?;
        if self.concurrent.is_empty() {
            write!(f, " none")?;
        }
        for (i, o) in &self.concurrent {
            write!(f, "\n    #{i} {o}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable(failure) => failure.fmt(f),
            Violation::TooHard { key, states } => write!(
                f,
                "key {key:?}: gave up after {states} search states; \
                 linearizability is undecided (this is not a violation)"
            ),
            Violation::Malformed { index, reason } => {
                write!(f, "malformed history: operation #{index}: {reason}")
            }
        }
    }
}

impl std::error::Error for Violation {}

/// Renders a register value.
fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

/// Checks that `history` is linearizable, with a budget of
/// [`DEFAULT_MAX_STATES`] search configurations per key.
///
/// # Errors
///
/// See [`check_with_limit`].
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    check_with_limit(history, DEFAULT_MAX_STATES)
}

/// Checks that `history` is linearizable, memoising at most `max_states`
/// search configurations per key.
///
/// # Errors
///
/// [`Violation::Malformed`] for the first inconsistent operation, else
/// [`Violation::NotLinearizable`] for the first key (in lexicographic order)
/// that is not linearizable, else [`Violation::TooHard`] for the first key
/// whose search ran out of budget.
pub fn check_with_limit(history: &[Operation], max_states: usize) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, o) in history.iter().enumerate() {
        let reason = match (o.call, o.ret) {
            (Call::Read, Return::Done) => "a read must return a value or Unknown",
            (Call::Write(_) | Call::Delete, Return::Read(_)) => "only a read returns a value",
            (_, Return::Read(_) | Return::Done) if o.returned < o.invoked => {
                "it returned before it was invoked"
            }
            _ => {
                by_key.entry(o.key.as_str()).or_default().push(index);
                continue;
            }
        };
        return Err(Violation::Malformed { index, reason });
    }
    let mut undecided = None;
    for (key, indices) in by_key {
        let ops = prepare(history, &indices);
        let stuck = match search(&ops, max_states) {
            Outcome::Linearizable => continue,
            Outcome::TooHard(states) => {
                let key = key.to_string();
                undecided.get_or_insert(Violation::TooHard { key, states });
                continue;
            }
            Outcome::Stuck(stuck) => stuck,
        };
        let plain: Vec<KeyOp> = ops.iter().map(|o| KeyOp { lazy: false, ..*o }).collect();
        let stuck = match search(&plain, max_states.min(REPORT_STATES)) {
            Outcome::Stuck(explained) => explained,
            _ => stuck,
        };
        let failure = report(history, key, &indices, &ops, &stuck);
        return Err(Violation::NotLinearizable(Box::new(failure)));
    }
    undecided.map_or(Ok(()), Err)
}

/// The effect of an operation on the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read(Option<u64>),
    Write(u64),
    Delete,
}

/// The sequential specification: the register after the operation, or
/// `None` if the operation is impossible in register state `state`.
fn step(state: Option<u64>, kind: Kind) -> Option<Option<u64>> {
    match kind {
        Kind::Read(v) => (v == state).then_some(state),
        Kind::Write(v) => Some(Some(v)),
        Kind::Delete => Some(None),
    }
}

/// An operation of one key, after the reductions of unknown outcomes.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index in the caller's history.
    hist: usize,
    kind: Kind,
    invoked: u64,
    /// Time of its return event: linearized by then, or (if optional) never.
    deadline: u64,
    /// Whether the operation may also never take effect.
    optional: bool,
    /// Whether, once linearized, the next operation must be a read.
    lazy: bool,
    /// Whether it is an acknowledged write of a value that no read returned.
    dead: bool,
}

/// Turns the operations `indices` of one key into search operations sorted by
/// invocation, applying the reductions of unknown outcomes (module docs).
fn prepare(history: &[Operation], indices: &[usize]) -> Vec<KeyOp> {
    let mut writes: HashMap<u64, usize> = HashMap::new();
    let mut reads: HashMap<Option<u64>, Vec<u64>> = HashMap::new();
    for o in indices.iter().map(|&i| &history[i]) {
        match (o.call, o.ret) {
            (Call::Write(v), _) => *writes.entry(v).or_default() += 1,
            (Call::Read, Return::Read(v)) => reads.entry(v).or_default().push(o.returned),
            _ => {}
        }
    }
    let observers = |v| reads.get(&v).map_or(&[][..], Vec::as_slice);
    let unique = |v| writes.get(&v) == Some(&1);
    let prepare_op = |hist: usize| {
        let o: &Operation = &history[hist];
        // The last return of a read that could observe the operation.
        let last_observer = |v| {
            observers(v)
                .iter()
                .copied()
                .filter(|&t| t >= o.invoked)
                .max()
        };
        let (kind, deadline, optional) = match (o.call, o.ret) {
            (Call::Read, Return::Read(v)) => (Kind::Read(v), o.returned, false),
            (Call::Read, _) => return None,
            (Call::Write(v), Return::Done) => (Kind::Write(v), o.returned, false),
            (Call::Delete, Return::Done) => (Kind::Delete, o.returned, false),
            (Call::Write(v), _) if unique(v) => {
                let first = observers(Some(v)).iter().copied().min()?;
                (Kind::Write(v), first.max(o.invoked), false)
            }
            (Call::Write(v), _) => (Kind::Write(v), last_observer(Some(v))?, true),
            (Call::Delete, _) => (Kind::Delete, last_observer(None)?, true),
        };
        let (lazy, dead) = match kind {
            Kind::Write(v) => {
                let read = !observers(Some(v)).is_empty();
                (unique(v) && read, !optional && !read)
            }
            Kind::Delete => (optional, false),
            Kind::Read(_) => (false, false),
        };
        let invoked = o.invoked;
        Some(KeyOp {
            hist,
            kind,
            invoked,
            deadline,
            optional,
            lazy,
            dead,
        })
    };
    let mut ops: Vec<KeyOp> = indices
        .iter()
        .filter_map(|&hist| prepare_op(hist))
        .collect();
    ops.sort_by_key(|o| (o.invoked, o.hist));
    ops
}

/// The call and return events of all operations as a doubly linked list in
/// time order; position `event.len()` is the head sentinel.
struct Events {
    /// Each event's operation, and whether it is a call (else a return).
    event: Vec<(usize, bool)>,
    /// Positions of each operation's call and return events.
    at: Vec<(usize, usize)>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Events {
    fn new(ops: &[KeyOp]) -> Self {
        let mut times: Vec<(u64, bool, usize)> = ops
            .iter()
            .enumerate()
            .flat_map(|(i, o)| [(o.invoked, false, i), (o.deadline, true, i)])
            .collect();
        times.sort_unstable();
        let len = times.len();
        let mut at = vec![(0, 0); ops.len()];
        for (p, &(_, is_return, op)) in times.iter().enumerate() {
            if is_return {
                at[op].1 = p;
            } else {
                at[op].0 = p;
            }
        }
        let mut next: Vec<usize> = (1..=len).map(|p| if p < len { p } else { NIL }).collect();
        next.push(if len > 0 { 0 } else { NIL });
        let mut prev: Vec<usize> = (0..len).map(|p| if p == 0 { len } else { p - 1 }).collect();
        prev.push(NIL);
        let event = times
            .iter()
            .map(|&(_, is_return, op)| (op, !is_return))
            .collect();
        Events {
            event,
            at,
            next,
            prev,
        }
    }

    /// The first event still in the list.
    fn first(&self) -> usize {
        self.next[self.event.len()]
    }

    fn unlink(&mut self, p: usize) {
        let (before, after) = (self.prev[p], self.next[p]);
        self.next[before] = after;
        if after != NIL {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, p: usize) {
        let (before, after) = (self.prev[p], self.next[p]);
        self.next[before] = p;
        if after != NIL {
            self.prev[after] = p;
        }
    }

    /// Removes both events of `op`.
    fn lift(&mut self, op: usize) {
        self.unlink(self.at[op].0);
        self.unlink(self.at[op].1);
    }

    /// Undoes the last [`Events::lift`] not yet undone, which lifted `op`.
    fn unlift(&mut self, op: usize) {
        self.relink(self.at[op].1);
        self.relink(self.at[op].0);
    }
}

/// A memoised configuration: number of leading resolved operations, bitset
/// of the following ones (trailing zero words trimmed), register, and
/// whether the next operation must be a read.
type MemoKey = (usize, Box<[u64]>, Option<u64>, bool);

fn memo_key(bits: &[u64], state: Option<u64>, must_read: bool) -> MemoKey {
    let lo = bits.iter().position(|&w| w != u64::MAX);
    let lo = lo.unwrap_or(bits.len());
    let hi = bits.iter().rposition(|&w| w != 0);
    let hi = hi.map_or(lo, |i| (i + 1).max(lo));
    (lo, bits[lo..hi].into(), state, must_read)
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

/// One resolved operation on the search stack.
#[derive(Clone, Copy)]
struct Frame {
    op: usize,
    /// Register before it.
    before: Option<u64>,
    /// Resolved without alternatives (a greedy read, a drop, a dead write at
    /// its deadline): undoing it backtracks further.
    forced: bool,
    /// Whether the next operation must be a read.
    must_read: bool,
    /// A dead write resolved together with the frame above it.
    joined: bool,
}

/// Where the deepest failed branch got stuck.
#[derive(Default)]
struct Stuck {
    depth: usize,
    culprit: usize,
    state: Option<u64>,
    recent: Vec<usize>,
}

enum Outcome {
    Linearizable,
    TooHard(usize),
    Stuck(Stuck),
}

/// The current configuration of the search over one key's operations.
struct Search<'a> {
    ops: &'a [KeyOp],
    /// The events of unresolved operations.
    events: Events,
    /// The resolved operations, as a bitset.
    bits: Vec<u64>,
    stack: Vec<Frame>,
    state: Option<u64>,
    mandatory_left: usize,
}

impl Search<'_> {
    fn resolve(&mut self, op: usize, after: Option<u64>, forced: bool, must_read: bool) {
        let (before, joined) = (self.state, false);
        self.stack.push(Frame {
            op,
            before,
            forced,
            must_read,
            joined,
        });
        set_bit(&mut self.bits, op, true);
        self.events.lift(op);
        self.state = after;
        self.mandatory_left -= usize::from(!self.ops[op].optional);
    }

    /// Undoes the last step: its frame, and the dead writes joined to it.
    fn undo_step(&mut self) -> Option<Frame> {
        let top = self.stack.pop()?;
        let mut frame = Some(top);
        while let Some(f) = frame {
            set_bit(&mut self.bits, f.op, false);
            self.events.unlift(f.op);
            self.state = f.before;
            self.mandatory_left += usize::from(!self.ops[f.op].optional);
            frame = self.stack.pop_if(|f| f.joined);
        }
        Some(top)
    }

    /// Resolves, as part of the next step, the dead writes other than
    /// `except` that may go next, including those that may go next once
    /// these are resolved.
    fn resolve_dead(&mut self, except: usize) {
        let mut e = self.events.first();
        while let Some(&(op, true)) = self.events.event.get(e) {
            match self.ops[op].kind {
                Kind::Write(v) if self.ops[op].dead && op != except => {
                    let before = self.events.prev[e];
                    self.resolve(op, Some(v), true, false);
                    if let Some(frame) = self.stack.last_mut() {
                        frame.joined = true;
                    }
                    e = self.events.next[before];
                }
                _ => e = self.events.next[e],
            }
        }
    }

    /// Whether an interchangeable optional operation (same effect and
    /// deadline) is called before event `entry`: the scan of this
    /// configuration tried it already, and either leads to equivalent
    /// configurations.
    fn shadowed(&self, entry: usize) -> bool {
        let x = self.ops[self.events.event[entry].0];
        let mut e = self.events.first();
        while e != entry && e != NIL {
            let (y, is_call) = self.events.event[e];
            let y = self.ops[y];
            if is_call && y.optional && (y.kind, y.deadline) == (x.kind, x.deadline) {
                return true;
            }
            e = self.events.next[e];
        }
        false
    }
}

/// The Wing & Gong / Lowe search over one key's operations (module docs).
fn search(ops: &[KeyOp], max_states: usize) -> Outcome {
    let mut s = Search {
        ops,
        events: Events::new(ops),
        bits: vec![0u64; ops.len().div_ceil(64)],
        stack: Vec::new(),
        state: None,
        mandatory_left: ops.iter().filter(|o| !o.optional).count(),
    };
    let mut seen: HashSet<MemoKey> = HashSet::new();
    let mut best: Option<Stuck> = None;
    let mut entry = s.events.first();
    loop {
        if s.mandatory_left == 0 {
            return Outcome::Linearizable;
        }
        let must_read = s.stack.last().is_some_and(|f| f.must_read);
        // The operation to resolve next, the register after it, and whether
        // it is forced.
        let mut next = None;
        if let Some(&(op, is_call)) = s.events.event.get(entry) {
            let x = ops[op];
            if is_call {
                let is_read = matches!(x.kind, Kind::Read(_));
                let no_op = x.kind == Kind::Delete && s.state.is_none();
                let skip =
                    !is_read && (must_read || x.dead || x.optional && (no_op || s.shadowed(entry)));
                match step(s.state, x.kind) {
                    Some(after) if !skip => next = Some((op, after, is_read)),
                    _ => {
                        entry = s.events.next[entry];
                        continue;
                    }
                }
            } else if x.optional {
                next = Some((op, s.state, true));
            } else if must_read {
                // The last operation cannot be followed by a read: fail.
            } else if x.dead {
                next = step(s.state, x.kind).map(|after| (op, after, true));
            } else if best.as_ref().is_none_or(|b| s.stack.len() > b.depth) {
                let linearized = s.stack.iter().filter(|f| !(f.forced && ops[f.op].optional));
                let mut recent: Vec<usize> = linearized.rev().take(RECENT).map(|f| f.op).collect();
                recent.reverse();
                let (depth, state) = (s.stack.len(), s.state);
                best = Some(Stuck {
                    depth,
                    culprit: op,
                    state,
                    recent,
                });
            }
        }
        if let Some((op, after, forced)) = next {
            let (drop, read) = (
                forced && ops[op].optional,
                matches!(ops[op].kind, Kind::Read(_)),
            );
            // A drop keeps the obligation to read next; a read fulfils it.
            let must_read = if forced {
                must_read && drop
            } else {
                ops[op].lazy
            };
            // A write or delete takes along all the dead writes that may go
            // first; a dead write (at its deadline) goes with all of them.
            let dead = ops[op].dead;
            if !drop && !read {
                s.resolve_dead(if dead { NIL } else { op });
            }
            if !dead {
                s.resolve(op, after, forced, must_read);
            } else if let Some(frame) = s.stack.last_mut() {
                // The last dead write stands for the step.
                frame.joined = false;
            }
            if seen.insert(memo_key(&s.bits, s.state, must_read)) {
                if seen.len() > max_states {
                    return Outcome::TooHard(seen.len());
                }
                entry = s.events.first();
                continue;
            }
            s.undo_step();
            if !forced {
                entry = s.events.next[entry];
                continue;
            }
        }
        // Backtrack to the last step with alternatives, and try the calls
        // after its own.
        loop {
            let Some(frame) = s.undo_step() else {
                // Every exhausted search got stuck somewhere, so `best` is set.
                return Outcome::Stuck(best.unwrap_or_default());
            };
            if !frame.forced {
                entry = s.events.next[s.events.at[frame.op].0];
                break;
            }
        }
    }
}

/// Builds the human-readable report for a failed key.
fn report(
    history: &[Operation],
    key: &str,
    indices: &[usize],
    ops: &[KeyOp],
    stuck: &Stuck,
) -> Failure {
    let culprit = ops[stuck.culprit];
    let entry = |i: usize| (i, history[i].clone());
    let overlaps = |o: &Operation| {
        o.invoked <= culprit.deadline && (o.ret == Return::Unknown || o.returned >= culprit.invoked)
    };
    let concurrent = indices
        .iter()
        .copied()
        .filter(|&i| i != culprit.hist && overlaps(&history[i]));
    Failure {
        key: key.to_string(),
        culprit: entry(culprit.hist),
        state: stuck.state,
        linearized: stuck.depth,
        recent: stuck.recent.iter().map(|&op| entry(ops[op].hist)).collect(),
        concurrent: concurrent.map(entry).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Parses a history written as whitespace-separated items
    /// `[key:]<op>@<invoked>[-<returned>]`, where `<op>` is `w5` (write 5),
    /// `d` (delete), `r5` or `r` (read returning 5 or absent). Without
    /// `-<returned>` the outcome is unknown. The key defaults to `k`, and the
    /// client is the item's position.
    fn h(spec: &str) -> Vec<Operation> {
        let item = |(client, item): (usize, &str)| {
            let (key, item) = item.split_once(':').unwrap_or(("k", item));
            let (what, times) = item.split_once('@').expect("missing @");
            let (invoked, returned) = times.split_once('-').unwrap_or((times, ""));
            let value = what[1..].parse().ok();
            let call = match &what[..1] {
                "w" => Call::Write(value.expect("write without value")),
                "d" => Call::Delete,
                _ => Call::Read,
            };
            let ret = match (returned, call) {
                ("", _) => Return::Unknown,
                (_, Call::Read) => Return::Read(value),
                _ => Return::Done,
            };
            let (client, key) = (client as u32, key.to_string());
            let invoked = invoked.parse().expect("bad invocation time");
            let returned = returned.parse().unwrap_or(0);
            Operation {
                client,
                key,
                call,
                ret,
                invoked,
                returned,
            }
        };
        spec.split_whitespace().enumerate().map(item).collect()
    }

    #[track_caller]
    fn good(spec: &str) {
        if let Err(e) = check(&h(spec)) {
            panic!("expected linearizable, got:\n{e}");
        }
    }

    #[track_caller]
    fn bad(spec: &str) -> Box<Failure> {
        match check(&h(spec)) {
            Err(Violation::NotLinearizable(failure)) => failure,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_histories_are_linearizable() {
        good("");
        good("r@0-1 w1@2-3 r1@4-5 w2@6-7 r2@8-9 d@10-11 r@12-13 w3@14-15 r3@16-17");
    }

    #[test]
    fn overlapping_writes_may_be_read_in_either_order() {
        good("w1@0-10 w2@5-15 r1@20-21 r1@22-23");
        good("w1@0-10 w2@5-15 r2@20-21 r2@22-23");
        // Once both are done, the order cannot flip between reads.
        bad("w1@0-10 w2@5-15 r2@20-21 r1@22-23");
    }

    #[test]
    fn read_concurrent_with_write_sees_old_or_new() {
        good("w1@0-1 w2@5-15 r1@6-8 r2@20-21");
        good("w1@0-1 w2@5-15 r2@6-8 r2@20-21");
        // Two reads during the write: once one saw the new value, later ones must too.
        good("w1@0-1 w2@5-15 r1@6-8 r2@9-10 r2@20-21");
        bad("w1@0-1 w2@5-15 r2@6-8 r1@9-10 r2@20-21");
    }

    #[test]
    fn unknown_write_may_be_seen_later_or_never() {
        good("w1@0-1 w2@2 r1@50-51 r2@90-91");
        good("w1@0-1 w2@2 r1@50-51 r1@90-91");
        // Once seen, it cannot be unseen.
        bad("w1@0-1 w2@2 r2@50-51 r1@90-91");
    }

    #[test]
    fn delete_then_read_absent() {
        good("w1@0-1 d@2-3 r@4-5");
        good("w1@0-1 d@2 r@4-5 r@6-7");
        good("w1@0-1 d@2 r1@4-5 r@6-7");
        // An unknown delete may even take effect after later writes.
        good("w1@0-1 d@2 w2@3-4 r2@5-6 r@7-8");
        bad("w1@0-1 d@2 r@4-5 r1@6-7");
    }

    #[test]
    fn writes_nobody_read_still_take_effect() {
        good("w1@0-10 w2@0-10 w3@0-10 r3@11-12");
        bad("w1@0-10 w2@0-10 r@11-12");
        bad("w1@0-1 d@2-3 w2@4-5 r@6-7");
    }

    #[test]
    fn unknown_reads_are_ignored() {
        good("w1@0-1 r@4 r7@5 r1@6-7");
    }

    #[test]
    fn operations_touching_at_an_instant_are_concurrent() {
        good("w1@0-5 r@5-6");
        bad("w1@0-5 r@6-7");
    }

    #[test]
    fn keys_are_checked_independently() {
        good("a:w1@0-1 b:w1@0-1 a:r1@2-3 b:r1@2-3 b:d@4-5 a:r1@6-7");
        assert_eq!(bad("a:w1@0-1 b:w1@0-1 a:r1@2-3 b:r@2-3").key, "b");
    }

    #[test]
    fn duplicate_write_values_are_checked_soundly() {
        good("w1@0-1 w2@2-3 w1@4-5 r1@6-7");
        good("w1@0-1 w2@2-3 w1@4 r1@6-7");
        bad("w1@0-1 w2@2-3 w1@8 r1@6-7");
    }

    #[test]
    fn stale_read_is_a_violation() {
        let failure = bad("w1@0-1 w2@2-3 r1@4-5");
        assert_eq!((failure.culprit.0, failure.state), (2, Some(2)));
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        bad("w1@0-1 r@2-3");
    }

    #[test]
    fn reading_an_unwritten_or_future_value_is_a_violation() {
        bad("w1@0-1 r7@2-3");
        bad("r1@0-1 w1@2-3");
        bad("r1@0-1 w1@2");
    }

    #[test]
    fn non_monotonic_reads_across_clients_are_a_violation() {
        bad("w1@0-1 w2@2-10 r2@3-4 r1@5-6");
    }

    #[test]
    fn acknowledged_delete_then_old_value_is_a_violation() {
        bad("w1@0-1 d@2-3 r1@4-5");
    }

    #[test]
    fn report_names_key_culprit_and_concurrent_operations() {
        let failure = bad("w1@0-1 w2@2-3 r1@4-9 w3@5-6 r@20");
        assert_eq!(failure.culprit.0, 2);
        let concurrent: Vec<usize> = failure.concurrent.iter().map(|c| c.0).collect();
        assert_eq!(concurrent, [3]);
        let text = Violation::NotLinearizable(failure).to_string();
        assert!(text.contains("key \"k\""), "{text}");
        assert!(
            text.contains("place #2 client 2: read -> 1, [4, 9]"),
            "{text}"
        );
        assert!(
            text.contains("#3 client 3: write(3) -> ok, [5, 6]"),
            "{text}"
        );
    }

    #[test]
    fn malformed_operations_are_rejected() {
        let mut history = h("w1@0-1 r@2-3");
        history[1].ret = Return::Done;
        assert!(matches!(
            check(&history),
            Err(Violation::Malformed { index: 1, .. })
        ));
        let malformed = check(&h("w1@0-1 r@5-4"));
        assert!(matches!(
            malformed,
            Err(Violation::Malformed { index: 1, .. })
        ));
    }

    /// A xorshift64 generator, so that random tests are reproducible.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Simulates `clients` sequential clients on atomic registers: every
    /// operation takes effect at a random instant of its interval; one in ten
    /// gets no answer, and such writes and deletes take effect at a random
    /// later time or never.
    fn generate(seed: u64, clients: u32, per_client: usize, keys: &[&str]) -> Vec<Operation> {
        let mut rng = Rng::new(seed);
        let (mut history, mut effects, mut value) = (Vec::new(), Vec::new(), 0);
        for client in 0..clients {
            let mut t = rng.below(5) as u64;
            for _ in 0..per_client {
                let key = keys[rng.below(keys.len())].to_string();
                let (invoked, duration) = (t, 1 + rng.below(20) as u64);
                let (call, unknown) = match rng.below(10) {
                    0..4 => {
                        value += 1;
                        (Call::Write(value), rng.below(10) == 0)
                    }
                    4 => (Call::Delete, rng.below(10) == 0),
                    _ => (Call::Read, rng.below(10) == 0),
                };
                let at = match (unknown, call) {
                    (false, _) => Some(invoked + rng.below(duration as usize + 1) as u64),
                    (true, Call::Read) => None,
                    (true, _) if rng.below(2) == 0 => None,
                    (true, _) => Some(invoked + rng.below(3 * duration as usize + 40) as u64),
                };
                effects.extend(at.map(|at| (at, history.len())));
                let ret = if unknown {
                    Return::Unknown
                } else {
                    Return::Done
                };
                let returned = invoked + duration;
                history.push(Operation {
                    client,
                    key,
                    call,
                    ret,
                    invoked,
                    returned,
                });
                t = returned + rng.below(5) as u64;
            }
        }
        effects.sort_unstable();
        let mut registers: HashMap<String, Option<u64>> = HashMap::new();
        for (_, i) in effects {
            let o = &mut history[i];
            let register = registers.entry(o.key.clone()).or_default();
            match o.call {
                Call::Read => o.ret = Return::Read(*register),
                Call::Write(v) => *register = Some(v),
                Call::Delete => *register = None,
            }
        }
        history
    }

    /// Makes an acknowledged read return the value of an acknowledged write
    /// that an acknowledged write or delete overwrote before the read was
    /// invoked. Returns the key of the altered read, if one could be altered.
    fn inject_stale_read(history: &mut [Operation], rng: &mut Rng) -> Option<String> {
        let start = rng.below(history.len());
        for i in (0..history.len()).map(|i| (i + start) % history.len()) {
            let read = &history[i];
            let acked_before = |o: &&Operation, t: u64| {
                o.key == read.key && o.ret == Return::Done && o.returned < t
            };
            let overwrite = history
                .iter()
                .filter(|o| matches!(read.ret, Return::Read(_)) && acked_before(o, read.invoked))
                .max_by_key(|o| o.invoked);
            let stale = overwrite.and_then(|overwrite| {
                let mut before = history
                    .iter()
                    .filter(|o| acked_before(o, overwrite.invoked));
                before.find_map(|o| {
                    if let Call::Write(v) = o.call {
                        Some(v)
                    } else {
                        None
                    }
                })
            });
            if let Some(v) = stale {
                history[i].ret = Return::Read(Some(v));
                return Some(history[i].key.clone());
            }
        }
        None
    }

    #[test]
    fn random_atomic_register_histories_are_linearizable() {
        for seed in 0..300 {
            let history = generate(seed, 2 + (seed % 5) as u32, 12, &["a", "b"]);
            if let Err(e) = check(&history) {
                panic!("seed {seed}:\n{e}");
            }
        }
    }

    #[test]
    fn random_histories_with_an_injected_stale_read_are_violations() {
        let mut injected = 0;
        for seed in 0..300 {
            let mut history = generate(seed, 2 + (seed % 5) as u32, 12, &["a", "b"]);
            let Some(key) = inject_stale_read(&mut history, &mut Rng::new(seed + 1000)) else {
                continue;
            };
            match check(&history) {
                Err(Violation::NotLinearizable(f)) => assert_eq!(f.key, key, "seed {seed}"),
                other => panic!("seed {seed}: expected a violation, got {other:?}"),
            }
            injected += 1;
        }
        assert!(
            injected >= 200,
            "only {injected} histories could be corrupted"
        );
    }

    /// Reference checker: tries every order of the operations, memoised on
    /// (placed operations, register), without any of the search's reductions.
    fn brute_force(history: &[Operation]) -> bool {
        type Failed = HashSet<(u64, Option<u64>)>;
        fn extend(
            ops: &[&Operation],
            placed: u64,
            state: Option<u64>,
            failed: &mut Failed,
        ) -> bool {
            let pending = |i: usize| placed & (1 << i) == 0;
            let mandatory = |i: usize| pending(i) && ops[i].ret != Return::Unknown;
            if !(0..ops.len()).any(mandatory) {
                return true;
            }
            if failed.contains(&(placed, state)) {
                return false;
            }
            for (i, o) in ops.iter().enumerate() {
                let blocked = (0..ops.len()).any(|j| mandatory(j) && ops[j].returned < o.invoked);
                let after = match (o.call, o.ret) {
                    (Call::Read, Return::Read(v)) => (v == state).then_some(state),
                    (Call::Write(v), _) => Some(Some(v)),
                    (Call::Delete, _) => Some(None),
                    (Call::Read, _) => None,
                };
                if let (true, false, Some(after)) = (pending(i), blocked, after)
                    && extend(ops, placed | 1 << i, after, failed)
                {
                    return true;
                }
            }
            failed.insert((placed, state));
            false
        }
        let ops: Vec<&Operation> = history.iter().collect();
        extend(&ops, 0, None, &mut HashSet::new())
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let (mut rng, mut violations) = (Rng::new(99), 0);
        for seed in 0..1000 {
            let mut history = generate(seed, 2 + (seed % 3) as u32, 2 + rng.below(4), &["k"]);
            // Corrupt some read values and invocation times, to get bad ones.
            for _ in 0..rng.below(3) {
                let i = rng.below(history.len());
                let o = &mut history[i];
                match o.ret {
                    Return::Read(_) => o.ret = Return::Read(Some(rng.below(6) as u64 + 1)),
                    _ => o.invoked = o.invoked.saturating_sub(rng.below(10) as u64),
                }
            }
            let expected = brute_force(&history);
            violations += usize::from(!expected);
            assert_eq!(
                check(&history).is_ok(),
                expected,
                "seed {seed}: {history:?}"
            );
        }
        assert!(violations > 200, "only {violations} violations");
    }

    #[test]
    fn exhausted_budget_is_undecided_not_a_violation() {
        let outcome = check_with_limit(&generate(1, 4, 20, &["k"]), 10);
        assert!(
            matches!(outcome, Err(Violation::TooHard { .. })),
            "{outcome:?}"
        );
        assert!(outcome.is_err_and(|e| e.to_string().contains("not a violation")));
    }

    #[test]
    fn two_thousand_operations_on_one_key_are_fast() {
        let mut history = generate(7, 6, 334, &["k"]);
        let start = Instant::now();
        assert_eq!(check(&history), Ok(()));
        let accepted = start.elapsed();
        let key = inject_stale_read(&mut history, &mut Rng::new(7));
        assert_eq!(key.as_deref(), Some("k"));
        assert!(matches!(
            check(&history),
            Err(Violation::NotLinearizable(_))
        ));
        let rejected = start.elapsed().saturating_sub(accepted);
        eprintln!("2004 operations: accepted in {accepted:?}, violation found in {rejected:?}");
        assert!(accepted + rejected < Duration::from_secs(3), "too slow");
    }
}
