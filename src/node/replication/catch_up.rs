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
    /// then records that it is caught up (if its view did not change meanwhile).
    pub(in crate::node) async fn catch_up(
        &self,
        pacer: &mut crate::repair::Pacer,
    ) -> Result<(), NodeError> {
        let view = self.view_snapshot();
        if view.state != NodeState::Serving || self.caught_up(&view) {
            return Ok(());
        }
        let factor = self.config.replication.factor;
        let arc = view.arc();
        let replicas = view.replicas(factor);
        let began = self.catch_up_state().begin();
        for replica in &replicas {
            let moved = self.sync_arc(replica, arc, pacer).await?;
            if moved.taken > 0 {
                tracing::info!(replica = %replica.addr, taken = moved.taken, "caught up on writes a replica held");
            }
        }
        let now = self.view_snapshot();
        let now_replicas = now.replicas(factor);
        self.catch_up_state()
            .reconciled(began, arc, &replicas, (now.arc(), &now_replicas));
        Ok(())
    }

    /// A read by an owner that is behind: the newest of its own copy of `key` and
    /// its replicas' copies, stored locally if newer (read repair). Replicas
    /// that do not answer are passed over. Returns the newest live entry.
    pub(in crate::node) async fn read_with_replicas(
        &self,
        position: Position,
        key: &[u8],
    ) -> Result<Option<Entry>, NodeError> {
        let point = Arc::point(position);
        let mine = self.store.entry(position, key)?;
        let replicas = self.view().replicas(self.config.replication.factor);
        let mut reads = JoinSet::new();
        for replica in replicas {
            reads.spawn(self.read_range(&replica, point));
        }
        let mut theirs: Vec<Entry> = Vec::new();
        while let Some(read) = reads.join_next().await {
            if let Ok(Ok(entries)) = read {
                theirs.extend(entries);
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
