//! nRPC end to end in the simulator: calls of all four shapes under loss, reordering,
//! duplication and corruption, each answer checked as it arrives; deadlines on both sides;
//! a server crashing mid-call; `call_service` over one and several providers; cancellation
//! under loss; and a seed sweep over hostile links.
//!
//! `RPC_SEEDS=n` (or `a..b`) sets how many seeds the sweep runs (100 by default; the long mode is `RPC_SEEDS=5000`).

use std::time::Duration;

use io_sim::rpc::{rpc, RpcOutcome, RpcParams};
use io_sim::scenarios::{bottleneck_link, hostile_link, seed_range};
use io_sim::{Fault, HostId, LinkConfig, ScheduledFault};
use proto_core::rpc::{RpcError, Shape};
use proto_core::Instant;

fn link(latency_ms: u64, loss: f64) -> LinkConfig {
    bottleneck_link(latency_ms, loss)
}

fn run_with(p: RpcParams, faults: &[ScheduledFault], limit_ms: u64) -> RpcOutcome {
    let (mut w, out) = rpc(p);
    for f in faults {
        w.schedule(f.clone());
    }
    if let Err(f) = w.run_until(Instant::from_millis(limit_ms)) {
        panic!("seed {}: {f:?}", p.seed);
    }
    let o = out.borrow().clone();
    o
}

fn run(p: RpcParams, limit_ms: u64) -> RpcOutcome {
    run_with(p, &[], limit_ms)
}

#[test]
fn every_shape_on_a_clean_link() {
    let p = RpcParams {
        calls: 400,
        link: link(5, 0.0),
        ..RpcParams::default()
    };
    let o = run(p, 60_000);
    assert_eq!((o.started, o.ok), (400, 400), "{o:?}");
    assert!(o.failed.is_empty());
    // 8 calls in flight on a 10 ms round trip: far quicker than 400 calls one after another.
    let done = o.finished_at.expect("finished");
    assert!(done < Instant::from_millis(10 + 400 * 10 / 2), "{done:?}");
}

#[test]
fn every_shape_under_loss_reordering_duplication_and_corruption() {
    for seed in 1..=4 {
        let mut l = link(10, 0.05);
        l.jitter = Duration::from_millis(2);
        l.reorder_ppm = 50_000;
        l.reorder_delay = Duration::from_millis(8);
        l.duplicate_ppm = 20_000;
        l.corrupt_ppm = 10_000;
        let p = RpcParams {
            seed,
            calls: 200,
            link: l,
            stream_len: 40,
            ..RpcParams::default()
        };
        let o = run(p, 120_000);
        // With a 20 s deadline and 5% loss every call gets through, answer checked.
        assert_eq!((o.started, o.ok), (200, 200), "seed {seed}: {:?}", o.failed);
    }
}

#[test]
fn deadlines_expire_on_both_sides() {
    // Server-streaming calls that cannot finish in time on a 1 Mbit/s link: the caller's
    // timer and the server's (set from the remaining time the call carried) both fire, and
    // both sides report a timeout.
    let mut l = link(50, 0.0);
    l.bandwidth_bps = Some(1_000_000);
    let p = RpcParams {
        calls: 20,
        concurrency: 20,
        link: l,
        shapes: &[Shape::ServerStreaming],
        stream_len: 5_000,
        deadline: Some(Duration::from_millis(300)),
        ..RpcParams::default()
    };
    let o = run(p, 10_000);
    assert_eq!(o.started, 20);
    assert_eq!(o.unresolved(), 0);
    assert_eq!(o.failed.len(), 20, "{o:?}");
    assert!(
        o.failed.iter().all(|(_, e)| *e == RpcError::Timeout),
        "{o:?}"
    );
    assert_eq!(
        o.server_deadlines, 20,
        "every server call ended by its deadline"
    );
}

#[test]
fn a_server_crash_mid_call_never_leaves_a_call_hanging() {
    for deadline in [Some(Duration::from_secs(3)), None] {
        let p = RpcParams {
            calls: 1_000,
            concurrency: 16,
            link: link(10, 0.01),
            stream_len: 200,
            deadline,
            ..RpcParams::default()
        };
        let crash = [ScheduledFault {
            at: Instant::from_millis(400),
            fault: Fault::Crash(HostId(1)),
        }];
        let o = run_with(p, &crash, 120_000);
        // Calls in flight at the crash end with Timeout (their deadline) or Transport (the
        // session's idle timeout, 35 s, when there is no deadline); none hangs, and nothing
        // after the crash can start (NoRoute is retried by the workload, not counted).
        assert!(o.ok > 0, "some calls finished before the crash");
        assert_eq!(o.unresolved(), 0, "deadline {deadline:?}: {o:?}");
        assert!(!o.failed.is_empty());
        for (n, e) in &o.failed {
            let allowed = match deadline {
                Some(_) => matches!(e, RpcError::Timeout | RpcError::Transport(_)),
                None => matches!(e, RpcError::Transport(_)),
            };
            assert!(allowed, "call {n}: {e}");
        }
    }
}

