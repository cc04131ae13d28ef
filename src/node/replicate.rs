//! Replication of writes: the owner of a key applies a write, then sends the
//! versioned entry to the replicas of its arc (its nearest predecessors, who
//! inherit the arc if it dies) and acknowledges once the write quorum of copies
//! is durable.
//!
//! Why predecessors: when an owner fails, its predecessor's arc grows over the
//! dead node's arc (see `maintain`). With the predecessors as replicas, the node
//! that inherits an arc already holds every acknowledged write in it, so reads
//! stay at the owner and nothing has to move before the arc is served again.
//!
//! Writes to one replica travel in batches: each replica has a link, a queue
//! drained by one task that sends whatever has queued as one `Replicate` while
//! the previous one is in flight (the replica then merges and syncs the batch
//! together: group commit across the wire). Concurrent writes thus cost one
//! message per replica per round trip, not one each.
//!
//! A replica that cannot be reached is waited for: the write is retried on the
//! replica set as failure detection repairs it, until the request deadline. So
//! with the default quorum (every copy), an acknowledged write is durable on
//! every live replica the owner knows. Entries carry versions and replicas merge
//! them newest-wins, so the order replica writes arrive in does not matter.

use super::Node;
use super::entries::entry_from_wire;
use super::error::NodeError;
use super::peers::settle;
use super::view::NodeState;
use crate::proto::dht::{self, dht_node_client::DhtNodeClient};
use crate::ring::{Member, Position};
use crate::store::Entry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

/// Writes queued for one replica before writers wait for room (with values of
/// at most 1 MiB by default, a queue holds at most a few hundred MiB).
const LINK_QUEUE: usize = 256;

/// Entries per `Replicate` batch at most.
const MAX_BATCH: usize = 512;

/// A write waiting in a replica link: the entry, and where to say how it went.
type Pending = (dht::KeyValueEntry, oneshot::Sender<Result<(), String>>);

/// The replica links of a node, by replica address.
#[derive(Debug, Default)]
pub(super) struct ReplicaLinks {
    links: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

/// Sends the writes queued on `queue` to the replica at `addr` in batches of at
/// most [`MAX_BATCH`] entries and `budget` bytes, one batch in flight at a time,
/// until every sender is gone.
async fn run_link(
    client: DhtNodeClient<Channel>,
    addr: String,
    timeout: Duration,
    budget: usize,
    mut queue: mpsc::Receiver<Pending>,
) {
    let size = |e: &dht::KeyValueEntry| e.value.len() + e.raw_key.as_ref().map_or(0, Vec::len) + 48;
    while let Some(first) = queue.recv().await {
        let mut bytes = size(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) if bytes + size(&next.0) <= budget => {
                    bytes += size(&next.0);
                    batch.push(next);
                }
                Ok(next) => {
                    // Too big for this batch: it opens the next one.
                    send_batch(&client, &addr, timeout, std::mem::take(&mut batch)).await;
                    bytes = size(&next.0);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        send_batch(&client, &addr, timeout, batch).await;
    }
}

/// Sends one batch and tells each waiting writer how it went.
async fn send_batch(
    client: &DhtNodeClient<Channel>,
    addr: &str,
    timeout: Duration,
    batch: Vec<Pending>,
) {
    let (entries, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let result = replicate_once(client, addr, timeout, entries.clone()).await;
    if let Err(e) = &result
        && e.code() == tonic::Code::InvalidArgument
        && entries.len() > 1
    {
        // The replica refused some entry (its limits differ from ours): send
        // each alone, so that only the writers of refused entries fail.
        for (entry, waiter) in entries.into_iter().zip(waiters) {
            let alone = replicate_once(client, addr, timeout, vec![entry]).await;
            let _ = waiter.send(alone.map_err(|e| e.to_string()));
        }
        return;
    }
    let result = result.map_err(|e| e.to_string());
    for waiter in waiters {
        // A writer that stopped waiting (its quorum was met) does not mind.
        let _ = waiter.send(result.clone());
    }
}

/// One `Replicate` call.
async fn replicate_once(
    client: &DhtNodeClient<Channel>,
    addr: &str,
    timeout: Duration,
    entries: Vec<dht::KeyValueEntry>,
) -> Result<(), NodeError> {
    let mut c = client.clone();
    let sent = tokio::time::timeout(timeout, c.replicate(dht::ReplicateRequest { entries })).await;
    settle(addr, timeout, sent).map(|_| ())
}

/// How many copies of each key are kept, and how they are kept in step.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationSettings {
    /// Copies of each key: the owner and `factor - 1` predecessors (fewer in a
    /// ring of fewer nodes).
    pub factor: usize,
    /// Copies that must be durable before a write is acknowledged, the owner's
    /// included; `None` means every copy (`factor`, or as many nodes as the ring
    /// has when it has fewer).
    pub write_quorum: Option<usize>,
    /// How often each node compares its replica arcs with their owners.
    pub anti_entropy_interval: Duration,
    /// At most this many entries a second move by anti-entropy, so that repair
    /// after a failure does not crowd out foreground requests.
    pub repair_rate: u32,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            factor: 3,
            write_quorum: None,
            anti_entropy_interval: Duration::from_secs(1),
            repair_rate: 20_000,
        }
    }
}

impl ReplicationSettings {
    /// How many copies a write needs, the owner's included, when the owner
    /// knows `replicas` replicas.
    pub fn copies_needed(&self, replicas: usize) -> usize {
        let all = (replicas + 1).min(self.factor.max(1));
        self.write_quorum.map_or(all, |q| q.clamp(1, all))
    }
}

