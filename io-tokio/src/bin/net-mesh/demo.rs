//! The demo the README runs, written against `io_async` only, so `net-mesh demo` runs it on
//! tokio over real sockets and `net-mesh sim` runs the same code on io-sim's virtual time.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use io_async::proto_core::replication::{
    Durability, LogSpec, MemLog, Placement, ReplicationConfig, Role,
};
use io_async::proto_core::rpc::RpcError;
use io_async::proto_core::Mode;
use io_async::Endpoint;

/// Prints the story of the run; every line carries the time since the start.
pub struct Narrator {
    start: io_async::proto_core::Instant,
    clock: Endpoint,
}

impl Narrator {
    pub fn new(clock: &Endpoint) -> Narrator {
        Narrator {
            start: clock.now(),
            clock: clock.clone(),
        }
    }

    pub fn say(&self, text: &str) {
        let t = self.clock.now().saturating_duration_since(self.start);
        println!("[{:>8.3} s] {text}", t.as_secs_f64());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn since(ep: &Endpoint, t: io_async::proto_core::Instant) -> Duration {
    ep.now().saturating_duration_since(t)
}

/// `fut`, or an error naming `what` if it takes longer than `limit` on `ep`'s clock.
pub async fn within<T>(
    ep: &Endpoint,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, String> {
    let mut fut = pin!(fut);
    let mut timer = pin!(ep.sleep(limit));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(format!("{what} did not finish within {}", ms(limit))));
        }
        Poll::Pending
    })
    .await
}

/// FNV-1a, to check the file that crossed.
pub fn fnv(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// FNV-1a's starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub file_mib_s: f64,
    pub failover: Duration,
    pub acked: usize,
}

