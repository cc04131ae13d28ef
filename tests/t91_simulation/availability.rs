//! Availability after a crash, in virtual time: how long the keys of a
//! crashed node's next neighbour go unanswered.
//!
//! That neighbour holds a lease from the crashed node, which lapses about
//! when the crashed node's prev, its new `prev`, may grant it one (once that
//! node's takeover wait ends). A refusal says when the wait ends, the
//! neighbour asks again then, and has its own `next` confirm its arc at once
//! (docs/protocol.md, "Leases"). Before, with real processes, a second
//! stretch of 0.5 to 1 s without an acknowledged write followed the first
//! (`t97_pauses`' measurement).

use super::linearizable::{Call, Return};
use super::{Action, World, add_registry, key_and_door, log_if_asked, network, workload};
use crustyring::lease::LeaseSettings;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// When the crash comes: the five nodes serve well before.
const CRASH_AT: Duration = Duration::from_secs(6);
/// How long after the crash the writer writes.
const WINDOW: Duration = Duration::from_secs(6);
/// The node that crashes (the third to start).
const VICTIM: &str = "n3";
/// Leases twice the default length: in the simulation a crashed host
/// answers nothing (a probe waits its timeout, where a killed process's
/// port refuses at once), so the first stretch without an answer runs past
/// a default lease, and would hide a second one.
const LEASES: LeaseSettings = LeaseSettings {
    length: Duration::from_secs(4),
    drift: LeaseSettings::DEFAULT_DRIFT,
};

/// One run of `seed`: five nodes, the third crashed at [`CRASH_AT`]; a
/// writer sets a key the crashed node's next owns, through a node that is
/// neither, every 20 ms. When each write sent after the crash was
/// acknowledged, counted from the crash.
pub fn acknowledged_after_crash(seed: u64) -> Vec<Duration> {
    log_if_asked();
    network::prepare_run();
    let mut sim = crate::new_sim(seed, CRASH_AT + WINDOW + Duration::from_secs(10));
    let registry_dir = crate::RegistryDir::new(seed);
    add_registry(&mut sim, &registry_dir);
    let mut world = World::new(seed, Some(LEASES));
    let acknowledged: Rc<RefCell<Vec<Duration>>> = Rc::default();
    let (slots, acks) = (world.slots.clone(), acknowledged.clone());
    sim.client("writer", async move {
        tokio::time::sleep(CRASH_AT - Duration::from_secs(1)).await;
        // A key the victim's next owns, written through neither.
        let (key, through) = key_and_door(&slots.borrow(), VICTIM, |v| (v.next.id, v.me.id))?;
        let mut value = 0;
        while turmoil::elapsed() < CRASH_AT + WINDOW {
            value += 1;
            let sent = turmoil::elapsed();
            let done = workload::perform(&through, &key, &Call::Write(value)).await;
            if done == Return::Done && sent >= CRASH_AT {
                acks.borrow_mut().push(turmoil::elapsed() - CRASH_AT);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    });
    let mut actions: Vec<(Duration, Action)> = (0..5)
        .map(|i| (Duration::from_millis(300 * i), Action::Join))
        .collect();
    actions.push((CRASH_AT, Action::Crash(VICTIM.to_string())));
    loop {
        while actions.first().is_some_and(|(at, _)| sim.elapsed() >= *at) {
            let (_, action) = actions.remove(0);
            assert!(world.apply(&mut sim, action).is_empty(), "nothing later");
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("seed {seed}: {e}\n{}", world.trace.join("\n")),
        }
    }
    acknowledged.take()
}
