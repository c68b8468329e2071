//! Simulated datagram deliveries per wall-clock second: with trivial echo machines (the
//! simulator's own cost) and with full encrypted `Node` sessions.
//!
//! `cargo bench -p io-sim --bench sim`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use io_sim::scenarios::{self, Params};
use io_sim::LinkConfig;
use proto_core::Instant;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("deliveries");
    g.sample_size(10);

    // 10 clients x 5,000 datagrams, each echoed: 100,000 deliveries per run.
    let echo = Params {
        scenario: "echo".into(),
        nodes: 11,
        messages: 5_000,
        duration: Duration::from_secs(10),
        link: LinkConfig::with_latency(Duration::from_millis(5)),
        ..Params::default()
    };
    let mut w = scenarios::echo(&echo);
    w.run_until(Instant::ZERO + echo.duration).unwrap();
    g.throughput(Throughput::Elements(w.stats().delivered));
    g.bench_function("echo-machines", |b| {
        b.iter(|| {
            let mut w = scenarios::echo(&echo);
            w.run_until(Instant::ZERO + echo.duration).unwrap();
            w.stats().delivered
        })
    });

    // 6 nodes, full mesh of encrypted sessions (15 handshakes), 200 datagrams per direction.
    let mesh = Params {
        nodes: 6,
        messages: 200,
        duration: Duration::from_secs(60),
        ..Params::default()
    };
    let mut w = scenarios::mesh(&mesh);
    w.keep_events(false);
    w.run_until(Instant::ZERO + mesh.duration).unwrap();
    g.throughput(Throughput::Elements(w.stats().delivered));
    g.bench_function("node-sessions", |b| {
        b.iter(|| {
            let mut w = scenarios::mesh(&mesh);
            w.keep_events(false);
            w.run_until(Instant::ZERO + mesh.duration).unwrap();
            w.stats().delivered
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
