//! The simulator with real `proto-core` nodes: faults, partitions, crashes, pauses, clocks,
//! determinism, traces, storage.

use std::time::Duration;

use io_sim::scenarios::{self, host_addr, identity, Params};
use io_sim::{
    ClockModel, DropReason, Fault, GilbertElliott, HostId, LinkConfig, ScheduledFault, TraceEvent,
    World,
};
use proto_core::{DisconnectReason, Event, Instant, Node, PeerSpec};

fn params(nodes: usize, link: LinkConfig) -> Params {
    Params {
        nodes,
        link,
        ..Params::default()
    }
}

fn at(ms: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Instant::from_millis(ms),
        fault,
    }
}

/// Datagrams host `to` received from host `from`, with their global arrival time.
fn received(w: &World<Node>, to: usize, from: usize) -> Vec<Instant> {
    w.events(HostId(to as u32))
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Datagram { peer, .. } if *peer == identity(from).node_id() => Some(*t),
            _ => None,
        })
        .collect()
}

fn run(p: &Params) -> World<Node> {
    let mut w = scenarios::mesh(p);
    if let Err(f) = w.run_until(Instant::ZERO + p.duration) {
        panic!("{f}\nreplay: net-sim run {p}");
    }
    w
}

#[test]
fn handshakes_and_datagrams_under_each_link_fault() {
    let base = LinkConfig::with_latency(Duration::from_millis(15));
    let cases = [
        (
            "latency+jitter",
            LinkConfig {
                jitter: Duration::from_millis(40),
                ..base
            },
        ),
        (
            "bandwidth",
            LinkConfig {
                bandwidth_bps: Some(200_000),
                queue_bytes: 4_000,
                ..base
            },
        ),
        (
            "loss",
            LinkConfig {
                loss_ppm: 150_000,
                ..base
            },
        ),
        (
            "bursty loss",
            LinkConfig {
                burst_loss: Some(GilbertElliott {
                    good_to_bad_ppm: 20_000,
                    bad_to_good_ppm: 200_000,
                    loss_good_ppm: 0,
                    loss_bad_ppm: 800_000,
                }),
                ..base
            },
        ),
        (
            "duplication",
            LinkConfig {
                duplicate_ppm: 300_000,
                ..base
            },
        ),
        (
            "reordering",
            LinkConfig {
                reorder_ppm: 300_000,
                reorder_delay: Duration::from_millis(60),
                ..base
            },
        ),
        (
            "corruption",
            LinkConfig {
                corrupt_ppm: 100_000,
                ..base
            },
        ),
        (
            "mtu",
            LinkConfig {
                mtu: Some(1_200),
                ..base
            },
        ),
    ];
    for (name, link) in cases {
        for seed in 0..3 {
            let p = Params {
                seed,
                ..params(3, link)
            };
            let w = run(&p);
            assert_eq!(
                scenarios::mesh_connected_pairs(&w, 3),
                6,
                "{name} seed {seed}: every pair connected; replay: net-sim run {p}"
            );
            let got = received(&w, 1, 0).len();
            assert!(got >= 10, "{name} seed {seed}: {got} of 20 datagrams");
            if name == "corruption" {
                let caught: u64 = (0..3)
                    .filter_map(|h| w.machine(HostId(h)))
                    .map(|m| {
                        let d = m.stats().drops;
                        d.auth_failed
                            + d.malformed
                            + d.truncated
                            + d.bad_version
                            + d.unknown_kind
                            + d.handshake_failed
                            + d.unknown_index
                            + d.key_phase
                    })
                    .sum();
                assert!(w.stats().corrupted > 0);
                assert!(caught > 0, "corrupted packets are caught and counted");
            }
            if name == "bandwidth" {
                assert!(received(&w, 1, 0).len() <= 20);
            }
        }
    }
}

#[test]
fn an_mtu_below_the_handshake_size_stops_everything() {
    let link = LinkConfig {
        mtu: Some(150),
        ..LinkConfig::default()
    };
    let mut w = scenarios::mesh(&params(2, link));
    w.run_until(Instant::from_millis(3_000)).unwrap();
    assert_eq!(scenarios::mesh_connected_pairs(&w, 2), 0);
    assert!(w.trace().tail().any(|r| matches!(
        r.event,
        TraceEvent::Drop {
            reason: DropReason::Mtu,
            ..
        }
    )));
}

