//! Reliable streams (being built): the pieces of loss recovery and congestion control that do
//! not depend on the stream state machine itself.
//!
//! This module owns the round-trip estimator, the congestion controllers and the fair
//! scheduler. It never sends,
//! never reads a clock, and never looks at packet contents: the stream layer feeds it samples
//! and events with `now`.

pub mod bbr;
pub mod cc;
pub mod recv;
pub mod rtt;
pub mod sched;
pub mod send;
