//! A deterministic simulation of the shipped code: the real registry and DHT
//! nodes (tonic, axum, hyper, the gateway, replication, anti-entropy, the
//! maintenance loops) run on turmoil's simulated network in virtual time,
//! under seeded schedules of joins, graceful leaves, crashes, restarts and
//! delayed messages, while simulated clients read and write a few keys through
//! random nodes. Each run then checks:
//!
//! - **the ring**: once faults stop and the ring has had time to heal, every
//!   live node serves, and its `next` and `prev` are the next and previous live
//!   nodes by ID;
//! - **the copies**: every key's newest version is on its owner and the two
//!   nodes before it, and on no other node as a live value;
//! - **the history**: every key behaved as a linearizable register
//!   (`tests/common/linearizable.rs`, a Wing-Gong search): no acknowledged write lost, no
//!   stale read. The final reads of every key through every live node are part
//!   of the history.
//!
//! Why turmoil over the real node rather than a hand-written simulator over a
//! sans-IO core: it checks the code that ships, whole, including what a model
//! of it would leave out (HTTP/2 flow control, connection reuse, retries,
//! timeouts, the replica pipeline, anti-entropy), and it needs from the
//! library only two seams (`crustyring::transport`, `crustyring::clock`). Time
//! is virtual: a minute of ring life takes about a second.
//!
//! Schedules come in two kinds (`schedule::Faults`): what the ring promises
//! to survive (held to all three checks), and cut or held links as well,
//! which make neighbours falsely suspect a live node. Those are held to all
//! three with leases (`crustyring::lease`, the default), and to the ring and
//! copy checks with `--lease-ms 0` (whose histories are printed, not failed
//! on: two owners for an arc is what leases prevent).
//!
//! A failing run prints its seed; `SIM_SEED=<seed>` reruns exactly it,
//! `SIM_SEEDS=<n>` runs more of them, and `SIM_LOG=crustyring=debug` prints
//! the nodes' logs in virtual time.

mod availability;
#[path = "../common/linearizable.rs"]
mod linearizable;
mod network;
mod registry_restart;
mod repair;
mod schedule;
mod workload;

use crustyring::lease::LeaseSettings;
use crustyring::node::{Discovery, Node, NodeConfig, NodeState, ReplicationSettings};
use crustyring::registry::{self, RegistryConfig};
use crustyring::ring::{IdRule, Position, key_position, owner};
use crustyring::store::MemoryStore;
use linearizable::{Call, Operation, Return};
use network::SimListener;
use schedule::{Event, Faults, Schedule};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use workload::{History, KEYS, PORT};

/// Simulated clients per run.
const CLIENTS: u32 = 3;

/// The node configuration every simulated node runs: the defaults (three
/// copies, 500 ms probes, three misses), on the simulated network.
fn node_config(leases: Option<LeaseSettings>) -> NodeConfig {
    NodeConfig {
        network: network::network(),
        leases,
        replication: ReplicationSettings {
            factor: 3,
            ..ReplicationSettings::default()
        },
        ..NodeConfig::default()
    }
}

/// What a node host shares with the driver: its node once it serves,
/// whether it has been asked to leave, and the member it joins through
/// (`--join`), if not the registry.
#[derive(Default)]
struct NodeSlot {
    node: Option<Arc<Node>>,
    leave: bool,
    contact: Option<String>,
}

type Slots = Rc<RefCell<BTreeMap<String, NodeSlot>>>;

/// A node host: starts a node that joins through the registry or through the
/// member its slot names (choosing its ID by the registry's rule, and still
/// heartbeating to the registry), publishes it in `slots`, serves until asked
/// to leave, then leaves gracefully.
fn add_node_host(
    sim: &mut turmoil::Sim<'_>,
    name: &str,
    slots: &Slots,
    leases: Option<LeaseSettings>,
) {
    let (name, slots) = (name.to_string(), slots.clone());
    let host = name.clone();
    sim.host(host.as_str(), move || {
        let (name, slots) = (name.clone(), slots.clone());
        async move {
            let listener = SimListener::bind(PORT).await?;
            let registry = format!("http://registry:{PORT}");
            let contact = slots.borrow().get(&name).and_then(|s| s.contact.clone());
            let discovery = match contact {
                Some(contact) => Discovery::Join {
                    contact: format!("http://{contact}:{PORT}"),
                    ids: id_rule(),
                    registry: Some(registry),
                },
                None => Discovery::Registry(registry),
            };
            let running = crustyring::launch::start(
                listener,
                &name,
                discovery,
                node_config(leases),
                Arc::new(MemoryStore::new()),
                std::future::pending(),
            )
            .await?;
            slots.borrow_mut().entry(name.clone()).or_default().node = Some(running.node.clone());
            while !slots.borrow().get(&name).is_some_and(|s| s.leave) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            running.node.leave().await?;
            slots.borrow_mut().entry(name.clone()).or_default().node = None;
            Ok(())
        }
    });
}

