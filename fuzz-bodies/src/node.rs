//! Targets that drive whole nodes: arbitrary datagrams into a fresh node, arbitrary answers
//! to a handshake in flight, operation sequences on a pair of nodes, and (with
//! [`crate::NullCrypto`]) arbitrary frames inside an established session.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use proto_core::crypto::{RustCrypto, SharedProvider};
use proto_core::replication::{LogSpec, MemLog, Placement, ReplicationConfig};
use proto_core::wire::{self, frame::Frames, DataHeader, Packet};
use proto_core::{Config, Event, Identity, Instant, Node, NodeStats, PeerSpec, Seed, SessionId};

/// Most steps one input drives (inputs are at most a few KiB; this bounds the time of one).
const MAX_STEPS: usize = 512;

/// Most datagrams one direction of a [`Pair`] holds in flight (older ones are lost).
const IN_FLIGHT: usize = 256;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4000))
}

fn node(seed: u64, provider: SharedProvider) -> Node {
    node_at(seed, &Seed::from_u64(seed + 100), provider, Instant::ZERO)
}

/// A node with the randomness of `seed` and the identity of `identity_seed`, started at
/// `now` (a restarted node keeps its identity and draws fresh randomness).
pub(crate) fn node_at(
    seed: u64,
    identity_seed: &Seed,
    provider: SharedProvider,
    now: Instant,
) -> Node {
    let mut config = Config::new(Seed::from_u64(seed)).with_provider(provider);
    config.strict_drain = true;
    Node::new(config, Identity::from_seed(identity_seed), now)
        .expect("the default configuration is valid")
}

/// Counters that may only grow.
fn monotonic(before: &NodeStats, after: &NodeStats) {
    let pairs = [
        (before.datagrams_in, after.datagrams_in),
        (before.datagrams_out, after.datagrams_out),
        (before.handshakes_initiated, after.handshakes_initiated),
        (before.handshakes_answered, after.handshakes_answered),
        (before.sessions_established, after.sessions_established),
        (before.handshake_retransmits, after.handshake_retransmits),
    ];
    for (i, (b, a)) in pairs.into_iter().enumerate() {
        assert!(a >= b, "counter {i} went down: {b} -> {a}");
    }
}

/// Arbitrary bytes as datagrams into a fresh node, from a few addresses: it answers or drops
/// them, never panics, never reports a session, and every datagram it sends decodes.
pub fn node_input(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut n = node(1, Arc::new(RustCrypto));
    let mut now = Instant::ZERO;
    let mut out = vec![0u8; n.config().max_packet_size];
    // `arbitrary` answers from an exhausted input with defaults, never an error: stop on
    // empty input, and after a bounded number of steps.
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok((from, gap, bytes)) = <(u8, u8, Vec<u8>)>::arbitrary(&mut u) else {
            break;
        };
        now = now.saturating_add(Duration::from_millis(u64::from(gap)));
        let before = n.stats();
        n.handle_datagram(now, addr(from % 4), &bytes)
            .expect("a drained node takes any datagram");
        while let Some(t) = n
            .poll_transmit(now, &mut out)
            .expect("buffer is max_packet_size")
        {
            let sent = out.get(..t.len).expect("within the buffer");
            assert!(
                wire::decode(sent).is_ok(),
                "the node sent an undecodable packet"
            );
        }
        while let Some(ev) = n.poll_event() {
            assert!(
                !matches!(ev, Event::Connected { .. }),
                "invented bytes established a session: {ev:?}"
            );
        }
        monotonic(&before, &n.stats());
        if gap % 8 == 0 {
            n.handle_timeout(now).expect("drained");
        }
    }
}

