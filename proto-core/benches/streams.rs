//! CPU cost of streams: bytes per CPU-second through an encrypted stream pair with no link
//! limit, against the raw AEAD limit measured in the same run.
//!
//! - `stream/<provider>`: two `Node`s in one thread, one reliable ordered stream from A to B.
//!   Datagrams go from one node's `poll_transmit` to the other's `handle_datagram` after a
//!   fixed 0.5 ms (no loss, no bandwidth limit: the only limit is the CPU), following the run
//!   loop: every input is followed by draining transmits and events. Time is the wall clock, as a driver would map
//!   it, so pacing and the congestion controller see the real delivery rate; when neither
//!   node has anything to do before its next deadline (pacing), the clock skips ahead to it
//!   instead of spinning, as a driver would sleep, so the time measured is CPU time. Both
//!   nodes' work is measured: framing, acknowledgements, loss tracking, congestion control,
//!   scheduling, packet protection, replay checks, copies in and out.
//! - `aead/<provider>`: the provider's packet key alone sealing and opening full-size DATA
//!   plaintexts (`max_packet_size` − 32 = 1368 bytes) in place, the ceiling for the crypto
//!   both nodes must do per packet.
//!
//! Throughput is in application bytes for the stream, plaintext bytes for the AEAD (so the
//! ratio also pays for the 16-byte STREAM header and the ACK packets).
//!
//! `cargo bench -p proto-core --features aws-lc --bench streams` (`STREAM_CPU_PROVIDER=aws-lc`
//! or `rust` runs one provider only; `STREAM_CPU_DEBUG=1` prints both nodes' counters after the
//! paired rounds).
//!
//! Before the criterion groups, a paired report runs each variant in short rotating batches
//! (`STREAM_CPU_ROUNDS`, 10 by default) and prints the median ratio of stream to AEAD
//! throughput per provider: one criterion line against another drifts by 5–10% on these
//! machines, the paired ratios much less.

mod common;

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant as WallInstant;

use common::{median, providers};
use criterion::{criterion_group, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::{
    Config, Event, Identity, Instant, Mode, Node, PeerSpec, Seed, SessionId, StreamError,
    StreamEvent, StreamId,
};

/// Bytes moved per measured batch.
const BATCH: u64 = 4 << 20;
/// DATA plaintext of a full packet at the default `max_packet_size` (1400 − 32).
const PLAINTEXT: usize = 1368;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 4000))
}

/// One-way delay of the in-memory link (a LAN-like 1 ms round trip, so that windows and
/// acknowledgements behave as on a real path rather than in lock step).
const ONE_WAY: std::time::Duration = std::time::Duration::from_micros(500);

/// Datagrams in flight from one node to the other (with their arrival times), in reused
/// buffers.
#[derive(Default)]
struct Wire {
    queue: VecDeque<(Instant, Vec<u8>, usize)>,
    spare: Vec<Vec<u8>>,
}

impl Wire {
    /// The next datagram that has arrived by `now`.
    fn arrived(&mut self, now: Instant) -> Option<(Vec<u8>, usize)> {
        if self.queue.front().is_some_and(|(at, _, _)| *at <= now) {
            self.queue.pop_front().map(|(_, buf, len)| (buf, len))
        } else {
            None
        }
    }

    /// Moves everything `from` has to send into the queue.
    fn drain(&mut self, from: &mut Node, now: Instant) {
        loop {
            let mut buf = self.spare.pop().unwrap_or_else(|| vec![0u8; 1500]);
            match from.poll_transmit(now, &mut buf) {
                Ok(Some(t)) => self.queue.push_back((now + ONE_WAY, buf, t.len)),
                Ok(None) => {
                    self.spare.push(buf);
                    return;
                }
                Err(e) => panic!("poll_transmit: {e}"),
            }
        }
    }
}

/// The providers built in, or only the one `STREAM_CPU_PROVIDER` names.
fn selected_providers() -> Vec<SharedProvider> {
    let mut v = providers();
    if let Ok(only) = std::env::var("STREAM_CPU_PROVIDER") {
        v.retain(|p| p.name() == only);
    }
    v
}

/// A and B with one stream from A to B.
struct StreamPair {
    a: Node,
    b: Node,
    to_b: Wire,
    to_a: Wire,
    epoch: WallInstant,
    /// Idle time skipped (see the module docs).
    skipped: std::time::Duration,
    a_session: SessionId,
    stream: StreamId,
    b_side: Option<(SessionId, StreamId)>,
    a_connected: bool,
    /// A's stream takes writes (set by its Writable event, cleared by WouldBlock).
    writable: bool,
    payload: Vec<u8>,
    read_buf: Vec<u8>,
    read: u64,
}

