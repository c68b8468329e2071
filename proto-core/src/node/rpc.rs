//! The node's nRPC API: serving services, starting calls, the borrowed [`CallHandle`],
//! cancel tokens, the observer queue and metrics.
//!
//! This module owns only the glue between the application and the RPC machine
//! ([`crate::rpc`]): it finds the session a call rides, hands the machine that session's
//! streams, and then does what every input needs afterwards (events out, the session queued
//! for transmission, its timer moved). Every method takes effect at once; what it queues
//! leaves through `poll_transmit`, and its events through `poll_event`.

use alloc::vec::Vec;

use super::{Entry, Node, SessionId, State};
use crate::identity::NodeId;
use crate::rpc::discovery::{select, Candidate};
use crate::rpc::machine::Rpc;
use crate::rpc::{
    CallId, CallRecord, CallSpec, CancelToken, MethodSpec, Misuse, RpcError, RpcMetrics, RpcStats,
    ServiceSpec, Shape,
};
use crate::stream::conn::Streams;
use crate::time::Instant;

impl Node {
    /// The RPC machine and the streams of `session` (established, closing or not).
    fn rpc_and_streams(&mut self, session: SessionId) -> Option<(&mut Rpc, &mut Streams)> {
        let Node { entries, rpc, .. } = self;
        match entries.get_mut(&session) {
            Some(Entry {
                state: State::Established(est),
                ..
            }) => Some((rpc, &mut est.streams)),
            _ => None,
        }
    }

    fn open_session(&self, session: SessionId) -> bool {
        matches!(
            self.entries.get(&session),
            Some(Entry {
                state: State::Established(_),
                close_pending: None,
                ..
            })
        )
    }

    /// After any RPC operation on `session`: events out, transmit queue, timer.
    fn after_rpc(&mut self, session: SessionId) {
        // Also moves the RPC machine's events to the node's queue.
        self.drain_stream_events(session);
        self.mark_ready(session);
        self.reschedule(session);
    }

    /// Fires the RPC machine's due timers: call deadlines and the orphan-token collection.
    pub(super) fn fire_rpc_timers(&mut self, now: Instant) {
        for id in self.rpc.take_expired(now) {
            let Some(session) = self.rpc.session_of(id) else {
                continue;
            };
            if let Some((rpc, streams)) = self.rpc_and_streams(session) {
                rpc.expire(now, id, streams);
            }
            self.after_rpc(session);
        }
        self.pull_rpc_events();
    }

    // ---- serving ----

