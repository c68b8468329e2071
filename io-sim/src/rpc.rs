//! The nRPC scenario: one caller and one or more servers, calls of all four shapes with known
//! answers, checked as they resolve.
//!
//! This module owns the workload (a caller and a server written against `Node`'s nRPC API and
//! driven by its events, as real applications would be) and its outcome. It never reaches into
//! the RPC machine. Every call's answer is a function of its number, so the caller checks each
//! result exactly when it arrives: a wrong, missing, extra or repeated message stops the run at
//! the step that delivered it. Failures are allowed only in the forms the contract promises
//! (`Timeout`, `Transport`, `Cancelled` for cancelled calls), and by the end of the run every
//! call has resolved: none may hang.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use proto_core::rpc::{
    status, CallId, CallOptions, CallSpec, CancelToken, Credit, RpcError, RpcEvent, ServiceSpec,
    Shape,
};
use proto_core::{Event, Instant, Node, NodeId, PeerSpec};

use crate::scenarios::{host_addr, identity, tweaked_node_factory};
use crate::{HostId, LinkConfig, World};

/// The service every server serves.
pub const SERVICE: &str = "bench";

/// How an nRPC run is set up.
#[derive(Debug, Clone, Copy)]
pub struct RpcParams {
    /// World seed.
    pub seed: u64,
    /// Servers (hosts 1..=servers); host 0 calls.
    pub servers: usize,
    /// Calls to make in all.
    pub calls: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Every link.
    pub link: LinkConfig,
    /// Only these shapes (round robin), or all four.
    pub shapes: &'static [Shape],
    /// Messages per streaming direction.
    pub stream_len: u32,
    /// Each call's deadline.
    pub deadline: Option<Duration>,
    /// Cancel every `n`th call once it is in flight (0: never).
    pub cancel_every: usize,
    /// Use `call_service` (otherwise `call` to host 1).
    pub via_service: bool,
    /// Response credit of streaming calls.
    pub credit: Credit,
    /// Adjusts every node's config.
    pub tweak: fn(&mut proto_core::Config),
}

/// The four shapes, in the order calls cycle through them.
pub const ALL_SHAPES: &[Shape] = &[
    Shape::Unary,
    Shape::ServerStreaming,
    Shape::ClientStreaming,
    Shape::Duplex,
];

impl Default for RpcParams {
    fn default() -> Self {
        RpcParams {
            seed: 1,
            servers: 1,
            calls: 200,
            concurrency: 8,
            link: LinkConfig::default(),
            shapes: ALL_SHAPES,
            stream_len: 8,
            deadline: Some(Duration::from_secs(20)),
            cancel_every: 0,
            via_service: false,
            credit: Credit::Auto(8),
            tweak: |_| {},
        }
    }
}

/// What the caller saw.
#[derive(Debug, Clone, Default)]
pub struct RpcOutcome {
    /// Calls started.
    pub started: usize,
    /// Calls that resolved with the right answer.
    pub ok: usize,
    /// Calls that failed, with why.
    pub failed: Vec<(u64, RpcError)>,
    /// Latency of each successful unary call, in virtual time.
    pub unary_latencies: Vec<Duration>,
    /// When the first call started.
    pub started_at: Option<Instant>,
    /// When the last call resolved.
    pub finished_at: Option<Instant>,
    /// Calls each server received (by host).
    pub served: BTreeMap<u32, usize>,
    /// Cancels the servers saw (`Aborted` with `Cancelled`).
    pub server_cancels: usize,
    /// Deadlines the servers saw.
    pub server_deadlines: usize,
    /// When each call still in flight started, by call number.
    pub in_flight: BTreeMap<u64, Instant>,
}

impl RpcOutcome {
    /// Calls started and not resolved.
    #[must_use]
    pub fn unresolved(&self) -> usize {
        self.started - self.ok - self.failed.len()
    }

    /// Calls that started before `before` and have not resolved: with deadlines, a call
    /// still waiting well past its deadline hangs.
    #[must_use]
    pub fn unresolved_since(&self, before: Instant) -> usize {
        self.in_flight.values().filter(|at| **at < before).count()
    }
}

fn name(shape: Shape) -> &'static str {
    match shape {
        Shape::Unary => "unary",
        Shape::ServerStreaming => "watch",
        Shape::ClientStreaming => "upload",
        _ => "chat",
    }
}

/// The request message `k` of call `n`.
fn message(n: u64, k: u32) -> Vec<u8> {
    let mut m = n.to_le_bytes().to_vec();
    m.extend_from_slice(&k.to_le_bytes());
    m.extend(std::iter::repeat_n((n as u8) ^ (k as u8), 24));
    m
}