/// Runs the demo over `eps` (3 to 5 bound endpoints). `kill` takes a node down abruptly;
/// `progress(done, total)` follows the file transfer.
pub async fn run(
    eps: &[Endpoint],
    file_bytes: usize,
    kill: impl Fn(&Endpoint),
    mut progress: impl FnMut(u64, u64),
) -> Result<Summary, String> {
    let first = eps.first().ok_or("no nodes")?;
    let n = Narrator::new(first);
    let mut summary = Summary::default();
    for (i, e) in eps.iter().enumerate() {
        n.say(&format!(
            "node {i}: id {} on {}",
            e.node_id(),
            e.local_addr()
        ));
    }

    // 1. Handshakes: a full mesh, each pair once (IK: the initiator knows the peer's keys).
    let t = first.now();
    let mut sessions = 0;
    for (i, a) in eps.iter().enumerate() {
        for b in eps.iter().skip(i + 1) {
            within(
                a,
                Duration::from_secs(10),
                "a handshake",
                a.connect(b.local_addr(), b.peer_spec()),
            )
            .await?
            .map_err(|e| format!("node {i} could not connect: {e}"))?;
            sessions += 1;
        }
    }
    n.say(&format!(
        "handshakes: {} nodes connected pairwise ({sessions} encrypted sessions) in {}",
        eps.len(),
        ms(since(first, t))
    ));

    // 2. nRPC, all four shapes, from node 0 to node 1.
    for e in eps {
        e.serve(io_async::demo::service())
            .map_err(|e| format!("serve: {e}"))?;
    }
    let server = eps.get(1).ok_or("the demo needs at least 2 nodes")?;
    let to = server.node_id();
    within(
        first,
        Duration::from_secs(5),
        "service discovery",
        first.wait_for_service("demo"),
    )
    .await?;
    let t = first.now();
    let reply = first
        .call("demo", "upper")
        .peer(to)
        .unary(b"hello, mesh")
        .await
        .map_err(|e| format!("unary call: {e}"))?;
    n.say(&format!(
        "rpc unary: upper(\"hello, mesh\") = {:?} in {}",
        String::from_utf8_lossy(&reply),
        ms(since(first, t))
    ));
    let t = first.now();
    let mut items = Vec::new();
    let mut rs = first
        .call("demo", "count")
        .peer(to)
        .server_streaming(b"5")
        .map_err(|e| format!("server-streaming call: {e}"))?;
    while let Some(m) = rs.next().await {
        items.push(String::from_utf8_lossy(&m.map_err(|e| format!("count: {e}"))?).into_owned());
    }
    n.say(&format!(
        "rpc server-streaming: count(5) = [{}] in {}",
        items.join(", "),
        ms(since(first, t))
    ));
    let t = first.now();
    let (mut sink, reply) = first
        .call("demo", "sum")
        .peer(to)
        .client_streaming()
        .map_err(|e| format!("client-streaming call: {e}"))?;
    for chunk in [&[1u8, 2, 3][..], &[4, 5], &[6]] {
        sink.send(chunk).await.map_err(|e| format!("sum: {e}"))?;
    }
    sink.close();
    let sum = reply.await.map_err(|e| format!("sum: {e}"))?;
    n.say(&format!(
        "rpc client-streaming: sum([1,2,3], [4,5], [6]) = {} in {}",
        String::from_utf8_lossy(&sum),
        ms(since(first, t))
    ));
    let t = first.now();
    let (mut sink, mut rs) = first
        .call("demo", "echo")
        .peer(to)
        .duplex()
        .map_err(|e| format!("duplex call: {e}"))?;
    let mut echoed = Vec::new();
    for word in ["ping", "pong", "done"] {
        sink.send(word.as_bytes())
            .await
            .map_err(|e| format!("echo: {e}"))?;
        let back = rs
            .next()
            .await
            .ok_or("echo ended early")?
            .map_err(|e| format!("echo: {e}"))?;
        echoed.push(String::from_utf8_lossy(&back).into_owned());
    }
    sink.close();
    n.say(&format!(
        "rpc duplex: echo(ping, pong, done) = [{}] in {}",
        echoed.join(", "),
        ms(since(first, t))
    ));
    let t = first.now();
    let r = first
        .call("demo", "never")
        .peer(to)
        .deadline(Duration::from_millis(200))
        .unary(b"")
        .await;
    if r != Err(RpcError::Timeout) {
        return Err(format!(
            "a call past its deadline should time out, got {r:?}"
        ));
    }
    n.say(&format!(
        "rpc deadline: a call to a handler that never answers ends with Timeout after {}",
        ms(since(first, t))
    ));

    // 3. A file over a stream: a header (length, FNV-1a), then the bytes.
    let data: Vec<u8> = (0..file_bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hash = fnv(FNV_START, &data);
    let conn = first.connection(&to).ok_or("no session to node 1")?;
    let t = first.now();
    let mut out = conn
        .open_stream(Mode::Ordered)
        .map_err(|e| format!("open stream: {e}"))?;
    let receiver = async {
        let peer = server
            .connection(&first.node_id())
            .ok_or("no session to node 0")?;
        let mut s = peer
            .accept_stream()
            .await
            .map_err(|e| format!("accept stream: {e}"))?;
        let mut header = [0u8; 16];
        let mut got = 0;
        while got < 16 {
            let k = s
                .read(header.get_mut(got..).unwrap_or(&mut []))
                .await
                .map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("the stream ended inside its header".to_string());
            }
            got += k;
        }
        let len = u64::from_be_bytes(header[..8].try_into().map_err(|_| "header")?);
        let want = u64::from_be_bytes(header[8..].try_into().map_err(|_| "header")?);
        let mut buf = vec![0u8; 64 * 1024];
        let (mut total, mut h) = (0u64, FNV_START);
        loop {
            let k = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if k == 0 {
                break;
            }
            h = fnv(h, buf.get(..k).unwrap_or(&[]));
            total += k as u64;
            progress(total, len);
        }
        if total != len || h != want {
            return Err(format!("the file arrived damaged: {total} of {len} bytes"));
        }
        Ok::<u64, String>(total)
    };
    let sender = async {
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&(data.len() as u64).to_be_bytes());
        header.extend_from_slice(&hash.to_be_bytes());
        out.write_all(&header)
            .await
            .map_err(|e| format!("write: {e}"))?;
        out.write_all(&data)
            .await
            .map_err(|e| format!("write: {e}"))?;
        out.finish().await.map_err(|e| format!("finish: {e}"))
    };
    // `tokio::join!` only polls: it runs on io-sim's executor too.
    let (sent, received) = tokio::join!(sender, receiver);
    sent?;
    let total = received?;
    let took = since(first, t);
    summary.file_mib_s = total as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-9);
    n.say(&format!(
        "file: {:.1} MiB from node 0 to node 1 over one stream in {} ({:.1} MiB/s), checksum verified",
        total as f64 / (1024.0 * 1024.0),
        ms(took),
        summary.file_mib_s
    ));

    // 4. A replicated log on every node; quorum appends at the leader.
    let ids: Vec<_> = eps.iter().map(Endpoint::node_id).collect();
    let cfg = ReplicationConfig {
        factor: u8::try_from(eps.len()).map_err(|_| "too many nodes")?,
        heartbeat_ms: 100,
        placement: Placement::Pinned(ids),
        ..ReplicationConfig::default()
    };
    let mut logs = Vec::new();
    for e in eps {
        let store = Box::new(MemLog::new(1 << 16, 1 << 16));
        logs.push(
            e.open_log("demo-log", LogSpec::new(cfg.clone(), store))
                .map_err(|e| format!("open log: {e}"))?,
        );
    }
    let t = first.now();
    let alive: Vec<usize> = (0..eps.len()).collect();
    let leader = wait_leader(first, &logs, &alive).await?;
    n.say(&format!(
        "log: node {leader} leads \"demo-log\" after {}",
        ms(since(first, t))
    ));
    let t = first.now();
    let mut acked = Vec::new();
    let lead_log = logs.get(leader).ok_or("leader log")?;
    for i in 0..100 {
        let p = format!("entry {i}").into_bytes();
        lead_log
            .append(&p, Durability::Quorum)
            .await
            .map_err(|e| format!("append: {e}"))?;
        acked.push(p);
    }
    n.say(&format!(
        "log: 100 appends acknowledged by a quorum in {}",
        ms(since(first, t))
    ));

    // 5. Kill the leader; a survivor takes over; nothing acknowledged is lost.
    let victim = eps.get(leader).ok_or("leader")?;
    let killed = victim.now();
    kill(victim);
    n.say(&format!(
        "failover: node {leader} (the leader) killed without warning"
    ));
    let survivors: Vec<usize> = alive.iter().copied().filter(|&i| i != leader).collect();
    let watcher = eps
        .get(*survivors.first().ok_or("no survivor")?)
        .ok_or("survivor")?;
    let next = wait_leader(watcher, &logs, &survivors).await?;
    summary.failover = watcher.now().saturating_duration_since(killed);
    n.say(&format!(
        "failover: node {next} leads after {} (3 missed heartbeats of 100 ms, then an election)",
        ms(summary.failover)
    ));
    let next_log = logs.get(next).ok_or("new leader log")?;
    for i in 100..120 {
        let p = format!("entry {i}").into_bytes();
        next_log
            .append(&p, Durability::Quorum)
            .await
            .map_err(|e| format!("append after failover: {e}"))?;
        acked.push(p);
    }
    for &i in &survivors {
        let log = logs.get(i).ok_or("log")?;
        let mut tail = log.tail(0);
        let mut got = Vec::new();
        while got.len() < acked.len() {
            let e = within(
                watcher,
                Duration::from_secs(10),
                "reading the log",
                tail.next(),
            )
            .await?
            .ok_or("the log closed")?;
            got.push(e.payload);
        }
        if got != acked {
            let mut why = String::new();
            let _ = write!(why, "node {i} holds a different log than was acknowledged");
            return Err(why);
        }
    }
    summary.acked = acked.len();
    n.say(&format!(
        "failover: 20 more appends at the new leader; every survivor holds all {} acknowledged entries, in order: none lost",
        acked.len()
    ));

    // 6. Graceful shutdown of the survivors.
    let t = watcher.now();
    for &i in &survivors {
        if let Some(e) = eps.get(i) {
            e.shutdown(0, Duration::from_millis(500)).await;
        }
    }
    n.say(&format!(
        "shutdown: survivors closed their sessions and stopped in {}",
        ms(since(watcher, t))
    ));
    Ok(summary)
}

async fn wait_leader(
    ep: &Endpoint,
    logs: &[io_async::Log],
    among: &[usize],
) -> Result<usize, String> {
    for _ in 0..2000 {
        for &i in among {
            if logs
                .get(i)
                .and_then(io_async::Log::status)
                .is_some_and(|s| s.role == Role::Leader)
            {
                return Ok(i);
            }
        }
        ep.sleep(Duration::from_millis(5)).await;
    }
    Err("no leader was elected within 10 s".into())
}
