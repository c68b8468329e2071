//! io-sim: the deterministic simulator for `proto-core` machines.
//!
//! Its world (virtual time, links with faults, traces, shrinking, the `net-sim` command) is the
//! subject of its own issue; until then the in-memory pair harness in the `net-tests` crate is
//! what exercises nodes under latency, loss, duplication and reordering.

pub use proto_core;
