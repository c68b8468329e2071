//! The interface between the simulator and the machines it runs.
//!
//! This module owns the [`Machine`] trait: the sans-IO shape every `proto-core` machine has
//! (feed an input with `now`, pull transmits and events, read the next deadline), and its
//! implementation for [`proto_core::Node`]. The simulator drives a machine exactly by the core's
//! drain rule; it never reaches inside one.

use std::fmt;
use std::net::SocketAddr;

use proto_core::{Instant, Node};

/// A machine broke the sans-IO contract (or refused an input); the run stops with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError(pub String);

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "contract error: {}", self.0)
    }
}

/// A sans-IO state machine the simulator can run.
pub trait Machine {
    /// What the machine tells its application.
    type Event: fmt::Debug;

    /// Feeds one received datagram.
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ContractError>;

    /// Tells the machine that `now` has come.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), ContractError>;

    /// Writes the next datagram into `buf`: its destination and length.
    fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, ContractError>;

    /// The next event.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// The next instant the machine wants to be woken at.
    fn poll_timeout(&self) -> Option<Instant>;

    /// A one-line description of an event for the trace: ids and lengths, never payloads or
    /// keys.
    fn describe(event: &Self::Event) -> String {
        format!("{event:?}")
    }
}

/// `poll_transmit` for a machine that queues whole datagrams: the front one is copied into
/// `buf` (or a typed error if it does not fit, and it stays queued).
pub fn pop_datagram(
    queue: &mut std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    buf: &mut [u8],
) -> Result<Option<(SocketAddr, usize)>, ContractError> {
    let Some((to, bytes)) = queue.front() else {
        return Ok(None);
    };
    let (to, len) = (*to, bytes.len());
    buf.get_mut(..len)
        .ok_or_else(|| ContractError(format!("buffer too small for a {len}-byte datagram")))?
        .copy_from_slice(bytes);
    queue.pop_front();
    Ok(Some((to, len)))
}

impl Machine for Node {
    type Event = proto_core::Event;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ContractError> {
        Node::handle_datagram(self, now, from, bytes).map_err(|e| ContractError(e.to_string()))
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), ContractError> {
        Node::handle_timeout(self, now).map_err(|e| ContractError(e.to_string()))
    }

    fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, ContractError> {
        Node::poll_transmit(self, now, buf)
            .map(|t| t.map(|t| (t.destination, t.len)))
            .map_err(|e| ContractError(e.to_string()))
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        Node::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self).map(|d| d.at)
    }

    /// An explicit, stable description (the trace hash covers it, so it must not follow
    /// `Debug` formatting changes).
    fn describe(event: &Self::Event) -> String {
        match event {
            proto_core::Event::Connected {
                session,
                peer,
                initiator,
                ..
            } => format!("connected {session} peer {peer} initiator {initiator}"),
            proto_core::Event::Datagram { session, data, .. } => {
                format!("datagram {session} len {}", data.len())
            }
            proto_core::Event::Disconnected {
                session, reason, ..
            } => format!("disconnected {session} {reason}"),
            proto_core::Event::Stream {
                session,
                stream,
                event,
            } => format!("stream {session} {} {event:?}", stream.0),
            proto_core::Event::Rpc(e) => format!("rpc {e:?}"),
            _ => "other".to_string(),
        }
    }
}
