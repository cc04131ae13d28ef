//! Anti-entropy: every node keeps its replicas of its successors' arcs in step
//! with their owners, and that is also how keys get back to full strength after
//! a join, a leave or a failure.
//!
//! Each `anti_entropy_interval`, a serving node takes each arc it replicates (the
//! arcs of its `factor - 1` nearest successors, from its successor list) and
//! runs one exchange of it with its owner, whose steps
//! [`ArcSync`](crate::repair::ArcSync) decides (no I/O there):
//!
//! 1. it computes the arc's digest (equal buckets of positions, see
//!    [`crate::store::bucket_count`]) and asks the owner for its digest
//!    (`DigestRange`);
//! 2. for each run of buckets whose digests differ, it reads the owner's entries
//!    there (`ReadRange`) and reconciles them with its own: it merges what the
//!    owner has newer, and sends the owner (`Replicate`) what it has newer;
//! 3. it paces the entries it moves to `repair_rate` a second.
//!
//! The replica drives, so a node that was down catches up by itself once it is
//! back, and after a failure the new replicas of the inherited arc pull it. An
//! owner that lacks a write its replica has (its predecessor, as owner, sent it
//! out and died before acknowledging, or a write quorum below the factor) gets it
//! pushed back. Both directions merge newest-wins, so a round can only bring
//! copies closer together.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::rpc::entries::{batches, entry_from_wire, wire_size};
use crate::node::view::NodeState;
use crate::proto::dht;
use crate::repair::{ArcSync, Exchanged, Pacer, Rounds, Step, StraySweep};
use crate::ring::{Arc, Member};
use crate::store::{Bucket, Entry};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tonic::Status;

/// Entries per `Replicate` message sent by anti-entropy (messages also stay
/// under the peer's size limit).
const BATCH: usize = 256;

/// Waits until `items` more may go by `pacer`, on Tokio's clock (which a
/// simulation runs in virtual time).
async fn pace(pacer: &mut Pacer, items: usize) {
    let wait = pacer.book(items, tokio::time::Instant::now().into_std());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

impl Node {
    /// Runs anti-entropy rounds until `stop` turns true, as [`Rounds`] plans
    /// them.
    pub(in crate::node) async fn anti_entropy(
        self: std::sync::Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) {
        let settings = self.config.replication;
        let mut tick = tokio::time::interval(settings.anti_entropy_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pacer = Pacer::new(settings.repair_rate, tokio::time::Instant::now().into_std());
        let mut rounds = Rounds::default();
        let mut strays = StraySweep::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let serving = self.view_snapshot().state == NodeState::Serving;
            let Some(round) = rounds.tick(serving, settings.factor > 1) else {
                continue;
            };
            if round.catch_up
                && let Err(e) = self.catch_up(&mut pacer).await
            {
                tracing::debug!(error = %e, "catching up with the replicas failed");
            }
            if round.sweep_strays
                && let Err(e) = self.sweep_strays(&mut strays).await
            {
                tracing::debug!(error = %e, "stray sweep failed");
            }
            for (owner, arc) in self.view_snapshot().replica_arcs(settings.factor) {
                match self.sync_arc(&owner, arc, &mut pacer).await {
                    Ok(x) if x != Exchanged::default() => {
                        self.metrics.repaired(x.taken as u64, x.given as u64);
                        tracing::info!(
                            owner = %owner.addr, taken = x.taken, given = x.given,
                            "anti-entropy repaired a replica arc"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(owner = %owner.addr, error = %e, "anti-entropy round failed")
                    }
                }
            }
        }
    }

    /// One anti-entropy exchange of `arc` with its `owner`: carries out the
    /// steps of an [`ArcSync`].
    pub(in crate::node) async fn sync_arc(
        &self,
        owner: &Member,
        arc: Arc,
        pacer: &mut Pacer,
    ) -> Result<Exchanged, NodeError> {
        let mut sync = ArcSync::new(arc);
        let mine = self.store.digest(arc, sync.buckets())?;
        let request = dht::DigestRequest {
            start: arc.start.0,
            end: arc.end.0,
            buckets: sync.buckets() as u32,
        };
        let theirs: Vec<Bucket> = self
            .peers
            .call(owner, |mut c| async move { c.digest_range(request).await })
            .await?
            .buckets
            .into_iter()
            .map(Bucket::from)
            .collect();
        let mut step = sync
            .on_digests(&mine, &theirs)
            .map_err(|e| NodeError::Peer(Status::internal(format!("{}: {e}", owner.addr))))?;
        loop {
            match step {
                Step::Read(part) => {
                    let theirs = self.read_range(owner, part).await?;
                    let (found, next) = sync.on_read(self.store.entries_in(part)?, theirs);
                    pace(pacer, found.take.len() + found.give.len()).await;
                    if !found.take.is_empty() {
                        self.store.insert_all(found.take)?;
                    }
                    self.give(owner, found.give).await?;
                    step = next;
                }
                Step::Done(exchanged) => return Ok(exchanged),
            }
        }
    }

    /// Every entry `peer` holds in `arc` (`ReadRange`), checked, and only those
    /// in `arc`: a future that borrows nothing, so it can also be spawned. An
    /// answer over `max_peer_stream_bytes` (everything the peer sent counts) is
    /// refused with `RESOURCE_EXHAUSTED`, so a peer cannot fill this node's
    /// memory; the request timeout bounds how long it may take.
    pub(in crate::node) fn read_range(
        &self,
        peer: &Member,
        arc: Arc,
    ) -> impl std::future::Future<Output = Result<Vec<Entry>, NodeError>> + Send + 'static {
        let limits = self.config.limits;
        let max_bytes = self.config.max_peer_stream_bytes;
        let request = dht::RangeRequest {
            start: arc.start.0,
            end: arc.end.0,
        };
        self.peers.call_detached(peer, move |mut c| async move {
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

    /// Sends `entries` to `peer` with `Replicate`, in batches.
    pub(in crate::node) async fn give(
        &self,
        peer: &Member,
        entries: Vec<Entry>,
    ) -> Result<(), NodeError> {
        let budget = self.config.limits.max_entry_bytes();
        for batch in batches(entries, budget, BATCH) {
            let request = dht::ReplicateRequest { entries: batch };
            self.peers
                .call(peer, |mut c| async move { c.replicate(request).await })
                .await?;
        }
        Ok(())
    }
}
