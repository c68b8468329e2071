//! The values that cross the [`Node`](super::Node) boundary: ids, events, transmits,
//! deadlines, errors and counters.

use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::config::ConfigError;
use crate::handshake::HandshakeError;
use crate::identity::{NodeId, PublicIdentity};
use crate::stream::{StreamError, StreamEvent, StreamId};
use crate::time::Instant;
use crate::wire::Pattern;

/// A session as the application names it. Never reused within one node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

/// What the initiator knows of the peer it connects to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSpec {
    /// Refuse the session unless the peer authenticates as this identity.
    pub identity: Option<PublicIdentity>,
    /// The peer's Noise static public key: with it the handshake is IK (one round trip),
    /// without it XX (one and a half).
    pub static_key: Option<[u8; 32]>,
}

impl PeerSpec {
    /// Any peer that answers at the address (XX; the identity is learned).
    #[must_use]
    pub fn any() -> PeerSpec {
        PeerSpec::default()
    }

    /// A peer known by identity and static key (IK).
    #[must_use]
    pub fn known(identity: PublicIdentity, static_key: [u8; 32]) -> PeerSpec {
        PeerSpec {
            identity: Some(identity),
            static_key: Some(static_key),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The handshake did not complete within `handshake_timeout`.
    HandshakeTimeout,
    /// The handshake failed (bad identity signature, identity mismatch...).
    HandshakeFailed(HandshakeError),
    /// Nothing authentic arrived for `idle_timeout`.
    IdleTimeout,
    /// This side closed it with `close`.
    LocallyClosed {
        /// The code sent to the peer.
        code: u16,
    },
    /// The peer closed it.
    ClosedByPeer {
        /// The peer's code.
        code: u16,
    },
    /// A newer session with the same peer replaced it.
    Superseded,
    /// Every packet counter was used (after 2^64 packets).
    CountersExhausted,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::HandshakeTimeout => f.write_str("handshake timed out"),
            DisconnectReason::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
            DisconnectReason::LocallyClosed { code } => write!(f, "closed locally (code {code})"),
            DisconnectReason::ClosedByPeer { code } => write!(f, "closed by peer (code {code})"),
            DisconnectReason::Superseded => f.write_str("superseded by a newer session"),
            DisconnectReason::CountersExhausted => f.write_str("packet counters exhausted"),
        }
    }
}

/// Something the application should know. Pulled with `poll_event`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session is established and authenticated.
    Connected {
        /// The session.
        session: SessionId,
        /// The authenticated peer.
        peer: NodeId,
        /// The peer's identity key.
        identity: PublicIdentity,
        /// The peer's Noise static key: pass it in a [`PeerSpec`] to reconnect with IK.
        static_key: [u8; 32],
        /// Where the peer is.
        addr: SocketAddr,
        /// Whether this side initiated.
        initiator: bool,
    },
    /// An unreliable datagram arrived.
    Datagram {
        /// The session it arrived on.
        session: SessionId,
        /// The sender.
        peer: NodeId,
        /// The payload.
        data: Vec<u8>,
    },
    /// Something happened to a stream of an established session.
    Stream {
        /// The session.
        session: SessionId,
        /// The stream.
        stream: StreamId,
        /// What happened.
        event: StreamEvent,
    },
    /// Something happened to an nRPC call, or a peer's services changed.
    Rpc(crate::rpc::RpcEvent),
    /// Something happened to a replicated log.
    Log(crate::replication::LogEvent),
    /// A session ended, and with it every stream it had. No further event names it.
    Disconnected {
        /// The session.
        session: SessionId,
        /// The peer, if it had authenticated.
        peer: Option<NodeId>,
        /// Why.
        reason: DisconnectReason,
    },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected {
                session,
                peer,
                addr,
                initiator,
                ..
            } => f
                .debug_struct("Connected")
                .field("session", session)
                .field("peer", peer)
                .field("addr", addr)
                .field("initiator", initiator)
                .finish(),
            Event::Datagram {
                session,
                peer,
                data,
            } => f
                .debug_struct("Datagram")
                .field("session", session)
                .field("peer", peer)
                .field("len", &data.len())
                .finish(),
            Event::Stream {
                session,
                stream,
                event,
            } => f
                .debug_struct("Stream")
                .field("session", session)
                .field("stream", stream)
                .field("event", event)
                .finish(),
            Event::Rpc(e) => f.debug_tuple("Rpc").field(e).finish(),
            Event::Log(e) => f.debug_tuple("Log").field(e).finish(),
            Event::Disconnected {
                session,
                peer,
                reason,
            } => f
                .debug_struct("Disconnected")
                .field("session", session)
                .field("peer", peer)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// A datagram written into the caller's buffer by `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// How many bytes of the buffer to send.
    pub len: usize,
}

/// Why the node wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TimerReason {
    /// Output is queued: drain it now.
    Output,
    /// A handshake message is due for retransmission.
    HandshakeRetransmit,
    /// A handshake reaches its total timeout.
    HandshakeTimeout,
    /// A session has sent nothing for a keepalive interval.
    Keepalive,
    /// A session may have been silent for its idle timeout.
    Idle,
    /// Stream work: an acknowledgement delay, loss detection, a tail-loss probe or
    /// retransmission timeout, a NACK round, pacing, or a close deadline.
    Stream,
    /// An nRPC call's deadline, or the collection of unused cancel tokens.
    Rpc,
    /// A replicated log's heartbeat, election or silence check.
    Log,
}

