//! Calls of a peer in wire form, for the protocol code that makes them: a
//! probe (`GetNodeInfo`, asking for a lease or not), a ring walk's step
//! (`GetNodeInfo`), and anti-entropy's: an
//! arc's digest (`DigestRange`), every entry of an arc (`ReadRange`, checked
//! and bounded), and entries pushed to it (`Replicate`, in batches). The
//! decisions are the failure detector's, the leases' and `repair::ArcSync`'s;
//! here only the messages.

use super::entries::{batches, entry_from_wire, wire_size};
use super::peers::Peers;
use crate::lease;
use crate::node::NodeSummary;
use crate::node::error::NodeError;
use crate::node::query::Limits;
use crate::proto::dht;
use crate::ring::{Arc, Member, Position};
use crate::store::{Bucket, Entry};
use std::time::Duration;
use tonic::Status;

impl Peers {
    /// `peer`'s summary of itself (`GetNodeInfo`) within `within`, asking
    /// it for a lease on the arc of the node at `lease_for` if given: the
    /// summary (`None` if it lacks a neighbour) and what the answer said of
    /// the lease.
    pub(in crate::node) async fn node_info(
        &self,
        peer: &Member,
        within: Duration,
        lease_for: Option<Position>,
    ) -> Result<(Option<NodeSummary>, Option<lease::Answer>), NodeError> {
        let mut request = tonic::Request::new(());
        if let Some(id) = lease_for {
            super::wire::ask_lease(request.metadata_mut(), id);
        }
        let response = (self.call_within(peer, within, |mut c| async move {
            c.get_node_info(request).await.map(tonic::Response::new)
        }))
        .await?;
        let lease = lease::Answer::read_metadata(response.metadata());
        Ok((NodeSummary::try_from(response.into_inner()).ok(), lease))
    }

    /// The summary `at` gives of itself (`GetNodeInfo`) for a ring walk: one
    /// that lacks a neighbour fails the walk (`RingWalk`), where a probe
    /// ([`Peers::node_info`]) counts it as no answer.
    pub(in crate::node) async fn summary(&self, at: &Member) -> Result<NodeSummary, NodeError> {
        let info = (self.call(at, |mut c| async move { c.get_node_info(()).await })).await?;
        NodeSummary::try_from(info).map_err(NodeError::RingWalk)
    }

    /// `owner`'s digest of `arc` in `buckets` buckets (`DigestRange`).
    pub(in crate::node) async fn digest_range(
        &self,
        owner: &Member,
        arc: Arc,
        buckets: usize,
    ) -> Result<Vec<Bucket>, NodeError> {
        let request = dht::DigestRequest {
            start: arc.start.0,
            end: arc.end.0,
            buckets: buckets as u32,
        };
        let reply =
            (self.call(owner, |mut c| async move { c.digest_range(request).await })).await?;
        Ok(reply.buckets.into_iter().map(Bucket::from).collect())
    }

    /// Every entry `peer` holds in `arc` (`ReadRange`), each checked against
    /// `limits`, and only those in `arc`: a future that borrows nothing, so
    /// it can also be spawned. An answer over `max_bytes` (everything the
    /// peer sent counts) is refused with `RESOURCE_EXHAUSTED`, so a peer
    /// cannot fill this node's memory; the request timeout bounds how long
    /// it may take.
    pub(in crate::node) fn read_range(
        &self,
        peer: &Member,
        arc: Arc,
        limits: Limits,
        max_bytes: usize,
    ) -> impl std::future::Future<Output = Result<Vec<Entry>, NodeError>> + Send + 'static {
        let request = dht::RangeRequest {
            start: arc.start.0,
            end: arc.end.0,
        };
        self.call_detached(peer, move |mut c| async move {
            let mut stream = c.read_range(request).await?.into_inner();
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            while let Some(e) = stream.message().await? {
                let entry = entry_from_wire(e, &limits)?;
                bytes = bytes.saturating_add(wire_size(&entry));
                if bytes > max_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "a ReadRange answer for [{}, {}) ran over {max_bytes} bytes, the most this node holds from one stream (--max-peer-stream-mb)",
                        arc.start, arc.end
                    )));
                }
                if arc.contains(entry.position) {
                    entries.push(entry);
                }
            }
            Ok(tonic::Response::new(entries))
        })
    }

    /// Sends `entries` to `peer` with `Replicate`, in messages of at most
    /// `count` entries and `budget` bytes.
    pub(in crate::node) async fn give(
        &self,
        peer: &Member,
        entries: Vec<Entry>,
        budget: usize,
        count: usize,
    ) -> Result<(), NodeError> {
        for batch in batches(entries, budget, count) {
            let request = dht::ReplicateRequest { entries: batch };
            (self.call(peer, |mut c| async move { c.replicate(request).await })).await?;
        }
        Ok(())
    }
}
