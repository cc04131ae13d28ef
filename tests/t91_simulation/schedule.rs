//! Seeded fault schedules: which nodes start, join, crash, restart, leave and
//! which links are cut or delayed, and when (virtual time).

use std::time::Duration;

/// xorshift64*: small, fast and deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A duration in `from..to`.
    pub fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = to.saturating_sub(from).as_millis() as u64;
        from + Duration::from_millis(self.below(span.max(1)))
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Which faults a schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// What the ring promises to survive with every acknowledged write kept
    /// and no stale read: joins, graceful leaves, crashes (a node's memory
    /// lost) and restarts, up to two failures at once, messages delayed within
    /// the probe timeout.
    Promised,
    /// Also cut links (both ways, one way, to the registry), links that hold
    /// their messages, and paused nodes, long enough for a false failure
    /// suspicion.
    Suspicions,
    /// Also the ring split in two groups of two or more: two adjacent nodes
    /// cut off together from the rest and the registry. Covered since
    /// takeovers wait for the registry's verdict (the registry is the
    /// witness: only its side serves).
    Splits,
    /// Also the registry restarting (down for up to 3.5 s, less than the
    /// gap to the next event; its counts of verdicts kept in its data
    /// directory, relearning the members when it is back), beside every
    /// fault above.
    RegistryRestarts,
    /// Also splits with the registry on the smaller side: two adjacent
    /// nodes and the registry cut off together from the other nodes.
    RegistryWithThePair,
}

/// A change to the simulated world, as the schedule draws it. Which nodes it
/// touches is decided when it happens (from the nodes alive then, and their
/// neighbours as their views say), by the driver's own seeded choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A node starts with nothing (a new name, or a crashed node's: a
    /// restart that lost its memory) and joins.
    Join,
    /// Two nodes start at once.
    JoinTwo,
    /// A node leaves gracefully (hands its keys over) and exits.
    Leave,
    /// A node is killed.
    Crash,
    /// A node joins, and the node after it is killed soon after.
    JoinThenCrashNext,
    /// A node is killed, and the node before it soon after (two adjacent
    /// failures: every key still has a copy).
    CrashTwoAdjacent,
    /// A node starts leaving as the node after it is killed.
    LeaveAsNextCrashes,
    /// The links between a node and another (or the registry) drop
    /// everything, both ways.
    Partition,
    /// The link from a node to another drops everything; the other way works.
    PartitionOneWay,
    /// The links between a node and another hold their messages (delivered
    /// on repair, late).
    Hold,
    /// A node is cut off from every other node and the registry, both ways;
    /// clients still reach it.
    Isolate,
    /// Every link of a node (to every other node, the registry and the
    /// clients) holds its messages both ways until the repair, which
    /// delivers them late: what the rest of the world sees of a process
    /// stopped by `SIGSTOP` and continued by `SIGCONT`, answers computed
    /// before the stop included. What turmoil 0.7 cannot do is stop the
    /// node's own clock and tasks: its timers still fire meanwhile (it
    /// suspects its neighbours while "paused", as a real process does only
    /// on waking).
    Pause,
    /// Two adjacent nodes (a node and its next) are cut off together from
    /// every other node and the registry; they still reach each other, and
    /// clients reach both.
    IsolatePair,
    /// The registry crashes, and starts again a little later from its data
    /// directory.
    RestartRegistry,
    /// Two adjacent nodes and the registry are cut off together from every
    /// other node; clients reach every node.
    IsolatePairWithRegistry,
    /// Every cut or held link works again.
    Repair,
}

impl Event {
    /// How many nodes it adds to the ring (negative: removes).
    fn change(self) -> i32 {
        match self {
            Event::Join => 1,
            Event::JoinTwo => 2,
            Event::Leave | Event::Crash => -1,
            Event::CrashTwoAdjacent | Event::LeaveAsNextCrashes => -2,
            Event::JoinThenCrashNext
            | Event::Partition
            | Event::PartitionOneWay
            | Event::Hold
            | Event::Isolate
            | Event::Pause
            | Event::IsolatePair
            | Event::RestartRegistry
            | Event::IsolatePairWithRegistry
            | Event::Repair => 0,
        }
    }
}

/// A fault schedule: events at virtual times, in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// How many nodes start the ring.
    pub first: usize,
    /// The events, by time.
    pub events: Vec<(Duration, Event)>,
    /// When clients stop sending (faults stop earlier, so the ring heals).
    pub clients_until: Duration,
    /// When the final checks start.
    pub check_at: Duration,
}

/// When clients start: after the first nodes have joined.
pub const CLIENTS_FROM: Duration = Duration::from_secs(4);
/// When faults start and stop.
const FAULTS: (Duration, Duration) = (Duration::from_secs(6), Duration::from_secs(40));
/// The most nodes alive at once, and the fewest (3: every key has three copies).
const MAX_NODES: i32 = 7;
const MIN_NODES: i32 = 3;

impl Schedule {
    /// The schedule of `seed`.
    pub fn generate(seed: u64, faults: Faults) -> Self {
        let mut rng = Rng::new(seed);
        let first = 3 + rng.below(2) as usize;
        let mut alive = first as i32;
        let mut events = Vec::new();
        let mut at = FAULTS.0;
        while at < FAULTS.1 {
            // Drawn first, and only for its kind: the other kinds' schedules
            // stay as they were.
            let restart = faults == Faults::RegistryRestarts && rng.chance(40);
            let with_registry = faults == Faults::RegistryWithThePair && rng.chance(30);
            let event = if restart {
                Event::RestartRegistry
            } else if with_registry {
                Event::IsolatePairWithRegistry
            } else if faults != Faults::Promised && rng.chance(35) {
                let cuts = [
                    Event::Partition,
                    Event::PartitionOneWay,
                    Event::Hold,
                    Event::Isolate,
                    Event::Pause,
                    Event::IsolatePair,
                ];
                let kinds = if faults == Faults::Suspicions { 5 } else { 6 };
                *rng.pick(&cuts[..kinds])
            } else {
                *rng.pick(&[
                    Event::Join,
                    Event::Join,
                    Event::JoinTwo,
                    Event::Leave,
                    Event::Leave,
                    Event::Crash,
                    Event::Crash,
                    Event::JoinThenCrashNext,
                    Event::CrashTwoAdjacent,
                    Event::LeaveAsNextCrashes,
                ])
            };
            let after = alive + event.change();
            // Too few or too many: a join or a crash instead.
            let event = if after < MIN_NODES {
                Event::Join
            } else if after > MAX_NODES {
                Event::Crash
            } else {
                event
            };
            alive += event.change();
            events.push((at, event));
            if matches!(
                event,
                Event::Partition
                    | Event::PartitionOneWay
                    | Event::Hold
                    | Event::Isolate
                    | Event::Pause
                    | Event::IsolatePair
                    | Event::IsolatePairWithRegistry
            ) {
                // A pause may end before the node is suspected (1.5 s),
                // or long after.
                at += if event == Event::Pause {
                    rng.between(Duration::from_millis(500), Duration::from_secs(10))
                } else {
                    rng.between(Duration::from_secs(3), Duration::from_secs(6))
                };
                events.push((at, Event::Repair));
            }
            // The ring repairs (probes, hand-offs, anti-entropy) before the
            // next event.
            at += rng.between(Duration::from_secs(4), Duration::from_secs(8));
        }
        let clients_until = at + Duration::from_secs(5);
        Self {
            first,
            events,
            clients_until,
            check_at: clients_until + Duration::from_secs(10),
        }
    }
}
