//! Half-open arcs of the ring, which may wrap past `u64::MAX`.

use super::Position;

/// The half-open arc `[start, end)` walked clockwise. `start == end` means the whole
/// ring (a node alone owns everything), never the empty arc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arc {
    /// First position in the arc.
    pub start: Position,
    /// First position after the arc.
    pub end: Position,
}

impl Arc {
    /// The arc `[start, end)`; the whole ring when `start == end`.
    pub fn new(start: Position, end: Position) -> Self {
        Self { start, end }
    }

    /// The arc of the single position `p`.
    pub fn point(p: Position) -> Self {
        Self::new(p, Position(p.0.wrapping_add(1)))
    }

    /// The whole ring, starting (and ending) at `start`.
    pub fn whole(start: Position) -> Self {
        Self { start, end: start }
    }

    /// Whether `p` lies in the arc.
    pub fn contains(&self, p: Position) -> bool {
        self.start == self.end || self.start.distance_to(p) < self.start.distance_to(self.end)
    }

    /// How many positions the arc spans, as a share of the ring in `[0, 1]`.
    pub fn share(&self) -> f64 {
        if self.start == self.end {
            1.0
        } else {
            self.start.distance_to(self.end) as f64 / 2f64.powi(64)
        }
    }

    /// How many positions the arc spans: `2^64` for the whole ring.
    pub fn span(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            u128::from(self.start.distance_to(self.end))
        }
    }

    /// Whether this arc and `other` share a position.
    pub fn overlaps(&self, other: &Arc) -> bool {
        self.contains(other.start) || other.contains(self.start)
    }

    /// Whether every position of `inner` lies in this arc.
    pub fn covers(&self, inner: &Arc) -> bool {
        if self.start == self.end {
            return true;
        }
        let offset = u128::from(self.start.distance_to(inner.start));
        offset + inner.span() <= self.span()
    }

    /// The arc as at most two non-wrapping inclusive ranges of `u64`, for range scans
    /// over stores ordered by position.
    pub fn ranges(&self) -> Vec<std::ops::RangeInclusive<u64>> {
        let (s, e) = (self.start.0, self.end.0);
        if s == e {
            vec![0..=u64::MAX]
        } else if s < e {
            vec![s..=e - 1]
        } else if e == 0 {
            vec![s..=u64::MAX]
        } else {
            vec![s..=u64::MAX, 0..=e - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_arc_covers_its_sub_arcs_and_nothing_wider() {
        let a = Arc::new(Position(100), Position(10)); // wraps
        assert!(a.covers(&Arc::new(Position(150), Position(5))));
        assert!(a.covers(&a));
        assert!(!a.covers(&Arc::new(Position(50), Position(5))));
        assert!(!a.covers(&Arc::new(Position(150), Position(20))));
        assert!(!a.covers(&Arc::whole(Position(100))));
        assert!(Arc::whole(Position(7)).covers(&a));
        assert!(Arc::whole(Position(7)).covers(&Arc::whole(Position(3))));
    }

    #[test]
    fn a_plain_arc_is_half_open() {
        let a = Arc::new(Position(10), Position(20));
        assert!(a.contains(Position(10)));
        assert!(a.contains(Position(19)));
        assert!(!a.contains(Position(20)));
        assert!(!a.contains(Position(9)));
    }

    #[test]
    fn a_wrapping_arc_covers_both_ends_of_the_space() {
        let a = Arc::new(Position(u64::MAX - 1), Position(2));
        assert!(a.contains(Position(u64::MAX)));
        assert!(a.contains(Position(0)));
        assert!(a.contains(Position(1)));
        assert!(!a.contains(Position(2)));
        assert!(!a.contains(Position(u64::MAX - 2)));
    }

    #[test]
    fn equal_ends_mean_the_whole_ring() {
        let a = Arc::whole(Position(42));
        assert!(a.contains(Position(0)) && a.contains(Position(u64::MAX)));
        assert_eq!(a.share(), 1.0);
    }

    #[test]
    fn arcs_overlap_when_they_share_a_position() {
        let arc = |s, e| Arc::new(Position(s), Position(e));
        assert!(arc(10, 20).overlaps(&arc(19, 30)));
        assert!(arc(19, 30).overlaps(&arc(10, 20)));
        assert!(!arc(10, 20).overlaps(&arc(20, 30)));
        assert!(arc(u64::MAX - 5, 5).overlaps(&arc(2, 3)));
        assert!(!arc(u64::MAX - 5, 5).overlaps(&arc(5, 6)));
        assert!(arc(7, 7).overlaps(&arc(100, 101)));
    }

    proptest! {
        #[test]
        fn ranges_agree_with_contains(s in any::<u64>(), e in any::<u64>(), p in any::<u64>()) {
            let arc = Arc::new(Position(s), Position(e));
            let in_ranges = arc.ranges().iter().any(|r| r.contains(&p));
            prop_assert_eq!(in_ranges, arc.contains(Position(p)));
        }

        #[test]
        fn arcs_overlap_exactly_when_a_position_lies_in_both(
            s in 0u64..64, e in 0u64..64, s2 in 0u64..64, e2 in 0u64..64,
        ) {
            // Small arcs near zero and near the top, so that wrapping ones
            // and ones that share a few positions are common.
            let near = |p: u64| Position(p.wrapping_sub(32));
            let (a, b) = (Arc::new(near(s), near(e)), Arc::new(near(s2), near(e2)));
            if s != e && s2 != e2 {
                let shared = (0u64..64).any(|p| a.contains(near(p)) && b.contains(near(p)));
                prop_assert_eq!(a.overlaps(&b), shared);
            }
        }

        #[test]
        fn ranges_agree_at_the_edges(s in any::<u64>(), e in any::<u64>()) {
            let arc = Arc::new(Position(s), Position(e));
            for p in [0, u64::MAX, s, e, s.wrapping_sub(1), e.wrapping_sub(1)] {
                let in_ranges = arc.ranges().iter().any(|r| r.contains(&p));
                prop_assert_eq!(in_ranges, arc.contains(Position(p)));
            }
        }
    }
}