/// What one run saw.
struct Outcome {
    history: Vec<Operation>,
    ring: Result<(), String>,
    /// What happened, resolved to nodes, at virtual times.
    trace: Vec<String>,
}

/// Log lines stamped with the simulation's virtual time.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>9.3}s", t.as_secs_f64()),
            None => write!(w, "{:>10}", "-"),
        }
    }
}

/// With `SIM_LOG` set (to a filter, e.g. `crustyring=debug`), the nodes' and
/// the registry's logs go to standard error, stamped with virtual time: what
/// a replayed seed did, step by step.
fn log_if_asked() {
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(VirtualTime)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Runs the schedule of `seed`.
fn run(seed: u64, faults: Faults, leases: Option<LeaseSettings>) -> Outcome {
    log_if_asked();
    network::prepare_run();
    let schedule = Schedule::generate(seed, faults);
    let mut sim = new_sim(seed, schedule.check_at + Duration::from_secs(60));
    let registry_dir = RegistryDir::new(seed);
    add_registry(&mut sim, &registry_dir);
    let mut world = World::new(seed, leases);
    for id in 0..CLIENTS {
        let run = workload::run_client(
            id,
            seed,
            world.alive.clone(),
            schedule.clients_until,
            world.history.clone(),
        );
        sim.client(format!("client{id}").as_str(), async move {
            run.await;
            Ok(())
        });
    }
    let ring = add_checker(&mut sim, &world, schedule.check_at);
    // The first nodes, 300 ms apart; then the schedule.
    let mut actions: Vec<(Duration, Action)> = (0..schedule.first)
        .map(|i| (Duration::from_millis(300 * i as u64), Action::Join))
        .collect();
    actions.extend(
        schedule
            .events
            .iter()
            .map(|(at, e)| (*at, Action::Event(*e))),
    );
    loop {
        actions.sort_by_key(|(at, _)| *at);
        while actions.first().is_some_and(|(at, _)| sim.elapsed() >= *at) {
            let (_, action) = actions.remove(0);
            let now = sim.elapsed();
            for (delay, later) in world.apply(&mut sim, action) {
                actions.push((now + delay, later));
            }
            actions.sort_by_key(|(at, _)| *at);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                *ring.borrow_mut() = Err(format!("a host failed: {e}"));
                break;
            }
        }
    }
    let ring = ring.borrow().clone();
    let history = world.history.borrow().clone();
    Outcome {
        history,
        ring,
        trace: world.trace,
    }
}

/// A simulation of `seed` that runs for `duration`, with the message
/// latencies every run uses.
fn new_sim<'a>(seed: u64, duration: Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(duration)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .rng_seed(seed)
        .build()
}

/// How IDs are chosen: the registry's default salt and rule, which a node
/// joining through a member applies itself.
fn id_rule() -> IdRule {
    IdRule::new(registry::DEFAULT_SALT, IdRule::DEFAULT_CHOICES)
}

/// The registry host, with the default salt and ID rule, keeping its state
/// in `dir` as the registry binary does in its `--data-dir`: the counts of
/// verdicts, and a mark that it has run before (then, started again after a
/// crash, it relearns the members for the binary's default 2 s before it
/// names a first one).
fn add_registry(sim: &mut turmoil::Sim<'_>, dir: &RegistryDir) {
    let dir = dir.0.clone();
    sim.host("registry", move || {
        let dir = dir.clone();
        async move {
            let listener = SimListener::bind(PORT).await?;
            let mut config = RegistryConfig::fresh(id_rule());
            if registry::has_run_before(&dir)? {
                config.liveness.relearn = Duration::from_secs(2);
            }
            config.verdicts_file = Some(dir.join("verdicts"));
            registry::serve(listener, config, std::future::pending()).await?;
            Ok(())
        }
    });
}

/// A key for a directed run, by the nodes' views in `slots`: `roles`, from
/// `victim`'s view, names the node that must own it and one to avoid; the
/// key, and a node (neither of those two) to send it through.
fn key_and_door(
    slots: &BTreeMap<String, NodeSlot>,
    victim: &str,
    roles: impl Fn(&crustyring::node::View) -> (Position, Position),
) -> Result<(String, String), String> {
    let views: BTreeMap<&str, _> = (slots.iter())
        .filter_map(|(name, slot)| Some((name.as_str(), slot.node.as_ref()?.view_snapshot())))
        .collect();
    let (owner_id, avoid) = roles(views.get(victim).ok_or("the victim does not serve")?);
    let members: BTreeMap<Position, String> = (views.iter())
        .map(|(name, v)| (v.me.id, name.to_string()))
        .collect();
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| owner(&members, key_position(k.as_bytes())).is_some_and(|(id, _)| id == owner_id))
        .expect("some key falls in every arc");
    let door = (views.iter())
        .find(|(_, v)| v.me.id != owner_id && v.me.id != avoid)
        .map(|(name, _)| name.to_string())
        .ok_or("no third node")?;
    Ok((key, door))
}

