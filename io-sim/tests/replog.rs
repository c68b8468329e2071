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

/// A world with no random faults, for the seed's named scenarios.
fn quiet(seed: u64, nodes: usize, end_ms: u64) -> LogParams {
    LogParams {
        seed,
        nodes,
        chaos_until: Instant::ZERO,
        end: Instant::from_millis(end_ms),
        ..LogParams::default()
    }
}

fn at(ms: u64, fault: io_sim::Fault) -> io_sim::ScheduledFault {
    io_sim::ScheduledFault {
        at: Instant::from_millis(ms),
        fault,
    }
}

/// The host that leads now (the test's precondition: exactly one does).
fn leader_of(w: &io_sim::World<io_sim::replog::LogHost>, n: u32) -> u32 {
    (0..n)
        .find(|i| {
            w.machine(io_sim::HostId(*i))
                .is_some_and(|m| m.replica.role() == proto_core::replication::Role::Leader)
        })
        .expect("a leader")
}

fn commit_of(w: &io_sim::World<io_sim::replog::LogHost>, h: u32) -> u64 {
    w.machine(io_sim::HostId(h))
        .map_or(0, |m| m.replica.commit())
}

#[test]
fn an_isolated_replica_does_not_advance_and_catches_up_after_the_heal() {
    use io_sim::{Fault, HostId};
    let p = quiet(3, 3, 12_000);
    let (mut w, _) = replog(p);
    w.run_until(Instant::from_millis(2_000)).unwrap();
    let leader = leader_of(&w, 3);
    let lonely = (leader + 1) % 3;
    w.schedule(at(
        2_000,
        Fault::Partition {
            a: vec![HostId(lonely)],
            b: vec![HostId((lonely + 1) % 3), HostId((lonely + 2) % 3)],
        },
    ));
    w.run_until(Instant::from_millis(2_100)).unwrap();
    let frozen = commit_of(&w, lonely);
    w.run_until(Instant::from_millis(5_000)).unwrap();
    assert_eq!(
        commit_of(&w, lonely),
        frozen,
        "an isolated replica commits nothing new"
    );
    assert!(
        commit_of(&w, leader) > frozen + 20,
        "the majority carried on"
    );
    w.schedule(at(5_000, Fault::HealAll));
    w.run_until(Instant::from_millis(12_000)).unwrap();
    // Writes stopped at 9 s: everyone has caught up to the same commit point.
    let c = commit_of(&w, leader);
    assert_eq!(commit_of(&w, lonely), c);
}

#[test]
fn a_replica_restarted_during_catch_up_converges() {
    use io_sim::{Fault, HostId};
    let p = LogParams {
        write_every: Duration::from_millis(5),
        ..quiet(4, 3, 14_000)
    };
    let (mut w, _) = replog(p);
    w.run_until(Instant::from_millis(2_000)).unwrap();
    let leader = leader_of(&w, 3);
    let r = HostId((leader + 1) % 3);
    // Down for 4 s while writes pile up, back, and down again mid-catch-up.
    w.schedule(at(2_000, Fault::Crash(r)));
    w.schedule(at(6_000, Fault::Restart(r)));
    w.schedule(at(6_020, Fault::Crash(r)));
    w.schedule(at(6_500, Fault::Restart(r)));
    w.run_until(Instant::from_millis(14_000)).unwrap();
    let c = commit_of(&w, leader);
    assert!(c > 1_000, "{c}");
    assert_eq!(commit_of(&w, r.0), c, "the restarted replica caught up");
}

#[test]
fn an_election_storm_counts_thrash_and_stays_safe() {
    use io_sim::{Fault, HostId};
    let p = quiet(5, 5, 15_000);
    let (mut w, h) = replog(p);
    // Cut a different node off every 400 ms: leadership keeps moving.
    for k in 0..20u64 {
        let node = HostId((k % 5) as u32);
        let others: Vec<HostId> = (0..5)
            .filter(|i| *i != k % 5)
            .map(|i| HostId(i as u32))
            .collect();
        w.schedule(at(1_000 + k * 400, Fault::HealAll));
        w.schedule(at(
            1_000 + k * 400 + 1,
            Fault::Partition {
                a: vec![node],
                b: others,
            },
        ));
    }
    w.schedule(at(10_000, Fault::HealAll));
    w.run_until(p.end).unwrap();
    let thrash: u64 = (0..5)
        .map(|i| {
            w.machine(HostId(i))
                .unwrap()
                .replica
                .metrics
                .election_thrash
        })
        .sum();
    let elections = h.borrow().elections;
    assert!(elections > 1, "leadership moved: {elections}");
    assert!(thrash > 0, "quick successive elections are counted");
    // Still one leader per term (checked every step by the world), and convergence.
    let c0 = commit_of(&w, 0);
    assert!((1..5).all(|i| commit_of(&w, i) == c0), "all converged");
}
