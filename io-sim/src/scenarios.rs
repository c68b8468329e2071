//! Named scenarios: the worlds `net-sim` runs and the tests and benchmarks reuse.
//!
//! This module owns the scenario parameters (their command-line form included) and the world
//! each scenario builds: hosts, links, the workload as timed actions, and the invariants. It
//! never runs a world; callers step it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use proto_core::{Config, Event, Identity, Instant, Node, NodeId, PeerSpec, Seed};

use crate::fault::{format_schedule, ScheduledFault};
use crate::link::LinkConfig;
use crate::machine::{ContractError, Machine};
use crate::{HostId, HostSetup, World};

/// Parameters shared by the scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Scenario name (`mesh`, `echo`, `transfer` or `rpc`).
    pub scenario: String,
    /// World seed.
    pub seed: u64,
    /// Hosts.
    pub nodes: usize,
    /// Virtual duration of the run.
    pub duration: Duration,
    /// Every link's configuration.
    pub link: LinkConfig,
    /// Faults on schedule.
    pub faults: Vec<ScheduledFault>,
    /// Datagrams each host sends to each peer (mesh) or to the echo server (echo); KiB moved
    /// over one stream (transfer); calls made (rpc).
    pub messages: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            scenario: "mesh".into(),
            seed: 1,
            nodes: 3,
            duration: Duration::from_secs(30),
            link: LinkConfig::default(),
            faults: Vec::new(),
            messages: 20,
        }
    }
}

fn ppm_to_frac(ppm: u32) -> String {
    format!("{}", f64::from(ppm) / 1_000_000.0)
}

impl fmt::Display for Params {
    /// The `net-sim run` arguments that rebuild exactly this scenario.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.link;
        write!(
            f,
            "--scenario {} --seed {} --nodes {} --duration-ms {} --messages {} --latency-us {} --jitter-us {} --loss {} --dup {} --reorder {} --reorder-delay-us {} --corrupt {} --bandwidth-bps {} --queue-bytes {} --mtu {}",
            self.scenario,
            self.seed,
            self.nodes,
            self.duration.as_millis(),
            self.messages,
            l.latency.as_micros(),
            l.jitter.as_micros(),
            ppm_to_frac(l.loss_ppm),
            ppm_to_frac(l.duplicate_ppm),
            ppm_to_frac(l.reorder_ppm),
            l.reorder_delay.as_micros(),
            ppm_to_frac(l.corrupt_ppm),
            l.bandwidth_bps.unwrap_or(0),
            l.queue_bytes,
            l.mtu.unwrap_or(0),
        )?;
        if let Some(b) = l.burst_loss {
            write!(
                f,
                " --burst {},{},{},{}",
                b.good_to_bad_ppm, b.bad_to_good_ppm, b.loss_good_ppm, b.loss_bad_ppm
            )?;
        }
        if !self.faults.is_empty() {
            write!(f, " --faults '{}'", format_schedule(&self.faults))?;
        }
        Ok(())
    }
}

/// The address of host `i`.
#[must_use]
pub fn host_addr(i: usize) -> SocketAddr {
    // 2^24 hosts in 10.0.0.0/8, then more ports.
    let port = 4000 + (i >> 24) as u16;
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], port))
}

/// The identity of mesh host `i` (stable across restarts).
#[must_use]
pub fn identity(i: usize) -> Identity {
    Identity::from_seed(&Seed::from_u64(0x1d_0000 + i as u64))
}

/// The node ids of mesh hosts `0..n` (deriving an identity costs a scalar multiplication, so
/// per-datagram code looks them up here).
#[must_use]
pub fn node_ids(n: usize) -> std::rc::Rc<[NodeId]> {
    (0..n).map(|i| identity(i).node_id()).collect()
}