#[test]
fn a_partition_that_heals_before_the_idle_timeout_keeps_the_sessions() {
    let mut p = params(3, LinkConfig::default());
    p.messages = 60; // one every 250 ms from 1 s to 16 s
    p.faults = vec![
        at(
            4_000,
            Fault::Partition {
                a: vec![HostId(0)],
                b: vec![HostId(1), HostId(2)],
            },
        ),
        at(9_000, Fault::HealAll),
    ];
    let w = run(&p);
    let times = received(&w, 1, 0);
    assert!(times.iter().any(|t| *t < Instant::from_millis(4_000)));
    assert!(!times
        .iter()
        .any(|t| *t > Instant::from_millis(4_100) && *t < Instant::from_millis(9_000)));
    assert!(
        times.iter().any(|t| *t > Instant::from_millis(9_000)),
        "traffic resumes"
    );
    assert_eq!(scenarios::mesh_connected_pairs(&w, 3), 6);
    assert!(!w
        .events(HostId(1))
        .iter()
        .any(|(_, e)| matches!(e, Event::Disconnected { .. })));
}

#[test]
fn a_long_partition_ends_the_sessions_and_a_reconnect_heals_them() {
    let mut p = params(2, LinkConfig::default());
    p.duration = Duration::from_secs(90);
    p.faults = vec![
        at(
            2_000,
            Fault::Partition {
                a: vec![HostId(0)],
                b: vec![HostId(1)],
            },
        ),
        at(60_000, Fault::HealAll),
    ];
    let mut w = scenarios::mesh(&p);
    w.at(Instant::from_millis(61_000), |w| {
        let spec = PeerSpec::known(
            identity(1).public(),
            w.machine(HostId(1)).unwrap().static_key(),
        );
        w.with_machine(HostId(0), |m, now| {
            m.connect(now, host_addr(1), spec).unwrap()
        });
    });
    w.run_until(Instant::ZERO + p.duration).unwrap();
    for h in 0..2 {
        assert!(w.events(HostId(h)).iter().any(|(_, e)| matches!(
            e,
            Event::Disconnected {
                reason: DisconnectReason::IdleTimeout,
                ..
            }
        )));
    }
    assert_eq!(scenarios::mesh_connected_pairs(&w, 2), 2);
}

#[test]
fn a_crashed_node_restarts_and_rejoins() {
    let mut p = params(3, LinkConfig::default());
    p.messages = 40; // until 11 s
    p.faults = vec![
        at(3_000, Fault::Crash(HostId(2))),
        at(5_000, Fault::Restart(HostId(2))),
    ];
    let mut w = scenarios::mesh(&p);
    // The restarted node (a fresh machine: no sessions) reconnects to both peers.
    w.at(Instant::from_millis(6_000), |w| {
        for j in 0..2usize {
            let spec = PeerSpec::known(
                identity(j).public(),
                w.machine(HostId(j as u32)).unwrap().static_key(),
            );
            w.with_machine(HostId(2), |m, now| {
                m.connect(now, host_addr(j), spec).unwrap()
            });
        }
    });
    w.run_until(Instant::ZERO + p.duration).unwrap();
    // The peers replaced their old sessions with the new incarnation's.
    for h in 0..2 {
        assert!(
            w.events(HostId(h)).iter().any(|(_, e)| matches!(
                e,
                Event::Disconnected {
                    reason: DisconnectReason::Superseded,
                    ..
                }
            )),
            "host {h}"
        );
    }
    let after = received(&w, 0, 2)
        .into_iter()
        .filter(|t| *t > Instant::from_millis(6_000))
        .count();
    assert!(after > 10, "datagrams from the new incarnation: {after}");
    assert!(!w.trace().is_empty());
    assert_eq!(scenarios::mesh_connected_pairs(&w, 3), 6);
}

#[test]
fn a_paused_node_resumes_with_stale_timers_and_its_backlog() {
    let mut p = params(2, LinkConfig::default());
    p.faults = vec![at(2_000, Fault::Pause(HostId(1), Duration::from_secs(3)))];
    let w = run(&p);
    let times = received(&w, 1, 0);
    // Nothing is processed while paused; the backlog arrives at resume (5 s), nothing is lost.
    assert!(!times
        .iter()
        .any(|t| *t > Instant::from_millis(2_000) && *t < Instant::from_millis(5_000)));
    assert_eq!(times.len(), 20);
    assert!(
        times
            .iter()
            .filter(|t| **t == Instant::from_millis(5_000))
            .count()
            >= 10
    );
}

