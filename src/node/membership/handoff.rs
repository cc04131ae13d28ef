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
//! - The header is checked before any entry is read: a join hand-off goes only
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
//! [`super::intake`], with no I/O; this module reads and writes the stream
//! and carries the decisions out.

use super::intake::{Intake, IntakeError, Taken, leave_refused};
use crate::node::error::NodeError;
use crate::node::rpc::entries::{batches, entry_from_wire};
use crate::node::view::NodeState;
use crate::node::{Node, NodeSummary};
use crate::proto::dht;
use crate::ring::Member;
use crate::store::Entry;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

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

    /// The hand-off's first message: the header, and no entries.
    pub fn first_chunk(&self) -> dht::HandOffChunk {
        dht::HandOffChunk {
            from: Some((&self.from).into()),
            neighbors: Some(dht::PreviousNeighbors {
                prev: self.prev.as_ref().map(Into::into),
                next: Some((&self.next).into()),
            }),
            entries: Vec::new(),
            merge: self.merge,
            backups: self.backups.iter().map(Into::into).collect(),
            predecessors: self.predecessors.iter().map(Into::into).collect(),
            last: false,
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
        let mut chunks = vec![header.first_chunk()];
        let budget = self.config.limits.max_entry_bytes();
        chunks.extend(
            batches(entries, budget, usize::MAX)
                .into_iter()
                .map(|entries| dht::HandOffChunk {
                    entries,
                    ..Default::default()
                }),
        );
        if let Some(final_chunk) = chunks.last_mut() {
            final_chunk.last = true;
        }
        // Big arcs take longer: allow the request timeout plus 8 MB/s.
        let bytes: usize = chunks
            .iter()
            .flat_map(|c| &c.entries)
            .map(|e| e.value.len() + e.raw_key.as_ref().map_or(0, Vec::len))
            .sum();
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
                Some(info) if info.state == NodeState::Serving && took(&info) => Ok(0),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// The receiving side of a hand-off. A joining node takes the arc its
    /// predecessor offers; a serving node takes the whole arc of its next
    /// neighbour, which is leaving, or merges entries of its own arc. What the
    /// sender may make it hold is bounded as the module docs say.
    pub(in crate::node) async fn accept_handoff(
        &self,
        mut chunks: impl Stream<Item = Result<dht::HandOffChunk, Status>> + Unpin,
    ) -> Result<dht::HandOffAck, Status> {
        let idle = self.config.timeouts.request;
        let mut chunk = next_chunk(&mut chunks, idle)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty hand-off stream"))?;
        let header = header(&chunk)?;
        // What to refuse, hold or store, and what the stream takes: the
        // decisions are `Intake`'s, this loop carries them out.
        let mut intake = Intake::offer(header, &self.view(), self.config.max_peer_stream_bytes)?;
        loop {
            let checked = std::mem::take(&mut chunk.entries)
                .into_iter()
                .map(|e| entry_from_wire(e, &self.config.limits))
                .collect::<Result<Vec<Entry>, Status>>()?;
            let store_now = intake.message(checked, chunk.last)?;
            if !store_now.is_empty() {
                self.store_while_joining(store_now)?;
            }
            match next_chunk(&mut chunks, idle).await? {
                Some(next) => chunk = next,
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
                    .map_err(|e| Status::internal(e.to_string()))?;
                self.take_joined_arc(header).await?
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
            .map_err(|e| Status::internal(e.to_string()))?;
        self.metrics.handoff(false, kind, count);
        Ok(dht::HandOffAck { entries: count })
    }

    /// Stores part of the arc a joiner is being handed, while it is joining.
    fn store_while_joining(&self, entries: Vec<Entry>) -> Result<(), Status> {
        // Under the view lock: the node cannot become serving half-way.
        let view = self.view();
        if view.state != NodeState::Joining {
            return Err(Status::failed_precondition(
                "this node is already part of the ring",
            ));
        }
        self.store
            .insert_all(entries)
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// A joiner, its new arc stored as it came, links in and starts serving.
    async fn take_joined_arc(&self, header: HandOffHeader) -> Result<(), Status> {
        let HandOffHeader {
            prev,
            next,
            backups,
            predecessors,
            ..
        } = header;
        let prev = prev.ok_or_else(|| Status::invalid_argument("a join hand-off names no prev"))?;
        let length = self.config.maintenance.successors;
        self.update_view(|view| {
            if view.state != NodeState::Joining {
                return Err(Status::from(IntakeError::AlreadyInRing));
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
    ) -> Result<(), Status> {
        let _membership = self.membership.lock().await;
        self.update_view(|view| {
            if let Some(refusal) = leave_refused(view, &leaver) {
                return Err(Status::from(refusal));
            }
            self.store
                .insert_all(entries)
                .map_err(|e| Status::internal(e.to_string()))?;
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
    fn take_merged_entries(&self, from: &Member, entries: Vec<Entry>) -> Result<(), Status> {
        let taken = self.update_view(|view| {
            if view.state != NodeState::Serving {
                return Err(Status::failed_precondition("this node is not serving"));
            }
            let arc = view.arc();
            let fenced = view.handoff;
            let mine = |p| arc.contains(p) && !fenced.is_some_and(|f| f.contains(p));
            let ours: Vec<Entry> = entries.into_iter().filter(|e| mine(e.position)).collect();
            let taken = ours.len();
            self.store
                .insert_all(ours)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(taken)
        })?;
        tracing::warn!(from = %from.addr, taken, "merged entries from a node that had taken over this node's arc");
        Ok(())
    }
}

/// The next message of a hand-off, if it comes within `idle`.
async fn next_chunk(
    chunks: &mut (impl Stream<Item = Result<dht::HandOffChunk, Status>> + Unpin),
    idle: Duration,
) -> Result<Option<dht::HandOffChunk>, Status> {
    match tokio::time::timeout(idle, chunks.next()).await {
        Ok(next) => next.transpose(),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the hand-off's next message did not come within {} ms (--request-timeout-ms); nothing was taken over",
            idle.as_millis()
        ))),
    }
}

impl From<IntakeError> for Status {
    fn from(e: IntakeError) -> Self {
        let message = e.to_string();
        match e {
            IntakeError::FromItself => Status::invalid_argument(message),
            IntakeError::AlreadyInRing
            | IntakeError::NotServing
            | IntakeError::NotMyNext { .. } => Status::failed_precondition(message),
            IntakeError::TooBig(_) => Status::resource_exhausted(message),
            IntakeError::CutShort => Status::aborted(message),
        }
    }
}

pub(in crate::node) fn header(first: &dht::HandOffChunk) -> Result<HandOffHeader, Status> {
    let neighbors = first.neighbors.as_ref().ok_or_else(|| {
        Status::invalid_argument("the first hand-off message names no neighbours")
    })?;
    let next = neighbors.next.clone().map(Member::from).ok_or_else(|| {
        Status::invalid_argument("the first hand-off message names no next neighbour")
    })?;
    let from = first
        .from
        .clone()
        .map(Member::from)
        .or_else(|| neighbors.prev.clone().map(Member::from))
        .ok_or_else(|| Status::invalid_argument("the first hand-off message names no sender"))?;
    Ok(HandOffHeader {
        from,
        prev: neighbors.prev.clone().map(Member::from),
        next,
        merge: first.merge,
        backups: first.backups.iter().cloned().map(Member::from).collect(),
        predecessors: first
            .predecessors
            .iter()
            .cloned()
            .map(Member::from)
            .collect(),
    })
}
