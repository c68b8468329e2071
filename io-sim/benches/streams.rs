//! Stream goodput and loss recovery in the simulator, in virtual time: figures that depend only
//! on the protocol (not on this machine's speed), so every run prints the same table.
//!
//! - Goodput on a 100 Mbit/s link with a 20 ms RTT and a one-BDP bottleneck queue, for the
//!   default (model-based) controller and for NewReno, at 0%, 1% and 10% random loss, as a
//!   fraction of the lossless ceiling `link × (1 − p)`.
//! - Recovery after a burst loss on the same link: everything from sender to receiver is dropped
//!   for 1, 10 or 100 ms in the middle of a bulk transfer. The longest read stall (for an
//!   ordered stream, from the hole reaching the receiver to its repair, burst included), and
//!   how long after the burst, in RTTs, until the receiver's read rate is back to 90% of what
//!   it was before (five one-RTT bins in a row).
//!
//! `cargo bench -p io-sim --bench streams` (`STREAM_BENCH_MIB` sets the transfer size, 64 by
//! default). Wall-clock time per run is printed too, for the simulator's own cost.

use std::time::{Duration, Instant as WallInstant};

use io_sim::scenarios::identity;
use io_sim::transfer::{transfer, TransferOutcome, TransferParams};
use io_sim::{Fault, HostId, LinkConfig, ScheduledFault, World};
use proto_core::stream::Congestion;
use proto_core::{Instant, Node};

const LINK_BPS: u64 = 100_000_000;
const ONE_WAY: Duration = Duration::from_millis(10);
const RTT: Duration = Duration::from_millis(20);

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        latency: ONE_WAY,
        bandwidth_bps: Some(LINK_BPS),
        // One bandwidth-delay product: 100 Mbit/s x 20 ms.
        queue_bytes: 250_000,
        loss_ppm: (loss * 1e6) as u32,
        ..LinkConfig::default()
    }
}

fn reno(c: &mut proto_core::Config) {
    c.streams.congestion = Congestion::NewReno;
}

fn model(_: &mut proto_core::Config) {}

struct Run {
    outcome: TransferOutcome,
    world: World<Node>,
    wall: Duration,
}

fn run(p: TransferParams, faults: &[ScheduledFault], limit: Duration) -> Run {
    let started = WallInstant::now();
    let (mut w, out) = transfer(p);
    w.keep_events(false);
    for f in faults {
        w.schedule(f.clone());
    }
    if let Err(f) = w.run_until(Instant::ZERO + limit) {
        panic!("seed {}: {f:?}", p.seed);
    }
    let outcome = out.borrow().clone();
    Run {
        outcome,
        world: w,
        wall: started.elapsed(),
    }
}

fn retransmits(w: &World<Node>) -> (u64, u64) {
    let n = w.machine(HostId(0)).expect("host 0");
    let peer = identity(1).node_id();
    n.session_with(&peer)
        .and_then(|s| n.stream_transport(s))
        .map_or((0, 0), |t| (t.retransmits, t.chunks_sent))
}

fn goodput_table(bytes: u64) {
    println!(
        "\nGoodput, 100 Mbit/s, 20 ms RTT, 250 kB queue, {} MiB per run, 3 seeds each",
        bytes >> 20
    );
    println!("(fraction of the ceiling link x (1 - p); payload per 1400-byte datagram is 1352 bytes, so 0.966 is the most any run can show)\n");
    println!("| controller | loss | goodput Mbit/s (mean) | fraction of ceiling (mean) | min | retransmitted | wall s/run |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, tweak) in [
        ("model (default)", model as fn(&mut proto_core::Config)),
        ("NewReno", reno),
    ] {
        for loss in [0.0, 0.01, 0.10] {
            let mut fracs = Vec::new();
            let mut rates = Vec::new();
            let mut retx = 0.0;
            let mut wall = Duration::ZERO;
            for seed in 1..=3u64 {
                let p = TransferParams {
                    seed,
                    bytes,
                    link: link(loss),
                    tweak,
                    ..TransferParams::default()
                };
                let r = run(p, &[], Duration::from_secs(900));
                let o = &r.outcome;
                let (Some(start), Some(end)) = (o.connected_at, o.finished_at) else {
                    panic!("{name} at {loss}: the transfer did not finish: {o:?}");
                };
                assert_eq!(o.received, bytes, "{name} at {loss}");
                let secs = (end - start).as_secs_f64();
                let rate = bytes as f64 * 8.0 / secs;
                rates.push(rate / 1e6);
                fracs.push(rate / (LINK_BPS as f64 * (1.0 - loss)));
                let (rt, sent) = retransmits(&r.world);
                retx += rt as f64 / sent.max(1) as f64;
                wall += r.wall;
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let min = fracs.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "| {name} | {:.0}% | {:.1} | {:.3} | {:.3} | {:.1}% | {:.2} |",
                loss * 100.0,
                mean(&rates),
                mean(&fracs),
                min,
                retx / 3.0 * 100.0,
                wall.as_secs_f64() / 3.0
            );
        }
    }
}

