//! Replicated logs on `Node`s with full encrypted sessions, all in one thread, each figure
//! paired with a baseline measured in the same run.
//!
//! - `append`: quorum-acknowledged appends (256-byte events, 256 in flight, appended in
//!   batches of what the window allows) on a 3-node log, against the same appends on a
//!   single-node log (factor 1, the same store and API). Twice: with in-memory stores, and
//!   with [`io_store::FileLog`] syncing every persist (`FsyncPolicy::Always`) on the build
//!   directory's disk. Two ratios each: the wall time of all three nodes together on one core
//!   (one machine running the whole cluster, one disk), and the time spent inside the leader's
//!   own calls, its syncs included (what the leader of a real cluster, whose replicas run
//!   elsewhere, sustains).
//! - `catchup`: a third replica joins a log that already holds 8 MiB (8192 events of 1 KiB)
//!   and pulls all of it; against a bulk application stream of the same bytes between the
//!   same nodes in the same run (in-memory stores).
//!
//! Datagrams move in memory with no delay; timers run on the wall clock. The catch-up budget
//! is half of a declared 10 Gbit/s link, so it does not bind (with the default 1 Gbit/s
//! declaration it would cap catch-up at 62.5 MB/s, by design).
//!
//! `cargo bench -p io-store --features aws-lc --bench replog` prints the paired table
//! (`LOG_BENCH_ROUNDS`, 5 by default).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};

use io_store::{FileLog, FileLogConfig, FsyncPolicy};
use proto_core::crypto::SharedProvider;
use proto_core::replication::{
    Durability, LogEvent, LogId, LogSpec, LogStore, MemLog, Placement, ReplicationConfig, Role,
};
use proto_core::stream::{Mode, StreamEvent};
use proto_core::{Config, Event, Identity, Instant, Node, NodeId, PeerSpec, Seed};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000))
}

const LOG: &str = "bench";

/// The crypto providers this build has (aws-lc with `--features aws-lc`).
fn providers() -> Vec<SharedProvider> {
    #[allow(unused_mut)]
    let mut v: Vec<SharedProvider> = vec![std::sync::Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(std::sync::Arc::new(proto_core::crypto::AwsLc));
    v
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Where a node's log lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    /// `FileLog` syncing every persist, in a fresh directory.
    File,
}

fn store(kind: Store) -> Box<dyn LogStore + Send> {
    match kind {
        Store::Memory => Box::new(MemLog::new(1 << 20, 64 << 10)),
        Store::File => {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "replog-bench-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let cfg = FileLogConfig {
                policy: FsyncPolicy::Always,
                ..FileLogConfig::default()
            };
            Box::new(FileLog::open(dir, cfg).expect("log directory"))
        }
    }
}

struct Mesh {
    nodes: Vec<Node>,
    inbox: Vec<VecDeque<(SocketAddr, Vec<u8>)>>,
    epoch: WallInstant,
    buf: Vec<u8>,
    /// CPU time spent inside each node's calls.
    cpu: Vec<Duration>,
    events: Vec<Vec<Event>>,
}

