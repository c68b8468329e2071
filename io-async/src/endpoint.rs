//! [`Endpoint`]: one node on one UDP socket, and [`Connection`]: one authenticated session.
//!
//! The endpoint owns the drive loop (spawned on the runtime at bind) and the shared state;
//! every handle is a cheap clone of an `Arc` to it. Sessions belong to the node, not to the
//! handles: dropping a [`Connection`] leaves the session up (other handles, RPC calls and
//! logs may use it); [`Connection::close`] or [`Endpoint::shutdown`] end it.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto_core::{
    Config, DisconnectReason, Identity, Instant, Mode, Node, NodeId, PeerSpec, PublicIdentity,
    SessionId,
};

use crate::driver::Driver;
use crate::error::{BindError, ConnectError, ConnectionError};
use crate::runtime::Runtime;
use crate::state::{Bounds, DriverStats, Inner, PeerInfo, Shared};
use crate::stream::Stream;

/// Settings of the async layer; the protocol's own are in [`EndpointConfig::core`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The core's configuration (seed, limits, timeouts, crypto provider).
    pub core: Config,
    /// Received datagrams kept per connection until `recv_datagram` takes them; beyond it
    /// they are dropped and counted in [`DriverStats::datagrams_dropped`].
    pub datagram_queue: usize,
    /// Incoming sessions kept until `accept` takes them; beyond it they are closed and
    /// counted in [`DriverStats::accepts_dropped`].
    pub accept_queue: usize,
    /// Inputs (datagrams and timer firings) the drive loop handles per wake-up before it
    /// yields to other tasks.
    pub budget: usize,
}

impl EndpointConfig {
    /// The layer's defaults over `core`.
    #[must_use]
    pub fn new(core: Config) -> EndpointConfig {
        EndpointConfig {
            core,
            datagram_queue: 1024,
            accept_queue: 256,
            budget: 256,
        }
    }
}

/// A seed from the operating system, for a production [`Config`]. Tests and simulations pass
/// a fixed seed instead, so that they replay.
///
/// # Errors
/// The OS random source failed.
pub fn os_seed() -> io::Result<proto_core::Seed> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("OS random source: {e}")))?;
    Ok(proto_core::Seed(b))
}

/// Code sent to peers that an endpoint shutting down (or with a full accept queue) closes.
pub const CLOSE_REFUSED: u16 = 0xFF00;
/// Code [`Endpoint::shutdown`] closes sessions with unless told otherwise.
pub const CLOSE_SHUTDOWN: u16 = 0xFF01;

/// One node on one UDP socket: connect to peers, accept them, serve and call RPCs, open logs.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) shared: Arc<Shared>,
    local: SocketAddr,
    id: NodeId,
    static_key: [u8; 32],
    public: PublicIdentity,
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.id)
            .field("local", &self.local)
            .finish()
    }
}

