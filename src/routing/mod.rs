//! One-hop routing: every node keeps a table of the ring's members, so that a
//! query goes straight to its owner instead of walking the ring one neighbour at
//! a time (Dynamo's "zero-hop DHT"; Gupta, Liskov and Rodrigues, "One Hop
//! Lookups for Peer-to-Peer Overlays", HotOS 2003).
//!
//! The table is a *hint*, never an authority: the node that receives a query
//! decides by its own view whether it owns the key, and forwards on if not. A
//! stale table therefore costs a hop, never a wrong answer, and the route falls
//! back to the ring walk (which always ends at the owner) after a bounded number
//! of table hops, so two stale tables cannot bounce a query between them.
//!
//! Everything here is sans-IO: [`RoutingTable`] is plain data, and [`Sweep`] is
//! the state machine that relearns it by walking the ring along successor lists
//! (answers in, "ask this member next" out). The node's shell
//! (`node::routes`) runs the sweep over gRPC on a timer.
//!
//! # Layout
//!
//! - `table`: the members by ID, and who owns a position by them.
//! - `sweep`: relearning every member by walking successor lists.
//! - `attempts`: one query's retries and waits on its way to the owner.

mod attempts;
mod sweep;
mod table;

pub use attempts::{AfterFailure, AttemptSettings, Attempts, Failure, MAX_REWRITES};
pub use sweep::{Step, Sweep, SweepReply};
pub use table::RoutingTable;

/// How many times a query may be forwarded by routing tables before every
/// further hop takes the ring walk. Two allow one hop through a stale table and
/// one more through the receiver's (fresher) table.
pub const TABLE_HOPS: u32 = 2;
