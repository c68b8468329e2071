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
//! Two tables: replicas on raw datagrams (`io_sim::replog`), and replicas inside `Node`s,
//! their messages on log streams over encrypted sessions (`io_sim::meshlog`).
//!
//! `cargo bench -p io-sim --bench replog`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use io_sim::replog::{History, LogParams, LogView};
use io_sim::{HostId, LinkConfig, Machine, World};
use proto_core::Instant;

type Build<M> = fn(LogParams) -> (World<M>, Rc<RefCell<History>>);

fn measure<M: Machine + LogView + 'static>(title: &str, build: Build<M>) {
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
        let (mut w, history) = build(p);
        let crashed = Rc::new(std::cell::Cell::new(usize::MAX));
        let c2 = crashed.clone();
        w.at(crash_at, move |w| {
            for i in 0..3u32 {
                if w.machine(HostId(i)).is_some_and(LogView::leads) {
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
    println!("failover, {title}, 3 replicas, heartbeat 100 ms, RTT 4 ms, 20 seeds (virtual time)");
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
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    measure("raw datagrams", io_sim::replog::replog);
    measure("over Node sessions", io_sim::meshlog::meshlog);
}
