//! nRPC: request/response calls in four shapes over a session's streams, with deadlines,
//! cancellation, service discovery, resilience helpers and observability.
//!
//! This module owns the RPC layer's state: the calls in flight on either side, their framing
//! and message credit, the cancel-token registry, this node's services and what each peer
//! announced, the observer queue and the per-method metrics. It never touches packets, keys,
//! sockets or clocks: the [`Node`](crate::Node) feeds it the events of streams of class
//! [`Class::Rpc`](crate::stream::Class) and the application's commands, each with `now`, and
//! turns what it produces into stream writes, resets, events and deadlines.
//!
//! - Every call rides its own ordered stream, so each call has ordering, its own flow control
//!   and its own loss recovery; frames inside it are in [`crate::wire::rpc`].
//! - Message credit bounds the streaming directions: a receiver grants messages (automatically
//!   as it delivers them, or explicitly with [`Credit::Manual`]) and a sender never exceeds it.
//! - Deadlines travel as the time remaining; either side that sees it pass resets the call's
//!   stream with [`RESET_DEADLINE`], and both report `Timeout`.
//! - Cancelling resets the stream with [`RESET_CANCEL`] (the CANCEL on the wire); the server
//!   sees [`RpcEvent::Aborted`] with [`AbortReason::Cancelled`].
//!
//! `docs/rpc.md` describes the protocol, the API and its figures.

mod cancel;
pub(crate) mod discovery;
pub(crate) mod machine;
mod observe;
pub mod resilience;
#[cfg(test)]
mod tests;
#[cfg(feature = "typed")]
pub mod typed;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

pub use crate::wire::rpc::Shape;
pub use observe::{CallRecord, Direction, LatencySummary, MethodMetrics, Outcome, RpcMetrics};

use crate::identity::NodeId;
use crate::node::{DisconnectReason, SessionId};
use crate::stream::ResetOrigin;
use crate::time::Instant;

/// A call, as this node names it (client and server calls share one numbering). Never reused
/// within one node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C{}", self.0)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.0)
    }
}

/// A token that cancels the calls it is attached to: reserve it with
/// [`Node::reserve_cancel_token`](crate::Node::reserve_cancel_token), pass it in
/// [`CallOptions::cancel`], fire it with [`Node::cancel`](crate::Node::cancel). Token 0 is
/// never issued, and cancelling it does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CancelToken(pub u64);

/// Status codes of a finished call, carried by END.
///
/// `0` is success; `1..=0x7FFF` are the protocol's own; `0x8000..=0xFFFF` belong to
/// applications, of which the typed layer uses the first two.
pub mod status {
    /// The call succeeded.
    pub const OK: u16 = 0x0000;
    /// The server serves no such service.
    pub const UNKNOWN_SERVICE: u16 = 0x0001;
    /// The service has no such method.
    pub const UNKNOWN_METHOD: u16 = 0x0002;
    /// The method exists with a different shape.
    pub const WRONG_SHAPE: u16 = 0x0003;
    /// The server is at its call limit; retry later or elsewhere.
    pub const OVERLOADED: u16 = 0x0004;
    /// The server could not complete the call (for example its handler went away).
    pub const INTERNAL: u16 = 0x0005;
    /// First status of the application band.
    pub const APPLICATION: u16 = 0x8000;
    /// The typed handler could not decode the request.
    pub const TYPED_BAD_REQUEST: u16 = 0x8000;
    /// The typed handler ran and returned an error.
    pub const TYPED_HANDLER_ERROR: u16 = 0x8001;

    /// Whether `status` is in the application band.
    #[must_use]
    pub fn is_application(status: u16) -> bool {
        status >= APPLICATION
    }
}

/// RESET code (origin `Application`) of a call's stream: the caller cancelled.
pub const RESET_CANCEL: u16 = 0x0001;
/// RESET code of a call's stream: the call's deadline passed.
pub const RESET_DEADLINE: u16 = 0x0002;
/// RESET code of a call's stream: the peer broke the nRPC framing or its credit.
pub const RESET_PROTOCOL: u16 = 0x0003;

/// Request messages a server accepts on a call before its first GRANT. A protocol constant,
/// since the caller may stream requests before it hears from the server.
pub const INITIAL_REQUEST_CREDIT: u32 = 32;

/// Which way an encoding failed, in [`RpcError::Codec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecDirection {
    /// Encoding the request (caller side) or the response (server side).
    Encode,
    /// Decoding the response (caller side) or the request (server side).
    Decode,
}

