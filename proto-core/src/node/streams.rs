//! The node's stream API: opening streams and the borrowed [`StreamHandle`] that reads,
//! writes, finishes and resets one.
//!
//! This module owns only the glue between the application and a session's
//! [`Streams`](crate::stream::conn::Streams): it finds the session, calls the stream machine,
//! and then does what every input needs afterwards (turn stream events into node events,
//! queue the session for transmission, move its timer). The stream logic is in
//! [`crate::stream`].

use alloc::vec::Vec;

use super::{Entry, Error, Event, Node, SessionId, State};
use crate::stream::conn::{Streams, TransportStats};
use crate::stream::{Class, Mode, StreamError, StreamId, StreamStats};
use crate::time::Instant;

impl Node {
    fn streams_mut(&mut self, session: SessionId) -> Result<&mut Streams, Error> {
        match self.entries.get_mut(&session) {
            Some(Entry {
                state: State::Established(est),
                close_pending: None,
                ..
            }) => Ok(&mut est.streams),
            _ => Err(Error::UnknownSession(session)),
        }
    }

    /// Opens a stream on an established session. No round trip: the stream exists at the
    /// peer once its first chunk arrives (the peer sees [`crate::stream::StreamEvent::Opened`]).
    pub fn open_stream(
        &mut self,
        now: Instant,
        session: SessionId,
        mode: Mode,
    ) -> Result<StreamId, Error> {
        self.clock.observe(now);
        Ok(self.streams_mut(session)?.open(mode, Class::App)?)
    }

    /// A handle on one stream of `session`, borrowed from the node.
    pub fn stream(
        &mut self,
        session: SessionId,
        stream: StreamId,
    ) -> Result<StreamHandle<'_>, Error> {
        if self.streams_mut(session)?.class(stream) != Some(Class::App) {
            return Err(StreamError::Unknown(stream).into());
        }
        Ok(StreamHandle {
            node: self,
            session,
            stream,
        })
    }

    /// Session-wide stream counters: congestion window, RTT, pacing, losses.
    pub fn stream_transport(&self, session: SessionId) -> Option<TransportStats> {
        match self.entries.get(&session) {
            Some(Entry {
                state: State::Established(est),
                ..
            }) => Some(est.streams.transport_stats()),
            _ => None,
        }
    }

    /// Moves a session's stream events to the node's event queue, and hands those of nRPC
    /// streams to the RPC machine (whose own events follow). Stream events are not subject to
    /// the received-datagram cap: each stream has at most one of each kind outstanding per
    /// input, and a dropped Readable would leave a reader waiting forever. nRPC events are
    /// bounded by the calls' message credit.
    pub(super) fn drain_stream_events(&mut self, id: SessionId) {
        let now = self.clock.now();
        let Node {
            entries,
            rpc,
            events,
            logs,
            log_links,
            ..
        } = self;
        let Some(Entry {
            state: State::Established(est),
            ..
        }) = entries.get_mut(&id)
        else {
            return;
        };
        let mut rpc_touched = false;
        let mut log_touched = false;
        let peer = est.peer_id;
        while let Some((stream, class, event)) = est.streams.poll_event() {
            match class {
                Class::Log => {
                    super::logs::on_log_stream(
                        now,
                        id,
                        peer,
                        &mut est.streams,
                        log_links,
                        logs,
                        stream,
                        &event,
                    );
                    log_touched = true;
                }
                Class::Rpc => {
                    rpc.on_stream_event(now, id, &mut est.streams, stream, event);
                    rpc_touched = true;
                }
                Class::App => events.push_back(Event::Stream {
                    session: id,
                    stream,
                    event,
                }),
            }
        }
        self.pull_rpc_events();
        if log_touched {
            // Messages may have been handled: replies out (on any session), events out.
            self.after_logs();
        }
        if rpc_touched || log_touched {
            // The RPC machine may have written (a GRANT, an END): send it.
            self.mark_ready(id);
        }
    }

    /// Moves the RPC machine's events to the node's queue.
    pub(super) fn pull_rpc_events(&mut self) {
        self.events
            .extend(self.rpc.events.drain(..).map(Event::Rpc));
    }

    /// After any stream operation: events out, transmit queue, timer.
    fn after_stream_op(&mut self, id: SessionId) {
        self.drain_stream_events(id);
        self.mark_ready(id);
        self.reschedule(id);
    }
}

