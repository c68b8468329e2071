//! The nRPC machine: calls on both sides, their framing and credit, announcements, deadlines.
//!
//! It owns every call in flight and what it knows of each session (the announcement streams
//! and the peer's services). The node hands it the events of nRPC-class streams and the
//! application's commands, each with the session's [`Streams`]; it reads and writes those
//! streams and queues [`RpcEvent`]s and call records. It never touches another layer: no
//! packets, no keys, no clock.
//!
//! A call's life on its stream (see `docs/rpc.md` for the frames):
//! - caller: CALL, then its messages, then EOS (streaming requests); the caller finishes its
//!   direction as soon as it has nothing more to say: at once for unary, after EOS for
//!   client-streaming, after END when it may still have to GRANT (streaming responses).
//! - server: its messages, then END, then the end of its direction.
//! - Either side ends the call early by resetting the stream: CANCEL, DEADLINE or PROTOCOL.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::cancel::{Attach, Tokens};
use super::discovery::{Local, Lookup, Remote};
use super::observe::{Direction, Observer, Outcome};
use super::{
    status, AbortReason, CallId, CallSpec, Credit, Incoming, Misuse, RpcConfig, RpcError, RpcEvent,
    RpcStats, Shape, TransportError, INITIAL_REQUEST_CREDIT, RESET_CANCEL, RESET_DEADLINE,
    RESET_PROTOCOL,
};
use crate::identity::NodeId;
use crate::node::{DisconnectReason, SessionId};
use crate::stream::conn::{read_some, Backlog, Streams};
use crate::stream::{Class, Mode, ResetOrigin, StreamError, StreamEvent, StreamId};
use crate::time::Instant;
use crate::wire::rpc::{self as wr, CallHeader, RpcFrame, MAX_METADATA, MAX_NAME_LEN};

/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Largest CALL or SERVICES body accepted besides messages.
const MAX_CONTROL_BODY: usize = 1 << 16;

/// What an nRPC stream of a session is to us.
#[derive(Debug)]
enum Slot {
    /// Opened by the peer; its first frame has not arrived whole yet.
    Pending(Vec<u8>),
    /// A live call.
    Call(CallId),
    /// The peer's announcement stream.
    Control(Vec<u8>),
    /// The call ended; the rest of the stream is read and discarded until it closes. A
    /// server's last bytes that the stream could not take yet wait here.
    Ended(Option<Box<Outbox>>),
}

/// Bytes still to be written to an ended call's stream, then its FIN.
#[derive(Debug)]
struct Outbox {
    buf: Vec<u8>,
    pos: usize,
}

/// What the machine knows of one established session.
#[derive(Debug)]
struct Link {
    peer: NodeId,
    /// Our announcement stream, its unsent bytes, and the version last written.
    ours: Option<StreamId>,
    ours_out: Backlog,
    announced: Option<u32>,
    /// The peer's announcement stream and what it said.
    theirs: Option<StreamId>,
    remote: Remote,
    calls: BTreeSet<CallId>,
}

#[derive(Debug)]
struct Call {
    session: SessionId,
    stream: StreamId,
    peer: NodeId,
    client: bool,
    shape: Shape,
    service: Arc<str>,
    method: Arc<str>,
    started: Instant,
    deadline: Option<Instant>,
    token: Option<super::CancelToken>,
    /// Bytes read from the stream and not yet parsed.
    inbuf: Vec<u8>,
    /// Bytes for the stream it has not taken yet (`out[out_pos..]`).
    out: Vec<u8>,
    out_pos: usize,
    /// Finish our direction once `out` is flushed.
    finish_when_flushed: bool,
    /// Our direction's FIN was requested: nothing more can be written (no GRANT either).
    fin: bool,
    /// No more messages from us (EOS sent, the single request or reply sent, END sent).
    send_closed: bool,
    /// Messages we may still send on a streaming direction.
    send_credit: u64,
    /// Messages the peer may still send us before our next GRANT.
    recv_left: u64,
    /// Automatic granting: the window, and what was delivered since the last GRANT.
    auto: Option<u32>,
    delivered: u32,
    /// Server: the request (single-request shapes) or the call (streaming) was surfaced.
    surfaced: bool,
    got_eos: bool,
    /// Caller of a single-response shape: the response, until END.
    reply: Option<Vec<u8>>,
    /// Server of a single-request call: the metadata, until the request surfaces.
    meta: Vec<(String, Vec<u8>)>,
    /// A send was refused: emit `Writable` when there is room and credit again.
    blocked: bool,
    request_bytes: u64,
    response_bytes: u64,
}

impl Call {
    /// Whether this side sends a stream of messages (caller: requests; server: responses).
    fn sends_stream(&self) -> bool {
        if self.client {
            self.shape.streams_requests()
        } else {
            self.shape.streams_responses()
        }
    }

