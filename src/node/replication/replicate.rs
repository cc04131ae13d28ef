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
//! A replica that cannot be reached is waited for: the write is retried on the
//! replica set as failure detection repairs it, until the request deadline. So
//! with the default quorum (every copy), an acknowledged write is durable on
//! every live replica the owner knows. Entries carry versions and replicas merge
//! them newest-wins, so the order replica writes arrive in does not matter.
//!
//! When a write counts as acknowledged is decided by [`WriteAcks`], a state
//! machine without I/O; this module sends, waits, and reports the answers.

use crate::acks::{Incomplete, Round, Takeover, WriteAcks};
use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::view::NodeState;
use crate::request_id::RequestId;
use crate::ring::Member;
use crate::store::Entry;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

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
    /// set is repaired, until `deadline`. `request_id` names the client request
    /// on the replica calls.
    pub(in crate::node) async fn replicate_write(
        &self,
        entry: Entry,
        deadline: Instant,
        request_id: Option<&RequestId>,
    ) -> Result<Option<Entry>, NodeError> {
        let local = self.store.sync_point();
        if self.config.replication.factor <= 1 {
            local.await?;
            return Ok(None);
        }
        let (local, remote) =
            tokio::join!(local, self.send_to_replicas(entry, deadline, request_id));
        local?;
        remote
    }

    /// Who must hold a write before it is acknowledged, by leases
    /// ([`Takeover`]): the node that would take this node's arc over (its
    /// `prev`, which grants its lease), so that an acknowledged write is there
    /// when it does.
    fn takeover(&self) -> Takeover {
        let Some(leases) = self.leases.as_ref() else {
            return Takeover::Unchecked;
        };
        let view = self.view();
        if view.prev != view.me {
            return Takeover::By(view.prev.id);
        }
        Takeover::NoPrev {
            may_serve_alone: view.alone()
                && (leases.lock().unwrap_or_else(|e| e.into_inner())).may_serve_alone(),
        }
    }

    /// Sends `entry` to the replicas until the quorum has it ([`WriteAcks`]
    /// decides); returns a replica's copy of the key if one holds it at a
    /// newer version (the write lost there, and will lose everywhere once
    /// anti-entropy runs).
    async fn send_to_replicas(
        &self,
        entry: Entry,
        deadline: Instant,
        request_id: Option<&RequestId>,
    ) -> Result<Option<Entry>, NodeError> {
        let settings = self.config.replication;
        let mut acks = WriteAcks::new();
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
            // give it (a replica set still being learned is waited for).
            let needed = settings.copies_needed(target) - 1;
            let send_to = match acks.round(&replicas, needed, || self.takeover()) {
                Round::Done(newer) => return Ok(newer),
                Round::Send(to) => to,
            };
            let mut calls = JoinSet::new();
            for replica in send_to {
                // Queued with the other writes to this replica (`pipeline`).
                let call = self.pipes.send(
                    &self.peers,
                    &replica,
                    entry.clone(),
                    deadline,
                    request_id.cloned(),
                );
                calls.spawn(async move { (replica, call.await) });
            }
            // Whether the view changed during the round (the wait below
            // would not see that change), and whether the replica set did.
            let (mut view_changed, mut set_changed) = (false, false);
            loop {
                let joined = tokio::select! {
                    joined = tokio::time::timeout_at(deadline, calls.join_next()) => joined,
                    Ok(()) = changes.changed() => {
                        // The view changed while calls are out. If the
                        // replica set did (a replica declared dead, or
                        // passed over by a joiner), the write goes to the
                        // set as it is now, counted against it (`WriteAcks`),
                        // without waiting for a call to a replica that left
                        // it (to a crashed host that answers nothing, up to
                        // the call's timeout). Calls to replicas still in the
                        // set are sent again: a replica merges newest-wins.
                        view_changed = true;
                        let now = self.view().replicas(settings.factor);
                        if !same_members(&now, &replicas) {
                            calls.detach_all();
                            acks.failed("the replica set changed during the write");
                            set_changed = true;
                            break;
                        }
                        continue;
                    }
                };
                let done = match joined {
                    Ok(Some(done)) => done,
                    Ok(None) => break,
                    // Past the deadline: give up waiting (the calls finish on
                    // their own).
                    Err(_) => {
                        calls.detach_all();
                        break;
                    }
                };
                match done {
                    Ok((replica, Ok(copies))) => {
                        if acks.acked(replica.id, copies, || self.takeover()) {
                            // The rest finish on their own.
                            calls.detach_all();
                            return Ok(acks.newer().cloned());
                        }
                    }
                    Ok((replica, Err(e))) => {
                        tracing::debug!(replica = %replica.addr, error = %e, "replica write failed");
                        acks.failed(e);
                    }
                    Err(e) => acks.failed(format!("replica call panicked: {e}")),
                }
            }
            // A replica set shorter than the ring should give it (a node
            // joined before this one's last probe of `prev` told it of its
            // new predecessors): ask the maintenance loop to probe `prev` now
            // rather than at its next round, up to a probe interval away.
            if replicas.len() < needed {
                self.prev_wanted.notify_one();
            }
            // A view change the round saw: what the wait below would wait
            // for has come already.
            if (set_changed || view_changed) && Instant::now() < deadline {
                continue;
            }
            // A replica failed, or the set is short: wait for the view to
            // change (and so, perhaps, the replica set), then try again.
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let Incomplete {
                    copies,
                    needed,
                    reason,
                } = acks.incomplete();
                return Err(NodeError::ReplicationIncomplete {
                    copies,
                    needed,
                    reason,
                });
            }
        }
    }

    /// A peer's `Replicate`, its entries checked (`rpc::replicas` reads them
    /// off the wire): merges them newest-wins and returns, once they are as
    /// durable as this node's `--sync` promises, the copies this node holds
    /// at a newer version than was sent. `requests` lists the client
    /// requests the writes serve (for the log).
    pub(in crate::node) async fn accept_replicas(
        &self,
        entries: Vec<Entry>,
        requests: Option<&str>,
    ) -> Result<Vec<Entry>, NodeError> {
        // A node on its way out would be counted as a copy it will not keep.
        let state = self.view().state;
        if matches!(state, NodeState::Leaving | NodeState::Left) {
            return Err(NodeError::TakesNoReplicas(state.as_str()));
        }
        tracing::debug!(
            entries = entries.len(),
            requests = requests.unwrap_or("-"),
            "taking replica writes"
        );
        // Copies held at a newer version than what was sent: told back.
        let mut newer = Vec::new();
        let mut taken = Vec::new();
        for e in &entries {
            match self.store.entry(e.position, &e.key)? {
                Some(mine) if mine.version > e.version => newer.push(mine),
                Some(mine) if mine.version == e.version => {}
                // Newer here: a change, for watches, once stored.
                _ => taken.push(std::sync::Arc::new(e.clone())),
            }
        }
        self.store.insert_all(entries)?;
        for change in taken {
            self.change_log.record_copy(change);
        }
        self.store.sync_point().await?;
        Ok(newer)
    }
}

/// Whether two replica sets name the same nodes (by ID), in any order.
fn same_members(a: &[Member], b: &[Member]) -> bool {
    a.len() == b.len() && a.iter().all(|m| b.iter().any(|n| n.id == m.id))
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
