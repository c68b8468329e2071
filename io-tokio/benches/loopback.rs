//! The driver on 127.0.0.1 against raw UDP on the same sockets, in one run.
//!
//! - `raw`: A sends 1400-byte datagrams with one `send_to` each, as fast as tokio lets it,
//!   for a second; B receives with one `recv_from` each. Goodput is what B received per
//!   second. That is the kernel path the driver uses (one system call per datagram, socket
//!   buffers of `SOCKET_BUFFER`), with no protocol on top: the ceiling.
//! - `stream`: one ordered stream over one encrypted session moves 32 MiB from A to B; goodput
//!   is bytes over the time from the first write to B reading the last byte.
//! - `pingpong/cN`: raw UDP, A keeps N 16-byte datagrams in flight and B echoes each one.
//! - `unary/cN`: N tasks on A each call B's `upper` method (16 bytes each way) in a loop.
//!
//! Calls per second and p50/p99 latency per concurrency; ratios against the ping-pong at 1.
//! `cargo bench -p io-tokio --bench loopback` prints the paired table (`LOOPBACK_ROUNDS`, 3
//! by default), then runs the criterion group (one unary call and one ping-pong per
//! iteration).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use criterion::{criterion_group, Criterion};
use io_tokio::proto_core::Seed;
use io_tokio::{Endpoint, EndpointConfig, Identity, Mode};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

