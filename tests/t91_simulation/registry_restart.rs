//! A node judged dead while it was paused, that hears from the registry
//! again only after the registry restarted: the case the registry's kept
//! counts of verdicts are for (`crustyring::registry::Verdicts`, saved in
//! its data directory). Forgetting them, the restarted registry would grant
//! the node root leases again, and it would serve the arc its `prev` took
//! over and serves.
//!
//! Five nodes; the third is paused (every link held) at [`PAUSE_AT`]; its
//! `prev` declares it dead and takes its arc over once the registry has
//! judged it dead (about 4 s); the registry then crashes, starts again
//! from its data directory, and the paused node is continued. A writer sets
//! a key the paused node owns through a node that is neither it nor its
//! `prev`, and a reader reads the key through the paused node, each every
//! 20 ms (both are held from the paused node while it is paused, as a
//! stopped process's clients are). Their history must be linearizable.

use super::linearizable::{Call, Operation};
use super::schedule::Event;
use super::{
    Action, RegistryDir, World, add_registry, key_and_door, log_if_asked, network, workload,
};
use crustyring::lease::LeaseSettings;
use std::time::Duration;

/// When the victim is paused: the five nodes serve well before.
const PAUSE_AT: Duration = Duration::from_secs(6);
/// When the registry crashes (after its verdict on the victim), starts
/// again, and when the victim is continued, from [`PAUSE_AT`].
const CRASH_AFTER: Duration = Duration::from_secs(6);
const START_AFTER: Duration = Duration::from_millis(6500);
const CONTINUE_AFTER: Duration = Duration::from_secs(9);
/// How long the clients go on after the victim is continued.
const AFTER: Duration = Duration::from_secs(8);
/// The victim (the third node to start).
const VICTIM: &str = "n3";

/// One run of `seed`: the clients' history, and what happened.
pub fn history(seed: u64) -> (Vec<Operation>, Vec<String>) {
    log_if_asked();
    network::prepare_run();
    let end = PAUSE_AT + CONTINUE_AFTER + AFTER;
    let mut sim = crate::new_sim(seed, end + Duration::from_secs(10));
    let registry_dir = RegistryDir::new(seed);
    add_registry(&mut sim, &registry_dir);
    let mut world = World::new(seed, Some(LeaseSettings::default()));
    world.clients = vec!["client0".into(), "client1".into()];
    let key: std::rc::Rc<std::cell::RefCell<Option<(String, String)>>> = Default::default();
    // The writer and the reader are `client0` and `client1`: the pause
    // holds their links to the victim.
    for (id, call) in [(0u32, Call::Write(0)), (1, Call::Read)] {
        let (slots, key, history) = (world.slots.clone(), key.clone(), world.history.clone());
        sim.client(format!("client{id}").as_str(), async move {
            tokio::time::sleep(PAUSE_AT - Duration::from_secs(1)).await;
            // Chosen once, by whichever client comes first.
            let (name, through) = (key.borrow_mut())
                .get_or_insert_with(|| {
                    // A key the victim owns, written through a node that is
                    // neither it nor its `prev` (which takes the key over).
                    key_and_door(&slots.borrow(), VICTIM, |v| (v.me.id, v.prev.id))
                        .expect("the victim's key")
                })
                .clone();
            let host = if id == 0 { through } else { VICTIM.to_string() };
            let mut value = 0;
            while turmoil::elapsed() < end {
                let call = match call {
                    Call::Write(_) => {
                        value += 1;
                        Call::Write(value)
                    }
                    other => other,
                };
                let invoked = turmoil::elapsed().as_micros() as u64;
                let ret = workload::perform(&host, &name, &call).await;
                history.borrow_mut().push(Operation {
                    client: id,
                    key: name.clone(),
                    call,
                    ret,
                    invoked,
                    returned: turmoil::elapsed().as_micros() as u64,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        });
    }
    let mut actions: Vec<(Duration, Step)> = (0..5)
        .map(|i| (Duration::from_millis(300 * i), Step::Join))
        .collect();
    actions.extend([
        (PAUSE_AT, Step::Pause),
        (PAUSE_AT + CRASH_AFTER, Step::CrashRegistry),
        (PAUSE_AT + START_AFTER, Step::StartRegistry),
        (PAUSE_AT + CONTINUE_AFTER, Step::Continue),
    ]);
    loop {
        while actions.first().is_some_and(|(at, _)| sim.elapsed() >= *at) {
            let (_, step) = actions.remove(0);
            let at = sim.elapsed();
            match step {
                Step::Join => assert!(world.apply(&mut sim, Action::Join).is_empty()),
                Step::Pause => world.pause(&mut sim, at, VICTIM),
                Step::CrashRegistry => {
                    // What this run is about: the victim was judged dead,
                    // and that is kept, before the registry crashes.
                    let victim = (world.slots.borrow().get(VICTIM))
                        .and_then(|slot| Some(slot.node.as_ref()?.view_snapshot().me.id))
                        .expect("the victim's ID");
                    let kept =
                        crustyring::registry::verdicts::load(&registry_dir.0.join("verdicts"))
                            .expect("the registry's verdicts");
                    assert!(
                        kept.counts.get(&victim).is_some_and(|c| *c >= 1),
                        "seed {seed}: the victim was not judged dead before the crash: {kept:?}"
                    );
                    sim.crash("registry");
                    world.note(at, "the registry crashes".to_string());
                }
                Step::StartRegistry => {
                    assert!(world.apply(&mut sim, Action::StartRegistry).is_empty());
                }
                Step::Continue => {
                    let later = world.apply(&mut sim, Action::Event(Event::Repair));
                    assert!(later.is_empty());
                }
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("seed {seed}: {e}\n{}", world.trace.join("\n")),
        }
    }
    let history = world.history.borrow().clone();
    // And the victim answered reads again after it was continued.
    let continued = (PAUSE_AT + CONTINUE_AFTER).as_micros() as u64;
    assert!(
        (history.iter()).any(|o| o.client == 1
            && o.invoked > continued
            && matches!(o.ret, super::linearizable::Return::Read(_))),
        "seed {seed}: no read through the victim answered after it was continued"
    );
    (history, world.trace)
}

/// The steps of a run, in order.
enum Step {
    Join,
    Pause,
    CrashRegistry,
    StartRegistry,
    Continue,
}
