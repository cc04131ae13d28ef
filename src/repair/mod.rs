//! Anti-entropy's decisions, as state machines: digests, entries and ring
//! members in, what to read, store, send and drop out. No I/O, no clock; the
//! node's anti-entropy loop (`node::replication`) makes the calls, paces them
//! and holds the locks.
//!
//! Why state machines: the order of an exchange (digest first, then only the
//! buckets that differ, a few at a time, each reconciled both ways) and the
//! conditions under which a node may give away and drop what it holds are the
//! protocol; here they can be read and tested without a peer.
//!
//! - [`arc_sync`]: one exchange of a replica arc with its owner ([`ArcSync`]).
//! - [`strays`]: when to sweep the entries a node holds outside the arcs it
//!   keeps, and to whom each goes ([`StraySweep`]).
//! - [`catch_up`]: when an owner may answer reads from its own store alone,
//!   and which copy a read answers while it may not ([`CatchUp`]).
//! - [`rounds`]: what each tick of the anti-entropy loop does ([`Rounds`]),
//!   and the pace of the entries it moves ([`Pacer`]).

pub mod arc_sync;
pub mod catch_up;
pub mod rounds;
pub mod strays;

pub use arc_sync::{ArcSync, BUCKETS, Exchanged, READ_BUCKETS, Step, WrongDigest};
pub use catch_up::CatchUp;
pub use rounds::{Pacer, Round, Rounds};
pub use strays::StraySweep;