/// How a call failed below the RPC layer, in [`RpcError::Transport`]. Retrying may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The session carrying the call ended.
    SessionEnded(DisconnectReason),
    /// The call's stream was reset (the peer refused it, a chunk was given up, a close missed
    /// its deadline).
    Reset {
        /// Why.
        origin: ResetOrigin,
        /// The code.
        code: u16,
    },
    /// The peer broke the nRPC framing or its message credit.
    Protocol,
    /// This side used up its stream ids on the session (after 2^31 calls): a new session
    /// starts them over.
    IdsExhausted,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::SessionEnded(r) => write!(f, "session ended: {r}"),
            TransportError::Reset { origin, code } => {
                write!(f, "call stream reset ({origin:?}, code {code})")
            }
            TransportError::Protocol => f.write_str("peer violated the nRPC protocol"),
            TransportError::IdsExhausted => {
                f.write_str("stream ids exhausted on this session: reconnect to continue")
            }
        }
    }
}

/// A caller's mistake, in [`RpcError::Invalid`]. Nothing changed when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misuse {
    /// No live call has this id (it finished, failed or never existed).
    UnknownCall(CallId),
    /// The operation belongs to the other side of the call (client vs server).
    WrongSide,
    /// The operation does not fit the call's shape (for example `send` on a unary call).
    WrongShape(Shape),
    /// No credit or buffer room: wait for [`RpcEvent::Writable`].
    WouldBlock,
    /// This direction already ended (after `close_send`, `reply` or `finish`).
    Closed,
    /// A message over `max_message`.
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
    /// A single-request call was started without its request body.
    MissingBody,
    /// `max_calls` calls are in flight, or the session has `max_streams` streams open.
    TooManyCalls,
    /// `max_cancel_tokens` tokens are reserved.
    TooManyTokens,
    /// The cancel token was never reserved, or was already used up and collected.
    UnknownToken(CancelToken),
    /// A service, method or metadata name is empty or longer than 255 bytes, or metadata has
    /// more than 32 entries or a value over 65535 bytes.
    BadName,
    /// `max_services` services are served, or one has more than 255 methods.
    TooManyServices,
    /// Manual credit was granted on a call that uses automatic credit, or grant of zero.
    BadCredit,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::UnknownCall(c) => write!(f, "no live {c}: it finished, failed or never existed"),
            Misuse::WrongSide => f.write_str(
                "this operation belongs to the other side of the call (caller or server)",
            ),
            Misuse::WrongShape(s) => write!(f, "this operation does not fit a {s:?} call"),
            Misuse::WouldBlock => f.write_str(
                "no credit or buffer room: wait for RpcEvent::Writable and send again",
            ),
            Misuse::Closed => f.write_str("this direction of the call already ended"),
            Misuse::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds rpc.max_message ({max})")
            }
            Misuse::MissingBody => {
                f.write_str("unary and server-streaming calls need their request in CallSpec::body")
            }
            Misuse::TooManyCalls => f.write_str(
                "rpc.max_calls calls are in flight, or the session has streams.max_streams \
                 streams open: wait for calls to finish",
            ),
            Misuse::TooManyTokens => f.write_str(
                "rpc.max_cancel_tokens tokens are reserved: use or let some expire first",
            ),
            Misuse::UnknownToken(t) => write!(
                f,
                "cancel token {} was never reserved, or was used up or collected: reserve a new one",
                t.0
            ),
            Misuse::BadName => f.write_str(
                "service, method and metadata names must be 1 to 255 bytes, metadata at most \
                 32 entries of at most 65535 bytes, and a service's methods distinct",
            ),
            Misuse::TooManyServices => {
                f.write_str("rpc.max_services services, or 255 methods in one, are served")
            }
            Misuse::BadCredit => f.write_str(
                "grant needs a positive count, on a call with Credit::Manual (callers) or a \
                 streaming-request call (servers)",
            ),
        }
    }
}

/// Why a call failed, as its caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcError {
    /// No established session with the peer, or no peer serves the service.
    NoRoute,
    /// The call's deadline passed (on either side).
    Timeout,
    /// The call was cancelled (by its token or by `cancel`).
    Cancelled,
    /// The server ended the call with a non-zero status.
    ServerError {
        /// The status.
        status: u16,
        /// The server's detail text.
        message: String,
    },
    /// The session or the call's stream failed.
    Transport(TransportError),
    /// The typed layer could not encode or decode a message.
    Codec {
        /// Which way.
        direction: CodecDirection,
        /// The codec's message.
        message: String,
    },
    /// A caller's mistake; nothing was sent.
    Invalid(Misuse),
}

