//! The whole-world target: an io-sim world of real nodes whose workload, links and faults come
//! from the input, with the simulator's reference checks.
//!
//! Three workloads, chosen by the input, each checked after every step of the world (a
//! violation stops the run at the step that caused it) and again at the end:
//! - **a replicated log** over 3 or 5 nodes (`io_sim::meshlog`): writes to whoever leads, the
//!   world's own seeded chaos plus the input's partitions, crashes, restarts and pauses, all
//!   healed before the end. After every step the world's invariant demands that no two
//!   replicas disagree on a committed entry; at the end `replog::check_final` demands the
//!   same of every replica's committed prefix and that no acknowledged write was lost;
//! - **a stream** (`io_sim::transfer`): up to 128 KiB of a seeded byte pattern, ordered or as
//!   unordered messages, over the input's faulty link, blackouts and stalls. The receiver
//!   checks every byte (or message offset) as it reads it; at the end the stream is complete
//!   at both ends, or it failed and both ends were told;
//! - **nRPC** (`io_sim::rpc`): calls of all four shapes with deadlines and cancellations over
//!   links with the input's loss, duplication, reordering and corruption, each answer checked
//!   as it arrives by the scenario's caller; by the end every call has resolved.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use io_sim::replog::{check_final, LogParams};
use io_sim::rpc::{rpc, RpcParams, ALL_SHAPES};
use io_sim::transfer::{transfer, TransferParams};
use io_sim::{Fault, HostId, LinkConfig, ScheduledFault};
use proto_core::{Instant, Mode};

/// One fault of the input, at `at_ms` into the run (within the chaos window).
#[allow(missing_docs)]
#[derive(Arbitrary, Debug)]
pub enum FaultSpec {
    /// Cut `host` off from the others.
    Isolate { host: u8, at_ms: u16 },
    /// Crash `host` (restarted when the chaos ends).
    Crash { host: u8, at_ms: u16 },
    /// Stall `host` for `ms`.
    Pause { host: u8, at_ms: u16, ms: u16 },
    /// Remove every block.
    Heal { at_ms: u16 },
}

impl FaultSpec {
    /// The fault among `hosts` hosts, at its instant within the first `window_ms`; a crash
    /// is a 500 ms stall unless `crashes` (a world whose hosts keep nothing across one).
    fn scheduled(&self, hosts: u32, window_ms: u64, crashes: bool) -> (Instant, Fault) {
        let host = |h: u8| HostId(u32::from(h) % hosts.max(1));
        let at = |ms: u16| Instant::from_millis(u64::from(ms) % window_ms);
        match *self {
            FaultSpec::Isolate { host: h, at_ms } => (
                at(at_ms),
                Fault::Partition {
                    a: vec![host(h)],
                    b: (0..hosts).map(HostId).filter(|x| *x != host(h)).collect(),
                },
            ),
            FaultSpec::Crash { host: h, at_ms } if crashes => (at(at_ms), Fault::Crash(host(h))),
            FaultSpec::Crash { host: h, at_ms } => {
                (at(at_ms), Fault::Pause(host(h), Duration::from_millis(500)))
            }
            FaultSpec::Pause { host: h, at_ms, ms } => (
                at(at_ms),
                Fault::Pause(host(h), Duration::from_millis(u64::from(ms % 3_000))),
            ),
            FaultSpec::Heal { at_ms } => (at(at_ms), Fault::HealAll),
        }
    }
}

#[allow(missing_docs)]
#[derive(Arbitrary, Debug)]
pub struct LinkSpec {
    pub latency_ms: u8,
    pub jitter_ms: u8,
    pub loss_ppm: u16,
    pub duplicate_ppm: u16,
    pub reorder_ppm: u16,
    pub corrupt_ppm: u16,
}

impl LinkSpec {
    fn config(&self) -> LinkConfig {
        let mut l =
            LinkConfig::with_latency(Duration::from_millis(1 + u64::from(self.latency_ms % 40)));
        l.jitter = Duration::from_millis(u64::from(self.jitter_ms % 10));
        // At most 10% loss and 5% of each other fault: hostile, but a world that can finish.
        let scale = |v: u16, max: u32| (u64::from(v) * u64::from(max) / 65_536) as u32;
        l.loss_ppm = scale(self.loss_ppm, 100_000);
        l.duplicate_ppm = scale(self.duplicate_ppm, 50_000);
        l.reorder_ppm = scale(self.reorder_ppm, 50_000);
        l.reorder_delay = Duration::from_millis(5);
        l.corrupt_ppm = scale(self.corrupt_ppm, 50_000);
        l
    }
}

/// What a `world` input means (`examples/show_input.rs world FILE` prints it).
#[allow(missing_docs)]
#[derive(Arbitrary, Debug)]
pub enum WorldInput {
    Log {
        seed: u64,
        five: bool,
        link: LinkSpec,
        faults: Vec<FaultSpec>,
    },
    Stream {
        seed: u64,
        link: LinkSpec,
        kib: u8,
        unordered: bool,
        faults: Vec<FaultSpec>,
    },
    Rpc {
        seed: u64,
        link: LinkSpec,
        calls: u8,
        concurrency: u8,
        cancel_every: u8,
        deadline_ms: u16,
    },
}

