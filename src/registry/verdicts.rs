//! The registry as the judge of deaths: the witness a takeover needs.
//!
//! Leases between neighbours keep an arc from two serving owners when one
//! node is cut off, but not when the ring splits into two groups of two or
//! more: each side declares the other dead and takes its arcs over, and a
//! node's lease comes from its `prev`, which may sit on the same side. So a
//! node takes a dead neighbour's arc over only once the registry has judged
//! that neighbour dead, and the registry does so only once every root lease it
//! granted the node has lapsed:
//!
//! - **Root leases.** Each heartbeat the registry answers grants the node a
//!   root lease (`--root-lease-ms` of the registry; from when the heartbeat was sent, on
//!   the node's clock), unless the registry has judged the node dead since the
//!   node last heard so: it says how often it has, and grants nothing until
//!   the node's heartbeats say they know. A root lease keeps a node's lease
//!   going while its `prev` fails, and lets it lease its `next` (a node grants
//!   leases only while it holds one, `crate::lease`).
//! - **Verdicts.** Asked whether the nodes in an arc are dead (the arc a node
//!   would take over, from the neighbour it declared dead to its new `next`:
//!   it may pass over nodes it did not know of), the registry answers yes
//!   once a takeover wait (the root lease stretched for the drift bound) has
//!   passed since its last root grant to each node it knows in the arc (or
//!   its registration), and since the registry started (a registry that
//!   restarted does not know what the last one granted). From then on it
//!   grants those nodes nothing more until their heartbeats say they heard of
//!   the verdict (and so ended their leases). Before that, it says how long
//!   to wait: a node that heartbeats is not dead.
//!
//! The counts of verdicts must outlive the registry: a node judged dead that
//! has not heard so would otherwise be granted root leases again by the next
//! registry, and serve the arc another node took over. So must the nodes it
//! knows (a count of 0 each): a verdict judges every known node in the arc,
//! and the arc waits a takeover wait more for each (each may hold a lease
//! from the one before it), so a restarted registry that forgot a node cut
//! off from it since would have an arc wait too little. A registry with a
//! data directory keeps them in a file there ([`save`], [`load`]), written
//! before a new verdict is answered, and before a node it did not know is
//! answered (its registration, or its first heartbeat).
//!
//! No I/O but those two functions; every method takes the registry's
//! current time.

use crate::lease::LeaseSettings;
use crate::ring::{Arc, Position};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How far above its own count the registry takes a node's count of
/// verdicts heard for the true one (see [`Verdicts::heartbeat`]).
const MAX_LEARNT: u64 = 1 << 20;

/// What a heartbeat is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// A root lease of this length.
    Granted(Duration),
    /// None: the registry judged the node dead this many times, more than it
    /// has heard of.
    Dead(u64),
}

/// What the registry answers a node that asks whether another is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Dead: their root leases have lapsed, and they get no more; `others`
    /// is how many nodes it judged besides the first of the arc.
    Dead {
        /// Nodes judged besides the first.
        others: u32,
    },
    /// Not yet: ask again after this long (for ever, while it heartbeats).
    NotBefore(Duration),
}

/// The root leases granted and the verdicts given.
#[derive(Debug)]
pub struct Verdicts {
    settings: LeaseSettings,
    started: Instant,
    /// The longest root lease an earlier registry may have granted
    /// ([`Verdicts::restore`]).
    earlier: Duration,
    /// The last root lease granted to each node.
    rooted: BTreeMap<Position, Instant>,
    /// How many times each node known was judged dead (0: never).
    count: BTreeMap<Position, u64>,
    /// The nodes judged dead that have not heard so.
    unheard: BTreeSet<Position>,
    /// How many changes were made ([`Verdicts::changes`]).
    changes: u64,
    /// How many of them were kept ([`Verdicts::saved`]).
    kept: u64,
}