impl RpcError {
    /// Whether a retry might succeed: `NoRoute` and `Transport` only (the default
    /// [`resilience::RetryPolicy`] retries exactly these).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, RpcError::NoRoute | RpcError::Transport(_))
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::NoRoute => f.write_str(
                "no route: no established session with the peer, or no peer serves the service",
            ),
            RpcError::Timeout => f.write_str("the call's deadline passed"),
            RpcError::Cancelled => f.write_str("the call was cancelled"),
            RpcError::ServerError { status, message } => {
                write!(f, "server error 0x{status:04x}: {message}")
            }
            RpcError::Transport(t) => write!(f, "transport: {t}"),
            RpcError::Codec { direction, message } => write!(f, "codec ({direction:?}): {message}"),
            RpcError::Invalid(m) => write!(f, "invalid use: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RpcError {}

impl From<Misuse> for RpcError {
    fn from(m: Misuse) -> RpcError {
        RpcError::Invalid(m)
    }
}

/// How the caller grants response messages on a streaming-response call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credit {
    /// Grant automatically as messages are delivered, keeping up to this many in flight.
    Auto(u32),
    /// Start with this many and grant more with `grant` (batched cadence).
    Manual(u32),
}

impl Default for Credit {
    /// Automatic, 256 messages: a window of message count has to cover the path's
    /// bandwidth-delay product in messages (at 10 ms RTT, 256 in flight is 25,600 messages
    /// per second), and the receiver holds none of them (each is delivered as an event).
    fn default() -> Credit {
        Credit::Auto(256)
    }
}

/// Per-call options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallOptions {
    /// Time allowed for the whole call; it travels to the server as the time remaining.
    pub deadline: Option<Duration>,
    /// A reserved token that cancels the call.
    pub cancel: Option<CancelToken>,
    /// Response credit (streaming responses only).
    pub credit: Credit,
    /// Metadata sent with the call: up to 32 `(key, value)` entries.
    pub metadata: Vec<(String, Vec<u8>)>,
}

/// A call to start.
#[derive(Debug, Clone, Copy)]
pub struct CallSpec<'a> {
    /// The service.
    pub service: &'a str,
    /// The method.
    pub method: &'a str,
    /// The shape.
    pub shape: Shape,
    /// The request: required for unary and server-streaming calls; for client-streaming and
    /// duplex calls, an optional first message.
    pub body: Option<&'a [u8]>,
    /// Options.
    pub options: &'a CallOptions,
}

/// How `call_service` picks among the peers serving a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Selection {
    /// The provider with the lowest smoothed RTT (unmeasured ranks last); providers within
    /// 1/8 (plus 1 ms) of the best take turns, so equal peers share the load.
    #[default]
    Nearest,
    /// Every provider in turn, by node id order.
    RoundRobin,
}

/// nRPC settings, part of [`crate::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcConfig {
    /// Calls in flight at once on this node, client and server together.
    pub max_calls: usize,
    /// Largest message, bytes (requests and responses).
    pub max_message: usize,
    /// How long a reserved cancel token that no live call uses is kept.
    pub orphan_ttl: Duration,
    /// Cancel tokens reserved at once.
    pub max_cancel_tokens: usize,
    /// Observer queue length (call records waiting to be taken).
    pub observer_capacity: usize,
    /// Services this node may serve.
    pub max_services: usize,
    /// Services kept per peer announcement (more is a protocol violation).
    pub max_peer_services: usize,
    /// `(service, method, direction)` entries the metrics keep; calls beyond are counted in
    /// [`RpcMetrics::untracked`].
    pub max_metric_methods: usize,
    /// The `call_service` policy.
    pub selection: Selection,
}

impl Default for RpcConfig {
    fn default() -> RpcConfig {
        RpcConfig {
            max_calls: 4096,
            max_message: 1 << 20,
            orphan_ttl: Duration::from_secs(120),
            max_cancel_tokens: 65_536,
            observer_capacity: 1024,
            max_services: 64,
            max_peer_services: 256,
            max_metric_methods: 512,
            selection: Selection::Nearest,
        }
    }
}

/// A method of a served service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSpec {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
}

/// A service to serve: its name and methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service name.
    pub name: String,
    /// Its methods.
    pub methods: Vec<MethodSpec>,
}

impl ServiceSpec {
    /// A service with no methods yet.
    #[must_use]
    pub fn new(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: String::from(name),
            methods: Vec::new(),
        }
    }

    /// Adds a method.
    #[must_use]
    pub fn method(mut self, name: &str, shape: Shape) -> ServiceSpec {
        self.methods.push(MethodSpec {
            name: String::from(name),
            shape,
        });
        self
    }
}

