//! What a prefix watch's local stream does with a replica's copies: it holds
//! each for the request timeout before sending it.
//!
//! A replica stores (and logs) a copy before its owner has heard from every
//! replica, so a copy sent at once would tell a prefix watcher of a write that
//! a read of its key, made at that moment, waits for (or, if the owner then
//! failed and the other replica, without the copy, took the arc over, never
//! sees). The owner logs the same change when its write settles, and its
//! stream sends it then; a watcher delivers each version once, so the copy,
//! sent later, is dropped there. The copy is only insurance against an owner
//! that failed before its change reached the watcher: by the time the hold
//! ends the owner's write has settled or timed out (its deadline is the same
//! request timeout), and an owner that took the arc over reads with its
//! replicas until it has caught up, so a read then sees the copy's write.
//!
//! Plain state: the caller says what time it is.

use crate::node::watching::WatchSettings;
use crate::store::Entry;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Copies waiting for their hold to end, in the order it ends, within the
/// change log's bounds (past them the oldest go: the owner reports those).
#[derive(Debug)]
pub(super) struct CopyHold {
    hold: Duration,
    keep: WatchSettings,
    queue: VecDeque<(Instant, Arc<Entry>)>,
    bytes: usize,
}

fn size(e: &Entry) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len)
}

impl CopyHold {
    /// Holds each copy for `hold`, at most as many (and bytes) as `keep`.
    pub fn new(hold: Duration, keep: WatchSettings) -> Self {
        Self {
            hold,
            keep,
            queue: VecDeque::new(),
            bytes: 0,
        }
    }

    /// A copy stored at `copied`: `Some` if its hold has ended by `now` (send
    /// it), else held.
    pub fn take(&mut self, copied: Instant, copy: Arc<Entry>, now: Instant) -> Option<Arc<Entry>> {
        let until = copied + self.hold;
        if until <= now {
            return Some(copy);
        }
        let at = self.queue.partition_point(|(t, _)| *t <= until);
        self.bytes += size(&copy);
        self.queue.insert(at, (until, copy));
        while self.queue.len() > self.keep.retained
            || (self.bytes > self.keep.retained_bytes && self.queue.len() > 1)
        {
            if let Some((_, old)) = self.queue.pop_front() {
                self.bytes -= size(&old);
            }
        }
        None
    }

    /// The copies whose hold has ended by `now`, in the order it ended.
    pub fn due(&mut self, now: Instant) -> Vec<Arc<Entry>> {
        let n = self.queue.partition_point(|(t, _)| *t <= now);
        let due: Vec<Arc<Entry>> = self.queue.drain(..n).map(|(_, e)| e).collect();
        self.bytes -= due.iter().map(|e| size(e)).sum::<usize>();
        due
    }

    /// When the next hold ends, if any copy is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;
    use crate::store::Version;

    fn copy(key: &str, micros: u64, value_len: usize) -> Arc<Entry> {
        Arc::new(Entry {
            position: Position(0),
            key: key.into(),
            value: Some(vec![0; value_len]),
            version: Version { micros, node: 1 },
            expires: None,
        })
    }

    const HOLD: Duration = Duration::from_secs(5);

    #[test]
    fn a_copy_is_sent_once_its_hold_has_ended() {
        let t0 = Instant::now();
        let mut hold = CopyHold::new(HOLD, WatchSettings::default());
        assert!(hold.take(t0, copy("a", 1, 1), t0).is_none(), "held");
        assert_eq!(hold.next_due(), Some(t0 + HOLD));
        assert!(hold.due(t0 + HOLD - Duration::from_millis(1)).is_empty());
        let due = hold.due(t0 + HOLD);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key, b"a");
        assert_eq!(hold.next_due(), None);
        // A copy stored long enough ago (a stream resuming over the log) is
        // not held at all.
        let late = hold.take(t0, copy("b", 2, 1), t0 + HOLD);
        assert_eq!(late.map(|e| e.key.clone()), Some(b"b".to_vec()));
    }

    #[test]
    fn holds_end_in_the_order_of_their_copies_whatever_order_they_came_in() {
        let t0 = Instant::now();
        let mut hold = CopyHold::new(HOLD, WatchSettings::default());
        let now = t0 + Duration::from_secs(3);
        hold.take(t0 + Duration::from_secs(2), copy("later", 2, 1), now);
        hold.take(t0 + Duration::from_secs(1), copy("earlier", 1, 1), now);
        assert_eq!(hold.next_due(), Some(t0 + Duration::from_secs(6)));
        let keys = |v: Vec<Arc<Entry>>| v.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(hold.due(t0 + Duration::from_secs(6))),
            [b"earlier".to_vec()]
        );
        assert_eq!(
            keys(hold.due(t0 + Duration::from_secs(9))),
            [b"later".to_vec()]
        );
    }

    #[test]
    fn past_its_bounds_the_oldest_copies_go() {
        let t0 = Instant::now();
        let keep = WatchSettings {
            retained: 2,
            retained_bytes: 100,
        };
        let mut hold = CopyHold::new(HOLD, keep);
        for i in 0..3 {
            hold.take(t0 + Duration::from_millis(i), copy("k", i + 1, 1), t0);
        }
        let versions = |v: Vec<Arc<Entry>>| v.iter().map(|e| e.version.micros).collect::<Vec<_>>();
        assert_eq!(versions(hold.due(t0 + HOLD * 2)), [2, 3], "over the count");
        hold.take(t0, copy("big", 9, 80), t0);
        hold.take(t0, copy("big2", 10, 80), t0);
        assert_eq!(versions(hold.due(t0 + HOLD)), [10], "over the bytes");
    }
}
