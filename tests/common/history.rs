//! A recorded history of client operations on keys, timed in microseconds
//! from its start, for the linearizability checker
//! ([`super::linearizable`]): shared by the real-process tests that check
//! their clients' view of the ring (threads or tasks alike).

use super::linearizable::{self, Call, Operation, Return};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Operations of every client; clones share it.
#[derive(Clone)]
pub struct History {
    t0: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            operations: Arc::default(),
        }
    }

    /// When the history started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Microseconds since the start: an operation's `invoked`, taken before
    /// its request is sent.
    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// `client`'s operation `call` on `key`, invoked at `invoked`
    /// ([`History::now`]), answered `ret` now.
    pub fn record(&self, client: u32, key: &str, call: Call, ret: Return, invoked: u64) {
        let returned = self.now();
        (self.operations.lock().unwrap()).push(Operation {
            client,
            key: key.to_string(),
            call,
            ret,
            invoked,
            returned,
        });
    }

    /// The operations so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations.lock().unwrap().clone()
    }

    /// How many writes of `key` were acknowledged, and in `[from, to)` (both
    /// in [`History::now`]'s microseconds) if given.
    pub fn acknowledged(&self, key: &str, during: Option<(u64, u64)>) -> usize {
        let within =
            |o: &Operation| during.is_none_or(|(from, to)| o.returned >= from && o.returned < to);
        (self.operations.lock().unwrap().iter())
            .filter(|o| o.key == key && o.ret == Return::Done && within(o))
            .count()
    }

    /// How many reads returned the value of a write of unknown outcome
    /// (its client gave up on it, or was answered an error): it took
    /// effect after all, perhaps late (printed by tests, so that a run
    /// shows whether that happened).
    pub fn reads_of_unknown_writes(&self) -> usize {
        let operations = self.operations();
        let unknown: std::collections::HashSet<(&str, u64)> = (operations.iter())
            .filter(|o| o.ret == Return::Unknown)
            .filter_map(|o| match o.call {
                Call::Write(v) => Some((o.key.as_str(), v)),
                _ => None,
            })
            .collect();
        (operations.iter())
            .filter(|o| match o.ret {
                Return::Read(Some(v)) => unknown.contains(&(o.key.as_str(), v)),
                _ => false,
            })
            .count()
    }

    /// Panics, with the checker's report, unless every key behaved as a
    /// linearizable register; prints how many operations were checked and
    /// [`History::reads_of_unknown_writes`].
    pub fn assert_linearizable(&self, test: &str) {
        let operations = self.operations();
        eprintln!(
            "{test}: {} operations; {} reads returned the value of a write of unknown outcome",
            operations.len(),
            self.reads_of_unknown_writes()
        );
        if let Err(violation) = linearizable::check(&operations) {
            panic!("{test}: not linearizable: {violation}");
        }
    }
}
