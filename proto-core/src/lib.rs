//! # proto-core: the Net protocol as pure state machines
//!
//! This crate is the whole protocol of the Net encrypted UDP mesh, with no I/O: it takes bytes
//! and timestamps and returns bytes, deadlines and events. It never opens a socket, never reads
//! a clock, never spawns a thread and never draws from the operating system's random source.
//! It is `#![no_std]` with `alloc`; the `std` feature only adds `std::error::Error` impls, and
//! the `aws-lc` feature adds the faster [`crypto::AwsLc`] provider.
//!
//! The main type is [`Node`]: one node per UDP socket, multiplexing many authenticated,
//! encrypted sessions with peers.
//!
//! ## The run loop
//!
//! A driver (io-tokio, io-smol, the io-sim simulator, or your own event loop) owns the socket
//! and the clock and does this, forever:
//!
//! 1. **Feed one input**, with the current time as an [`Instant`]:
//!    - a received datagram: [`Node::handle_datagram`]`(now, from, bytes)`;
//!    - a fired timer: [`Node::handle_timeout`]`(now)`;
//!    - an application command: [`Node::connect`], [`Node::send_datagram`], [`Node::close`].
//! 2. **Drain**: call [`Node::poll_transmit`]`(now, buf)` until it returns `Ok(None)`, sending
//!    each datagram it writes into `buf` (a buffer of at least `max_packet_size` bytes that you
//!    own and reuse); then call [`Node::poll_event`] until it returns `None`. Draining may make
//!    more output (a close, a keepalive): keep pulling until both are empty.
//! 3. **Sleep** until [`Node::poll_timeout`] or until a datagram arrives, whichever is first.
//!    While output is still queued the deadline is `now` (reason [`TimerReason::Output`]).
//!    The deadline is never earlier than the latest `now` the node has seen, and calling
//!    `handle_timeout` early or spuriously is harmless.
//! 4. **Bound the work** per wake-up (a budget of inputs and transmits) so one busy peer cannot
//!    starve the rest, and read the clock again after a timer fires instead of trusting the
//!    deadline.
//!
//! ```
//! use core::net::SocketAddr;
//! use proto_core::{Config, Identity, Instant, Node, PeerSpec, Seed, Event};
//!
//! let a_addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
//! let b_addr: SocketAddr = "127.0.0.1:4001".parse().unwrap();
//! let now = Instant::ZERO;
//! let mut a = Node::new(Config::new(Seed::from_u64(1)), Identity::from_seed(&Seed::from_u64(11)), now)?;
//! let mut b = Node::new(Config::new(Seed::from_u64(2)), Identity::from_seed(&Seed::from_u64(12)), now)?;
//!
//! let session = a.connect(now, b_addr, b.peer_spec())?;
//! a.send_datagram(now, session, b"hello")?;
//!
//! // A toy "network": move every datagram straight to the other node until both are quiet.
//! let mut buf = vec![0u8; 1500];
//! let mut got = Vec::new();
//! loop {
//!     let mut moved = false;
//!     while let Some(t) = a.poll_transmit(now, &mut buf)? {
//!         b.handle_datagram(now, a_addr, &buf[..t.len])?;
//!         while let Some(ev) = b.poll_event() { got.push(ev); }
//!         moved = true;
//!     }
//!     while let Some(t) = b.poll_transmit(now, &mut buf)? {
//!         a.handle_datagram(now, b_addr, &buf[..t.len])?;
//!         while let Some(ev) = a.poll_event() { got.push(ev); }
//!         moved = true;
//!     }
//!     if !moved { break; }
//! }
//! assert!(got.iter().any(|e| matches!(e, Event::Datagram { data, .. } if data == b"hello")));
//! # Ok::<(), proto_core::Error>(())
//! ```
//!
//! ## The drain rule, and what happens when it is broken
//!
//! Output is queued inside the node until it is pulled, and every queue is bounded. If a
//! driver feeds more I/O input while output from an earlier input is still queued, that output
//! is late (a handshake retransmits, a keepalive is delayed, received datagrams pile up).
//! With [`Config::strict_drain`] (on by default in debug builds) the node refuses such input
//! with [`Error::Undrained`], leaving the datagram unconsumed, so the bug shows up in tests.
//! Without it the node carries on, and the bounds apply: control messages beyond
//! `max_queued_control` and received datagrams beyond `max_queued_received` are dropped and
//! counted in [`NodeStats::drops`]. Commands (`send_datagram`) are not refused for undrained
//! output; a full per-session queue is [`Error::QueueFull`].
//!
//! ## Errors
//!
//! - Bad input from the network (truncated, oversized, tampered, replayed, wrong version,
//!   wrong key, out of state) is dropped, counted per reason in [`DropCounters`], and changes
//!   nothing else. It never panics and never grows memory beyond the configured bounds.
//! - A session that ends is an [`Event::Disconnected`] with a [`DisconnectReason`].
//! - A caller's mistake (buffer too small, unknown session, queue full) is an [`Error`] and
//!   changes nothing.
//!
//! ## Time and randomness
//!
//! [`Instant`] is a nanosecond count from an origin the driver chooses; durations are
//! [`core::time::Duration`]. A `now` earlier than one seen before is clamped and counted
//! ([`NodeStats::time_went_backwards`]). All randomness (ephemeral keys, session indices,
//! jitter, cookie secrets) is derived from the 32-byte [`Seed`] in the [`Config`], one
//! sub-stream per purpose: the same seed and the same inputs give the same outputs, byte for
//! byte.
//!
//! ## Layers
//!
//! - [`wire`]: packet and frame codecs (see `docs/wire.md`).
//! - [`crypto`]: the provider trait and its implementations.
//! - [`identity`]: ed25519 identities, [`NodeId`], the static-key binding.
//! - `handshake`: Noise IK/XX over snow (internal; driven by the node).
//! - [`session`]: packet protection, replay window, key updates; drivable on its own.
//! - [`stream`]: reliable streams, many per session.
//! - [`rpc`]: nRPC calls in four shapes, riding streams.
//! - [`replication`]: the building blocks of replicated logs.
//! - [`Node`]: sessions multiplexed over one socket, with their streams and calls.

#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod config;
mod cookie;
pub mod crypto;
mod handshake;
pub mod identity;
mod node;
pub mod replay;
pub mod replication;
pub mod rng;
pub mod rpc;
pub mod session;
pub mod stream;
pub mod time;
pub mod wire;

pub use config::{Config, ConfigError};
pub use handshake::HandshakeError;
pub use identity::{Identity, NodeId, PublicIdentity};
pub use node::{
    CallHandle, Deadline, DisconnectReason, DropCounters, Error, Event, Node, NodeStats, PeerSpec,
    SessionId, SessionInfo, StreamHandle, TimerReason, Transmit,
};
pub use rng::Seed;
pub use stream::{Mode, ResetOrigin, StreamError, StreamEvent, StreamId, StreamStats};
pub use time::{Clock, Instant};
