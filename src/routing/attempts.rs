//! One query's attempts at reaching its owner, as a state machine: which
//! failed forwards are tried again and after how long, when a route must
//! stop going counter-clockwise, how long a query waits for an owner that
//! cannot serve yet, and how many times an owner writes again past a newer
//! replica. `Node::execute` routes, forwards and waits; it asks this what to
//! do after each outcome. Nothing here does I/O or reads a clock (time is
//! passed in).
//!
//! The rules:
//!
//! - a forward that was **not sent** (the peer was unreachable) is tried again
//!   along the repaired route, read or write: nothing was applied;
//! - a forward **interrupted** after it was sent is tried again only for a
//!   read: a write may have been applied, and the client decides;
//! - any other failure is the answer;
//! - retries wait 50 ms, doubling up to the probe interval (or less, when the
//!   view changes first), and only while the retry budget lasts: long enough
//!   for the ring to notice a dead node and repair (`probe_interval x (misses
//!   + 3)`), never longer than the request timeout;
//! - a route that failed through this node's `prev` goes clockwise from then
//!   on: counter-clockwise through a dead `prev` never repairs itself;
//! - waits for an owner that cannot serve yet (joining, a lease not granted,
//!   a taken-over arc still waiting) share one deadline, the request timeout
//!   from the start: views change all the time;
//! - an owner writes again past a replica's newer version at most
//!   [`MAX_REWRITES`] times;
//! - a read at the owner that meets writes to its key not yet acknowledged
//!   waits for them once (`node::pending`), then answers what it reads: a
//!   key written all the time cannot starve its reads;
//! - a read by an owner that is behind (it asks its replicas, `prev`
//!   first) whose `prev` did not answer asks again every
//!   `BEHIND_READ_RETRY` until the deadline, not within the retry budget:
//!   the read cannot be answered without `prev`, which may be leaving,
//!   failing or about to be replaced by a repair, and giving up early turns
//!   a slow repair into a failed read.

use std::time::{Duration, Instant};

/// How many times a write is made again after a replica held a newer version.
pub const MAX_REWRITES: u32 = 3;

/// The first retry's wait.
const FIRST_DELAY: Duration = Duration::from_millis(50);

/// How long a read by an owner that is behind waits before asking its
/// replicas again, when its `prev` did not answer.
pub const BEHIND_READ_RETRY: Duration = Duration::from_millis(100);

/// The settings a query's attempts follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptSettings {
    /// The request timeout: the deadline of every wait.
    pub stall: Duration,
    /// How long failed forwards are retried for.
    pub retry_budget: Duration,
    /// The longest wait between retries (the probe interval).
    pub max_delay: Duration,
}

impl AttemptSettings {
    /// The settings for a node that probes every `probe_interval`, declares a
    /// neighbour dead after `misses` missed probes, and times requests out
    /// after `stall`.
    pub fn new(stall: Duration, probe_interval: Duration, misses: u32) -> Self {
        Self {
            stall,
            retry_budget: (probe_interval * (misses + 3)).min(stall),
            max_delay: probe_interval,
        }
    }
}

/// How a forward failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not sent: the peer could not be reached.
    NotSent,
    /// Sent, then the connection broke: it may have been applied.
    Interrupted,
    /// Anything else: the peer's answer.
    Answered,
}

/// What to do after a failed forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Forget the route through the failed peer, wait this long (or until
    /// the view changes), and route again.
    RetryAfter(Duration),
    /// Give the failure as the answer.
    GiveUp,
}

/// One query's attempts (see the module docs).
#[derive(Debug, Clone)]
pub struct Attempts {
    settings: AttemptSettings,
    started: Instant,
    delay: Duration,
    clockwise_only: bool,
    rewrites: u32,
    waited_for_writes: bool,
}

impl Attempts {
    /// A query that started at `started`.
    pub fn new(settings: AttemptSettings, started: Instant) -> Self {
        Self {
            settings,
            started,
            delay: FIRST_DELAY,
            clockwise_only: false,
            rewrites: 0,
            waited_for_writes: false,
        }
    }

    /// Whether the query must be routed clockwise only.
    pub fn clockwise_only(&self) -> bool {
        self.clockwise_only
    }

    /// When every wait ends: the request timeout from the start.
    pub fn deadline(&self) -> Instant {
        self.started + self.settings.stall
    }

    /// A forward failed at `now`. `read`: the query only reads;
    /// `through_prev`: it went to this node's `prev`.
    pub fn forward_failed(
        &mut self,
        failure: Failure,
        read: bool,
        through_prev: bool,
        now: Instant,
    ) -> AfterFailure {
        let retried = match failure {
            Failure::NotSent => true,
            Failure::Interrupted => read,
            Failure::Answered => false,
        };
        let elapsed = now.saturating_duration_since(self.started);
        if !retried || elapsed + self.delay >= self.settings.retry_budget {
            return AfterFailure::GiveUp;
        }
        self.clockwise_only |= through_prev;
        let wait = self.delay;
        self.delay = (self.delay * 2).min(self.settings.max_delay);
        AfterFailure::RetryAfter(wait)
    }

    /// A read by an owner that is behind could not ask its `prev` at `now`
    /// (unreachable, interrupted, timed out or refused): ask again after
    /// `BEHIND_READ_RETRY` if that is before the deadline.
    pub fn behind_read_failed(&self, now: Instant) -> AfterFailure {
        if now + BEHIND_READ_RETRY < self.deadline() {
            AfterFailure::RetryAfter(BEHIND_READ_RETRY)
        } else {
            AfterFailure::GiveUp
        }
    }

