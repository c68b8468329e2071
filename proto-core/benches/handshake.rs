//! Full Noise IK handshakes per second: our `Node` (each provider, with the identity-binding
//! cache warm and cold) against raw `snow` doing the same pattern and payload sizes with its
//! default resolver, in one criterion group so the ratios come from the same run.
//!
//! `cargo bench -p proto-core --features aws-lc --bench handshake`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::{Config, Event, Identity, Instant, Node, Seed};

const NOW: Instant = Instant::from_millis(1);

fn a_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 1))
}
fn b_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 2))
}

fn node(seed: u64, provider: &SharedProvider, cache: usize) -> Node {
    let mut c = Config::new(Seed::from_u64(seed)).with_provider(provider.clone());
    c.binding_cache = cache;
    c.strict_drain = false;
    // Benchmarks run thousands of handshakes from one address.
    c.handshake_burst_per_source = u32::MAX;
    c.handshake_rate_per_source = u32::MAX;
    Node::new(c, Identity::from_seed(&Seed::from_u64(seed + 100)), NOW).unwrap()
}

/// Moves datagrams both ways until both nodes are quiet; returns how many sessions connected.
fn pump(a: &mut Node, b: &mut Node, buf: &mut [u8]) -> usize {
    let mut connected = 0;
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(NOW, buf).unwrap() {
            b.handle_datagram(NOW, a_addr(), &buf[..t.len]).unwrap();
            moved = true;
        }
        while let Some(t) = b.poll_transmit(NOW, buf).unwrap() {
            a.handle_datagram(NOW, b_addr(), &buf[..t.len]).unwrap();
            moved = true;
        }
        for n in [&mut *a, &mut *b] {
            while let Some(ev) = n.poll_event() {
                if matches!(ev, Event::Connected { .. }) {
                    connected += 1;
                }
            }
        }
        if !moved {
            return connected;
        }
    }
}

/// One IK handshake between `a` and `b`, both sides' work included. With `vouched` the
/// initiator is given B's identity and static key (PeerSpec::known) and checks no signature;
/// without, only the static key, and it checks B's signature.
fn handshake(a: &mut Node, b: &mut Node, buf: &mut [u8], vouched: bool) -> proto_core::SessionId {
    let spec = if vouched {
        b.peer_spec()
    } else {
        proto_core::PeerSpec {
            identity: None,
            static_key: Some(b.static_key()),
        }
    };
    let s = a.connect(NOW, b_addr(), spec).unwrap();
    assert_eq!(pump(a, b, buf), 2);
    s
}

fn providers() -> Vec<SharedProvider> {
    #[allow(unused_mut)]
    let mut v: Vec<SharedProvider> = vec![Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(Arc::new(proto_core::crypto::AwsLc));
    v
}

/// Raw snow, IK, default resolver: both sides, 96-byte payloads each way (our binding's size),
/// through to transport keys.
fn raw_snow(initiator_static: &[u8], responder_static: &[u8], responder_public: &[u8]) {
    let params: snow::params::NoiseParams = "Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
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
    let payload = [7u8; 96];
    let mut m1 = [0u8; 256];
    let mut m2 = [0u8; 256];
    let mut p = [0u8; 256];
    let n1 = i.write_message(&payload, &mut m1).unwrap();
    r.read_message(&m1[..n1], &mut p).unwrap();
    let n2 = r.write_message(&payload, &mut m2).unwrap();
    i.read_message(&m2[..n2], &mut p).unwrap();
    black_box(i.into_stateless_transport_mode().unwrap());
    black_box(r.into_stateless_transport_mode().unwrap());
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ik_handshake");
    g.throughput(Throughput::Elements(1));

    let kp_i = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .generate_keypair()
        .unwrap();
    let kp_r = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .generate_keypair()
        .unwrap();
    g.bench_function("raw_snow", |b| {
        b.iter(|| raw_snow(&kp_i.private, &kp_r.private, &kp_r.public))
    });

    let mut buf = vec![0u8; 1500];
    for provider in providers() {
        let name = provider.name();
        // Warm: the same two nodes handshake again and again (a returning peer); the identity
        // signature was verified once and is remembered. Each iteration closes both sessions.
        let mut a = node(1, &provider, 1024);
        let mut b = node(2, &provider, 1024);
        g.bench_function(format!("node/{name}/binding-cache-warm"), |bench| {
            bench.iter(|| {
                let s = handshake(&mut a, &mut b, &mut buf, true);
                a.close(NOW, s, 0).unwrap();
                pump(&mut a, &mut b, &mut buf);
            })
        });
        // Cold: fresh nodes every iteration (created outside the timing) with no cache. The
        // responder always checks the initiator's signature; the initiator checks the
        // responder's unless the caller vouched for its (identity, static key) pair.
        for (label, vouched) in [("vouched", true), ("unvouched", false)] {
            g.bench_function(format!("node/{name}/cold-{label}"), |bench| {
                bench.iter_batched(
                    || (node(1, &provider, 0), node(2, &provider, 0)),
                    |(mut a, mut b)| {
                        handshake(&mut a, &mut b, &mut buf, vouched);
                        (a, b)
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