#[test]
fn skewed_and_drifting_clocks_do_not_matter() {
    let p = params(2, LinkConfig::default());
    let mut w = scenarios::mesh(&p);
    w.set_clock(
        HostId(1),
        ClockModel {
            offset_ns: 3_600_000_000_000,
            drift_ppm: 500,
        },
    );
    w.set_clock(
        HostId(0),
        ClockModel {
            offset_ns: 0,
            drift_ppm: -300,
        },
    );
    w.run_until(Instant::ZERO + p.duration).unwrap();
    assert_eq!(received(&w, 1, 0).len(), 20);
    assert_eq!(received(&w, 0, 1).len(), 20);
    assert!(w.local_now(HostId(1)) > Instant::from_millis(3_600_000));
}

fn hash_of(p: &Params) -> String {
    run(p).trace().hash_hex()
}

#[test]
fn the_same_seed_gives_the_same_hash_and_another_seed_another() {
    let p = Params {
        seed: 11,
        link: LinkConfig {
            loss_ppm: 50_000,
            duplicate_ppm: 50_000,
            jitter: Duration::from_millis(30),
            ..LinkConfig::default()
        },
        faults: vec![at(
            4_000,
            Fault::Pause(HostId(0), Duration::from_millis(700)),
        )],
        ..params(3, LinkConfig::default())
    };
    let a = hash_of(&p);
    assert_eq!(a, hash_of(&p));
    let mut q = p.clone();
    q.seed = 12;
    assert_ne!(a, hash_of(&q));
}

#[test]
fn the_same_seed_gives_the_same_hash_in_another_process() {
    let p = Params {
        seed: 5,
        link: LinkConfig {
            loss_ppm: 50_000,
            ..LinkConfig::default()
        },
        ..params(3, LinkConfig::default())
    };
    let in_process = hash_of(&p);
    let args: Vec<String> = format!("run {p}")
        .split_whitespace()
        .map(|s| s.trim_matches('\'').to_string())
        .collect();
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_net-sim"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("trace hash "))
            .unwrap();
        assert_eq!(line, in_process);
    }
}

#[test]
fn the_trace_exports_as_json_lines_and_a_run_stops_at_a_step() {
    let path = std::env::temp_dir().join(format!("io-sim-trace-{}.jsonl", std::process::id()));
    let p = params(2, LinkConfig::default());
    let mut w = scenarios::mesh(&p);
    w.trace_mut()
        .set_sink(Box::new(std::fs::File::create(&path).unwrap()));
    w.run_to_step(40, Instant::MAX).unwrap();
    assert_eq!(w.stats().steps, 40);
    w.trace_mut().finish().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, w.trace().len());
    assert!(lines
        .iter()
        .all(|l| l.starts_with("{\"step\":") && l.ends_with('}')));
    assert!(lines.iter().any(|l| l.contains("\"kind\":\"deliver\"")));
    // Continuing from step 40 gives the same run as running straight through.
    w.run_until(Instant::ZERO + p.duration).unwrap();
    assert_eq!(w.trace().hash_hex(), hash_of(&p));
}

#[test]
fn storage_loses_unsynced_writes_when_its_host_crashes() {
    let mut w = scenarios::mesh(&params(2, LinkConfig::default()));
    let h = HostId(1);
    w.run_until(Instant::from_millis(100)).unwrap();
    let now = w.now();
    let s = w.storage_mut(h).unwrap();
    s.append(Instant::ZERO, "log", b"durable;");
    s.sync(Instant::ZERO, "log");
    s.append(now, "log", b"synced too late;");
    s.sync(now, "log"); // completes after `now`: the crash below comes first
    w.crash(h);
    assert!(!w.is_up(h));
    assert_eq!(w.storage_mut(h).unwrap().read("log"), b"durable;");
    w.restart(h);
    assert!(w.is_up(h));
    assert_eq!(w.storage_mut(h).unwrap().read("log"), b"durable;");
}

#[test]
fn a_partial_partition_cuts_only_the_named_pair() {
    // A sees B, B sees C, A does not see C.
    let mut p = params(3, LinkConfig::default());
    p.faults = vec![at(
        0,
        Fault::Partition {
            a: vec![HostId(0)],
            b: vec![HostId(2)],
        },
    )];
    let w = run(&p);
    assert_eq!(received(&w, 1, 0).len(), 20);
    assert_eq!(received(&w, 2, 1).len(), 20);
    assert!(received(&w, 2, 0).is_empty());
    assert!(received(&w, 0, 2).is_empty());
}