#[test]
fn call_service_spreads_over_several_providers_and_uses_one() {
    let p = RpcParams {
        servers: 3,
        calls: 300,
        via_service: true,
        link: link(5, 0.0),
        ..RpcParams::default()
    };
    let o = run(p, 60_000);
    assert_eq!(o.ok, 300, "{:?}", o.failed);
    // Equal links: near-equal RTTs take turns.
    assert_eq!(o.served.len(), 3, "{:?}", o.served);
    assert!(o.served.values().all(|n| *n >= 30), "{:?}", o.served);
    let one = RpcParams {
        servers: 1,
        via_service: true,
        calls: 50,
        ..p
    };
    let o = run(one, 60_000);
    assert_eq!(o.ok, 50);
    assert_eq!(o.served.get(&1), Some(&50));
}

#[test]
fn call_service_prefers_the_nearest_provider() {
    let p = RpcParams {
        servers: 2,
        calls: 100,
        via_service: true,
        concurrency: 1,
        ..RpcParams::default()
    };
    let (mut w, out) = rpc(p);
    // Host 1 is 40 ms away, host 2 is 2 ms away.
    w.set_link_both(HostId(0), HostId(1), link(40, 0.0));
    w.set_link_both(HostId(0), HostId(2), link(2, 0.0));
    w.run_until(Instant::from_millis(60_000)).unwrap();
    let o = out.borrow();
    assert_eq!(o.ok, 100);
    let near = o.served.get(&2).copied().unwrap_or(0);
    assert!(near >= 95, "{:?}", o.served);
}

#[test]
fn cancellation_under_loss_reaches_the_servers() {
    let p = RpcParams {
        calls: 120,
        cancel_every: 3,
        link: link(10, 0.03),
        stream_len: 30,
        shapes: &[Shape::ServerStreaming, Shape::Duplex],
        ..RpcParams::default()
    };
    let o = run(p, 120_000);
    assert_eq!(o.unresolved(), 0);
    let cancelled = o
        .failed
        .iter()
        .filter(|(_, e)| *e == RpcError::Cancelled)
        .count();
    assert_eq!(
        cancelled, 40,
        "every third call cancelled itself: {:?}",
        o.failed
    );
    assert_eq!(o.ok, 80);
    // The CANCELs crossed a lossy link (RESETs are repeated until acknowledged).
    assert_eq!(o.server_cancels, 40);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let p = RpcParams {
        calls: 100,
        link: link(5, 0.05),
        ..RpcParams::default()
    };
    let hash = |p: RpcParams| {
        let (mut w, _) = rpc(p);
        w.run_until(Instant::from_millis(30_000)).unwrap();
        w.trace().hash_hex()
    };
    assert_eq!(hash(p), hash(p));
    assert_ne!(hash(p), hash(RpcParams { seed: 2, ..p }));
}

#[test]
fn seed_sweep_over_hostile_links() {
    for seed in seed_range("RPC_SEEDS", 100) {
        let mut r = proto_core::Seed::from_u64(seed).rng("rpc-sweep", 0);
        let l = hostile_link(&mut r, 30, 150_000);
        let p = RpcParams {
            seed,
            calls: 60,
            concurrency: 1 + r.below(16) as usize,
            stream_len: 1 + r.below(40) as u32,
            cancel_every: r.below(2) as usize * 5,
            deadline: Some(Duration::from_secs(10)),
            link: l,
            ..RpcParams::default()
        };
        let o = run(p, 300_000);
        // Every call resolved, each success checked message by message; failures only in the
        // forms the contract allows (the workload refuses any other).
        assert_eq!(o.started, 60, "seed {seed} {l:?}: {o:?}");
        assert_eq!(o.unresolved(), 0, "seed {seed} {l:?}: {o:?}");
        if l.loss_ppm < 50_000 && l.burst_loss.is_none() {
            let hard = o
                .failed
                .iter()
                .filter(|(_, e)| *e != RpcError::Cancelled)
                .count();
            assert_eq!(hard, 0, "seed {seed} {l:?}: {:?}", o.failed);
        }
    }
}

#[test]
fn call_service_moves_off_a_crashed_provider() {
    // Three providers; one crashes. Its session lives on until the idle timeout, but once it
    // has answered nothing through a probe and a timeout, `call_service` stops picking it:
    // only the calls already in flight to it fail (by their deadline).
    let p = RpcParams {
        servers: 3,
        calls: 1_500,
        concurrency: 8,
        via_service: true,
        link: link(5, 0.0),
        deadline: Some(Duration::from_secs(3)),
        ..RpcParams::default()
    };
    let crash = [ScheduledFault {
        at: Instant::from_millis(400),
        fault: Fault::Crash(HostId(1)),
    }];
    let o = run_with(p, &crash, 20_000);
    assert_eq!(o.started, 1_500, "{o:?}");
    assert_eq!(o.unresolved(), 0);
    assert!(o.failed.len() <= 16, "{:?}", o.failed);
    assert!(
        o.finished_at.unwrap() < Instant::from_millis(10_000),
        "{o:?}"
    );
}