    /// Whether this side receives a stream of messages.
    fn receives_stream(&self) -> bool {
        if self.client {
            self.shape.streams_responses()
        } else {
            self.shape.streams_requests()
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len().saturating_sub(self.out_pos)
    }
}

/// The nRPC machine of a node.
#[derive(Debug)]
pub(crate) struct Rpc {
    pub(crate) cfg: RpcConfig,
    next_call: u64,
    /// Boxed: a call is a few hundred bytes, and B-tree nodes move their values around.
    calls: BTreeMap<CallId, Box<Call>>,
    slots: BTreeMap<(SessionId, u32), Slot>,
    links: BTreeMap<SessionId, Link>,
    deadlines: BTreeSet<(Instant, CallId)>,
    pub(crate) tokens: Tokens,
    pub(crate) local: Local,
    pub(crate) observer: Observer,
    pub(crate) events: VecDeque<RpcEvent>,
    pub(crate) stats: RpcStats,
    pub(crate) cursor: u64,
    in_flight: (usize, usize),
    /// Where stream reads land before they are appended to a call's buffer (zeroed once).
    scratch: Vec<u8>,
    /// Service and method names seen, shared by every call that names them (bounded by
    /// `MAX_NAMES`; beyond it names are allocated per call).
    names: BTreeMap<String, Arc<str>>,
    /// Byte buffers of finished calls, reused by new ones (at most `MAX_SPARE_BUFFERS`).
    spare: Vec<Vec<u8>>,
}

/// Names kept by [`Rpc::intern`].
const MAX_NAMES: usize = 4096;
/// Buffers kept for reuse.
const MAX_SPARE_BUFFERS: usize = 256;
/// Larger buffers are not kept.
const MAX_SPARE_CAPACITY: usize = 64 * 1024;

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NAME_LEN
}

impl Rpc {
    pub(crate) fn new(cfg: RpcConfig) -> Rpc {
        Rpc {
            next_call: 1,
            calls: BTreeMap::new(),
            slots: BTreeMap::new(),
            links: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            tokens: Tokens::new(cfg.orphan_ttl, cfg.max_cancel_tokens),
            local: Local::default(),
            observer: Observer::new(cfg.observer_capacity, cfg.max_metric_methods),
            events: VecDeque::new(),
            stats: RpcStats::default(),
            cursor: 0,
            in_flight: (0, 0),
            scratch: alloc::vec![0; READ_CHUNK],
            names: BTreeMap::new(),
            spare: Vec::new(),
            cfg,
        }
    }

    fn max_body(&self) -> usize {
        self.cfg
            .max_message
            .max(MAX_CONTROL_BODY)
            .saturating_add(16)
    }

    /// The shared copy of a service or method name.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.names.get(name) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(name);
        if self.names.len() < MAX_NAMES {
            self.names.insert(String::from(name), Arc::clone(&a));
        }
        a
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn give_buf(&mut self, mut b: Vec<u8>) {
        if b.capacity() > 0
            && b.capacity() <= MAX_SPARE_CAPACITY
            && self.spare.len() < MAX_SPARE_BUFFERS
        {
            b.clear();
            self.spare.push(b);
        }
    }

