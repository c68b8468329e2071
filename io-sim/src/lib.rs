//! # io-sim: a deterministic simulator for sans-IO machines
//!
//! Many hosts run in one thread on virtual time. Each host runs a `proto-core` machine (the
//! [`proto_core::Node`], or anything implementing [`Machine`]) and sees its own clock; the
//! links between them delay, serialise, drop (randomly or in bursts), duplicate, reorder and
//! corrupt datagrams; partitions, crashes, restarts and pauses happen on a schedule. Every
//! delivered, dropped or corrupted datagram, timer firing, machine event and fault goes into a
//! [`Trace`] whose running BLAKE3 hash identifies the run: the same seed gives the same hash,
//! in one process or two.
//!
//! ```
//! use std::time::Duration;
//! use io_sim::{LinkConfig, World};
//! use proto_core::{Config, Event, Identity, Node};
//!
//! let mut world: World<Node> = World::new(7);
//! world.set_default_link(LinkConfig { loss_ppm: 50_000, ..LinkConfig::with_latency(Duration::from_millis(20)) });
//! let node = |n: u64| move |s: &io_sim::HostSetup| {
//!     let mut c = Config::new(s.seed.clone());
//!     c.strict_drain = true;
//!     Node::new(c, Identity::from_seed(&proto_core::Seed::from_u64(n)), s.now).unwrap()
//! };
//! let a = world.add_host("a", "10.0.0.1:1".parse().unwrap(), node(1));
//! let b = world.add_host("b", "10.0.0.2:1".parse().unwrap(), node(2));
//! let b_addr = world.addr(b).unwrap();
//! let spec = world.machine(b).unwrap().peer_spec();
//! world.with_machine(a, |m, now| m.connect(now, b_addr, spec).unwrap());
//! world.run_for(Duration::from_secs(5)).unwrap();
//! assert!(world.events(b).iter().any(|(_, e)| matches!(e, Event::Connected { .. })));
//! println!("trace hash {}", world.trace().hash_hex());
//! ```
//!
//! ## What it owns and what it never does
//!
//! - [`world`]: the event queue ordered by (time, sequence), hosts, routing, faults, the drain
//!   rule, invariants checked after every step. It never reads a wall clock or an OS random
//!   source, and never iterates a randomly seeded map.
//! - [`link`]: the fate of one datagram on one directed link.
//! - [`clock`]: per-host skew and drift.
//! - [`fault`]: faults as data, with a text form for replay commands.
//! - [`trace`]: records, the hash, JSON lines.
//! - [`storage`]: simulated persistence with sync latency, crash loss and torn writes.
//! - [`shrink`]: reducing a failing fault schedule to a minimal one.
//! - [`asim`]: async applications (code written against `io_async`) on virtual time: a
//!   deterministic executor and simulated UDP implementing `io_async::Runtime`.
//! - [`transfer`], [`rpc`], [`replog`]: workloads with reference checks (a stream transfer;
//!   nRPC calls of every shape; replicated logs under a Jepsen-style history checker).

pub mod asim;
pub mod clock;
pub mod fault;
pub mod link;
pub mod machine;
pub mod meshlog;
pub mod replog;
pub mod rpc;
pub mod scenarios;
pub mod shrink;
pub mod storage;
pub mod trace;
pub mod transfer;
pub mod world;

pub use clock::ClockModel;
pub use fault::{format_schedule, parse_schedule, Fault, ScheduledFault};
pub use link::{DropReason, GilbertElliott, LinkConfig};
pub use machine::{ContractError, Machine};
pub use proto_core;
pub use storage::{Storage, StorageConfig};
pub use trace::{Trace, TraceEvent, TraceRecord};
pub use world::{Failure, HostSetup, World, WorldStats};

/// A host in a world: its index, in the order hosts were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);
