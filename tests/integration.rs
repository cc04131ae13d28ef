//! The integration tests, one module per file beside this one, built as one
//! test binary. As one binary per file (Cargo's default), each of the 28
//! files compiled its own copy of the fixtures and of the generic code it
//! uses from the dependencies, and linked its own 100 MB executable: 305 s
//! of the 914 s of compiling in a clean `cargo test --no-run` (`--timings`,
//! 2026-11-29, 2 cores), and 7 min 41 s of wall time. As this binary and
//! `t76_tracing`: 26 s of 545 s, and 4 min 34 s. Run one file's tests with
//! `cargo test --test integration t30_joins::`.
//!
//! Two test binaries stay apart: `t76_tracing` installs a process-wide log
//! subscriber that keeps every line, and `t91_simulation` runs the nodes in
//! virtual time and replays seeds by running itself again.

mod common;
mod t10_registry;
mod t20_queries;
mod t22_compare_and_set;
mod t24_listing;
mod t26_expiry;
mod t27_watch;
mod t28_batch;
mod t30_joins;
mod t35_one_hop;
mod t40_bad_input;
mod t44_limits;
mod t50_reflection;
mod t60_processes;
mod t65_balance;
mod t70_gateway;
mod t72_readiness;
mod t74_metrics;
mod t75_browser;
mod t80_faults;
mod t82_hosts;
mod t83_partitions;
mod t84_security;
mod t85_churn;
mod t86_tls;
mod t95_persistence;
mod t96_replication;
mod t97_pauses;
