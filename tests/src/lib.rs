//! Cross-crate test support: an in-memory pair harness in the spirit of quinn-proto's `Pair`.
//!
//! [`Pair`] drives two [`Node`]s over a simulated link with virtual time, latency, jitter
//! (which reorders), loss and duplication, all drawn from a seeded generator so that every run
//! of a test is the same run. It follows the core's run loop exactly: feed one input, drain
//! transmits and events, sleep to the next deadline. The full simulator is `io-sim`; this is
//! the small harness the session-layer tests need.

pub mod app;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use proto_core::rng::Rng;
use proto_core::{Config, Event, Identity, Instant, Node, Seed};

/// One direction of the simulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Base one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (reorders when larger than the
    /// gap between sends).
    pub jitter: Duration,
    /// Probability of dropping a datagram, in parts per million.
    pub loss_ppm: u32,
    /// Probability of delivering a datagram twice, in parts per million.
    pub duplicate_ppm: u32,
}

impl Link {
    /// A perfect link with `latency`.
    #[must_use]
    pub fn with_latency(latency: Duration) -> Link {
        Link {
            latency,
            jitter: Duration::ZERO,
            loss_ppm: 0,
            duplicate_ppm: 0,
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::with_latency(Duration::from_millis(10))
    }
}

/// Which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The first node.
    A,
    /// The second node.
    B,
}

impl Side {
    /// The other side.
    #[must_use]
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Datagrams the link dropped.
    pub lost: u64,
    /// Extra copies the link delivered.
    pub duplicated: u64,
    /// Datagrams delivered (copies included).
    pub delivered: u64,
}

/// A datagram on the link: (arrival time, sequence number, recipient, bytes).
type InFlight = Reverse<(Instant, u64, Side, Vec<u8>)>;

/// Two nodes and the link between them.
pub struct Pair {
    /// Node A.
    pub a: Node,
    /// Node B.
    pub b: Node,
    /// A's address.
    pub a_addr: SocketAddr,
    /// B's address.
    pub b_addr: SocketAddr,
    /// Link from A to B.
    pub ab: Link,
    /// Link from B to A.
    pub ba: Link,
    /// Virtual now.
    pub now: Instant,
    /// Events A produced, in order.
    pub a_events: Vec<Event>,
    /// Events B produced, in order.
    pub b_events: Vec<Event>,
    /// Every datagram put on the wire: (time, sender, bytes). For replay and tampering tests.
    pub wire_log: Vec<(Instant, Side, Vec<u8>)>,
    /// Link counters.
    pub stats: LinkStats,
    /// When set, every datagram sent is passed through this filter; `None` drops it.
    #[allow(clippy::type_complexity)]
    pub tap: Option<Box<dyn FnMut(Side, Vec<u8>) -> Option<Vec<u8>>>>,
    in_flight: BinaryHeap<InFlight>,
    seq: u64,
    rng: Rng,
    buf: Vec<u8>,
}

/// A test config: defaults with `seed`, strict draining on.
#[must_use]
pub fn config(seed: u64) -> Config {
    let mut c = Config::new(Seed::from_u64(seed));
    c.strict_drain = true;
    c
}

/// The identity of test node `n`.
#[must_use]
pub fn identity(n: u64) -> Identity {
    Identity::from_seed(&Seed::from_u64(1000 + n))
}

impl Pair {
    /// Two nodes with the given configs and identities 1 and 2, over default links, seeded with
    /// `seed` for the link's randomness.
    #[must_use]
    pub fn new(a: Config, b: Config, seed: u64) -> Pair {
        let now = Instant::from_millis(1_000);
        let a = Node::new(a, identity(1), now).unwrap_or_else(|e| panic!("node a: {e}"));
        let b = Node::new(b, identity(2), now).unwrap_or_else(|e| panic!("node b: {e}"));
        Pair {
            a,
            b,
            a_addr: "10.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!()),
            b_addr: "10.0.0.2:4000".parse().unwrap_or_else(|_| unreachable!()),
            ab: Link::default(),
            ba: Link::default(),
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            wire_log: Vec::new(),
            stats: LinkStats::default(),
            tap: None,
            in_flight: BinaryHeap::new(),
            seq: 0,
            rng: Seed::from_u64(seed).rng("pair-link", 0),
            buf: vec![0u8; 65_536],
        }
    }

    /// A pair with default test configs (seeds 1 and 2) and link seed 0.
    #[must_use]
    pub fn default_pair() -> Pair {
        Pair::new(config(1), config(2), 0)
    }

    /// Sets both directions of the link.
    pub fn set_link(&mut self, link: Link) {
        self.ab = link;
        self.ba = link;
    }

