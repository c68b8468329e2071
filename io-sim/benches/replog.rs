//! Replicated-log failover in the simulator, in virtual time (the same table every run).
//!
//! Three replicas with a 100 ms heartbeat on links of 2 ms each way (4 ms RTT), a client
//! writing every 10 ms to whoever leads, disks that sync in 2 ms. At 5 s the leader crashes.
//! Failover time is from the crash to the first write the new leader accepts (silence detection,
//! 3 heartbeats; the election, one round trip plus the vote's sync; the client's next write);
//! the aim is at most 3 heartbeats + 2 RTT = 308 ms (the client's 10 ms cadence adds up to
//! 10 ms to it). Also shown: to the election, and to the first write that new
//! leader has acknowledged on a majority (one more round trip and two syncs). 20 seeds; the
//! seed moves the jitter and which node leads.
//!
//! `cargo bench -p io-sim --bench replog`.

use std::time::Duration;

use io_sim::replog::{replog, LogParams};
use io_sim::{HostId, LinkConfig};
use proto_core::replication::role::Role;
use proto_core::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let crash_at = Instant::from_millis(5_000);
    let mut times = Vec::new();
    let mut acked = Vec::new();
    let mut elected = Vec::new();
    for seed in 1..=20u64 {
        let p = LogParams {
            seed,
            nodes: 3,
            chaos_until: Instant::ZERO,
            end: Instant::from_millis(12_000),
            link: LinkConfig {
                jitter: Duration::from_micros(500),
                ..LinkConfig::with_latency(Duration::from_millis(2))
            },
            write_every: Duration::from_millis(10),
            ..LogParams::default()
        };
        let (mut w, history) = replog(p);
        let crashed = std::rc::Rc::new(std::cell::Cell::new(usize::MAX));
        let c2 = crashed.clone();
        w.at(crash_at, move |w| {
            for i in 0..3u32 {
                if w.machine(HostId(i))
                    .is_some_and(|m| m.replica.role() == Role::Leader)
                {
                    c2.set(i as usize);
                    w.crash(HostId(i));
                }
            }
        });
        w.run_until(p.end).expect("no violation");
        let old = crashed.get();
        let h = history.borrow();
        let after = |v: &[(Instant, usize)]| {
            v.iter()
                .find(|(t, host)| *t > crash_at && *host != old)
                .map(|(t, _)| *t - crash_at)
                .expect("the new leader took a write")
        };
        elected.push(after(&h.leader_times));
        times.push(after(&h.accept_times));
        acked.push(after(&h.ack_times));
    }
    times.sort_unstable();
    acked.sort_unstable();
    elected.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("failover, 3 replicas, heartbeat 100 ms, RTT 4 ms, 20 seeds (virtual time)");
    println!("| from the crash to | min | median | max | aim |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (what, v, aim) in [
        ("a new leader", &elected, ""),
        ("the first write the new leader accepts", &times, "308 ms"),
        ("the first write it acknowledged on a majority", &acked, ""),
    ] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {aim} |",
            ms(v[0]),
            ms(v[v.len() / 2]),
            ms(*v.last().unwrap())
        );
    }
}
