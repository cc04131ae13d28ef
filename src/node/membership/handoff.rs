//! Moving an arc's entries between nodes with `HandOff`, in both directions:
//! a predecessor hands part of its arc to a joiner, and a leaving node hands its
//! whole arc to its predecessor. The receiver acknowledges only once the entries
//! are stored and its view changed, so the sender knows when it may drop them.
//!
//! # What a sender may make the receiver hold
//!
//! The stream comes from another machine, so the receiver bounds what it costs:
//!
//! - Each message is at most `Limits::max_message_bytes` (the transport refuses
//!   bigger ones unread).
//! - The header is checked before any entry is taken: a join hand-off goes only
//!   to a joining node, a leave hand-off only from the receiver's `next`, a
//!   merge only to a serving node, and never from the receiver itself. An offer
//!   the receiver would refuse at the end is refused at once.
//! - A joiner stores its arc as it arrives (it serves nothing yet), so it holds
//!   one message at a time. A leave or merge changes a serving node's arc and is
//!   taken in one step at the end, so its entries are held in memory until the
//!   last message: at most `NodeConfig::max_peer_stream_bytes` of them
//!   (`--max-peer-stream-mb`, counted as on the wire). A stream over that is
//!   refused with `RESOURCE_EXHAUSTED` and nothing is taken; holding entries on
//!   disk instead would let a refused or cut-short stream change the store.
//! - Each next message must come within the request timeout
//!   (`--request-timeout-ms`, as the sender allows itself per message); a
//!   stalled stream is dropped with `DEADLINE_EXCEEDED`, nothing taken over.
//!
//! What to refuse, hold or store, and what a stream takes, is decided by
//! [`super::intake`], with no I/O; this module carries the decisions out,
//! over messages already read off the wire (`rpc::hand_off` converts them,
//! and its errors).

use super::intake::{Intake, IntakeError, Taken, leave_refused};
use crate::node::error::NodeError;
use crate::node::rpc::hand_off::chunks;
use crate::node::view::NodeState;
use crate::node::{Node, NodeSummary};
use crate::ring::Member;
use crate::store::Entry;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};

/// A hand-off message as the receiver takes it: the header (the first
/// message's only), its entries, checked, and whether it is the last.
#[derive(Debug)]
pub(in crate::node) struct Part {
    /// The header, in the first message.
    pub header: Option<HandOffHeader>,
    /// The message's entries.
    pub entries: Vec<Entry>,
    /// Whether the sender marked it as the last.
    pub last: bool,
}

/// Why a hand-off was not taken; nothing of it was taken over.
#[derive(Debug, thiserror::Error)]
pub(in crate::node) enum HandOffError {
    /// The stream ended before its first message.
    #[error("empty hand-off stream")]
    Empty,
    /// A message says less than it must (the first one's neighbours or
    /// sender, a join's `prev`), or carries an invalid entry.
    #[error("{0}")]
    Malformed(String),
    /// The receiver refuses the offer ([`Intake`]'s decision).
    #[error(transparent)]
    Refused(#[from] IntakeError),
    /// The next message did not come within the request timeout.
    #[error(
        "the hand-off's next message did not come within {} ms (--request-timeout-ms); nothing was taken over",
        .0.as_millis()
    )]
    Stalled(Duration),
    /// The local store failed.
    #[error("{0}")]
    Store(String),
    /// The stream itself failed, as the transport said (passed back as it
    /// came).
    #[error("{0}")]
    Broken(tonic::Status),
}

impl HandOffError {
    fn store(e: impl std::fmt::Display) -> Self {
        Self::Store(e.to_string())
    }
}

/// What the first message of a hand-off says.
#[derive(Debug, Clone)]
pub(in crate::node) struct HandOffHeader {
    /// The sender.
    pub from: Member,
    /// The receiver's new previous neighbour (joins only).
    pub prev: Option<Member>,
    /// The receiver's new next neighbour.
    pub next: Member,
    /// A repair merge: the receiver keeps its entries and takes the missing ones.
    pub merge: bool,
    /// The nodes after `next`: the receiver's backups (joins).
    pub backups: Vec<Member>,
    /// The nodes before `prev`: the receiver's predecessors (joins).
    pub predecessors: Vec<Member>,
}