/// A `Node` for a host: config seeded from the host's setup, strict draining on.
pub fn node_factory(i: usize) -> impl FnMut(&HostSetup) -> Node {
    move |s: &HostSetup| {
        let mut c = Config::new(s.seed.clone());
        c.strict_drain = true;
        // Simulated worlds put many hosts behind one virtual router: no per-source limit.
        c.handshake_burst_per_source = u32::MAX;
        match Node::new(c, identity(i), s.now) {
            Ok(n) => n,
            Err(e) => panic!("node config is valid: {e}"),
        }
    }
}

/// [`node_factory`] with `tweak` applied to the config (congestion controller, windows...).
pub fn tweaked_node_factory(i: usize, tweak: fn(&mut Config)) -> impl FnMut(&HostSetup) -> Node {
    let mut make = node_factory(i);
    move |s: &HostSetup| {
        let n = make(s);
        let mut c = n.config().clone();
        tweak(&mut c);
        Node::new(c, identity(i), s.now).unwrap_or(n)
    }
}

/// A 100 Mbit/s link with `latency_ms` each way, a 256 KiB bottleneck queue and random loss
/// `loss` (a fraction).
#[must_use]
pub fn bottleneck_link(latency_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(latency_ms),
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 256 * 1024,
        loss_ppm: (loss * 1e6) as u32,
        ..LinkConfig::default()
    }
}

/// A random hostile [`bottleneck_link`] drawn from `r`: latency 1 to `max_latency_ms`, loss up
/// to `max_loss_ppm` (bursty one time in four), jitter up to 5 ms, up to 5% duplication, 10%
/// reordering (by up to 10 ms) and 2% corruption.
pub fn hostile_link(
    r: &mut proto_core::rng::Rng,
    max_latency_ms: u64,
    max_loss_ppm: u64,
) -> LinkConfig {
    let mut l = bottleneck_link(
        1 + r.below(max_latency_ms),
        r.below(max_loss_ppm + 1) as f64 / 1e6,
    );
    l.jitter = Duration::from_micros(r.below(5_000));
    l.duplicate_ppm = r.below(50_001) as u32;
    l.reorder_ppm = r.below(100_001) as u32;
    l.reorder_delay = Duration::from_micros(r.below(10_000));
    l.corrupt_ppm = r.below(20_001) as u32;
    if r.below(4) == 0 {
        l.burst_loss = Some(crate::GilbertElliott {
            good_to_bad_ppm: 10_000,
            bad_to_good_ppm: 200_000,
            loss_good_ppm: l.loss_ppm / 4,
            loss_bad_ppm: 800_000,
        });
    }
    l
}

/// The seeds a sweep runs: the environment variable `var` as `n` (seeds `0..n`) or `a..b`,
/// else `0..default`.
#[must_use]
pub fn seed_range(var: &str, default: u64) -> std::ops::Range<u64> {
    let spec = std::env::var(var).unwrap_or_default();
    if let Some((a, b)) = spec.split_once("..") {
        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
            return a..b;
        }
    }
    0..spec.parse().unwrap_or(default)
}

/// The mesh scenario: every host connects to every other (the lower index initiates, with IK),
/// and each sends `messages` datagrams to each peer, one every 250 ms, starting at 1 s. Sent
/// datagrams say who sent them and their number, so the invariant can check every delivery:
/// a datagram arrives from the peer that sent it, at most once per session.
#[must_use]
pub fn mesh(p: &Params) -> World<Node> {
    let mut w: World<Node> = World::new(p.seed);
    w.set_default_link(p.link);
    for i in 0..p.nodes {
        w.add_host(format!("n{i}"), host_addr(i), node_factory(i));
    }
    for i in 0..p.nodes {
        for j in (i + 1)..p.nodes {
            let (a, b) = (HostId(i as u32), HostId(j as u32));
            w.at(Instant::from_millis(10), move |w| {
                // A target that is down at this instant gets no connection attempt.
                if let Some(key) = w.machine(b).map(Node::static_key) {
                    let spec = PeerSpec::known(identity(j).public(), key);
                    let _ = w.with_machine(a, |m, now| m.connect(now, host_addr(j), spec));
                }
            });
        }
    }
    let nodes = p.nodes;
    let ids = node_ids(nodes);
    for k in 0..p.messages {
        let at = Instant::from_millis(1_000u64.saturating_add(250u64.saturating_mul(k as u64)));
        for i in 0..p.nodes {
            let ids = ids.clone();
            w.at(at, move |w| {
                let from = HostId(i as u32);
                let _ = w.with_machine(from, |m, now| send_round(m, now, i, k, &ids));
            });
        }
    }
    for f in &p.faults {
        w.schedule(f.clone());
    }
    // Every datagram names its sender and number; it must come from that sender's session
    // and arrive at most once per session. Checked as each event happens.
    let mut seen = std::collections::BTreeSet::new();
    w.on_event(move |w, h, ev| {
        if let Err(e) = check_datagram(&mut seen, &ids, h, ev) {
            w.violation(e);
        }
    });
    w
}

