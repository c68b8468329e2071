//! Streams end to end in the simulator: transfers under loss, reordering, duplication,
//! corruption, partitions and tail loss, checked byte for byte.

use std::time::Duration;

use io_sim::transfer::{transfer, TransferParams};
use io_sim::LinkConfig;
use proto_core::Instant;

fn link(latency_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(latency_ms),
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 512 * 1024,
        loss_ppm: (loss * 1e6) as u32,
        ..LinkConfig::default()
    }
}

#[test]
fn a_lossless_transfer_completes() {
    let p = TransferParams {
        bytes: 4 << 20,
        link: link(10, 0.0),
        ..TransferParams::default()
    };
    let (mut w, out) = transfer(p);
    w.run_until(Instant::from_millis(20_000)).unwrap();
    let o = out.borrow().clone();
    println!("{o:?}");
    assert!(o.complete(p.bytes), "{o:?}");
}

fn run(p: TransferParams, limit_ms: u64) -> io_sim::transfer::TransferOutcome {
    let (mut w, out) = transfer(p);
    if let Err(f) = w.run_until(Instant::from_millis(limit_ms)) {
        panic!("seed {}: {f:?}", p.seed);
    }
    let o = out.borrow().clone();
    if std::env::var("SHOW").is_ok() {
        let n0 = w.machine(io_sim::HostId(0)).unwrap();
        let peer = io_sim::scenarios::identity(1).node_id();
        if let Some(s) = n0.session_with(&peer) {
            println!("sender transport: {:?}", n0.stream_transport(s));
        }
    }
    o
}

#[test]
fn probe_loss_levels() {
    for loss in [0.01, 0.1, 0.3] {
        for cc in [0, 1] {
            let p = TransferParams {
                bytes: 2 << 20,
                link: link(10, loss),
                tweak: if cc == 0 {
                    |_| {}
                } else {
                    |c| c.streams.congestion = proto_core::stream::Congestion::NewReno
                },
                ..TransferParams::default()
            };
            let o = run(p, 120_000);
            let secs = o
                .finished_at
                .map(|f| (f - o.connected_at.unwrap()).as_secs_f64());
            println!(
                "loss {loss} cc {cc}: complete {} secs {secs:?} {o:?}",
                o.complete(p.bytes)
            );
        }
    }
}
