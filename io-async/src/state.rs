//! The state the drive loop and every handle share: the core's [`Node`] and, beside it, what
//! the handles wait on (wakers, queued datagrams, call results).
//!
//! One mutex guards it all; nobody holds it across an `.await`. The drive loop feeds the node
//! and hands each event to the slot that waits for it ([`Inner::dispatch`]); a handle locks,
//! calls the node, registers its waker if it must wait, and wakes the drive loop so that what
//! it queued is sent. Because both sides take the same lock, a waker registered after a
//! `WouldBlock` cannot miss the event that ends the wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use proto_core::replication::{LogEvent, LogId};
use proto_core::rpc::{AbortReason, CallId, RpcError, RpcEvent};
use proto_core::{
    DisconnectReason, Event, Instant, Mode, Node, NodeId, PublicIdentity, ResetOrigin, SessionId,
    StreamEvent, StreamId,
};

use crate::runtime::Runtime;
use crate::server::Handler;

/// What the drive loop and the handles share.
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) runtime: Arc<dyn Runtime>,
}

impl Shared {
    /// Locks the state. A panic in another holder leaves the node as that holder left it;
    /// every node call is atomic, so carrying on is sound.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> Instant {
        self.runtime.now()
    }
}

/// A session as the handles know it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) peer: NodeId,
    pub(crate) identity: PublicIdentity,
    pub(crate) static_key: [u8; 32],
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) initiator: bool,
}

/// What a session's handles wait on.
#[derive(Default)]
pub(crate) struct SessionSlot {
    pub(crate) info: Option<PeerInfo>,
    /// Received datagrams, bounded by [`Bounds::datagrams`].
    pub(crate) datagrams: crate::wake::Bounded<Vec<u8>>,
    pub(crate) incoming_streams: VecDeque<(StreamId, Mode)>,
    pub(crate) stream_waker: Option<Waker>,
    pub(crate) ended: Option<DisconnectReason>,
    pub(crate) closed_wakers: Vec<Waker>,
    /// A `connect` waits for this session.
    pub(crate) connect_waker: Option<Waker>,
    /// The session's `tracing` span (a child of the endpoint's); its streams' and calls'
    /// spans are children of it.
    pub(crate) span: SpanCell,
}

/// A `tracing` span that starts disabled (what `Default` gives a new slot).
pub(crate) struct SpanCell(pub(crate) tracing::Span);

impl Default for SpanCell {
    fn default() -> SpanCell {
        SpanCell(tracing::Span::none())
    }
}

/// What one stream's handle waits on.
#[derive(Default)]
pub(crate) struct StreamSlot {
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) finish_waker: Option<Waker>,
    pub(crate) fin_received: bool,
    pub(crate) acknowledged: bool,
    pub(crate) reset: Option<(ResetOrigin, u16, bool)>,
    pub(crate) closed: bool,
}

impl StreamSlot {
    /// Moves every waker to `out`, to be woken once the lock is released.
    pub(crate) fn defer_wakes(&mut self, out: &mut Vec<Waker>) {
        out.extend(
            [
                self.read_waker.take(),
                self.write_waker.take(),
                self.finish_waker.take(),
            ]
            .into_iter()
            .flatten(),
        );
    }

    pub(crate) fn wake_all(&mut self) {
        let mut wakes = Vec::new();
        self.defer_wakes(&mut wakes);
        wakes.into_iter().for_each(Waker::wake);
    }
}

/// What one call's handles (either side) wait on.
#[derive(Default)]
pub(crate) struct CallSlot {
    pub(crate) messages: VecDeque<Vec<u8>>,
    pub(crate) input_done: bool,
    pub(crate) reply: Option<Result<Vec<u8>, RpcError>>,
    pub(crate) ended: Option<Result<(), RpcError>>,
    pub(crate) aborted: Option<AbortReason>,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
    pub(crate) abort_waker: Option<Waker>,
}

impl CallSlot {
    /// A handler task's check before it polls its handler: true if the call was aborted (the
    /// task drops the handler); otherwise `waker` is woken when it is.
    pub(crate) fn poll_aborted(&mut self, waker: &Waker) -> bool {
        if self.aborted.is_some() {
            return true;
        }
        self.abort_waker = Some(waker.clone());
        false
    }

