//! Catching up: the node's side of [`CatchUp`] (when an owner may answer
//! reads from its own store alone, and what a read asks for while it may not,
//! are decided there, with the reasons). Here the owner reconciles its arc
//! with each replica, and a read while it is behind asks the replicas and
//! stores the newest copy.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::view::{NodeState, View};
use crate::repair::catch_up::{CatchUp, newest};
use crate::ring::{Arc, Position};
use crate::store::Entry;
use tokio::task::JoinSet;

impl Node {
    /// Whether this node's store alone answers reads of its arc, for `view`.
    pub(in crate::node) fn caught_up(&self, view: &View) -> bool {
        let replicas = view.replicas(self.config.replication.factor);
        self.catch_up_state().caught_up(view.arc(), &replicas)
    }

    /// Forgets what this node last reconciled with: its reads ask the
    /// replicas until it has caught up again (its lease lapsed, so another
    /// node may have served its arc meanwhile).
    pub(in crate::node) fn behind_again(&self) {
        self.catch_up_state().forget();
    }

    fn catch_up_state(&self) -> std::sync::MutexGuard<'_, CatchUp> {
        self.catch_up.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// If this node is behind, reconciles its arc with each of its replicas and
    /// then records that it is caught up (if its view did not change meanwhile,
    /// and every replica answered). A replica that fails is passed over until
    /// the next round; `prev` reconciled alone ends a lease gap
    /// ([`CatchUp::after_gap`]).
    pub(in crate::node) async fn catch_up(
        &self,
        pacer: &mut crate::repair::Pacer,
    ) -> Result<(), NodeError> {
        // Before the view: a gap after it is not vouched for by this exchange.
        let began = self.catch_up_state().begin();
        let view = self.view_snapshot();
        if view.state != NodeState::Serving || self.caught_up(&view) {
            return Ok(());
        }
        let factor = self.config.replication.factor;
        let arc = view.arc();
        let replicas = view.replicas(factor);
        let mut failed = None;
        for replica in &replicas {
            match self.sync_arc(replica, arc, pacer).await {
                Ok(moved) => {
                    if moved.taken > 0 {
                        tracing::info!(replica = %replica.addr, taken = moved.taken, "caught up on writes a replica held");
                    }
                    // Still this node's `prev`: the one that holds what
                    // another owner of the arc acknowledged.
                    if *replica == view.prev && self.view().prev == view.prev {
                        self.catch_up_state().prev_reconciled(began);
                    }
                }
                Err(e) => {
                    tracing::debug!(replica = %replica.addr, error = %e, "catching up with a replica failed");
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let now = self.view_snapshot();
        let now_replicas = now.replicas(factor);
        self.catch_up_state()
            .reconciled(began, arc, &replicas, (now.arc(), &now_replicas));
        if self.caught_up(&now) {
            tracing::info!(
                ?arc,
                replicas = replicas.len(),
                "caught up: reads of the arc answer from this node's store"
            );
        }
        Ok(())
    }

    /// Whether this node, as `view` has it, was leased again after a gap and
    /// has not yet reconciled with its `prev` (see [`CatchUp::after_gap`]).
    /// A node without replicas has no one to catch up from (one copy: a
    /// takeover keeps nothing of what it acknowledged).
    pub(in crate::node) fn after_lease_gap(&self, view: &View) -> bool {
        self.catch_up_state().after_gap()
            && !view.replicas(self.config.replication.factor).is_empty()
    }

    /// A read by an owner that is behind: the newest of its own copy of `key` and
    /// its replicas' copies, stored locally if newer (read repair). Replicas
    /// that do not answer are passed over, except `prev`: the node that would
    /// have taken this node's arc over, and so holds every write another
    /// owner of the arc acknowledged meanwhile (its acknowledging rule). Without
    /// its answer the read fails. Returns the newest live entry.
    pub(in crate::node) async fn read_with_replicas(
        &self,
        position: Position,
        key: &[u8],
    ) -> Result<Option<Entry>, NodeError> {
        let point = Arc::point(position);
        let mine = self.store.entry(position, key)?;
        let (replicas, prev) = {
            let view = self.view();
            (
                view.replicas(self.config.replication.factor),
                view.prev.clone(),
            )
        };
        let mut reads = JoinSet::new();
        for replica in replicas {
            let read = self.read_range(&replica, point);
            reads.spawn(async move { (replica, read.await) });
        }
        let mut theirs: Vec<Entry> = Vec::new();
        while let Some(read) = reads.join_next().await {
            match read {
                Ok((_, Ok(entries))) => theirs.extend(entries),
                Ok((replica, Err(e))) if replica == prev => return Err(e),
                _ => {}
            }
        }
        let (newest, repair) = newest(key, mine, theirs);
        if repair && let Some(copy) = newest.clone() {
            self.store.insert_all(vec![copy])?;
        }
        let now = crate::store::now_micros();
        Ok(newest.filter(|e| e.is_live(now)))
    }
}

#[cfg(test)]
mod tests {
    use crate::node::{NodeError, Operation, Query};

    /// An owner that is behind answers a read only with its `prev`'s copy:
    /// `prev` holds every write another owner of the arc acknowledged while
    /// this one held no lease. Unreachable, it fails the read rather than
    /// answering from the owner's store alone.
    #[tokio::test(start_paused = true)]
    async fn a_behind_owner_does_not_read_without_its_prev() {
        let node = crate::node::owner_with_unreachable_replica();
        let key = b"k".to_vec();
        let position = crate::ring::key_position(&key);
        node.store
            .set(position, key.clone(), b"old".to_vec(), 1)
            .unwrap();
        let get = || Query::new(Operation::Get, key.clone(), &node.config().limits).unwrap();
        let caught_up = node
            .execute(get())
            .await
            .expect("a caught-up owner reads alone");
        assert!(matches!(caught_up.outcome, crate::node::Outcome::Value(_)));
        node.behind_again();
        let behind = node.execute(get()).await;
        assert!(
            matches!(
                behind,
                Err(NodeError::Unreachable { .. } | NodeError::Interrupted { .. })
            ),
            "{behind:?}"
        );
    }
}