/// The unary answer to request `req`: its bytes reversed.
fn unary_answer(req: &[u8]) -> Vec<u8> {
    req.iter().rev().copied().collect()
}

/// A call on the caller's side: what it sent and what it has received.
struct Pending {
    n: u64,
    shape: Shape,
    started: Instant,
    sent: u32,
    got: u32,
    cancel: Option<CancelToken>,
}

/// A call on a server's side.
struct Served {
    shape: Shape,
    n: u64,
    /// Server-streaming: messages sent so far. Duplex: echoes owed.
    sent: u32,
    owed: Vec<Vec<u8>>,
    sum: u64,
    requests_done: bool,
}

struct App {
    p: RpcParams,
    peers: Vec<NodeId>,
    ready: bool,
    next: u64,
    live: BTreeMap<CallId, Pending>,
    served: BTreeMap<(u32, CallId), Served>,
    out: Rc<RefCell<RpcOutcome>>,
}

impl App {
    fn fail_unless_allowed(&mut self, n: u64, cancelled: bool, e: RpcError) -> Result<(), String> {
        let allowed = matches!(e, RpcError::Timeout | RpcError::Transport(_))
            || (cancelled && e == RpcError::Cancelled);
        if !allowed {
            return Err(format!("call {n} failed with {e}"));
        }
        self.out.borrow_mut().failed.push((n, e));
        Ok(())
    }