/// Why a server's call ended before its handler finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// The caller cancelled (CANCEL arrived).
    Cancelled,
    /// The deadline passed.
    Deadline,
    /// The session or stream failed, or the caller broke the protocol.
    Transport,
}

/// A call arriving at a server, inside [`RpcEvent::Request`].
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The call.
    pub call: CallId,
    /// The session it arrived on.
    pub session: SessionId,
    /// The caller.
    pub peer: NodeId,
    /// The service.
    pub service: alloc::sync::Arc<str>,
    /// The method.
    pub method: alloc::sync::Arc<str>,
    /// The shape.
    pub shape: Shape,
    /// When the caller's deadline passes, on this node's clock.
    pub deadline: Option<Instant>,
    /// The caller's metadata.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The request, for unary and server-streaming calls (client-streaming and duplex
    /// requests arrive as [`RpcEvent::Message`]).
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("call", &self.call)
            .field("peer", &self.peer)
            .field("service", &self.service)
            .field("method", &self.method)
            .field("shape", &self.shape)
            .field("deadline", &self.deadline)
            .field("metadata", &self.metadata.len())
            .field("body", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// Something that happened to a call, inside [`crate::Event::Rpc`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcEvent {
    /// Server side: a call arrived for one of this node's services.
    Request(alloc::boxed::Box<Incoming>),
    /// A message on a streaming direction: a response (caller side) or a request (server
    /// side).
    Message {
        /// The call.
        call: CallId,
        /// The message.
        data: Vec<u8>,
    },
    /// Server side: the caller sent its last request (client-streaming and duplex).
    RequestsDone {
        /// The call.
        call: CallId,
    },
    /// Caller side: a unary or client-streaming call finished.
    Reply {
        /// The call.
        call: CallId,
        /// The response, or why there is none.
        result: Result<Vec<u8>, RpcError>,
    },
    /// Caller side: a server-streaming or duplex call finished (its messages came before).
    Ended {
        /// The call.
        call: CallId,
        /// Ok once the server ended it with status 0.
        result: Result<(), RpcError>,
    },
    /// A `send` was refused with `WouldBlock` earlier; there is room again.
    Writable {
        /// The call.
        call: CallId,
    },
    /// Server side: the call ended before the handler finished it; stop working on it.
    Aborted {
        /// The call.
        call: CallId,
        /// Why.
        reason: AbortReason,
    },
    /// A peer announced (or withdrew) services; see `Node::peer_services`.
    ServicesChanged {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: NodeId,
    },
}

impl fmt::Debug for RpcEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcEvent::Request(i) => f.debug_tuple("Request").field(i).finish(),
            RpcEvent::Message { call, data } => f
                .debug_struct("Message")
                .field("call", call)
                .field("len", &data.len())
                .finish(),
            RpcEvent::RequestsDone { call } => {
                f.debug_struct("RequestsDone").field("call", call).finish()
            }
            RpcEvent::Reply { call, result } => f
                .debug_struct("Reply")
                .field("call", call)
                .field("len", &result.as_ref().map(Vec::len))
                .finish(),
            RpcEvent::Ended { call, result } => f
                .debug_struct("Ended")
                .field("call", call)
                .field("result", result)
                .finish(),
            RpcEvent::Writable { call } => f.debug_struct("Writable").field("call", call).finish(),
            RpcEvent::Aborted { call, reason } => f
                .debug_struct("Aborted")
                .field("call", call)
                .field("reason", reason)
                .finish(),
            RpcEvent::ServicesChanged { session, peer } => f
                .debug_struct("ServicesChanged")
                .field("session", session)
                .field("peer", peer)
                .finish(),
        }
    }
}

/// nRPC counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcStats {
    /// Calls started by this node.
    pub calls_started: u64,
    /// Calls that arrived at this node's services.
    pub calls_received: u64,
    /// Calls that arrived for a service, method or shape this node does not serve.
    pub calls_rejected: u64,
    /// CANCELs sent (call streams reset with [`RESET_CANCEL`]).
    pub cancels_sent: u64,
    /// CANCELs received.
    pub cancels_received: u64,
    /// Calls ended by their deadline on this side.
    pub deadlines_expired: u64,
    /// Call streams reset because the peer broke the framing or its credit.
    pub protocol_violations: u64,
    /// Service announcements received.
    pub announcements_received: u64,
}
