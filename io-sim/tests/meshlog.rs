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
fn status_and_metrics_over_nodes_show_roles_and_small_lags() {
    use proto_core::replication::metrics::LAG_NOT_OBSERVED;
    use proto_core::replication::{LogId, Role};
    let p = quiet(2);
    let (mut w, _) = meshlog(p);
    w.run_until(Instant::from_millis(4_000)).unwrap();
    let id = LogId::from_name(io_sim::meshlog::LOG);
    let statuses: Vec<_> = (0..3)
        .map(|i| w.machine(HostId(i)).unwrap().log_status(id).unwrap())
        .collect();
    let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
    assert_eq!(leaders.len(), 1);
    let leader = leaders[0];
    for s in &statuses {
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.leader, leader.leader);
        assert!(s.commit > 20 && s.next_seq >= s.commit);
        let lag = if s.role == Role::Leader {
            s.metrics.leader_lag_micros
        } else {
            s.metrics.replica_lag_micros
        };
        // Writes every 40 ms, 4 ms round trips: replicas are never far behind.
        assert!(
            lag != LAG_NOT_OBSERVED && lag < 200_000,
            "{:?} lag {lag}",
            s.role
        );
    }
    let text = w.machine(HostId(0)).unwrap().log_prometheus_text();
    assert!(text.contains("orders"), "{text}");
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

use io_sim::replog::History;
use io_sim::{Fault, ScheduledFault};
use std::cell::RefCell;
use std::rc::Rc;

/// Runs the quiet world with `faults`, to its end, and returns the history after the final
/// check (everything healed at 6 s).
fn scenario(seed: u64, nodes: usize, faults: Vec<(u64, Fault)>) -> History {
    let p = LogParams {
        nodes,
        ..quiet(seed)
    };
    let (mut w, history): (_, Rc<RefCell<History>>) = meshlog(p);
    for (ms, fault) in faults {
        w.schedule(ScheduledFault {
            at: Instant::from_millis(ms),
            fault,
        });
    }
    w.schedule(ScheduledFault {
        at: Instant::from_millis(6_000),
        fault: Fault::HealAll,
    });
    w.run_until(p.end).unwrap();
    let h = history.borrow().clone();
    io_sim::replog::check_final(&w, &h, &p).unwrap();
    h
}

fn leader_at(h: &History, ms: u64) -> usize {
    h.leader_times
        .iter()
        .rev()
        .find(|(t, _)| *t <= Instant::from_millis(ms))
        .map(|(_, l)| *l)
        .expect("a leader by then")
}

fn acked_between(h: &History, from: u64, to: u64) -> usize {
    h.ack_times
        .iter()
        .filter(|(t, _)| *t > Instant::from_millis(from) && *t < Instant::from_millis(to))
        .count()
}

/// Finds who leads at 2 s in this seed (the run is deterministic), applies `cut(leader,
/// others)` then, and returns the old leader and the history of the run.
fn cut_off_leader(seed: u64, cut: impl Fn(HostId, Vec<HostId>) -> Fault) -> (usize, History) {
    let old = leader_at(&scenario(seed, 3, Vec::new()), 2_000);
    let others: Vec<HostId> = (0..3)
        .filter(|i| *i != old)
        .map(|i| HostId(i as u32))
        .collect();
    let h = scenario(seed, 3, vec![(2_000, cut(HostId(old as u32), others))]);
    (old, h)
}

/// The leader is cut off from both others (both ways): the majority elects a new leader and
/// keeps acknowledging; after the heal the old leader's unacknowledged writes are gone and
/// every log is equal (`check_final`).
#[test]
fn symmetric_failover_over_nodes() {
    let (old, h) = cut_off_leader(21, |l, others| Fault::Partition {
        a: vec![l],
        b: others,
    });
    let new = leader_at(&h, 5_900);
    assert_ne!(new, old, "the majority side elected another leader");
    assert!(
        acked_between(&h, 3_000, 6_000) > 20,
        "writes went on in the majority"
    );
}

/// The leader can still hear the others but they cannot hear it (a one-way cut): they elect
/// a new leader, whose higher term makes the old one step down.
#[test]
fn asymmetric_failover_over_nodes() {
    let (old, h) = cut_off_leader(22, |l, others| Fault::Block {
        from: vec![l],
        to: others,
    });
    let new = leader_at(&h, 5_900);
    assert_ne!(new, old);
    assert!(acked_between(&h, 3_000, 6_000) > 20);
    let terms: Vec<u64> = h.leaders.keys().copied().collect();
    assert!(terms.len() >= 2, "a new term: {terms:?}");
}

/// Three nodes where 0 and 2 cannot reach each other, both reaching 1 (the central peer):
/// writes keep being acknowledged by a majority that includes the central peer, nothing
/// unsafe happens, and all three converge once the edge heals.
#[test]
fn central_peer_convergence_over_nodes() {
    let cut = |ms| {
        (
            ms,
            Fault::Partition {
                a: vec![HostId(0)],
                b: vec![HostId(2)],
            },
        )
    };
    let h = scenario(23, 3, vec![cut(1_500)]);
    assert!(
        acked_between(&h, 2_500, 6_000) > 20,
        "progress with a central peer: {}",
        acked_between(&h, 2_500, 6_000)
    );
}

/// The leader crashes with writes it accepted but had not replicated, the others elect a new
/// leader and write on, and the old one revives: its unacknowledged suffix is replaced, and no
/// acknowledged write is lost anywhere (divergence-freedom after kill-revive).
#[test]
fn kill_revive_is_divergence_free_over_nodes() {
    let probe = scenario(24, 3, Vec::new());
    let old = leader_at(&probe, 2_000) as u32;
    let h = scenario(
        24,
        3,
        vec![
            // The client writes at 1980 and 2020 ms: at 2023 ms the leader has synced the
            // 2020 write (2 ms) but no replica has pulled it yet (a heartbeat, a request and a
            // response: three 2 ms hops), so its disk holds a suffix no one else has.
            (2_023, Fault::Crash(HostId(old))),
            (4_000, Fault::Restart(HostId(old))),
        ],
    );
    assert_ne!(leader_at(&h, 3_900) as u32, old);
    assert!(acked_between(&h, 2_500, 4_000) > 10);
}
