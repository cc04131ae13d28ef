//! A node's view of the ring and the decisions made from it, as pure functions:
//! where a query goes, whether a joiner may split this node's arc. No I/O here; the
//! service shells call these under the node's view lock.

use crate::ring::{Arc, Member, Position};
use crate::routing::{RoutingTable, TABLE_HOPS};

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Started, not yet part of the ring: owns nothing, serves nothing.
    Joining,
    /// Part of the ring: owns its arc and serves queries.
    Serving,
    /// Handing its whole arc to its predecessor before it goes.
    Leaving,
    /// Gone from the ring: owns nothing, forwards everything to its former
    /// predecessor until the process exits.
    Left,
}

impl NodeState {
    /// The state's name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Serving => "serving",
            NodeState::Leaving => "leaving",
            NodeState::Left => "left",
        }
    }
}

impl std::str::FromStr for NodeState {
    type Err = String;

    /// A state by the name [`NodeState::as_str`] gives it (as `GetNodeInfo`
    /// carries it); any other is an error naming it (a summary keeps it as
    /// a state it does not know).
    fn from_str(name: &str) -> Result<Self, String> {
        [Self::Joining, Self::Serving, Self::Leaving, Self::Left]
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("a node's info names an unknown state {name:?}"))
    }
}

/// What a node knows of the ring.
#[derive(Debug, Clone)]
pub struct View {
    /// This node.
    pub me: Member,
    /// The previous member (closest smaller ID, wrapping); `me` when alone or
    /// when the previous member failed and no new one has introduced itself yet.
    pub prev: Member,
    /// The next member (closest greater ID, wrapping); `me` when alone.
    pub next: Member,
    /// The members after `next`, in ring order: with `next`, the successor list.
    /// When `next` fails, the first live one of these takes its place.
    pub backups: Vec<Member>,
    /// The members before `prev`, nearest first: with `prev`, the nodes that
    /// hold replicas of this node's arc. Kept when `prev` fails, so that the
    /// replicas stay known until a new `prev` introduces itself.
    pub predecessors: Vec<Member>,
    /// Where this node is in its life.
    pub state: NodeState,
    /// An arc being handed to a joiner: queries into it wait until the hand-off ends.
    pub handoff: Option<Arc>,
}

/// Where a query for a position goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the position: answer from the local store.
    Local,
    /// Another node is closer to the owner: forward there.
    Forward(Member),
    /// The position's arc is being handed off right now: wait and route again.
    Wait,
    /// This node is not part of the ring yet.
    NotServing,
}

/// The neighbours a node linked to a newcomer had before, as it answers
/// `RegisterAsNeighbor` (`rpc::wire` writes them as `PreviousNeighbors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbours {
    /// Its `prev`.
    pub prev: Member,
    /// Its `next`.
    pub next: Member,
}

/// Why a node did not link a newcomer in (`RegisterAsNeighbor`).
#[derive(Debug)]
pub enum LinkError {
    /// A joiner (as `next`) refused before anything moved.
    Join {
        /// Why.
        refusal: JoinRefusal,
        /// The joiner.
        joiner: Member,
    },
    /// The hand-off of the joiner's arc failed; the arc stays here.
    HandOff {
        /// The joiner.
        joiner: Member,
        /// What failed.
        error: super::NodeError,
    },
    /// An introduction as `prev` refused: the newcomer does not serve, or
    /// does not lie between this node's live `prev` and itself.
    NotPrevious(String),
}

/// Why a joiner may not take the arc it asked this node for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    /// This node is not serving yet (it is joining itself): try again later.
    NotServing,
    /// The joiner's ID is not in this node's arc; `towards` is closer to its owner.
    NotMyArc {
        /// Where to ask next.
        towards: Member,
    },
    /// This node may not serve the arc now (no lease on it, part of it
    /// taken over from a failed node and still waiting for that node's
    /// lease to lapse, or leased again after a gap and not caught up): it
    /// may not hand any of it over either. Another node may own the arc
    /// meanwhile (its `prev`, if that declared this node dead), and handing
    /// part of it to a joiner would give the part two serving owners; or
    /// its store may lack writes that owner made. Try again later.
    Unleased,
    /// A member with this ID already is in the ring.
    Taken {
        /// The member holding the ID.
        holder: Member,
    },
}