impl HandOffHeader {
    /// A leaver `from`'s hand-off of its whole arc to its `prev`, whose `next`
    /// becomes `next` (the leaver's).
    pub fn leave(from: Member, next: Member) -> Self {
        Self::between_neighbours(from, next, false)
    }

    /// A repair merge from `from` into a closer node it found before its
    /// `next`: the receiver keeps its own entries and takes those it lacks.
    pub fn merge(from: Member, next: Member) -> Self {
        Self::between_neighbours(from, next, true)
    }

    fn between_neighbours(from: Member, next: Member, merge: bool) -> Self {
        Self {
            from,
            prev: None,
            next,
            merge,
            backups: Vec::new(),
            predecessors: Vec::new(),
        }
    }
}

impl Node {
    /// Streams `entries` to `to` after a header naming the sender and `to`'s new
    /// neighbours. Messages stay under one largest valid entry in size (at least
    /// one entry each), so every message fits the receiver's decoding limit.
    pub(in crate::node) async fn hand_off(
        &self,
        to: &Member,
        header: HandOffHeader,
        entries: Vec<Entry>,
    ) -> Result<u64, NodeError> {
        // Big arcs take longer: allow the request timeout plus 8 MB/s.
        let bytes: usize = (entries.iter())
            .map(|e| e.value.as_ref().map_or(0, Vec::len) + e.key.len())
            .sum();
        let chunks = chunks(&header, entries, self.config.limits.max_entry_bytes());
        let limit = self.config.timeouts.request + Duration::from_secs_f64(bytes as f64 / 8e6);
        let ack = self
            .peers
            .call_within(to, limit, |mut c| async move {
                c.hand_off(tokio_stream::iter(chunks)).await
            })
            .await?;
        Ok(ack.entries)
    }