/// A node that has started a handshake (IK or XX) gets arbitrary answers from the address it
/// called: it must never consider the session established (the answers cannot carry the
/// peer's keys), and it must go on retrying and finally give up cleanly.
pub fn handshake_answers(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let ik = bool::arbitrary(&mut u).unwrap_or(false);
    let mut a = node(1, Arc::new(RustCrypto));
    let b = node(2, Arc::new(RustCrypto));
    let spec = if ik { b.peer_spec() } else { PeerSpec::any() };
    let session = a.connect(Instant::ZERO, addr(2), spec).expect("connect");
    let mut out = vec![0u8; a.config().max_packet_size];
    let mut now = Instant::ZERO;
    let mut drain = |a: &mut Node, now: Instant| {
        while let Some(t) = a.poll_transmit(now, &mut out).expect("buffer") {
            assert_eq!(t.destination, addr(2));
        }
        let mut ended = false;
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Connected { .. } => panic!("invented answers established {session:?}"),
                Event::Disconnected { .. } => ended = true,
                _ => {}
            }
        }
        ended
    };
    // The session may end early (an answer that fails the handshake ends it): remember it.
    let mut ended = drain(&mut a, now);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok((gap, bytes)) = <(u8, Vec<u8>)>::arbitrary(&mut u) else {
            break;
        };
        now = now.saturating_add(Duration::from_millis(u64::from(gap)));
        a.handle_datagram(now, addr(2), &bytes).expect("drained");
        ended |= drain(&mut a, now);
        a.handle_timeout(now).expect("drained");
        ended |= drain(&mut a, now);
    }
    // However it went, the handshake ends within its timeout.
    for _ in 0..200 {
        if ended {
            break;
        }
        now = now.saturating_add(Duration::from_millis(500));
        a.handle_timeout(now).expect("drained");
        ended = drain(&mut a, now);
    }
    assert!(ended, "the handshake never ended");
}

/// Two nodes and the datagrams in flight between them.
pub struct Pair {
    /// The nodes: `[0]` on 10.0.0.1, `[1]` on 10.0.0.2.
    pub nodes: [Node; 2],
    /// In flight towards node `i`.
    pub wire: [VecDeque<Vec<u8>>; 2],
    /// The virtual clock.
    pub now: Instant,
    /// Events each node reported, oldest first (bounded: only the newest 1024 stay).
    pub events: [VecDeque<Event>; 2],
    out: Vec<u8>,
}

impl Pair {
    /// Two fresh nodes with `provider`.
    #[must_use]
    pub fn new(provider: SharedProvider) -> Pair {
        let a = node(1, provider.clone());
        let b = node(2, provider);
        let out = vec![0u8; a.config().max_packet_size];
        Pair {
            nodes: [a, b],
            wire: [VecDeque::new(), VecDeque::new()],
            now: Instant::ZERO,
            events: [VecDeque::new(), VecDeque::new()],
            out,
        }
    }

    /// Moves every node's output onto the wire and its events into `events`.
    pub fn drain(&mut self) {
        for i in 0..2 {
            loop {
                let t = self.nodes[i]
                    .poll_transmit(self.now, &mut self.out)
                    .expect("buffer is max_packet_size");
                let Some(t) = t else { break };
                let to = if t.destination == addr(1) { 0 } else { 1 };
                let bytes = self.out.get(..t.len).expect("within the buffer").to_vec();
                assert!(
                    wire::decode(&bytes).is_ok(),
                    "node {i} sent an undecodable packet"
                );
                let q = &mut self.wire[to];
                if q.len() >= IN_FLIGHT {
                    q.pop_front();
                }
                q.push_back(bytes);
            }
            while let Some(ev) = self.nodes[i].poll_event() {
                let log = &mut self.events[i];
                if log.len() >= 1024 {
                    log.pop_front();
                }
                log.push_back(ev);
            }
        }
    }

    /// Hands node `to` the datagram at `index` of its queue (modulo its length).
    pub fn deliver(&mut self, to: usize, index: usize) -> Option<Vec<u8>> {
        let q = &mut self.wire[to];
        if q.is_empty() {
            return None;
        }
        let d = q.remove(index % q.len())?;
        self.feed(to, &d);
        Some(d)
    }