impl Verdicts {
    /// No grants yet; the registry started at `now`. Root leases last
    /// `settings.length`, and verdicts allow for `settings.drift`.
    pub fn new(settings: LeaseSettings, now: Instant) -> Self {
        Self {
            settings,
            started: now,
            earlier: Duration::ZERO,
            rooted: BTreeMap::new(),
            count: BTreeMap::new(),
            unheard: BTreeSet::new(),
            changes: 0,
            kept: 0,
        }
    }

    /// Takes up what an earlier registry kept ([`load`]): its counts, and
    /// the longest root lease it granted (it judges no node dead before that
    /// may have lapsed).
    pub fn restore(&mut self, kept: Kept) {
        self.count = kept.counts;
        self.earlier = kept.root_lease;
    }

    /// What to keep ([`save`]): the counts, and the longest root lease this
    /// registry or an earlier one granted.
    pub fn kept(&self) -> Kept {
        Kept {
            counts: self.count.clone(),
            root_lease: self.earlier.max(self.settings.length),
        }
    }

    /// How many times node `id` was judged dead (a registering node is told:
    /// those verdicts concern earlier processes).
    pub fn count_of(&self, id: Position) -> u64 {
        self.count.get(&id).copied().unwrap_or(0)
    }

    /// Node `id` registered at `now`: a node that may be leased by its
    /// `prev` from now on, judged as if it had been granted a root lease.
    pub fn registered(&mut self, id: Position, now: Instant) {
        self.know(id);
        self.note_root(id, now);
    }

    /// Notes `id` known, to be kept ([`Verdicts::unsaved`]) if it is new.
    fn know(&mut self, id: Position) -> &mut u64 {
        if !self.count.contains_key(&id) {
            self.change();
        }
        self.count.entry(id).or_insert(0)
    }

    fn note_root(&mut self, id: Position, now: Instant) {
        let last = self.rooted.entry(id).or_insert(now);
        *last = (*last).max(now);
    }

    /// Whether a verdict was given, or a node became known or was
    /// forgotten, since the counts were last kept ([`Verdicts::saved`]):
    /// they must be kept before a verdict, or a new node, is answered.
    pub fn unsaved(&self) -> bool {
        self.changes != self.kept
    }

    /// The counts have been kept.
    pub fn saved(&mut self) {
        self.kept = self.changes;
    }

    /// How many changes have been made so far: a call that made one (a new
    /// node, a learnt count, a verdict) is answered only once it is kept;
    /// one that made none is answered whether an earlier change could be
    /// kept or not (the next verdict keeps it first).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    fn change(&mut self) {
        self.changes += 1;
    }

    /// Node `id` heartbeats, saying it heard of `seen` verdicts on itself.
    pub fn heartbeat(&mut self, id: Position, seen: u64, now: Instant) -> Root {
        let count = self.know(id);
        if seen < *count {
            return Root::Dead(*count);
        }
        // A registry that restarted without its counts learns them from the
        // nodes; a count far above any verdicts given is not believed.
        if seen <= count.saturating_add(MAX_LEARNT) && seen != *count {
            *count = seen;
            self.change();
        }
        self.unheard.remove(&id);
        self.note_root(id, now);
        Root::Granted(self.settings.length)
    }

    /// Node `id` left the ring (a graceful leave): its root leases are
    /// forgotten, and its count if it was never judged (a process of an
    /// earlier life with its ID, judged dead, may live on somewhere without
    /// having heard so: its count stays).
    pub fn deregistered(&mut self, id: Position) {
        self.rooted.remove(&id);
        if self.count.get(&id) == Some(&0) {
            self.count.remove(&id);
            self.change();
        }
    }

    /// Whether the nodes in `arc` are dead, asked by `asker`, which declared
    /// the first (`arc.start`) dead and would take the arc over: the first,
    /// known or not, and every node it knows (granted a root lease,
    /// registered or judged) after the asker (or the first, if the asker is
    /// not named) up to the arc's end. The asker's view may have missed a
    /// node before the first: a live one there holds the verdict back.
    pub fn judge(&mut self, arc: Arc, asker: Option<Position>, now: Instant) -> Verdict {
        // (An asker inside the arc it asks about asks about the arc.)
        let from = asker.filter(|a| !arc.contains(*a)).unwrap_or(arc.start);
        let span = Arc::new(from, arc.end);
        let known = self.rooted.keys().chain(self.count.keys());
        let mut ids: BTreeSet<Position> = known
            .filter(|id| span.contains(**id) && Some(**id) != asker)
            .copied()
            .collect();
        ids.insert(arc.start);
        let wait = |length: Duration| {
            LeaseSettings {
                length,
                ..self.settings
            }
            .takeover_wait()
        };
        let mut lapsed = self.started + wait(self.earlier.max(self.settings.length));
        for id in ids.iter().filter(|id| !self.unheard.contains(id)) {
            if let Some(last) = self.rooted.get(id) {
                lapsed = lapsed.max(*last + wait(self.settings.length));
            }
        }
        if now < lapsed {
            return Verdict::NotBefore(lapsed - now);
        }
        for id in &ids {
            if self.unheard.insert(*id) {
                let count = self.count.entry(*id).or_insert(0);
                *count = count.saturating_add(1);
                self.change();
            }
        }
        Verdict::Dead {
            others: u32::try_from(ids.len() - 1).unwrap_or(u32::MAX),
        }
    }
}

