//! Replicated append-only logs (the seed calls them RedEX channels): the pieces of the
//! replication machine, each pure and tested on its own.
//!
//! This module owns the log storage trait and its in-memory implementation ([`store`]), the
//! replication settings and their validation ([`config`]), the role machine with its validated
//! transitions, the deterministic election, heartbeat tracking and the catch-up bandwidth
//! budget ([`role`]), per-log metrics with their Prometheus rendering ([`metrics`]), and the
//! replica machine that composes them ([`machine`]: terms won by a majority, quorum
//! acknowledgements, pull catch-up, repair of a deposed leader's suffix), and the table of a
//! node's logs ([`host`]: placement, the persistence gate, tails, status) that
//! [`crate::Node::open_log`] drives over the sessions. The wire messages are in
//! [`crate::wire::sync`]. None of it sends, persists or reads a clock.

pub mod config;
pub mod host;
pub mod machine;
pub mod metrics;
pub mod role;
pub mod store;

pub use config::{Placement, ReplicationConfig, ReplicationConfigError, UnderCapacity};
pub use host::{LogError, LogEvent, LogHostStats, LogId, LogSpec, LogStatus};
pub use machine::{AppendError, Durability, LogReplica, Output};
pub use role::{Coordinator, ElectionOutcome, Role, Signal};
pub use store::{HardState, LogStore, MemLog, Retention, StoreError, Sync};
