//! Sweeping stray entries: the node's side of [`StraySweep`] (when to sweep,
//! and to whom each stray goes, are decided there, with the reasons). Here the
//! node reads its strays, walks the ring, hands each owner its strays, and
//! drops them once acknowledged, under the view lock, if the kept arc is still
//! the same, and only at the version it handed over (a write that arrived since
//! stays). The owner's replicas then get them by anti-entropy, as any write.

use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::view::NodeState;
use crate::repair::StraySweep;
use crate::ring::{Member, Position};
use std::collections::BTreeMap;

impl Node {
    /// Hands this node's stray entries to their owners and drops them; returns
    /// how many were dropped. `sweep` remembers the kept arc between sweeps: a
    /// sweep only runs when it has not changed since.
    pub(in crate::node) async fn sweep_strays(
        &self,
        sweep: &mut StraySweep,
    ) -> Result<usize, NodeError> {
        let factor = self.config.replication.factor;
        let view = self.view_snapshot();
        if view.state != NodeState::Serving || view.handoff.is_some() {
            return Ok(0);
        }
        let kept = view.kept_arc(factor);
        let Some(strays_arc) = sweep.arc_to_sweep(kept) else {
            return Ok(0);
        };
        let strays = self.store.entries_in(strays_arc)?;
        if strays.is_empty() {
            return Ok(0);
        }
        let members: BTreeMap<Position, Member> = self
            .walk_ring(crate::node::WALK_LIMIT)
            .await?
            .into_iter()
            .filter(|s| s.state == Some(NodeState::Serving))
            .map(|s| (s.me.id, s.me))
            .collect();
        let Some(by_owner) = StraySweep::owners(view.me.id, &members, strays) else {
            return Ok(0);
        };
        let mut handed = Vec::new();
        for (owner, entries) in by_owner {
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