impl Endpoint {
    /// Binds a socket at `addr` on `runtime`, builds the node and starts its drive loop.
    ///
    /// # Errors
    /// [`BindError::Io`] when the socket cannot be bound (address in use...),
    /// [`BindError::Config`] when the configuration is invalid.
    pub fn bind(
        runtime: Arc<dyn Runtime>,
        addr: SocketAddr,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Endpoint, BindError> {
        let socket: Arc<dyn crate::runtime::AsyncUdpSocket> = Arc::from(
            runtime
                .bind(addr)
                .map_err(|source| BindError::Io { addr, source })?,
        );
        let local = socket
            .local_addr()
            .map_err(|source| BindError::Io { addr, source })?;
        let node = Node::new(config.core, identity, runtime.now()).map_err(BindError::Config)?;
        let id = node.node_id();
        let static_key = node.static_key();
        let public = node.public_identity();
        let bounds = Bounds {
            datagrams: config.datagram_queue.max(1),
            accept: config.accept_queue.max(1),
        };
        let span = tracing::debug_span!("endpoint", node = %id, %local);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::new(node, bounds, span.clone())),
            runtime: runtime.clone(),
        });
        let driver = Driver::new(shared.clone(), socket, config.budget).with_span(span);
        runtime.spawn(Box::pin(driver));
        tracing::debug!(node = ?id, %local, "endpoint bound");
        Ok(Endpoint {
            shared,
            local,
            id,
            static_key,
            public,
        })
    }

    /// The address the socket is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// What a peer needs to connect to this node with the one-round-trip IK handshake.
    #[must_use]
    pub fn peer_spec(&self) -> PeerSpec {
        PeerSpec::known(self.public, self.static_key)
    }

    /// Starts a handshake with the node at `addr`; the future resolves once the session is
    /// authenticated or has failed. Dropping the future does not stop the handshake.
    ///
    /// # Errors
    /// The returned future fails with [`ConnectError`]: the handshake timed out (nothing
    /// answers at `addr`, or a firewall drops it), the peer is not who `spec` says, or the
    /// endpoint is shut down.
    pub fn connect(&self, addr: SocketAddr, spec: PeerSpec) -> Connecting {
        let mut inner = self.shared.lock();
        if inner.closing || inner.stopped.is_set() {
            return Connecting {
                shared: self.shared.clone(),
                state: ConnectingState::Failed(Some(ConnectError::EndpointClosed)),
            };
        }
        let now = self.shared.now();
        let state = match inner.node.connect(now, addr, spec) {
            Ok(session) => {
                inner.sessions.entry(session).or_default();
                ConnectingState::Waiting(session)
            }
            Err(e) => ConnectingState::Failed(Some(ConnectError::Refused(e))),
        };
        inner.wake_driver();
        Connecting {
            shared: self.shared.clone(),
            state,
        }
    }

    /// The next session a peer opened to this node; `None` once the endpoint is shutting
    /// down.
    pub async fn accept(&self) -> Option<Connection> {
        core::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<Connection>> {
        let mut inner = self.shared.lock();
        while let Some(session) = inner.incoming.pop() {
            if let Some(c) = connection_of(&self.shared, &inner, session) {
                return Poll::Ready(Some(c));
            }
        }
        if inner.closing || inner.stopped.is_set() {
            return Poll::Ready(None);
        }
        inner.incoming.wait(cx.waker());
        Poll::Pending
    }

    /// The established session with `peer`, if there is one.
    #[must_use]
    pub fn connection(&self, peer: &NodeId) -> Option<Connection> {
        let inner = self.shared.lock();
        let session = inner.node.session_with(peer)?;
        connection_of(&self.shared, &inner, session)
    }

    /// Counters of the core (drops by reason, datagrams, handshakes).
    #[must_use]
    pub fn stats(&self) -> proto_core::NodeStats {
        self.shared.lock().node.stats()
    }

    /// Counters of this layer (queue drops, wake-ups, handler tasks).
    #[must_use]
    pub fn driver_stats(&self) -> DriverStats {
        self.shared.lock().stats
    }

    /// Runs `f` on the node under the lock, for what the handles do not cover (stream
    /// transport stats, RPC metrics...). Output it queues is sent.
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let r = f(&mut inner.node, now);
        inner.wake_driver();
        r
    }

    /// Shuts down gracefully: stops accepting sessions and serving calls, waits up to
    /// `drain` for calls to finish and for the peers to acknowledge what every open stream
    /// sent, closes every session with `code` (the peers see `ClosedByPeer`), sends the
    /// closes, and stops the drive loop. Every handle fails from then on with a clear error.
    ///
    /// Acknowledged means in the peer's receive buffers: a session's end discards what its
    /// application had not read yet (its reads fail with a reset, never a short stream). When
    /// the application must know its peer *read* everything, let the peer close: wait for
    /// [`Connection::closed`] before shutting down, as `net-mesh send-file` does.
    pub async fn shutdown(&self, code: u16, drain: Duration) {
        {
            let mut inner = self.shared.lock();
            let now = self.shared.now();
            inner.begin_shutdown(now, code, drain);
            if let Some(w) = inner.incoming.take_waker() {
                w.wake();
            }
            inner.wake_driver();
        }
        self.stopped().await;
    }

    /// Stops the endpoint at once, telling nobody: the drive loop ends and the socket is
    /// closed, as if the process had died (peers notice by silence). For crash tests; a
    /// clean stop is [`Endpoint::shutdown`].
    pub fn abort(&self) {
        let mut inner = self.shared.lock();
        inner.stop(String::from("aborted"));
        inner.wake_driver();
    }

    /// The runtime's clock, as the core's instant (virtual under io-sim).
    #[must_use]
    pub fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Sleeps for `d` on the runtime's clock. Application code that sleeps through this
    /// (rather than its runtime's own timer) runs unchanged on virtual time under io-sim.
    pub async fn sleep(&self, d: Duration) {
        let at = self.shared.now().saturating_add(d);
        let mut timer = self.shared.runtime.new_timer(at);
        core::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
    }

    /// Resolves once the drive loop has stopped, with the reason.
    pub async fn stopped(&self) -> String {
        core::future::poll_fn(|cx| self.shared.lock().stopped.poll(cx.waker())).await
    }
}

