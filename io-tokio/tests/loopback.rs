//! End to end on 127.0.0.1 with tokio: handshakes, datagrams, streams with large transfers,
//! the four nRPC shapes, cancellation by drop and by token, deadlines, and a graceful
//! shutdown that leaves no task behind.

mod common;
use common::endpoint;

use std::time::Duration;

use io_tokio::proto_core::rpc::RpcError;
use io_tokio::proto_core::{DisconnectReason, Seed};
use io_tokio::{Endpoint, EndpointConfig, Identity, Mode, PeerSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pair() -> (
    Endpoint,
    Endpoint,
    io_tokio::Connection,
    io_tokio::Connection,
) {
    let a = endpoint(1);
    let b = endpoint(2);
    let conn = a
        .connect(b.local_addr(), b.peer_spec())
        .await
        .expect("connect");
    let accepted = b.accept().await.expect("accept");
    assert_eq!(conn.peer(), b.node_id());
    assert_eq!(accepted.peer(), a.node_id());
    (a, b, conn, accepted)
}

fn demo_service() -> io_tokio::Service {
    io_tokio::demo::service()
}

#[tokio::test]
async fn handshake_and_datagrams() {
    let (a, b, conn, accepted) = pair().await;
    conn.send_datagram(b"ping").expect("send");
    assert_eq!(accepted.recv_datagram().await.expect("recv"), b"ping");
    accepted.send_datagram(b"pong").expect("send");
    assert_eq!(conn.recv_datagram().await.expect("recv"), b"pong");
    // A second connection to the same peer by IK, from the spec the first one learned.
    assert_eq!(conn.peer_spec(), b.peer_spec());
    conn.close(9);
    assert_eq!(
        accepted.closed().await,
        DisconnectReason::ClosedByPeer { code: 9 }
    );
    assert!(accepted.send_datagram(b"late").is_err());
    a.shutdown(0, Duration::from_millis(100)).await;
    b.shutdown(0, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_connect_to_nobody_fails_with_a_clear_reason() {
    let mut core = io_tokio::default_config(Seed::from_u64(5));
    core.handshake_retry_initial = Duration::from_millis(50);
    core.handshake_timeout = Duration::from_millis(400);
    let a = Endpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Identity::from_secret_bytes([5; 32]),
        EndpointConfig::new(core),
    )
    .expect("bind");
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let err = a
        .connect(silent.local_addr().expect("addr"), PeerSpec::any())
        .await
        .expect_err("nobody answers");
    let text = err.to_string();
    assert!(text.contains("did not answer"), "{text}");
}

#[tokio::test]
async fn binding_a_port_in_use_says_so() {
    let a = endpoint(3);
    let err = Endpoint::bind(
        a.local_addr(),
        Identity::from_secret_bytes([4; 32]),
        EndpointConfig::new(io_tokio::default_config(Seed::from_u64(4))),
    )
    .expect_err("in use");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ordered_transfer_arrives_intact() {
    let (a, b, conn, accepted) = pair().await;
    const LEN: usize = 16 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let expected = data.clone();
    let reader = tokio::spawn(async move {
        let mut s = accepted.accept_stream().await.expect("stream");
        let mut got = Vec::with_capacity(LEN);
        s.read_to_end(&mut got).await.expect("read");
        got
    });
    let mut s = conn.open_stream(Mode::Ordered).expect("open");
    s.write_all(&data).await.expect("write");
    s.shutdown().await.expect("finish acknowledged");
    let got = reader.await.expect("join");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes differ");
    a.shutdown(0, Duration::from_millis(200)).await;
    b.shutdown(0, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn message_streams_keep_boundaries_and_lose_nothing() {
    let (_a, _b, conn, accepted) = pair().await;
    let mut s = conn.open_stream(Mode::Unordered).expect("open");
    for i in 0..100u32 {
        s.send_message(&i.to_be_bytes()).await.expect("send");
    }
    s.finish().await.expect("finish");
    let mut r = accepted.accept_stream().await.expect("accept");
    let mut got = std::collections::BTreeSet::new();
    while let Some(m) = r.recv_message().await.expect("recv") {
        let m: [u8; 4] = m.as_slice().try_into().expect("a whole 4-byte message");
        assert!(got.insert(u32::from_be_bytes(m)), "a message came twice");
    }
    assert_eq!(got, (0..100).collect());
}

#[tokio::test]
async fn all_four_rpc_shapes() {
    let (a, b, _conn, _accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    let providers = a.wait_for_service("demo").await;
    assert_eq!(providers, vec![b.node_id()]);

    let reply = a
        .call("demo", "upper")
        .unary(b"hello")
        .await
        .expect("unary");
    assert_eq!(reply, b"HELLO");

    match a.call("demo", "fail").peer(b.node_id()).unary(b"").await {
        Err(RpcError::ServerError { status, message }) => {
            assert_eq!(status, 0x8007);
            assert_eq!(message, "refused on purpose");
        }
        other => panic!("expected a server error, got {other:?}"),
    }

    let mut rs = a
        .call("demo", "count")
        .server_streaming(b"50")
        .expect("start");
    let mut n = 0;
    while let Some(m) = rs.next().await {
        assert_eq!(m.expect("message"), n.to_string().as_bytes());
        n += 1;
    }
    assert_eq!(n, 50);

    let (mut sink, reply) = a.call("demo", "sum").client_streaming().expect("start");
    for _ in 0..40 {
        sink.send(&[1, 2, 3]).await.expect("send");
    }
    sink.close();
    assert_eq!(reply.await.expect("sum"), b"240");

    let (mut sink, mut rs) = a.call("demo", "echo").duplex().expect("start");
    for i in 0..20u8 {
        sink.send(&[i; 10]).await.expect("send");
        assert_eq!(rs.next().await.expect("item").expect("ok"), vec![i; 10]);
    }
    sink.close();
    assert!(rs.next().await.is_none());
}

#[tokio::test]
async fn request_sinks_are_futures_sinks_with_back_pressure() {
    use futures_util::{SinkExt, StreamExt};
    let (a, b, _conn, _accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    a.wait_for_service("demo").await;
    // 2,000 requests forwarded into the sink: far more than the server's credit, so
    // `poll_ready` waits for credit again and again; `forward` closes the sink at the end.
    let (sink, reply) = a.call("demo", "sum").client_streaming().expect("start");
    let requests = futures_util::stream::iter((0..2_000u32).map(|i| Ok(vec![(i % 7) as u8])));
    requests.forward(sink).await.expect("forward");
    let want: u32 = (0..2_000u32).map(|i| i % 7).sum();
    assert_eq!(reply.await.expect("sum"), want.to_string().as_bytes());

    // Duplex through `SinkExt::send`, and a send after close is refused with a typed error.
    let (mut sink, mut rs) = a.call("demo", "echo").duplex().expect("start");
    for i in 0..50u8 {
        SinkExt::send(&mut sink, vec![i; 3]).await.expect("send");
        assert_eq!(rs.next().await.expect("item").expect("ok"), vec![i; 3]);
    }
    SinkExt::close(&mut sink).await.expect("close");
    assert_eq!(
        SinkExt::send(&mut sink, vec![0u8; 1]).await,
        Err(RpcError::Invalid(io_tokio::proto_core::rpc::Misuse::Closed))
    );
    assert!(rs.next().await.is_none());
}

#[tokio::test]
async fn dropping_a_call_cancels_it_at_the_server() {
    let (a, b, _conn, _accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    a.wait_for_service("demo").await;
    let call = a.call("demo", "never").unary(b"");
    // Let the request reach the server and its handler start.
    let started = tokio::time::timeout(Duration::from_millis(200), call).await;
    assert!(started.is_err(), "the hanging call cannot finish");
    wait_until(|| b.driver_stats().handlers_started == 1).await;
    // The timeout dropped the call future: CANCEL went out, the handler task is dropped.
    wait_until(|| b.driver_stats().handlers_running == 0).await;
    assert_eq!(b.with_node(|n, _| n.rpc_stats()).cancels_received, 1);
}

#[tokio::test]
async fn a_cancel_token_and_a_deadline_end_calls() {
    let (a, b, _conn, _accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    a.wait_for_service("demo").await;
    let token = a.cancel_token().expect("token");
    let call = a.call("demo", "never").cancel_with(&token).unary(b"");
    let t2 = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        t2.cancel();
    });
    assert_eq!(call.await, Err(RpcError::Cancelled));
    let r = a
        .call("demo", "never")
        .deadline(Duration::from_millis(100))
        .unary(b"")
        .await;
    assert_eq!(r, Err(RpcError::Timeout));
    wait_until(|| b.driver_stats().handlers_running == 0).await;
}

#[tokio::test]
async fn shutdown_tells_peers_and_stops_every_task() {
    let (a, b, conn, accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    a.wait_for_service("demo").await;
    // A stream still being written when the shutdown starts is drained first: the closes
    // wait until the peer has acknowledged all of it.
    let writer = tokio::spawn(async move {
        let mut s = conn.open_stream(Mode::Ordered).expect("open");
        s.write_all(&[7u8; 200_000]).await.expect("write");
        s.shutdown().await
    });
    let reader = tokio::spawn(async move {
        let mut r = accepted.accept_stream().await.expect("stream");
        let mut tail = Vec::new();
        let r = r.read_to_end(&mut tail).await.map(|_| tail.len());
        (r, accepted)
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    a.shutdown(42, Duration::from_secs(2)).await;
    writer
        .await
        .expect("join")
        .expect("every byte acknowledged before the session closed");
    let (read, accepted) = reader.await.expect("join");
    // The reader sees all of it, or (if the close overtook its reads) a reset: never a
    // silently short stream.
    match read {
        Ok(len) => assert_eq!(len, 200_000),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(
        accepted.closed().await,
        DisconnectReason::ClosedByPeer { code: 42 }
    );
    assert!(a.accept().await.is_none());
    assert_eq!(a.stopped().await, "shut down");
    assert!(a.call("demo", "upper").unary(b"x").await.is_err());
    b.shutdown(0, Duration::from_millis(100)).await;
    assert_eq!(b.driver_stats().handlers_running, 0);
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn a_write_dropped_unfinished_resets_but_a_reader_that_read_to_the_end_does_not() {
    let (_a, _b, conn, accepted) = pair().await;
    // Cut short: the reader learns it was not a complete write.
    let mut s = conn.open_stream(Mode::Ordered).expect("open");
    s.write_all(b"half").await.expect("write");
    let mut r = accepted.accept_stream().await.expect("stream");
    let mut buf = [0u8; 4];
    r.read_exact(&mut buf).await.expect("the first half");
    drop(s);
    let mut buf = Vec::new();
    let err = r.read_to_end(&mut buf).await.expect_err("reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    drop(r);
    // Finished: the reader reads to the end and drops its side, which writes nothing; the
    // writer's finish is acknowledged, not reset.
    let mut s = conn.open_stream(Mode::Ordered).expect("open");
    s.write_all(b"whole").await.expect("write");
    let mut r = accepted.accept_stream().await.expect("stream");
    let mut buf = Vec::new();
    let finish = s.shutdown();
    let read = async {
        r.read_to_end(&mut buf).await.expect("read");
        drop(r);
    };
    let (finished, ()) = tokio::join!(finish, read);
    finished.expect("acknowledged");
    assert_eq!(buf, b"whole");
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}

#[tokio::test]
async fn typed_calls_retries_and_a_breaker() {
    use io_tokio::proto_core::rpc::resilience::{BreakerConfig, BreakerState, RetryPolicy};
    use io_tokio::proto_core::rpc::typed::Json;
    let (a, b, _conn, _accepted) = pair().await;
    // A call before anyone serves the method fails with NoRoute; with retries it waits for
    // the service, which comes up 100 ms later.
    let server = b.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let svc = io_tokio::Service::new("math")
            .unary_typed::<Json, Add, i64, _, _>("add", |_req, add: Add| async move {
                Ok(add.a + add.b)
            });
        server.serve(svc).expect("serve");
    });
    assert_eq!(
        a.call("math", "add").unary(b"{}").await,
        Err(RpcError::NoRoute)
    );
    let policy = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let body = br#"{"a":2,"b":3}"#;
    let r = a
        .call("math", "add")
        .unary_with_retry(body, policy, &Seed::from_u64(9))
        .await;
    assert_eq!(r, Ok(b"5".to_vec()));
    let sum: i64 = a
        .call("math", "add")
        .unary_typed::<Json, _, i64>(&Add { a: 40, b: 2 })
        .await
        .expect("typed call");
    assert_eq!(sum, 42);
    // A request that does not decode is the caller's fault: status 0x8000.
    match a.call("math", "add").unary(b"not json").await {
        Err(RpcError::ServerError { status, .. }) => assert_eq!(status, 0x8000),
        other => panic!("expected a bad-request status, got {other:?}"),
    }
    // Two failures in a row open the breaker: the next call is refused without being sent.
    let breaker = a.breaker(BreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_secs(60),
    });
    for _ in 0..2 {
        let r = breaker.run(|| a.call("demo", "upper").unary(b"x")).await;
        assert_eq!(r.expect("let through"), Err(RpcError::NoRoute));
    }
    assert!(
        matches!(breaker.state(), BreakerState::Open { .. }),
        "{breaker:?}"
    );
    let started = a.with_node(|n, _| n.rpc_stats()).calls_started;
    assert!(breaker
        .run(|| a.call("math", "add").unary(body))
        .await
        .is_err());
    assert_eq!(
        a.with_node(|n, _| n.rpc_stats()).calls_started,
        started,
        "nothing was sent"
    );
    assert_eq!(breaker.trips(), 1);
}

#[tokio::test]
async fn dropping_a_response_stream_cancels_the_call_and_the_observer_sees_every_call() {
    let (a, b, _conn, _accepted) = pair().await;
    b.serve(demo_service()).expect("serve");
    a.wait_for_service("demo").await;
    a.set_call_observer(true);
    // A long count: take two items, then drop the stream.
    let mut rs = a
        .call("demo", "count")
        .server_streaming(b"1000000")
        .expect("start");
    assert_eq!(rs.next().await.expect("item").expect("ok"), b"0");
    assert_eq!(rs.next().await.expect("item").expect("ok"), b"1");
    drop(rs);
    wait_until(|| b.with_node(|n, _| n.rpc_stats()).cancels_received == 1).await;
    wait_until(|| b.driver_stats().handlers_running == 0).await;
    assert_eq!(
        a.call("demo", "upper").unary(b"ok").await.expect("unary"),
        b"OK"
    );
    let records = a.take_call_records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records.iter().filter(|r| r.method == "upper").count(), 1);
    let m = a.rpc_metrics();
    assert!(m.observer_dropped_total == 0, "{m:?}");
}