    /// Serves `service` (replacing an earlier list of the same name). Every peer with an
    /// established session is told at once, and every later peer when its session comes up.
    /// Calls then arrive as [`crate::rpc::RpcEvent::Request`].
    pub fn serve(&mut self, now: Instant, service: ServiceSpec) -> Result<(), RpcError> {
        self.clock.observe(now);
        let max = self.rpc.cfg.max_services;
        let mut names: Vec<&str> = service.methods.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(Misuse::BadName.into());
        }
        self.rpc.local.serve(&service, max)?;
        self.announce_all();
        Ok(())
    }

    /// Stops serving `service`; peers are told. Calls in flight carry on. False if it was
    /// not served.
    pub fn unserve(&mut self, now: Instant, service: &str) -> bool {
        self.clock.observe(now);
        let had = self.rpc.local.unserve(service);
        if had {
            self.announce_all();
        }
        had
    }

    fn announce_all(&mut self) {
        let sessions: Vec<SessionId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Established(_)))
            .map(|(id, _)| *id)
            .collect();
        for s in sessions {
            if let Some((rpc, streams)) = self.rpc_and_streams(s) {
                rpc.announce(s, streams);
            }
            self.after_rpc(s);
        }
    }

    /// The peers (with an established session) that announced `service`.
    #[must_use]
    pub fn providers(&self, service: &str) -> Vec<NodeId> {
        self.rpc
            .providers(service, None)
            .filter(|(s, _)| self.open_session(*s))
            .map(|(_, p)| p)
            .collect()
    }

    /// What the peer on `session` announced, if anything.
    #[must_use]
    pub fn peer_services(&self, session: SessionId) -> Vec<ServiceSpec> {
        self.rpc
            .peer_services(session)
            .map(|m| {
                m.iter()
                    .map(|(name, methods)| ServiceSpec {
                        name: name.clone(),
                        methods: methods
                            .iter()
                            .map(|(m, shape)| MethodSpec {
                                name: m.clone(),
                                shape: *shape,
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    // ---- calling ----

    /// Starts a call to `peer`, which must have an established session with this node
    /// (otherwise `NoRoute`). The call's events arrive as [`crate::rpc::RpcEvent`]s naming the
    /// returned id; a small unary call and its reply each fit one datagram.
    ///
    /// Errors that end the call before anything is sent: `NoRoute`, `Timeout` (a zero
    /// deadline), `Cancelled` (its token was cancelled before the call registered) and
    /// `Invalid` (a caller's mistake). Later failures arrive as the call's result.
    pub fn call(
        &mut self,
        now: Instant,
        peer: &NodeId,
        spec: CallSpec<'_>,
    ) -> Result<CallId, RpcError> {
        let now = self.clock.observe(now);
        let session = self
            .by_peer
            .get(peer)
            .copied()
            .filter(|s| self.open_session(*s))
            .ok_or(RpcError::NoRoute)?;
        self.call_on(now, session, &spec)
    }

    /// Starts a call to one of the peers serving `spec.service` with `spec.method`, chosen by
    /// the configured [`crate::rpc::Selection`] (by default the nearest by smoothed RTT,
    /// taking turns among near-equals). `NoRoute` when no peer serves it. Returns the call
    /// and the peer chosen.
    pub fn call_service(
        &mut self,
        now: Instant,
        spec: CallSpec<'_>,
    ) -> Result<(CallId, NodeId), RpcError> {
        let now = self.clock.observe(now);
        let candidates: Vec<Candidate<SessionId>> = self
            .rpc
            .providers(spec.service, Some(spec.method))
            .filter_map(|(s, peer)| match self.entries.get(&s) {
                Some(Entry {
                    state: State::Established(est),
                    close_pending: None,
                    ..
                }) => Some(Candidate {
                    key: s,
                    peer,
                    srtt: est.streams.srtt(),
                    stalled: est.streams.stalled(),
                }),
                _ => None,
            })
            .collect();
        let policy = self.rpc.cfg.selection;
        let pick = select(candidates, policy, &mut self.rpc.cursor).ok_or(RpcError::NoRoute)?;
        let call = self.call_on(now, pick.key, &spec)?;
        Ok((call, pick.peer))
    }

    fn call_on(
        &mut self,
        now: Instant,
        session: SessionId,
        spec: &CallSpec<'_>,
    ) -> Result<CallId, RpcError> {
        let (rpc, streams) = self.rpc_and_streams(session).ok_or(RpcError::NoRoute)?;
        let r = rpc.start_call(now, session, streams, spec);
        self.after_rpc(session);
        r
    }

    /// A handle on a live call (either side), borrowed from the node.
    pub fn rpc_call(&mut self, call: CallId) -> Result<CallHandle<'_>, RpcError> {
        let session = self
            .rpc
            .session_of(call)
            .ok_or(RpcError::Invalid(Misuse::UnknownCall(call)))?;
        Ok(CallHandle {
            node: self,
            call,
            session,
        })
    }

    // ---- cancellation ----

    /// Reserves a cancel token to pass in [`crate::rpc::CallOptions::cancel`]. A token no
    /// live call uses is collected after `rpc.orphan_ttl` (120 s by default).
    pub fn reserve_cancel_token(&mut self, now: Instant) -> Result<CancelToken, RpcError> {
        let now = self.clock.observe(now);
        Ok(self.rpc.tokens.reserve(now)?)
    }

    /// Cancels every live call registered under `token` (CANCEL goes on the wire, and each
    /// resolves with `Cancelled`). A token no call uses yet latches: the next call that
    /// registers it is refused with `Cancelled`. An unknown token (already resolved or
    /// collected) and token 0 do nothing.
    pub fn cancel(&mut self, now: Instant, token: CancelToken) {
        let now = self.clock.observe(now);
        for id in self.rpc.tokens.cancel(token) {
            let Some(session) = self.rpc.session_of(id) else {
                continue;
            };
            if let Some((rpc, streams)) = self.rpc_and_streams(session) {
                rpc.cancel_call(now, id, streams);
            }
            self.after_rpc(session);
        }
    }

    // ---- observability ----

    /// Turns the observer queue on or off (off by default). While on, every finished call
    /// leaves one [`CallRecord`], taken with [`Node::poll_call_record`]; when
    /// `rpc.observer_capacity` records wait, new ones are dropped and counted in
    /// [`RpcMetrics::observer_dropped_total`]. The node never waits for the observer.
    pub fn set_rpc_observer(&mut self, on: bool) {
        self.rpc.observer.set_enabled(on);
    }

    /// The oldest call record waiting for the observer.
    #[must_use]
    pub fn poll_call_record(&mut self) -> Option<CallRecord> {
        self.rpc.observer.pop()
    }

    /// Call records waiting for the observer.
    #[must_use]
    pub fn queued_call_records(&self) -> usize {
        self.rpc.observer.queued()
    }

    /// A snapshot of the per-method metrics and the observer's drop counter.
    #[must_use]
    pub fn rpc_metrics(&self) -> RpcMetrics {
        self.rpc
            .observer
            .snapshot(self.rpc.in_flight(), self.rpc.tokens.len())
    }

    /// The RPC machine's table sizes (calls, stream slots, deadlines), for leak tests.
    #[cfg(test)]
    pub(crate) fn rpc_tables(&self) -> (usize, usize, usize) {
        self.rpc.table_sizes()
    }

    /// nRPC counters.
    #[must_use]
    pub fn rpc_stats(&self) -> RpcStats {
        self.rpc.stats
    }
}

/// One live call, borrowed from its [`Node`]. Caller-side and server-side operations share
/// the handle; the wrong side's operations are `Invalid(WrongSide)`.
pub struct CallHandle<'a> {
    node: &'a mut Node,
    call: CallId,
    session: SessionId,
}

impl core::fmt::Debug for CallHandle<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CallHandle")
            .field("call", &self.call)
            .field("session", &self.session)
            .finish()
    }
}

impl CallHandle<'_> {
    fn with<T>(
        &mut self,
        now: Instant,
        op: impl FnOnce(&mut Rpc, Instant, &mut Streams) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let now = self.node.clock.observe(now);
        let (rpc, streams) = self
            .node
            .rpc_and_streams(self.session)
            .ok_or(RpcError::Invalid(Misuse::UnknownCall(self.call)))?;
        let r = op(rpc, now, streams);
        self.node.after_rpc(self.session);
        r
    }

    /// The call's id.
    #[must_use]
    pub fn id(&self) -> CallId {
        self.call
    }

    /// The other node.
    #[must_use]
    pub fn peer(&self) -> Option<NodeId> {
        self.node.rpc.call_info(self.call).map(|i| i.0)
    }

    /// The call's shape.
    #[must_use]
    pub fn shape(&self) -> Option<Shape> {
        self.node.rpc.call_info(self.call).map(|i| i.1)
    }

    /// When the call's deadline passes, on this node's clock.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.node.rpc.call_info(self.call).and_then(|i| i.2)
    }

    /// Whether this node is the caller.
    #[must_use]
    pub fn is_caller(&self) -> bool {
        self.node.rpc.call_info(self.call).is_some_and(|i| i.3)
    }

    /// Sends one message on this side's streaming direction (requests of client-streaming
    /// and duplex calls; responses of server-streaming and duplex calls). `WouldBlock` when
    /// the peer's credit is used up or the stream's buffer is full: wait for
    /// [`crate::rpc::RpcEvent::Writable`].
    pub fn send(&mut self, now: Instant, msg: &[u8]) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| rpc.send(now, id, s, msg))
    }

    /// Caller: no more requests (client-streaming and duplex).
    pub fn close_send(&mut self, now: Instant) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| rpc.close_send(now, id, s))
    }

    /// Grants the peer `n` more messages: a caller with [`crate::rpc::Credit::Manual`] on a
    /// streaming-response call, or a server adding request credit.
    pub fn grant(&mut self, now: Instant, n: u32) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| rpc.grant(now, id, s, n))
    }

    /// Server: answers a unary or client-streaming call with status 0.
    pub fn reply(&mut self, now: Instant, body: &[u8]) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| rpc.reply(now, id, s, body))
    }

    /// Server: ends the call with `status` and a `detail` text (cut at 1024 bytes on a
    /// character boundary). Status 0 ends a response stream; other statuses are errors the
    /// caller sees as `ServerError`.
    pub fn finish(&mut self, now: Instant, status: u16, detail: &str) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| {
            rpc.end_server(now, id, s, status, detail)
        })
    }

    /// Caller: cancels the call (CANCEL on the wire; it resolves with `Cancelled`). Server:
    /// ends it with status `INTERNAL`.
    pub fn cancel(&mut self, now: Instant) -> Result<(), RpcError> {
        let id = self.call;
        self.with(now, |rpc, now, s| {
            rpc.cancel_call(now, id, s);
            Ok(())
        })
    }
}