fn connection_of(shared: &Arc<Shared>, inner: &Inner, session: SessionId) -> Option<Connection> {
    let slot = inner.sessions.get(&session)?;
    if slot.ended.is_some() {
        return None;
    }
    let info = slot.info?;
    Some(Connection {
        shared: shared.clone(),
        session,
        info,
    })
}

enum ConnectingState {
    Waiting(SessionId),
    Failed(Option<ConnectError>),
}

/// A handshake in progress, from [`Endpoint::connect`].
#[must_use = "a handshake runs whether or not it is awaited; await it to get the connection"]
pub struct Connecting {
    shared: Arc<Shared>,
    state: ConnectingState,
}

impl Future for Connecting {
    type Output = Result<Connection, ConnectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let session = match &mut this.state {
            ConnectingState::Failed(e) => {
                return Poll::Ready(Err(e.take().unwrap_or(ConnectError::EndpointClosed)))
            }
            ConnectingState::Waiting(s) => *s,
        };
        let mut inner = this.shared.lock();
        let stopped = inner.stopped.is_set();
        let Some(slot) = inner.sessions.get_mut(&session) else {
            return Poll::Ready(Err(ConnectError::EndpointClosed));
        };
        if let Some(reason) = slot.ended {
            return Poll::Ready(Err(ConnectError::Failed(reason)));
        }
        if let Some(info) = slot.info {
            return Poll::Ready(Ok(Connection {
                shared: this.shared.clone(),
                session,
                info,
            }));
        }
        if stopped {
            return Poll::Ready(Err(ConnectError::EndpointClosed));
        }
        crate::wake::keep(&mut slot.connect_waker, cx.waker());
        Poll::Pending
    }
}

/// One authenticated session with a peer.
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) session: SessionId,
    info: PeerInfo,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session)
            .field("peer", &self.info.peer)
            .field("addr", &self.info.addr)
            .finish()
    }
}

impl Connection {
    /// The session's id in the node.
    #[must_use]
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The authenticated peer.
    #[must_use]
    pub fn peer(&self) -> NodeId {
        self.info.peer
    }

    /// The peer's address.
    #[must_use]
    pub fn remote_addr(&self) -> SocketAddr {
        self.info.addr
    }

    /// Whether this side started the handshake.
    #[must_use]
    pub fn initiator(&self) -> bool {
        self.info.initiator
    }

