//! The wall clock: what versions, expiries and tombstone ages are measured in.
//!
//! Every read of the wall clock in the library goes through [`now_micros`], so
//! that a simulation can substitute its own (virtual) clock once, for the whole
//! process, with [`set_wall_clock`]. Durations (timeouts, probes, intervals) are
//! measured with `tokio::time`, which a paused or simulated runtime already
//! controls.

use std::sync::OnceLock;

/// The substituted wall clock, if any.
static WALL_CLOCK: OnceLock<fn() -> u64> = OnceLock::new();

/// The wall clock in microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    match WALL_CLOCK.get() {
        Some(clock) => clock(),
        None => system_micros(),
    }
}

/// The system's clock in microseconds since the Unix epoch (0 before it).
pub fn system_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Makes `clock` this process's wall clock, for a simulation whose time is
/// virtual. Once per process: `false` (and nothing changed) if a clock was
/// already set.
pub fn set_wall_clock(clock: fn() -> u64) -> bool {
    WALL_CLOCK.set(clock).is_ok()
}