    /// The call was aborted: its handles' wakers go to `out`.
    pub(crate) fn abort(&mut self, reason: AbortReason, out: &mut Vec<Waker>) {
        self.aborted = Some(reason);
        self.defer_wakes(out);
    }

    /// Moves every waker to `out`, to be woken once the lock is released.
    pub(crate) fn defer_wakes(&mut self, out: &mut Vec<Waker>) {
        out.extend(
            [
                self.recv_waker.take(),
                self.send_waker.take(),
                self.abort_waker.take(),
            ]
            .into_iter()
            .flatten(),
        );
    }

    pub(crate) fn wake_all(&mut self) {
        let mut wakes = Vec::new();
        self.defer_wakes(&mut wakes);
        wakes.into_iter().for_each(Waker::wake);
    }
}

/// What one replicated log's handles wait on.
#[derive(Default)]
pub(crate) struct LogSlot {
    /// Appends waiting for their outcome: `true` acknowledged, `false` abandoned.
    pub(crate) outcomes: BTreeMap<u64, Option<bool>>,
    pub(crate) append_wakers: BTreeMap<u64, Waker>,
    pub(crate) committed: u64,
    pub(crate) tail_wakers: Vec<Waker>,
    pub(crate) role_wakers: Vec<Waker>,
    pub(crate) role_changes: u64,
    /// Syncs a store answered `Later` to: `(ticket, upto)`.
    pub(crate) persist_requests: VecDeque<(u64, u64)>,
}

/// Bounds of the handle-side queues, from [`crate::EndpointConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) datagrams: usize,
    pub(crate) accept: usize,
}

/// Counters of what the handle layer dropped because a queue was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Received datagrams dropped because a connection's datagram queue was full.
    pub datagrams_dropped: u64,
    /// Incoming sessions refused because the accept queue was full (they are closed).
    pub accepts_dropped: u64,
    /// Datagrams the socket refused with an error other than `WouldBlock`.
    pub send_errors: u64,
    /// Receive errors skipped (ICMP reports of earlier datagrams, mostly).
    pub recv_errors: u64,
    /// Wake-ups of the drive loop.
    pub wakeups: u64,
    /// Wake-ups that used their whole budget and yielded with work left.
    pub budget_exhausted: u64,
    /// Handler tasks started for incoming calls.
    pub handlers_started: u64,
    /// Handler tasks still running.
    pub handlers_running: u64,
}

impl DriverStats {
    /// The drive loop is starting `n` handler tasks.
    pub(crate) fn handlers_spawned(&mut self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.handlers_started = self.handlers_started.saturating_add(n);
        self.handlers_running = self.handlers_running.saturating_add(n);
    }

    /// A handler task ended (finished or dropped). Each spawned task ends once, so the gauge
    /// never goes below zero (the loom model in this file checks it under racing ends).
    pub(crate) fn handler_gone(&mut self) {
        debug_assert!(self.handlers_running > 0, "a handler task ended twice");
        self.handlers_running = self.handlers_running.saturating_sub(1);
    }
}

/// The node and the handle slots, under one lock.
pub(crate) struct Inner {
    pub(crate) node: Node,
    /// The endpoint's `tracing` span, the parent of every session's.
    pub(crate) span: tracing::Span,
    /// How handles wake the drive loop (`crate::wake`).
    pub(crate) driver: crate::wake::DriverWake,
    pub(crate) bounds: Bounds,
    pub(crate) sessions: BTreeMap<SessionId, SessionSlot>,
    pub(crate) streams: BTreeMap<(SessionId, StreamId), StreamSlot>,
    pub(crate) calls: BTreeMap<CallId, CallSlot>,
    pub(crate) logs: BTreeMap<LogId, LogSlot>,
    /// Sessions peers opened that wait for `accept`, bounded by [`Bounds::accept`].
    pub(crate) incoming: crate::wake::Bounded<SessionId>,
    pub(crate) handlers: BTreeMap<String, Handler>,
    /// Incoming calls whose handler the drive loop starts once it has released the lock.
    pub(crate) to_spawn: Vec<(Handler, proto_core::rpc::Incoming, tracing::Span)>,
    pub(crate) services_wakers: Vec<Waker>,
    pub(crate) stats: DriverStats,
    /// Wakers of handles that events made ready, woken by the drive loop once it has
    /// released the lock (so the woken tasks do not find it taken and block on it).
    pub(crate) wakes: Vec<Waker>,
    /// `shutdown` started: no new sessions are accepted.
    pub(crate) closing: bool,
    /// The drive loop has stopped (shutdown finished or the socket failed).
    pub(crate) stopped: crate::wake::Latch<String>,
    pub(crate) shutdown: Option<crate::endpoint::ShutdownState>,
}