#[test]
fn a_one_way_block_stops_one_direction_only() {
    let mut w = scenarios::mesh(&params(2, LinkConfig::default()));
    // Once connected, block 0 -> 1 for a while; 1 -> 0 still flows.
    w.schedule(at(
        2_000,
        Fault::Block {
            from: vec![HostId(0)],
            to: vec![HostId(1)],
        },
    ));
    w.schedule(at(4_000, Fault::HealAll));
    w.run_until(Instant::from_millis(30_000)).unwrap();
    let window = |ts: Vec<Instant>| {
        ts.into_iter()
            .filter(|t| *t > Instant::from_millis(2_100) && *t < Instant::from_millis(4_000))
            .count()
    };
    assert_eq!(window(received(&w, 1, 0)), 0);
    assert!(window(received(&w, 0, 1)) >= 6);
}

#[test]
fn net_sim_sweeps_seeds_and_prints_replay_commands() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_net-sim"))
        .args([
            "sweep",
            "--seeds",
            "1..4",
            "--nodes",
            "3",
            "--loss",
            "0.05",
            "--duration-ms",
            "8000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" ok  hash ")).count(),
        3
    );
    assert!(stdout.contains("3 seeds, 0 failed"));
    // A bad option is a usage error, not a crash.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_net-sim"))
        .args(["run", "--loss", "2"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_handler_can_drive_machines() {
    // B echoes every datagram back from inside the event handler (a nested drain).
    let mut w = scenarios::mesh(&params(2, LinkConfig::default()));
    w.on_event(move |w, h, ev| {
        if let (1, Event::Datagram { session, data, .. }) = (h.0, ev) {
            let (session, mut reply) = (*session, data.clone());
            reply.extend_from_slice(b" (echo)");
            w.with_machine(h, |m, now| m.send_datagram(now, session, &reply).unwrap());
        }
    });
    w.run_until(Instant::from_millis(30_000)).unwrap();
    let echoes = w
        .events(HostId(0))
        .iter()
        .filter(|(_, e)| matches!(e, Event::Datagram { data, .. } if data.ends_with(b" (echo)")))
        .count();
    assert_eq!(echoes, 20);
}

#[test]
fn an_old_resume_does_not_end_a_later_pause() {
    let mut w = scenarios::mesh(&params(2, LinkConfig::default()));
    for f in [
        at(1_000, Fault::Pause(HostId(1), Duration::from_secs(1))),
        at(1_500, Fault::Crash(HostId(1))),
        at(1_600, Fault::Restart(HostId(1))),
        at(1_700, Fault::Pause(HostId(1), Duration::from_secs(5))),
    ] {
        w.schedule(f);
    }
    w.run_until(Instant::from_millis(3_000)).unwrap();
    assert!(!w.is_up(HostId(1)), "still in the second pause");
    w.run_until(Instant::from_millis(7_000)).unwrap();
    assert!(w.is_up(HostId(1)));
}

#[test]
fn adding_a_host_does_not_change_what_happens_between_the_others() {
    let link = LinkConfig {
        loss_ppm: 100_000,
        jitter: Duration::from_millis(20),
        ..LinkConfig::default()
    };
    let deliveries_0_1 = |extra: bool| {
        let mut w = scenarios::mesh(&params(2, link));
        if extra {
            // An idle third host (no sessions, no traffic).
            w.add_host("idle", host_addr(9), scenarios::node_factory(9));
        }
        w.run_until(Instant::from_millis(20_000)).unwrap();
        received(&w, 1, 0)
    };
    let without = deliveries_0_1(false);
    assert!(!without.is_empty());
    assert_eq!(without, deliveries_0_1(true));
}

#[test]
fn a_printed_replay_command_with_faults_replays_through_a_shell() {
    let p = Params {
        seed: 3,
        link: LinkConfig {
            loss_ppm: 20_000,
            reorder_ppm: 100_000,
            reorder_delay: Duration::from_micros(12_500),
            bandwidth_bps: Some(5_000_000),
            ..LinkConfig::default()
        },
        faults: io_sim::parse_schedule(
            "2000ms=partition:0|1;2500us=clock:1:1000:50;3000ms=link:0>1:latency=30ms,loss=50000;6000ms=heal",
        )
        .unwrap(),
        ..params(2, LinkConfig::default())
    };
    let in_process = hash_of(&p);
    let cmd = format!("'{}' run {p}", env!("CARGO_BIN_EXE_net-sim"));
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("trace hash {in_process}")),
        "{stdout}"
    );
}