impl Mesh {
    fn new(provider: &SharedProvider, n: usize) -> Mesh {
        let epoch = WallInstant::now();
        let id = |i: usize| Identity::from_seed(&Seed::from_u64(500 + i as u64));
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| {
                let mut c =
                    Config::new(Seed::from_u64(i as u64 + 1)).with_provider(provider.clone());
                c.strict_drain = false;
                Node::new(c, id(i), Instant::ZERO).expect("node")
            })
            .collect();
        for i in 0..n {
            for j in 0..i {
                let spec = PeerSpec::known(id(j).public(), nodes[j].static_key());
                nodes[i]
                    .connect(Instant::ZERO, addr(j), spec)
                    .expect("connect");
            }
        }
        let mut m = Mesh {
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            cpu: vec![Duration::ZERO; n],
            events: (0..n).map(|_| Vec::new()).collect(),
            nodes,
            epoch,
            buf: vec![0u8; 1500],
        };
        let want = n * (n - 1);
        while m.nodes.iter().map(Node::session_count).sum::<usize>() < want {
            m.step();
        }
        m
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(Node::node_id).collect()
    }

    fn open(&mut self, i: usize, members: &[NodeId], kind: Store) {
        let cfg = ReplicationConfig {
            factor: members.len() as u8,
            heartbeat_ms: 100,
            placement: Placement::Pinned(members.to_vec()),
            ..ReplicationConfig::default()
        };
        let store = store(kind);
        let now = self.now();
        // A 10 Gbit/s link: the catch-up budget (half of it) is not what limits the figures.
        let spec = LogSpec {
            link_rate: 1_250_000_000,
            ..LogSpec::new(cfg, store)
        };
        self.nodes[i].open_log(now, LOG, spec).expect("open");
    }

    /// One round: every node's timers, transmits, then every queued datagram (events are kept
    /// in `events`).
    fn step(&mut self) {
        let now = self.now();
        for i in 0..self.nodes.len() {
            let t = WallInstant::now();
            let node = &mut self.nodes[i];
            if node.poll_timeout().is_some_and(|d| d.at <= now) {
                node.handle_timeout(now).expect("timeout");
            }
            while let Some(d) = self.inbox[i].pop_front() {
                node.handle_datagram(now, d.0, &d.1).expect("input");
            }
            while let Some(ev) = node.poll_event() {
                self.events[i].push(ev);
            }
            while let Some(tx) = node.poll_transmit(now, &mut self.buf).expect("transmit") {
                let to = (0..self.inbox.len()).find(|j| addr(*j) == tx.destination);
                if let Some(j) = to {
                    self.inbox[j].push_back((addr(i), self.buf[..tx.len].to_vec()));
                }
            }
            self.cpu[i] += t.elapsed();
        }
    }

    fn leader(&self) -> Option<usize> {
        let id = LogId::from_name(LOG);
        (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .log_status(id)
                .is_some_and(|s| s.role == Role::Leader)
        })
    }

    fn wait_leader(&mut self) -> usize {
        loop {
            self.step();
            if let Some(l) = self.leader() {
                let leader_id = self.nodes[l].node_id();
                let all_know = self.nodes.iter().all(|n| {
                    n.log_status(LogId::from_name(LOG))
                        .is_none_or(|s| s.leader == Some(leader_id))
                });
                if all_know {
                    return l;
                }
            }
        }
    }

    /// Appends `count` events of `size` bytes on `leader`, `window` in flight, until every one
    /// is acknowledged. Returns (wall seconds, leader CPU seconds).
    fn appends(&mut self, leader: usize, count: u64, size: usize, window: u64) -> (f64, f64) {
        let id = LogId::from_name(LOG);
        let payload = vec![0x5a; size];
        for e in &mut self.events {
            e.clear();
        }
        let cpu0 = self.cpu[leader];
        let start = WallInstant::now();
        let (mut sent, mut acked) = (0u64, 0u64);
        while acked < count {
            let t = WallInstant::now();
            let now = self.now();
            let n = (count - sent).min(window - (sent - acked));
            if n > 0 {
                let batch = (0..n).map(|_| payload.as_slice());
                self.nodes[leader]
                    .log_append_batch(now, id, batch, Durability::Quorum)
                    .expect("append");
                sent += n;
            }
            self.cpu[leader] += t.elapsed();
            self.step();
            for e in self.events[leader].drain(..) {
                if let Event::Log(LogEvent::Acked { .. }) = e {
                    acked += 1;
                }
            }
            for e in self.events.iter_mut() {
                e.clear();
            }
        }
        (
            start.elapsed().as_secs_f64(),
            (self.cpu[leader] - cpu0).as_secs_f64(),
        )
    }
}

/// Quorum appends on three nodes against a single-node log: (single/s, quorum wall/s, quorum
/// leader-CPU/s).
fn append_round(provider: &SharedProvider, count: u64, kind: Store) -> (f64, f64, f64) {
    let mut solo = Mesh::new(provider, 1);
    let ids = solo.ids();
    solo.open(0, &ids, kind);
    let l = solo.wait_leader();
    let (wall1, _) = solo.appends(l, count, 256, 256);
    let mut trio = Mesh::new(provider, 3);
    let ids = trio.ids();
    for i in 0..3 {
        trio.open(i, &ids, kind);
    }
    let l = trio.wait_leader();
    let (wall3, cpu3) = trio.appends(l, count, 256, 256);
    let c = count as f64;
    (c / wall1, c / wall3, c / cpu3)
}