/// Host `i` sends datagram number `k` to every established peer.
fn send_round(m: &mut Node, now: Instant, i: usize, k: usize, ids: &[NodeId]) {
    let peers: Vec<_> = ids
        .iter()
        .enumerate()
        .filter_map(|(j, id)| m.session_with(id).map(|s| (j, s)))
        .collect();
    for (j, s) in peers {
        let msg = format!("{i}->{j}#{k}");
        let _ = m.send_datagram(now, s, msg.as_bytes());
    }
}

type Seen = std::collections::BTreeSet<(HostId, proto_core::SessionId, Vec<u8>)>;

fn check_datagram(seen: &mut Seen, ids: &[NodeId], h: HostId, ev: &Event) -> Result<(), String> {
    let Event::Datagram {
        session,
        peer,
        data,
    } = ev
    else {
        return Ok(());
    };
    let j = h.0 as usize;
    let text = String::from_utf8_lossy(data);
    let Some((from, rest)) = text.split_once("->") else {
        return Err(format!("host {j} got a datagram it cannot parse: {text:?}"));
    };
    let from: usize = from
        .parse()
        .map_err(|_| format!("bad sender in {text:?}"))?;
    if ids.get(from) != Some(peer) {
        return Err(format!("host {j} got {text:?} from the wrong peer"));
    }
    if !rest.starts_with(&format!("{j}#")) {
        return Err(format!("host {j} got {text:?} addressed elsewhere"));
    }
    if !seen.insert((h, *session, data.clone())) {
        return Err(format!("host {j} got {text:?} twice on {session}"));
    }
    Ok(())
}

/// Counts how many (host, peer) pairs are connected at the end of a mesh run.
#[must_use]
pub fn mesh_connected_pairs(w: &World<Node>, nodes: usize) -> usize {
    let ids = node_ids(nodes);
    (0..nodes)
        .filter_map(|i| w.machine(HostId(i as u32)))
        .map(|m| ids.iter().filter(|id| m.session_with(id).is_some()).count())
        .sum()
}

/// A trivial machine for raw simulator speed: the client sends `count` datagrams to the server
/// one per millisecond; the server echoes each back.
#[derive(Debug)]
pub struct Echo {
    server: Option<SocketAddr>,
    remaining: usize,
    next: Instant,
    out: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    events: std::collections::VecDeque<usize>,
    /// Echoes received (client) or datagrams echoed (server).
    pub count: usize,
}

impl Echo {
    /// A server.
    #[must_use]
    pub fn server() -> Echo {
        Echo {
            server: None,
            remaining: 0,
            next: Instant::MAX,
            out: Default::default(),
            events: Default::default(),
            count: 0,
        }
    }

    /// A client sending `count` datagrams to `server` from `start`.
    #[must_use]
    pub fn client(server: SocketAddr, count: usize, start: Instant) -> Echo {
        Echo {
            server: Some(server),
            remaining: count,
            next: start,
            out: Default::default(),
            events: Default::default(),
            count: 0,
        }
    }
}

impl Machine for Echo {
    type Event = usize;

