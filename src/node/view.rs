//! A node's view of the ring and the decisions made from it, as pure functions:
//! where a query goes, whether a joiner may split this node's arc. No I/O here; the
//! service shells call these under the node's view lock.

use crate::ring::{Arc, Member, Position};

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Started, not yet part of the ring: owns nothing, serves nothing.
    Joining,
    /// Part of the ring: owns its arc and serves queries.
    Serving,
}

impl NodeState {
    /// The state's name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Serving => "serving",
        }
    }
}

/// What a node knows of the ring.
#[derive(Debug, Clone)]
pub struct View {
    /// This node.
    pub me: Member,
    /// The previous member (closest smaller ID, wrapping); `me` when alone.
    pub prev: Member,
    /// The next member (closest greater ID, wrapping); `me` when alone.
    pub next: Member,
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
            me,
            state: NodeState::Joining,
            handoff: None,
        }
    }

    /// The view of the first node of a ring: alone, owning everything.
    pub fn alone(me: Member) -> Self {
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
    pub fn route(&self, position: Position) -> Route {
        if self.state != NodeState::Serving {
            return Route::NotServing;
        }
        if self.arc().contains(position) {
            return match self.handoff {
                Some(arc) if arc.contains(position) => Route::Wait,
                _ => Route::Local,
            };
        }
        let clockwise = self.me.id.distance_to(position);
        let counter_clockwise = position.distance_to(self.me.id);
        if counter_clockwise < clockwise && self.prev.id != self.me.id {
            Route::Forward(self.prev.clone())
        } else {
            Route::Forward(self.next.clone())
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
            return match self.route(id) {
                Route::Forward(towards) => Err(JoinRefusal::NotMyArc { towards }),
                // Unreachable in practice: a position outside the arc always routes
                // away. Refuse as "try later" rather than guess.
                _ => Err(JoinRefusal::NotServing),
            };
        }
        Ok(Arc::new(id, self.next.id))
    }
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
            ..View::alone(member(me))
        }
    }

    #[test]
    fn a_node_alone_owns_every_position() {
        let v = View::alone(member(100));
        for p in [0, 99, 100, u64::MAX] {
            assert_eq!(v.route(Position(p)), Route::Local);
        }
    }

    #[test]
    fn a_joining_node_serves_nothing() {
        assert_eq!(
            View::joining(member(1)).route(Position(1)),
            Route::NotServing
        );
    }

    #[test]
    fn positions_in_the_arc_are_local_and_others_go_the_short_way() {
        let v = view(10, 100, 200);
        assert_eq!(v.route(Position(150)), Route::Local);
        assert_eq!(v.route(Position(250)), Route::Forward(member(200)));
        assert_eq!(v.route(Position(50)), Route::Forward(member(10)));
    }

    #[test]
    fn positions_in_a_handoff_wait() {
        let mut v = view(10, 100, 200);
        v.handoff = Some(Arc::new(Position(150), Position(200)));
        assert_eq!(v.route(Position(160)), Route::Wait);
        assert_eq!(v.route(Position(120)), Route::Local);
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
}