impl StreamPair {
    fn new(provider: &SharedProvider) -> StreamPair {
        let epoch = WallInstant::now();
        let now = Instant::ZERO;
        let id = |n: u64| Identity::from_seed(&Seed::from_u64(n));
        let config = |n: u64| Config::new(Seed::from_u64(n)).with_provider(provider.clone());
        let mut a = Node::new(config(1), id(1), now).expect("node a");
        let b = Node::new(config(2), id(2), now).expect("node b");
        let spec = PeerSpec::known(id(2).public(), b.static_key());
        let a_session = a.connect(now, addr(2), spec).expect("connect");
        let mut pair = StreamPair {
            a,
            b,
            to_b: Wire::default(),
            to_a: Wire::default(),
            epoch,
            skipped: std::time::Duration::ZERO,
            a_session,
            stream: StreamId(0),
            b_side: None,
            a_connected: false,
            writable: true,
            payload: vec![0x5a; 64 * 1024],
            read_buf: vec![0; 256 * 1024],
            read: 0,
        };
        // Handshake: run until A's session is up.
        for _ in 0..1000 {
            if pair.a_connected {
                break;
            }
            if pair.exchange() == 0 {
                pair.skip_idle();
            }
        }
        assert!(pair.a_connected, "the pair did not connect");
        let now = pair.now();
        pair.stream = pair
            .a
            .open_stream(now, a_session, Mode::Ordered)
            .expect("open");
        pair
    }

    fn now(&self) -> Instant {
        Instant::from_nanos((self.epoch.elapsed() + self.skipped).as_nanos() as u64)
    }

    /// Nothing moved: skip the clock to the next arrival or the earlier node deadline.
    fn skip_idle(&mut self) {
        let now = self.now();
        let arrivals = [self.to_a.queue.front(), self.to_b.queue.front()]
            .into_iter()
            .flatten()
            .map(|(at, _, _)| *at);
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .map(|d| d.at)
            .chain(arrivals)
            .min();
        if let Some(at) = next.filter(|at| *at > now) {
            self.skipped += at - now;
        }
    }

    /// One round of the run loop on both sides: timers, then every datagram that has arrived
    /// delivered, each followed by draining its receiver. Returns how many were delivered.
    fn exchange(&mut self) -> usize {
        let mut moved = 0;
        let now = self.now();
        for node in [&mut self.a, &mut self.b] {
            if node.poll_timeout().is_some_and(|d| d.at <= now) {
                node.handle_timeout(now).expect("timeout");
            }
        }
        self.to_b.drain(&mut self.a, now);
        self.to_a.drain(&mut self.b, now);
        loop {
            let mut any = false;
            while let Some((buf, len)) = self.to_b.arrived(now) {
                any = true;
                moved += 1;
                self.b
                    .handle_datagram(now, addr(1), &buf[..len])
                    .expect("b input");
                self.to_b.spare.push(buf);
                self.to_a.drain(&mut self.b, now);
                self.b_events(now);
            }
            while let Some((buf, len)) = self.to_a.arrived(now) {
                any = true;
                moved += 1;
                self.a
                    .handle_datagram(now, addr(2), &buf[..len])
                    .expect("a input");
                self.to_a.spare.push(buf);
                self.to_b.drain(&mut self.a, now);
                self.a_events();
            }
            if !any {
                return moved;
            }
        }
    }

    /// A's events: the session coming up, the stream taking writes again.
    fn a_events(&mut self) {
        while let Some(ev) = self.a.poll_event() {
            match ev {
                Event::Connected { .. } => self.a_connected = true,
                Event::Stream {
                    event: StreamEvent::Writable,
                    ..
                } => self.writable = true,
                _ => {}
            }
        }
    }

    /// B's events: learn the stream, read whatever is readable.
    fn b_events(&mut self, now: Instant) {
        while let Some(ev) = self.b.poll_event() {
            if let Event::Stream {
                session,
                stream,
                event: StreamEvent::Opened { .. },
            } = ev
            {
                self.b_side = Some((session, stream));
            }
        }
        let Some((session, stream)) = self.b_side else {
            return;
        };
        let Ok(mut h) = self.b.stream(session, stream) else {
            return;
        };
        loop {
            match h.read(&mut self.read_buf) {
                Ok(n) if n > 0 => self.read += n as u64,
                _ => break,
            }
        }
        // Reads grant credit: what they queued leaves with the next drain.
        self.to_a.drain(&mut self.b, now);
    }

