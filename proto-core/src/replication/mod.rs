//! Replicated append-only logs (the seed calls them RedEX channels): the pieces of the
//! replication machine, each pure and tested on its own.
//!
//! This module owns the log storage trait and its in-memory implementation ([`store`]), the
//! replication settings and their validation ([`config`]), the role machine with its validated
//! transitions, the deterministic election, heartbeat tracking and the catch-up bandwidth
//! budget ([`role`]), and per-log metrics with their Prometheus rendering ([`metrics`]). The
//! wire messages are in [`crate::wire::sync`]. None of it sends, persists or reads a clock.
//!
//! Status: these are the building blocks. The replication protocol that composes them (terms
//! acknowledged by a majority, quorum-acknowledged appends, catch-up over streams, truncation
//! of a deposed leader's suffix) and its simulation tests are the rest of the work; see
//! `docs/replication.md`.

pub mod config;
pub mod metrics;
pub mod role;
pub mod store;

pub use config::{Placement, ReplicationConfig, ReplicationConfigError, UnderCapacity};
pub use role::{Coordinator, ElectionOutcome, Role, Signal};
pub use store::{LogStore, MemLog, Retention, StoreError};