/// See the module docs.
pub fn world(data: &[u8]) {
    let Ok(input) = WorldInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    match input {
        WorldInput::Log {
            seed,
            five,
            link,
            faults,
        } => log_world(seed, if five { 5 } else { 3 }, &link, &faults),
        WorldInput::Stream {
            seed,
            link,
            kib,
            unordered,
            faults,
        } => stream_world(seed, &link, kib, unordered, &faults),
        WorldInput::Rpc {
            seed,
            link,
            calls,
            concurrency,
            cancel_every,
            deadline_ms,
        } => rpc_world(seed, &link, calls, concurrency, cancel_every, deadline_ms),
    }
}

fn log_world(seed: u64, nodes: usize, link: &LinkSpec, faults: &[FaultSpec]) {
    let chaos_ms = 4_000u64;
    let p = LogParams {
        seed,
        nodes,
        chaos_until: Instant::from_millis(chaos_ms),
        end: Instant::from_millis(chaos_ms + 8_000),
        link: link.config(),
        sync_latency: Duration::from_millis(2),
        write_every: Duration::from_millis(40),
    };
    let (mut w, history) = io_sim::meshlog::meshlog(p);
    let n = u32::try_from(nodes).unwrap_or(3);
    let mut crashed = Vec::new();
    for f in faults.iter().take(16) {
        let (at, fault) = f.scheduled(n, chaos_ms, true);
        if let Fault::Crash(h) = fault {
            if crashed.contains(&h) {
                continue;
            }
            crashed.push(h);
        }
        w.schedule(ScheduledFault { at, fault });
    }
    // Everything heals when the chaos ends, and every crashed host comes back.
    let end_of_chaos = Instant::from_millis(chaos_ms);
    w.schedule(ScheduledFault {
        at: end_of_chaos,
        fault: Fault::HealAll,
    });
    for h in crashed {
        w.schedule(ScheduledFault {
            at: end_of_chaos,
            fault: Fault::Restart(h),
        });
    }
    if let Err(f) = w.run_until(p.end) {
        panic!("the log world failed: {f:?}");
    }
    let h = history.borrow().clone();
    if let Err(e) = check_final(&w, &h, &p) {
        panic!("log safety: {e}");
    }
}

fn stream_world(seed: u64, link: &LinkSpec, kib: u8, unordered: bool, faults: &[FaultSpec]) {
    let bytes = 1024 * (1 + u64::from(kib % 128));
    let p = TransferParams {
        seed,
        bytes,
        link: link.config(),
        mode: if unordered {
            Mode::Unordered
        } else {
            Mode::Ordered
        },
        ..TransferParams::default()
    };
    let (mut w, out) = transfer(p);
    // Blackouts and stalls of either end in the first 4 s; a crash would take the receiver's
    // memory of the stream with it, so it is a stall here. Everything heals at 4 s.
    let window = 4_000u64;
    for f in faults.iter().take(16) {
        let (at, fault) = f.scheduled(2, window, false);
        w.schedule(ScheduledFault { at, fault });
    }
    w.schedule(ScheduledFault {
        at: Instant::from_millis(window),
        fault: Fault::HealAll,
    });
    if let Err(f) = w.run_until(Instant::from_millis(120_000)) {
        panic!("the stream world failed: {f:?}");
    }
    let o = out.borrow().clone();
    assert!(
        o.complete(bytes) || o.failed_and_told(),
        "the stream neither completed nor failed with both ends told: connected {:?}, {} bytes \
         written, {} of {bytes} read, finished {:?}, acknowledged {:?}, resets {:?} / {:?}",
        o.connected_at,
        o.written,
        o.received,
        o.finished_at,
        o.acknowledged_at,
        o.sender_reset,
        o.receiver_reset
    );
}

fn rpc_world(
    seed: u64,
    link: &LinkSpec,
    calls: u8,
    concurrency: u8,
    cancel_every: u8,
    deadline_ms: u16,
) {
    let p = RpcParams {
        seed,
        calls: 1 + usize::from(calls % 60),
        concurrency: 1 + usize::from(concurrency % 16),
        link: link.config(),
        shapes: ALL_SHAPES,
        stream_len: 4,
        deadline: Some(Duration::from_millis(200 + u64::from(deadline_ms % 5_000))),
        cancel_every: usize::from(cancel_every % 8),
        ..RpcParams::default()
    };
    let (mut w, out) = rpc(p);
    if let Err(f) = w.run_until(Instant::from_millis(120_000)) {
        panic!("the RPC world failed: {f:?}");
    }
    let o = out.borrow().clone();
    assert_eq!(
        o.ok + o.failed.len(),
        p.calls,
        "every call resolves: {} ok, {} failed of {}",
        o.ok,
        o.failed.len(),
        p.calls
    );
}
