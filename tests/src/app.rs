//! One application written against `io_async` only, run unchanged under tokio, smol and
//! io-sim by `tests/app_everywhere.rs`: it serves the four RPC shapes, calls them, moves a
//! stream and checks every answer, and returns a [`Report`] that must be the same on every
//! runtime.

use std::time::Duration;

use io_async::proto_core::rpc::RpcError;
use io_async::proto_core::Mode;
use io_async::Endpoint;

/// What the application saw; equal on every runtime for the same inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Bytes that crossed the stream.
    pub stream_bytes: usize,
    /// FNV-1a of those bytes as received.
    pub stream_hash: u64,
    /// Unary replies that matched.
    pub unary_ok: u32,
    /// Server-streaming items received in order.
    pub streamed: u32,
    /// The client-streaming sum.
    pub sum: u64,
    /// Duplex echoes that matched.
    pub echoed: u32,
    /// Whether a call to a handler that never answers ended with `Timeout` at its deadline.
    pub deadline_hit: bool,
}

/// FNV-1a, to compare byte streams without holding two copies.
#[must_use]
pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the application between `client` and `server` (two bound endpoints): `len` bytes on
/// a stream and every RPC shape. Panics on a wrong answer, like a test.
pub async fn exercise(client: &Endpoint, server: &Endpoint, len: usize) -> Report {
    server.serve(io_async::demo::service()).expect("serve");
    let conn = client
        .connect(server.local_addr(), server.peer_spec())
        .await
        .expect("connect");
    let accepted = server.accept().await.expect("accept");
    assert_eq!(accepted.peer(), client.node_id());

    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    let mut out = conn.open_stream(Mode::Ordered).expect("open");
    let writer = async {
        out.write_all(&data).await.expect("write");
        out.finish().await.expect("finish");
    };
    let reader = async {
        let mut s = accepted.accept_stream().await.expect("accept stream");
        s.read_all(len + 1).await.expect("read")
    };
    let ((), got) = futures_lite::future::zip(writer, reader).await;
    assert!(got == data, "stream bytes differ");

    client.wait_for_service("demo").await;
    let mut unary_ok = 0;
    for i in 0..20u8 {
        let body = [b'a' + i % 26; 8];
        let reply = client
            .call("demo", "upper")
            .unary(&body)
            .await
            .expect("unary");
        assert_eq!(reply, body.to_ascii_uppercase());
        unary_ok += 1;
    }

    let mut rs = client
        .call("demo", "count")
        .server_streaming(b"100")
        .expect("count");
    let mut streamed = 0u32;
    while let Some(m) = rs.next().await {
        assert_eq!(m.expect("item"), streamed.to_string().as_bytes());
        streamed += 1;
    }

    let (mut sink, reply) = client.call("demo", "sum").client_streaming().expect("sum");
    for i in 0..50u8 {
        sink.send(&[i, 1]).await.expect("send");
    }
    sink.close();
    let sum: u64 = String::from_utf8(reply.await.expect("sum reply"))
        .expect("text")
        .parse()
        .expect("a number");

    let (mut sink, mut rs) = client.call("demo", "echo").duplex().expect("echo");
    let mut echoed = 0;
    for i in 0..20u8 {
        sink.send(&[i; 16]).await.expect("send");
        assert_eq!(rs.next().await.expect("echo").expect("ok"), vec![i; 16]);
        echoed += 1;
    }
    sink.close();
    assert!(rs.next().await.is_none());

    let r = client
        .call("demo", "never")
        .deadline(Duration::from_millis(300))
        .unary(b"")
        .await;
    let deadline_hit = r == Err(RpcError::Timeout);

    Report {
        stream_bytes: got.len(),
        stream_hash: fnv(&got),
        unary_ok,
        streamed,
        sum,
        echoed,
        deadline_hit,
    }
}

/// The report [`exercise`] must return for `len` stream bytes.
#[must_use]
pub fn expected(len: usize) -> Report {
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    Report {
        stream_bytes: len,
        stream_hash: fnv(&data),
        unary_ok: 20,
        streamed: 100,
        sum: (0..50u64).sum::<u64>() + 50,
        echoed: 20,
        deadline_hit: true,
    }
}

