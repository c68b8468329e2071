//! Full Noise IK handshakes per second: our `Node` (each provider, with the identity-binding
//! cache on and off) against raw `snow` doing the same pattern and payload sizes with its
//! default resolver, in one criterion group so the ratios come from the same run.
//!
//! Both sides' work is inside the timed region in every line. For our stack one iteration is:
//! A `connect`s to B with `b.peer_spec()` (IK), and datagrams are moved between the two nodes
//! (INIT, RESPONSE, A's confirming PING, B's acknowledging PING) until both are quiet and both
//! have reported `Event::Connected`. The same two nodes are reused: after each handshake the
//! session is closed and the close drained *outside* the timed region, so what is timed is the
//! handshake alone. A separate group times `Node::new`, to show what fresh nodes per iteration
//! would have added.
//!
//! `cargo bench -p proto-core --features aws-lc --bench handshake`
//!
//! On a noisy shared machine the lines of one criterion run can drift by 10% against each
//! other (each line is measured in its own few seconds). With `HANDSHAKE_INTERLEAVED=ROUNDS`
//! set, the bench first prints a paired report: every variant runs a short batch in each round,
//! in rotating order, and the report gives each variant's median time and the median of its
//! per-round ratio to raw snow, plus the cost of the primitives the handshakes are made of.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};

use common::{median, providers};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::{Config, Event, Identity, Instant, Node, PeerSpec, Seed};

const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Our identity binding's size, which is what each side sends as its handshake payload.
const PAYLOAD: usize = 96;

fn a_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 1))
}
fn b_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 2))
}

/// Default config apart from the provider and the binding cache (`None`: the default size).
fn config(seed: u64, provider: &SharedProvider, cache: Option<usize>) -> Config {
    let mut c = Config::new(Seed::from_u64(seed)).with_provider(provider.clone());
    if let Some(cache) = cache {
        c.binding_cache = cache;
    }
    c
}

fn identity(seed: u64) -> Identity {
    Identity::from_seed(&Seed::from_u64(seed + 100))
}

/// Two nodes that handshake with each other again and again. Time moves on by 100 ms per
/// handshake so that the default per-source rate limit (20 initiations/s) is never hit.
struct Pair {
    a: Node,
    b: Node,
    now: Instant,
    buf: Vec<u8>,
}

impl Pair {
    fn new(provider: &SharedProvider, cache: Option<usize>) -> Pair {
        let now = Instant::from_millis(1);
        Pair {
            a: Node::new(config(1, provider, cache), identity(1), now).unwrap(),
            b: Node::new(config(2, provider, cache), identity(2), now).unwrap(),
            now,
            buf: vec![0u8; 1500],
        }
    }

    /// Moves datagrams both ways, draining each receiver's events right after each datagram
    /// (the drain rule), until both nodes are quiet. Returns the `Connected` events seen.
    fn pump(&mut self) -> usize {
        let Pair { a, b, now, buf } = self;
        let now = *now;
        let mut connected = 0;
        let mut count = |n: &mut Node| {
            while let Some(ev) = n.poll_event() {
                connected += usize::from(matches!(ev, Event::Connected { .. }));
            }
        };
        count(a);
        count(b);
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit(now, buf).unwrap() {
                b.handle_datagram(now, a_addr(), &buf[..t.len]).unwrap();
                count(b);
                moved = true;
                // Answer at once, so that neither side is fed input with output queued.
                while let Some(t) = b.poll_transmit(now, buf).unwrap() {
                    a.handle_datagram(now, b_addr(), &buf[..t.len]).unwrap();
                    count(a);
                }
            }
            while let Some(t) = b.poll_transmit(now, buf).unwrap() {
                a.handle_datagram(now, b_addr(), &buf[..t.len]).unwrap();
                count(a);
                moved = true;
            }
            if !moved {
                return connected;
            }
        }
    }

    /// One full IK handshake, both sides. Returns A's session.
    fn handshake(&mut self, spec: PeerSpec) -> proto_core::SessionId {
        let s = self.a.connect(self.now, b_addr(), spec).unwrap();
        let connected = self.pump();
        assert_eq!(connected, 2, "both sides must report Connected");
        s
    }

    /// Closes A's session (B learns it from A's CLOSE) and drains; moves time on.
    fn close(&mut self, s: proto_core::SessionId) {
        self.a.close(self.now, s, 0).unwrap();
        self.pump();
        assert_eq!(self.a.session_count(), 0);
        assert_eq!(self.b.session_count(), 0);
        self.now = self.now.saturating_add(Duration::from_millis(100));
    }

    /// `iters` handshakes, only the handshakes timed.
    fn timed(&mut self, iters: u64, spec: PeerSpec) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = WallInstant::now();
            let s = self.handshake(spec);
            total += t.elapsed();
            self.close(s);
        }
        total
    }
}