    fn handle_datagram(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ContractError> {
        self.count += 1;
        if self.server.is_none() {
            self.out.push_back((from, bytes.to_vec()));
        } else {
            self.events.push_back(bytes.len());
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), ContractError> {
        if let Some(server) = self.server {
            while self.remaining > 0 && self.next <= now {
                self.out.push_back((server, vec![0xEC; 64]));
                self.remaining -= 1;
                self.next += Duration::from_millis(1);
            }
        }
        Ok(())
    }

    fn poll_transmit(
        &mut self,
        _now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, ContractError> {
        crate::machine::pop_datagram(&mut self.out, buf)
    }

    fn poll_event(&mut self) -> Option<usize> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.remaining > 0).then_some(self.next)
    }
}

/// The echo scenario: host 0 serves, hosts 1.. each send `messages` datagrams.
#[must_use]
pub fn echo(p: &Params) -> World<Echo> {
    let mut w: World<Echo> = World::new(p.seed);
    w.set_default_link(p.link);
    w.keep_events(false);
    w.add_host("server", host_addr(0), |_| Echo::server());
    let count = p.messages;
    for i in 1..p.nodes.max(2) {
        w.add_host(format!("c{i}"), host_addr(i), move |s| {
            Echo::client(host_addr(0), count, s.now + Duration::from_millis(1))
        });
    }
    for f in &p.faults {
        w.schedule(f.clone());
    }
    w
}

/// `transfer`: host 0 moves `messages` KiB to host 1 over one reliable ordered stream (the
/// [`crate::transfer`] workload, every byte checked as it is read), under the scenario's links
/// and faults. Needs exactly two nodes. At the end of the run the transfer must have finished,
/// or failed with both ends told (a reset on each side, the receiver's only if it ever heard
/// of the stream); anything else (a stall) is a violation.
pub fn transfer(p: &Params) -> World<Node> {
    let params = crate::transfer::TransferParams {
        seed: p.seed,
        bytes: (p.messages as u64).saturating_mul(1024),
        link: p.link,
        ..crate::transfer::TransferParams::default()
    };
    let (mut w, out) = crate::transfer::transfer(params);
    for f in &p.faults {
        w.schedule(f.clone());
    }
    let bytes = params.bytes;
    let end = (Instant::ZERO + p.duration).saturating_sub(Duration::from_nanos(1));
    w.at(end, move |w| {
        let o = out.borrow();
        if !o.complete(bytes) && !o.failed_and_told() {
            let message = format!(
                "transfer neither finished nor failed: {} of {bytes} bytes read, sender reset {:?}, receiver reset {:?}",
                o.received, o.sender_reset, o.receiver_reset
            );
            drop(o);
            w.violation(message);
        }
    });
    w
}

/// `rpc`: host 0 makes `messages` nRPC calls of all four shapes to `nodes − 1` servers
/// through `call_service` (the [`crate::rpc`] workload, every answer checked as it arrives;
/// 8 in flight, 10 s deadlines), under the scenario's links and faults. At the end of the run
/// every call that started more than its deadline (plus a second) earlier must have resolved;
/// one still waiting is a violation (a hang).
pub fn rpc(p: &Params) -> World<Node> {
    let params = crate::rpc::RpcParams {
        seed: p.seed,
        servers: p.nodes.saturating_sub(1).max(1),
        calls: p.messages,
        link: p.link,
        via_service: true,
        deadline: Some(Duration::from_secs(10)),
        ..crate::rpc::RpcParams::default()
    };
    let (mut w, out) = crate::rpc::rpc(params);
    for f in &p.faults {
        w.schedule(f.clone());
    }
    let end = (Instant::ZERO + p.duration).saturating_sub(Duration::from_nanos(1));
    let deadline = params.deadline.unwrap_or_default();
    w.at(end, move |w| {
        let o = out.borrow();
        let hung = o.unresolved_since(end.saturating_sub(deadline + Duration::from_secs(1)));
        if hung > 0 {
            let message = format!(
                "{hung} of {} calls never resolved past their deadline ({} ok, {} failed)",
                o.started,
                o.ok,
                o.failed.len()
            );
            drop(o);
            w.violation(message);
        }
    });
    w
}
