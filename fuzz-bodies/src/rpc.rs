//! The nRPC client and server machines against a reference model: node 0 calls node 1's
//! service in all four shapes with deadlines, sends, closes and cancels; node 1 answers,
//! streams, fails or stays silent, as the input says; the wire loses, duplicates and reorders.
//!
//! After every step:
//! - a call resolves at most once at its caller;
//! - a successful reply is the one the server sent for that call (calls are matched by a tag
//!   in their metadata), and a server error carries the server's status;
//! - the responses a caller receives are, in order, a prefix of what the server sent; the
//!   requests a server receives are, in order, a prefix of what the caller sent.
//!
//! At the end the wire turns clean and time runs past every deadline: every call must then
//! have resolved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use proto_core::crypto::RustCrypto;
use proto_core::rpc::{CallId, CallOptions, CallSpec, RpcError, RpcEvent, ServiceSpec, Shape};
use proto_core::Event;

use crate::node::{Pair, WireOp};

const MAX_STEPS: usize = 512;
const SHAPES: [Shape; 4] = [
    Shape::Unary,
    Shape::ServerStreaming,
    Shape::ClientStreaming,
    Shape::Duplex,
];
const METHODS: [&str; 4] = ["u", "s", "c", "d"];

/// One step of an [`rpc_ops`] input.
#[derive(Arbitrary, Debug)]
pub enum RpcOp {
    /// Node 0 starts a call (`shape % 4`) with a deadline of 50 ms plus `deadline_ms`.
    Call {
        /// The shape.
        shape: u8,
        /// The deadline beyond 50 ms.
        deadline_ms: u16,
        /// Bytes of request body (single-request shapes).
        len: u8,
    },
    /// Node 0 sends the next request on a streaming-request call.
    Send {
        /// Which call (modulo how many).
        call: u8,
    },
    /// Node 0 ends a call's requests.
    CloseSend {
        /// Which call.
        call: u8,
    },
    /// Node 0 cancels a call.
    Cancel {
        /// Which call.
        call: u8,
    },
    /// Node 1 acts on a call it received: 0 reply, 1 send a response, 2 finish OK, 3 fail.
    Serve {
        /// Which incoming call.
        call: u8,
        /// What to do.
        action: u8,
    },
    /// Something the wire does (delivery, loss, duplication, time).
    Wire(WireOp),
}

#[derive(Default)]
struct ClientCall {
    tag: u32,
    requests: Vec<Vec<u8>>,
    responses: Vec<Vec<u8>>,
    resolved: Option<Result<Option<Vec<u8>>, RpcError>>,
}

struct ServerCall {
    id: CallId,
    tag: u32,
    requests: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    /// What the server ended the call with: the reply, or a status.
    ended: Option<Result<Vec<u8>, u16>>,
}

fn tag_of(metadata: &[(String, Vec<u8>)]) -> u32 {
    metadata
        .iter()
        .find(|(k, _)| k == "tag")
        .and_then(|(_, v)| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_le_bytes)
        .expect("every call carries its tag")
}

fn payload(tag: u32, n: usize, kind: u8) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&(n as u32).to_le_bytes());
    v
}