impl Inner {
    pub(crate) fn new(node: Node, bounds: Bounds, span: tracing::Span) -> Inner {
        Inner {
            node,
            span,
            driver: crate::wake::DriverWake::default(),
            bounds,
            sessions: BTreeMap::new(),
            streams: BTreeMap::new(),
            calls: BTreeMap::new(),
            logs: BTreeMap::new(),
            incoming: crate::wake::Bounded::default(),
            handlers: BTreeMap::new(),
            to_spawn: Vec::new(),
            services_wakers: Vec::new(),
            stats: DriverStats::default(),
            wakes: Vec::new(),
            closing: false,
            stopped: crate::wake::Latch::default(),
            shutdown: None,
        }
    }

    /// Wakes the drive loop: a handle queued output or changed a deadline. While the drive
    /// loop is polling, a flag is enough (it looks before it returns), which spares the
    /// runtime a self-wake and the other worker a futile wake-up.
    pub(crate) fn wake_driver(&mut self) {
        self.driver.wake();
    }

    /// The span of a session (disabled when tracing is off or the session is unknown).
    pub(crate) fn session_span(&self, session: SessionId) -> tracing::Span {
        self.sessions
            .get(&session)
            .map_or_else(tracing::Span::none, |s| s.span.0.clone())
    }

    /// The span of the session the node holds with `peer`.
    pub(crate) fn peer_span(&self, peer: NodeId) -> tracing::Span {
        self.node
            .session_with(&peer)
            .map_or_else(tracing::Span::none, |s| self.session_span(s))
    }

    /// Hands every queued event of the node to the slot that waits for it. The handles it
    /// makes ready are in [`Inner::wakes`]: the caller wakes them after unlocking.
    pub(crate) fn dispatch_all(&mut self, now: Instant) {
        while let Some(ev) = self.node.poll_event() {
            self.dispatch(now, ev);
        }
    }

