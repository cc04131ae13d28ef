//! Keeping `factor` copies of every arc: the write path to the replicas
//! (`replicate`, over per-replica queues in `pipeline`), replicas catching up
//! with owners by digests (`anti_entropy`), an owner that may be behind
//! reading with its replicas (`catch_up`), and entries outside the kept arc
//! going to their owners (`strays`).

pub(super) mod anti_entropy;
pub(super) mod catch_up;
pub(super) mod pipeline;
pub(super) mod replicate;
pub(super) mod strays;