    /// Until when to wait for an owner that cannot serve yet: the deadline,
    /// or `serves_from` (a taken-over arc's end of waiting) if sooner.
    pub fn wait_until(&self, serves_from: Option<Instant>) -> Instant {
        serves_from.map_or(self.deadline(), |at| at.min(self.deadline()))
    }

    /// Whether the waits are over at `now`: the query fails.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// A replica held the key at a newer version than this owner's write:
    /// whether the owner may still write again past it.
    pub fn rewrites_left(&self) -> bool {
        self.rewrites < MAX_REWRITES
    }

    /// A read at the owner met writes to its key in flight: whether to wait
    /// for them (the first time only).
    pub fn wait_for_writes(&mut self) -> bool {
        !std::mem::replace(&mut self.waited_for_writes, true)
    }

    /// The owner writes again past a newer replica (counted against
    /// [`MAX_REWRITES`]).
    pub fn rewrite(&mut self) {
        self.rewrites += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Probes every 500 ms, dead after 3 misses, requests time out at 10 s:
    /// retries for 3 s.
    fn attempts() -> (Attempts, Instant) {
        let t0 = Instant::now();
        let settings = AttemptSettings::new(10_000 * MS, 500 * MS, 3);
        assert_eq!(settings.retry_budget, 3_000 * MS);
        (Attempts::new(settings, t0), t0)
    }

    #[test]
    fn an_unreachable_peer_is_retried_with_doubling_waits_until_the_budget_is_spent() {
        let (mut a, t0) = attempts();
        let mut now = t0;
        let mut waits = Vec::new();
        while let AfterFailure::RetryAfter(wait) =
            a.forward_failed(Failure::NotSent, false, false, now)
        {
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(waits, [50, 100, 200, 400, 500, 500, 500, 500]);
        assert!(now - t0 < 3_000 * MS);
    }

    #[test]
    fn an_interrupted_forward_is_retried_for_a_read_only() {
        let (mut a, t0) = attempts();
        assert_eq!(
            a.forward_failed(Failure::Interrupted, true, false, t0),
            AfterFailure::RetryAfter(50 * MS)
        );
        let (mut a, t0) = attempts();
        assert_eq!(
            a.forward_failed(Failure::Interrupted, false, false, t0),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn a_peers_answer_is_the_answer() {
        let (mut a, t0) = attempts();
        assert_eq!(
            a.forward_failed(Failure::Answered, true, false, t0),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn the_retry_budget_never_outlasts_the_request_timeout() {
        let settings = AttemptSettings::new(200 * MS, 500 * MS, 3);
        assert_eq!(settings.retry_budget, 200 * MS);
        let t0 = Instant::now();
        let mut a = Attempts::new(settings, t0);
        assert!(matches!(
            a.forward_failed(Failure::NotSent, true, false, t0 + 100 * MS),
            AfterFailure::RetryAfter(_)
        ));
        // 150 ms in, the next wait (100 ms) would end past the budget.
        assert_eq!(
            a.forward_failed(Failure::NotSent, true, false, t0 + 150 * MS),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn a_route_that_failed_through_prev_goes_clockwise_from_then_on() {
        let (mut a, t0) = attempts();
        a.forward_failed(Failure::NotSent, true, false, t0);
        assert!(!a.clockwise_only());
        a.forward_failed(Failure::NotSent, true, true, t0);
        assert!(a.clockwise_only());
        a.forward_failed(Failure::NotSent, true, false, t0);
        assert!(a.clockwise_only(), "it stays clockwise");
    }

    #[test]
    fn waits_share_one_deadline_and_end_early_when_an_arc_may_serve() {
        let (a, t0) = attempts();
        assert_eq!(a.deadline(), t0 + 10_000 * MS);
        assert_eq!(a.wait_until(None), a.deadline());
        assert_eq!(a.wait_until(Some(t0 + 300 * MS)), t0 + 300 * MS);
        assert_eq!(a.wait_until(Some(t0 + 20_000 * MS)), a.deadline());
        assert!(!a.expired(t0 + 9_999 * MS));
        assert!(a.expired(t0 + 10_000 * MS));
    }

    #[test]
    fn a_behind_owners_read_asks_its_prev_again_until_the_deadline_past_the_budget() {
        let (a, t0) = attempts();
        let mut now = t0;
        let mut retries = 0;
        while let AfterFailure::RetryAfter(wait) = a.behind_read_failed(now) {
            assert_eq!(wait, BEHIND_READ_RETRY);
            now += wait;
            retries += 1;
        }
        // Past the 3 s retry budget, up to the 10 s deadline.
        assert!(now > t0 + 3_000 * MS, "{:?}", now - t0);
        assert!(now + BEHIND_READ_RETRY >= a.deadline());
        assert!(now <= a.deadline());
        assert_eq!(retries, 99);
    }

    #[test]
    fn a_read_waits_for_writes_in_flight_once() {
        let (mut a, _) = attempts();
        assert!(a.wait_for_writes());
        assert!(!a.wait_for_writes());
        assert!(!a.wait_for_writes());
    }

    #[test]
    fn an_owner_writes_past_a_newer_replica_a_bounded_number_of_times() {
        let (mut a, _) = attempts();
        let mut granted = 0;
        for _ in 0..10 {
            if a.rewrites_left() {
                a.rewrite();
                granted += 1;
            }
        }
        assert_eq!(granted, MAX_REWRITES);
    }
}
