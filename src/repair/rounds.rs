//! Anti-entropy's rounds: what each tick of the loop does, and how fast the
//! entries it moves may go.
//!
//! Every tick of a serving node is a round ([`Rounds::tick`]): an owner that may
//! be behind catches up first (with replication), then every
//! [`SWEEP_EVERY`]th round stray entries are swept, then every arc the node
//! replicates is exchanged with its owner. A node that is not serving (joining,
//! leaving, left) does nothing, and its rounds do not count.
//!
//! The entries a round moves are paced ([`Pacer`]) to a rate, so that repair
//! after a failure does not starve the foreground: each batch of `n` pushes the
//! next free moment `n / rate` seconds further, and a batch waits until its
//! moment comes. Time idle is not saved up.

use std::time::{Duration, Instant};

/// Rounds between two sweeps for stray entries (each sweep with strays walks
/// the ring).
pub const SWEEP_EVERY: u64 = 5;

/// What one round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Catch up with the replicas first, if behind.
    pub catch_up: bool,
    /// Sweep stray entries.
    pub sweep_strays: bool,
}

/// The rounds of one node.
#[derive(Debug, Default)]
pub struct Rounds {
    count: u64,
}

impl Rounds {
    /// A tick of the loop: the round to run, if the node is `serving`;
    /// `replicated`: whether it keeps more than one copy of each key.
    pub fn tick(&mut self, serving: bool, replicated: bool) -> Option<Round> {
        if !serving {
            return None;
        }
        self.count += 1;
        Some(Round {
            catch_up: replicated,
            sweep_strays: self.count.is_multiple_of(SWEEP_EVERY),
        })
    }
}

/// Paces work to a rate (see the module docs). Time is passed in.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    next_free: Instant,
}

impl Pacer {
    /// A pacer for `rate` items a second (at least one), free from `now`.
    pub fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            next_free: now,
        }
    }

    /// How long after `now` the next `items` may go; books them.
    pub fn book(&mut self, items: usize, now: Instant) -> Duration {
        let start = self.next_free.max(now);
        self.next_free = start + Duration::from_secs_f64(items as f64 / self.rate);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_count_only_while_serving_and_every_fifth_sweeps() {
        let mut rounds = Rounds::default();
        assert_eq!(rounds.tick(false, true), None);
        let plans: Vec<Round> = (0..10).filter_map(|_| rounds.tick(true, true)).collect();
        let sweeps: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, r)| r.sweep_strays)
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(sweeps, vec![5, 10]);
        assert!(plans.iter().all(|r| r.catch_up));
        // Ticks while not serving do not move the count.
        for _ in 0..3 {
            assert_eq!(rounds.tick(false, true), None);
        }
        let next: Vec<bool> = (0..5)
            .map(|_| rounds.tick(true, false).unwrap().sweep_strays)
            .collect();
        assert_eq!(next, vec![false, false, false, false, true]);
        // Without replication there is no one to catch up with.
        assert!(!rounds.tick(true, false).unwrap().catch_up);
    }

    #[test]
    fn a_pacer_spaces_batches_by_the_rate() {
        let now = Instant::now();
        let mut pacer = Pacer::new(100, now);
        assert_eq!(pacer.book(50, now), Duration::ZERO);
        assert_eq!(pacer.book(10, now), Duration::from_millis(500));
        // Time that passed idle is not saved up beyond now.
        let later = now + Duration::from_secs(10);
        assert_eq!(pacer.book(1, later), Duration::ZERO);
    }
}