    /// Feeds `bytes` to node `to` as if from the other node, then drains.
    pub fn feed(&mut self, to: usize, bytes: &[u8]) {
        let from = addr(if to == 0 { 2 } else { 1 });
        self.nodes[to]
            .handle_datagram(self.now, from, bytes)
            .expect("a drained node takes any datagram");
        self.drain();
    }

    /// Advances the clock and fires both nodes' timers.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        for i in 0..2 {
            self.nodes[i].handle_timeout(self.now).expect("drained");
        }
        self.drain();
    }

    /// Delivers everything in flight, both ways, until nothing is left (or `limit` datagrams).
    pub fn settle(&mut self, limit: usize) {
        for _ in 0..limit {
            if self.deliver(1, 0).is_none() && self.deliver(0, 0).is_none() {
                return;
            }
        }
    }

    /// Applies one wire step; an advance is capped at `max_advance_ms`.
    pub fn apply(&mut self, op: &WireOp, max_advance_ms: u64) {
        match *op {
            WireOp::Deliver { to, index } => {
                let _ = self.deliver(usize::from(to % 2), usize::from(index));
            }
            WireOp::Lose { to, index } => {
                let q = &mut self.wire[usize::from(to % 2)];
                if !q.is_empty() {
                    let n = q.len();
                    q.remove(usize::from(index) % n);
                }
            }
            WireOp::Duplicate { to, index } => {
                let to = usize::from(to % 2);
                let q = &self.wire[to];
                if !q.is_empty() {
                    let d = q[usize::from(index) % q.len()].clone();
                    self.feed(to, &d);
                }
            }
            WireOp::Advance { ms } => {
                self.advance(Duration::from_millis(u64::from(ms).min(max_advance_ms)));
            }
        }
    }

    /// Node 0 connects to node 1 and the handshake runs to the end on a clean wire. Returns
    /// both sides' sessions.
    pub fn establish(&mut self) -> Option<(SessionId, SessionId)> {
        let spec = self.nodes[1].peer_spec();
        let s0 = self.nodes[0].connect(self.now, addr(2), spec).ok()?;
        self.drain();
        self.settle(64);
        let peer0 = self.nodes[0].node_id();
        let s1 = self.nodes[1].session_with(&peer0)?;
        self.nodes[0]
            .session_info(s0)?
            .established
            .then_some((s0, s1))
    }
}

/// What the wire between a [`Pair`] does in one step; every operation-sequence target has
/// these besides its own operations.
#[derive(Arbitrary, Debug)]
pub enum WireOp {
    /// Delivers the datagram at `index` of the queue towards node `to % 2`.
    Deliver {
        /// Which queue.
        to: u8,
        /// Which datagram.
        index: u8,
    },
    /// Loses it.
    Lose {
        /// Which queue.
        to: u8,
        /// Which datagram.
        index: u8,
    },
    /// Delivers a copy and keeps the original in flight (duplication, replay).
    Duplicate {
        /// Which queue.
        to: u8,
        /// Which datagram.
        index: u8,
    },
    /// Time passes.
    Advance {
        /// Milliseconds (each target caps it).
        ms: u16,
    },
}

/// What a [`session_ops`] input does, one step at a time.
#[derive(Arbitrary, Debug)]
pub enum SessionOp {
    /// Node 0 connects to node 1 (IK when `ik`, else XX).
    Connect {
        /// IK (the static key known) or XX.
        ik: bool,
    },
    /// A datagram of `len` bytes from node `from % 2` on its session.
    Send {
        /// Which node.
        from: u8,
        /// Its length (the content is a unique, checked pattern).
        len: u16,
    },
    /// Closes node `from % 2`'s session.
    Close {
        /// Which node.
        from: u8,
        /// The application code.
        code: u16,
    },
    /// Flips bits of a datagram in flight.
    Corrupt {
        /// Which queue.
        to: u8,
        /// Which datagram.
        index: u8,
        /// Which byte.
        at: u16,
        /// The bits.
        xor: u8,
    },
    /// Arbitrary bytes towards node `to % 2`.
    Inject {
        /// Which node.
        to: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Something the wire does (delivery, loss, duplication, time).
    Wire(WireOp),
}

/// The datagram payload of send number `id`: the id, then a pattern of it.
fn datagram(id: u32, len: u16) -> Vec<u8> {
    let len = usize::from(len % 1100).max(4);
    let mut d = id.to_le_bytes().to_vec();
    d.extend((4..len).map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8));
    d
}