/// What a registry keeps across restarts ([`save`], [`load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// How many times each node known was judged dead (0: never).
    pub counts: BTreeMap<Position, u64>,
    /// The longest root lease granted.
    pub root_lease: Duration,
}

/// Writes `kept` to `path` durably: a file beside it, synced, renamed over
/// it, and the directory synced. A line `root-lease-ms <ms>`, then one line
/// per node: its ID and its count.
pub fn save(path: &std::path::Path, kept: &Kept) -> std::io::Result<()> {
    use std::io::Write;
    let text: String = std::iter::once(format!(
        "{ROOT_LEASE_LINE} {}\n",
        kept.root_lease.as_millis()
    ))
    .chain((kept.counts.iter()).map(|(id, count)| format!("{} {count}\n", id.0)))
    .collect();
    let fresh = path.with_extension("new");
    let mut file = std::fs::File::create(&fresh)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The first word of the line that names the longest root lease granted.
const ROOT_LEASE_LINE: &str = "root-lease-ms";

/// Reads what [`save`] wrote to `path`; nothing if there is no file. A line
/// that does not parse is an error: without it, a node judged dead could be
/// granted root leases again.
pub fn load(path: &std::path::Path) -> std::io::Result<Kept> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::default()),
        Err(e) => return Err(e),
    };
    let bad = |line: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not `<id> <count>`: {line:?}", path.display()),
        )
    };
    let mut kept = Kept::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(first), Some(second), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(line));
        };
        let Ok(number) = second.parse::<u64>() else {
            return Err(bad(line));
        };
        if first == ROOT_LEASE_LINE {
            kept.root_lease = Duration::from_millis(number);
            continue;
        }
        let Ok(id) = first.parse::<u64>() else {
            return Err(bad(line));
        };
        kept.counts.insert(Position(id), number);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn verdicts(now: Instant) -> Verdicts {
        Verdicts::new(
            LeaseSettings {
                length: 2 * SECOND,
                drift: 0.01,
            },
            now,
        )
    }

    fn arc(from: u64, to: u64) -> Arc {
        Arc::new(Position(from), Position(to))
    }

    #[test]
    fn a_node_is_dead_a_takeover_wait_after_its_last_root_lease() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let (n, wait) = (Position(7), v.settings.takeover_wait());
        assert_eq!(v.heartbeat(n, 0, t0 + SECOND), Root::Granted(2 * SECOND));
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + 2 * SECOND),
            Verdict::NotBefore(SECOND + wait - 2 * SECOND)
        );
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + SECOND + wait),
            Verdict::Dead { others: 0 }
        );
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + SECOND + wait),
            Verdict::Dead { others: 0 },
            "it stands"
        );
        assert_eq!(v.count_of(n), 1, "counted once");
    }

    #[test]
    fn a_node_that_heartbeats_is_never_dead() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let n = Position(7);
        for s in 0..10 {
            v.heartbeat(n, 0, t0 + s * SECOND);
            assert!(matches!(
                v.judge(arc(7, 9), None, t0 + s * SECOND),
                Verdict::NotBefore(_)
            ));
        }
    }

    /// The asker may pass over nodes it did not know of: each the registry
    /// knows in the arc must be dead too, and is judged with the first.
    #[test]
    fn every_node_known_in_the_arc_is_judged_with_the_first() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let wait = v.settings.takeover_wait();
        v.heartbeat(Position(7), 0, t0);
        v.registered(Position(8), t0 + SECOND);
        v.heartbeat(Position(20), 0, t0 + 5 * SECOND);
        assert_eq!(
            v.judge(arc(7, 10), None, t0 + wait),
            Verdict::NotBefore(SECOND),
            "8 registered a second later"
        );
        assert_eq!(
            v.judge(arc(7, 10), None, t0 + SECOND + wait),
            Verdict::Dead { others: 1 }
        );
        assert_eq!((v.count_of(Position(7)), v.count_of(Position(8))), (1, 1));
        assert_eq!(v.count_of(Position(20)), 0, "outside the arc");
        // A node alive inside the arc holds the verdict back.
        assert!(matches!(
            v.judge(arc(7, 30), None, t0 + SECOND + wait),
            Verdict::NotBefore(_)
        ));
    }

    #[test]
    fn a_node_judged_dead_gets_no_root_lease_until_it_says_it_heard() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let n = Position(7);
        v.heartbeat(n, 0, t0);
        let later = t0 + 5 * SECOND;
        assert_eq!(v.judge(arc(7, 9), None, later), Verdict::Dead { others: 0 });
        // A heartbeat sent before it heard (say, held up by the partition).
        assert_eq!(v.heartbeat(n, 0, later), Root::Dead(1));
        assert_eq!(v.judge(arc(7, 9), None, later), Verdict::Dead { others: 0 });
        assert_eq!(v.heartbeat(n, 1, later), Root::Granted(2 * SECOND));
        assert!(matches!(
            v.judge(arc(7, 9), None, later),
            Verdict::NotBefore(_)
        ));
        // Judged dead again.
        assert_eq!(
            v.judge(arc(7, 9), None, later + 3 * SECOND),
            Verdict::Dead { others: 0 }
        );
        assert_eq!(v.heartbeat(n, 1, later + 3 * SECOND), Root::Dead(2));
        // A count from a node far above the true one is not believed.
        assert_eq!(
            v.heartbeat(n, u64::MAX, later + 3 * SECOND),
            Root::Granted(2 * SECOND)
        );
        assert_eq!(v.count_of(n), 2);
    }

    #[test]
    fn an_older_heartbeat_does_not_move_the_last_root_lease_back() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let wait = v.settings.takeover_wait();
        v.heartbeat(Position(7), 0, t0 + SECOND);
        v.heartbeat(Position(7), 0, t0);
        assert!(matches!(
            v.judge(arc(7, 9), None, t0 + wait),
            Verdict::NotBefore(_)
        ));
    }

    #[test]
    fn a_registry_that_restarted_judges_no_one_before_any_old_lease_lapsed() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let wait = v.settings.takeover_wait();
        assert!(matches!(v.judge(arc(7, 9), None, t0), Verdict::NotBefore(w) if w == wait));
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + wait),
            Verdict::Dead { others: 0 }
        );
        // One that granted longer root leases before: it waits for those.
        let mut v = verdicts(t0);
        v.restore(Kept {
            counts: BTreeMap::new(),
            root_lease: 10 * SECOND,
        });
        assert!(matches!(
            v.judge(arc(7, 9), None, t0 + wait),
            Verdict::NotBefore(_)
        ));
        assert_eq!(v.kept().root_lease, 10 * SECOND);
        // And it learns counts from the nodes.
        let mut v = verdicts(t0);
        assert_eq!(v.heartbeat(Position(9), 4, t0), Root::Granted(2 * SECOND));
        assert_eq!(v.heartbeat(Position(9), 3, t0), Root::Dead(4));
    }

    #[test]
    fn what_is_kept_outlives_the_registry() {
        let dir = std::env::temp_dir().join(format!("crustyring-verdicts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("verdicts");
        let _ = std::fs::remove_file(&path);
        assert_eq!(load(&path).unwrap(), Kept::default(), "no file: nothing");
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + 10 * SECOND),
            Verdict::Dead { others: 0 }
        );
        assert!(v.unsaved());
        save(&path, &v.kept()).unwrap();
        v.saved();
        assert!(!v.unsaved());
        let mut again = verdicts(t0);
        again.restore(load(&path).unwrap());
        assert_eq!(again.kept(), v.kept());
        assert_eq!(again.heartbeat(Position(7), 0, t0), Root::Dead(1));
        assert_eq!(
            again.heartbeat(Position(8), 0, t0),
            Root::Granted(2 * SECOND)
        );
        std::fs::write(&path, "7 one\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("7 one"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The asker's view may have missed a node before the one it declared
    /// dead: a live one there holds the verdict back, and a dead one is
    /// judged with the rest. A node alone asks about the whole ring but
    /// itself.
    #[test]
    fn the_nodes_between_the_asker_and_the_first_are_judged_too() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let wait = v.settings.takeover_wait();
        let later = t0 + 2 * wait;
        v.heartbeat(Position(5), 0, later);
        assert!(matches!(
            v.judge(arc(7, 9), Some(Position(3)), later),
            Verdict::NotBefore(_)
        ));
        assert_eq!(
            v.judge(arc(7, 9), Some(Position(6)), later),
            Verdict::Dead { others: 0 }
        );
        // Alone: every node but the asker.
        v.heartbeat(Position(3), 0, later);
        assert_eq!(
            v.judge(arc(7, 3), Some(Position(3)), later + wait),
            Verdict::Dead { others: 1 },
            "5 and 7; the asker (3) is not judged"
        );
        assert_eq!(v.count_of(Position(3)), 0);
    }

    /// A node the registry knows, judged or not, is kept: a restarted
    /// registry judges it with the rest of an arc (and the arc waits for
    /// it), though it heard nothing from it since.
    #[test]
    fn the_nodes_known_outlive_the_registry() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        v.registered(Position(8), t0);
        assert!(v.unsaved(), "a new node is kept before it is answered");
        v.saved();
        v.heartbeat(Position(8), 0, t0);
        assert!(!v.unsaved(), "a node known already changes nothing");
        let mut again = verdicts(t0);
        again.restore(v.kept());
        let wait = again.settings.takeover_wait();
        assert_eq!(
            again.judge(arc(7, 9), None, t0 + wait),
            Verdict::Dead { others: 1 },
            "8 is judged with 7"
        );
        again.saved();
        again.deregistered(Position(5));
        assert!(!again.unsaved(), "an unknown node leaving changes nothing");
        again.heartbeat(Position(5), 0, t0 + wait);
        again.saved();
        again.deregistered(Position(5));
        assert!(again.unsaved(), "a node forgotten is kept forgotten");
    }

    #[test]
    fn a_node_that_left_is_forgotten() {
        let t0 = Instant::now();
        let mut v = verdicts(t0);
        let wait = v.settings.takeover_wait();
        v.heartbeat(Position(8), 0, t0 + wait);
        v.deregistered(Position(8));
        assert_eq!(
            v.judge(arc(7, 9), None, t0 + wait),
            Verdict::Dead { others: 0 },
            "8 no longer holds the verdict back, nor counts"
        );
        // A node judged dead keeps its count when a later process with its
        // ID leaves: the earlier one may live on without having heard.
        assert_eq!(v.count_of(Position(7)), 1);
        v.heartbeat(Position(7), 1, t0 + 2 * wait);
        v.deregistered(Position(7));
        assert_eq!(v.heartbeat(Position(7), 0, t0 + 2 * wait), Root::Dead(1));
    }
}
