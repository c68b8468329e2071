//! nRPC in the simulator, in virtual time: figures that depend only on the protocol, so every
//! run prints the same table.
//!
//! - Unary calls on a 100 Mbit/s link with a 10 ms round trip and 1% random loss each way, with
//!   1, 4, 16 and 64 calls in flight: latency percentiles (start to reply, in virtual time) and
//!   calls per virtual second, with the speed-up over one call in flight (the seed system
//!   reached about 4x from 1 to 16).
//! - Server-streaming on the same link: 36-byte messages per virtual second for one call with
//!   the default automatic credit (256 messages) and with 4096.
//!
//! `cargo bench -p io-sim --bench rpc` (`RPC_BENCH_CALLS` sets the calls per row, 4000 by
//! default). Wall-clock time per row is printed too (the simulator's and both nodes' CPU).

use std::time::{Duration, Instant as WallInstant};

use io_sim::rpc::{rpc, RpcOutcome, RpcParams};
use io_sim::scenarios::bottleneck_link;
use proto_core::rpc::Shape;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn run(p: RpcParams) -> (RpcOutcome, Duration) {
    let t = WallInstant::now();
    let (mut w, out) = rpc(p);
    w.run_until(proto_core::Instant::from_millis(600_000))
        .expect("the run fails no check");
    let o = out.borrow().clone();
    (o, t.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls: usize = std::env::var("RPC_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let link = bottleneck_link(5, 0.01);
    println!("unary calls, 10 ms RTT, 1% loss each way, {calls} calls per row (virtual time)");
    println!(
        "| in flight | p50 | p90 | p99 | max | calls per virtual s | vs 1 in flight | wall ms |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut base = None;
    for c in [1usize, 4, 16, 64] {
        let p = RpcParams {
            calls,
            concurrency: c,
            link,
            shapes: &[Shape::Unary],
            deadline: Some(Duration::from_secs(30)),
            ..RpcParams::default()
        };
        let (o, wall) = run(p);
        assert_eq!(o.ok, calls, "every call succeeded: {:?}", o.failed);
        let mut l = o.unary_latencies.clone();
        l.sort_unstable();
        let span = o.finished_at.unwrap() - o.started_at.unwrap();
        let rate = calls as f64 / span.as_secs_f64();
        let b = *base.get_or_insert(rate);
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {c} | {} | {} | {} | {} | {rate:.0} | {:.1}x | {} |",
            ms(percentile(&l, 0.50)),
            ms(percentile(&l, 0.90)),
            ms(percentile(&l, 0.99)),
            ms(*l.last().unwrap()),
            rate / b,
            wall.as_millis()
        );
    }
    println!();
    let messages = 200_000u32;
    for credit in [
        proto_core::rpc::Credit::default(),
        proto_core::rpc::Credit::Auto(4096),
    ] {
        let p = RpcParams {
            calls: 1,
            concurrency: 1,
            link,
            shapes: &[Shape::ServerStreaming],
            stream_len: messages,
            deadline: None,
            credit,
            ..RpcParams::default()
        };
        let (o, wall) = run(p);
        assert_eq!(o.ok, 1, "{:?}", o.failed);
        let span = o.finished_at.unwrap() - o.started_at.unwrap();
        println!(
            "server-streaming, same link, credit {credit:?}: {messages} messages of 36 bytes in {:.2} virtual s = {:.0} messages per virtual s (wall {} ms)",
            span.as_secs_f64(),
            f64::from(messages) / span.as_secs_f64(),
            wall.as_millis()
        );
    }
}