/// A replica catching up 8 MiB against a bulk stream of 8 MiB: (catch-up MB/s, stream MB/s).
fn catchup_round(provider: &SharedProvider) -> (f64, f64) {
    const EVENTS: u64 = 8192;
    const SIZE: usize = 1024;
    let total = EVENTS as f64 * SIZE as f64;
    let mut m = Mesh::new(provider, 3);
    let ids = m.ids();
    // Nodes 0 and 1 hold the log and write it; node 2 opens it afterwards and pulls.
    m.open(0, &ids, Store::Memory);
    m.open(1, &ids, Store::Memory);
    let l = m.wait_leader();
    let (_, _) = m.appends(l, EVENTS, SIZE, 512);
    let joiner = 2;
    m.open(joiner, &ids, Store::Memory);
    let start = WallInstant::now();
    let id = LogId::from_name(LOG);
    while m.nodes[joiner].log_status(id).map_or(0, |s| s.commit) < EVENTS {
        m.step();
        for e in m.events.iter_mut() {
            e.clear();
        }
    }
    let catchup = total / start.elapsed().as_secs_f64() / 1e6;

    // The baseline: the same bytes from the leader to the joiner on an application stream.
    let now = m.now();
    let to = m.nodes[l].session_with(&ids[joiner]).expect("session");
    let s = m.nodes[l]
        .open_stream(now, to, Mode::Ordered)
        .expect("stream");
    let chunk = vec![0x33u8; 64 << 10];
    let (mut written, mut read) = (0usize, 0usize);
    let mut rbuf = vec![0u8; 64 << 10];
    let start = WallInstant::now();
    while read < total as usize {
        if written < total as usize {
            let mut h = m.nodes[l].stream(to, s).expect("handle");
            let want = (total as usize - written).min(chunk.len());
            if let Ok(n) = h.write(&chunk[..want]) {
                written += n;
            }
        }
        m.step();
        let evs: Vec<Event> = m.events[joiner].drain(..).collect();
        for e in evs {
            if let Event::Stream {
                session,
                stream,
                event: StreamEvent::Readable,
            } = e
            {
                let mut h = m.nodes[joiner].stream(session, stream).expect("reader");
                while let Ok(n) = h.read(&mut rbuf) {
                    if n == 0 {
                        break;
                    }
                    read += n;
                }
            }
        }
        for e in m.events.iter_mut() {
            e.clear();
        }
    }
    let stream = total / start.elapsed().as_secs_f64() / 1e6;
    (catchup, stream)
}

/// Medians of the append rounds: (single/s, quorum wall/s, its ratio, quorum leader/s, its ratio).
fn append_figures(provider: &SharedProvider, rounds: usize, count: u64, kind: Store) -> [f64; 5] {
    let (mut r_wall, mut r_cpu, mut solo, mut wall, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (s, w, c) = append_round(provider, count, kind);
        r_wall.push(w / s);
        r_cpu.push(c / s);
        solo.push(s);
        wall.push(w);
        cpu.push(c);
    }
    [
        median(&mut solo),
        median(&mut wall),
        median(&mut r_wall),
        median(&mut cpu),
        median(&mut r_cpu),
    ]
}

fn main() {
    let rounds: usize = std::env::var("LOG_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for provider in providers() {
        let name = provider.name();
        for (kind, label, count) in [
            (Store::Memory, "memory", 20_000),
            (Store::File, "file, fsync always", 20_000),
        ] {
            let [s, w, rw, c, rc] = append_figures(&provider, rounds, count, kind);
            println!(
                "replog/{name}/append ({label}): single-node {s:.0}/s, quorum of 3 {w:.0}/s all nodes on one core ({rw:.2}x), {c:.0}/s of the leader's time ({rc:.2}x)"
            );
        }
        let (mut r_cu, mut cu, mut st) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (c, s) = catchup_round(&provider);
            r_cu.push(c / s);
            cu.push(c);
            st.push(s);
        }
        println!(
            "replog/{name}/catchup: {:.0} MB/s catch-up, {:.0} MB/s bulk stream ({:.2}x)",
            median(&mut cu),
            median(&mut st),
            median(&mut r_cu)
        );
    }
}
