//! # Crusty Ring
//!
//! A distributed key-value store on a consistent-hashing ring. Keys and nodes sit
//! at `u64` positions (SHA-256 prefixes); a node owns the arc from its ID up to its
//! next neighbour's, and any node answers any key by forwarding towards its owner.
//! A registry assigns IDs and gives joiners a first contact. `docs/protocol.md`
//! describes the protocol: states, messages, invariants and failure cases.
//!
//! # Layout
//!
//! - [`ring`]: pure ring maths: positions, hashing, arcs, `owner()`, the balanced
//!   choice of a joiner's ID. No I/O.
//! - [`routing`]: one-hop routing tables, the sweep that relearns them, and a
//!   query's attempts on its way to the owner (retries and waits). No I/O.
//! - [`failure`]: failure detection as a state machine: probe results in,
//!   verdicts on `next` and `prev` out. No I/O, no clock.
//! - [`joining`]: the joiner's side of a join as a state machine: whom to
//!   ask, when to wait, fall back or give up. No I/O; time passed in.
//! - [`leaving`]: the leaver's side of a graceful leave as a state machine:
//!   whom to hand the arc to, when to retry or give up. No I/O; time passed in.
//! - [`replacing`]: replacing a dead `next` as a state machine: when to ask
//!   the registry for candidates, take the arc over, probe the new `next`,
//!   pass it over in turn or introduce this node to it. No I/O, no clock.
//! - [`lease`]: leases on ownership (when a node may serve its arc), so that
//!   an arc never has two serving owners: from `prev` or the registry, and
//!   takeovers that wait for the registry's verdict. No I/O; time passed in.
//! - [`acks`]: a replicated write's acknowledgement as a state machine: whom
//!   to send it to, when it counts as acknowledged. No I/O, no clock.
//! - [`repair`]: anti-entropy's decisions as state machines: the exchange of a
//!   replica arc with its owner (digests and entries in, what to read, store
//!   and send out), the sweep of stray entries (when, and to whom each goes),
//!   catching up (when an owner's own store answers reads, and which copy a
//!   read answers while it does not), and the rounds and pace of the loop.
//!   No I/O, no clock.
//! - [`store`]: local storage behind the [`store::Store`] trait: in memory, or on
//!   disk (redb, group commit, values read from disk behind an index of keys);
//!   digests of arcs for anti-entropy; the footprint measurement (`store-bench`).
//! - [`node`]: the DHT node: view, routing, forwarding, joins (the contact's
//!   decisions a state machine of their own, `admission`), hand-off (the
//!   sender's order, `sending`, and the receiver's decisions, `intake`), leave,
//!   failure detection and repair, replication, anti-entropy; its calls to
//!   peers (forwards to an owner, writes to a replica) coalesced per peer.
//! - [`gateway`]: the HTTP/JSON gateway: REST keys API, ring, OpenAPI, Swagger UI,
//!   page; the key methods the server calls before the router's lookup.
//! - [`registry`]: the registry service: membership, ID assignment, liveness;
//!   root leases and verdicts on deaths, the witness every takeover waits for
//!   (`registry::verdicts`, no I/O); a replay of ID assignment that measures
//!   balance (`crustyring balance`).
//! - [`metrics`]: what nodes and registries count, for Prometheus (`GET /metrics`).
//! - [`request_id`]: request IDs (`x-request-id`) carried across forwards and
//!   replica writes, and the per-request log line.
//! - [`clock`]: the wall clock (versions, expiries), which a simulation may
//!   replace with its virtual one.
//! - [`server`]: serving a router on a listener until shutdown, behind the
//!   gate that refuses calls without the credentials their path requires;
//!   problem+json error bodies; reflection.
//! - [`transport`]: the network seam: listening and dialling over TCP, or over
//!   a simulated network (the deterministic simulation runs the shipped code
//!   on one).
//! - [`security`]: who may call what (open, client, peer), and the
//!   credentials every client sends.
//! - [`proto`]: generated gRPC code, and the wire forms of the ring's and the
//!   store's plain types (the node's own types convert in `node`).
//! - [`launch`]: starting a node: its server, gRPC and gateway on one port,
//!   its way into the ring, its loops.
//! - [`cluster`]: a registry and nodes in one process (the default binary, tests).
//! - [`cli`]: flags shared by the binaries, shutdown signal, logging.
//! - [`client`]: client calls used by the command line (`put`, `get`, `ring`, ...).
//! - [`bench`](mod@bench): the load tool.
//!
//! The modules form layers: each uses only modules below it (`ring`, `clock`,
//! `metrics` and `transport` at the bottom, `launch`, `cluster`, `client`,
//! `cli` and `bench` at the top). A unit test (`layers`) reads the sources and
//! fails on a cycle.

pub mod acks;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod failure;
#[cfg(test)]
mod fuzzing;
pub mod gateway;
pub mod joining;
pub mod launch;
#[cfg(test)]
mod layers;
pub mod lease;
pub mod leaving;
pub mod metrics;
pub mod node;
pub mod proto;
pub mod registry;
pub mod repair;
pub mod replacing;
pub mod request_id;
pub mod ring;
pub mod routing;
pub mod security;
pub mod server;
pub mod store;
pub mod transport;
