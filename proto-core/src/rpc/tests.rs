//! nRPC through two real nodes (full handshake, encrypted packets), moved in memory with no
//! latency and no loss. Loss, reordering and crashes are io-sim's tests (`io-sim/tests/rpc.rs`).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::*;
use crate::{Config, Event, Identity, Instant, Node, Seed};

struct Pair {
    a: Node,
    b: Node,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Instant,
    ea: Vec<RpcEvent>,
    eb: Vec<RpcEvent>,
    other_a: Vec<Event>,
    other_b: Vec<Event>,
    /// Datagrams moved each way.
    sent_a: usize,
    sent_b: usize,
}

fn node(n: u64, cfg: impl FnOnce(&mut Config)) -> Node {
    let mut c = Config::new(Seed::from_u64(n));
    // The harness is a network that queues: it may deliver to a node with output pending.
    c.strict_drain = false;
    cfg(&mut c);
    Node::new(
        c,
        Identity::from_seed(&Seed::from_u64(100 + n)),
        Instant::ZERO,
    )
    .unwrap()
}

fn sort(ev: Event, rpc: &mut Vec<RpcEvent>, other: &mut Vec<Event>) {
    match ev {
        Event::Rpc(e) => rpc.push(e),
        e => other.push(e),
    }
}

impl Pair {
    fn new() -> Pair {
        Pair::with(|_| {}, |_| {})
    }

    fn with(ca: impl FnOnce(&mut Config), cb: impl FnOnce(&mut Config)) -> Pair {
        let mut p = Pair {
            a: node(1, ca),
            b: node(2, cb),
            a_addr: "10.0.0.1:1".parse().unwrap(),
            b_addr: "10.0.0.2:1".parse().unwrap(),
            now: Instant::ZERO,
            ea: Vec::new(),
            eb: Vec::new(),
            other_a: Vec::new(),
            other_b: Vec::new(),
            sent_a: 0,
            sent_b: 0,
        };
        let spec = p.b.peer_spec();
        p.a.connect(p.now, p.b_addr, spec).unwrap();
        p.run();
        assert!(p.a.session_with(&p.b.node_id()).is_some(), "connected");
        p
    }

    fn drain(&mut self) {
        while let Some(e) = self.a.poll_event() {
            sort(e, &mut self.ea, &mut self.other_a);
        }
        while let Some(e) = self.b.poll_event() {
            sort(e, &mut self.eb, &mut self.other_b);
        }
    }