/// The next instant the node must be woken at, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When to call `handle_timeout`.
    pub at: Instant,
    /// The earliest reason.
    pub reason: TimerReason,
}

/// A caller's mistake or a broken contract. The node is unchanged when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Output from an earlier input is still queued: drain `poll_transmit` and `poll_event`
    /// before feeding more I/O (only with `Config::strict_drain`, the default in debug builds).
    Undrained {
        /// Datagrams still queued.
        transmits: usize,
        /// Events still queued.
        events: usize,
    },
    /// No session has this id (it never existed or has ended).
    UnknownSession(SessionId),
    /// The datagram is larger than one packet can carry.
    DatagramTooLarge {
        /// Its length.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The session's send queue is full; retry after draining `poll_transmit`.
    QueueFull,
    /// `max_sessions` sessions exist.
    TooManySessions,
    /// The buffer passed to `poll_transmit` is too small for the next datagram.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A stream operation failed (see [`StreamError`]).
    Stream(StreamError),
    /// A handshake could not be started.
    Handshake(HandshakeError),
    /// The config is invalid.
    Config(ConfigError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Undrained { transmits, events } => write!(
                f,
                "{transmits} transmits and {events} events are still queued: drain poll_transmit \
                 and poll_event before handling more input"
            ),
            Error::UnknownSession(s) => write!(f, "no session {s}"),
            Error::DatagramTooLarge { len, max } => {
                write!(f, "datagram of {len} bytes exceeds the maximum of {max}")
            }
            Error::QueueFull => f.write_str("send queue full: drain poll_transmit and retry"),
            Error::TooManySessions => f.write_str("session table full (max_sessions)"),
            Error::BufferTooSmall { needed } => {
                write!(f, "transmit buffer too small: {needed} bytes needed")
            }
            Error::Stream(e) => e.fmt(f),
            Error::Handshake(e) => write!(f, "handshake setup failed: {e}"),
            Error::Config(e) => e.fmt(f),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Why an incoming datagram was dropped: one counter each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropCounters {
    /// Shorter than its layout.
    pub truncated: u64,
    /// Unknown protocol version.
    pub bad_version: u64,
    /// Unknown packet kind.
    pub unknown_kind: u64,
    /// A field out of range or a wrong length.
    pub malformed: u64,
    /// Addressed to no session of ours.
    pub unknown_index: u64,
    /// A message this session does not expect in its current state.
    pub out_of_state: u64,
    /// A DATA counter seen before.
    pub replayed: u64,
    /// A DATA counter older than the replay window.
    pub too_old: u64,
    /// A key phase that matches no held key.
    pub key_phase: u64,
    /// Failed authentication (tampered, wrong key).
    pub auth_failed: u64,
    /// Authenticated, but its frames did not decode.
    pub bad_frames: u64,
    /// A handshake message that failed (bad Noise message, bad identity signature).
    pub handshake_failed: u64,
    /// An initiation from a source over its rate even with a valid cookie.
    pub rate_limited: u64,
    /// An initiation answered with a cookie challenge instead of a handshake.
    pub cookie_challenged: u64,
    /// An initiation that carried a wrong or expired cookie (also challenged again).
    pub bad_cookie: u64,
    /// An initiation refused because `max_sessions` sessions exist.
    pub too_many_sessions: u64,
    /// Our side of a simultaneous open won: the peer's initiation was ignored.
    pub simultaneous_open: u64,
    /// Packets for a responder that kept no more early packets.
    pub early_overflow: u64,
    /// Events dropped because the event queue was full (received datagrams beyond
    /// `max_queued_received`; any event beyond that plus two per possible session).
    pub event_queue_full: u64,
    /// Handshake and cookie messages dropped because the control queue was full.
    pub control_queue_full: u64,
}

/// Node-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Datagrams received (all kinds).
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Handshakes started as initiator.
    pub handshakes_initiated: u64,
    /// Responder handshakes that spent a Diffie-Hellman.
    pub handshakes_answered: u64,
    /// Sessions established.
    pub sessions_established: u64,
    /// Handshake messages sent again.
    pub handshake_retransmits: u64,
    /// Identity signatures checked (binding cache misses).
    pub bindings_verified: u64,
    /// Times a `now` earlier than a previous one was clamped.
    pub time_went_backwards: u64,
}

/// A snapshot of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The authenticated peer (once established).
    pub peer: Option<NodeId>,
    /// Whether it is established.
    pub established: bool,
    /// The handshake pattern.
    pub pattern: Pattern,
    /// Next packet counter to send (established sessions).
    pub next_counter: u64,
    /// Key generations (sending, receiving).
    pub key_generations: (u64, u64),
    /// Datagrams waiting to be sent.
    pub queued_datagrams: usize,
    /// Streams open (established sessions).
    pub open_streams: usize,
}

impl From<StreamError> for Error {
    fn from(e: StreamError) -> Error {
        Error::Stream(e)
    }
}