    /// The node on `side`.
    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// The address of `side`.
    #[must_use]
    pub fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::A => self.a_addr,
            Side::B => self.b_addr,
        }
    }

    /// Drains both nodes: transmits onto the link, events into the logs.
    pub fn drain(&mut self) {
        for side in [Side::A, Side::B] {
            self.drain_side(side);
        }
    }

    fn drain_side(&mut self, side: Side) {
        let now = self.now;
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let t = self
                .node(side)
                .poll_transmit(now, &mut buf)
                .unwrap_or_else(|e| panic!("poll_transmit: {e}"));
            let Some(t) = t else {
                self.buf = buf;
                break;
            };
            let bytes = buf[..t.len].to_vec();
            self.buf = buf;
            assert_eq!(t.destination, self.addr(side.other()), "sent to a stranger");
            self.send(side, bytes);
        }
        while let Some(ev) = self.node(side).poll_event() {
            match side {
                Side::A => self.a_events.push(ev),
                Side::B => self.b_events.push(ev),
            }
        }
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < u64::from(ppm)
    }

    /// Puts `bytes` from `from` onto the link, subject to its faults.
    pub fn send(&mut self, from: Side, bytes: Vec<u8>) {
        self.wire_log.push((self.now, from, bytes.clone()));
        let bytes = match self.tap.as_mut() {
            Some(tap) => match tap(from, bytes) {
                Some(b) => b,
                None => return,
            },
            None => bytes,
        };
        let link = match from {
            Side::A => self.ab,
            Side::B => self.ba,
        };
        self.stats.sent += 1;
        if self.chance(link.loss_ppm) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.chance(link.duplicate_ppm) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter_ns = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
            let extra = Duration::from_nanos(self.rng.below(jitter_ns.saturating_add(1)));
            let at = self.now + link.latency + extra;
            self.seq += 1;
            self.in_flight
                .push(Reverse((at, self.seq, from.other(), bytes.clone())));
        }
    }

    /// Delivers `bytes` to `to` right now, as if it came from the other side.
    pub fn inject(&mut self, to: Side, bytes: &[u8]) {
        let from = self.addr(to.other());
        self.inject_from(to, from, bytes);
    }

    /// Delivers `bytes` to `to` right now from `from`.
    pub fn inject_from(&mut self, to: Side, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.node(to)
            .handle_datagram(now, from, bytes)
            .unwrap_or_else(|e| panic!("handle_datagram: {e}"));
        self.drain();
    }

    /// The next instant something happens: a delivery or a node deadline.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Instant> {
        let net = self.in_flight.peek().map(|Reverse((at, ..))| *at);
        let a = self.a.poll_timeout().map(|d| d.at);
        let b = self.b.poll_timeout().map(|d| d.at);
        [net, a, b].into_iter().flatten().min()
    }

    /// Advances to the next wake-up and processes everything due then. Returns `false` if
    /// nothing is scheduled at all.
    pub fn step(&mut self) -> bool {
        self.drain();
        let Some(at) = self.next_wakeup() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        while let Some(Reverse((at, ..))) = self.in_flight.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, to, bytes))) = self.in_flight.pop() else {
                break;
            };
            self.stats.delivered += 1;
            let from = self.addr(to.other());
            self.node(to)
                .handle_datagram(now, from, &bytes)
                .unwrap_or_else(|e| panic!("handle_datagram: {e}"));
            self.drain();
        }
        for side in [Side::A, Side::B] {
            let due = self.node(side).poll_timeout().is_some_and(|d| d.at <= now);
            if due {
                self.node(side)
                    .handle_timeout(now)
                    .unwrap_or_else(|e| panic!("handle_timeout: {e}"));
                self.drain();
            }
        }
        true
    }

    /// Runs until virtual time reaches `until` (or nothing is scheduled).
    pub fn run_until(&mut self, until: Instant) {
        while self.next_wakeup().is_some_and(|w| w <= until) {
            if !self.step() {
                break;
            }
        }
        self.now = self.now.max(until);
        self.drain();
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until `cond` holds or `limit` of virtual time passes; returns whether it held.
    pub fn run_until_cond(&mut self, limit: Duration, mut cond: impl FnMut(&Pair) -> bool) -> bool {
        let until = self.now + limit;
        loop {
            if cond(self) {
                return true;
            }
            match self.next_wakeup() {
                Some(w) if w <= until => {
                    self.step();
                }
                _ => {
                    self.run_until(until);
                    return cond(self);
                }
            }
        }
    }

    /// Whether `side` has seen `Connected`.
    #[must_use]
    pub fn connected(&self, side: Side) -> bool {
        self.events(side)
            .iter()
            .any(|e| matches!(e, Event::Connected { .. }))
    }

    /// The events `side` produced.
    #[must_use]
    pub fn events(&self, side: Side) -> &[Event] {
        match side {
            Side::A => &self.a_events,
            Side::B => &self.b_events,
        }
    }

    /// The datagrams `side` received, in order.
    #[must_use]
    pub fn datagrams(&self, side: Side) -> Vec<Vec<u8>> {
        self.events(side)
            .iter()
            .filter_map(|e| match e {
                Event::Datagram { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    /// The session `side` saw connect first.
    #[must_use]
    pub fn session(&self, side: Side) -> Option<proto_core::SessionId> {
        self.events(side).iter().find_map(|e| match e {
            Event::Connected { session, .. } => Some(*session),
            _ => None,
        })
    }

    /// A connects to B (IK when `ik`, else XX), runs until both sides are connected or `limit`
    /// passes; returns A's session id.
    pub fn connect(&mut self, ik: bool, limit: Duration) -> proto_core::SessionId {
        let spec = if ik {
            self.b.peer_spec()
        } else {
            proto_core::PeerSpec::any()
        };
        let now = self.now;
        let b_addr = self.b_addr;
        let s = self
            .a
            .connect(now, b_addr, spec)
            .unwrap_or_else(|e| panic!("connect: {e}"));
        self.drain();
        let ok = self.run_until_cond(limit, |p| p.connected(Side::A) && p.connected(Side::B));
        assert!(
            ok,
            "not connected within {limit:?}: a={:?} b={:?}",
            self.a_events, self.b_events
        );
        s
    }
}