/// See the module docs.
pub fn rpc_ops(data: &[u8]) {
    let mut p = Pair::new(Arc::new(RustCrypto));
    if p.establish().is_none() {
        panic!("the handshake must complete on a clean wire");
    }
    let mut spec = ServiceSpec::new("svc");
    for (m, s) in METHODS.iter().zip(SHAPES) {
        spec = spec.method(m, s);
    }
    p.nodes[1].serve(p.now, spec).expect("serve");
    p.drain();
    p.settle(64);
    p.events[0].clear();
    p.events[1].clear();
    let server_id = p.nodes[1].node_id();
    let mut calls: BTreeMap<CallId, ClientCall> = BTreeMap::new();
    let mut order: Vec<CallId> = Vec::new();
    let mut served: Vec<ServerCall> = Vec::new();
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = RpcOp::arbitrary(&mut u) else {
            break;
        };
        let now = p.now;
        let pick = |i: u8| (!order.is_empty()).then(|| order[usize::from(i) % order.len()]);
        match op {
            RpcOp::Call {
                shape,
                deadline_ms,
                len,
            } => {
                let k = usize::from(shape % 4);
                let tag = u32::try_from(order.len()).unwrap_or(u32::MAX);
                let options = CallOptions {
                    deadline: Some(Duration::from_millis(50 + u64::from(deadline_ms))),
                    metadata: vec![(String::from("tag"), tag.to_le_bytes().to_vec())],
                    ..CallOptions::default()
                };
                let mut body = payload(tag, 0, b'q');
                body.resize(body.len() + usize::from(len), 0x5a);
                let single = matches!(SHAPES[k], Shape::Unary | Shape::ServerStreaming);
                let spec = CallSpec {
                    service: "svc",
                    method: METHODS[k],
                    shape: SHAPES[k],
                    body: single.then_some(body.as_slice()),
                    options: &options,
                };
                if let Ok(id) = p.nodes[0].call(now, &server_id, spec) {
                    let mut c = ClientCall {
                        tag,
                        ..ClientCall::default()
                    };
                    if single {
                        c.requests.push(body);
                    }
                    calls.insert(id, c);
                    order.push(id);
                }
            }
            RpcOp::Send { call } => {
                if let Some(id) = pick(call) {
                    let c = calls.get_mut(&id).expect("ordered calls exist");
                    let msg = payload(c.tag, c.requests.len(), b'r');
                    if let Ok(mut h) = p.nodes[0].rpc_call(id) {
                        if h.send(now, &msg).is_ok() {
                            c.requests.push(msg);
                        }
                    }
                }
            }
            RpcOp::CloseSend { call } => {
                if let Some(id) = pick(call) {
                    if let Ok(mut h) = p.nodes[0].rpc_call(id) {
                        let _ = h.close_send(now);
                    }
                }
            }
            RpcOp::Cancel { call } => {
                if let Some(id) = pick(call) {
                    if let Ok(mut h) = p.nodes[0].rpc_call(id) {
                        let _ = h.cancel(now);
                    }
                }
            }
            RpcOp::Serve { call, action } => {
                if !served.is_empty() {
                    let n = served.len();
                    let s = &mut served[usize::from(call) % n];
                    if s.ended.is_none() {
                        if let Ok(mut h) = p.nodes[1].rpc_call(s.id) {
                            match action % 4 {
                                0 => {
                                    let body = payload(s.tag, s.requests.len(), b'p');
                                    if h.reply(now, &body).is_ok() {
                                        s.ended = Some(Ok(body));
                                    }
                                }
                                1 => {
                                    let msg = payload(s.tag, s.sent.len(), b's');
                                    if h.send(now, &msg).is_ok() {
                                        s.sent.push(msg);
                                    }
                                }
                                2 => {
                                    if h.finish(now, 0, "").is_ok() {
                                        s.ended = Some(Err(0));
                                    }
                                }
                                _ => {
                                    if h.finish(now, 0x8000 + u16::from(action), "no").is_ok() {
                                        s.ended = Some(Err(0x8000 + u16::from(action)));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            RpcOp::Wire(op) => p.apply(&op, 3_000),
        }
        p.drain();
        check(&mut p, &mut calls, &mut served);
    }
    // A clean wire, and time past every deadline (at most 50 ms + 65,535 ms after its call):
    // every call resolves.
    for _ in 0..140 {
        p.settle(256);
        check(&mut p, &mut calls, &mut served);
        p.advance(Duration::from_millis(500));
        check(&mut p, &mut calls, &mut served);
    }
    for (id, c) in &calls {
        assert!(
            c.resolved.is_some(),
            "{id:?} (tag {}) never resolved",
            c.tag
        );
    }
}

/// Applies both nodes' events to the model and checks it.
fn check(p: &mut Pair, calls: &mut BTreeMap<CallId, ClientCall>, served: &mut Vec<ServerCall>) {
    for ev in p.events[1].drain(..) {
        let Event::Rpc(e) = ev else { continue };
        match e {
            RpcEvent::Request(inc) => {
                let tag = tag_of(&inc.metadata);
                let client = calls
                    .values()
                    .find(|c| c.tag == tag)
                    .expect("a request for a call never made");
                let mut requests = Vec::new();
                if let Some(b) = inc.body {
                    assert_eq!(client.requests.first(), Some(&b), "tag {tag}: body changed");
                    requests.push(b);
                }
                served.push(ServerCall {
                    id: inc.call,
                    tag,
                    requests,
                    sent: Vec::new(),
                    ended: None,
                });
            }
            RpcEvent::Message { call, data } => {
                let s = served
                    .iter_mut()
                    .find(|s| s.id == call)
                    .expect("a message for a call that never arrived");
                let client = calls
                    .values()
                    .find(|c| c.tag == s.tag)
                    .expect("the call exists");
                let n = s.requests.len();
                assert_eq!(
                    client.requests.get(n),
                    Some(&data),
                    "tag {}: request {n}",
                    s.tag
                );
                s.requests.push(data);
            }
            _ => {}
        }
    }
    for ev in p.events[0].drain(..) {
        let Event::Rpc(e) = ev else { continue };
        match e {
            RpcEvent::Message { call, data } => {
                let c = calls
                    .get_mut(&call)
                    .expect("responses for a call never made");
                let s = served.iter().find(|s| s.tag == c.tag).expect("served");
                let n = c.responses.len();
                assert_eq!(s.sent.get(n), Some(&data), "tag {}: response {n}", c.tag);
                c.responses.push(data);
            }
            RpcEvent::Reply { call, result } => {
                let c = calls.get_mut(&call).expect("a reply for a call never made");
                assert!(c.resolved.is_none(), "{call:?} resolved twice");
                let s = served.iter().find(|s| s.tag == c.tag);
                let ended = s.and_then(|s| s.ended.clone());
                match &result {
                    Ok(body) => assert!(
                        ended == Some(Ok(body.clone()))
                            || (ended == Some(Err(0)) && body.is_empty()),
                        "tag {}: a reply the server never sent ({ended:?})",
                        c.tag
                    ),
                    // The application's band: only the harness's server uses it.
                    Err(RpcError::ServerError { status, .. }) if *status >= 0x8000 => assert_eq!(
                        ended,
                        Some(Err(*status)),
                        "tag {}: a status the server never sent",
                        c.tag
                    ),
                    Err(_) => {}
                }
                c.resolved = Some(result.map(Some));
            }
            RpcEvent::Ended { call, result } => {
                let c = calls.get_mut(&call).expect("an end for a call never made");
                assert!(c.resolved.is_none(), "{call:?} resolved twice");
                if result.is_ok() {
                    let s = served.iter().find(|s| s.tag == c.tag).expect("served");
                    assert_eq!(s.ended, Some(Err(0)), "tag {}: ended OK by nobody", c.tag);
                    assert_eq!(c.responses, s.sent, "tag {}: responses missing", c.tag);
                }
                c.resolved = Some(result.map(|()| None));
            }
            _ => {}
        }
    }
}
