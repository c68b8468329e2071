//! Reliable streams: many per session, opened without a round trip, each reliable-ordered
//! bytes, reliable-unordered messages or unreliable messages.
//!
//! This module owns everything a session's streams need: the per-stream send half
//! ([`send`]: buffering, chunking, the tracking window, the lost set) and receive half
//! ([`recv`]: reassembly, delivery, credit), and the session-wide machine (`conn`) that
//! turns frames into state and state into frames: acknowledgements, loss detection (ACK
//! ranges, NACKs, a tail-loss probe, RTO), RFC 6298 round-trip estimation ([`rtt`]),
//! congestion control ([`cc`], [`bbr`]), pacing, and fair scheduling ([`sched`]).
//!
//! It never touches packets' encryption, sockets or clocks: the node hands it decoded frames
//! with `now` and asks it to fill the plaintext of the next packet. Frame layouts live in
//! [`crate::wire::stream`]. `docs/streams.md` describes the behaviour and its figures.

pub mod bbr;
pub mod cc;
pub(crate) mod conn;
pub use conn::TransportStats;
pub mod recv;
pub mod rtt;
pub mod sched;
pub mod send;
#[cfg(test)]
mod tests;

use core::fmt;
use core::time::Duration;

pub use crate::wire::stream::{Class, Mode, ResetOrigin};

/// A stream of a session. Even ids are opened by the session's initiator, odd ids by its
/// responder; ids are never reused within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// Which congestion controller a session's streams use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Congestion {
    /// The model-based controller ([`bbr::Bbr`]): keeps throughput under random loss.
    #[default]
    Model,
    /// Loss-based NewReno ([`cc::NewReno`]), the reference.
    NewReno,
}

/// Stream settings, part of [`crate::Config`]. Every bound here bounds memory per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Streams open at once per session (both directions together).
    pub max_streams: usize,
    /// Chunks a receiver buffers per stream beyond what the application has read; this is the
    /// credit granted to the sender, and the sender's tracking window.
    pub receive_window: u64,
    /// Bytes a stream buffers that the application wrote but that were not yet sent.
    pub send_buffer: usize,
    /// Retransmissions of one chunk before the stream is given up (and RESET).
    pub max_retries: u32,
    /// How long a graceful close waits for every byte to be acknowledged.
    pub close_timeout: Duration,
    /// How long a receiver may hold an acknowledgement to combine it with others.
    pub ack_delay: Duration,
    /// The congestion controller.
    pub congestion: Congestion,
    /// Weight a new stream gets in the fair scheduler.
    pub default_weight: u32,
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            max_streams: 256,
            receive_window: 2048,
            send_buffer: 1 << 20,
            max_retries: 12,
            close_timeout: Duration::from_secs(10),
            ack_delay: Duration::from_millis(2),
            congestion: Congestion::Model,
            default_weight: 1,
        }
    }
}

/// Credit every stream starts with, in chunks, before its receiver's first ACK: receivers
/// must grant at least this much, so `receive_window` may not be smaller.
pub const INITIAL_CREDIT: u64 = 32;

/// Something that happened to a stream, inside [`crate::node::Event::Stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The peer opened this stream (its first chunk arrived).
    Opened {
        /// The stream's mode.
        mode: Mode,
    },
    /// Data or a message arrived on a stream whose receive queue was empty: read until
    /// `WouldBlock`.
    Readable,
    /// A write was refused or cut short earlier; there is room again.
    Writable,
    /// The peer finished its direction and everything before its end was delivered to the
    /// receive queue (reads drain what is left, then report the end).
    Finished,
    /// Our direction was finished and every chunk of it acknowledged.
    Acknowledged,
    /// The stream ended abnormally; nothing more can be read or written.
    Reset {
        /// Why.
        origin: ResetOrigin,
        /// The application's code (for `ResetOrigin::Application`).
        code: u16,
        /// Whether the peer ended it (otherwise this side did, e.g. after giving up).
        remote: bool,
    },
    /// Both directions ended normally; the stream is gone.
    Closed,
}

/// A caller's mistake or a signal, from a stream operation. Nothing changed when one is
/// returned (except the back-pressure counter for `WouldBlock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// No such stream on this session (never opened, or already gone).
    Unknown(StreamId),
    /// Nothing can be written (buffer or window full) or read (queue empty) now; a
    /// [`StreamEvent::Writable`] or [`StreamEvent::Readable`] follows when that changes.
    WouldBlock,
    /// This direction was finished; nothing more can be written.
    Finished,
    /// The stream was reset.
    Reset {
        /// Why.
        origin: ResetOrigin,
        /// The application's code.
        code: u16,
    },
    /// A byte operation on a message stream, or a message operation on a byte stream.
    WrongMode(Mode),
    /// The message is larger than one chunk can carry.
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
    /// `max_streams` streams are open on this session.
    TooManyStreams,
    /// This side used up its 2^31 stream ids on the session.
    IdsExhausted,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Unknown(id) => write!(f, "no {id} on this session"),
            StreamError::WouldBlock => {
                f.write_str("stream would block: wait for its Writable or Readable event and retry")
            }
            StreamError::Finished => {
                f.write_str("stream already finished: nothing more can be written")
            }
            StreamError::Reset { origin, code } => {
                write!(f, "stream was reset ({origin:?}, code {code})")
            }
            StreamError::WrongMode(m) => write!(
                f,
                "operation does not match the stream's mode {m:?}: use read/write on ordered \
                 streams and send_message/recv_message on message streams"
            ),
            StreamError::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds one chunk ({max} bytes)")
            }
            StreamError::TooManyStreams => {
                f.write_str("session has max_streams streams open: close one first")
            }
            StreamError::IdsExhausted => f.write_str("stream ids exhausted on this session"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StreamError {}

/// A snapshot of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Next sequence number this side will send.
    pub tx_seq: u64,
    /// Every chunk below this was acknowledged.
    pub tx_acked: u64,
    /// Every chunk below this has arrived.
    pub rx_seq: u64,
    /// Chunks sent and not yet acknowledged.
    pub in_flight: u64,
    /// Credit the peer granted: chunks below this may be sent.
    pub peer_limit: u64,
    /// Credit this side granted the peer.
    pub local_limit: u64,
    /// Bytes written and not yet sent.
    pub buffered: usize,
    /// Session congestion window, bytes (shared by the session's streams).
    pub cwnd: u64,
    /// Session smoothed round-trip time.
    pub srtt: Option<Duration>,
    /// Chunks sent again.
    pub retransmits: u64,
    /// Writes refused or cut short for lack of room.
    pub backpressure_events: u64,
    /// Times new chunks waited because the tracking window was full. Chunks are never
    /// evicted from tracking: the window refuses instead, so this is the count of would-be
    /// evictions.
    pub tracking_full: u64,
    /// Chunks that arrived twice.
    pub duplicates: u64,
    /// Unreliable messages dropped because the receive queue was full.
    pub dropped: u64,
    /// Bytes the application wrote.
    pub bytes_written: u64,
    /// Bytes delivered to the application.
    pub bytes_read: u64,
    /// Scheduler weight.
    pub weight: u32,
}
