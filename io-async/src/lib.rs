//! The runtime-agnostic async layer of the Net drivers.
//!
//! This crate owns the drive loop that runs a [`proto_core::Node`] on a UDP socket, and the
//! handles applications use: [`Endpoint`], [`Connection`], [`Stream`], the nRPC client
//! ([`CallBuilder`]) and server ([`Service`]), and replicated logs ([`Log`]). It is generic
//! over a small object-safe [`Runtime`] trait (clock, timers, spawn, UDP sockets), which
//! `io-tokio` and `io-smol` implement over real sockets and `io-sim` on virtual time, so the
//! same application code runs on all three.
//!
//! It never does I/O itself and never reads a clock: both come from the runtime.
//!
//! # How it runs
//!
//! [`Endpoint::bind`] spawns one task, the drive loop (see the `driver` module's source for
//! its exact order), which is the only code that feeds the node datagrams and timer firings.
//! Handles lock the shared state, call the node directly (a write, a call, an append), and
//! wake the drive loop to send what they queued. Everything a handle waits for (bytes to
//! read, a reply, an acknowledgement) is an event the drive loop hands to the handle's slot
//! before waking it.
//!
//! # Bounds
//!
//! Every queue this layer adds is bounded and counted when full: received datagrams per
//! connection ([`EndpointConfig::datagram_queue`]), sessions waiting for `accept`
//! ([`EndpointConfig::accept_queue`]). Streams and calls are bounded by the core's flow
//! control and message credit: nothing arrives that the core did not grant.

mod batch;
mod client;
pub mod demo;
mod driver;
mod endpoint;
mod error;
#[cfg(feature = "kernel")]
pub mod kernel;
mod log;
mod resilient;
mod runtime;
mod server;
mod state;
mod stream;
mod sync;
mod wake;

pub use client::{CallBuilder, Cancel, ReplyFuture, RequestSink, ResponseStream};
pub use endpoint::{
    os_seed, Connecting, Connection, Endpoint, EndpointConfig, CLOSE_REFUSED, CLOSE_SHUTDOWN,
};
pub use error::{BindError, ConnectError, ConnectionError};
pub use log::{Appended, Log, LogTail};
pub use resilient::Breaker;
pub use runtime::{AsyncTimer, AsyncUdpSocket, RecvMeta, Runtime, Task};
pub use server::{BoxFuture, Request, Requests, Responses, Service, Status};
pub use state::DriverStats;
pub use stream::{Stream, RESET_DROPPED};

pub use proto_core;
