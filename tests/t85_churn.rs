//! Concurrent churn converges: rounds of simultaneous joins, graceful leaves and
//! SIGKILLs against a ring of real processes (three copies of each key); after
//! each round, once the changes stop, a checker over every node's view asserts a
//! correct ring, that every key is back to one owner and two replicas, and that
//! every key ever acknowledged is readable through every live node.

use crate::common;

use common::Proc;
use std::collections::BTreeSet;
use std::time::Duration;

/// A small deterministic generator (xorshift64*): a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("churn-{i}").into_bytes()
}

async fn check_keys(live: &[String], keys: &BTreeSet<usize>) {
    let n = keys.len() as u64;
    let took = common::eventually(Duration::from_secs(30), "three copies of every key", || {
        let addr = live[0].clone();
        async move {
            let (owned, replicas) = common::key_copies(&addr).await?;
            if (owned, replicas) == (n, 2 * n) {
                Ok(())
            } else {
                Err(format!(
                    "{owned} owned and {replicas} replica keys for {n} keys"
                ))
            }
        }
    })
    .await;
    println!("three copies of every key after {took:?}");
    for addr in live {
        common::assert_values(addr, keys.iter().copied(), key).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_of_simultaneous_joins_leaves_and_kills_converge() {
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee12_3457);
    println!("CHURN_SEED={seed}");
    let mut rng = Rng(seed);
    let registry = common::registry_process();
    let mut nodes: Vec<Proc> = (0..7)
        .map(|_| common::dht_process(&registry.addr, &[]))
        .collect();

    let mut keys: BTreeSet<usize> = BTreeSet::new();
    let mut next_key = 0;
    for round in 0..4 {
        // Write a fresh batch of keys.
        let mut c = common::connect(&nodes[0].addr).await;
        for _ in 0..150 {
            common::set(&mut c, &key(next_key), &key(next_key)).await;
            keys.insert(next_key);
            next_key += 1;
        }
        let ring = crustyring::client::ring(&nodes[0].addr, 100).await.unwrap();
        let order: Vec<String> = ring.iter().map(|i| i.node.clone().unwrap().addr).collect();

        // Choose this round's events: up to three leaves or kills among nodes
        // at least three apart (so at most one of a key's three consecutive
        // holders goes), and one or two joins; keep at least three nodes.
        let mut leaving: Vec<String> = Vec::new();
        let mut killed: Vec<String> = Vec::new();
        let mut taken: BTreeSet<usize> = BTreeSet::new();
        let n = order.len();
        let budget = n.saturating_sub(3).min(3);
        for slot in 0..budget {
            let pick = rng.below(n);
            if [pick, (pick + 1) % n, (pick + n - 1) % n]
                .iter()
                .any(|p| taken.contains(p))
            {
                continue;
            }
            taken.extend([pick, (pick + 1) % n, (pick + n - 1) % n]);
            if slot < 2 && rng.below(2) == 0 {
                killed.push(order[pick].clone());
            } else {
                leaving.push(order[pick].clone());
            }
        }
        let joins = 1 + rng.below(2);
        println!("round {round}: {n} nodes, kill {killed:?}, leave {leaving:?}, join {joins}");

        // Fire everything at once.
        for node in nodes.iter().filter(|p| killed.contains(&p.addr)) {
            node.signal("KILL");
        }
        for node in nodes.iter().filter(|p| leaving.contains(&p.addr)) {
            node.signal("TERM");
        }
        let registry_addr = registry.addr.clone();
        let joiners = tokio::task::spawn_blocking(move || {
            (0..joins)
                .map(|_| common::dht_process(&registry_addr, &[]))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for node in nodes
            .iter_mut()
            .filter(|p| killed.contains(&p.addr) || leaving.contains(&p.addr))
        {
            node.wait_exit(Duration::from_secs(20));
        }
        nodes.retain(|p| !killed.contains(&p.addr) && !leaving.contains(&p.addr));
        nodes.extend(joiners);

        // Once the changes stop: a correct ring, within a bound.
        let live: Vec<String> = nodes.iter().map(|p| p.addr.clone()).collect();
        let took = common::await_ring(&live, Duration::from_secs(10)).await;
        println!("round {round}: converged in {took:?}");
        check_keys(&live, &keys).await;
    }
}
