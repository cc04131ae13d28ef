//! A hand-off's wire form. The sender's side: its header as the first
//! `HandOffChunk`, then its entries in chunks that fit the receiver's limits.
//! The receiver's side: the incoming chunks read into checked [`Part`]s for
//! [`Node::accept_handoff`], and its [`HandOffError`]s as statuses. The
//! decisions are `membership::intake`'s and the carrying out
//! `membership::handoff`'s; only the conversions are here.

use super::entries::{batches, entries_from_wire};
use crate::node::Node;
use crate::node::membership::handoff::{HandOffError, HandOffHeader, Part};
use crate::node::membership::intake::IntakeError;
use crate::node::query::Limits;
use crate::proto::dht;
use crate::ring::Member;
use crate::store::Entry;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

impl HandOffHeader {
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

/// `entries` as messages of at most `budget` bytes each (at least one entry
/// each), none of them marked last.
pub(in crate::node) fn entry_chunks(
    entries: Vec<Entry>,
    budget: usize,
) -> impl Iterator<Item = dht::HandOffChunk> {
    (batches(entries, budget, usize::MAX).into_iter()).map(|entries| dht::HandOffChunk {
        entries,
        ..Default::default()
    })
}

/// A whole hand-off in one go: `header`'s first message, `entries` in
/// messages of at most `budget` bytes, the final one marked last.
pub(in crate::node) fn chunks(
    header: &HandOffHeader,
    entries: Vec<Entry>,
    budget: usize,
) -> Vec<dht::HandOffChunk> {
    let mut chunks: Vec<_> = std::iter::once(header.first_chunk())
        .chain(entry_chunks(entries, budget))
        .collect();
    if let Some(final_chunk) = chunks.last_mut() {
        final_chunk.last = true;
    }
    chunks
}

/// The last message of a hand-off streamed in steps (`migration`): no
/// entries, marked last.
pub(in crate::node) fn last_chunk() -> dht::HandOffChunk {
    dht::HandOffChunk {
        last: true,
        ..Default::default()
    }
}

/// Serves a `HandOff` call: the chunks read as [`Part`]s (the first one's
/// header, every entry checked against `limits`), taken by
/// [`Node::accept_handoff`], and its answer or error in wire form.
pub(in crate::node) async fn receive(
    node: &Node,
    chunks: impl Stream<Item = Result<dht::HandOffChunk, Status>> + Unpin,
) -> Result<dht::HandOffAck, Status> {
    let parts = parts(chunks, node.config.limits);
    match node.accept_handoff(parts).await {
        Ok(entries) => Ok(dht::HandOffAck { entries }),
        Err(e) => Err(e.into()),
    }
}

/// The chunks as [`Part`]s: a chunk that does not convert is an error in
/// its place in the stream.
fn parts(
    chunks: impl Stream<Item = Result<dht::HandOffChunk, Status>> + Unpin,
    limits: Limits,
) -> impl Stream<Item = Result<Part, HandOffError>> + Unpin {
    let mut first = true;
    chunks.map(move |chunk| {
        let chunk = chunk.map_err(HandOffError::Broken)?;
        let header = match std::mem::take(&mut first) {
            true => Some(header(&chunk)?),
            false => None,
        };
        let entries = entries_from_wire(chunk.entries, &limits)
            .map_err(|s| HandOffError::Malformed(s.message().to_string()))?;
        Ok(Part {
            header,
            entries,
            last: chunk.last,
        })
    })
}

/// The header of a hand-off's first message. An older sender names itself
/// only as `prev` (a join's predecessor).
pub(in crate::node) fn header(first: &dht::HandOffChunk) -> Result<HandOffHeader, HandOffError> {
    let malformed =
        |what: &str| HandOffError::Malformed(format!("the first hand-off message {what}"));
    let neighbors = (first.neighbors.as_ref()).ok_or_else(|| malformed("names no neighbours"))?;
    let next = (neighbors.next.clone().map(Member::from))
        .ok_or_else(|| malformed("names no next neighbour"))?;
    let from = (first.from.clone().map(Member::from))
        .or_else(|| neighbors.prev.clone().map(Member::from))
        .ok_or_else(|| malformed("names no sender"))?;
    let members = |nodes: &[crate::proto::registry::Node]| {
        nodes.iter().cloned().map(Member::from).collect::<Vec<_>>()
    };
    Ok(HandOffHeader {
        from,
        prev: neighbors.prev.clone().map(Member::from),
        next,
        merge: first.merge,
        backups: members(&first.backups),
        predecessors: members(&first.predecessors),
    })
}

impl From<HandOffError> for Status {
    fn from(e: HandOffError) -> Self {
        let message = e.to_string();
        match e {
            HandOffError::Empty | HandOffError::Malformed(_) => Status::invalid_argument(message),
            HandOffError::Refused(refusal) => refusal.into(),
            HandOffError::Stalled(_) => Status::deadline_exceeded(message),
            HandOffError::Store(_) => Status::internal(message),
            HandOffError::Broken(status) => status,
        }
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
