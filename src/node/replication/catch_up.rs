//! When an owner may answer reads from its own store alone.
//!
//! Writes reach the owner and every live replica before they are acknowledged,
//! so an owner that was part of every write to its arc has them all. An owner
//! that just took an arc (a restarted node rejoining with old data, a joiner
//! handed its arc by a predecessor that itself was behind, a node whose arc grew
//! over a failed neighbour's with a write quorum below the factor) may lack
//! writes its replicas hold. Such an owner is *behind* until it has reconciled
//! its arc with every one of its current replicas (the anti-entropy exchange,
//! driven by the owner); until then, reads in its arc also ask the replicas and
//! answer the newest copy, repairing the owner's. This is Dynamo's read repair,
//! paid only while an owner is behind, not on every read.
//!
//! The owner records the arc and replica set it last reconciled. A new replica
//! (a node joined or died among its predecessors) or a wider arc makes it
//! behind again; a narrower arc (a joiner took part of it) does not.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::view::{NodeState, View};
use crate::ring::{Arc, Member, Position};
use crate::store::Entry;
use tokio::task::JoinSet;

/// The arc and replicas an owner last reconciled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) struct Reconciled {
    arc: Arc,
    replicas: Vec<Position>,
}

impl Reconciled {
    /// Whether this reconciliation still vouches for `view`'s arc and replicas.
    fn vouches_for(&self, arc: &Arc, replicas: &[Member]) -> bool {
        self.arc.covers(arc) && replicas.iter().all(|r| self.replicas.contains(&r.id))
    }
}

impl Node {
    /// Whether this node's store alone answers reads of its arc, for `view`.
    pub(in crate::node) fn caught_up(&self, view: &View) -> bool {
        let replicas = view.replicas(self.config.replication.factor);
        if replicas.is_empty() {
            return true;
        }
        let reconciled = self.reconciled.lock().unwrap_or_else(|e| e.into_inner());
        reconciled
            .as_ref()
            .is_some_and(|r| r.vouches_for(&view.arc(), &replicas))
    }

    /// If this node is behind, reconciles its arc with each of its replicas and
    /// then records that it is caught up (if its view did not change meanwhile).
    pub(in crate::node) async fn catch_up(
        &self,
        pacer: &mut crate::node::replication::anti_entropy::Pacer,
    ) -> Result<(), NodeError> {
        let view = self.view_snapshot();
        if view.state != NodeState::Serving || self.caught_up(&view) {
            return Ok(());
        }
        let factor = self.config.replication.factor;
        let arc = view.arc();
        let replicas = view.replicas(factor);
        for replica in &replicas {
            let moved = self.sync_arc(replica, arc, pacer).await?;
            if moved.taken > 0 {
                tracing::info!(replica = %replica.addr, taken = moved.taken, "caught up on writes a replica held");
            }
        }
        let now = self.view_snapshot();
        if now.arc() == arc && now.replicas(factor) == replicas {
            *self.reconciled.lock().unwrap_or_else(|e| e.into_inner()) = Some(Reconciled {
                arc,
                replicas: replicas.iter().map(|r| r.id).collect(),
            });
        }
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
        let mut newest: Option<Entry> = mine.clone();
        while let Some(read) = reads.join_next().await {
            let Ok(Ok(entries)) = read else { continue };
            for e in entries.into_iter().filter(|e| e.key == key) {
                if newest.as_ref().is_none_or(|n| n.version < e.version) {
                    newest = Some(e);
                }
            }
        }
        if newest != mine
            && let Some(repair) = newest.clone()
        {
            self.store.insert_all(vec![repair])?;
        }
        let now = crate::store::now_micros();
        Ok(newest.filter(|e| e.is_live(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    #[test]
    fn a_reconciliation_vouches_for_narrower_arcs_and_the_same_replicas_only() {
        let r = Reconciled {
            arc: Arc::new(Position(100), Position(300)),
            replicas: vec![Position(90), Position(80)],
        };
        let replicas = [member(90), member(80)];
        assert!(r.vouches_for(&Arc::new(Position(100), Position(200)), &replicas));
        // The arc grew over a failed neighbour's.
        assert!(!r.vouches_for(&Arc::new(Position(100), Position(400)), &replicas));
        // A new replica joined among the predecessors.
        assert!(!r.vouches_for(
            &Arc::new(Position(100), Position(300)),
            &[member(95), member(90)]
        ));
    }
}