impl View {
    /// The view of a node that has not joined yet.
    pub fn joining(me: Member) -> Self {
        Self {
            prev: me.clone(),
            next: me.clone(),
            backups: Vec::new(),
            predecessors: Vec::new(),
            me,
            state: NodeState::Joining,
            handoff: None,
        }
    }

    /// The view of the first node of a ring: alone, owning everything.
    pub fn first(me: Member) -> Self {
        Self {
            state: NodeState::Serving,
            ..Self::joining(me)
        }
    }

    /// The arc this node owns: from its ID up to its next neighbour's.
    pub fn arc(&self) -> Arc {
        Arc::new(self.me.id, self.next.id)
    }

    /// Where a query for `position` goes. With only neighbour links, a query walks
    /// the shorter way round: clockwise to `next`, or counter-clockwise to `prev`
    /// when the position lies behind this node and is closer that way. Either walk
    /// ends at the owner, and the choice is monotone: each hop on the
    /// counter-clockwise walk still finds the position behind it.
    ///
    /// With `clockwise_only`, never forwards to `prev` (used after `prev` proved
    /// unreachable: the clockwise walk always works).
    pub fn route(&self, position: Position, clockwise_only: bool) -> Route {
        match self.state {
            NodeState::Joining => return Route::NotServing,
            NodeState::Left if self.prev == self.me => return Route::NotServing,
            NodeState::Left => return Route::Forward(self.prev.clone()),
            NodeState::Serving | NodeState::Leaving => {}
        }
        if self.arc().contains(position) {
            return match self.handoff {
                Some(arc) if arc.contains(position) => Route::Wait,
                _ => Route::Local,
            };
        }
        let clockwise = self.me.id.distance_to(position);
        let counter_clockwise = position.distance_to(self.me.id);
        if counter_clockwise < clockwise && self.prev.id != self.me.id && !clockwise_only {
            Route::Forward(self.prev.clone())
        } else {
            Route::Forward(self.next.clone())
        }
    }

    /// Where a query for `position` goes, forwarded `hops` times so far, when
    /// this node also knows the ring's members (`table`): straight to the owner
    /// the table names while `hops` is under [`TABLE_HOPS`], else as
    /// [`View::route`] says. The view alone decides what is local, so a stale
    /// table costs a hop and never a wrong answer; after [`TABLE_HOPS`] table
    /// hops the ring walk takes over, so stale tables cannot bounce a query.
    pub fn route_by_table(
        &self,
        table: &RoutingTable,
        position: Position,
        hops: u32,
        clockwise_only: bool,
    ) -> Route {
        match self.route(position, clockwise_only) {
            Route::Forward(ring_hop)
                if hops < TABLE_HOPS
                    && matches!(self.state, NodeState::Serving | NodeState::Leaving) =>
            {
                let owner = table.owner(position);
                // The table may still name this node for an arc it has handed
                // on (a joiner took it): then the ring walk knows better.
                if owner.id == self.me.id {
                    Route::Forward(ring_hop)
                } else {
                    Route::Forward(owner.clone())
                }
            }
            other => other,
        }
    }

    /// Whether a joiner at `id` may become this node's next neighbour, taking the
    /// arc `[id, next)`. It may when `id` lies strictly inside this node's arc.
    pub fn check_join(&self, id: Position) -> Result<Arc, JoinRefusal> {
        if self.state != NodeState::Serving {
            return Err(JoinRefusal::NotServing);
        }
        if id == self.me.id {
            return Err(JoinRefusal::Taken {
                holder: self.me.clone(),
            });
        }
        if !self.arc().contains(id) {
            return match self.route(id, false) {
                Route::Forward(towards) => Err(JoinRefusal::NotMyArc { towards }),
                // Unreachable in practice: a position outside the arc always routes
                // away. Refuse as "try later" rather than guess.
                _ => Err(JoinRefusal::NotServing),
            };
        }
        Ok(Arc::new(id, self.next.id))
    }
}

impl View {
    /// The successor list: `next`, then the backups.
    pub fn successors(&self) -> Vec<Member> {
        std::iter::once(self.next.clone())
            .chain(self.backups.iter().cloned())
            .collect()
    }

    /// Whether this node is alone in its ring.
    pub fn alone(&self) -> bool {
        self.next == self.me
    }

    /// Takes the successor list `from_next` reported by `next` (its own next and
    /// onwards) as this node's backups: at most `length - 1` of them, stopping
    /// where the list comes round to this node.
    pub fn adopt_successors(&mut self, from_next: &[Member], length: usize) {
        self.backups = chain(from_next, &self.me, &self.next, length);
    }