/// Operation sequences on two real nodes with a hostile wire between them (loss,
/// duplication, corruption, injection, time). Checks after every step: nothing panics,
/// counters only grow, every datagram a node sends decodes, and every datagram the
/// application receives is one the other application sent, intact, at most once (replay
/// protection and authentication as seen from above).
pub fn session_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut p = Pair::new(Arc::new(RustCrypto));
    let mut next_id = 0u32;
    // Sent by node i: id -> bytes.
    let mut sent: [std::collections::BTreeMap<u32, Vec<u8>>; 2] = Default::default();
    let mut seen: [BTreeSet<u32>; 2] = Default::default();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = SessionOp::arbitrary(&mut u) else {
            break;
        };
        let before = [p.nodes[0].stats(), p.nodes[1].stats()];
        match op {
            SessionOp::Connect { ik } => {
                let spec = if ik {
                    p.nodes[1].peer_spec()
                } else {
                    PeerSpec::any()
                };
                let _ = p.nodes[0].connect(p.now, addr(2), spec);
                p.drain();
            }
            SessionOp::Send { from, len } => {
                let i = usize::from(from % 2);
                let other = p.nodes[1 - i].node_id();
                if let Some(s) = p.nodes[i].session_with(&other) {
                    let d = datagram(next_id, len);
                    if p.nodes[i].send_datagram(p.now, s, &d).is_ok() {
                        sent[i].insert(next_id, d);
                    }
                    next_id += 1;
                    p.drain();
                }
            }
            SessionOp::Close { from, code } => {
                let i = usize::from(from % 2);
                let other = p.nodes[1 - i].node_id();
                if let Some(s) = p.nodes[i].session_with(&other) {
                    let _ = p.nodes[i].close(p.now, s, code);
                    p.drain();
                }
            }
            SessionOp::Corrupt { to, index, at, xor } => {
                let q = &mut p.wire[usize::from(to % 2)];
                if !q.is_empty() {
                    let n = q.len();
                    let d = &mut q[usize::from(index) % n];
                    let at = usize::from(at) % d.len().max(1);
                    if let Some(b) = d.get_mut(at) {
                        *b ^= xor.max(1);
                    }
                }
            }
            SessionOp::Inject { to, bytes } => p.feed(usize::from(to % 2), &bytes),
            SessionOp::Wire(op) => p.apply(&op, u64::MAX),
        }
        for i in 0..2 {
            monotonic(&before[i], &p.nodes[i].stats());
            // Datagrams node i received come from the other node's sends, intact, once.
            for ev in p.events[i].drain(..) {
                if let Event::Datagram { data, .. } = ev {
                    let id_bytes: [u8; 4] = data
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .expect("every datagram sent carries an id");
                    let id = u32::from_le_bytes(id_bytes);
                    let original = sent[1 - i]
                        .get(&id)
                        .expect("received a datagram never sent");
                    assert_eq!(original, &data, "datagram {id} arrived changed");
                    assert!(seen[i].insert(id), "datagram {id} delivered twice");
                }
            }
        }
    }
}

/// The frame bodies of [`after_handshake`]: each is sealed (null crypto) into a DATA packet
/// to node 0, `gap` milliseconds after the previous one.
#[derive(Arbitrary, Debug)]
struct Body {
    gap: u8,
    /// Deliver what node 0 sent back first (so streams and calls can make progress).
    answer: bool,
    plaintext: Vec<u8>,
}

