//! CPU cost of nRPC: calls per CPU-second through two `Node`s with full encrypted sessions in
//! one thread, against a datagram ping-pong through the same sessions measured in the same run.
//!
//! - `pingpong/c<N>`: the baseline. A keeps N small datagrams in flight; B echoes each one
//!   back. One encrypted packet each way per exchange and nothing else: the least a
//!   request/response over these sessions can cost.
//! - `unary/c<N>`: A keeps N unary calls in flight (16-byte request, 16-byte reply); B
//!   answers each as it arrives. Each call opens a stream, carries CALL+MSG and MSG+END, is
//!   acknowledged and closes, with cancel-token-free options and the observer off.
//! - `stream`: one server-streaming call; B sends 64-byte messages as fast as A's automatic
//!   credit (256 in flight) allows. Baseline: the same number of 64-byte datagrams from B to
//!   A.
//!
//! Datagrams move in memory with no delay: the only limit is the CPU, so the figures are
//! calls (or messages) per CPU-second of both nodes together. Each node follows the run
//! loop, draining its events before its transmits so that a reply shares its packet with the
//! acknowledgement of the request (see `docs/rpc.md`).
//!
//! `cargo bench -p proto-core --features aws-lc --bench rpc` prints the paired table
//! (`RPC_BENCH_ROUNDS`, 7 by default; `RPC_BENCH_PROVIDER=aws-lc|rust` for one provider),
//! then runs the criterion group.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant as WallInstant;

use common::{median, providers};
use criterion::{criterion_group, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::rpc::{
    status, CallOptions, CallSpec, Credit, Misuse, RpcError, RpcEvent, ServiceSpec, Shape,
};
use proto_core::{Config, Event, Identity, Instant, Node, PeerSpec, Seed, SessionId};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 4000))
}

struct Pair {
    a: Node,
    b: Node,
    epoch: WallInstant,
    a_session: SessionId,
    b_session: SessionId,
    buf: Vec<u8>,
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    opts: CallOptions,
    /// Completions seen by A (replies, echoes, stream messages).
    done: u64,
    in_flight: usize,
    /// Server-streaming: B's call and how many messages it still owes.
    streaming: Option<(proto_core::rpc::CallId, u64)>,
}

const BODY: [u8; 16] = [0x42; 16];