/// Bytes the receiver had read at `t` (the last progress point at or before it).
fn delivered_at(progress: &[(Instant, u64)], t: Instant) -> u64 {
    let i = progress.partition_point(|&(at, _)| at <= t);
    i.checked_sub(1).map_or(0, |i| progress[i].1)
}

fn recovery_table(bytes: u64) {
    println!("\nRecovery after a burst loss: every datagram from sender to receiver dropped for the burst, mid-transfer (at 2 s), same link, no random loss\n");
    println!("| controller | burst | datagrams dropped (whole run) | longest read stall | rate back to 90% after | retransmitted chunks |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let burst_at = Instant::from_millis(2_000);
    let rtt = |d: Duration| format!("{:.1} RTT", d.as_secs_f64() / RTT.as_secs_f64());
    for (name, tweak) in [
        ("model (default)", model as fn(&mut proto_core::Config)),
        ("NewReno", reno),
    ] {
        for burst_ms in [1u64, 10, 100] {
            let d = Duration::from_millis(burst_ms);
            let heal = burst_at + d;
            let faults = [
                ScheduledFault {
                    at: burst_at,
                    fault: Fault::Block {
                        from: vec![HostId(0)],
                        to: vec![HostId(1)],
                    },
                },
                ScheduledFault {
                    at: heal,
                    fault: Fault::HealAll,
                },
            ];
            let p = TransferParams {
                seed: 7,
                bytes,
                link: link(0.0),
                tweak,
                record_progress: true,
                ..TransferParams::default()
            };
            let r = run(p, &faults, Duration::from_secs(900));
            let o = &r.outcome;
            assert_eq!(o.received, bytes, "{name} burst {burst_ms} ms: {o:?}");
            let prog = &o.progress;
            // The rate the receiver read at over the 400 ms before the burst.
            let window = Duration::from_millis(400);
            let rate = (delivered_at(prog, burst_at) - delivered_at(prog, burst_at - window))
                as f64
                / window.as_secs_f64();
            // Rate back: the first one-RTT bin after the burst from which five bins in a row
            // each carry at least 90% of the pre-burst rate.
            let per_bin = 0.9 * rate * RTT.as_secs_f64();
            let bin = |k: u32| {
                let a = heal + RTT * k;
                (delivered_at(prog, a + RTT) - delivered_at(prog, a)) as f64
            };
            let back = (0..2_000u32).find(|&k| (k..k + 5).all(|j| bin(j) >= per_bin));
            let stall = prog
                .windows(2)
                .filter(|w| w[1].0 >= burst_at)
                .map(|w| w[1].0 - w[0].0)
                .max()
                .unwrap_or_default();
            // Burst drops, plus any bottleneck-queue drops in the whole run.
            let lost = r.world.stats().dropped;
            let (rt, _) = retransmits(&r.world);
            println!(
                "| {name} | {burst_ms} ms | {lost} | {} | {} | {rt} |",
                rtt(stall),
                back.map_or("not before the transfer ended".into(), |k| rtt(RTT * k)),
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used here.
    let mib: u64 = std::env::var("STREAM_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let bytes = mib << 20;
    goodput_table(bytes);
    recovery_table(bytes.min(32 << 20));
}