/// With [`crate::NullCrypto`]: a session is established, then the input's bodies arrive as
/// the peer's encrypted frames, reaching the frame decoder, the stream machine, nRPC and
/// replication (streams of every class) behind the handshake. Checks: nothing panics,
/// counters only grow, and every packet node 0 sends decodes, with frames that decode.
pub fn after_handshake(data: &[u8]) {
    let mut p = Pair::new(Arc::new(crate::NullCrypto));
    if p.establish().is_none() {
        panic!("the handshake must complete on a clean wire");
    }
    // Node 0 serves something and both open a log, so that RPC and SYNC frames find
    // machines in every state.
    let _ = p.nodes[0].serve(
        p.now,
        proto_core::rpc::ServiceSpec::new("fuzz").method("echo", proto_core::rpc::Shape::Unary),
    );
    let members = vec![p.nodes[0].node_id(), p.nodes[1].node_id()];
    for n in &mut p.nodes {
        let cfg = ReplicationConfig {
            factor: 2,
            placement: Placement::Pinned(members.clone()),
            ..ReplicationConfig::default()
        };
        let store = Box::new(MemLog::new(1024, 4096));
        let _ = n.open_log(Instant::ZERO, "fuzz", LogSpec::new(cfg, store));
    }
    p.drain();
    p.settle(64);
    // Node 0's session index, as node 1 addresses it.
    let Some(index) = receiver_index_of(&mut p) else {
        return;
    };
    let mut u = Unstructured::new(data);
    // Counters far above what node 1 used, so the replay window takes each once.
    for counter in (1u64 << 20..).take(MAX_STEPS) {
        if u.is_empty() {
            break;
        }
        let Ok(b) = Body::arbitrary(&mut u) else {
            break;
        };
        p.now = p
            .now
            .saturating_add(Duration::from_millis(u64::from(b.gap)));
        let before = p.nodes[0].stats();
        let mut packet = vec![0u8; wire::DATA_HEADER_LEN];
        let header = DataHeader {
            key_phase: 0,
            receiver_index: index,
            counter,
        };
        wire::write_data_header(&mut packet, &header).expect("16 bytes");
        packet.extend_from_slice(&b.plaintext);
        packet.extend_from_slice(&[0u8; proto_core::crypto::TAG_LEN]);
        p.feed(0, &packet);
        check_plaintexts(&p.wire[1]);
        if b.answer {
            p.settle(16);
        }
        p.advance(Duration::ZERO);
        monotonic(&before, &p.nodes[0].stats());
        p.events[0].clear();
        p.events[1].clear();
    }
}

/// Node 0's receiver index for node 1: read from a DATA packet node 0 would accept, which
/// node 1 sends when asked to send a datagram.
fn receiver_index_of(p: &mut Pair) -> Option<u32> {
    let s1 = p.nodes[1].session_with(&p.nodes[0].node_id())?;
    p.nodes[1].send_datagram(p.now, s1, b"probe").ok()?;
    p.drain();
    let found = p.wire[0].iter().rev().find_map(|d| match wire::decode(d) {
        Ok(Packet::Data(h, _)) => Some(h.receiver_index),
        _ => None,
    });
    p.settle(16);
    found
}

/// Under null crypto a DATA packet's body is its plaintext frames: every one node 0 sent must
/// decode.
fn check_plaintexts(q: &VecDeque<Vec<u8>>) {
    for d in q {
        if let Ok(Packet::Data(_, body)) = wire::decode(d) {
            let frames = body
                .len()
                .checked_sub(proto_core::crypto::TAG_LEN)
                .and_then(|n| body.get(..n))
                .expect("a DATA body holds its tag");
            assert!(
                Frames::validate(frames).is_ok(),
                "node 0 sent frames that do not decode"
            );
        }
    }
}