impl Pair {
    fn new(provider: &SharedProvider) -> Pair {
        let epoch = WallInstant::now();
        let id = |n: u64| Identity::from_seed(&Seed::from_u64(n));
        let config = |n: u64| {
            let mut c = Config::new(Seed::from_u64(n)).with_provider(provider.clone());
            c.strict_drain = false;
            c
        };
        let now = Instant::ZERO;
        let mut a = Node::new(config(1), id(1), now).expect("node a");
        let mut b = Node::new(config(2), id(2), now).expect("node b");
        let spec = ServiceSpec::new("bench")
            .method("unary", Shape::Unary)
            .method("watch", Shape::ServerStreaming);
        b.serve(now, spec).expect("serve");
        let peer = PeerSpec::known(id(2).public(), b.static_key());
        let a_session = a.connect(now, addr(2), peer).expect("connect");
        let mut p = Pair {
            a,
            b,
            epoch,
            a_session,
            b_session: SessionId(0),
            buf: vec![0u8; 1500],
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            spare: Vec::new(),
            opts: CallOptions {
                credit: Credit::Auto(256),
                ..CallOptions::default()
            },
            done: 0,
            in_flight: 0,
            streaming: None,
        };
        for _ in 0..100 {
            p.step(&mut |_, _| {});
        }
        let b_id = p.b.node_id();
        assert!(p.a.providers("bench").contains(&b_id), "b announced");
        p.b_session = p.b.session_with(&p.a.node_id()).expect("b session");
        p
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn drain(
        node: &mut Node,
        now: Instant,
        buf: &mut [u8],
        out: &mut VecDeque<Vec<u8>>,
        spare: &mut Vec<Vec<u8>>,
    ) {
        while let Some(t) = node.poll_transmit(now, buf).expect("transmit") {
            let mut v = spare.pop().unwrap_or_default();
            v.clear();
            v.extend_from_slice(&buf[..t.len]);
            out.push_back(v);
        }
    }

    /// One round: timers, every datagram queued for B (B's events handled after each, then
    /// its transmits), then every datagram queued for A likewise. `on_a` sees A's events.
    fn step(&mut self, on_a: &mut dyn FnMut(&mut Pair, Event)) {
        let now = self.now();
        for node in [&mut self.a, &mut self.b] {
            if node.poll_timeout().is_some_and(|d| d.at <= now) {
                node.handle_timeout(now).expect("timeout");
            }
        }
        Self::drain(
            &mut self.a,
            now,
            &mut self.buf,
            &mut self.to_b,
            &mut self.spare,
        );
        Self::drain(
            &mut self.b,
            now,
            &mut self.buf,
            &mut self.to_a,
            &mut self.spare,
        );
        while let Some(d) = self.to_b.pop_front() {
            self.b.handle_datagram(now, addr(1), &d).expect("b input");
            self.spare.push(d);
            self.serve(now);
            Self::drain(
                &mut self.b,
                now,
                &mut self.buf,
                &mut self.to_a,
                &mut self.spare,
            );
        }
        while let Some(d) = self.to_a.pop_front() {
            self.a.handle_datagram(now, addr(2), &d).expect("a input");
            self.spare.push(d);
            while let Some(ev) = self.a.poll_event() {
                on_a(self, ev);
            }
            Self::drain(
                &mut self.a,
                now,
                &mut self.buf,
                &mut self.to_b,
                &mut self.spare,
            );
        }
    }

    /// B, the server: answers calls, echoes datagrams, feeds the stream.
    fn serve(&mut self, now: Instant) {
        while let Some(ev) = self.b.poll_event() {
            match ev {
                Event::Rpc(RpcEvent::Request(req)) => {
                    if req.shape == Shape::Unary {
                        let mut h = self.b.rpc_call(req.call).expect("call");
                        h.reply(now, &BODY).expect("reply");
                    } else if let Some((_, owed)) = &mut self.streaming {
                        self.streaming = Some((req.call, *owed));
                    }
                }
                Event::Rpc(RpcEvent::Writable { .. }) => {}
                Event::Datagram { data, .. } => {
                    self.b
                        .send_datagram(now, self.b_session, &data)
                        .expect("echo");
                }
                _ => {}
            }
        }
        self.feed_stream(now);
    }

    fn feed_stream(&mut self, now: Instant) {
        let Some((call, owed)) = &mut self.streaming else {
            return;
        };
        if call.0 == 0 {
            return;
        }
        let Ok(mut h) = self.b.rpc_call(*call) else {
            return;
        };
        while *owed > 0 {
            match h.send(now, &[7u8; 64]) {
                Ok(()) => *owed -= 1,
                Err(RpcError::Invalid(Misuse::WouldBlock)) => return,
                Err(e) => panic!("send: {e}"),
            }
        }
        h.finish(now, status::OK, "").expect("finish");
        self.streaming = None;
    }

    /// `calls` unary calls with `c` in flight.
    fn unary(&mut self, calls: u64, c: usize) {
        let target = self.done + calls;
        let peer = self.b.node_id();
        while self.done < target {
            let now = self.now();
            while self.in_flight < c {
                let spec = CallSpec {
                    service: "bench",
                    method: "unary",
                    shape: Shape::Unary,
                    body: Some(&BODY),
                    options: &self.opts,
                };
                self.a.call(now, &peer, spec).expect("call");
                self.in_flight += 1;
            }
            self.step(&mut |p, ev| {
                if let Event::Rpc(RpcEvent::Reply { result, .. }) = ev {
                    assert!(result.is_ok(), "call failed: {result:?}");
                    p.done += 1;
                    p.in_flight -= 1;
                }
            });
        }
    }

    /// `n` datagram round trips with `c` in flight.
    fn pingpong(&mut self, n: u64, c: usize) {
        let target = self.done + n;
        while self.done < target {
            let now = self.now();
            while self.in_flight < c {
                self.a
                    .send_datagram(now, self.a_session, &BODY)
                    .expect("datagram");
                self.in_flight += 1;
            }
            self.step(&mut |p, ev| {
                if let Event::Datagram { .. } = ev {
                    p.done += 1;
                    p.in_flight -= 1;
                }
            });
        }
    }

    /// One server-streaming call of `n` messages.
    fn stream(&mut self, n: u64) {
        let target = self.done + n;
        self.streaming = Some((proto_core::rpc::CallId(0), n));
        let peer = self.b.node_id();
        let spec = CallSpec {
            service: "bench",
            method: "watch",
            shape: Shape::ServerStreaming,
            body: Some(&BODY),
            options: &self.opts,
        };
        let now = self.now();
        self.a.call(now, &peer, spec).expect("call");
        let mut ended = false;
        while self.done < target || !ended {
            self.step(&mut |p, ev| match ev {
                Event::Rpc(RpcEvent::Message { .. }) => p.done += 1,
                Event::Rpc(RpcEvent::Ended { result, .. }) => {
                    assert!(result.is_ok());
                    ended = true;
                }
                _ => {}
            });
        }
    }

    /// `n` 64-byte datagrams from B to A (the stream's baseline).
    fn datagrams(&mut self, n: u64) {
        let target = self.done + n;
        let payload = [7u8; 64];
        while self.done < target {
            let now = self.now();
            let burst = (target - self.done).min(200);
            for _ in 0..burst {
                if self.b.send_datagram(now, self.b_session, &payload).is_err() {
                    break;
                }
            }
            Self::drain(
                &mut self.b,
                now,
                &mut self.buf,
                &mut self.to_a,
                &mut self.spare,
            );
            self.step(&mut |p, ev| {
                if let Event::Datagram { .. } = ev {
                    p.done += 1;
                }
            });
        }
    }
}

fn selected() -> Vec<SharedProvider> {
    let mut v = providers();
    if let Ok(only) = std::env::var("RPC_BENCH_PROVIDER") {
        v.retain(|p| p.name() == only);
    }
    v
}

/// Operations per second of `f` doing `n` of them.
fn rate(n: u64, f: &mut dyn FnMut()) -> f64 {
    let t = WallInstant::now();
    f();
    n as f64 / t.elapsed().as_secs_f64()
}

fn paired(rounds: usize) {
    const CALLS: u64 = 100_000;
    const MESSAGES: u64 = 400_000;
    println!("paired: {rounds} rounds, medians; both nodes on one core, no link delay");
    println!(
        "| provider | in flight | datagram ping-pongs/s | unary calls/s | calls / ping-pongs | datagrams per call |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for p in selected() {
        for c in [1usize, 4, 16, 64] {
            let mut pair = Pair::new(&p);
            pair.unary(CALLS / 10, c);
            pair.pingpong(CALLS / 10, c);
            let (mut pp, mut un, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            let before = pair.a.stats().datagrams_out + pair.b.stats().datagrams_out;
            pair.unary(CALLS, c);
            let per_call = (pair.a.stats().datagrams_out + pair.b.stats().datagrams_out - before)
                as f64
                / CALLS as f64;
            for round in 0..rounds {
                let mut run_pp = || pair.pingpong(CALLS, c);
                let (x, y);
                if round % 2 == 0 {
                    x = rate(CALLS, &mut run_pp);
                    y = rate(CALLS, &mut || pair.unary(CALLS, c));
                } else {
                    y = rate(CALLS, &mut || pair.unary(CALLS, c));
                    x = rate(CALLS, &mut || pair.pingpong(CALLS, c));
                }
                pp.push(x);
                un.push(y);
                ratio.push(y / x);
            }
            let u = median(&mut un);
            println!(
                "| {} | {c} | {:.0} | {:.0} | {:.2} | {per_call:.2} |",
                p.name(),
                median(&mut pp),
                u,
                median(&mut ratio)
            );
        }
        let mut pair = Pair::new(&p);
        pair.stream(MESSAGES / 10);
        pair.datagrams(MESSAGES / 10);
        let (mut st, mut dg, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let s = rate(MESSAGES, &mut || pair.stream(MESSAGES));
            let d = rate(MESSAGES, &mut || pair.datagrams(MESSAGES));
            st.push(s);
            dg.push(d);
            ratio.push(s / d);
        }
        println!(
            "| {} | stream | 64-byte datagrams/s {:.0} | server-streaming msgs/s {:.0} | {:.2} | |",
            p.name(),
            median(&mut dg),
            median(&mut st),
            median(&mut ratio)
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rpc_cpu");
    g.sample_size(10);
    const N: u64 = 20_000;
    for p in selected() {
        for conc in [1usize, 4, 16, 64] {
            g.throughput(Throughput::Elements(N));
            let mut pair = Pair::new(&p);
            g.bench_function(format!("pingpong/c{conc}/{}", p.name()), |b| {
                b.iter(|| pair.pingpong(N, conc))
            });
            let mut pair = Pair::new(&p);
            g.bench_function(format!("unary/c{conc}/{}", p.name()), |b| {
                b.iter(|| pair.unary(N, conc))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    let rounds = std::env::var("RPC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    if rounds > 0 {
        paired(rounds);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