    /// Takes the chain of nodes before `prev` as `prev` reported it (its own
    /// `prev`, if known, then its predecessors) as this node's predecessors: at
    /// most `length - 1` of them, stopping where the chain comes round to this node.
    pub fn adopt_predecessors(&mut self, from_prev: &[Member], length: usize) {
        self.predecessors = chain(from_prev, &self.me, &self.prev, length);
    }

    /// `new` becomes `prev`, and the predecessors follow: if `new` was one of
    /// them, the nodes between it and this node are gone; otherwise `new` joined
    /// between the old `prev` and this node, which becomes the first predecessor.
    /// Keeps at most `length - 1` predecessors.
    pub fn take_previous(&mut self, new: Member, length: usize) {
        if let Some(i) = self.predecessors.iter().position(|m| m.id == new.id) {
            self.predecessors.drain(..=i);
        } else if self.prev != self.me && self.prev.id != new.id {
            self.predecessors.insert(0, self.prev.clone());
        }
        self.predecessors.retain(|m| m.id != self.me.id);
        self.predecessors.truncate(length.saturating_sub(1));
        self.prev = new;
    }

    /// The nodes that hold copies of this node's arc, for a replication factor
    /// of `factor`: the `factor - 1` nearest live predecessors (`prev`, when
    /// known, then the nodes before it). Fewer in a ring of fewer nodes.
    pub fn replicas(&self, factor: usize) -> Vec<Member> {
        let known_prev = (self.prev != self.me).then_some(&self.prev);
        let mut out: Vec<Member> = Vec::new();
        for m in known_prev.into_iter().chain(&self.predecessors) {
            if m.id != self.me.id && !out.iter().any(|o| o.id == m.id) {
                out.push(m.clone());
            }
        }
        out.truncate(factor.saturating_sub(1));
        out
    }

    /// Whether the successor list reaches round the whole ring: its last member
    /// is `prev`, so the ring has no nodes beyond the list.
    pub fn list_wraps(&self) -> bool {
        !self.alone() && self.backups.last().unwrap_or(&self.next) == &self.prev
    }

    /// How many replicas this node's arc should have: `factor - 1`, or every
    /// other node when the ring is smaller (known from a successor list that
    /// wraps; a list still being learned does not count as a small ring).
    pub fn replica_target(&self, factor: usize) -> usize {
        let wanted = factor.saturating_sub(1);
        if self.alone() {
            0
        } else if self.list_wraps() {
            wanted.min(self.backups.len() + 1)
        } else {
            wanted
        }
    }

    /// The arcs this node holds replicas of, each with its owner: the arcs of
    /// its `factor - 1` nearest successors, as its successor list tells them.
    /// An arc whose end the list does not tell (its owner is the list's last
    /// member and the ring goes on beyond it) is left out until it does.
    pub fn replica_arcs(&self, factor: usize) -> Vec<(Member, Arc)> {
        if self.alone() {
            return Vec::new();
        }
        let successors = self.successors();
        let wraps = self.list_wraps();
        successors
            .iter()
            .take(factor.saturating_sub(1))
            .enumerate()
            .filter_map(|(i, owner)| {
                let end = match successors.get(i + 1) {
                    Some(m) => m.id,
                    None if wraps => self.me.id,
                    None => return None,
                };
                Some((owner.clone(), Arc::new(owner.id, end)))
            })
            .filter(|(owner, _)| owner.id != self.me.id)
            .collect()
    }

    /// The arc whose entries this node keeps: its own arc and the arcs it
    /// replicates, from its ID up to the end of the last replicated arc. Entries
    /// outside it are strays (left behind by joins or a past life of the node).
    pub fn kept_arc(&self, factor: usize) -> Arc {
        match self.replica_arcs(factor).last() {
            Some((_, last)) => Arc::new(self.me.id, last.end),
            None => self.arc(),
        }
    }

    /// `next` failed: the first backup becomes `next` and the arc grows over the
    /// failed node's. Returns the failed node. With no backups left, the node is
    /// alone (the caller may first offer other candidates as backups).
    pub fn next_failed(&mut self) -> Member {
        let failed = self.next.clone();
        if self.backups.is_empty() {
            self.next = self.me.clone();
            self.prev = self.me.clone();
        } else {
            self.next = self.backups.remove(0);
        }
        if self.prev == failed {
            self.prev = self.me.clone();
        }
        failed
    }

