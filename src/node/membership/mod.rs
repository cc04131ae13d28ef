//! Who is in the ring, and where: finding the ring (`discovery`), joining it
//! (`join`, the contact's decisions made by `admission`, with the arc
//! streamed over by `handoff`, in the order `sending` sets, the receiver's
//! decisions made by `intake`, while `migration` keeps it served), leaving
//! it (`leave`), and repairing it after failures (`maintain`: probes,
//! verdicts from [`crate::failure`], leases).

pub(super) mod admission;
pub(super) mod discovery;
pub(super) mod handoff;
pub(super) mod intake;
pub(super) mod join;
pub(super) mod leave;
pub(super) mod maintain;
pub(super) mod migration;
pub(super) mod sending;