/// What [`log_failover`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverReport {
    /// Appends acknowledged by a quorum before the leader was killed.
    pub acked_before: usize,
    /// Appends acknowledged by the new leader.
    pub acked_after: usize,
    /// From the kill to a survivor leading, on the runtime's clock.
    pub failover: Duration,
    /// Whether every acknowledged payload was in every survivor's committed log, in order.
    pub nothing_lost: bool,
}

/// The log the failover application writes.
pub const LOG: &str = "orders";

/// The replicated-log application: the endpoints connect in a full mesh and open [`LOG`]
/// pinned on all of them (heartbeat 100 ms) over the stores `store(i)` gives; the leader
/// takes `before` quorum appends; then `kill` takes the leader down (abruptly), a survivor
/// takes over, takes `after` more, and every survivor's committed log must hold every
/// acknowledged payload.
pub async fn log_failover(
    eps: &[Endpoint],
    mut store: impl FnMut(usize) -> Box<dyn io_async::proto_core::replication::LogStore + Send>,
    before: usize,
    after: usize,
    kill: impl FnOnce(&Endpoint),
) -> FailoverReport {
    use io_async::proto_core::replication::{
        Durability, LogSpec, Placement, ReplicationConfig, Role,
    };
    for (i, a) in eps.iter().enumerate() {
        for b in eps.iter().skip(i + 1) {
            a.connect(b.local_addr(), b.peer_spec())
                .await
                .expect("mesh connect");
        }
    }
    let ids: Vec<_> = eps.iter().map(Endpoint::node_id).collect();
    let cfg = ReplicationConfig {
        factor: u8::try_from(eps.len()).expect("at most 16 nodes"),
        heartbeat_ms: 100,
        placement: Placement::Pinned(ids.clone()),
        ..ReplicationConfig::default()
    };
    let logs: Vec<_> = eps
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.open_log(LOG, LogSpec::new(cfg.clone(), store(i)))
                .expect("open log")
        })
        .collect();
    let leader_of = |alive: &[usize]| {
        alive.iter().copied().find(|&i| {
            logs.get(i)
                .and_then(|l| l.status())
                .is_some_and(|s| s.role == Role::Leader)
        })
    };
    let all: Vec<usize> = (0..eps.len()).collect();
    let clock = eps.first().expect("at least one endpoint");
    let mut leader = None;
    for _ in 0..1000 {
        leader = leader_of(&all);
        if leader.is_some() {
            break;
        }
        clock.sleep(Duration::from_millis(10)).await;
    }
    let leader = leader.expect("a leader within 10 s");
    let mut acked = Vec::new();
    for i in 0..before {
        let payload = format!("order-{i}").into_bytes();
        let l = logs.get(leader).expect("leader log");
        l.append(&payload, Durability::Quorum)
            .await
            .expect("quorum append");
        acked.push(payload);
    }
    let victim = eps.get(leader).expect("leader endpoint");
    let killed_at = victim.now();
    kill(victim);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let observer = eps
        .get(*survivors.first().expect("a survivor"))
        .expect("survivor");
    let mut next = None;
    for _ in 0..2000 {
        next = leader_of(&survivors);
        if next.is_some() {
            break;
        }
        observer.sleep(Duration::from_millis(5)).await;
    }
    let next = next.expect("a new leader within 10 s");
    let failover = Duration::from_nanos(
        observer
            .now()
            .saturating_duration_since(killed_at)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX),
    );
    let mut acked_after = 0;
    for i in 0..after {
        let payload = format!("order-after-{i}").into_bytes();
        let l = logs.get(next).expect("new leader log");
        match l.append(&payload, Durability::Quorum).await {
            Ok(_) => {
                acked.push(payload);
                acked_after += 1;
            }
            Err(e) => panic!("the new leader refused an append: {e}"),
        }
    }
    // Every survivor must come to hold every acknowledged payload, in order.
    let mut nothing_lost = true;
    for &i in &survivors {
        let log = logs.get(i).expect("log");
        let mut tail = log.tail(0);
        let mut got = Vec::new();
        while got.len() < acked.len() {
            match tail.next().await {
                Some(e) => got.push(e.payload),
                None => break,
            }
        }
        nothing_lost &= got == acked;
    }
    FailoverReport {
        acked_before: before,
        acked_after,
        failover,
        nothing_lost,
    }
}