    /// Starts calls until `concurrency` are in flight or all were started.
    fn top_up(&mut self, m: &mut Node, now: Instant) -> Result<(), String> {
        while self.ready
            && self.live.len() < self.p.concurrency
            && (self.next as usize) < self.p.calls
        {
            let n = self.next;
            let shape = self.p.shapes[n as usize % self.p.shapes.len()];
            let cancel = if self.p.cancel_every > 0 && n as usize % self.p.cancel_every == 1 {
                Some(m.reserve_cancel_token(now).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let opts = CallOptions {
                deadline: self.p.deadline,
                cancel,
                credit: self.p.credit,
                ..CallOptions::default()
            };
            // Every request starts with message 0, which carries the call's number.
            let body = message(n, 0);
            let spec = CallSpec {
                service: SERVICE,
                method: name(shape),
                shape,
                body: Some(&body),
                options: &opts,
            };
            let r = if self.p.via_service {
                m.call_service(now, spec).map(|(c, _)| c)
            } else {
                m.call(now, &self.peers[0], spec)
            };
            let call = match r {
                Ok(c) => c,
                // Not connected yet (or the session just died): wait for the next event.
                Err(RpcError::NoRoute) => return Ok(()),
                Err(e) => return Err(format!("call {n} could not start: {e}")),
            };
            self.next += 1;
            let mut out = self.out.borrow_mut();
            out.started += 1;
            out.started_at.get_or_insert(now);
            out.in_flight.insert(n, now);
            drop(out);
            let sent = u32::from(shape.streams_requests());
            self.live.insert(
                call,
                Pending {
                    n,
                    shape,
                    started: now,
                    sent,
                    got: 0,
                    cancel,
                },
            );
            self.pump_caller(m, now, call)?;
        }
        Ok(())
    }

    /// Sends a streaming caller's next requests, then ends them.
    fn pump_caller(&mut self, m: &mut Node, now: Instant, call: CallId) -> Result<(), String> {
        let Some(p) = self.live.get_mut(&call) else {
            return Ok(());
        };
        if !p.shape.streams_requests() {
            return Ok(());
        }
        let Ok(mut h) = m.rpc_call(call) else {
            return Ok(());
        };
        while p.sent < self.p.stream_len {
            match h.send(now, &message(p.n, p.sent)) {
                Ok(()) => p.sent += 1,
                Err(RpcError::Invalid(proto_core::rpc::Misuse::WouldBlock)) => return Ok(()),
                Err(e) => return Err(format!("call {} send: {e}", p.n)),
            }
        }
        if p.sent == self.p.stream_len {
            p.sent += 1;
            h.close_send(now).map_err(|e| format!("close_send: {e}"))?;
        }
        Ok(())
    }

    fn on_caller_event(&mut self, m: &mut Node, now: Instant, ev: &RpcEvent) -> Result<(), String> {
        match ev {
            RpcEvent::ServicesChanged { .. } => {
                self.ready = !m.providers(SERVICE).is_empty();
                self.top_up(m, now)?;
            }
            RpcEvent::Message { call, data } => {
                let Some(p) = self.live.get_mut(call) else {
                    return Err(format!("message for a call not in flight: {call}"));
                };
                if *data != message(p.n, p.got) {
                    return Err(format!("call {} message {} is wrong", p.n, p.got));
                }
                p.got += 1;
                if self.p.cancel_every > 0 && p.cancel.is_some() && p.got == 1 {
                    let t = p.cancel;
                    if let Some(t) = t {
                        m.cancel(now, t);
                    }
                }
            }
            RpcEvent::Writable { call } => self.pump_caller(m, now, *call)?,
            RpcEvent::Reply { call, result } => {
                let p = self
                    .live
                    .remove(call)
                    .ok_or_else(|| format!("reply for a call not in flight: {call}"))?;
                self.out.borrow_mut().in_flight.remove(&p.n);
                match result {
                    Ok(body) => {
                        let want = match p.shape {
                            Shape::Unary => unary_answer(&message(p.n, 0)),
                            _ => {
                                let sum: u64 = (0..self.p.stream_len).map(u64::from).sum();
                                sum.to_le_bytes().to_vec()
                            }
                        };
                        if *body != want {
                            return Err(format!("call {} answered wrongly", p.n));
                        }
                        let mut out = self.out.borrow_mut();
                        out.ok += 1;
                        if p.shape == Shape::Unary {
                            out.unary_latencies.push(now - p.started);
                        }
                    }
                    Err(e) => self.fail_unless_allowed(p.n, p.cancel.is_some(), e.clone())?,
                }
                self.resolved(m, now)?;
            }
            RpcEvent::Ended { call, result } => {
                let p = self
                    .live
                    .remove(call)
                    .ok_or_else(|| format!("end for a call not in flight: {call}"))?;
                self.out.borrow_mut().in_flight.remove(&p.n);
                match result {
                    Ok(()) if p.got != self.p.stream_len => {
                        return Err(format!(
                            "call {} ended after {} of {} messages",
                            p.n, p.got, self.p.stream_len
                        ));
                    }
                    Ok(()) => self.out.borrow_mut().ok += 1,
                    Err(e) => self.fail_unless_allowed(p.n, p.cancel.is_some(), e.clone())?,
                }
                self.resolved(m, now)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn resolved(&mut self, m: &mut Node, now: Instant) -> Result<(), String> {
        let done = {
            let out = self.out.borrow();
            out.started == self.p.calls && out.unresolved() == 0
        };
        if done {
            self.out.borrow_mut().finished_at.get_or_insert(now);
        }
        self.top_up(m, now)
    }

    /// A server's next messages for `call`.
    fn pump_server(
        &mut self,
        host: u32,
        m: &mut Node,
        now: Instant,
        call: CallId,
    ) -> Result<(), String> {
        let Some(s) = self.served.get_mut(&(host, call)) else {
            return Ok(());
        };
        let Ok(mut h) = m.rpc_call(call) else {
            return Ok(());
        };
        match s.shape {
            Shape::ServerStreaming => {
                while s.sent < self.p.stream_len {
                    match h.send(now, &message(s.n, s.sent)) {
                        Ok(()) => s.sent += 1,
                        Err(RpcError::Invalid(proto_core::rpc::Misuse::WouldBlock)) => {
                            return Ok(())
                        }
                        Err(e) => return Err(format!("server send: {e}")),
                    }
                }
                h.finish(now, status::OK, "").map_err(|e| e.to_string())?;
                self.served.remove(&(host, call));
            }
            Shape::Duplex => {
                while let Some(msg) = s.owed.first() {
                    match h.send(now, msg) {
                        Ok(()) => {
                            s.owed.remove(0);
                        }
                        Err(RpcError::Invalid(proto_core::rpc::Misuse::WouldBlock)) => {
                            return Ok(())
                        }
                        Err(e) => return Err(format!("server echo: {e}")),
                    }
                }
                if s.requests_done {
                    h.finish(now, status::OK, "").map_err(|e| e.to_string())?;
                    self.served.remove(&(host, call));
                }
            }
            Shape::ClientStreaming if s.requests_done => {
                h.reply(now, &s.sum.to_le_bytes())
                    .map_err(|e| e.to_string())?;
                self.served.remove(&(host, call));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_server_event(
        &mut self,
        host: u32,
        m: &mut Node,
        now: Instant,
        ev: &RpcEvent,
    ) -> Result<(), String> {
        match ev {
            RpcEvent::Request(req) => {
                *self.out.borrow_mut().served.entry(host).or_default() += 1;
                // Single-request calls carry their request; streaming ones get it as messages.
                if req.body.is_none() != req.shape.streams_requests() {
                    return Err(format!("{:?} call with body {:?}", req.shape, req.body));
                }
                if let (Shape::Unary, Some(b)) = (req.shape, &req.body) {
                    let mut h = m.rpc_call(req.call).map_err(|e| e.to_string())?;
                    return h.reply(now, &unary_answer(b)).map_err(|e| e.to_string());
                }
                let n = req
                    .body
                    .as_ref()
                    .and_then(|b| b.get(..8))
                    .and_then(|s| s.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                let s = Served {
                    shape: req.shape,
                    n,
                    sent: 0,
                    owed: Vec::new(),
                    sum: 0,
                    requests_done: false,
                };
                self.served.insert((host, req.call), s);
                self.pump_server(host, m, now, req.call)?;
            }
            RpcEvent::Message { call, data } => {
                if let Some(s) = self.served.get_mut(&(host, *call)) {
                    s.sum += u64::from(k_of(data));
                    if s.shape == Shape::Duplex {
                        s.owed.push(data.clone());
                    }
                }
                self.pump_server(host, m, now, *call)?;
            }
            RpcEvent::RequestsDone { call } => {
                if let Some(s) = self.served.get_mut(&(host, *call)) {
                    s.requests_done = true;
                }
                self.pump_server(host, m, now, *call)?;
            }
            RpcEvent::Writable { call } => self.pump_server(host, m, now, *call)?,
            RpcEvent::Aborted { call, reason } => {
                self.served.remove(&(host, *call));
                let mut out = self.out.borrow_mut();
                match reason {
                    proto_core::rpc::AbortReason::Cancelled => out.server_cancels += 1,
                    proto_core::rpc::AbortReason::Deadline => out.server_deadlines += 1,
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The message number `k` inside a request message.
fn k_of(m: &[u8]) -> u32 {
    m.get(8..12)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Host 0 connects to every server (IK).
fn connect_all(w: &mut World<Node>, servers: usize) {
    for i in 1..=servers {
        if let Some(key) = w.machine(HostId(i as u32)).map(Node::static_key) {
            let spec = PeerSpec::known(identity(i).public(), key);
            let _ = w.with_machine(HostId(0), |m, now| m.connect(now, host_addr(i), spec));
        }
    }
}

/// Builds the nRPC world: servers serve [`SERVICE`] from the start; host 0 connects to each at
/// 10 ms (and again after a handshake timeout) and starts calling once a server announced the
/// service. The outcome is shared with the caller.
#[must_use]
pub fn rpc(p: RpcParams) -> (World<Node>, Rc<RefCell<RpcOutcome>>) {
    let mut w: World<Node> = World::new(p.seed);
    w.set_default_link(p.link);
    for i in 0..=p.servers {
        let mut make = tweaked_node_factory(i, p.tweak);
        w.add_host(format!("n{i}"), host_addr(i), move |s| {
            let mut n = make(s);
            if i > 0 {
                let spec = ALL_SHAPES
                    .iter()
                    .fold(ServiceSpec::new(SERVICE), |s, shape| {
                        s.method(name(*shape), *shape)
                    });
                let _ = n.serve(s.now, spec);
            }
            n
        });
    }
    let servers = p.servers;
    w.at(Instant::from_millis(10), move |w| connect_all(w, servers));
    let outcome = Rc::new(RefCell::new(RpcOutcome::default()));
    let app = Rc::new(RefCell::new(App {
        p,
        peers: (1..=p.servers).map(|i| identity(i).node_id()).collect(),
        ready: false,
        next: 0,
        live: BTreeMap::new(),
        served: BTreeMap::new(),
        out: outcome.clone(),
    }));
    w.on_event(move |w, h, ev| {
        let mut app = app.borrow_mut();
        let res = match (h.0, ev) {
            (0, Event::Rpc(e)) => w
                .with_machine(h, |m, now| app.on_caller_event(m, now, e))
                .unwrap_or(Ok(())),
            (0, Event::Connected { .. } | Event::Disconnected { .. }) => {
                if matches!(ev, Event::Disconnected { .. }) {
                    let up = w
                        .machine(h)
                        .is_some_and(|m| !m.providers(SERVICE).is_empty());
                    app.ready = up;
                    if !up {
                        // As an application would: reconnect to servers we lost.
                        connect_all(w, app.p.servers);
                    }
                }
                w.with_machine(h, |m, now| app.top_up(m, now))
                    .unwrap_or(Ok(()))
            }
            (s, Event::Rpc(e)) => w
                .with_machine(h, |m, now| app.on_server_event(s, m, now, e))
                .unwrap_or(Ok(())),
            _ => Ok(()),
        };
        if let Err(e) = res {
            w.violation(e);
        }
    });
    (w, outcome)
}