    /// The session's `tracing` span (`session{id, peer, addr, initiator}`, a child of the
    /// endpoint's). The driver's events about this session, its streams' spans and the spans
    /// of handlers serving its calls sit under it; instrument your own work on the connection
    /// with it (`fut.instrument(conn.span().clone())`) to see it in the same tree. Disabled
    /// when no subscriber wants `DEBUG` spans.
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        self.shared.lock().session_span(self.session)
    }

    /// What to pass to [`Endpoint::connect`] to reach this peer again with IK.
    #[must_use]
    pub fn peer_spec(&self) -> PeerSpec {
        PeerSpec::known(self.info.identity, self.info.static_key)
    }

    /// The smoothed round-trip time measured by the session's streams, once measured.
    #[must_use]
    pub fn rtt(&self) -> Option<Duration> {
        let inner = self.shared.lock();
        inner
            .node
            .stream_transport(self.session)
            .and_then(|t| t.srtt)
    }

    /// Sends an unreliable datagram (queued until the socket takes it).
    ///
    /// # Errors
    /// The session ended, the datagram is larger than a packet carries, or the session's
    /// queue is full (back-pressure: retry after a moment).
    pub fn send_datagram(&self, data: &[u8]) -> Result<(), ConnectionError> {
        let mut inner = self.shared.lock();
        if let Some(reason) = self.ended(&inner) {
            return Err(ConnectionError::Closed(reason));
        }
        let now = self.shared.now();
        let r = inner.node.send_datagram(now, self.session, data);
        inner.wake_driver();
        r.map_err(ConnectionError::Core)
    }

    /// The next unreliable datagram from the peer.
    ///
    /// # Errors
    /// [`ConnectionError::Closed`] once the session has ended and no datagram is left.
    pub async fn recv_datagram(&self) -> Result<Vec<u8>, ConnectionError> {
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let stopped = inner.stopped.is_set();
            let slot = inner.sessions.entry(self.session).or_default();
            if let Some(d) = slot.datagrams.pop() {
                return Poll::Ready(Ok(d));
            }
            if let Some(reason) = slot.ended {
                return Poll::Ready(Err(ConnectionError::Closed(reason)));
            }
            if stopped {
                return Poll::Ready(Err(ConnectionError::EndpointStopped));
            }
            slot.datagrams.wait(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Opens a stream (no round trip: the peer sees it with its first bytes).
    ///
    /// # Errors
    /// The session ended, or it has as many streams open as the peer allows.
    pub fn open_stream(&self, mode: Mode) -> Result<Stream, ConnectionError> {
        let mut inner = self.shared.lock();
        if let Some(reason) = self.ended(&inner) {
            return Err(ConnectionError::Closed(reason));
        }
        let now = self.shared.now();
        let id = inner
            .node
            .open_stream(now, self.session, mode)
            .map_err(ConnectionError::Core)?;
        inner.streams.entry((self.session, id)).or_default();
        inner.wake_driver();
        let parent = inner.session_span(self.session);
        Ok(Stream::new(
            self.shared.clone(),
            self.session,
            id,
            mode,
            &parent,
            true,
        ))
    }

    /// The next stream the peer opened.
    ///
    /// # Errors
    /// [`ConnectionError::Closed`] once the session has ended.
    pub async fn accept_stream(&self) -> Result<Stream, ConnectionError> {
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let stopped = inner.stopped.is_set();
            let slot = inner.sessions.entry(self.session).or_default();
            if let Some((id, mode)) = slot.incoming_streams.pop_front() {
                return Poll::Ready(Ok(Stream::new(
                    self.shared.clone(),
                    self.session,
                    id,
                    mode,
                    &slot.span.0,
                    false,
                )));
            }
            if let Some(reason) = slot.ended {
                return Poll::Ready(Err(ConnectionError::Closed(reason)));
            }
            if stopped {
                return Poll::Ready(Err(ConnectionError::EndpointStopped));
            }
            crate::wake::keep(&mut slot.stream_waker, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Closes the session; the peer sees `ClosedByPeer { code }`.
    pub fn close(&self, code: u16) {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let _ = inner.node.close(now, self.session, code);
        inner.wake_driver();
    }

    /// Resolves when the session ends, with why.
    pub async fn closed(&self) -> DisconnectReason {
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let slot = inner.sessions.entry(self.session).or_default();
            if let Some(reason) = slot.ended {
                return Poll::Ready(reason);
            }
            crate::wake::register(&mut slot.closed_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    fn ended(&self, inner: &Inner) -> Option<DisconnectReason> {
        inner.sessions.get(&self.session).and_then(|s| s.ended)
    }
}

/// How a graceful shutdown proceeds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShutdownState {
    code: u16,
    drain_until: Instant,
    closing_sent: bool,
    give_up: Instant,
}

impl Inner {
    pub(crate) fn begin_shutdown(&mut self, now: Instant, code: u16, drain: Duration) {
        if self.shutdown.is_some() || self.stopped.is_set() {
            return;
        }
        self.closing = true;
        let names: Vec<String> = self.handlers.keys().cloned().collect();
        for name in names {
            self.node.unserve(now, &name);
        }
        self.handlers.clear();
        let drain_until = now.saturating_add(drain);
        self.shutdown = Some(ShutdownState {
            code,
            drain_until,
            closing_sent: false,
            give_up: drain_until.saturating_add(Duration::from_secs(1)),
        });
    }

    /// When the shutdown needs a wake-up the core does not know of.
    pub(crate) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown.map(|s| {
            if s.closing_sent {
                s.give_up
            } else {
                s.drain_until
            }
        })
    }

    /// Advances a shutdown; `Some(reason)` once the loop must stop.
    pub(crate) fn finish_shutdown_if_done(
        &mut self,
        now: Instant,
        sent_all: bool,
    ) -> Option<String> {
        let mut s = self.shutdown?;
        if !s.closing_sent {
            let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
            // Calls in flight, and application streams whose sending direction the peer has
            // not fully acknowledged yet (the streams that carry nRPC and logs end with
            // their sessions).
            let busy = !self.calls.is_empty()
                || self
                    .streams
                    .values()
                    .any(|s| !(s.closed || s.acknowledged || s.reset.is_some()));
            if busy && now < s.drain_until {
                return None;
            }
            for id in sessions {
                let _ = self.node.close(now, id, s.code);
            }
            s.closing_sent = true;
            self.shutdown = Some(s);
            return None; // the closes go out on the next round
        }
        let done = sent_all && self.node.session_count() == 0 && self.node.queued_transmits() == 0;
        if done || now >= s.give_up {
            self.stop(String::from("shut down"));
            return self.stopped.get().cloned();
        }
        None
    }

    /// Stops the loop: every waiting handle is woken to see it.
    pub(crate) fn stop(&mut self, why: String) {
        let waiting = self.stopped.set(why);
        self.closing = true;
        waiting.into_iter().for_each(Waker::wake);
        if let Some(w) = self.incoming.take_waker() {
            w.wake();
        }
        for s in self.sessions.values_mut() {
            if s.ended.is_none() {
                s.ended = Some(DisconnectReason::LocallyClosed {
                    code: CLOSE_SHUTDOWN,
                });
            }
            for w in [
                s.connect_waker.take(),
                s.datagrams.take_waker(),
                s.stream_waker.take(),
            ]
            .into_iter()
            .flatten()
            {
                w.wake();
            }
            for w in s.closed_wakers.drain(..) {
                w.wake();
            }
        }
        for s in self.streams.values_mut() {
            if s.reset.is_none() && !s.closed {
                s.reset = Some((proto_core::ResetOrigin::Application, 0, false));
            }
            s.wake_all();
        }
        for c in self.calls.values_mut() {
            c.wake_all();
        }
        for l in self.logs.values_mut() {
            for w in l.append_wakers.values() {
                w.wake_by_ref();
            }
            for w in l.tail_wakers.drain(..).chain(l.role_wakers.drain(..)) {
                w.wake();
            }
        }
    }
}