    /// Moves `bytes` more from A's application to B's.
    fn transfer(&mut self, bytes: u64) {
        let target = self.read + bytes;
        while self.read < target {
            // As an application would: write until refused, then wait for Writable.
            if self.writable {
                if let Ok(mut h) = self.a.stream(self.a_session, self.stream) {
                    loop {
                        match h.write(&self.payload) {
                            Ok(_) => {}
                            Err(StreamError::WouldBlock) => break,
                            Err(e) => panic!("write: {e}"),
                        }
                    }
                }
                self.writable = false;
                self.a_events();
            }
            if self.exchange() == 0 {
                self.skip_idle();
            }
        }
    }
}

/// Seal + open of one full DATA plaintext with the provider's packet key, in place.
struct Aead {
    key: Box<dyn proto_core::crypto::PacketKey>,
    buf: Vec<u8>,
    n: u64,
}

impl Aead {
    fn new(provider: &SharedProvider) -> Aead {
        Aead {
            key: provider.packet_key(&[7u8; 32]),
            buf: vec![0x5a; PLAINTEXT],
            n: 0,
        }
    }

    fn packets(&mut self, count: u64) {
        for _ in 0..count {
            self.n += 1;
            let tag = self.key.seal(self.n, &[], &mut self.buf);
            self.key
                .open(self.n, &[], &mut self.buf, &tag)
                .expect("authentic");
        }
        black_box(&self.buf);
    }
}

/// The paired report: per provider, rounds of (AEAD batch, stream batch) in alternating order.
fn paired(rounds: usize) {
    println!(
        "paired: {rounds} rounds of {} MiB per variant, one core",
        BATCH >> 20
    );
    println!("| provider | raw AEAD seal+open MiB/s | stream MiB/s | stream / AEAD |");
    println!("| --- | ---: | ---: | ---: |");
    for p in selected_providers() {
        let mut pair = StreamPair::new(&p);
        let mut aead = Aead::new(&p);
        pair.transfer(BATCH); // warm up: leave startup
        let packets = BATCH / PLAINTEXT as u64;
        let (mut a_rates, mut s_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        // Bytes per second of one run of `f` moving `bytes`.
        let rate = |bytes: u64, f: &mut dyn FnMut()| {
            let t = WallInstant::now();
            f();
            bytes as f64 / t.elapsed().as_secs_f64()
        };
        for round in 0..rounds {
            let mut run_aead = || aead.packets(packets);
            let mut run_stream = || pair.transfer(BATCH);
            let aead_bytes = packets * PLAINTEXT as u64;
            // Alternate which goes first, so neither always runs on a warmer machine.
            let (a, s) = if round % 2 == 0 {
                let a = rate(aead_bytes, &mut run_aead);
                (a, rate(BATCH, &mut run_stream))
            } else {
                let s = rate(BATCH, &mut run_stream);
                (rate(aead_bytes, &mut run_aead), s)
            };
            a_rates.push(a / (1 << 20) as f64);
            s_rates.push(s / (1 << 20) as f64);
            ratios.push(s / a);
        }
        if std::env::var("STREAM_CPU_DEBUG").is_ok() {
            let (sa, sb) = (pair.a_session, pair.b_side.map(|(s, _)| s));
            eprintln!(
                "a {:?}\nb {:?}\na {:?}\nb {:?}",
                pair.a.stream_transport(sa),
                sb.and_then(|s| pair.b.stream_transport(s)),
                pair.a.stats(),
                pair.b.stats()
            );
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.3} |",
            p.name(),
            median(&mut a_rates),
            median(&mut s_rates),
            median(&mut ratios)
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_cpu");
    g.sample_size(10);
    for p in selected_providers() {
        let packets = BATCH / PLAINTEXT as u64;
        g.throughput(Throughput::Bytes(packets * PLAINTEXT as u64));
        let mut aead = Aead::new(&p);
        g.bench_function(format!("aead/{}", p.name()), |b| {
            b.iter(|| aead.packets(packets))
        });
        g.throughput(Throughput::Bytes(BATCH));
        let mut pair = StreamPair::new(&p);
        pair.transfer(BATCH);
        g.bench_function(format!("stream/{}", p.name()), |b| {
            b.iter(|| pair.transfer(BATCH))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    let rounds = std::env::var("STREAM_CPU_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    if rounds > 0 {
        paired(rounds);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
