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
use crate::node::view::NodeState;
use crate::repair::{ArcSync, Exchanged, Pacer, Rounds, Step, StraySweep};
use crate::ring::{Arc, Member};
use crate::store::Entry;
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
        let theirs = (self.peers)
            .digest_range(owner, arc, sync.buckets())
            .await?;
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

    /// Every entry `peer` holds in `arc`, checked, and only those in `arc`
    /// ([`Peers::read_range`](crate::node::Peers::read_range), within this
    /// node's limits and `--max-peer-stream-mb`): a future that borrows
    /// nothing, so it can also be spawned.
    pub(in crate::node) fn read_range(
        &self,
        peer: &Member,
        arc: Arc,
    ) -> impl std::future::Future<Output = Result<Vec<Entry>, NodeError>> + Send + 'static {
        let (limits, max_bytes) = (self.config.limits, self.config.max_peer_stream_bytes);
        self.peers.read_range(peer, arc, limits, max_bytes)
    }

    /// Sends `entries` to `peer` with `Replicate`, in batches.
    pub(in crate::node) async fn give(
        &self,
        peer: &Member,
        entries: Vec<Entry>,
    ) -> Result<(), NodeError> {
        let budget = self.config.limits.max_entry_bytes();
        self.peers.give(peer, entries, budget, BATCH).await
    }
}
