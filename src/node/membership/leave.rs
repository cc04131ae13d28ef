//! Graceful leave: a node hands its whole arc to its predecessor and unlinks
//! itself before it exits, so no key is lost.
//!
//! 1. The leaver `L` takes its membership lock, fences its whole arc (queries into
//!    it wait) and enters state `leaving`; joins into its arc are refused.
//! 2. It streams the arc's entries to its predecessor `P` with `HandOff` (header:
//!    `from: L`, `next: N`, no `prev`). `P` accepts only if `L` is still its next;
//!    it stores the entries and sets `next = N` before acknowledging.
//! 3. `L` enters state `left` (it forwards everything to `P` from now on), drops
//!    its entries, introduces `P` to `N` as `N`'s previous neighbour (`N` accepts,
//!    since its old previous neighbour answers that it has left), and deregisters
//!    from the registry.
//!
//! If `P` refuses (a joiner got between them, so `L`'s previous neighbour
//! changed) or cannot be reached, `L` lifts the fence, waits for its view to
//! settle and tries again, within the join timeout. Those decisions are a
//! state machine without I/O, [`crate::leaving::Leaver`]; this module carries
//! them out.

use crate::leaving::{Leaver, Plan, Retry, Standing};
use crate::metrics::HandOff;
use crate::node::Node;
use crate::node::error::NodeError;
use crate::node::membership::handoff::HandOffHeader;
use crate::node::view::NodeState;
use crate::ring::Member;

impl Node {
    /// Leaves the ring gracefully: see the module docs. Returns once the arc is
    /// with the predecessor (or the node was alone). The steps are a
    /// [`Leaver`]'s.
    pub async fn leave(&self) -> Result<(), NodeError> {
        // Tokio's clock, which a simulation runs in virtual time.
        let now = || tokio::time::Instant::now().into_std();
        let join = self.config.join;
        let mut leaver = Leaver::new(now(), join.timeout, join.retry_delay);
        loop {
            // A node still joining has nothing to leave, and must not wait for
            // the membership lock its join holds.
            if leaver.plan(self.standing()) == Plan::Done {
                return Ok(());
            }
            // The membership lock is held per attempt, not across the waits.
            let attempt = {
                let _membership = self.membership.lock().await;
                match leaver.plan(self.standing()) {
                    Plan::Done => return Ok(()),
                    Plan::LeaveAlone => {
                        self.update_view(|v| v.state = NodeState::Left);
                        self.deregister().await;
                        tracing::info!("left; the ring is now empty");
                        return Ok(());
                    }
                    Plan::HandOff { to, next } => {
                        let handed = self.try_leave(to.clone(), next.clone()).await;
                        if handed.is_ok() {
                            if let Some((to, next)) = leaver.handed_off(&to, &next).introduce {
                                self.introduce(&to, &next).await;
                            }
                            self.deregister().await;
                        }
                        handed
                    }
                }
            };
            let Err(e) = attempt else {
                return Ok(());
            };
            match leaver.failed(now()) {
                Retry::Wait(delay) => {
                    tracing::info!(error = %e, "leave attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Retry::GiveUp => {
                    self.update_view(|v| {
                        v.state = NodeState::Serving;
                        v.handoff = None;
                    });
                    return Err(e);
                }
            }
        }
    }

    /// Where this node stands, for a [`Leaver`].
    fn standing(&self) -> Standing {
        let view = self.view_snapshot();
        match view.state {
            NodeState::Left | NodeState::Joining => Standing::Outside,
            _ if view.alone() => Standing::Alone,
            _ => Standing::Linked {
                prev: view.prev.clone(),
                next: view.next.clone(),
            },
        }
    }

    async fn try_leave(&self, prev: Member, next: Member) -> Result<(), NodeError> {
        let arc = self.update_view(|v| {
            v.state = NodeState::Leaving;
            let arc = v.arc();
            v.handoff = Some(arc);
            arc
        });
        let result = async {
            if prev == self.me() {
                return Err(NodeError::NotServing);
            }
            let entries = self.store.entries_in(arc)?;
            let header = HandOffHeader::leave(self.me(), next.clone());
            self.hand_off(&prev, header, entries).await
        }
        .await;
        // After a timeout: if `prev` now links to this node's next, it took the arc.
        let result = self
            .settle_timeout(result, &prev, |info| info.next.id == next.id)
            .await;
        let handed = match result {
            Ok(n) => {
                self.metrics.handoff(true, HandOff::Leave, n);
                n
            }
            Err(e) => {
                self.update_view(|v| {
                    v.state = NodeState::Serving;
                    v.handoff = None;
                });
                return Err(e);
            }
        };
        self.update_view(|v| {
            v.state = NodeState::Left;
            v.handoff = None;
        });
        if let Err(e) = self.store.remove_in(arc) {
            tracing::error!(error = %e, "could not drop the handed-off arc");
        }
        tracing::info!(keys = handed, to = %prev.addr, "left the ring");
        Ok(())
    }
}
