//! The node at its edge: the gRPC service (`service`), the pool of channels
//! to peers (`peers`), probes and anti-entropy's calls of a peer (`calls`), the calls
//! coalesced per peer (`pipes`, `forwards`), the checks of a peer's entries (`entries`), the conversions
//! of the node's own types (`wire`: summaries, watch events, listings,
//! neighbour registration, lease and route metadata), queries, answers and
//! batches (`queries`), replica writes received (`replicas`), a hand-off's
//! messages and errors (`hand_off`), the registry's heartbeats and verdicts
//! (`judging`), and what `grpc.health.v1` says (`health`). Wire types stop
//! here.

pub(super) mod calls;
pub(super) mod entries;
pub(super) mod forwards;
pub(super) mod hand_off;
pub(super) mod health;
pub(super) mod judging;
pub(super) mod peers;
pub(super) mod pipes;
pub(super) mod queries;
pub(super) mod replicas;
pub(super) mod service;
pub(super) mod wire;
