//! Keeping the routing table current: the shell that runs a
//! [`Sweep`](crate::routing::Sweep) over `GetNodeInfo` every
//! `--table-refresh-ms`, and the updates a node makes at once from what it sees
//! itself (a member it could not reach, a joiner it linked in, a neighbour that
//! failed).
//!
//! Staleness: a member that joins is in every table within one refresh interval
//! (plus the sweep's few round trips) of linking in; one that leaves or fails is
//! dropped by the next sweep after its neighbours have repaired round it (the
//! failure detector's `probe_interval x misses`), and at once by any node that
//! fails to reach it. Until then a query costs a hop more, never a wrong answer
//! (see [`View::route_by_table`](super::View::route_by_table)).

use super::Node;
use super::view::NodeState;
use crate::node::membership::maintain::{next_round, ticker};
use crate::ring::Member;
use crate::routing::{RoutingTable, Step, Sweep, SweepReply};
use std::sync::{Arc, RwLockReadGuard};
use tokio::sync::watch;

/// How many members a sweep asks at most: as many as a ring walk visits.
const SWEEP_LIMIT: usize = super::WALK_LIMIT;

impl Node {
    /// The routing table.
    pub(super) fn routes(&self) -> RwLockReadGuard<'_, RoutingTable> {
        // Every update is a plain assignment or insertion: a poisoned lock still
        // holds a usable table.
        self.routes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn update_routes(&self, change: impl FnOnce(&mut RoutingTable)) {
        change(&mut self.routes.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Stops routing to `member` until a sweep finds it again.
    pub(super) fn forget_route(&self, member: &Member) {
        self.update_routes(|t| t.remove(member));
    }

    /// Routes to `member` from now on (a joiner this node just linked in).
    pub(super) fn learn_route(&self, member: Member) {
        self.update_routes(|t| t.insert(member));
    }

    /// The members in this node's routing table, in ring order.
    pub fn route_members(&self) -> Vec<Member> {
        self.routes().members().cloned().collect()
    }

    /// Sweeps the ring every `table_refresh` until `stop` turns true.
    pub(super) async fn refresh_routes(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = ticker(self.config.maintenance.table_refresh);
        while next_round(&mut tick, &mut stop).await {
            if self.view().state == NodeState::Serving {
                self.sweep().await;
            }
        }
    }

    /// Walks the ring once and takes what it learned into the routing table.
    pub async fn sweep(&self) {
        let view = self.view_snapshot();
        let successors = view.successors();
        let (mut sweep, mut step) = Sweep::start(view.me, &successors, SWEEP_LIMIT);
        loop {
            match step {
                Step::Ask(member) => {
                    step = match self.ask_for_sweep(&member).await {
                        Some(reply) => sweep.on_reply(reply),
                        None => sweep.on_failure(),
                    };
                }
                Step::Done { members, complete } => {
                    self.update_routes(|t| match complete {
                        true => t.replace(members),
                        false => t.extend(members),
                    });
                    return;
                }
            }
        }
    }

    /// `member`'s answer for a sweep; `None` if it is dead, gone, joining or
    /// someone else now.
    async fn ask_for_sweep(&self, member: &Member) -> Option<SweepReply> {
        let info = self.probe(member).await?;
        Some(SweepReply {
            node: member.clone(),
            serving: info.state == Some(NodeState::Serving),
            successors: info.successors,
        })
    }
}
