//! How long repair takes, in virtual time: from a crash (one node, or two
//! adjacent ones) to the ring's links whole again, to every key readable at
//! its last written value through its owner, and through every live node.
//! The first two are bounds on the protocol's timing (probes, misses, the
//! takeover's wait), so they are held here, where time is exact, rather than
//! in the process tests, where a busy machine stretches it (`t80_faults`
//! keeps what only real processes show: a SIGKILLed process and its sockets,
//! repaired around).
//!
//! A crash here is silent (turmoil drops the host's packets, like a machine
//! that loses power or a cable cut), not a killed process whose sockets the
//! kernel resets. That showed a stall the process tests could not: calls to
//! a peer queue on its channel, and while no connection is up each waited
//! for a connect of its own, one after another (a second each against a
//! host that does not answer), so a node whose routing table still named the
//! dead node, or whose predecessor list did, answered reads up to 5 s late.
//! A failed connect now fails the connects queued behind it at once
//! (`crustyring::transport::FAILED_CONNECT_MEMORY`; not for probes, which
//! always try). Seeds 300 to 302, every key through every node: 7.5 s after
//! one crash before, 3.0 to 3.4 s after.

use crate::linearizable::{Call, Return};
use crate::{Action, World, ring_holds, workload};
use crustyring::lease::LeaseSettings;
use crustyring::node::NodeConfig;
use crustyring::ring::{self, Position, key_position};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Nodes in the ring.
const NODES: usize = 6;
/// Keys written before the crash, each read back through every live node.
const KEYS: usize = 24;
/// When the driver crashes the victims (the ring has formed and the keys are
/// written well before).
const CRASH_AT: Duration = Duration::from_secs(12);

fn key(i: usize) -> String {
    format!("repair-{i}")
}

/// When, after the crash, repair reached each milestone.
#[derive(Debug, Clone, Copy)]
struct Repaired {
    /// The live nodes link up as one ring.
    ring: Duration,
    /// Every key reads back, at its written value, through its owner.
    owners: Duration,
    /// Every key reads back through every live node.
    everywhere: Duration,
}

/// What the settings promise for the ring's links after `victims` adjacent
/// crashes: the misses that declare the first dead, the misses (each a probe
/// timeout) that find each further one dead, and two probe rounds for the
/// links around them to settle.
fn ring_budget(victims: u32) -> Duration {
    let m = NodeConfig::default().maintenance;
    m.probe_interval * (m.misses + 2) + m.probe_interval * m.misses * (victims - 1)
}

/// What they promise for the keys through their owners: the links, then the
/// takeover's wait for any lease the dead nodes held.
fn owners_budget(victims: u32, leases: Option<LeaseSettings>) -> Duration {
    ring_budget(victims) + leases.map_or(Duration::ZERO, |l| l.takeover_wait())
}

/// And through every node: the owners', then a routing-table refresh for the
/// nodes that still name a dead node to learn the ring again.
fn everywhere_budget(victims: u32, leases: Option<LeaseSettings>) -> Duration {
    owners_budget(victims, leases) + NodeConfig::default().maintenance.table_refresh
}

/// Runs a ring of [`NODES`] with `seed`, writes [`KEYS`] keys, crashes
/// `victims` adjacent nodes at [`CRASH_AT`] and returns how long after the
/// crash the ring was whole and every key read back through every live node.
fn repair_time(
    seed: u64,
    victims: usize,
    leases: Option<LeaseSettings>,
) -> Result<Repaired, String> {
    crate::log_if_asked();
    crate::network::prepare_run();
    let mut sim = crate::new_sim(seed, CRASH_AT + Duration::from_secs(60));
    let registry_dir = crate::RegistryDir::new(seed);
    crate::add_registry(&mut sim, &registry_dir);
    let mut world = World::new(seed, leases);
    let crashed = Rc::new(Cell::new(false));
    let repaired: Rc<RefCell<Result<Repaired, String>>> =
        Rc::new(RefCell::new(Err("the prober did not finish".into())));
    let (slots, alive, flag, verdict) = (
        world.slots.clone(),
        world.alive.clone(),
        crashed.clone(),
        repaired.clone(),
    );
    sim.client("prober", async move {
        *verdict.borrow_mut() = probe(slots, alive, flag).await;
        Ok(())
    });
    let mut joins = (0..NODES).map(|i| Duration::from_millis(300 * i as u64));
    let mut next_join = joins.next();
    let mut to_crash = true;
    loop {
        if next_join.is_some_and(|at| sim.elapsed() >= at) {
            world.apply(&mut sim, Action::Join);
            next_join = joins.next();
        }
        if to_crash && sim.elapsed() >= CRASH_AT {
            to_crash = false;
            let first = world.alive.borrow()[2].clone();
            // Its next first, while its view still names it.
            if victims == 2 {
                world.apply(&mut sim, Action::CrashNextOf(first.clone()));
            }
            world.apply(&mut sim, Action::Crash(first));
            crashed.set(true);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("a host failed: {e}\n{}", world.trace.join("\n"))),
        }
    }
    let crashes = world
        .trace
        .iter()
        .filter(|t| t.ends_with("crashes"))
        .count();
    if crashes != victims {
        return Err(format!(
            "{crashes} node(s) crashed, not {victims}\n{}",
            world.trace.join("\n")
        ));
    }
    let outcome = repaired.borrow().clone();
    outcome.map_err(|e| format!("{e}\n{}", world.trace.join("\n")))
}