    fn dispatch(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Connected {
                session,
                peer,
                identity,
                static_key,
                addr,
                initiator,
            } => {
                let slot = self.sessions.entry(session).or_default();
                slot.span.0 = tracing::debug_span!(
                    parent: &self.span,
                    "session",
                    id = session.0,
                    %peer,
                    %addr,
                    initiator,
                );
                tracing::debug!(parent: &slot.span.0, "session established");
                slot.info = Some(PeerInfo {
                    peer,
                    identity,
                    static_key,
                    addr,
                    initiator,
                });
                if let Some(w) = slot.connect_waker.take() {
                    self.wakes.push(w);
                } else if !initiator {
                    let cap = if self.closing { 0 } else { self.bounds.accept };
                    if self.incoming.offer(cap, session, &mut self.wakes).is_err() {
                        self.stats.accepts_dropped += 1;
                        tracing::debug!(parent: &slot.span.0, "accept queue full or closing; session refused");
                        let _ = self.node.close(now, session, crate::CLOSE_REFUSED);
                    }
                }
            }
            Event::Datagram { session, data, .. } => {
                let cap = self.bounds.datagrams;
                let slot = self.sessions.entry(session).or_default();
                if slot.datagrams.offer(cap, data, &mut self.wakes).is_err() {
                    self.stats.datagrams_dropped += 1;
                    tracing::trace!(parent: &slot.span.0, cap, "datagram queue full; datagram dropped");
                }
            }
            Event::Stream {
                session,
                stream,
                event,
            } => self.on_stream(session, stream, event),
            Event::Rpc(e) => self.on_rpc(now, e),
            Event::Log(e) => self.on_log(e),
            Event::Disconnected {
                session, reason, ..
            } => {
                let slot = self.sessions.entry(session).or_default();
                tracing::debug!(parent: &slot.span.0, %reason, "session ended");
                slot.ended = Some(reason);
                for w in [
                    slot.connect_waker.take(),
                    slot.datagrams.take_waker(),
                    slot.stream_waker.take(),
                ]
                .into_iter()
                .flatten()
                {
                    self.wakes.push(w);
                }
                for w in slot.closed_wakers.drain(..) {
                    self.wakes.push(w);
                }
                for ((_, _), s) in self
                    .streams
                    .range_mut((session, StreamId(0))..=(session, StreamId(u32::MAX)))
                {
                    if !s.closed && s.reset.is_none() {
                        s.reset = Some((ResetOrigin::Application, 0, true));
                    }
                    s.defer_wakes(&mut self.wakes);
                }
                self.incoming.retain(|s| *s != session);
            }
            _ => {}
        }
    }

    fn on_stream(&mut self, session: SessionId, stream: StreamId, event: StreamEvent) {
        if let StreamEvent::Opened { mode } = event {
            let s = self.sessions.entry(session).or_default();
            s.incoming_streams.push_back((stream, mode));
            if let Some(w) = s.stream_waker.take() {
                self.wakes.push(w);
            }
            self.streams.entry((session, stream)).or_default();
            return;
        }
        let Some(slot) = self.streams.get_mut(&(session, stream)) else {
            return;
        };
        match event {
            StreamEvent::Readable => {
                if let Some(w) = slot.read_waker.take() {
                    self.wakes.push(w);
                }
            }
            StreamEvent::Writable => {
                if let Some(w) = slot.write_waker.take() {
                    self.wakes.push(w);
                }
            }
            StreamEvent::Finished => {
                slot.fin_received = true;
                if let Some(w) = slot.read_waker.take() {
                    self.wakes.push(w);
                }
            }
            StreamEvent::Acknowledged => {
                slot.acknowledged = true;
                if let Some(w) = slot.finish_waker.take() {
                    self.wakes.push(w);
                }
            }
            StreamEvent::Reset {
                origin,
                code,
                remote,
            } => {
                slot.reset = Some((origin, code, remote));
                slot.defer_wakes(&mut self.wakes);
            }
            StreamEvent::Closed => {
                slot.closed = true;
                slot.fin_received = true;
                slot.acknowledged = true;
                slot.defer_wakes(&mut self.wakes);
            }
            _ => {}
        }
    }

    fn on_rpc(&mut self, now: Instant, e: RpcEvent) {
        match e {
            RpcEvent::Request(incoming) => {
                let handler = self.handlers.get(&*incoming.service).cloned();
                self.calls.entry(incoming.call).or_default();
                match handler {
                    Some(h) => {
                        let parent = self.session_span(incoming.session);
                        self.to_spawn.push((h, *incoming, parent));
                    }
                    None => {
                        // Served by the node but no longer by a handler (unserved in flight).
                        if let Ok(mut c) = self.node.rpc_call(incoming.call) {
                            let _ = c.finish(
                                now,
                                proto_core::rpc::status::UNKNOWN_SERVICE,
                                "no handler serves this service",
                            );
                        }
                        self.calls.remove(&incoming.call);
                    }
                }
            }
            RpcEvent::Message { call, data } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.messages.push_back(data);
                    if let Some(w) = c.recv_waker.take() {
                        self.wakes.push(w);
                    }
                }
            }
            RpcEvent::RequestsDone { call } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.input_done = true;
                    if let Some(w) = c.recv_waker.take() {
                        self.wakes.push(w);
                    }
                }
            }
            RpcEvent::Reply { call, result } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.reply = Some(result);
                    c.defer_wakes(&mut self.wakes);
                }
            }
            RpcEvent::Ended { call, result } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.ended = Some(result);
                    c.defer_wakes(&mut self.wakes);
                }
            }
            RpcEvent::Writable { call } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    if let Some(w) = c.send_waker.take() {
                        self.wakes.push(w);
                    }
                }
            }
            RpcEvent::Aborted { call, reason } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.abort(reason, &mut self.wakes);
                }
            }
            RpcEvent::ServicesChanged { .. } => {
                for w in self.services_wakers.drain(..) {
                    self.wakes.push(w);
                }
            }
            _ => {}
        }
    }

    fn on_log(&mut self, e: LogEvent) {
        match e {
            LogEvent::Acked { log, seq } | LogEvent::Abandoned { log, seq } => {
                let acked = matches!(e, LogEvent::Acked { .. });
                if let Some(l) = self.logs.get_mut(&log) {
                    if let Some(o) = l.outcomes.get_mut(&seq) {
                        *o = Some(acked);
                    }
                    if let Some(w) = l.append_wakers.remove(&seq) {
                        self.wakes.push(w);
                    }
                }
            }
            LogEvent::Committed { log, upto } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    l.committed = l.committed.max(upto);
                    for w in l.tail_wakers.drain(..) {
                        self.wakes.push(w);
                    }
                }
            }
            LogEvent::Role { log, .. } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    l.role_changes += 1;
                    for w in l.role_wakers.drain(..) {
                        self.wakes.push(w);
                    }
                }
            }
            LogEvent::PersistRequested { log, ticket, upto } => {
                // A store that syncs later: its owner does the sync and reports it.
                if let Some(l) = self.logs.get_mut(&log) {
                    l.persist_requests.push_back((ticket, upto));
                    for w in l.role_wakers.drain(..) {
                        self.wakes.push(w);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The handler task's abort check and the handler gauge, with loom's mutex standing in for
    //! the endpoint's lock.
    use super::{CallSlot, DriverStats};
    use crate::wake::loom_models::counting;
    use core::task::Waker;
    use loom::sync::atomic::Ordering;
    use loom::sync::{Arc, Mutex};
    use proto_core::rpc::AbortReason;

    #[test]
    fn loom_an_aborted_handler_is_dropped_or_woken() {
        loom::model(|| {
            let slot = Arc::new(Mutex::new(CallSlot::default()));
            let abort = {
                let slot = slot.clone();
                loom::thread::spawn(move || {
                    let mut wakes = Vec::new();
                    slot.lock()
                        .unwrap()
                        .abort(AbortReason::Cancelled, &mut wakes);
                    wakes.into_iter().for_each(Waker::wake);
                })
            };
            let (count, waker) = counting();
            let dropped = slot.lock().unwrap().poll_aborted(&waker);
            abort.join().unwrap();
            assert!(
                dropped || count.0.load(Ordering::SeqCst) == 1,
                "aborted, and the handler neither dropped nor woken"
            );
            assert!(slot.lock().unwrap().poll_aborted(&waker));
        });
    }

    #[test]
    fn loom_the_handler_gauge_counts_every_start_and_end_once() {
        loom::model(|| {
            let stats = Arc::new(Mutex::new(DriverStats::default()));
            stats.lock().unwrap().handlers_spawned(2);
            // Two handler tasks end on the runtime's threads while the drive loop starts one
            // more and an application reads the counters.
            let ends: Vec<_> = (0..2)
                .map(|_| {
                    let stats = stats.clone();
                    loom::thread::spawn(move || stats.lock().unwrap().handler_gone())
                })
                .collect();
            let spawn = {
                let stats = stats.clone();
                loom::thread::spawn(move || stats.lock().unwrap().handlers_spawned(1))
            };
            let seen = *stats.lock().unwrap();
            assert!(seen.handlers_running <= seen.handlers_started);
            assert!((2..=3).contains(&seen.handlers_started));
            for e in ends {
                e.join().unwrap();
            }
            spawn.join().unwrap();
            let end = *stats.lock().unwrap();
            assert_eq!((end.handlers_started, end.handlers_running), (3, 1));
        });
    }
}