    /// Moves datagrams both ways until both nodes are quiet.
    fn run(&mut self) {
        let mut buf = vec![0u8; 1500];
        loop {
            self.drain();
            let mut moved = false;
            for a_to_b in [true, false] {
                loop {
                    let (from, to, addr) = if a_to_b {
                        (&mut self.a, &mut self.b, self.a_addr)
                    } else {
                        (&mut self.b, &mut self.a, self.b_addr)
                    };
                    let Some(t) = from.poll_transmit(self.now, &mut buf).unwrap() else {
                        break;
                    };
                    to.handle_datagram(self.now, addr, &buf[..t.len]).unwrap();
                    *if a_to_b {
                        &mut self.sent_a
                    } else {
                        &mut self.sent_b
                    } += 1;
                    self.drain();
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Lets `d` pass, firing both nodes' timers on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now.saturating_add(d);
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .map(|d| d.at)
                .filter(|at| *at > self.now)
                .min();
            match next {
                Some(at) if at <= end => self.now = at,
                _ => {
                    self.now = end;
                    self.fire();
                    return;
                }
            }
            self.fire();
        }
    }

    fn fire(&mut self) {
        self.a.handle_timeout(self.now).unwrap();
        self.drain();
        self.b.handle_timeout(self.now).unwrap();
        self.drain();
        self.run();
    }

    fn serve_all(&mut self) {
        let spec = ServiceSpec::new("svc")
            .method("unary", Shape::Unary)
            .method("watch", Shape::ServerStreaming)
            .method("upload", Shape::ClientStreaming)
            .method("chat", Shape::Duplex);
        self.b.serve(self.now, spec).unwrap();
        self.run();
        assert!(self
            .ea
            .iter()
            .any(|e| matches!(e, RpcEvent::ServicesChanged { .. })));
        self.ea.clear();
    }

    fn call(
        &mut self,
        method: &str,
        shape: Shape,
        body: Option<&[u8]>,
        opts: &CallOptions,
    ) -> Result<CallId, RpcError> {
        let peer = self.b.node_id();
        let spec = CallSpec {
            service: "svc",
            method,
            shape,
            body,
            options: opts,
        };
        self.a.call(self.now, &peer, spec)
    }

    /// The server's pending request events, taken.
    fn requests(&mut self) -> Vec<Incoming> {
        let mut out = Vec::new();
        self.eb.retain(|e| match e {
            RpcEvent::Request(i) => {
                out.push((**i).clone());
                false
            }
            _ => true,
        });
        out
    }
}

fn reply_of(ev: &[RpcEvent], call: CallId) -> Option<&Result<Vec<u8>, RpcError>> {
    ev.iter().find_map(|e| match e {
        RpcEvent::Reply { call: c, result } if *c == call => Some(result),
        _ => None,
    })
}

fn ended_of(ev: &[RpcEvent], call: CallId) -> Option<&Result<(), RpcError>> {
    ev.iter().find_map(|e| match e {
        RpcEvent::Ended { call: c, result } if *c == call => Some(result),
        _ => None,
    })
}

fn messages(ev: &[RpcEvent], call: CallId) -> Vec<Vec<u8>> {
    ev.iter()
        .filter_map(|e| match e {
            RpcEvent::Message { call: c, data } if *c == call => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn aborted(ev: &[RpcEvent], call: CallId) -> Option<AbortReason> {
    ev.iter().find_map(|e| match e {
        RpcEvent::Aborted { call: c, reason } if *c == call => Some(*reason),
        _ => None,
    })
}

#[test]
fn unary_call_and_reply_each_fit_one_datagram() {
    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions {
        deadline: Some(Duration::from_secs(5)),
        metadata: vec![(String::from("trace"), b"abc".to_vec())],
        ..CallOptions::default()
    };
    let session = p.a.session_with(&p.b.node_id()).unwrap();
    let streams_before = p.a.session_info(session).unwrap().open_streams;
    let call = p.call("unary", Shape::Unary, Some(b"ping"), &opts).unwrap();
    // Exactly one datagram carries the request.
    let mut buf = vec![0u8; 1500];
    let t =
        p.a.poll_transmit(p.now, &mut buf)
            .unwrap()
            .expect("request");
    assert!(p.a.poll_transmit(p.now, &mut buf).unwrap().is_none());
    p.b.handle_datagram(p.now, p.a_addr, &buf[..t.len]).unwrap();
    p.drain();
    let req = p.requests().pop().expect("request surfaced");
    assert_eq!(
        (&*req.service, &*req.method, req.shape),
        ("svc", "unary", Shape::Unary)
    );
    assert_eq!(req.body.as_deref(), Some(&b"ping"[..]));
    assert_eq!(req.metadata, opts.metadata);
    assert_eq!(req.peer, p.a.node_id());
    assert_eq!(
        req.deadline,
        Some(p.now + Duration::from_secs(5)),
        "remaining time arrives"
    );
    // The server drained its events before transmitting: the reply and the request's
    // acknowledgement leave together, in one datagram.
    p.b.rpc_call(req.call)
        .unwrap()
        .reply(p.now, b"pong")
        .unwrap();
    let t = p.b.poll_transmit(p.now, &mut buf).unwrap().expect("reply");
    assert!(p.b.poll_transmit(p.now, &mut buf).unwrap().is_none());
    p.a.handle_datagram(p.now, p.b_addr, &buf[..t.len]).unwrap();
    p.drain();
    assert_eq!(reply_of(&p.ea, call), Some(&Ok(b"pong".to_vec())));
    p.run();
    assert_eq!(
        p.a.session_info(session).unwrap().open_streams,
        streams_before,
        "the call's stream closed (the peer's announcement stream stays)"
    );
    let m = p.a.rpc_metrics();
    let out = m
        .methods
        .iter()
        .find(|m| m.direction == Direction::Outbound)
        .unwrap();
    assert_eq!(
        (out.calls, out.ok, out.request_bytes, out.response_bytes),
        (1, 1, 4, 4)
    );
    assert_eq!(p.b.rpc_metrics().in_flight_inbound, 0);
}

/// A pair with a server-streaming call in flight: (pair, caller's id, server's request).
fn watching(credit: Credit) -> (Pair, CallId, Incoming) {
    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions {
        credit,
        ..CallOptions::default()
    };
    let call = p
        .call("watch", Shape::ServerStreaming, Some(b"go"), &opts)
        .unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    (p, call, req)
}

#[test]
fn server_streaming_with_automatic_credit_delivers_in_order() {
    let (mut p, call, req) = watching(Credit::Auto(4));
    let mut sent = 0u32;
    // The server sends as credit allows; automatic GRANTs keep it going.
    for _ in 0..50 {
        loop {
            let msg = sent.to_le_bytes();
            match p.b.rpc_call(req.call).unwrap().send(p.now, &msg) {
                Ok(()) => sent += 1,
                Err(RpcError::Invalid(Misuse::WouldBlock)) => break,
                Err(e) => panic!("{e}"),
            }
            if sent == 100 {
                break;
            }
        }
        p.run();
        if sent == 100 {
            break;
        }
    }
    assert_eq!(sent, 100);
    p.b.rpc_call(req.call)
        .unwrap()
        .finish(p.now, status::OK, "")
        .unwrap();
    p.run();
    let got = messages(&p.ea, call);
    let want: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(got, want);
    assert_eq!(ended_of(&p.ea, call), Some(&Ok(())));
    assert!(
        p.eb.iter().any(|e| matches!(e, RpcEvent::Writable { .. })),
        "blocked, then writable"
    );
}

#[test]
fn server_streaming_with_manual_credit_waits_for_grants() {
    let (mut p, call, req) = watching(Credit::Manual(2));
    let mut h = p.b.rpc_call(req.call).unwrap();
    h.send(p.now, b"1").unwrap();
    h.send(p.now, b"2").unwrap();
    assert_eq!(
        h.send(p.now, b"3"),
        Err(RpcError::Invalid(Misuse::WouldBlock))
    );
    p.run();
    assert_eq!(messages(&p.ea, call).len(), 2);
    // A caller with manual credit grants in batches.
    p.a.rpc_call(call).unwrap().grant(p.now, 3).unwrap();
    p.run();
    assert!(p
        .eb
        .iter()
        .any(|e| matches!(e, RpcEvent::Writable { call } if *call == req.call)));
    let mut h = p.b.rpc_call(req.call).unwrap();
    for m in [b"3", b"4", b"5"] {
        h.send(p.now, m).unwrap();
    }
    assert_eq!(
        h.send(p.now, b"6"),
        Err(RpcError::Invalid(Misuse::WouldBlock))
    );
    h.finish(p.now, status::OK, "").unwrap();
    p.run();
    assert_eq!(messages(&p.ea, call).len(), 5);
    assert_eq!(ended_of(&p.ea, call), Some(&Ok(())));
    // Automatic-credit calls refuse manual grants.
    let auto = p
        .call(
            "watch",
            Shape::ServerStreaming,
            Some(b"x"),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(
        p.a.rpc_call(auto).unwrap().grant(p.now, 1),
        Err(RpcError::Invalid(Misuse::BadCredit))
    );
}

#[test]
fn client_streaming_and_duplex() {
    let mut p = Pair::new();
    p.serve_all();
    let up = p
        .call(
            "upload",
            Shape::ClientStreaming,
            Some(b"m0"),
            &CallOptions::default(),
        )
        .unwrap();
    for i in 1..80u8 {
        loop {
            match p.a.rpc_call(up).unwrap().send(p.now, &[b'm', i]) {
                Ok(()) => break,
                Err(RpcError::Invalid(Misuse::WouldBlock)) => p.run(),
                Err(e) => panic!("{e}"),
            }
        }
    }
    p.a.rpc_call(up).unwrap().close_send(p.now).unwrap();
    assert_eq!(
        p.a.rpc_call(up).unwrap().send(p.now, b"late"),
        Err(RpcError::Invalid(Misuse::Closed))
    );
    p.run();
    let req = p.requests().pop().unwrap();
    assert_eq!(
        req.body, None,
        "client-streaming requests arrive as messages"
    );
    let got = messages(&p.eb, req.call);
    assert_eq!(got.len(), 80);
    assert_eq!(got[0], b"m0");
    assert!(p
        .eb
        .iter()
        .any(|e| matches!(e, RpcEvent::RequestsDone { call } if *call == req.call)));
    p.b.rpc_call(req.call).unwrap().reply(p.now, b"80").unwrap();
    p.run();
    assert_eq!(reply_of(&p.ea, up), Some(&Ok(b"80".to_vec())));

    // Duplex: echo each message back, then end.
    p.eb.clear();
    let chat = p
        .call("chat", Shape::Duplex, None, &CallOptions::default())
        .unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    for i in 0..10u8 {
        p.a.rpc_call(chat).unwrap().send(p.now, &[i]).unwrap();
        p.run();
        let last = messages(&p.eb, req.call).pop().unwrap();
        p.b.rpc_call(req.call).unwrap().send(p.now, &last).unwrap();
        p.run();
    }
    p.a.rpc_call(chat).unwrap().close_send(p.now).unwrap();
    p.run();
    assert!(p
        .eb
        .iter()
        .any(|e| matches!(e, RpcEvent::RequestsDone { call } if *call == req.call)));
    p.b.rpc_call(req.call)
        .unwrap()
        .finish(p.now, status::OK, "")
        .unwrap();
    p.run();
    let echoed = messages(&p.ea, chat);
    assert_eq!(echoed, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert_eq!(ended_of(&p.ea, chat), Some(&Ok(())));
    p.advance(Duration::from_millis(50));
    let s = p.a.session_with(&p.b.node_id()).unwrap();
    assert_eq!(
        p.a.session_info(s).unwrap().open_streams,
        1,
        "every call stream closed; the peer's announcement stream stays"
    );
}

#[test]
fn unknown_targets_and_error_statuses_reach_the_caller() {
    let mut p = Pair::new();
    p.serve_all();
    let none = CallOptions::default();
    let spec = |service, method| CallSpec {
        service,
        method,
        shape: Shape::Unary,
        body: Some(b"x"),
        options: &none,
    };
    let peer = p.b.node_id();
    let c1 = p.a.call(p.now, &peer, spec("nope", "unary")).unwrap();
    let c2 = p.a.call(p.now, &peer, spec("svc", "nope")).unwrap();
    let c3 = p.call("watch", Shape::Unary, Some(b"x"), &none).unwrap();
    let c4 = p.call("unary", Shape::Unary, Some(b"x"), &none).unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    p.b.rpc_call(req.call)
        .unwrap()
        .finish(p.now, status::TYPED_HANDLER_ERROR, "handler failed")
        .unwrap();
    p.run();
    let status_of = |c| match reply_of(&p.ea, c) {
        Some(Err(RpcError::ServerError { status, .. })) => *status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status_of(c1), status::UNKNOWN_SERVICE);
    assert_eq!(status_of(c2), status::UNKNOWN_METHOD);
    assert_eq!(status_of(c3), status::WRONG_SHAPE);
    assert_eq!(
        reply_of(&p.ea, c4),
        Some(&Err(RpcError::ServerError {
            status: 0x8001,
            message: String::from("handler failed")
        }))
    );
    assert_eq!(p.b.rpc_stats().calls_rejected, 3);
    // No session with an unknown peer, and a finished call is gone.
    let stranger = Identity::from_seed(&Seed::from_u64(999)).node_id();
    assert_eq!(
        p.a.call(p.now, &stranger, spec("svc", "unary")),
        Err(RpcError::NoRoute)
    );
    assert!(matches!(
        p.a.rpc_call(c4),
        Err(RpcError::Invalid(Misuse::UnknownCall(_)))
    ));
    // Misuse changes nothing.
    assert_eq!(
        p.call("unary", Shape::Unary, None, &none),
        Err(RpcError::Invalid(Misuse::MissingBody))
    );
    let big = vec![0u8; (1 << 20) + 1];
    assert!(matches!(
        p.call("unary", Shape::Unary, Some(&big), &none),
        Err(RpcError::Invalid(Misuse::MessageTooLarge { .. }))
    ));
    assert_eq!(p.a.queued_transmits(), 0);
}

/// Starts a call of `shape` and runs until the server has it in flight.
fn in_flight(p: &mut Pair, shape: Shape, token: CancelToken) -> (CallId, CallId) {
    let method = match shape {
        Shape::Unary => "unary",
        Shape::ServerStreaming => "watch",
        Shape::ClientStreaming => "upload",
        _ => "chat",
    };
    let opts = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    let call = p.call(method, shape, Some(b"req"), &opts).unwrap();
    p.run();
    let req = p.requests().pop().expect("server has it");
    if shape.streams_responses() {
        p.b.rpc_call(req.call)
            .unwrap()
            .send(p.now, b"partial")
            .unwrap();
    }
    if shape.streams_requests() {
        p.a.rpc_call(call).unwrap().send(p.now, b"more").unwrap();
    }
    p.run();
    (call, req.call)
}

#[test]
fn cancel_mid_flight_sends_cancel_for_every_shape() {
    for shape in [
        Shape::Unary,
        Shape::ServerStreaming,
        Shape::ClientStreaming,
        Shape::Duplex,
    ] {
        let mut p = Pair::new();
        p.serve_all();
        let token = p.a.reserve_cancel_token(p.now).unwrap();
        let (call, served) = in_flight(&mut p, shape, token);
        p.a.cancel(p.now, token);
        p.drain();
        // The caller resolves at once, before anything crosses the wire.
        let result_is_cancelled = if shape.streams_responses() {
            ended_of(&p.ea, call) == Some(&Err(RpcError::Cancelled))
        } else {
            reply_of(&p.ea, call) == Some(&Err(RpcError::Cancelled))
        };
        assert!(result_is_cancelled, "{shape:?}: {:?}", p.ea);
        assert_eq!(p.a.rpc_stats().cancels_sent, 1, "{shape:?}");
        p.run();
        // CANCEL crossed the wire and the server's handler is told.
        assert_eq!(p.b.rpc_stats().cancels_received, 1, "{shape:?}");
        assert_eq!(
            aborted(&p.eb, served),
            Some(AbortReason::Cancelled),
            "{shape:?}"
        );
        assert!(
            p.b.rpc_call(served).is_err(),
            "{shape:?}: the server's call is gone"
        );
        let m = p.b.rpc_metrics();
        assert_eq!(
            m.methods.iter().map(|m| m.cancelled).sum::<u64>(),
            1,
            "{shape:?}"
        );
        assert_eq!(
            p.a.rpc_metrics().cancel_tokens,
            0,
            "resolved tokens are released"
        );
    }
}

#[test]
fn cancel_before_construction_aborts_at_registration() {
    let mut p = Pair::new();
    p.serve_all();
    let token = p.a.reserve_cancel_token(p.now).unwrap();
    p.a.cancel(p.now, token);
    let opts = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    assert_eq!(
        p.call("unary", Shape::Unary, Some(b"x"), &opts),
        Err(RpcError::Cancelled)
    );
    assert_eq!(p.a.queued_transmits(), 0, "nothing went on the wire");
    assert_eq!(p.a.rpc_stats().calls_started, 0);
    // The latch is spent with the call it aborted.
    assert_eq!(
        p.call("unary", Shape::Unary, Some(b"x"), &opts),
        Err(RpcError::Invalid(Misuse::UnknownToken(token)))
    );
}

#[test]
fn cancel_after_resolution_is_a_no_op() {
    let mut p = Pair::new();
    p.serve_all();
    let token = p.a.reserve_cancel_token(p.now).unwrap();
    let opts = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    let call = p.call("unary", Shape::Unary, Some(b"x"), &opts).unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    p.b.rpc_call(req.call)
        .unwrap()
        .reply(p.now, b"done")
        .unwrap();
    p.run();
    assert_eq!(reply_of(&p.ea, call), Some(&Ok(b"done".to_vec())));
    let events = p.ea.len();
    p.a.cancel(p.now, token);
    p.run();
    assert_eq!(p.ea.len(), events, "no new event");
    assert_eq!(p.a.rpc_stats().cancels_sent, 0);
    assert_eq!(p.b.rpc_stats().cancels_received, 0);
}

#[test]
fn zero_token_is_a_no_op() {
    let (mut p, call, _req) = watching(Credit::default());
    p.a.cancel(p.now, CancelToken(0));
    p.run();
    assert!(p.a.rpc_call(call).is_ok(), "still live");
    assert_eq!(p.a.rpc_stats().cancels_sent, 0);
    let opts = CallOptions {
        cancel: Some(CancelToken(0)),
        ..CallOptions::default()
    };
    assert_eq!(
        p.call("unary", Shape::Unary, Some(b"x"), &opts),
        Err(RpcError::Invalid(Misuse::UnknownToken(CancelToken(0))))
    );
}

#[test]
fn orphan_tokens_are_collected_after_the_ttl() {
    let mut p = Pair::new();
    let token = p.a.reserve_cancel_token(p.now).unwrap();
    let used = p.a.reserve_cancel_token(p.now).unwrap();
    assert_eq!(p.a.rpc_metrics().cancel_tokens, 2);
    p.serve_all();
    let opts = CallOptions {
        cancel: Some(used),
        ..CallOptions::default()
    };
    let call = p
        .call("watch", Shape::ServerStreaming, Some(b"x"), &opts)
        .unwrap();
    p.run();
    // The deadline the node asks to be woken at includes the collection.
    p.advance(Duration::from_secs(119));
    assert_eq!(p.a.rpc_metrics().cancel_tokens, 2);
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.a.rpc_metrics().cancel_tokens,
        1,
        "the orphan went; the used one stays"
    );
    let stale = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    assert_eq!(
        p.call("unary", Shape::Unary, Some(b"x"), &stale),
        Err(RpcError::Invalid(Misuse::UnknownToken(token)))
    );
    // The token of a live call is not an orphan: it still cancels.
    p.a.cancel(p.now, used);
    p.drain();
    assert_eq!(ended_of(&p.ea, call), Some(&Err(RpcError::Cancelled)));
}

#[test]
fn deadline_expiry_ends_the_call_on_both_sides() {
    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions {
        deadline: Some(Duration::from_millis(300)),
        ..CallOptions::default()
    };
    let call = p.call("unary", Shape::Unary, Some(b"slow"), &opts).unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    assert!(req.deadline.is_some());
    // The server never answers.
    p.advance(Duration::from_millis(400));
    assert_eq!(reply_of(&p.ea, call), Some(&Err(RpcError::Timeout)));
    assert_eq!(aborted(&p.eb, req.call), Some(AbortReason::Deadline));
    let timeouts = |n: &Node| {
        n.rpc_metrics()
            .methods
            .iter()
            .map(|m| m.timeouts)
            .sum::<u64>()
    };
    assert_eq!((timeouts(&p.a), timeouts(&p.b)), (1, 1));
    // A zero deadline never starts.
    let zero = CallOptions {
        deadline: Some(Duration::ZERO),
        ..CallOptions::default()
    };
    assert_eq!(
        p.call("unary", Shape::Unary, Some(b"x"), &zero),
        Err(RpcError::Timeout)
    );
}

#[test]
fn a_server_deadline_reaches_the_caller_as_timeout() {
    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions {
        deadline: Some(Duration::from_millis(100)),
        ..CallOptions::default()
    };
    let call = p
        .call("watch", Shape::ServerStreaming, Some(b"x"), &opts)
        .unwrap();
    p.run();
    let req = p.requests().pop().unwrap();
    // Only the server's timer fires (the caller's clock is not advanced): its DEADLINE reset
    // tells the caller.
    let later = p.now + Duration::from_millis(150);
    p.b.handle_timeout(later).unwrap();
    p.drain();
    assert_eq!(aborted(&p.eb, req.call), Some(AbortReason::Deadline));
    let mut buf = vec![0u8; 1500];
    while let Some(t) = p.b.poll_transmit(later, &mut buf).unwrap() {
        p.a.handle_datagram(p.now, p.b_addr, &buf[..t.len]).unwrap();
        p.drain();
    }
    assert_eq!(ended_of(&p.ea, call), Some(&Err(RpcError::Timeout)));
}

#[test]
fn observer_queue_is_bounded_and_counts_drops() {
    let mut p = Pair::new();
    p.serve_all();
    p.a.set_rpc_observer(true);
    let total = 1030u64;
    for i in 0..total {
        let body = i.to_le_bytes();
        p.call("unary", Shape::Unary, Some(&body), &CallOptions::default())
            .unwrap();
        p.run();
        for req in p.requests() {
            p.b.rpc_call(req.call).unwrap().reply(p.now, b"ok").unwrap();
        }
        p.run();
    }
    assert_eq!(p.a.queued_call_records(), 1024);
    let m = p.a.rpc_metrics();
    assert_eq!(m.observer_dropped_total, total - 1024);
    let first = p.a.poll_call_record().unwrap();
    assert_eq!(first.outcome, Outcome::Ok);
    assert_eq!(first.direction, Direction::Outbound);
    assert_eq!(
        (first.service.as_str(), first.method.as_str()),
        ("svc", "unary")
    );
    assert_eq!((first.request_bytes, first.response_bytes), (8, 2));
    // Metrics counted every call, dropped records or not.
    let out = m
        .methods
        .iter()
        .find(|m| m.direction == Direction::Outbound)
        .unwrap();
    assert_eq!(out.calls, total);
    let one_more = |p: &mut Pair| {
        p.call("unary", Shape::Unary, Some(b"x"), &CallOptions::default())
            .unwrap();
        p.run();
        for req in p.requests() {
            p.b.rpc_call(req.call).unwrap().reply(p.now, b"ok").unwrap();
        }
        p.run();
    };
    // One record was taken, so the next fits and the counter stays...
    one_more(&mut p);
    assert_eq!(p.a.rpc_metrics().observer_dropped_total, total - 1024);
    assert_eq!(p.a.queued_call_records(), 1024);
    // ...and the one after is dropped and counted.
    one_more(&mut p);
    assert_eq!(p.a.rpc_metrics().observer_dropped_total, total - 1024 + 1);
    // Without an observer nothing is queued.
    assert_eq!(p.b.queued_call_records(), 0);
}

#[test]
fn call_service_routes_to_providers() {
    let mut p = Pair::new();
    let opts = CallOptions::default();
    let spec = CallSpec {
        service: "svc",
        method: "unary",
        shape: Shape::Unary,
        body: Some(b"x"),
        options: &opts,
    };
    assert_eq!(
        p.a.call_service(p.now, spec),
        Err(RpcError::NoRoute),
        "nobody serves it"
    );
    assert!(p.a.providers("svc").is_empty());
    p.serve_all();
    assert_eq!(p.a.providers("svc"), [p.b.node_id()]);
    let (call, peer) = p.a.call_service(p.now, spec).unwrap();
    assert_eq!(peer, p.b.node_id());
    p.run();
    let req = p.requests().pop().unwrap();
    p.b.rpc_call(req.call).unwrap().reply(p.now, b"y").unwrap();
    p.run();
    assert_eq!(reply_of(&p.ea, call), Some(&Ok(b"y".to_vec())));
    // Withdrawn: NoRoute again, once the peer has heard.
    assert!(p.b.unserve(p.now, "svc"));
    p.run();
    assert!(p.a.providers("svc").is_empty());
    assert_eq!(p.a.call_service(p.now, spec), Err(RpcError::NoRoute));
}

#[test]
fn a_session_that_ends_fails_its_calls() {
    let (mut p, call, req) = watching(Credit::default());
    let s = p.b.session_with(&p.a.node_id()).unwrap();
    p.b.close(p.now, s, 7).unwrap();
    p.run();
    assert_eq!(aborted(&p.eb, req.call), Some(AbortReason::Transport));
    assert!(matches!(
        ended_of(&p.ea, call),
        Some(Err(RpcError::Transport(TransportError::SessionEnded(_))))
    ));
    assert!(p.a.providers("svc").is_empty());
}

#[test]
fn rpc_streams_are_invisible_to_the_stream_api() {
    let (mut p, call, _req) = watching(Credit::default());
    assert!(p.a.rpc_call(call).is_ok());
    assert!(p.other_a.iter().all(|e| !matches!(e, Event::Stream { .. })));
    assert!(p.other_b.iter().all(|e| !matches!(e, Event::Stream { .. })));
    let s = p.a.session_with(&p.b.node_id()).unwrap();
    // Stream 0 is the call's (the initiator's first); the application cannot touch it.
    assert!(p.a.stream(s, crate::StreamId(0)).is_err());
}

#[cfg(feature = "typed")]
#[test]
fn typed_calls_map_bad_requests_and_handler_errors() {
    use super::typed::{self, Json, Postcard};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Div {
        a: i64,
        b: i64,
    }

    fn serve_one<C: typed::Codec>(p: &mut Pair) {
        for req in p.requests() {
            let out = typed::handle::<C, Div, i64, &str>(req.body.as_deref().unwrap_or(&[]), |d| {
                d.a.checked_div(d.b).ok_or("division by zero")
            });
            let mut h = p.b.rpc_call(req.call).unwrap();
            typed::respond(&mut h, p.now, out).unwrap();
        }
        p.run();
    }

    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions::default();
    let ok = typed::encode::<Json, _>(&Div { a: 7, b: 2 }).unwrap();
    let zero = typed::encode::<Json, _>(&Div { a: 7, b: 0 }).unwrap();
    let c_ok = p.call("unary", Shape::Unary, Some(&ok), &opts).unwrap();
    let c_zero = p.call("unary", Shape::Unary, Some(&zero), &opts).unwrap();
    let c_bad = p
        .call("unary", Shape::Unary, Some(b"not json"), &opts)
        .unwrap();
    p.run();
    serve_one::<Json>(&mut p);
    let typed_reply =
        |p: &Pair, c| typed::decode_reply::<Json, i64>(reply_of(&p.ea, c).unwrap().clone());
    assert_eq!(typed_reply(&p, c_ok), Ok(3));
    assert!(matches!(
        typed_reply(&p, c_zero),
        Err(RpcError::ServerError { status: 0x8001, ref message }) if message == "division by zero"
    ));
    assert!(matches!(
        typed_reply(&p, c_bad),
        Err(RpcError::ServerError { status: 0x8000, .. })
    ));
    // A reply the caller's type does not match is a decode error on the caller's side.
    assert!(matches!(
        typed::decode_reply::<Json, String>(reply_of(&p.ea, c_ok).unwrap().clone()),
        Err(RpcError::Codec {
            direction: CodecDirection::Decode,
            ..
        })
    ));
    // postcard: the compact codec, same mapping.
    let body = typed::encode::<Postcard, _>(&Div { a: 9, b: 3 }).unwrap();
    assert!(body.len() < ok.len());
    let c = p.call("unary", Shape::Unary, Some(&body), &opts).unwrap();
    p.run();
    serve_one::<Postcard>(&mut p);
    let got = typed::decode_reply::<Postcard, i64>(reply_of(&p.ea, c).unwrap().clone());
    assert_eq!(got, Ok(3));
}

#[test]
fn retry_and_breaker_drive_calls_from_outcomes() {
    use super::resilience::{Backoff, BreakerConfig, BreakerState, CircuitBreaker, RetryPolicy};
    // The peer is not connected yet: NoRoute, retried after the backoff; by then the session
    // is up and the retry succeeds.
    let mut a = node(1, |_| {});
    let b_id = Identity::from_seed(&Seed::from_u64(102)).node_id();
    let opts = CallOptions::default();
    let spec = CallSpec {
        service: "svc",
        method: "unary",
        shape: Shape::Unary,
        body: Some(b"x"),
        options: &opts,
    };
    let first = a.call(Instant::ZERO, &b_id, spec);
    assert_eq!(first, Err(RpcError::NoRoute));
    let mut backoff = Backoff::new(RetryPolicy::default(), &Seed::from_u64(5));
    let delay = backoff
        .next(&RpcError::NoRoute)
        .expect("NoRoute is retried");
    let mut p = Pair::new();
    p.serve_all();
    p.advance(delay);
    let call = p
        .call("unary", Shape::Unary, Some(b"x"), &opts)
        .expect("the retry starts");
    p.run();
    for req in p.requests() {
        p.b.rpc_call(req.call).unwrap().reply(p.now, b"ok").unwrap();
    }
    p.run();
    assert_eq!(reply_of(&p.ea, call), Some(&Ok(b"ok".to_vec())));
    // A failing server trips the breaker; the cooldown lets one probe through; its success
    // closes it again.
    let answer = |p: &mut Pair, failing: bool| {
        for req in p.requests() {
            let mut h = p.b.rpc_call(req.call).unwrap();
            if failing {
                h.finish(p.now, status::INTERNAL, "down").unwrap();
            } else {
                h.reply(p.now, b"up").unwrap();
            }
        }
        p.run();
    };
    let mut br = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 3,
        cooldown: Duration::from_secs(1),
    });
    let mut failing = true;
    for _ in 0..6 {
        if br.try_acquire(p.now).is_err() {
            continue;
        }
        let c = p.call("unary", Shape::Unary, Some(b"x"), &opts).unwrap();
        p.run();
        answer(&mut p, failing);
        let r = reply_of(&p.ea, c).cloned().expect("resolved");
        if let Err(e) = &r {
            let mut fresh = Backoff::new(RetryPolicy::default(), &Seed::from_u64(6));
            assert_eq!(fresh.next(e), None, "a server error is not retried");
        }
        br.on_result(p.now, &r);
    }
    assert!(matches!(br.state(), BreakerState::Open { .. }));
    assert_eq!(br.trips, 1);
    assert!(
        br.try_acquire(p.now).is_err(),
        "open: refused without a call"
    );
    failing = false;
    p.advance(Duration::from_secs(1));
    assert!(br.try_acquire(p.now).is_ok(), "the probe");
    assert_eq!(br.state(), BreakerState::HalfOpen);
    let c = p.call("unary", Shape::Unary, Some(b"x"), &opts).unwrap();
    p.run();
    answer(&mut p, failing);
    br.on_result(p.now, reply_of(&p.ea, c).unwrap());
    assert_eq!(br.state(), BreakerState::Closed { failures: 0 });
}

#[test]
fn finished_calls_leave_nothing_behind() {
    let mut p = Pair::new();
    p.serve_all();
    let opts = CallOptions {
        deadline: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    };
    let mut done = 0;
    for _ in 0..40 {
        for _ in 0..64 {
            p.call("unary", Shape::Unary, Some(b"x"), &opts).unwrap();
        }
        // Time passes as on a real path (pacing releases what a burst could not carry).
        for _ in 0..20 {
            p.advance(Duration::from_millis(1));
            for req in p.requests() {
                p.b.rpc_call(req.call).unwrap().reply(p.now, b"y").unwrap();
            }
        }
        done +=
            p.ea.iter()
                .filter(|e| matches!(e, RpcEvent::Reply { .. }))
                .count();
        p.ea.clear();
    }
    p.advance(Duration::from_millis(50));
    assert_eq!(done, 40 * 64, "every call answered");
    // Only the announcement streams remain (one slot each side).
    assert_eq!(p.a.rpc_tables(), (0, 1, 0));
    assert_eq!(p.b.rpc_tables(), (0, 1, 0));
    let s = p.a.session_with(&p.b.node_id()).unwrap();
    assert_eq!(p.a.session_info(s).unwrap().open_streams, 1);
    let s = p.b.session_with(&p.a.node_id()).unwrap();
    assert_eq!(p.b.session_info(s).unwrap().open_streams, 1);
}

#[test]
fn error_messages_say_what_to_do() {
    let text = |e: RpcError| alloc::format!("{e}");
    assert!(text(Misuse::WouldBlock.into()).contains("Writable"));
    assert!(text(Misuse::TooManyCalls.into()).contains("max_calls"));
    assert!(text(Misuse::UnknownToken(CancelToken(9)).into()).contains("reserve a new one"));
    assert!(text(RpcError::NoRoute).contains("no peer serves"));
    assert!(text(RpcError::ServerError {
        status: 0x8001,
        message: "boom".into()
    })
    .contains("0x8001: boom"));
    assert!(text(RpcError::Transport(TransportError::IdsExhausted)).contains("reconnect"));
}

#[test]
fn a_replaced_service_list_never_cuts_one_the_stream_took_part_of() {
    // A send buffer of one packet: a list of a few KiB leaves in parts.
    let mut p = Pair::with(|_| {}, |c| c.streams.send_buffer = c.max_packet_size);
    let list = |n: u32| {
        (0..200).fold(ServiceSpec::new("svc"), |s, i| {
            s.method(
                &alloc::format!("a-rather-long-method-name-{n}-{i:03}"),
                Shape::Unary,
            )
        })
    };
    p.b.serve(p.now, list(1)).unwrap();
    // Replaced at once: part of the first list is in the stream, the rest still queued.
    p.b.serve(p.now, list(2)).unwrap();
    p.run();
    let s = p.a.session_with(&p.b.node_id()).unwrap();
    let got = p.a.peer_services(s);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0]
            .methods
            .iter()
            .any(|m| m.name == "a-rather-long-method-name-2-199"),
        "the newer list arrived whole"
    );
}