/// The prober: waits for the ring, writes the keys, and once the driver has
/// crashed the victims, polls every 50 ms for each milestone in turn.
async fn probe(
    slots: crate::Slots,
    alive: Rc<RefCell<Vec<String>>>,
    crashed: Rc<Cell<bool>>,
) -> Result<Repaired, String> {
    let formed = |alive: &Rc<RefCell<Vec<String>>>| {
        alive.borrow().len() == NODES && ring_holds(&slots, &alive.borrow()).is_ok()
    };
    while !formed(&alive) {
        if turmoil::elapsed() >= CRASH_AT {
            return Err("the ring did not form before the crash".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let through = alive.borrow()[0].clone();
    for i in 0..KEYS {
        let written = workload::perform(&through, &key(i), &Call::Write(i as u64)).await;
        if written != Return::Done {
            return Err(format!("writing {} through {through}: {written:?}", key(i)));
        }
    }
    while !crashed.get() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let from = turmoil::elapsed();
    let ring = until(from, || async { ring_holds(&slots, &alive.borrow()) }).await?;
    let owners = until(from, || reads(&slots, &alive, true)).await?;
    let everywhere = until(from, || reads(&slots, &alive, false)).await?;
    Ok(Repaired {
        ring,
        owners,
        everywhere,
    })
}

/// How long after `from` `check` first held (polled every 50 ms, for 40 s).
async fn until<F, Fut>(from: Duration, mut check: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let give_up = from + Duration::from_secs(40);
    loop {
        match check().await {
            Ok(()) => return Ok(turmoil::elapsed() - from),
            Err(why) if turmoil::elapsed() >= give_up => {
                return Err(format!("not repaired 40 s after the crash: {why}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether every key reads back at its written value through its owner by
/// the live nodes' IDs (`owners`), or through every live node; all the reads
/// at once, so that a pass is short.
async fn reads(
    slots: &crate::Slots,
    alive: &Rc<RefCell<Vec<String>>>,
    owners: bool,
) -> Result<(), String> {
    let live = alive.borrow().clone();
    let ids: BTreeMap<Position, String> = {
        let slots = slots.borrow();
        live.iter()
            .filter_map(|n| {
                let node = slots.get(n)?.node.as_ref()?;
                Some((node.me().id, n.clone()))
            })
            .collect()
    };
    let mut asks = Vec::new();
    for i in 0..KEYS {
        if owners {
            let (_, owner) =
                ring::owner(&ids, key_position(key(i).as_bytes())).ok_or("no live node serves")?;
            asks.push((owner.clone(), i));
        } else {
            asks.extend(live.iter().map(|host| (host.clone(), i)));
        }
    }
    let reads = asks.into_iter().map(|(host, i)| async move {
        match workload::perform(&host, &key(i), &Call::Read).await {
            Return::Read(Some(v)) if v == i as u64 => Ok(()),
            other => Err(format!("{} through {host}: {other:?}", key(i))),
        }
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect()
}

/// Runs [`repair_time`] over the seeds, checking each against the budgets.
fn check(victims: u32, leases: Option<LeaseSettings>) {
    let budget = Repaired {
        ring: ring_budget(victims),
        owners: owners_budget(victims, leases),
        everywhere: everywhere_budget(victims, leases),
    };
    for seed in crate::seeds(300, 3) {
        let took = repair_time(seed, victims as usize, leases)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\nrerun: SIM_SEED={seed}"));
        println!(
            "seed {seed}, {victims} crash(es): ring {:?}, owners {:?}, everywhere {:?}",
            took.ring, took.owners, took.everywhere
        );
        assert!(
            took.ring <= budget.ring
                && took.owners <= budget.owners
                && took.everywhere <= budget.everywhere,
            "seed {seed}: {took:?}, over the budget {budget:?}\nrerun: SIM_SEED={seed}"
        );
    }
}

#[test]
fn a_crashed_node_is_repaired_around_within_the_budget() {
    check(1, Some(LeaseSettings::default()));
}

#[test]
fn two_adjacent_crashed_nodes_are_repaired_around_within_the_budget() {
    check(2, Some(LeaseSettings::default()));
}