    /// A hand-off that timed out may still have been applied (only its
    /// acknowledgement was lost). `took` tells, from a probe of the receiver `to`
    /// (which must be serving), whether it was; then the hand-off counts as done.
    pub(in crate::node) async fn settle_timeout(
        &self,
        result: Result<u64, NodeError>,
        to: &Member,
        took: impl FnOnce(&NodeSummary) -> bool,
    ) -> Result<u64, NodeError> {
        match result {
            Err(e @ NodeError::Timeout { .. }) => match self.probe(to).await {
                Some(info) if info.state == Some(NodeState::Serving) && took(&info) => Ok(0),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// The receiving side of a hand-off. A joining node takes the arc its
    /// predecessor offers; a serving node takes the whole arc of its next
    /// neighbour, which is leaving, or merges entries of its own arc. What the
    /// sender may make it hold is bounded as the module docs say.
    /// Returns how many entries it took.
    pub(in crate::node) async fn accept_handoff(
        &self,
        mut parts: impl Stream<Item = Result<Part, HandOffError>> + Unpin,
    ) -> Result<u64, HandOffError> {
        let idle = self.config.timeouts.request;
        let mut part = (next_part(&mut parts, idle).await?).ok_or(HandOffError::Empty)?;
        // `rpc::hand_off` reads the header into the first part; one without
        // is refused rather than assumed.
        let header = (part.header.take()).ok_or_else(|| {
            HandOffError::Malformed("the hand-off's first message carries no header".into())
        })?;
        // What to refuse, hold or store, and what the stream takes: the
        // decisions are `Intake`'s, this loop carries them out.
        let mut intake = Intake::offer(header, &self.view(), self.config.max_peer_stream_bytes)?;
        loop {
            let store_now = intake.message(std::mem::take(&mut part.entries), part.last)?;
            if !store_now.is_empty() {
                self.store_while_joining(store_now)?;
            }
            match next_part(&mut parts, idle).await? {
                Some(next) => part = next,
                None => break,
            }
        }
        let (taken, count) = intake.end()?;
        let kind = taken.kind();
        match taken {
            Taken::Merge { from, entries } => self.take_merged_entries(&from, entries)?,
            Taken::Join(header) => {
                // A joiner makes what it stored durable before it serves: if
                // that fails, it must not serve an arc its predecessor keeps
                // (the predecessor takes the failure as a failed hand-off).
                self.store
                    .durable_point()
                    .await
                    .map_err(HandOffError::store)?;
                self.take_joined_arc(header)?
            }
            Taken::Leave {
                leaver,
                next,
                entries,
            } => self.take_leaving_arc(leaver, next, entries).await?,
        }
        // The sender drops the entries on our acknowledgement: make them durable
        // first.
        self.store
            .durable_point()
            .await
            .map_err(HandOffError::store)?;
        self.metrics.handoff(false, kind, count);
        Ok(count)
    }

    /// Stores part of the arc a joiner is being handed, while it is joining.
    fn store_while_joining(&self, entries: Vec<Entry>) -> Result<(), HandOffError> {
        // Under the view lock: the node cannot become serving half-way.
        let view = self.view();
        if view.state != NodeState::Joining {
            return Err(HandOffError::Refused(IntakeError::AlreadyInRing));
        }
        self.store.insert_all(entries).map_err(HandOffError::store)
    }

    /// A joiner, its new arc stored as it came, links in and starts serving.
    fn take_joined_arc(&self, header: HandOffHeader) -> Result<(), HandOffError> {
        let HandOffHeader {
            prev,
            next,
            backups,
            predecessors,
            ..
        } = header;
        let prev =
            prev.ok_or_else(|| HandOffError::Malformed("a join hand-off names no prev".into()))?;
        let length = self.config.maintenance.successors;
        self.update_view(|view| {
            if view.state != NodeState::Joining {
                return Err(HandOffError::Refused(IntakeError::AlreadyInRing));
            }
            view.prev = prev;
            view.next = next;
            view.adopt_successors(&backups, length);
            view.adopt_predecessors(&predecessors, length);
            view.state = NodeState::Serving;
            Ok(())
        })?;
        Ok(())
    }

    /// A predecessor takes the arc of its leaving next neighbour: the arc is now
    /// its own, up to the leaver's next.
    async fn take_leaving_arc(
        &self,
        leaver: Member,
        next: Member,
        entries: Vec<Entry>,
    ) -> Result<(), HandOffError> {
        let _membership = self.membership.lock().await;
        self.update_view(|view| {
            if let Some(refusal) = leave_refused(view, &leaver) {
                return Err(HandOffError::Refused(refusal));
            }
            self.store
                .insert_all(entries)
                .map_err(HandOffError::store)?;
            view.backups
                .retain(|m| m.id != leaver.id && m.id != next.id);
            view.next = if next.id == view.me.id {
                view.me.clone()
            } else {
                next
            };
            if view.alone() {
                view.prev = view.me.clone();
                view.backups.clear();
            }
            Ok(())
        })?;
        tracing::info!(leaver = %leaver.addr, "took over the arc of a leaving node");
        Ok(())
    }
}

impl Node {
    /// A repair merge: entries of this node's own arc that `from` held because it
    /// had taken the arc over without knowing this node was there. Merged by
    /// version: the newer copy of each key wins.
    fn take_merged_entries(&self, from: &Member, entries: Vec<Entry>) -> Result<(), HandOffError> {
        let taken = self.update_view(|view| {
            if view.state != NodeState::Serving {
                return Err(HandOffError::Refused(IntakeError::NotServing));
            }
            let arc = view.arc();
            let fenced = view.handoff;
            let mine = |p| arc.contains(p) && !fenced.is_some_and(|f| f.contains(p));
            let ours: Vec<Entry> = entries.into_iter().filter(|e| mine(e.position)).collect();
            let taken = ours.len();
            self.store.insert_all(ours).map_err(HandOffError::store)?;
            Ok(taken)
        })?;
        tracing::warn!(from = %from.addr, taken, "merged entries from a node that had taken over this node's arc");
        Ok(())
    }
}

/// The next message of a hand-off, if it comes within `idle`.
async fn next_part(
    parts: &mut (impl Stream<Item = Result<Part, HandOffError>> + Unpin),
    idle: Duration,
) -> Result<Option<Part>, HandOffError> {
    match tokio::time::timeout(idle, parts.next()).await {
        Ok(next) => next.transpose(),
        Err(_) => Err(HandOffError::Stalled(idle)),
    }
}