const WINDOW: Duration = Duration::from_secs(1);
const STREAM_BYTES: usize = 32 << 20;

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two workers, as most applications run; `LOOPBACK_RUNTIME=current` for one thread.
fn runtime() -> tokio::runtime::Runtime {
    if std::env::var("LOOPBACK_RUNTIME").is_ok_and(|v| v == "current") {
        return current_thread_runtime();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn udp() -> UdpSocket {
    let s = io_tokio::bind_std("127.0.0.1:0".parse().expect("addr")).expect("bind");
    UdpSocket::from_std(s).expect("tokio socket")
}

async fn pair() -> (
    Endpoint,
    Endpoint,
    io_tokio::Connection,
    io_tokio::Connection,
) {
    let ep = |n: u8| {
        let core = io_tokio::default_config(Seed::from_u64(u64::from(n)));
        Endpoint::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Identity::from_secret_bytes([n; 32]),
            EndpointConfig::new(core),
        )
        .expect("bind")
    };
    let (a, b) = (ep(1), ep(2));
    b.serve(io_tokio::demo::service()).expect("serve");
    let conn = a
        .connect(b.local_addr(), b.peer_spec())
        .await
        .expect("connect");
    let accepted = b.accept().await.expect("accept");
    a.wait_for_service("demo").await;
    (a, b, conn, accepted)
}

/// Raw goodput, bytes per second received. Sender and receiver are tasks on the runtime's
/// workers, as the endpoints' drive loops are, and do nothing but their system calls.
async fn raw_goodput() -> f64 {
    let (a, b) = (udp(), udp());
    let to = b.local_addr().expect("addr");
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                if let Ok((n, _)) = b.recv_from(&mut buf).await {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let tx = tokio::spawn(async move {
        let payload = vec![0x5a; 1400];
        let start = WallInstant::now();
        let mut sent = 0u64;
        while start.elapsed() < WINDOW {
            let _ = a.send_to(&payload, to).await;
            sent += 1;
            if sent % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        start.elapsed().as_secs_f64()
    });
    let elapsed = tx.await.expect("sender");
    // Let the receiver take what is still in its socket buffer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.abort();
    received.load(Ordering::Relaxed) as f64 / elapsed
}

/// Raw goodput with the kernel's batch paths, as the driver's socket uses them: GSO sends of
/// up to the kernel's segment limit of 1400-byte datagrams, GRO + recvmmsg receives
/// (`io_async::kernel`, the driver's own calls), bytes per second received.
async fn raw_batched_goodput() -> f64 {
    use io_tokio::kernel::{Offload, RECV_BATCH};
    use tokio::io::Interest;
    let a = io_tokio::bind_std("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let b = io_tokio::bind_std("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let (oa, ob) = (
        Offload::new((&a).into()).expect("offload"),
        Offload::new((&b).into()).expect("offload"),
    );
    let to = b.local_addr().expect("addr");
    let (a, b) = (
        UdpSocket::from_std(a).expect("a"),
        UdpSocket::from_std(b).expect("b"),
    );
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let received = received.clone();
        tokio::spawn(async move {
            let slot = ob.recv_batch().1.max(1) * 2048;
            let mut buf = vec![0u8; slot * RECV_BATCH];
            let mut meta = vec![io_tokio::RecvMeta::default(); RECV_BATCH];
            loop {
                if b.readable().await.is_err() {
                    return;
                }
                let mut slices: Vec<std::io::IoSliceMut<'_>> =
                    buf.chunks_mut(slot).map(std::io::IoSliceMut::new).collect();
                if let Ok(n) = b.try_io(Interest::READABLE, || {
                    ob.try_recv((&b).into(), &mut slices, &mut meta)
                }) {
                    let bytes: usize = meta.iter().take(n).map(|m| m.len).sum();
                    received.fetch_add(bytes as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let tx = tokio::spawn(async move {
        // A segmented send carries at most 64,000 bytes in all (the UDP limit), as the driver's.
        let segs = oa.max_segments().clamp(1, 64_000 / 1400);
        let payload = vec![0x5a; 1400 * segs];
        let start = WallInstant::now();
        while start.elapsed() < WINDOW {
            if a.writable().await.is_err() {
                break;
            }
            let _ = a.try_io(Interest::WRITABLE, || {
                oa.try_send((&a).into(), &payload, 1400, to)
            });
        }
        start.elapsed().as_secs_f64()
    });
    let elapsed = tx.await.expect("sender");
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.abort();
    received.load(Ordering::Relaxed) as f64 / elapsed
}

/// Stream goodput, bytes per second.
async fn stream_goodput() -> f64 {
    let (a, b, conn, accepted) = pair().await;
    let reader = tokio::spawn(async move {
        let mut s = accepted.accept_stream().await.expect("stream");
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break total;
            }
            total += n;
        }
    });
    let chunk = vec![0xa5u8; 256 * 1024];
    let start = WallInstant::now();
    let mut s = conn.open_stream(Mode::Ordered).expect("open");
    let mut left = STREAM_BYTES;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.expect("write");
        left -= n;
    }
    s.shutdown().await.expect("finish");
    let total = reader.await.expect("reader");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(total, STREAM_BYTES);
    a.shutdown(0, Duration::from_millis(100)).await;
    b.shutdown(0, Duration::from_millis(100)).await;
    total as f64 / elapsed
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn summarise(mut lat: Vec<Duration>, elapsed: Duration) -> Rate {
    lat.sort_unstable();
    let pick = |q: f64| {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Rate {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: pick(0.5),
        p99_us: pick(0.99),
    }
}

/// Raw ping-pong with `c` datagrams in flight: the client loop and the echo are tasks on
/// the runtime's workers, with nothing but their system calls in the loop.
async fn pingpong(c: usize) -> Rate {
    let (a, b) = (udp(), udp());
    let to = b.local_addr().expect("addr");
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            if let Ok((n, from)) = b.recv_from(&mut buf).await {
                let _ = b.send_to(&buf[..n], from).await;
            }
        }
    });
    let client = tokio::spawn(async move {
        let mut sent_at = vec![WallInstant::now(); c];
        let mut lat = Vec::with_capacity(1 << 20);
        for (i, t) in sent_at.iter_mut().enumerate() {
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
            *t = WallInstant::now();
            a.send_to(&msg, to).await.expect("send");
        }
        let start = WallInstant::now();
        let mut buf = [0u8; 64];
        while start.elapsed() < WINDOW {
            let Ok((n, _)) = a.recv_from(&mut buf).await else {
                continue;
            };
            let Some(i) = buf
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8")) as usize)
            else {
                continue;
            };
            if let Some(t) = sent_at.get_mut(i) {
                lat.push(t.elapsed());
                *t = WallInstant::now();
                let _ = a.send_to(&buf[..n], to).await;
            }
        }
        (lat, start.elapsed())
    });
    // Loopback with these buffers does not lose 64 datagrams in flight; if it ever did, the
    // client would wait forever, so give up loudly instead.
    let (lat, elapsed) = tokio::time::timeout(WINDOW * 10, client)
        .await
        .expect("a ping-pong datagram was lost on loopback")
        .expect("client");
    echo.abort();
    summarise(lat, elapsed)
}

/// Unary calls with `c` in flight.
async fn unary(a: &Endpoint, c: usize) -> Rate {
    let start = WallInstant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while start.elapsed() < WINDOW {
                let t = WallInstant::now();
                let r = a.call("demo", "upper").unary(&[b'x'; 16]).await;
                assert_eq!(r.expect("reply"), [b'X'; 16]);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    summarise(all, start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn table() {
    let rounds: usize = std::env::var("LOOPBACK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = runtime();
    let mut raw = Vec::new();
    let mut raw_batched = Vec::new();
    let mut stream = Vec::new();
    let levels = [1usize, 16, 64];
    let mut pp: Vec<Vec<Rate>> = vec![Vec::new(); levels.len()];
    let mut un: Vec<Vec<Rate>> = vec![Vec::new(); levels.len()];
    for round in 0..rounds {
        rt.block_on(async {
            raw.push(raw_goodput().await);
            raw_batched.push(raw_batched_goodput().await);
            stream.push(stream_goodput().await);
            let (a, b, _c, _d) = pair().await;
            for (i, &c) in levels.iter().enumerate() {
                pp[i].push(pingpong(c).await);
                un[i].push(unary(&a, c).await);
            }
            a.shutdown(0, Duration::from_millis(100)).await;
            b.shutdown(0, Duration::from_millis(100)).await;
        });
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let (raw_m, batched_m, stream_m) = (median(raw), median(raw_batched), median(stream));
    println!("loopback, one connection, medians of {rounds} rounds");
    println!("raw UDP, one datagram per call  {:>9.1} MiB/s", mib(raw_m));
    println!(
        "raw UDP, GSO/GRO batches        {:>9.1} MiB/s",
        mib(batched_m)
    );
    println!(
        "stream goodput                  {:>9.1} MiB/s   {:.2} of raw batched, {:.2} of raw single",
        mib(stream_m),
        stream_m / batched_m,
        stream_m / raw_m
    );
    let pp1 = median(pp[0].iter().map(|r| r.per_sec).collect());
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>12}",
        "", "calls/s", "p50 us", "p99 us", "vs pingpong1"
    );
    for (i, &c) in levels.iter().enumerate() {
        for (name, set) in [("pingpong", &pp[i]), ("unary", &un[i])] {
            let rate = median(set.iter().map(|r| r.per_sec).collect());
            let p50 = median(set.iter().map(|r| r.p50_us).collect());
            let p99 = median(set.iter().map(|r| r.p99_us).collect());
            println!(
                "{:<12} {:>10.0} {:>10.1} {:>10.1} {:>12.2}",
                format!("{name}/c{c}"),
                rate,
                p50,
                p99,
                rate / pp1
            );
        }
    }
    let un1 = median(un[0].iter().map(|r| r.per_sec).collect());
    let un64 = median(un[2].iter().map(|r| r.per_sec).collect());
    println!("unary at 64 / unary at 1: {:.2}", un64 / un1);

    // The same calls with everything on one thread: no wake-ups across workers.
    let ct = current_thread_runtime();
    let (mut ct_pp, mut ct_un1, mut ct_un64) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        ct.block_on(async {
            ct_pp.push(pingpong(1).await.per_sec);
            let (a, b, _c, _d) = pair().await;
            ct_un1.push(unary(&a, 1).await.per_sec);
            ct_un64.push(unary(&a, 64).await.per_sec);
            a.shutdown(0, Duration::from_millis(100)).await;
            b.shutdown(0, Duration::from_millis(100)).await;
        });
    }
    let (ct_pp, ct_un1, ct_un64) = (median(ct_pp), median(ct_un1), median(ct_un64));
    println!(
        "current-thread runtime: pingpong/c1 {ct_pp:.0}/s, unary/c1 {ct_un1:.0}/s ({:.2}), \
         unary/c64 {ct_un64:.0}/s ({:.2} of pingpong/c1, {:.2}x unary/c1; {:.2}x the two-worker unary/c64)",
        ct_un1 / ct_pp,
        ct_un64 / ct_pp,
        ct_un64 / ct_un1,
        ct_un64 / un64
    );
}

fn criterion_group_fn(c: &mut Criterion) {
    // Both variants run their loop in a task on the runtime's workers (as the table does),
    // timing `iters` sequential round trips.
    let rt = runtime();
    let (a, b, _c, _d) = rt.block_on(pair());
    let mut g = c.benchmark_group("loopback");
    g.bench_function("unary/c1", |bch| {
        bch.iter_custom(|iters| {
            let a = a.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let t = WallInstant::now();
                    for _ in 0..iters {
                        a.call("demo", "upper")
                            .unary(&[b'x'; 16])
                            .await
                            .expect("reply");
                    }
                    t.elapsed()
                })
                .await
                .expect("task")
            })
        });
    });
    let (x, to, echo) = rt.block_on(async {
        let (x, y) = (udp(), udp());
        let to = y.local_addr().expect("addr");
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                if let Ok((n, from)) = y.recv_from(&mut buf).await {
                    let _ = y.send_to(&buf[..n], from).await;
                }
            }
        });
        (Arc::new(x), to, echo)
    });
    g.bench_function("pingpong/c1", |bch| {
        bch.iter_custom(|iters| {
            let x = x.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let t = WallInstant::now();
                    for _ in 0..iters {
                        x.send_to(&[1u8; 16], to).await.expect("send");
                        x.recv_from(&mut buf).await.expect("recv");
                    }
                    t.elapsed()
                })
                .await
                .expect("task")
            })
        });
    });
    g.finish();
    echo.abort();
    rt.block_on(async {
        a.shutdown(0, Duration::from_millis(100)).await;
        b.shutdown(0, Duration::from_millis(100)).await;
    });
}

criterion_group!(benches, criterion_group_fn);

fn main() {
    // `LOOPBACK_PROFILE=stream`: only the stream transfer, 10 times (for perf).
    if std::env::var("LOOPBACK_PROFILE").is_ok_and(|v| v == "stream") {
        let rt = runtime();
        for _ in 0..10 {
            let g = rt.block_on(stream_goodput());
            println!("stream: {:.1} MiB/s", g / (1024.0 * 1024.0));
        }
        return;
    }
    // `LOOPBACK_PROFILE=N`: only unary calls with N in flight, for 10 windows (for perf).
    if let Some(c) = std::env::var("LOOPBACK_PROFILE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let rt = runtime();
        rt.block_on(async {
            let (a, _b, _c, _d) = pair().await;
            for _ in 0..10 {
                let r = unary(&a, c).await;
                println!(
                    "unary/c{c}: {:.0} calls/s, p50 {:.1} us",
                    r.per_sec, r.p50_us
                );
            }
            let s = a.stats();
            println!("datagrams out {} in {}", s.datagrams_out, s.datagrams_in);
        });
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--list") {
        table();
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
