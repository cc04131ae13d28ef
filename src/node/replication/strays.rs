//! Stray entries: what a node holds outside the arc it keeps (its own arc and
//! the arcs it replicates). A node that was the nearest replica of an arc stops
//! being one when a node joins nearer; a node restarted from its data directory
//! may hold keys of arcs that moved while it was down; a stabilize merge may
//! leave entries behind. Left alone, strays cost space and skew the key counts;
//! dropped carelessly, they may be the only copy of a write.
//!
//! So a sweep runs only when the kept arc has not changed since the previous
//! sweep; it hands each stray to the node that owns its position (found by a
//! ring walk), newest-wins as every merge, and drops it only once that owner
//! has acknowledged it durable, under the view lock, if the kept arc is still
//! the same, and only at the version it handed over (a write that arrived since
//! stays). The owner's replicas then get it by anti-entropy, as any write.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::view::NodeState;
use crate::ring::{self, Arc, Member, Position};
use crate::store::Entry;
use std::collections::BTreeMap;

impl Node {
    /// Hands this node's stray entries to their owners and drops them; returns
    /// how many were dropped. `last_kept` is the kept arc the previous sweep saw:
    /// a sweep only runs when it has not changed since.
    pub(in crate::node) async fn sweep_strays(
        &self,
        last_kept: &mut Option<Arc>,
    ) -> Result<usize, NodeError> {
        let factor = self.config.replication.factor;
        let view = self.view_snapshot();
        if view.state != NodeState::Serving || view.handoff.is_some() {
            return Ok(0);
        }
        let kept = view.kept_arc(factor);
        let stable = last_kept.replace(kept) == Some(kept);
        if !stable || kept.start == kept.end {
            return Ok(0);
        }
        let strays_arc = Arc::new(kept.end, kept.start);
        let strays = self.store.entries_in(strays_arc)?;
        if strays.is_empty() {
            return Ok(0);
        }
        let members: BTreeMap<Position, Member> = self
            .walk_ring(crate::node::WALK_LIMIT)
            .await?
            .into_iter()
            .filter(|s| s.state == NodeState::Serving.as_str())
            .map(|s| (s.me.id, s.me))
            .collect();
        let mut by_owner: BTreeMap<Position, (Member, Vec<Entry>)> = BTreeMap::new();
        for entry in strays {
            let Some((id, owner)) = ring::owner(&members, entry.position) else {
                return Ok(0);
            };
            if id == view.me.id {
                // The walk and this node's view disagree: the ring is changing.
                return Ok(0);
            }
            by_owner
                .entry(id)
                .or_insert_with(|| (owner.clone(), Vec::new()))
                .1
                .push(entry);
        }
        let mut handed = Vec::new();
        for (owner, entries) in by_owner.into_values() {
            handed.extend(
                entries
                    .iter()
                    .map(|e| (e.position, e.key.clone(), e.version)),
            );
            self.give(&owner, entries).await?;
        }
        let dropped = self.update_view(|now| {
            if now.state != NodeState::Serving || now.kept_arc(factor) != kept {
                return Ok(0);
            }
            self.store.remove_exact(&handed)
        })?;
        tracing::info!(
            dropped,
            "handed stray entries to their owners and dropped them"
        );
        Ok(dropped)
    }
}
