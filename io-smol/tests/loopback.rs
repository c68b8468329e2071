//! End to end on 127.0.0.1 with async-io: under smol's executor and under async-std's.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use io_smol::proto_core::Seed;
use io_smol::{Endpoint, EndpointConfig, Identity, Mode, SmolRuntime};

fn endpoint(rt: &SmolRuntime, n: u8) -> Endpoint {
    let config = EndpointConfig::new(io_smol::default_config(Seed::from_u64(u64::from(n))));
    Endpoint::bind_on(
        rt.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        Identity::from_secret_bytes([n; 32]),
        config,
    )
    .expect("bind")
}

/// The application code both executors run: a handshake, a 4 MiB stream through
/// futures-io's traits, the four RPC shapes, and a graceful shutdown.
async fn scenario(rt: SmolRuntime) {
    let a = endpoint(&rt, 11);
    let b = endpoint(&rt, 12);
    b.serve(io_smol::demo::service()).expect("serve");
    let conn = a
        .connect(b.local_addr(), b.peer_spec())
        .await
        .expect("connect");
    let accepted = b.accept().await.expect("accept");
    assert_eq!(accepted.peer(), a.node_id());

    const LEN: usize = 4 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
    let mut s = conn.open_stream(Mode::Ordered).expect("open");
    let writer = async {
        s.write_all(&data).await.expect("write");
        s.close().await.expect("finish acknowledged");
    };
    let reader = async {
        let mut r = accepted.accept_stream().await.expect("stream");
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        got
    };
    let ((), got) = futures_lite::future::zip(writer, reader).await;
    assert!(got == data, "bytes differ ({} of {LEN})", got.len());

    a.wait_for_service("demo").await;
    assert_eq!(
        a.call("demo", "upper").unary(b"smol").await.expect("unary"),
        b"SMOL"
    );
    let mut rs = a
        .call("demo", "count")
        .server_streaming(b"5")
        .expect("start");
    let mut items = Vec::new();
    while let Some(m) = rs.next().await {
        items.push(m.expect("item"));
    }
    assert_eq!(items, [b"0", b"1", b"2", b"3", b"4"].map(|b| b.to_vec()));
    let (mut sink, reply) = a.call("demo", "sum").client_streaming().expect("start");
    for _ in 0..10 {
        sink.send(b"abc").await.expect("send");
    }
    sink.close();
    assert_eq!(reply.await.expect("reply"), b"2940"); // 10 x (97 + 98 + 99)
    let (mut sink, mut rs) = a.call("demo", "echo").duplex().expect("start");
    sink.send(b"one").await.expect("send");
    assert_eq!(rs.next().await.expect("item").expect("ok"), b"one");
    sink.close();
    assert!(rs.next().await.is_none());

    a.shutdown(0, Duration::from_millis(500)).await;
    b.shutdown(0, Duration::from_millis(500)).await;
    assert_eq!(b.driver_stats().handlers_running, 0);
}

#[test]
fn under_smol() {
    smol::block_on(scenario(SmolRuntime::new()));
}

#[test]
fn under_async_std() {
    let rt = SmolRuntime::with_spawner(|t| {
        async_std::task::spawn(t);
    });
    async_std::task::block_on(scenario(rt));
}