/// A run's registry data directory (real files: turmoil simulates the
/// network, not the disk), removed with it.
pub struct RegistryDir(std::path::PathBuf);

impl RegistryDir {
    /// A fresh directory for a run of `seed`.
    pub fn new(seed: u64) -> Self {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("crusty-sim-registry-{}-{seed}-{run}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for RegistryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The final check, as a client host: once the ring has had until `check_at`
/// to heal (polling up to 30 s more), whether it is whole; then every key read
/// through every live node, into the history.
fn add_checker(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    check_at: Duration,
) -> Rc<RefCell<Result<(), String>>> {
    let ring: Rc<RefCell<Result<(), String>>> = Rc::new(RefCell::new(Err("not checked".into())));
    let (slots, alive, history, verdict) = (
        world.slots.clone(),
        world.alive.clone(),
        world.history.clone(),
        ring.clone(),
    );
    sim.client("checker", async move {
        tokio::time::sleep(check_at).await;
        let deadline = check_at + Duration::from_secs(30);
        loop {
            let holds = ring_holds(&slots, &alive.borrow())
                .and_then(|()| copies_hold(&slots, &alive.borrow()));
            if holds.is_ok() || turmoil::elapsed() >= deadline {
                *verdict.borrow_mut() = holds;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let hosts = alive.borrow().clone();
        for host in &hosts {
            for key in KEYS {
                let invoked = turmoil::elapsed().as_micros() as u64;
                let ret = workload::perform(host, key, &Call::Read).await;
                history.borrow_mut().push(Operation {
                    client: 1000,
                    key: key.to_string(),
                    call: Call::Read,
                    ret,
                    invoked,
                    returned: turmoil::elapsed().as_micros() as u64,
                });
            }
        }
        Ok(())
    });
    ring
}

/// What the driver does at a time: a scheduled event, or a step of one.
#[derive(Debug, Clone)]
enum Action {
    Event(Event),
    Join,
    /// Kill the node after this one (as its view says), if it is still alive.
    CrashNextOf(String),
    /// Kill this node, if it is still alive.
    Crash(String),
    /// Start the crashed registry again.
    StartRegistry,
}

/// The simulated world as the driver keeps it: who is alive, what each node
/// host shares, which links are cut, and what happened.
struct World {
    rng: schedule::Rng,
    slots: Slots,
    /// Nodes started and not crashed or asked to leave (clients send to
    /// these), in the order they started.
    alive: Rc<RefCell<Vec<String>>>,
    /// Hosts created so far (a later start of one is a restart).
    hosts: BTreeSet<String>,
    /// Crashed nodes, which may be restarted.
    crashed: Vec<String>,
    /// Links cut or held, to repair.
    cuts: Vec<(String, String)>,
    history: History,
    trace: Vec<String>,
    /// The nodes' leases (`None`: off).
    leases: Option<LeaseSettings>,
    /// The hosts that are not nodes nor the registry (clients, the checker):
    /// a pause holds their links to the paused node too.
    clients: Vec<String>,
}

impl World {
    fn new(seed: u64, leases: Option<LeaseSettings>) -> Self {
        Self {
            rng: schedule::Rng::new(seed ^ 0x5eed),
            slots: Rc::default(),
            alive: Rc::default(),
            hosts: BTreeSet::new(),
            crashed: Vec::new(),
            cuts: Vec::new(),
            history: Rc::default(),
            trace: Vec::new(),
            leases,
            clients: (0..CLIENTS)
                .map(|id| format!("client{id}"))
                .chain(["checker".to_string()])
                .collect(),
        }
    }

    /// Does `action` now; returns what it leaves to do later.
    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, action: Action) -> Vec<(Duration, Action)> {
        let at = sim.elapsed();
        let mut later = Vec::new();
        match action {
            Action::Join => {
                let name = self.start(sim);
                let contact = self
                    .slots
                    .borrow()
                    .get(&name)
                    .and_then(|s| s.contact.clone());
                match contact {
                    Some(contact) => {
                        self.note(at, format!("{name} starts, joining through {contact}"))
                    }
                    None => self.note(at, format!("{name} starts")),
                }
            }
            Action::Crash(name) => self.crash(sim, at, &name),
            Action::CrashNextOf(name) => match self.neighbour(&name, true) {
                Some(next) => self.crash(sim, at, &next),
                None => self.note(at, format!("{name} has no live next node to crash")),
            },
            Action::Event(Event::Join) => later.push((Duration::ZERO, Action::Join)),
            Action::Event(Event::JoinTwo) => {
                later.push((Duration::ZERO, Action::Join));
                later.push((Duration::ZERO, Action::Join));
            }
            Action::Event(Event::Leave) => {
                if let Some(name) = self.pick_alive() {
                    self.leave(at, &name);
                }
            }
            Action::Event(Event::Crash) => {
                if let Some(name) = self.pick_alive() {
                    self.crash(sim, at, &name);
                }
            }
            Action::Event(Event::JoinThenCrashNext) => {
                let name = self.start(sim);
                self.note(at, format!("{name} starts; its next node is to crash"));
                let delay = self
                    .rng
                    .between(Duration::from_millis(300), Duration::from_secs(2));
                later.push((delay, Action::CrashNextOf(name)));
            }
            Action::Event(Event::CrashTwoAdjacent) => {
                if let Some(name) = self.pick_alive() {
                    let prev = self.neighbour(&name, false);
                    self.crash(sim, at, &name);
                    if let Some(prev) = prev {
                        let delay = self
                            .rng
                            .between(Duration::from_millis(200), Duration::from_millis(1500));
                        later.push((delay, Action::Crash(prev)));
                    }
                }
            }
            Action::Event(Event::LeaveAsNextCrashes) => {
                if let Some(name) = self.pick_alive() {
                    let next = self.neighbour(&name, true);
                    self.leave(at, &name);
                    if let Some(next) = next {
                        self.crash(sim, at, &next);
                    }
                }
            }
            Action::Event(event @ (Event::Partition | Event::PartitionOneWay | Event::Hold)) => {
                self.cut(sim, at, event);
            }
            Action::Event(Event::Isolate) => {
                if let Some(a) = self.pick_alive() {
                    self.isolate(sim, at, &[a]);
                }
            }
            Action::Event(Event::Pause) => {
                if let Some(a) = self.pick_alive() {
                    self.pause(sim, at, &a);
                }
            }
            Action::Event(Event::IsolatePair) => {
                if let Some(a) = self.pick_alive() {
                    match self.neighbour(&a, true) {
                        Some(next) => self.isolate(sim, at, &[a, next]),
                        None => self.isolate(sim, at, &[a]),
                    }
                }
            }
            Action::Event(Event::IsolatePairWithRegistry) => {
                if let Some(a) = self.pick_alive() {
                    match self.neighbour(&a, true) {
                        Some(next) => self.isolate_with_registry(sim, at, &[a, next]),
                        None => self.isolate_with_registry(sim, at, &[a]),
                    }
                }
            }
            Action::Event(Event::RestartRegistry) => {
                sim.crash("registry");
                let down = self
                    .rng
                    .between(Duration::from_millis(300), Duration::from_millis(3500));
                self.note(at, format!("the registry crashes, for {down:?}"));
                later.push((down, Action::StartRegistry));
            }
            Action::StartRegistry => {
                sim.bounce("registry");
                self.note(at, "the registry starts again".to_string());
            }
            Action::Event(Event::Repair) => {
                for (a, b) in std::mem::take(&mut self.cuts) {
                    sim.repair(a.as_str(), b.as_str());
                    sim.release(a.as_str(), b.as_str());
                    self.note(at, format!("{a} / {b} repaired"));
                }
            }
        }
        later
    }

    /// Cuts (or holds) the link between a live node and another, or the
    /// registry.
    fn cut(&mut self, sim: &mut turmoil::Sim<'_>, at: Duration, how: Event) {
        let Some(a) = self.pick_alive() else {
            return;
        };
        let others: Vec<String> = (self.alive.borrow().iter())
            .filter(|n| **n != a)
            .cloned()
            .collect();
        let b = if others.is_empty() || self.rng.chance(30) {
            "registry".to_string()
        } else {
            self.rng.pick(&others).clone()
        };
        match how {
            Event::Partition => sim.partition(a.as_str(), b.as_str()),
            Event::PartitionOneWay => sim.partition_oneway(a.as_str(), b.as_str()),
            _ => sim.hold(a.as_str(), b.as_str()),
        }
        self.note(at, format!("{how:?} {a} / {b}"));
        self.cuts.push((a, b));
    }

    /// Cuts `group` off from every other host and the registry, both ways.
    fn isolate(&mut self, sim: &mut turmoil::Sim<'_>, at: Duration, group: &[String]) {
        self.split(sim, group, &["registry".to_string()], &[]);
        self.note(at, format!("{group:?} cut off from every other node"));
    }

    /// Cuts `group` and the registry off from every other node, both ways.
    fn isolate_with_registry(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        at: Duration,
        group: &[String],
    ) {
        self.split(sim, group, &[], &["registry".to_string()]);
        let what = format!("{group:?} and the registry cut off from every other node");
        self.note(at, what);
    }

    /// Cuts the nodes of `group`, and `with_group`, off from the other
    /// nodes and `with_others`, both ways.
    fn split(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        group: &[String],
        with_others: &[String],
        with_group: &[String],
    ) {
        let others: Vec<String> = (self.hosts.iter())
            .filter(|h| !group.contains(h))
            .cloned()
            .chain(with_others.iter().cloned())
            .collect();
        for a in group.iter().chain(with_group) {
            for b in &others {
                sim.partition(a.as_str(), b.as_str());
                self.cuts.push((a.clone(), b.clone()));
            }
        }
    }

    /// Holds every link of `node`, to every other host (nodes, the registry,
    /// the clients and the checker), both ways, until the repair.
    fn pause(&mut self, sim: &mut turmoil::Sim<'_>, at: Duration, node: &str) {
        let others: Vec<String> = (self.hosts.iter())
            .filter(|h| *h != node)
            .cloned()
            .chain(["registry".to_string()])
            .chain(self.clients.iter().cloned())
            .collect();
        for other in others {
            sim.hold(node, other.as_str());
            self.cuts.push((node.to_string(), other));
        }
        self.note(at, format!("{node} paused (every link held)"));
    }

    /// Starts a node: a crashed one again (half the time, if any), or a new one.
    fn start(&mut self, sim: &mut turmoil::Sim<'_>) -> String {
        let name = if !self.crashed.is_empty() && self.rng.chance(50) {
            let i = self.rng.below(self.crashed.len() as u64) as usize;
            self.crashed.remove(i)
        } else {
            format!("n{}", self.hosts.len() + 1)
        };
        // A quarter of starts join through a serving member rather than the
        // registry (`--join`), while no link is cut (a joiner cut off from
        // its contact, or a contact cut off from the ring, would fail the
        // join, and with it the run).
        let serving: Vec<String> = {
            let slots = self.slots.borrow();
            (self.alive.borrow().iter())
                .filter(|n| slots.get(*n).is_some_and(|s| s.node.is_some()))
                .cloned()
                .collect()
        };
        let contact = (!serving.is_empty() && self.cuts.is_empty() && self.rng.chance(25))
            .then(|| self.rng.pick(&serving).clone());
        {
            let mut slots = self.slots.borrow_mut();
            let slot = slots.entry(name.clone()).or_default();
            slot.leave = false;
            slot.contact = contact.clone();
        }
        if self.hosts.insert(name.clone()) {
            add_node_host(sim, &name, &self.slots, self.leases);
        } else {
            sim.bounce(name.as_str());
        }
        self.alive.borrow_mut().push(name.clone());
        name
    }

    /// Kills `name` if it is alive and the ring keeps three nodes.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, at: Duration, name: &str) {
        let alive = self.alive.borrow().clone();
        if !alive.iter().any(|n| n == name) || alive.len() <= 3 {
            return self.note(at, format!("{name} is spared"));
        }
        sim.crash(name);
        self.slots
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .node = None;
        self.alive.borrow_mut().retain(|n| n != name);
        self.crashed.push(name.to_string());
        self.note(at, format!("{name} crashes"));
    }

    /// Asks `name` to leave, if the ring keeps three nodes.
    fn leave(&mut self, at: Duration, name: &str) {
        if self.alive.borrow().len() <= 3 {
            return self.note(at, format!("{name} stays"));
        }
        self.slots
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .leave = true;
        self.alive.borrow_mut().retain(|n| n != name);
        self.note(at, format!("{name} leaves"));
    }

    fn pick_alive(&mut self) -> Option<String> {
        let alive = self.alive.borrow().clone();
        (!alive.is_empty()).then(|| self.rng.pick(&alive).clone())
    }

    /// The live node after (or before) `name` as its view says.
    fn neighbour(&self, name: &str, next: bool) -> Option<String> {
        let slots = self.slots.borrow();
        let view = slots.get(name)?.node.as_ref()?.view_snapshot();
        let member = if next { view.next } else { view.prev };
        let host = member.addr.strip_prefix("http://")?.split(':').next()?;
        (host != name && self.alive.borrow().iter().any(|n| n == host)).then(|| host.to_string())
    }

    fn note(&mut self, at: Duration, what: String) {
        self.trace.push(format!("{:.1}s {what}", at.as_secs_f64()));
    }
}

/// Whether the live nodes form one ring: each serving, with `next` and `prev`
/// the next and previous live node by ID.
fn ring_holds(slots: &Slots, alive: &[String]) -> Result<(), String> {
    let slots = slots.borrow();
    let mut views = Vec::new();
    for name in alive {
        let Some(node) = slots.get(name).and_then(|s| s.node.as_ref()) else {
            return Err(format!("{name} is not serving yet"));
        };
        views.push(node.view_snapshot());
    }
    views.sort_by_key(|v| v.me.id);
    for (i, view) in views.iter().enumerate() {
        let next = &views[(i + 1) % views.len()].me;
        let prev = &views[(i + views.len() - 1) % views.len()].me;
        if view.state != NodeState::Serving {
            return Err(format!("{} is {:?}", view.me.addr, view.state));
        }
        if view.next.id != next.id || view.prev.id != prev.id {
            return Err(format!(
                "{} has prev {} and next {}; the live ring says {} and {}",
                view.me.addr, view.prev.addr, view.next.addr, prev.addr, next.addr
            ));
        }
    }
    Ok(())
}

/// Whether every key is back to full strength: the newest version of each key
/// any live node holds is held by the key's owner and the two nodes before it
/// (its replicas), and no other node holds a live value of it.
fn copies_hold(slots: &Slots, alive: &[String]) -> Result<(), String> {
    let slots = slots.borrow();
    let mut members = BTreeMap::new();
    let mut held = BTreeMap::<Vec<u8>, BTreeMap<String, crustyring::store::Entry>>::new();
    for name in alive {
        let node = (slots.get(name).and_then(|s| s.node.as_ref()))
            .ok_or_else(|| format!("{name} is not serving"))?;
        members.insert(node.me().id, name.clone());
        for entry in node.local_entries().map_err(|e| e.to_string())? {
            held.entry(entry.key.clone())
                .or_default()
                .insert(name.clone(), entry);
        }
    }
    for (key, copies) in &held {
        let key_name = String::from_utf8_lossy(key);
        let newest = copies.values().map(|e| e.version).max().expect("a copy");
        let position = crustyring::ring::key_position(key);
        let (owner, _) = crustyring::ring::owner(&members, position).expect("members");
        let mut replicas = vec![owner];
        while replicas.len() < 3.min(members.len()) {
            let last = *replicas.last().expect("the owner");
            replicas.push(
                crustyring::ring::predecessor(&members, last)
                    .expect("others")
                    .0,
            );
        }
        let replicas: Vec<&String> = replicas.iter().map(|id| &members[id]).collect();
        for name in &replicas {
            if copies.get(*name).is_none_or(|e| e.version != newest) {
                return Err(format!(
                    "{name}, a replica of {key_name}, does not hold its newest version"
                ));
            }
        }
        for (name, entry) in copies {
            if !replicas.contains(&name) && entry.value.is_some() {
                return Err(format!("{name} holds {key_name} outside its arcs"));
            }
        }
    }
    Ok(())
}

/// The seeds to run: `SIM_SEED` alone, or `SIM_SEEDS` (default `default`) of
/// them from `base`.
fn seeds(base: u64, default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (base..base + n).collect()
}

/// Runs the seeds under `faults` and fails with every broken seed's report.
fn check_seeds(
    seeds: Vec<u64>,
    faults: Faults,
    leases: Option<LeaseSettings>,
    histories: Histories,
) {
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut operations = 0;
    let mut not_linearizable = 0;
    for &seed in &seeds {
        let outcome = run(seed, faults, leases);
        if std::env::var("SIM_SEED").is_ok() {
            // What a replay must reproduce, in short.
            use std::hash::{Hash, Hasher};
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            format!("{:?}", outcome.history).hash(&mut digest);
            eprintln!(
                "seed {seed}: {} operations, history digest {:016x}\n  {}",
                outcome.history.len(),
                digest.finish(),
                outcome.trace.join("; ")
            );
        }
        operations += outcome.history.len();
        let answered = outcome
            .history
            .iter()
            .filter(|o| !matches!(o.ret, Return::Unknown))
            .count();
        let mut problems = Vec::new();
        if let Err(e) = &outcome.ring {
            problems.push(format!("ring: {e}"));
        }
        if let Err(v) = linearizable::check(&outcome.history) {
            not_linearizable += 1;
            match histories {
                Histories::MustBeLinearizable => problems.push(format!("history: {v}")),
                Histories::Reported => {
                    eprintln!("seed {seed}: not linearizable (not promised): {v}");
                }
            }
        }
        if answered < outcome.history.len() / 2 {
            problems.push(format!(
                "only {answered} of {} operations answered",
                outcome.history.len()
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "seed {seed} (rerun: SIM_SEED={seed}):\n  {}\n  what happened: {}",
                problems.join("\n  "),
                outcome.trace.join("; ")
            ));
        }
    }
    eprintln!(
        "{} schedules ({faults:?}, leases {leases:?}), {operations} client operations, {not_linearizable} histories not linearizable, in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a run's histories are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Histories {
    /// Linearizable, or the run fails.
    MustBeLinearizable,
    /// Checked, and a violation printed, but not failed on (what is not
    /// promised yet).
    Reported,
}

#[test]
fn promised_faults_keep_every_key_linearizable_and_the_ring_whole() {
    check_seeds(
        seeds(1, 8),
        Faults::Promised,
        Some(LeaseSettings::default()),
        Histories::MustBeLinearizable,
    );
}

/// Without leases (`--lease-ms 0`), cut and held links (false suspicions)
/// may break linearizability (two owners for an arc), but once the links
/// work again the ring must heal: one ring, every key's newest version on its
/// three nodes, and most operations answered. (Before this simulation,
/// `t90_simulation` checked the same of a re-implemented protocol under
/// messages delayed past every timeout.)
#[test]
fn without_leases_after_false_suspicions_the_ring_heals_whole() {
    check_seeds(seeds(101, 6), Faults::Suspicions, None, Histories::Reported);
}

/// `SIM_SEED` replays a run exactly: two processes running seed 7 record the
/// same history, operation for operation (compared by digest). In separate
/// processes, as a replay is: the second of two runs in one process can
/// differ after a crash (process-wide state such as hash seeds).
#[test]
fn the_same_seed_replays_the_same_run() {
    let replay = || {
        let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "promised_faults_keep_every_key_linearizable_and_the_ring_whole",
                "--nocapture",
            ])
            .env("SIM_SEED", "7")
            .output()
            .expect("the test binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "seed 7 failed:\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("seed 7:"))
            .unwrap_or_else(|| panic!("no digest printed:\n{stderr}"))
            .to_string();
        let operations: usize = line
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .expect("an operation count");
        assert!(operations > 500, "a run that did little: {line}");
        line
    };
    assert_eq!(replay(), replay(), "the same seed gave two runs");
}

/// What leases are for: without them, cut and held links make neighbours
/// suspect a live node, and its arc gets two owners for a while. Run by hand
/// (`cargo test --test t91_simulation -- --ignored`) to see what the
/// simulation finds (it fails).
#[test]
#[ignore = "without leases, false suspicions can give an arc two owners"]
fn without_leases_false_suspicions_keep_every_key_linearizable() {
    check_seeds(
        seeds(1, 8),
        Faults::Suspicions,
        None,
        Histories::MustBeLinearizable,
    );
}

/// With leases (the default), cut and held links keep every key
/// linearizable and the ring heals whole.
#[test]
fn with_leases_false_suspicions_keep_every_key_linearizable() {
    check_seeds(
        seeds(1, 8),
        Faults::Suspicions,
        Some(LeaseSettings::default()),
        Histories::MustBeLinearizable,
    );
}

/// After a crash, the keys of the crashed node's next neighbour are
/// answered again within the detection and takeover times, and then stay
/// answered: no second stretch without an acknowledged write once the
/// neighbour's lease from the crashed node lapses (`availability.rs`).
/// Virtual time: each seed's figures are exact. Without the early lease
/// probe and the early confirmation by `next`, seed 1 had a second stretch
/// of 584 ms; before replica calls stopped being waited for once their
/// replica left the set, and introductions stopped probing a `prev` that
/// had missed its last probe, the first write took 2.12 to 2.47 s
/// (`SIM_SEEDS=8`, 2026-11-30); with either of those two disabled alone,
/// 2.05 to 2.17 s or 2.39 to 2.49 s in most seeds: each fails the test.
#[test]
fn after_a_crash_the_next_node_s_keys_are_unavailable_once_not_twice() {
    let mut failed = Vec::new();
    for seed in seeds(1, 4) {
        let acknowledged = availability::acknowledged_after_crash(seed);
        let Some(&first) = acknowledged.first() else {
            failed.push(format!(
                "seed {seed}: no write acknowledged after the crash"
            ));
            continue;
        };
        let gaps: Vec<(Duration, Duration)> = (acknowledged.windows(2))
            .filter(|w| w[1] - w[0] > Duration::from_millis(150))
            .map(|w| (w[0], w[1] - w[0]))
            .collect();
        eprintln!(
            "seed {seed}: first write acknowledged {first:?} after the crash; later gaps {gaps:?}"
        );
        if first > Duration::from_secs(2) || !gaps.is_empty() {
            failed.push(format!(
                "seed {seed}: first after {first:?}, later gaps {gaps:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The registry restarting, beside every fault the split schedules draw:
/// while it is down no takeover is judged (the arcs of nodes that fail
/// meanwhile wait) and no root lease granted; back, it judges no node dead
/// before a root lease it may have granted before the crash has lapsed,
/// and keeps the counts of verdicts it gave (a node judged dead before the
/// crash gets no root lease until it has heard). Seeds 2 to 4 in the suite
/// (seed 1 draws no restart): 30 seeds (`SIM_SEEDS=30`, 2026-11-30, the
/// registry keeping every node it knows, down up to 3.5 s) ran 63,864
/// operations, every history linearizable and every ring whole.
/// The same 30 with the counts of verdicts not kept passed too: these
/// schedules do not reach a node judged dead that first hears of it from a
/// registry restarted meanwhile (what keeping the counts is for; the next
/// test does).
#[test]
fn with_leases_registry_restarts_keep_every_key_linearizable() {
    check_seeds(
        seeds(2, 3),
        Faults::RegistryRestarts,
        Some(LeaseSettings::default()),
        Histories::MustBeLinearizable,
    );
}

/// A split with the registry on the pair's side (two adjacent nodes and the
/// registry cut off together from the other nodes): the other side gets no
/// verdict and should stop serving once its leases lapse, while the pair
/// takes its arcs over. **Not linearizable yet:** 30 seeds (`SIM_SEEDS=30
/// ... --ignored`, 2026-11-30) ran 44,932 operations, and seeds 7 and 22
/// were not. Seed 7 (four nodes, ring n4, n1, n3, n2; n2 and n4 with the
/// registry cut off from n1 and n3 at 6.0 s and again at 16.4 s): n3, leased
/// by n1, acknowledged writes until 18.49 s with n1 as its only live
/// replica; n4 took n3's arc over (verdict at 18.26 s, served from about
/// 21.7 s, after n3's lease) without them, and answered a read at 22.17 s
/// with an older value. The cause: a replica set shrinks on a failure
/// suspicion, without the registry's verdict (docs/protocol.md, "Judged by
/// the registry", costs). Run by hand until it passes.
#[test]
#[ignore = "found not linearizable (seeds 7 and 22): a split with the registry on the pair's side"]
fn with_leases_the_registry_on_the_smaller_side_keeps_every_key_linearizable() {
    check_seeds(
        seeds(1, 8),
        Faults::RegistryWithThePair,
        Some(LeaseSettings::default()),
        Histories::MustBeLinearizable,
    );
}

/// A node judged dead while it was paused, continued only after the
/// registry restarted (`registry_restart.rs`): the restarted registry
/// still knows it judged the node dead (its data directory keeps the
/// counts), tells it so at its first heartbeat, and grants it no root
/// lease, so it serves nothing until its `prev` links it in again. 30
/// seeds (`SIM_SEEDS=30`, 2026-11-30): 10,979 operations, every history
/// linearizable; with the counts not kept (a throw-away build), seeds 1 to
/// 8 each read a value older than one acknowledged, through the node, just
/// after it was continued. Seeds 1 and 2 run in the suite.
#[test]
fn a_node_judged_dead_before_a_registry_restart_serves_nothing_stale_after_it() {
    let mut failures = Vec::new();
    for seed in seeds(1, 2) {
        let (history, trace) = registry_restart::history(seed);
        let reads = (history.iter())
            .filter(|o| o.call == Call::Read && matches!(o.ret, Return::Read(_)))
            .count();
        eprintln!(
            "seed {seed}: {} operations, {reads} reads answered",
            history.len()
        );
        if let Err(v) = linearizable::check(&history) {
            failures.push(format!(
                "seed {seed}: {v}
  what happened: {}",
                trace.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A ring split in two groups of two or more (two adjacent nodes cut off
/// together from the rest and from the registry): each side declares the
/// other dead, but takes an arc over only once the registry has judged its
/// owner dead (`crustyring::registry::Verdicts`), so only the side that reaches
/// the registry serves; the pair, whose leases lapse, serves nothing. Once
/// the cut heals, the two rings merge again (the pair finds the others among
/// the registry's live members, `failure::registry_hint`). Before the
/// registry judged deaths, seeds 2 and 16 had histories that are not
/// linearizable (with judging switched off in the same build, 2026-11-30:
/// both again), and before the merge through the registry, seeds 2, 7 and 16
/// of 1 to 16 ended in two rings for good: seed 16 runs beside seeds 1 to 8
/// (unless `SIM_SEED` or `SIM_SEEDS` says otherwise).
#[test]
fn with_leases_a_ring_split_in_two_keeps_every_key_linearizable() {
    let mut seeds = seeds(1, 8);
    if std::env::var_os("SIM_SEED").is_none() && std::env::var_os("SIM_SEEDS").is_none() {
        seeds.push(16);
    }
    check_seeds(
        seeds,
        Faults::Splits,
        Some(LeaseSettings::default()),
        Histories::MustBeLinearizable,
    );
}