/// Raw snow, IK, default resolver: both sides built and run, 96-byte payloads each way,
/// through to transport keys.
fn raw_snow(initiator_static: &[u8], responder_static: &[u8], responder_public: &[u8]) {
    let params: snow::params::NoiseParams = PARAMS.parse().unwrap();
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(initiator_static)
        .unwrap()
        .remote_public_key(responder_public)
        .unwrap()
        .prologue(b"net/1\0\0\0")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params)
        .local_private_key(responder_static)
        .unwrap()
        .prologue(b"net/1\0\0\0")
        .unwrap()
        .build_responder()
        .unwrap();
    let payload = [7u8; PAYLOAD];
    let mut m1 = [0u8; 256];
    let mut m2 = [0u8; 256];
    let mut p = [0u8; 256];
    let n1 = i.write_message(&payload, &mut m1).unwrap();
    assert_eq!(r.read_message(&m1[..n1], &mut p).unwrap(), PAYLOAD);
    let n2 = r.write_message(&payload, &mut m2).unwrap();
    assert_eq!(i.read_message(&m2[..n2], &mut p).unwrap(), PAYLOAD);
    black_box(i.into_stateless_transport_mode().unwrap());
    black_box(r.into_stateless_transport_mode().unwrap());
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ik_handshake");
    g.throughput(Throughput::Elements(1));

    let kp_i = snow::Builder::new(PARAMS.parse().unwrap())
        .generate_keypair()
        .unwrap();
    let kp_r = snow::Builder::new(PARAMS.parse().unwrap())
        .generate_keypair()
        .unwrap();
    g.bench_function("raw_snow", |b| {
        b.iter(|| raw_snow(&kp_i.private, &kp_r.private, &kp_r.public))
    });

    for provider in providers() {
        let name = provider.name();
        // Cache on (the default size): B verified A's identity signature on the first
        // handshake and remembers it. A was given B's identity and static key (IK with
        // `peer_spec()`), so it checks no signature either: no ed25519 work at all.
        let mut pair = Pair::new(&provider, None);
        let first = pair.handshake(pair.b.peer_spec());
        pair.close(first);
        let verified = pair.b.stats().bindings_verified;
        let spec = pair.b.peer_spec();
        g.bench_function(format!("node/{name}/cache-on"), |bench| {
            bench.iter_custom(|iters| pair.timed(iters, spec))
        });
        assert_eq!(pair.b.stats().bindings_verified, verified, "cache missed");
        assert_eq!(pair.a.stats().bindings_verified, 0);

        // Cache off: B verifies A's signature on every handshake (the cold cost of a peer).
        let mut pair = Pair::new(&provider, Some(0));
        let spec = pair.b.peer_spec();
        g.bench_function(format!("node/{name}/cache-off"), |bench| {
            bench.iter_custom(|iters| pair.timed(iters, spec))
        });
        let st = (pair.a.stats(), pair.b.stats());
        assert_eq!(st.0.bindings_verified, 0);
        assert_eq!(st.1.bindings_verified, st.1.sessions_established);

        // Cache off, and A given only B's static key: both sides verify a signature.
        let mut pair = Pair::new(&provider, Some(0));
        let spec = PeerSpec {
            identity: None,
            static_key: Some(pair.b.static_key()),
        };
        g.bench_function(format!("node/{name}/cache-off-unvouched"), |bench| {
            bench.iter_custom(|iters| pair.timed(iters, spec))
        });
        let st = (pair.a.stats(), pair.b.stats());
        assert_eq!(st.0.bindings_verified, st.0.sessions_established);
        assert_eq!(st.1.bindings_verified, st.1.sessions_established);
    }
    g.finish();

    // What building nodes per iteration would have cost (identity derivation outside).
    let mut g = c.benchmark_group("node_new");
    for provider in providers() {
        g.bench_function(provider.name(), |b| {
            b.iter_batched(
                || (config(1, &provider, None), identity(1)),
                |(c, id)| Node::new(c, id, Instant::from_millis(1)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Microseconds per call of `f`, over `n` calls.
fn micros(n: u32, mut f: impl FnMut()) -> f64 {
    let t = WallInstant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

type Variant = (String, Box<dyn FnMut(u64) -> Duration>);

/// The paired report (see the module docs).
fn interleaved(rounds: usize) {
    const BATCH: u64 = 40;
    let kp_i = snow::Builder::new(PARAMS.parse().unwrap())
        .generate_keypair()
        .unwrap();
    let kp_r = snow::Builder::new(PARAMS.parse().unwrap())
        .generate_keypair()
        .unwrap();
    let mut variants: Vec<Variant> = vec![(
        "raw_snow".into(),
        Box::new(move |n| {
            let t = WallInstant::now();
            for _ in 0..n {
                raw_snow(&kp_i.private, &kp_r.private, &kp_r.public);
            }
            t.elapsed()
        }),
    )];
    for provider in providers() {
        let name = provider.name();
        for (label, cache, vouched) in [
            ("cache-on", None, true),
            ("cache-off", Some(0), true),
            ("cache-off-unvouched", Some(0), false),
        ] {
            let mut pair = Pair::new(&provider, cache);
            let spec = if vouched {
                pair.b.peer_spec()
            } else {
                PeerSpec {
                    identity: None,
                    static_key: Some(pair.b.static_key()),
                }
            };
            let first = pair.handshake(spec);
            pair.close(first);
            variants.push((
                format!("node/{name}/{label}"),
                Box::new(move |n| pair.timed(n, spec)),
            ));
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let mut this = vec![0.0; variants.len()];
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let d = (variants[i].1)(BATCH);
            this[i] = d.as_secs_f64() * 1e6 / BATCH as f64;
        }
        for i in 0..variants.len() {
            times[i].push(this[i]);
            ratios[i].push(this[0] / this[i]);
        }
    }
    println!("interleaved IK handshakes: {rounds} rounds of {BATCH} per variant");
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "  {name:<34} {:>7.1} us   {:>7.0} /s   {:.3}x raw snow (median of per-round ratios)",
            median(&mut times[i]),
            1e6 / median(&mut times[i]),
            median(&mut ratios[i]),
        );
    }

    // What the handshakes are made of: IK does 8 X25519 DHs and 2 ephemeral key generations
    // (both sides together); raw snow also derives each side's static public key (2 more base
    // multiplications), which our providers are handed precomputed; our cold handshake adds
    // an ed25519 verification per identity signature checked.
    let id = identity(1);
    let static_key = [9u8; 32];
    let binding = id.bind(&static_key);
    let mut verify = Vec::new();
    let mut node_new = vec![Vec::new(); 2];
    let mut dh = vec![Vec::new(); 2];
    let mut base = vec![Vec::new(); 2];
    for _ in 0..rounds {
        verify.push(micros(200, || {
            black_box(binding.verify(black_box(&static_key)).unwrap());
        }));
        for (i, provider) in providers().iter().enumerate() {
            let mut d = provider.noise_dh().unwrap();
            d.set(&[3u8; 32]);
            let peer = proto_core::crypto::x25519_public(&**provider, &[4u8; 32]).unwrap();
            let mut out = [0u8; 32];
            dh[i].push(micros(200, || d.dh(black_box(&peer), &mut out).unwrap()));
            base[i].push(micros(200, || {
                black_box(proto_core::crypto::x25519_public(
                    &**provider,
                    black_box(&[5u8; 32]),
                ));
            }));
            node_new[i].push(micros(20, || {
                let (c, id) = (config(1, provider, None), identity(1));
                drop(black_box(
                    Node::new(c, id, Instant::from_millis(1)).unwrap(),
                ));
            }));
        }
    }
    println!(
        "  ed25519 binding verify: {:.1} us (ed25519-dalek, any provider)",
        median(&mut verify)
    );
    for (i, provider) in providers().iter().enumerate() {
        println!(
            "  {}: X25519 DH {:.1} us, X25519 public key {:.1} us, Node::new {:.1} us",
            provider.name(),
            median(&mut dh[i]),
            median(&mut base[i]),
            median(&mut node_new[i]),
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Some(rounds) = std::env::var("HANDSHAKE_INTERLEAVED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