    fn fresh_call(&mut self) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        id
    }

    /// Sizes of the per-call tables (calls, stream slots, deadlines), for leak tests.
    #[cfg(test)]
    pub(crate) fn table_sizes(&self) -> (usize, usize, usize) {
        (self.calls.len(), self.slots.len(), self.deadlines.len())
    }

    pub(crate) fn in_flight(&self) -> (usize, usize) {
        self.in_flight
    }

    /// The session a live call rides.
    pub(crate) fn session_of(&self, call: CallId) -> Option<SessionId> {
        self.calls.get(&call).map(|c| c.session)
    }

    /// The live call's deadline and peer, if any.
    pub(crate) fn call_info(&self, call: CallId) -> Option<(NodeId, Shape, Option<Instant>, bool)> {
        self.calls
            .get(&call)
            .map(|c| (c.peer, c.shape, c.deadline, c.client))
    }

    /// The sessions whose peers serve `service` (and `method`, if given).
    pub(crate) fn providers<'a>(
        &'a self,
        service: &'a str,
        method: Option<&'a str>,
    ) -> impl Iterator<Item = (SessionId, NodeId)> + 'a {
        self.links
            .iter()
            .filter_map(move |(s, l)| l.remote.serves(service, method).then_some((*s, l.peer)))
    }

    /// What the peer on `session` announced: service → methods.
    pub(crate) fn peer_services(
        &self,
        session: SessionId,
    ) -> Option<&BTreeMap<String, super::discovery::Methods>> {
        self.links.get(&session).map(|l| &l.remote.services)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let d = self.deadlines.first().map(|(at, _)| *at);
        match (d, self.tokens.next_collection()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Calls whose deadline is at or before `now` (removed from the deadline table).
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<CallId> {
        self.tokens.collect(now);
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            out.push(id);
        }
        out
    }

    // ---- sessions ----

    pub(crate) fn on_session_up(
        &mut self,
        session: SessionId,
        peer: NodeId,
        streams: &mut Streams,
    ) {
        self.links.insert(
            session,
            Link {
                peer,
                ours: None,
                ours_out: Backlog::default(),
                announced: None,
                theirs: None,
                remote: Remote::default(),
                calls: BTreeSet::new(),
            },
        );
        if !self.local.is_empty() {
            self.announce(session, streams);
        }
    }

    /// Writes our current services on `session`'s announcement stream if the peer has not
    /// heard this version yet.
    pub(crate) fn announce(&mut self, session: SessionId, streams: &mut Streams) {
        let version = self.local.version;
        let Some(link) = self.links.get_mut(&session) else {
            return;
        };
        if link.announced == Some(version) || (link.announced.is_none() && self.local.is_empty()) {
            return;
        }
        let id = match link.ours {
            Some(id) => id,
            None => match streams.open(Mode::Ordered, Class::Rpc) {
                Ok(id) => {
                    link.ours = Some(id);
                    self.slots.insert((session, id.0), Slot::Ended(None));
                    id
                }
                // No stream to spare now; the next change or session retries.
                Err(_) => return,
            },
        };
        link.announced = Some(version);
        // A newer list replaces an older one none of which left yet; one the stream took
        // part of is finished first (cutting it would break the stream's framing).
        if link.ours_out.untouched() {
            link.ours_out.clear();
        }
        self.local.encode(link.ours_out.tail());
        link.ours_out.flush(streams, id);
    }

    pub(crate) fn on_session_closed(
        &mut self,
        now: Instant,
        session: SessionId,
        reason: DisconnectReason,
    ) {
        let Some(link) = self.links.remove(&session) else {
            return;
        };
        for id in link.calls {
            let Some(call) = self.remove_call(id) else {
                continue;
            };
            if call.client {
                let err = RpcError::Transport(TransportError::SessionEnded(reason));
                self.resolve_client(now, id, call, Err(err));
            } else {
                self.abort_server(now, id, call, AbortReason::Transport);
            }
        }
        let keys: Vec<_> = self
            .slots
            .range((session, 0)..=(session, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.slots.remove(&k);
        }
        if !link.remote.services.is_empty() {
            self.events.push_back(RpcEvent::ServicesChanged {
                session,
                peer: link.peer,
            });
        }
    }

    // ---- the caller's side ----

    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        spec: &CallSpec<'_>,
    ) -> Result<CallId, RpcError> {
        let peer = self.links.get(&session).ok_or(RpcError::NoRoute)?.peer;
        let opts = spec.options;
        if !valid_name(spec.service)
            || !valid_name(spec.method)
            || opts.metadata.len() > MAX_METADATA
            || opts
                .metadata
                .iter()
                .any(|(k, v)| !valid_name(k) || v.len() > usize::from(u16::MAX))
        {
            return Err(Misuse::BadName.into());
        }
        if spec.body.is_none() && !spec.shape.streams_requests() {
            return Err(Misuse::MissingBody.into());
        }
        if let Some(b) = spec.body {
            if b.len() > self.cfg.max_message {
                return Err(Misuse::MessageTooLarge {
                    len: b.len(),
                    max: self.cfg.max_message,
                }
                .into());
            }
        }
        if self.calls.len() >= self.cfg.max_calls {
            return Err(Misuse::TooManyCalls.into());
        }
        if let Some(t) = opts.cancel {
            if self.tokens.check(t)? == Attach::AlreadyCancelled {
                // Cancelled before the call existed: it ends here, nothing is sent.
                let _ = self.tokens.attach(t, CallId(0));
                return Err(RpcError::Cancelled);
            }
        }
        let deadline_us = match opts.deadline {
            Some(d) if d.is_zero() => return Err(RpcError::Timeout),
            Some(d) => Some(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)),
            None => None,
        };
        let stream = streams
            .open(Mode::Ordered, Class::Rpc)
            .map_err(|e| match e {
                StreamError::IdsExhausted => RpcError::Transport(TransportError::IdsExhausted),
                _ => RpcError::Invalid(Misuse::TooManyCalls),
            })?;
        let (credit, auto) = match opts.credit {
            Credit::Auto(n) => (n.max(1), Some(n.max(1))),
            Credit::Manual(n) => (n, None),
        };
        let credit = if spec.shape.streams_responses() {
            credit
        } else {
            0
        };
        let mut out = self.take_buf();
        let meta = opts
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()));
        if wr::write_call(
            &mut out,
            spec.shape,
            deadline_us,
            credit,
            spec.service,
            spec.method,
            meta,
        )
        .is_err()
        {
            return Err(Misuse::BadName.into());
        }
        let mut send_credit = u64::from(INITIAL_REQUEST_CREDIT);
        let mut request_bytes = 0;
        if let Some(b) = spec.body {
            let _ = wr::write_msg_header(&mut out, b.len());
            out.extend_from_slice(b);
            send_credit -= 1;
            request_bytes = b.len() as u64;
        }
        let unary = spec.shape == Shape::Unary;
        let id = self.fresh_call();
        let deadline = opts.deadline.map(|d| now.saturating_add(d));
        let call = Call {
            session,
            stream,
            peer,
            client: true,
            shape: spec.shape,
            service: self.intern(spec.service),
            method: self.intern(spec.method),
            started: now,
            deadline,
            token: opts.cancel,
            inbuf: self.take_buf(),
            out,
            out_pos: 0,
            finish_when_flushed: unary,
            fin: unary,
            send_closed: !spec.shape.streams_requests(),
            send_credit,
            recv_left: u64::from(credit),
            auto,
            delivered: 0,
            surfaced: true,
            got_eos: false,
            reply: None,
            meta: Vec::new(),
            blocked: false,
            request_bytes,
            response_bytes: 0,
        };
        if let Some(t) = opts.cancel {
            let _ = self.tokens.attach(t, id);
        }
        if let Some(at) = deadline {
            self.deadlines.insert((at, id));
        }
        if let Some(l) = self.links.get_mut(&session) {
            l.calls.insert(id);
        }
        self.slots.insert((session, stream.0), Slot::Call(id));
        self.calls.insert(id, Box::new(call));
        self.in_flight.0 += 1;
        self.stats.calls_started += 1;
        self.flush(now, id, streams);
        Ok(id)
    }

    fn flush(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        if let Some(c) = self.calls.get_mut(&id) {
            flush_call(streams, c, now);
        }
    }

    fn call_mut(&mut self, id: CallId) -> Result<&mut Call, RpcError> {
        self.calls
            .get_mut(&id)
            .map(|c| &mut **c)
            .ok_or(RpcError::Invalid(Misuse::UnknownCall(id)))
    }

    /// Sends one message on the streaming direction of this side.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        msg: &[u8],
    ) -> Result<(), RpcError> {
        let max = self.cfg.max_message;
        let c = self.call_mut(id)?;
        if !c.sends_stream() {
            return Err(Misuse::WrongShape(c.shape).into());
        }
        if c.send_closed {
            return Err(Misuse::Closed.into());
        }
        if msg.len() > max {
            return Err(Misuse::MessageTooLarge {
                len: msg.len(),
                max,
            }
            .into());
        }
        if c.send_credit == 0 || c.pending_out() > max {
            c.blocked = true;
            return Err(Misuse::WouldBlock.into());
        }
        c.send_credit -= 1;
        let _ = wr::write_msg_header(&mut c.out, msg.len());
        c.out.extend_from_slice(msg);
        if c.client {
            c.request_bytes += msg.len() as u64;
        } else {
            c.response_bytes += msg.len() as u64;
        }
        self.flush(now, id, streams);
        Ok(())
    }

    /// Caller: no more requests (EOS).
    pub(crate) fn close_send(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
    ) -> Result<(), RpcError> {
        let c = self.call_mut(id)?;
        if !c.client {
            return Err(Misuse::WrongSide.into());
        }
        if !c.shape.streams_requests() {
            return Err(Misuse::WrongShape(c.shape).into());
        }
        if c.send_closed {
            return Err(Misuse::Closed.into());
        }
        c.send_closed = true;
        wr::write_eos(&mut c.out);
        if !c.shape.streams_responses() {
            // One response to come: no GRANT will be needed, so the direction ends here.
            c.finish_when_flushed = true;
            c.fin = true;
        }
        self.flush(now, id, streams);
        Ok(())
    }

    /// Grants `n` more messages (calls that receive a stream with manual credit; servers may
    /// grant extra request credit at any time).
    pub(crate) fn grant(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        n: u32,
    ) -> Result<(), RpcError> {
        let c = self.call_mut(id)?;
        if !c.receives_stream() {
            return Err(Misuse::WrongShape(c.shape).into());
        }
        if n == 0 || (c.client && c.auto.is_some()) {
            return Err(Misuse::BadCredit.into());
        }
        if c.fin {
            return Err(Misuse::Closed.into());
        }
        c.recv_left = c.recv_left.saturating_add(u64::from(n));
        wr::write_grant(&mut c.out, n);
        self.flush(now, id, streams);
        Ok(())
    }

    /// Cancels the call. Caller side: CANCEL on the wire, and it resolves with `Cancelled`.
    /// Server side: the call ends with status `INTERNAL`.
    pub(crate) fn cancel_call(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        if !c.client {
            let _ = self.end_inner(
                now,
                id,
                streams,
                status::INTERNAL,
                "cancelled by the server",
            );
            return;
        }
        let Some(call) = self.remove_call(id) else {
            return;
        };
        let _ = streams.reset(now, call.stream, RESET_CANCEL);
        self.slots.remove(&(call.session, call.stream.0));
        self.stats.cancels_sent += 1;
        self.resolve_client(now, id, call, Err(RpcError::Cancelled));
    }

    // ---- the server's side ----

    /// Server: the single response of a unary or client-streaming call, with status 0.
    pub(crate) fn reply(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        body: &[u8],
    ) -> Result<(), RpcError> {
        let max = self.cfg.max_message;
        let c = self.call_mut(id)?;
        if c.client {
            return Err(Misuse::WrongSide.into());
        }
        if c.shape.streams_responses() {
            return Err(Misuse::WrongShape(c.shape).into());
        }
        if body.len() > max {
            return Err(Misuse::MessageTooLarge {
                len: body.len(),
                max,
            }
            .into());
        }
        let _ = wr::write_msg_header(&mut c.out, body.len());
        c.out.extend_from_slice(body);
        c.response_bytes += body.len() as u64;
        self.end_inner(now, id, streams, status::OK, "")
    }

    /// Server: ends the call with `code` (0 ends a response stream normally; any other
    /// status is an error, on any shape).
    pub(crate) fn end_server(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        code: u16,
        detail: &str,
    ) -> Result<(), RpcError> {
        let c = self.call_mut(id)?;
        if c.client {
            return Err(Misuse::WrongSide.into());
        }
        if code == status::OK && !c.shape.streams_responses() {
            // A single-response call ends with `reply`: status 0 alone would leave the caller
            // nothing to return.
            return Err(Misuse::WrongShape(c.shape).into());
        }
        self.end_inner(now, id, streams, code, detail)
    }

    fn end_inner(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        code: u16,
        detail: &str,
    ) -> Result<(), RpcError> {
        let c = self.call_mut(id)?;
        wr::write_end(&mut c.out, code, detail);
        c.send_closed = true;
        c.finish_when_flushed = true;
        c.fin = true;
        let Some(mut call) = self.remove_call(id) else {
            return Ok(());
        };
        flush_call(streams, &mut call, now);
        // The stream stays until its end is acknowledged; what the caller still sends is
        // read and dropped. Bytes the stream could not take yet wait in the slot.
        let rest = (call.pending_out() > 0).then(|| {
            Box::new(Outbox {
                buf: core::mem::take(&mut call.out),
                pos: call.out_pos,
            })
        });
        self.slots
            .insert((call.session, call.stream.0), Slot::Ended(rest));
        let outcome = if code == status::OK {
            Outcome::Ok
        } else {
            Outcome::Error {
                status: Some(code),
                message: detail.to_string(),
            }
        };
        self.record(now, id, call, outcome);
        Ok(())
    }

    // ---- timers ----

    /// A call's deadline passed: both sides end it with Timeout.
    pub(crate) fn expire(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        let Some(call) = self.remove_call(id) else {
            return;
        };
        let _ = streams.reset(now, call.stream, RESET_DEADLINE);
        self.slots.remove(&(call.session, call.stream.0));
        self.stats.deadlines_expired += 1;
        if call.client {
            self.resolve_client(now, id, call, Err(RpcError::Timeout));
        } else {
            self.abort_server(now, id, call, AbortReason::Deadline);
        }
    }

    // ---- stream events ----

    pub(crate) fn on_stream_event(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
        ev: StreamEvent,
    ) {
        let key = (session, stream.0);
        match ev {
            StreamEvent::Opened { mode } => {
                if self.slots.contains_key(&key) {
                    return;
                }
                if mode != Mode::Ordered || !self.links.contains_key(&session) {
                    self.violation(now, session, streams, stream);
                    return;
                }
                self.slots.insert(key, Slot::Pending(Vec::new()));
            }
            StreamEvent::Readable | StreamEvent::Finished => {
                self.on_readable(now, session, streams, stream);
            }
            StreamEvent::Writable => self.on_writable(now, session, streams, stream),
            StreamEvent::Reset { origin, code, .. } => {
                match self.slots.remove(&key) {
                    Some(Slot::Call(id)) => self.on_reset(now, id, origin, code),
                    Some(Slot::Control(_)) => self.drop_control(session, stream),
                    _ => {}
                }
                if let Some(l) = self.links.get_mut(&session) {
                    if l.ours == Some(stream) {
                        l.ours = None;
                        l.announced = None;
                        l.ours_out.clear();
                    }
                }
            }
            StreamEvent::Closed => {
                if let Some(Slot::Call(id)) = self.slots.remove(&key) {
                    // Both directions ended without END: the server broke the protocol.
                    if let Some(call) = self.remove_call(id) {
                        self.stats.protocol_violations += 1;
                        self.fail(now, id, call, TransportError::Protocol);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_readable(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
    ) {
        let key = (session, stream.0);
        let max_body = self.max_body();
        match self.slots.get_mut(&key) {
            Some(Slot::Call(id)) => {
                let id = *id;
                self.pump(now, id, streams);
            }
            Some(Slot::Pending(buf)) => {
                let mut buf = core::mem::take(buf);
                let (eof, _) = read_some(streams, stream, &mut buf, &mut self.scratch, max_body);
                self.first_frame(now, session, streams, stream, buf, eof);
            }
            Some(Slot::Control(buf)) => {
                let buf = core::mem::take(buf);
                self.pump_control(now, session, streams, stream, buf);
            }
            // An ended call, our own announcement stream, or a stream we refused: whatever
            // arrives is read and dropped, so the stream can close.
            _ => discard(streams, stream),
        }
    }

    /// The first frame of a stream the peer opened: a call, or its announcement stream.
    fn first_frame(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
        mut buf: Vec<u8>,
        eof: bool,
    ) {
        let key = (session, stream.0);
        let accepted = match wr::decode(&buf, self.max_body()) {
            Ok(None) => {
                if eof {
                    // An empty stream: nothing to do.
                    self.slots.remove(&key);
                } else {
                    self.slots.insert(key, Slot::Pending(buf));
                }
                return;
            }
            Ok(Some((RpcFrame::Call(h), n))) => {
                (self.accept_call(now, session, streams, stream, &h), n)
            }
            Ok(Some((RpcFrame::Services(_), _))) => {
                let Some(link) = self.links.get_mut(&session) else {
                    return;
                };
                if link.theirs.is_some() {
                    self.violation(now, session, streams, stream);
                    return;
                }
                link.theirs = Some(stream);
                self.slots.insert(key, Slot::Control(Vec::new()));
                self.pump_control(now, session, streams, stream, buf);
                return;
            }
            _ => {
                self.violation(now, session, streams, stream);
                return;
            }
        };
        if let (Some(id), n) = accepted {
            buf.drain(..n.min(buf.len()));
            if let Some(c) = self.calls.get_mut(&id) {
                c.inbuf = buf;
            }
            self.pump(now, id, streams);
        }
    }

    /// A CALL arrived: reject it with END, or make it a server call.
    fn accept_call(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
        h: &CallHeader<'_>,
    ) -> Option<CallId> {
        self.stats.calls_received += 1;
        let peer = self.links.get(&session)?.peer;
        let reject = match self.local.lookup(h.service, h.method) {
            Lookup::NoService => Some((status::UNKNOWN_SERVICE, "no such service")),
            Lookup::NoMethod => Some((status::UNKNOWN_METHOD, "no such method")),
            Lookup::Found(shape) if shape != h.shape => {
                Some((status::WRONG_SHAPE, "the method has another shape"))
            }
            Lookup::Found(_) if self.calls.len() >= self.cfg.max_calls => {
                Some((status::OVERLOADED, "the server is at its call limit"))
            }
            Lookup::Found(_) => None,
        };
        let id = self.fresh_call();
        let streaming_requests = h.shape.streams_requests();
        let mut call = Call {
            session,
            stream,
            peer,
            client: false,
            shape: h.shape,
            service: self.intern(h.service),
            method: self.intern(h.method),
            started: now,
            deadline: h
                .deadline_us
                .map(|us| now.saturating_add(core::time::Duration::from_micros(us))),
            token: None,
            inbuf: Vec::new(),
            out: self.take_buf(),
            out_pos: 0,
            finish_when_flushed: false,
            fin: false,
            send_closed: false,
            send_credit: if h.shape.streams_responses() {
                u64::from(h.credit)
            } else {
                0
            },
            recv_left: u64::from(INITIAL_REQUEST_CREDIT),
            auto: Some(INITIAL_REQUEST_CREDIT),
            delivered: 0,
            surfaced: streaming_requests,
            got_eos: false,
            reply: None,
            meta: h
                .metadata
                .iter()
                .map(|(k, v)| (String::from(k), v.to_vec()))
                .collect(),
            blocked: false,
            request_bytes: 0,
            response_bytes: 0,
        };
        if let Some((code, why)) = reject {
            self.stats.calls_rejected += 1;
            let mut out = Vec::new();
            wr::write_end(&mut out, code, why);
            let _ = streams.write(stream, &out);
            let _ = streams.finish(now, stream);
            self.slots.insert((session, stream.0), Slot::Ended(None));
            call.meta.clear();
            self.record(
                now,
                id,
                call,
                Outcome::Error {
                    status: Some(code),
                    message: String::from(why),
                },
            );
            return None;
        }
        if let Some(at) = call.deadline {
            self.deadlines.insert((at, id));
        }
        if streaming_requests {
            let meta = core::mem::take(&mut call.meta);
            self.events
                .push_back(RpcEvent::Request(Box::new(incoming(id, &call, meta, None))));
        }
        if let Some(l) = self.links.get_mut(&session) {
            l.calls.insert(id);
        }
        self.slots.insert((session, stream.0), Slot::Call(id));
        self.calls.insert(id, Box::new(call));
        self.in_flight.1 += 1;
        Some(id)
    }

    /// Reads what the call's stream has and applies every whole frame.
    fn pump(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        let max_body = self.max_body();
        loop {
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            let (stream, session) = (c.stream, c.session);
            let mut buf = core::mem::take(&mut c.inbuf);
            let (eof, got) = read_some(streams, stream, &mut buf, &mut self.scratch, max_body);
            let mut pos = 0;
            loop {
                match wr::decode(buf.get(pos..).unwrap_or(&[]), max_body) {
                    Ok(None) => break,
                    Ok(Some((f, n))) => {
                        pos += n;
                        if !self.on_frame(now, id, streams, f) {
                            return;
                        }
                    }
                    Err(_) => {
                        self.violation(now, session, streams, stream);
                        return;
                    }
                }
            }
            buf.drain(..pos.min(buf.len()));
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            c.inbuf = buf;
            if eof {
                self.on_eof(now, id, streams);
                return;
            }
            if !got {
                return;
            }
        }
    }

    /// Applies one frame of a live call; false if the call ended.
    fn on_frame(
        &mut self,
        now: Instant,
        id: CallId,
        streams: &mut Streams,
        f: RpcFrame<'_>,
    ) -> bool {
        let max = self.cfg.max_message;
        let Some(c) = self.calls.get_mut(&id) else {
            return false;
        };
        let (session, stream) = (c.session, c.stream);
        let ok = match (c.client, f) {
            (_, RpcFrame::Msg(data)) if data.len() > max => false,
            (true, RpcFrame::Msg(data)) => {
                c.response_bytes += data.len() as u64;
                if c.shape.streams_responses() {
                    if c.recv_left == 0 {
                        false
                    } else {
                        c.recv_left -= 1;
                        self.events.push_back(RpcEvent::Message {
                            call: id,
                            data: data.to_vec(),
                        });
                        self.auto_grant(now, id, streams);
                        true
                    }
                } else if c.reply.is_some() {
                    false
                } else {
                    c.reply = Some(data.to_vec());
                    true
                }
            }
            (
                true,
                RpcFrame::End {
                    status: code,
                    detail,
                },
            ) => {
                let Some(call) = self.remove_call(id) else {
                    return false;
                };
                if !call.fin {
                    let _ = streams.finish(now, stream);
                }
                self.slots.insert((session, stream.0), Slot::Ended(None));
                let result = if code == status::OK {
                    Ok(())
                } else {
                    Err(RpcError::ServerError {
                        status: code,
                        message: String::from(detail),
                    })
                };
                self.resolve_client(now, id, call, result);
                return false;
            }
            (false, RpcFrame::Msg(data)) => {
                c.request_bytes += data.len() as u64;
                if !c.surfaced {
                    c.surfaced = true;
                    let meta = core::mem::take(&mut c.meta);
                    let ev = incoming(id, c, meta, Some(data.to_vec()));
                    self.events.push_back(RpcEvent::Request(Box::new(ev)));
                    true
                } else if c.shape.streams_requests() && !c.got_eos && c.recv_left > 0 {
                    c.recv_left -= 1;
                    self.events.push_back(RpcEvent::Message {
                        call: id,
                        data: data.to_vec(),
                    });
                    self.auto_grant(now, id, streams);
                    true
                } else {
                    false
                }
            }
            (false, RpcFrame::Eos) if c.shape.streams_requests() && !c.got_eos => {
                c.got_eos = true;
                self.events.push_back(RpcEvent::RequestsDone { call: id });
                true
            }
            (_, RpcFrame::Grant(n)) if c.sends_stream() => {
                c.send_credit = c.send_credit.saturating_add(u64::from(n));
                self.maybe_writable(id);
                true
            }
            _ => false,
        };
        if !ok {
            self.violation(now, session, streams, stream);
        }
        ok
    }

    /// The peer finished its direction of a live call.
    fn on_eof(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let (session, stream) = (c.session, c.stream);
        if c.client || !c.surfaced {
            // A server that ends without END, or a caller that ends before its request.
            self.violation(now, session, streams, stream);
            return;
        }
        if c.shape.streams_requests() && !c.got_eos {
            c.got_eos = true;
            self.events.push_back(RpcEvent::RequestsDone { call: id });
        }
    }

    fn auto_grant(&mut self, now: Instant, id: CallId, streams: &mut Streams) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(window) = c.auto else {
            return;
        };
        c.delivered += 1;
        if c.delivered >= (window / 2).max(1) && !c.fin {
            let n = core::mem::take(&mut c.delivered);
            c.recv_left = c.recv_left.saturating_add(u64::from(n));
            wr::write_grant(&mut c.out, n);
            flush_call(streams, c, now);
        }
    }

    fn maybe_writable(&mut self, id: CallId) {
        let max = self.cfg.max_message;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.blocked && c.send_credit > 0 && c.pending_out() <= max && !c.send_closed {
            c.blocked = false;
            self.events.push_back(RpcEvent::Writable { call: id });
        }
    }

    fn on_writable(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
    ) {
        if let Some(l) = self.links.get_mut(&session) {
            if l.ours == Some(stream) {
                l.ours_out.flush(streams, stream);
                return;
            }
        }
        match self.slots.get_mut(&(session, stream.0)) {
            Some(Slot::Call(id)) => {
                let id = *id;
                if let Some(c) = self.calls.get_mut(&id) {
                    flush_call(streams, c, now);
                }
                self.maybe_writable(id);
            }
            Some(Slot::Ended(rest)) => {
                if let Some(ob) = rest {
                    while let Some(b) = ob.buf.get(ob.pos..).filter(|b| !b.is_empty()) {
                        match streams.write(stream, b) {
                            Ok(n) if n > 0 => ob.pos += n,
                            _ => break,
                        }
                    }
                    if ob.pos >= ob.buf.len() {
                        *rest = None;
                        let _ = streams.finish(now, stream);
                    }
                }
            }
            _ => {}
        }
    }

    fn pump_control(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
        mut buf: Vec<u8>,
    ) {
        let max_body = self.max_body();
        let max_services = self.cfg.max_peer_services;
        let _ = read_some(streams, stream, &mut buf, &mut self.scratch, max_body);
        let mut pos = 0;
        let mut changed = false;
        loop {
            match wr::decode(buf.get(pos..).unwrap_or(&[]), max_body) {
                Ok(None) => break,
                Ok(Some((RpcFrame::Services(f), n))) => {
                    pos += n;
                    self.stats.announcements_received += 1;
                    let Some(link) = self.links.get_mut(&session) else {
                        return;
                    };
                    match link.remote.apply(&f, max_services) {
                        Ok(c) => changed |= c,
                        Err(()) => {
                            self.violation(now, session, streams, stream);
                            return;
                        }
                    }
                }
                _ => {
                    self.violation(now, session, streams, stream);
                    return;
                }
            }
        }
        buf.drain(..pos.min(buf.len()));
        if let Some(Slot::Control(b)) = self.slots.get_mut(&(session, stream.0)) {
            *b = buf;
        }
        if changed {
            if let Some(l) = self.links.get(&session) {
                self.events.push_back(RpcEvent::ServicesChanged {
                    session,
                    peer: l.peer,
                });
            }
        }
    }

    fn drop_control(&mut self, session: SessionId, stream: StreamId) {
        let Some(l) = self.links.get_mut(&session) else {
            return;
        };
        if l.theirs != Some(stream) {
            return;
        }
        l.theirs = None;
        let had = !l.remote.services.is_empty();
        l.remote = Remote::default();
        if had {
            self.events.push_back(RpcEvent::ServicesChanged {
                session,
                peer: l.peer,
            });
        }
    }

    /// The peer broke the framing or its credit on `stream`: reset it and end what rode it.
    fn violation(
        &mut self,
        now: Instant,
        session: SessionId,
        streams: &mut Streams,
        stream: StreamId,
    ) {
        self.stats.protocol_violations += 1;
        let _ = streams.reset(now, stream, RESET_PROTOCOL);
        match self.slots.remove(&(session, stream.0)) {
            Some(Slot::Call(id)) => {
                if let Some(call) = self.remove_call(id) {
                    self.fail(now, id, call, TransportError::Protocol);
                }
            }
            Some(Slot::Control(_)) => self.drop_control(session, stream),
            _ => {}
        }
    }

    fn on_reset(&mut self, now: Instant, id: CallId, origin: ResetOrigin, code: u16) {
        let Some(call) = self.remove_call(id) else {
            return;
        };
        let app = origin == ResetOrigin::Application;
        if call.client {
            let err = match code {
                RESET_DEADLINE if app => RpcError::Timeout,
                RESET_CANCEL if app => RpcError::Cancelled,
                RESET_PROTOCOL if app => RpcError::Transport(TransportError::Protocol),
                _ => RpcError::Transport(TransportError::Reset { origin, code }),
            };
            self.resolve_client(now, id, call, Err(err));
        } else {
            let reason = match code {
                RESET_CANCEL if app => {
                    self.stats.cancels_received += 1;
                    AbortReason::Cancelled
                }
                RESET_DEADLINE if app => AbortReason::Deadline,
                _ => AbortReason::Transport,
            };
            self.abort_server(now, id, call, reason);
        }
    }

    // ---- endings ----

    /// Takes a live call out of every table (its stream slot is the caller's business).
    fn remove_call(&mut self, id: CallId) -> Option<Call> {
        let call = *self.calls.remove(&id)?;
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, id));
        }
        if let Some(l) = self.links.get_mut(&call.session) {
            l.calls.remove(&id);
        }
        if let Some(t) = call.token {
            self.tokens.detach(t, id);
        }
        if call.client {
            self.in_flight.0 = self.in_flight.0.saturating_sub(1);
        } else {
            self.in_flight.1 = self.in_flight.1.saturating_sub(1);
        }
        Some(call)
    }

    fn fail(&mut self, now: Instant, id: CallId, call: Call, e: TransportError) {
        if call.client {
            self.resolve_client(now, id, call, Err(RpcError::Transport(e)));
        } else {
            self.abort_server(now, id, call, AbortReason::Transport);
        }
    }

    /// Tells the caller how its call ended.
    fn resolve_client(
        &mut self,
        now: Instant,
        id: CallId,
        mut call: Call,
        result: Result<(), RpcError>,
    ) {
        let outcome = match &result {
            Ok(()) => Outcome::Ok,
            Err(RpcError::Timeout) => Outcome::Timeout,
            Err(RpcError::Cancelled) => Outcome::Cancelled,
            Err(RpcError::ServerError { status, message }) => Outcome::Error {
                status: Some(*status),
                message: message.clone(),
            },
            Err(e) => Outcome::Error {
                status: None,
                message: e.to_string(),
            },
        };
        let ev = if call.shape.streams_responses() {
            RpcEvent::Ended { call: id, result }
        } else {
            let result = result.and_then(|()| {
                call.reply
                    .take()
                    .ok_or(RpcError::Transport(TransportError::Protocol))
            });
            RpcEvent::Reply { call: id, result }
        };
        self.record(now, id, call, outcome);
        self.events.push_back(ev);
    }

    fn abort_server(&mut self, now: Instant, id: CallId, call: Call, reason: AbortReason) {
        let outcome = match reason {
            AbortReason::Cancelled => Outcome::Cancelled,
            AbortReason::Deadline => Outcome::Timeout,
            AbortReason::Transport => Outcome::Error {
                status: None,
                message: String::from("transport failed"),
            },
        };
        let surfaced = call.surfaced;
        self.record(now, id, call, outcome);
        // A call whose request never surfaced is unknown to the application: no event.
        if surfaced {
            self.events
                .push_back(RpcEvent::Aborted { call: id, reason });
        }
    }

    /// Counts a finished call, offers its record to the observer, and keeps its buffers.
    fn record(&mut self, now: Instant, id: CallId, call: Call, outcome: Outcome) {
        let direction = if call.client {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        self.observer.record(
            &super::observe::Finished {
                call: id,
                direction,
                peer: call.peer,
                service: &call.service,
                method: &call.method,
                shape: call.shape,
                latency: now.saturating_duration_since(call.started),
                request_bytes: call.request_bytes,
                response_bytes: call.response_bytes,
            },
            outcome,
        );
        self.give_buf(call.inbuf);
        self.give_buf(call.out);
    }
}

fn incoming(
    id: CallId,
    c: &Call,
    metadata: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
) -> Incoming {
    Incoming {
        call: id,
        session: c.session,
        peer: c.peer,
        service: Arc::clone(&c.service),
        method: Arc::clone(&c.method),
        shape: c.shape,
        deadline: c.deadline,
        metadata,
        body,
    }
}

/// Reads and drops whatever `stream` has.
fn discard(streams: &mut Streams, stream: StreamId) {
    let mut scratch = [0u8; 2048];
    while let Ok(n) = streams.read(stream, &mut scratch) {
        if n == 0 {
            break;
        }
    }
}

/// Writes as much of the call's pending bytes as the stream takes; finishes the direction
/// once everything went, if asked.
fn flush_call(streams: &mut Streams, c: &mut Call, now: Instant) {
    while let Some(b) = c.out.get(c.out_pos..).filter(|b| !b.is_empty()) {
        match streams.write(c.stream, b) {
            Ok(n) if n > 0 => c.out_pos += n,
            _ => break,
        }
    }
    if c.out_pos >= c.out.len() {
        c.out.clear();
        c.out_pos = 0;
        if c.finish_when_flushed {
            c.finish_when_flushed = false;
            let _ = streams.finish(now, c.stream);
        }
    }
}
