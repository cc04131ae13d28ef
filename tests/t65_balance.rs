//! Balanced IDs with real processes: the IDs nodes get are exactly those the
//! registry's rule predicts for their join order (through the registry and through
//! a member), and the ring they form is balanced; `--id-choices 1` gives the
//! single-hash IDs.

use crate::common;

use crustyring::registry::DEFAULT_SALT;
use crustyring::registry::replay::{ratio_of, replay};
use crustyring::ring::{IdRule, Position, node_position};
use std::time::Duration;

/// The ring that the nodes at `addrs` form, once converged: each address's ID, in
/// the order of `addrs`.
async fn ids_of(addrs: &[String]) -> Vec<Position> {
    common::await_ring(addrs, Duration::from_secs(10)).await;
    let ring = crustyring::client::ring(&addrs[0], 100).await.unwrap();
    addrs
        .iter()
        .map(|addr| {
            let node = ring
                .iter()
                .filter_map(|info| info.node.as_ref())
                .find(|n| n.addr == *addr)
                .unwrap_or_else(|| panic!("{addr} is in the ring"));
            Position(node.id)
        })
        .collect()
}

/// A registry process on an ephemeral port that knows it starts a new ring.
fn registry(extra: &[&str]) -> common::Proc {
    let mut args = vec!["--port", "0"];
    args.extend_from_slice(extra);
    common::registry_process_with(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_through_the_registry_get_the_predicted_ids_and_a_balanced_ring() {
    let registry = registry(&[]);
    // One after another: each is serving before the next registers.
    let nodes: Vec<common::Proc> = (0..8)
        .map(|_| common::dht_process(&registry.addr, &[]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let ids = ids_of(&addrs).await;
    let rule = IdRule::new(DEFAULT_SALT, IdRule::DEFAULT_CHOICES);
    assert_eq!(ids, replay(rule, &addrs), "IDs in join order");
    let ratio = ratio_of(&ids);
    assert!(ratio <= 1.5, "largest share / mean share is {ratio:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_through_a_member_choose_by_the_registry_s_rule() {
    let first = common::Proc::start(
        env!("CARGO_BIN_EXE_dht"),
        &["0", "--new-ring", "--memory"],
        "listening on",
    );
    let mut nodes = vec![first];
    let mut addrs = vec![nodes[0].addr.clone()];
    for _ in 0..3 {
        let args = ["0", "--join", &addrs[0], "--memory"];
        nodes.push(common::Proc::start(
            env!("CARGO_BIN_EXE_dht"),
            &args,
            "listening on",
        ));
        addrs.push(nodes.last().map(|n| n.addr.clone()).unwrap_or_default());
        // The next joiner walks the ring: let this one be linked in first.
        common::await_ring(&addrs, Duration::from_secs(10)).await;
    }
    let rule = IdRule::new(DEFAULT_SALT, IdRule::DEFAULT_CHOICES);
    assert_eq!(ids_of(&addrs).await, replay(rule, &addrs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_choice_gives_the_single_hash_ids() {
    let registry = registry(&["--id-choices", "1"]);
    let nodes: Vec<common::Proc> = (0..3)
        .map(|_| common::dht_process(&registry.addr, &[]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let single: Vec<Position> = addrs
        .iter()
        .map(|addr| node_position(addr, DEFAULT_SALT, 0))
        .collect();
    assert_eq!(ids_of(&addrs).await, single);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_data_registers_its_saved_id_and_no_other() {
    let registry = registry(&[]);
    let dir = common::TempDir::new("balance-saved-id");
    let data = dir.node(0);
    let mut a = common::dht_process(&registry.addr, &["--data-dir", &data]);
    let b = common::dht_process(&registry.addr, &[]);
    let before = ids_of(&[a.addr.clone(), b.addr.clone()]).await;
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(15)).success());
    // Back from its data dir, on another port: the registry would choose
    // another ID for the new address.
    let back = common::dht_process(&registry.addr, &["--data-dir", &data]);
    let after = ids_of(&[back.addr.clone(), b.addr.clone()]).await;
    assert_eq!(after, before, "the saved ID is kept");
    let listed = common::registry_ids(&registry.addr).await;
    let mut expected = vec![
        (before[0].0, back.addr.clone()),
        (before[1].0, b.addr.clone()),
    ];
    expected.sort();
    assert_eq!(
        listed, expected,
        "the registry holds the saved ID and no other"
    );
}
