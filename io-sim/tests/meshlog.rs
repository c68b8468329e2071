//! Replicated logs over real nodes (encrypted sessions, log streams, a simulated disk), under
//! the same faults and checks as `replog.rs`.

use std::time::Duration;

use io_sim::meshlog::{meshlog, run_and_check};
use io_sim::replog::LogParams;
use io_sim::{HostId, LinkConfig};
use proto_core::Instant;

fn quiet(seed: u64) -> LogParams {
    LogParams {
        seed,
        chaos_until: Instant::from_millis(1_000),
        end: Instant::from_millis(8_000),
        ..LogParams::default()
    }
}

#[test]
fn a_clean_run_over_nodes_acknowledges_and_replicates_every_write() {
    let h = run_and_check(quiet(1)).unwrap();
    assert!(h.acked.len() > 50, "only {} acknowledged", h.acked.len());
    assert_eq!(h.leaders.len(), 1, "one term, one leader: {:?}", h.leaders);
    assert_eq!(h.abandoned, 0);
}

#[test]
fn the_same_seed_gives_the_same_trace_over_nodes() {
    let hash = |seed| {
        let (mut w, _) = meshlog(quiet(seed));
        w.run_until(Instant::from_millis(3_000)).unwrap();
        w.trace().hash()
    };
    assert_eq!(hash(3), hash(3));
    assert_ne!(hash(3), hash(4));
}

#[test]
fn leader_crash_over_nodes_fails_over_without_losing_an_acknowledged_write() {
    let p = quiet(5);
    let (mut w, history) = meshlog(p);
    w.run_until(Instant::from_millis(3_000)).unwrap();
    let leader = history
        .borrow()
        .leader_times
        .last()
        .map(|(_, h)| *h)
        .unwrap();
    let before = history.borrow().acked.len();
    w.crash(HostId(leader as u32));
    w.run_until(Instant::from_millis(5_000)).unwrap();
    let h = history.borrow().clone();
    let (at, new) = *h.leader_times.last().unwrap();
    assert_ne!(new, leader, "a new leader");
    assert!(at > Instant::from_millis(3_000));
    assert!(h.acked.len() > before, "writes continue after the failover");
    w.restart(HostId(leader as u32));
    w.run_until(p.end).unwrap();
    io_sim::replog::check_final(&w, &history.borrow(), &p).unwrap();
}

/// Seeds of random partitions (symmetric, one-way), crashes, restarts and pauses over nodes.
/// `MESHLOG_SEEDS=n` runs more.
#[test]
fn seed_sweep_over_nodes() {
    let n: u64 = std::env::var("MESHLOG_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut failed = Vec::new();
    for seed in 0..n {
        let p = LogParams {
            seed,
            nodes: if seed % 3 == 2 { 5 } else { 3 },
            chaos_until: Instant::from_millis(12_000),
            end: Instant::from_millis(20_000),
            link: LinkConfig {
                loss_ppm: 10_000,
                jitter: Duration::from_millis(1),
                ..LinkConfig::with_latency(Duration::from_millis(2))
            },
            ..LogParams::default()
        };
        if let Err(e) = run_and_check(p) {
            failed.push((seed, e));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