impl Node {
    /// Makes a write the owner has applied durable: locally, and on enough
    /// replicas for the write quorum, retrying replicas that fail as the replica
    /// set is repaired, until `deadline`.
    pub(super) async fn replicate_write(
        &self,
        entry: Entry,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        let local = self.store.sync_point();
        if self.config.replication.factor <= 1 {
            return Ok(local.await?);
        }
        let (local, remote) = tokio::join!(local, self.send_to_replicas(entry, deadline));
        local?;
        remote
    }

    /// The link to `replica`, made on first use.
    fn link(&self, replica: &Member) -> Result<mpsc::Sender<Pending>, NodeError> {
        let mut links = self
            .replica_links
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&replica.addr).filter(|l| !l.is_closed()) {
            return Ok(link.clone());
        }
        // Replica sets change rarely; forget links to nodes no longer in them.
        let current = self.view().replicas(usize::MAX);
        links.retain(|addr, _| current.iter().any(|m| &m.addr == addr));
        let client = self.peers.client(&replica.addr)?;
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(
            client,
            replica.addr.clone(),
            self.config.timeouts.request,
            self.config.limits.max_entry_bytes(),
            rx,
        ));
        links.insert(replica.addr.clone(), tx.clone());
        Ok(tx)
    }

    /// Queues `entry` on the link to `replica`; resolves once the replica has
    /// it durable, or failed, or at `deadline`.
    async fn replicate_to(
        &self,
        replica: &Member,
        entry: dht::KeyValueEntry,
        deadline: Instant,
    ) -> Result<(), String> {
        let link = self.link(replica).map_err(|e| e.to_string())?;
        let (done, answer) = oneshot::channel();
        let queued_and_answered = async {
            link.send((entry, done))
                .await
                .map_err(|_| format!("the link to {} closed", replica.addr))?;
            answer
                .await
                .map_err(|_| format!("the link to {} dropped the write", replica.addr))?
        };
        tokio::time::timeout_at(deadline, queued_and_answered)
            .await
            .unwrap_or_else(|_| Err(format!("{} did not answer in time", replica.addr)))
    }

    async fn send_to_replicas(&self, entry: Entry, deadline: Instant) -> Result<(), NodeError> {
        let settings = self.config.replication;
        let entry: dht::KeyValueEntry = entry.into();
        let mut acked: Vec<Position> = Vec::new();
        let mut last_error = String::from("none");
        loop {
            let mut changes = self.changes.subscribe();
            let (replicas, target) = {
                let view = self.view();
                (
                    view.replicas(settings.factor),
                    view.replica_target(settings.factor),
                )
            };
            // Copies beyond the owner's, for as many replicas as the ring should
            // give it (a replica set still being learned is waited for);
            // replicas that left the set no longer count.
            let needed = settings.copies_needed(target) - 1;
            let mut have = replicas.iter().filter(|r| acked.contains(&r.id)).count();
            if have >= needed {
                return Ok(());
            }
            let mut calls = futures_util::stream::FuturesUnordered::new();
            for replica in replicas.into_iter().filter(|r| !acked.contains(&r.id)) {
                let entry = entry.clone();
                calls.push(async move {
                    let result = self.replicate_to(&replica, entry, deadline).await;
                    (replica, result)
                });
            }
            // A write queued on a link is sent whether or not this writer still
            // waits for it.
            while let Some((replica, result)) = futures_util::StreamExt::next(&mut calls).await {
                match result {
                    Ok(()) => {
                        acked.push(replica.id);
                        have += 1;
                        if have >= needed {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::debug!(replica = %replica.addr, error = %e, "replica write failed");
                        last_error = e;
                    }
                }
            }
            // A replica failed: wait for failure detection to change the view
            // (and so, perhaps, the replica set), then try again.
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(NodeError::ReplicationIncomplete {
                    copies: have + 1,
                    needed: needed + 1,
                    reason: last_error,
                });
            }
        }
    }

    /// A peer's `Replicate`: merges its entries newest-wins and answers once
    /// they are as durable as this node's `--sync` promises.
    pub(super) async fn accept_replicas(
        &self,
        request: dht::ReplicateRequest,
    ) -> Result<dht::ReplicateAck, Status> {
        // A node on its way out would be counted as a copy it will not keep.
        let state = self.view().state;
        if matches!(state, NodeState::Leaving | NodeState::Left) {
            return Err(Status::unavailable(format!(
                "this node is {}; it takes no replicas",
                state.as_str()
            )));
        }
        let entries = request
            .entries
            .into_iter()
            .map(|e| entry_from_wire(e, &self.config.limits))
            .collect::<Result<Vec<Entry>, Status>>()?;
        let merged = entries.len() as u64;
        self.store
            .insert_all(entries)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.store
            .sync_point()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(dht::ReplicateAck { merged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(factor: usize, write_quorum: Option<usize>) -> ReplicationSettings {
        ReplicationSettings {
            factor,
            write_quorum,
            ..ReplicationSettings::default()
        }
    }

    #[test]
    fn by_default_a_write_needs_every_copy_the_ring_can_hold() {
        assert_eq!(settings(3, None).copies_needed(2), 3);
        // A ring of two nodes holds two copies.
        assert_eq!(settings(3, None).copies_needed(1), 2);
        assert_eq!(settings(3, None).copies_needed(0), 1);
        assert_eq!(settings(1, None).copies_needed(0), 1);
    }

    #[test]
    fn a_write_quorum_caps_the_copies_waited_for() {
        assert_eq!(settings(3, Some(2)).copies_needed(2), 2);
        assert_eq!(settings(5, Some(3)).copies_needed(4), 3);
        // Never more than exist, never fewer than the owner's own.
        assert_eq!(settings(3, Some(3)).copies_needed(1), 2);
        assert_eq!(settings(3, Some(0)).copies_needed(2), 1);
    }
}
