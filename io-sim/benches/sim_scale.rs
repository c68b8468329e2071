//! Scale and speed figures that a criterion loop would take too long to repeat:
//!
//! - a 1,000-node world with 10,000 encrypted sessions and a 60-second virtual run: wall time
//!   and peak memory (the process's high-water mark);
//! - the speed-up over real time of a 5-node mesh.
//!
//! `cargo bench -p io-sim --bench sim_scale`

use std::time::Duration;

use io_sim::scenarios::{self, host_addr, identity, Params};
use io_sim::{HostId, World};
use proto_core::{Instant, Node, PeerSpec};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn big_world(nodes: usize, per_node: usize) -> World<Node> {
    let mut w: World<Node> = World::new(1);
    w.keep_events(false);
    for i in 0..nodes {
        w.add_host(format!("n{i}"), host_addr(i), scenarios::node_factory(i));
    }
    let keys: Vec<[u8; 32]> = (0..nodes)
        .map(|i| {
            w.machine(HostId(i as u32))
                .map_or([0; 32], Node::static_key)
        })
        .collect();
    for i in 0..nodes {
        for k in 1..=per_node {
            let j = (i + k) % nodes;
            let spec = PeerSpec::known(identity(j).public(), keys[j]);
            // Spread the handshakes over the first ten seconds.
            let at = Instant::from_micros(
                ((i * per_node + k) as u64 * 10_000_000) / (nodes * per_node) as u64,
            );
            w.at(at, move |w| {
                let _ = w.with_machine(HostId(i as u32), |m, now| {
                    m.connect(now, host_addr(j), spec)
                });
            });
        }
    }
    w
}

fn main() {
    let start = std::time::Instant::now();
    let mut w = big_world(1_000, 10);
    let built = start.elapsed();
    w.run_until(Instant::from_millis(60_000)).unwrap();
    let wall = start.elapsed();
    let sessions: usize = (0..1_000)
        .filter_map(|i| w.machine(HostId(i)))
        .map(Node::session_count)
        .sum();
    let s = w.stats();
    println!(
        "1000 nodes, {} session ends established ({} sessions), 60 s virtual: wall {:.2} s (setup {:.2} s), \
         {} deliveries, {} timers, peak RSS {} MiB",
        sessions,
        sessions / 2,
        wall.as_secs_f64(),
        built.as_secs_f64(),
        s.delivered,
        s.timers,
        peak_rss_kib().map_or(0, |k| k / 1024)
    );

    let p = Params {
        nodes: 5,
        messages: 200,
        duration: Duration::from_secs(300),
        ..Params::default()
    };
    let start = std::time::Instant::now();
    let mut w = scenarios::mesh(&p);
    w.keep_events(false);
    w.run_until(Instant::ZERO + p.duration).unwrap();
    let wall = start.elapsed().as_secs_f64();
    println!(
        "5-node mesh, 300 s virtual ({} deliveries): wall {:.3} s, {:.0}x real time",
        w.stats().delivered,
        wall,
        300.0 / wall
    );
}