/// One stream, borrowed from its [`Node`]. Every method takes effect at once; what it
/// queues leaves through `poll_transmit`, and what it changes shows in `poll_timeout`.
pub struct StreamHandle<'a> {
    node: &'a mut Node,
    session: SessionId,
    stream: StreamId,
}

impl core::fmt::Debug for StreamHandle<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("session", &self.session)
            .field("stream", &self.stream)
            .finish()
    }
}

impl StreamHandle<'_> {
    fn with<T>(
        &mut self,
        op: impl FnOnce(&mut Streams) -> Result<T, StreamError>,
    ) -> Result<T, StreamError> {
        let streams = self
            .node
            .streams_mut(self.session)
            .map_err(|_| StreamError::Unknown(self.stream))?;
        let r = op(streams);
        self.node.after_stream_op(self.session);
        r
    }

    /// The stream's id.
    #[must_use]
    pub fn id(&self) -> StreamId {
        self.stream
    }

    /// Writes bytes (ordered streams): returns how many were taken, which may be fewer than
    /// offered when the send buffer fills (back-pressure), or `WouldBlock` when none fit; a
    /// [`crate::stream::StreamEvent::Writable`] follows when there is room again.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        let id = self.stream;
        self.with(|s| s.write(id, data))
    }

    /// Sends one message (message streams): whole, or `WouldBlock`.
    pub fn send_message(&mut self, msg: &[u8]) -> Result<(), StreamError> {
        let id = self.stream;
        self.with(|s| s.send_message(id, msg))
    }

    /// Reads bytes (ordered streams). `Ok(0)` with a non-empty `buf` is the end of the
    /// stream; `WouldBlock` means wait for [`crate::stream::StreamEvent::Readable`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let id = self.stream;
        self.with(|s| s.read(id, buf))
    }

    /// Takes the next message (message streams); `Ok(None)` is the end of the stream.
    pub fn recv_message(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let id = self.stream;
        self.with(|s| s.recv_message(id))
    }

    /// Ends this direction gracefully: what was written is still delivered, and
    /// [`crate::stream::StreamEvent::Acknowledged`] follows once the peer has all of it. If
    /// that takes longer than `close_timeout`, the stream is reset and both sides see a
    /// `Reset` with origin `CloseDeadline`.
    pub fn finish(&mut self, now: Instant) -> Result<(), StreamError> {
        let now = self.node.clock.observe(now);
        let id = self.stream;
        self.with(|s| s.finish(now, id))
    }

    /// Abandons the stream in both directions; the peer sees a `Reset` with `code`.
    pub fn reset(&mut self, now: Instant, code: u16) -> Result<(), StreamError> {
        let now = self.node.clock.observe(now);
        let id = self.stream;
        self.with(|s| s.reset(now, id, code))
    }

    /// Changes the stream's weight in the fair scheduler (at least 1): a stream of weight
    /// `w` gets about `w` times the bytes of a weight-1 stream when both have data.
    pub fn set_weight(&mut self, weight: u32) -> Result<(), StreamError> {
        let id = self.stream;
        self.with(|s| s.set_weight(id, weight))
    }

    /// A snapshot of the stream's counters.
    pub fn stats(&mut self) -> Result<StreamStats, StreamError> {
        let id = self.stream;
        self.with(|s| s.stats(id))
    }

    /// The largest message this session's message streams accept.
    pub fn max_message(&mut self) -> Result<usize, StreamError> {
        self.with(|s| Ok(s.max_message()))
    }
}
