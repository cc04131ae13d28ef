//! Replaying joins through the registry's own [`Membership`], without sockets or a
//! clock, to measure how balanced the rings it builds are (`crustyring balance`,
//! the figures in `docs/performance.md`) and to predict the IDs a real registry
//! assigns. ID assignment is deterministic, so a replay gives exactly the IDs a
//! registry with the same rule assigns to the same addresses in the same order.

use super::{Liveness, Membership};
use crate::ring::{IdRule, Position, balance};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The IDs a registry with rule `ids` assigns to `addrs` registering in this
/// order, none leaving: in the same order.
pub fn replay(ids: IdRule, addrs: &[String]) -> Vec<Position> {
    let now = Instant::now();
    let liveness = Liveness {
        ttl: Duration::MAX,
        relearn: Duration::ZERO,
    };
    let mut membership = Membership::new(ids, liveness, now);
    addrs
        .iter()
        .filter_map(|addr| membership.register(addr, None, now).ok())
        .map(|registration| registration.id)
        .collect()
}

/// Largest share over mean share of the ring whose members are `ids`.
pub fn ratio_of(ids: &[Position]) -> f64 {
    let members: BTreeMap<Position, ()> = ids.iter().map(|id| (*id, ())).collect();
    balance::largest_share_ratio(&balance::shares(&members)).unwrap_or(1.0)
}

/// The addresses of a local cluster's first `n` nodes: `http://127.0.0.1:50001`
/// and on, as `crustyring cluster` starts them.
pub fn local_addrs(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("http://127.0.0.1:{}", 50000 + i))
        .collect()
}

/// The distribution of the ratio over several address sets.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceFigures {
    /// Nodes in each ring.
    pub nodes: usize,
    /// Candidates each joiner chose among.
    pub choices: u32,
    /// How many rings (salts) were built.
    pub sets: usize,
    /// The median ratio of largest to mean share.
    pub median: f64,
    /// The largest ratio seen.
    pub worst: f64,
}

/// Builds `sets` rings of `nodes` local-cluster addresses joining in order, each
/// under its own salt (`crustyring-0`, `crustyring-1`, ...), with `choices`
/// candidates, and summarises their ratios.
pub fn measure(nodes: usize, choices: u32, sets: usize) -> BalanceFigures {
    let addrs = local_addrs(nodes);
    let mut ratios: Vec<f64> = (0..sets)
        .map(|set| {
            ratio_of(&replay(
                IdRule::new(format!("crustyring-{set}"), choices),
                &addrs,
            ))
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = match ratios.len() {
        0 => 1.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    };
    BalanceFigures {
        nodes,
        choices,
        sets,
        median,
        worst: ratios.last().copied().unwrap_or(1.0),
    }
}

/// A table of figures, one row each, as `crustyring balance` prints it.
pub struct BalanceTable<'a>(pub &'a [BalanceFigures]);

impl fmt::Display for BalanceTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| nodes | id choices | sets | median largest/mean | worst largest/mean |"
        )?;
        writeln!(f, "| ---: | ---: | ---: | ---: | ---: |")?;
        for r in self.0 {
            writeln!(
                f,
                "| {} | {} | {} | {:.2} | {:.2} |",
                r.nodes, r.choices, r.sets, r.median, r.worst
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_choice_replays_the_five_node_cluster_of_issue_9() {
        // The shares reported in the issue for a default 5-node local cluster:
        // 3.7%, 8.4%, 8.5%, 27.9%, 51.4%.
        let ids = replay(IdRule::new(super::super::DEFAULT_SALT, 1), &local_addrs(5));
        let members: BTreeMap<Position, ()> = ids.iter().map(|id| (*id, ())).collect();
        let mut percent: Vec<u64> = balance::shares(&members)
            .iter()
            .map(|s| (s * 1000.0).round() as u64)
            .collect();
        percent.sort_unstable();
        assert_eq!(percent, vec![37, 84, 85, 279, 514]);
    }

    #[test]
    fn the_median_and_worst_summarise_every_set() {
        let figures = measure(8, 1, 5);
        assert_eq!((figures.nodes, figures.choices, figures.sets), (8, 1, 5));
        assert!(1.0 <= figures.median && figures.median <= figures.worst);
    }
}