    /// `prev` failed: forget it until a live predecessor introduces itself.
    pub fn prev_failed(&mut self) {
        self.prev = self.me.clone();
    }

    /// Whether `new` may become this node's previous neighbour without asking
    /// anyone: `prev` is unknown, or `new` lies strictly between `prev` and this
    /// node (it joined in between, or it is `prev` already).
    pub fn may_take_previous(&self, new: &Member) -> bool {
        self.prev == self.me
            || self.prev == *new
            || (new.id != self.prev.id
                && new.id != self.me.id
                && Arc::new(self.prev.id, self.me.id).contains(new.id))
    }
}

/// A neighbour's list of the nodes beyond it, as this node keeps it: up to
/// where the list comes round to `me`, without `neighbour`, at most `length - 1`.
fn chain(reported: &[Member], me: &Member, neighbour: &Member, length: usize) -> Vec<Member> {
    reported
        .iter()
        .take_while(|m| m.id != me.id)
        .filter(|m| m.id != neighbour.id)
        .take(length.saturating_sub(1))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member::new(Position(id), format!("http://n{id}"))
    }

    fn view(prev: u64, me: u64, next: u64) -> View {
        View {
            prev: member(prev),
            next: member(next),
            ..View::first(member(me))
        }
    }

    #[test]
    fn a_failed_next_is_replaced_by_the_first_backup_and_the_arc_grows() {
        let mut v = view(10, 100, 200);
        v.adopt_successors(
            &[
                member(300),
                member(400),
                member(10),
                member(100),
                member(200),
            ],
            3,
        );
        assert_eq!(v.successors(), vec![member(200), member(300), member(400)]);
        assert_eq!(v.next_failed(), member(200));
        assert_eq!(v.next, member(300));
        assert!(v.arc().contains(Position(250)));
        assert_eq!(v.next_failed(), member(300));
        assert_eq!(v.next, member(400));
    }

    #[test]
    fn successor_lists_stop_where_they_come_round() {
        let mut v = view(200, 100, 200);
        v.adopt_successors(&[member(100), member(200)], 3);
        assert!(v.backups.is_empty());
        // The last member standing ends alone.
        v.next_failed();
        assert!(v.alone());
        assert_eq!(v.prev, v.me);
        assert_eq!(v.route(Position(5), false), Route::Local);
    }

    #[test]
    fn a_new_previous_is_taken_when_it_is_closer_or_the_old_one_is_unknown() {
        let mut v = view(10, 100, 200);
        assert!(v.may_take_previous(&member(50)));
        assert!(v.may_take_previous(&member(10)));
        assert!(!v.may_take_previous(&member(5)));
        assert!(!v.may_take_previous(&member(150)));
        v.prev_failed();
        assert!(v.may_take_previous(&member(5)));
    }

    #[test]
    fn replicas_are_the_nearest_predecessors_and_survive_a_failed_prev() {
        let mut v = view(90, 100, 200);
        v.adopt_predecessors(&[member(80), member(70), member(60), member(100)], 3);
        assert_eq!(v.predecessors, vec![member(80), member(70)]);
        assert_eq!(v.replicas(3), vec![member(90), member(80)]);
        assert_eq!(v.replicas(1), Vec::<Member>::new());
        v.prev_failed();
        assert_eq!(v.replicas(3), vec![member(80), member(70)]);
    }

    #[test]
    fn a_new_prev_shifts_the_predecessors() {
        let mut v = view(90, 100, 200);
        v.adopt_predecessors(&[member(80), member(70)], 3);
        // A joiner between 90 and 100: 90 becomes the first predecessor.
        v.take_previous(member(95), 3);
        assert_eq!(v.replicas(3), vec![member(95), member(90)]);
        // 95 and 90 died; 80 introduces itself: the predecessors after it stay.
        v.adopt_predecessors(&[member(90), member(80), member(70)], 4);
        v.take_previous(member(80), 4);
        assert_eq!(v.replicas(3), vec![member(80), member(70)]);
    }

    #[test]
    fn a_small_ring_has_fewer_replicas_than_the_factor() {
        let mut v = view(200, 100, 200);
        // prev's own chain comes straight back round to this node.
        v.adopt_predecessors(&[member(100)], 3);
        assert_eq!(v.replicas(3), vec![member(200)]);
        assert!(View::first(member(1)).replicas(3).is_empty());
    }

    #[test]
    fn replica_arcs_are_the_arcs_of_the_nearest_successors() {
        let mut v = view(10, 100, 200);
        v.adopt_successors(&[member(300), member(10), member(100)], 3);
        assert_eq!(
            v.replica_arcs(3),
            vec![
                (member(200), Arc::new(Position(200), Position(300))),
                (member(300), Arc::new(Position(300), Position(10))),
            ]
        );
        assert_eq!(v.replica_arcs(2).len(), 1);
        assert_eq!(v.kept_arc(3), Arc::new(Position(100), Position(10)));
        assert_eq!(v.kept_arc(1), v.arc());
        assert!(v.replica_arcs(1).is_empty());
        // In a ring of two, the other node's arc runs up to this node.
        let two = view(200, 100, 200);
        assert_eq!(
            two.replica_arcs(3),
            vec![(member(200), Arc::new(Position(200), Position(100)))]
        );
        // ... and it keeps every entry.
        assert_eq!(two.kept_arc(3), Arc::whole(Position(100)));
        assert!(View::first(member(1)).replica_arcs(3).is_empty());
    }

    #[test]
    fn a_successor_list_still_being_learned_is_not_a_small_ring() {
        // A big ring, but only `next` known so far (its backups just failed).
        let v = view(10, 100, 200);
        assert!(!v.list_wraps());
        assert_eq!(v.replica_target(3), 2);
        // The arc of `next` has no known end: not claimed as replicated.
        assert!(v.replica_arcs(3).is_empty());
        // A ring of two: the list wraps, one replica is all there can be.
        let two = view(200, 100, 200);
        assert!(two.list_wraps());
        assert_eq!(two.replica_target(3), 1);
        assert_eq!(View::first(member(1)).replica_target(3), 0);
    }

    #[test]
    fn a_node_that_left_forwards_to_its_former_predecessor() {
        let mut v = view(10, 100, 200);
        v.state = NodeState::Left;
        assert_eq!(v.route(Position(150), false), Route::Forward(member(10)));
        assert_eq!(v.check_join(Position(150)), Err(JoinRefusal::NotServing));
    }

    #[test]
    fn clockwise_only_routing_avoids_prev() {
        let v = view(10, 100, 200);
        assert_eq!(v.route(Position(50), true), Route::Forward(member(200)));
    }

    #[test]
    fn a_node_alone_owns_every_position() {
        let v = View::first(member(100));
        for p in [0, 99, 100, u64::MAX] {
            assert_eq!(v.route(Position(p), false), Route::Local);
        }
    }

    #[test]
    fn a_joining_node_serves_nothing() {
        assert_eq!(
            View::joining(member(1)).route(Position(1), false),
            Route::NotServing
        );
    }

    #[test]
    fn positions_in_the_arc_are_local_and_others_go_the_short_way() {
        let v = view(10, 100, 200);
        assert_eq!(v.route(Position(150), false), Route::Local);
        assert_eq!(v.route(Position(250), false), Route::Forward(member(200)));
        assert_eq!(v.route(Position(50), false), Route::Forward(member(10)));
    }

    #[test]
    fn positions_in_a_handoff_wait() {
        let mut v = view(10, 100, 200);
        v.handoff = Some(Arc::new(Position(150), Position(200)));
        assert_eq!(v.route(Position(160), false), Route::Wait);
        assert_eq!(v.route(Position(120), false), Route::Local);
    }

    #[test]
    fn a_joiner_may_split_only_the_arc_it_falls_in() {
        let v = view(10, 100, 200);
        assert_eq!(
            v.check_join(Position(150)),
            Ok(Arc::new(Position(150), Position(200)))
        );
        assert_eq!(
            v.check_join(Position(250)),
            Err(JoinRefusal::NotMyArc {
                towards: member(200)
            })
        );
        assert_eq!(
            v.check_join(Position(100)),
            Err(JoinRefusal::Taken {
                holder: member(100)
            })
        );
        assert_eq!(
            View::joining(member(1)).check_join(Position(5)),
            Err(JoinRefusal::NotServing)
        );
    }

    #[test]
    fn a_wrapping_arc_accepts_joiners_past_zero() {
        let v = view(100, u64::MAX - 10, 5);
        assert!(v.check_join(Position(2)).is_ok());
        assert!(v.check_join(Position(u64::MAX)).is_ok());
    }

    #[test]
    fn a_table_sends_a_query_straight_to_the_owner() {
        let v = view(10, 100, 200);
        let mut t = RoutingTable::new(member(100));
        t.extend([member(10), member(200), member(300), member(400)]);
        assert_eq!(
            v.route_by_table(&t, Position(350), 0, false),
            Route::Forward(member(300))
        );
        // The view decides what is local, whatever the table says.
        assert_eq!(v.route_by_table(&t, Position(150), 0, false), Route::Local);
    }

    #[test]
    fn after_the_table_hops_the_ring_walk_takes_over() {
        let v = view(10, 100, 200);
        let mut t = RoutingTable::new(member(100));
        t.extend([member(300)]);
        assert_eq!(
            v.route_by_table(&t, Position(350), TABLE_HOPS, false),
            Route::Forward(member(200))
        );
    }

    #[test]
    fn a_table_naming_this_node_for_an_arc_it_handed_on_walks_the_ring() {
        // This node's arc shrank to [100, 150): a joiner took [150, 200).
        let v = view(10, 100, 150);
        let t = RoutingTable::new(member(100));
        assert_eq!(
            v.route_by_table(&t, Position(170), 0, false),
            Route::Forward(member(150))
        );
    }

    #[test]
    fn joining_and_departed_nodes_ignore_the_table() {
        let mut t = RoutingTable::new(member(100));
        t.extend([member(300)]);
        let joining = View::joining(member(100));
        assert_eq!(
            joining.route_by_table(&t, Position(350), 0, false),
            Route::NotServing
        );
        let mut left = view(10, 100, 200);
        left.state = NodeState::Left;
        assert_eq!(
            left.route_by_table(&t, Position(350), 0, false),
            Route::Forward(member(10))
        );
    }

    proptest::proptest! {
        /// Whatever each node's table holds (any subset of the live members,
        /// and members that have left the ring), a query routed from any live
        /// node reaches the owner, within the table hops plus a ring walk.
        #[test]
        fn stale_tables_cost_hops_never_a_wrong_owner_or_a_loop(
            ids in proptest::collection::btree_set(proptest::prelude::any::<u64>(), 2..24),
            departed in proptest::collection::btree_set(proptest::prelude::any::<u64>(), 0..4),
            masks in proptest::collection::vec(proptest::prelude::any::<u64>(), 24),
            start in proptest::prelude::any::<proptest::sample::Index>(),
            position in proptest::prelude::any::<u64>(),
        ) {
            use std::collections::BTreeMap;
            let live: Vec<u64> = ids.iter().copied().collect();
            let departed: Vec<u64> = departed.into_iter().filter(|d| !ids.contains(d)).collect();
            let ring: BTreeMap<Position, ()> = live.iter().map(|i| (Position(*i), ())).collect();
            let n = live.len();
            let mut nodes: BTreeMap<u64, (View, RoutingTable)> = BTreeMap::new();
            for (i, id) in live.iter().enumerate() {
                let v = view(live[(i + n - 1) % n], *id, live[(i + 1) % n]);
                let mut t = RoutingTable::new(member(*id));
                let everyone = live.iter().chain(departed.iter());
                t.extend(everyone.enumerate()
                    .filter(|(k, _)| masks[i] >> (k % 64) & 1 == 1)
                    .map(|(_, m)| member(*m)));
                nodes.insert(*id, (v, t));
            }
            for d in &departed {
                // A departed node forwards everything to its former predecessor.
                let prev = crate::ring::predecessor(&ring, Position(*d)).unwrap().0;
                let mut v = view(prev.0, *d, *d);
                v.state = NodeState::Left;
                nodes.insert(*d, (v, RoutingTable::new(member(*d))));
            }
            let owner = crate::ring::owner(&ring, Position(position)).unwrap().0;
            let mut at = live[start.index(n)];
            let mut hops = 0u32;
            loop {
                let (v, t) = &nodes[&at];
                match v.route_by_table(t, Position(position), hops, false) {
                    Route::Local => break,
                    Route::Forward(to) => { at = to.id.0; hops += 1; }
                    other => proptest::prop_assert!(false, "unexpected route {other:?}"),
                }
                proptest::prop_assert!(hops as usize <= 2 * TABLE_HOPS as usize + n + 1, "looping: {hops} hops");
            }
            proptest::prop_assert_eq!(Position(at), owner);
        }
    }
}
