//! Replicated logs in the simulator under a Jepsen-style checker: random partitions (symmetric
//! and one-way), crashes that lose unsynced writes, restarts, and pauses, while a client writes
//! to whoever leads. After every step: never two leaders in one term, committed logs agree.
//! At the end, after healing: every acknowledged write is in every log, and the logs are equal.
//!
//! `LOG_SEEDS=n` (or `a..b`) sets the sweep (60 by default; the long mode is `LOG_SEEDS=5000`).

use std::time::Duration;

use io_sim::replog::{replog, run_and_check, LogParams};
use io_sim::scenarios::seed_range;
use io_sim::LinkConfig;
use proto_core::Instant;

#[test]
fn a_clean_run_commits_every_write() {
    let p = LogParams {
        chaos_until: Instant::from_millis(0),
        end: Instant::from_millis(8_000),
        ..LogParams::default()
    };
    let h = run_and_check(p).unwrap();
    assert_eq!(h.elections, 1, "one election, then a stable leader");
    assert!(h.acked.len() >= 100, "{}", h.acked.len());
    // Every write but those still in flight at the end was acknowledged.
    assert_eq!(h.abandoned, 0);
    assert!(
        h.attempted.len() - h.acked.len() <= 2,
        "{} of {}",
        h.acked.len(),
        h.attempted.len()
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let p = LogParams {
        seed: 9,
        end: Instant::from_millis(8_000),
        chaos_until: Instant::from_millis(6_000),
        ..LogParams::default()
    };
    let hash = |p: LogParams| {
        let (mut w, _) = replog(p);
        w.run_until(p.end).unwrap();
        w.trace().hash_hex()
    };
    assert_eq!(hash(p), hash(p));
}

#[test]
fn seed_sweep_with_partitions_crashes_and_pauses() {
    let mut elections = 0;
    let mut acked = 0;
    for seed in seed_range("LOG_SEEDS", 60) {
        let p = LogParams {
            seed,
            nodes: if seed % 3 == 0 { 5 } else { 3 },
            link: LinkConfig {
                loss_ppm: 10_000,
                jitter: Duration::from_millis(1),
                ..LinkConfig::with_latency(Duration::from_millis(2))
            },
            ..LogParams::default()
        };
        let h = run_and_check(p).unwrap_or_else(|e| panic!("{e}"));
        elections += h.elections;
        acked += h.acked.len();
    }
    assert!(acked > 0 && elections > 0);
}
