//! The same application code (`net_tests::app`) under tokio, smol and io-sim; under io-sim
//! also on a lossy, jittery network, and twice with one seed to show the run replays.

use std::sync::Arc;
use std::time::Duration;

use io_async::{Endpoint, EndpointConfig};
use io_sim::asim::Sim;
use io_sim::link::LinkConfig;
use net_tests::app::{exercise, expected};
use proto_core::{Config, Identity, Seed};

const LEN: usize = 1 << 20;

fn config(seed: Seed) -> EndpointConfig {
    let mut c = Config::new(seed).with_provider(Arc::new(proto_core::crypto::AwsLc));
    c.strict_drain = true;
    EndpointConfig::new(c)
}

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn seeded(n: u64) -> EndpointConfig {
    config(Seed::from_u64(n))
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Three endpoints on 127.0.0.1, identities and seeds from `base`.
fn tokio_endpoints(base: u8) -> Vec<io_tokio::Endpoint> {
    (0..3u8)
        .map(|i| {
            io_tokio::Endpoint::bind(
                local(),
                Identity::from_secret_bytes([base + i; 32]),
                seeded(u64::from(base + i)),
            )
            .expect("bind")
        })
        .collect()
}

#[test]
fn under_tokio() {
    let rt = tokio_runtime();
    let report = rt.block_on(async {
        let a =
            io_tokio::Endpoint::bind(local(), Identity::from_secret_bytes([21; 32]), seeded(21));
        let b =
            io_tokio::Endpoint::bind(local(), Identity::from_secret_bytes([22; 32]), seeded(22));
        exercise(&a.expect("bind"), &b.expect("bind"), LEN).await
    });
    assert_eq!(report, expected(LEN));
}

#[test]
fn under_smol() {
    let report = smol::block_on(async {
        let a = io_smol::Endpoint::bind(local(), Identity::from_secret_bytes([23; 32]), seeded(23));
        let b = io_smol::Endpoint::bind(local(), Identity::from_secret_bytes([24; 32]), seeded(24));
        exercise(&a.expect("bind"), &b.expect("bind"), LEN).await
    });
    assert_eq!(report, expected(LEN));
}

/// Runs the application on a simulator; returns the report and the trace hash.
fn simulated(seed: u64, link: LinkConfig) -> (net_tests::app::Report, String, u64) {
    let sim = Sim::new(seed);
    sim.set_default_link(link);
    let a = Endpoint::bind(
        sim.runtime(),
        "10.0.0.1:7000".parse().expect("addr"),
        Identity::from_seed(&sim.node_seed(1)),
        config(sim.node_seed(11)),
    )
    .expect("bind");
    let b = Endpoint::bind(
        sim.runtime(),
        "10.0.0.2:7000".parse().expect("addr"),
        Identity::from_seed(&sim.node_seed(2)),
        config(sim.node_seed(12)),
    )
    .expect("bind");
    let report = sim
        .block_on_for(Duration::from_secs(600), exercise(&a, &b, LEN))
        .expect("the application finishes");
    let hash = sim.trace_hash();
    let elapsed_ms = sim.now().as_nanos() / 1_000_000;
    sim.stop_all();
    (report, hash, elapsed_ms)
}

#[test]
fn under_io_sim_on_a_clean_network() {
    let (report, _, _) = simulated(1, LinkConfig::with_latency(Duration::from_millis(5)));
    assert_eq!(report, expected(LEN));
}

#[test]
fn under_io_sim_with_loss_and_jitter_and_the_run_replays() {
    let link = LinkConfig {
        loss_ppm: 30_000,
        jitter: Duration::from_millis(4),
        duplicate_ppm: 5_000,
        ..LinkConfig::with_latency(Duration::from_millis(10))
    };
    let (r1, h1, t1) = simulated(7, link);
    assert_eq!(r1, expected(LEN));
    let (r2, h2, t2) = simulated(7, link);
    assert_eq!(r2, r1);
    assert_eq!(h2, h1, "same seed, same trace");
    assert_eq!(t2, t1, "same seed, same virtual duration");
    let (_, h3, _) = simulated(8, link);
    assert_ne!(h3, h1, "another seed, another run");
}

fn mem_store(_: usize) -> Box<dyn proto_core::replication::LogStore + Send> {
    Box::new(proto_core::replication::MemLog::new(1 << 16, 1 << 20))
}

#[test]
fn log_failover_under_io_sim() {
    let sim = Sim::new(3);
    sim.set_default_link(LinkConfig::with_latency(Duration::from_millis(2)));
    let eps: Vec<Endpoint> = (0..3u64)
        .map(|i| {
            Endpoint::bind(
                sim.runtime(),
                format!("10.0.1.{}:7000", i + 1).parse().expect("addr"),
                Identity::from_seed(&sim.node_seed(100 + i)),
                config(sim.node_seed(200 + i)),
            )
            .expect("bind")
        })
        .collect();
    let crash = sim.clone();
    let report = sim
        .block_on_for(
            Duration::from_secs(120),
            net_tests::app::log_failover(&eps, mem_store, 20, 5, move |ep| {
                crash.crash(ep.local_addr());
                ep.abort();
            }),
        )
        .expect("finishes");
    assert!(report.nothing_lost, "{report:?}");
    assert_eq!(report.acked_after, 5);
    // Three missed heartbeats of 100 ms, then an election.
    assert!(report.failover < Duration::from_secs(2), "{report:?}");
    sim.stop_all();
}

#[test]
fn log_failover_under_tokio_with_a_node_killed() {
    let rt = tokio_runtime();
    let report = rt.block_on(async {
        let eps = tokio_endpoints(40);
        let inner: Vec<Endpoint> = eps.iter().map(|e| e.inner().clone()).collect();
        net_tests::app::log_failover(&inner, mem_store, 20, 5, Endpoint::abort).await
    });
    assert!(report.nothing_lost, "{report:?}");
    assert_eq!(report.acked_after, 5);
    assert!(report.failover < Duration::from_secs(3), "{report:?}");
}

#[test]
fn log_failover_under_smol_with_a_node_killed() {
    let report = smol::block_on(async {
        let eps: Vec<io_smol::Endpoint> = (0..3u8)
            .map(|i| {
                let id = Identity::from_secret_bytes([50 + i; 32]);
                io_smol::Endpoint::bind(local(), id, seeded(50 + u64::from(i))).expect("bind")
            })
            .collect();
        let inner: Vec<Endpoint> = eps.iter().map(|e| e.inner().clone()).collect();
        net_tests::app::log_failover(&inner, mem_store, 20, 5, Endpoint::abort).await
    });
    assert!(report.nothing_lost, "{report:?}");
    assert_eq!(report.acked_after, 5);
}

#[test]
fn log_failover_under_tokio_over_file_logs_that_fsync_every_append() {
    use io_store::{FileLog, FileLogConfig, FsyncPolicy};
    let dir = std::env::temp_dir().join(format!("net-filelog-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio_runtime();
    let dirs: Vec<_> = (0..3).map(|i| dir.join(format!("node{i}"))).collect();
    let report = rt.block_on(async {
        let eps = tokio_endpoints(60);
        let inner: Vec<Endpoint> = eps.iter().map(|e| e.inner().clone()).collect();
        let store = |i: usize| -> Box<dyn proto_core::replication::LogStore + Send> {
            let cfg = FileLogConfig {
                policy: FsyncPolicy::Always,
                ..FileLogConfig::default()
            };
            Box::new(FileLog::open(&dirs[i], cfg).expect("open the file log"))
        };
        net_tests::app::log_failover(&inner, store, 20, 5, Endpoint::abort).await
    });
    assert!(report.nothing_lost, "{report:?}");
    assert_eq!(report.acked_after, 5);
    // What each survivor acknowledged is on its disk: reopening a store finds the events.
    let mut found = 0;
    for d in &dirs {
        let log = FileLog::open(d, FileLogConfig::default()).expect("reopen");
        let held = proto_core::replication::LogStore::next_seq(&log);
        if held >= 25 {
            found += 1;
        }
    }
    assert!(
        found >= 2,
        "a quorum holds every acknowledged event on disk"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_logs_sync_off_the_drive_loop_and_appends_wait_for_the_disk() {
    use io_store::{FileLog, FileLogConfig, FsyncPolicy};
    use proto_core::replication::{Durability, LogSpec, Placement, ReplicationConfig, Role};
    let dir = std::env::temp_dir().join(format!("net-filelog-bg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio_runtime();
    let dirs: Vec<_> = (0..3).map(|i| dir.join(format!("node{i}"))).collect();
    let queued_after = rt.block_on(async {
        let eps = tokio_endpoints(70);
        for (i, a) in eps.iter().enumerate() {
            for b in eps.iter().skip(i + 1) {
                a.connect(b.local_addr(), b.peer_spec())
                    .await
                    .expect("connect");
            }
        }
        let cfg = ReplicationConfig {
            factor: 3,
            heartbeat_ms: 100,
            placement: Placement::Pinned(eps.iter().map(|e| e.node_id()).collect()),
            ..ReplicationConfig::default()
        };
        let mut logs = Vec::new();
        let mut all_syncs = Vec::new();
        let mut servers = Vec::new();
        // How many times a worker ran a sync, and, once set, how the next ones fail (node 0's
        // panics, the others' return an error).
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for (i, e) in eps.iter().enumerate() {
            let fcfg = FileLogConfig {
                policy: FsyncPolicy::Always,
                ..FileLogConfig::default()
            };
            let mut store = FileLog::open(&dirs[i], fcfg).expect("open");
            let syncs = store.background_syncs();
            let log = e
                .open_log("bg", LogSpec::new(cfg.clone(), Box::new(store)))
                .expect("open log");
            let (l, s) = (log.clone(), syncs.clone());
            let (runs, fail) = (runs.clone(), fail.clone());
            servers.push(tokio::spawn(async move {
                l.serve_persistence(move || {
                    if fail.load(std::sync::atomic::Ordering::SeqCst) {
                        assert!(i != 0, "node 0's disk catches fire");
                        return Err(std::io::Error::other("disk full"));
                    }
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    s.run_pending().map(|_| ())
                })
                .await
            }));
            logs.push(log);
            all_syncs.push(syncs);
        }
        let mut leader = None;
        for _ in 0..1000 {
            leader = logs
                .iter()
                .position(|l| l.status().is_some_and(|s| s.role == Role::Leader));
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let l = &logs[leader.expect("a leader")];
        for i in 0..50u32 {
            l.append(&i.to_be_bytes(), Durability::Quorum)
                .await
                .expect("acknowledged");
        }
        // A burst of appends at once: each waits for its syncs, which the workers group.
        let mut burst = tokio::task::JoinSet::new();
        for i in 50..90u32 {
            let l = l.clone();
            burst.spawn(async move { l.append(&i.to_be_bytes(), Durability::Quorum).await });
        }
        while let Some(r) = burst.join_next().await {
            r.expect("joined").expect("acknowledged");
        }
        let queued = all_syncs
            .iter()
            .map(io_store::Syncs::queued)
            .collect::<Vec<_>>();
        let ran = runs.load(std::sync::atomic::Ordering::SeqCst);
        // Once every disk fails, nothing more is acknowledged and every worker reports why.
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let late = tokio::time::timeout(
            Duration::from_millis(800),
            l.append(b"late", Durability::Quorum),
        )
        .await;
        assert!(
            !matches!(late, Ok(Ok(_))),
            "acknowledged without a disk: {late:?}"
        );
        let mut errors = Vec::new();
        for (i, s) in servers.into_iter().enumerate() {
            // A worker whose log never asked again after the failure is still waiting.
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), s).await {
                let err = r.expect("joined").expect_err("the sync failed");
                errors.push((i, err.to_string()));
            }
        }
        (queued, ran, errors)
    });
    let (queued_after, ran, errors) = queued_after;
    eprintln!("sync runs for 90 appends on 3 nodes: {ran}; worker errors: {errors:?}");
    assert!(ran > 0, "the workers ran syncs");
    assert!(!errors.is_empty(), "the failure reached a worker");
    for (i, e) in &errors {
        let want = if *i == 0 { "panicked" } else { "disk full" };
        assert!(e.contains(want), "node {i}: {e}");
    }
    // Every sync the leader asked for ran (acknowledgements wait for them).
    assert!(
        queued_after.iter().filter(|&&q| q == 0).count() >= 2,
        "{queued_after:?}"
    );
    let mut on_disk = 0;
    for d in &dirs {
        let log = FileLog::open(d, FileLogConfig::default()).expect("reopen");
        if proto_core::replication::LogStore::next_seq(&log) >= 50 {
            on_disk += 1;
        }
    }
    assert!(
        on_disk >= 2,
        "a quorum holds all 50 acknowledged events on disk"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
