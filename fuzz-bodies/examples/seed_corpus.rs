//! Writes the seed inputs of every target into `fuzz/corpus/<target>/seed-*`: valid
//! encodings from the encoders (each decoder target starts from every message it knows), and
//! real traffic captured from a pair of nodes. Fuzzing grows the corpora from there.
//!
//! Run: `cargo run -p net-fuzz-bodies --example seed_corpus` (then `cargo +nightly fuzz cmin`
//! per target keeps them small; see `docs/fuzzing.md`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use net_fuzz_bodies::node::Pair;
use proto_core::crypto::RustCrypto;
use proto_core::replication::Role;
use proto_core::wire::frame::{self, Frame};
use proto_core::wire::stream::{Class, Mode, ResetFrame, ResetOrigin, StreamFrame};
use proto_core::wire::{rpc, sync};
use proto_core::{Identity, Seed};

fn write(target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s)?;
    }
    println!("{target}: {} seeds", seeds.len());
    Ok(())
}

fn frame_bytes(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut at = 0;
    for f in frames {
        at += frame::write(&mut out[at..], f).expect("fits");
    }
    out.truncate(at);
    out
}

fn main() -> std::io::Result<()> {
    // Real traffic: a handshake, datagrams both ways, a close.
    let mut p = Pair::new(Arc::new(RustCrypto));
    let mut packets = Vec::new();
    let spec = p.nodes[1].peer_spec();
    p.nodes[0]
        .connect(p.now, "10.0.0.2:4000".parse().expect("addr"), spec)
        .expect("connect");
    p.drain();
    for _ in 0..64 {
        packets.extend(p.wire[1].iter().cloned());
        packets.extend(p.wire[0].iter().cloned());
        if p.deliver(1, 0).is_none() && p.deliver(0, 0).is_none() {
            break;
        }
    }
    p.advance(Duration::from_millis(10));
    packets.extend(p.wire[0].iter().chain(p.wire[1].iter()).cloned());
    packets.sort();
    packets.dedup();
    write("packet", &packets)?;
    let tagged: Vec<Vec<u8>> = packets
        .iter()
        .map(|d| {
            // (from, gap, bytes) as `arbitrary` reads them: two bytes, then the rest.
            let mut v = vec![1u8, 3u8];
            v.extend_from_slice(d);
            v
        })
        .collect();
    write("node_input", &tagged)?;
    write("handshake_answers", &tagged)?;

    // Frames: each kind alone and a mixed packet.
    let data = [7u8; 40];
    let stream = |class, mode, fin| {
        Frame::Stream(StreamFrame {
            stream: 4,
            seq: 0,
            mode,
            class,
            fin,
            data: &data,
        })
    };
    let frame_sets: Vec<Vec<Frame<'_>>> = vec![
        vec![Frame::Ping],
        vec![Frame::Close(7)],
        vec![Frame::Datagram(b"hello")],
        vec![stream(Class::App, Mode::Ordered, false)],
        vec![stream(Class::App, Mode::Unordered, true)],
        vec![stream(Class::Rpc, Mode::Ordered, true)],
        vec![stream(Class::Log, Mode::Ordered, false)],
        vec![Frame::Reset(ResetFrame {
            stream: 4,
            origin: ResetOrigin::Application,
            code: 3,
            ack: false,
        })],
        vec![
            Frame::Ping,
            Frame::Datagram(b"x"),
            stream(Class::App, Mode::Ordered, true),
            Frame::Close(0),
        ],
    ];
    let mut frames: Vec<Vec<u8>> = frame_sets.iter().map(|f| frame_bytes(f)).collect();
    let mut ack = vec![0u8; 128];
    let n = proto_core::wire::stream::write_ack(&mut ack, 4, 3, 64, &[(5, 7), (9, 12)], false)
        .expect("fits");
    ack.truncate(n);
    frames.push(ack.clone());
    let mut nack = vec![0u8; 128];
    let n = proto_core::wire::stream::write_nack(&mut nack, 4, &[(3, 5)]).expect("fits");
    nack.truncate(n);
    frames.push(nack);
    write("frames", &frames)?;
    // after_handshake bodies: (gap, answer, plaintext) as `arbitrary` reads a lone body.
    let bodies: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut v = vec![1u8, 1u8];
            v.extend_from_slice(f);
            v
        })
        .collect();
    write("after_handshake", &bodies)?;

    // nRPC frames: a call of each shape, then its messages and end.
    let mut rpcs = Vec::new();
    for shape in [
        rpc::Shape::Unary,
        rpc::Shape::ServerStreaming,
        rpc::Shape::ClientStreaming,
        rpc::Shape::Duplex,
    ] {
        let mut b = Vec::new();
        let md: [(&str, &[u8]); 1] = [("trace", b"abc")];
        rpc::write_call(
            &mut b,
            shape,
            Some(5_000),
            16,
            "svc",
            "method",
            md.into_iter(),
        )
        .expect("call");
        rpc::write_msg_header(&mut b, 3).expect("msg");
        b.extend_from_slice(b"req");
        rpc::write_eos(&mut b);
        rpc::write_grant(&mut b, 8);
        rpc::write_end(&mut b, 0x8007, "refused");
        rpcs.push(b);
    }
    let mut s = Vec::new();
    let methods = [
        ("get", rpc::Shape::Unary),
        ("watch", rpc::Shape::ServerStreaming),
    ];
    rpc::write_services(&mut s, 3, [("kv", methods.iter().copied())].into_iter())
        .expect("services");
    rpcs.push(s);
    write("rpc_frames", &rpcs)?;

    // SYNC messages, alone and framed as on a log stream.
    let mut msgs = Vec::new();
    let mut m = Vec::new();
    sync::write_request(&mut m, 9, 2, 10, 1, 64);
    msgs.push(m);
    let mut m = Vec::new();
    let evs: [(u64, &[u8]); 2] = [(2, b"one"), (2, b"two")];
    sync::write_response(&mut m, 9, 2, 10, 1, 0, 11, 12, evs.iter().copied()).expect("resp");
    msgs.push(m);
    let mut m = Vec::new();
    sync::write_heartbeat(&mut m, 9, 2, 12, 11, Role::Leader, 1_700_000_000_000);
    msgs.push(m);
    let mut m = Vec::new();
    sync::write_nack(
        &mut m,
        9,
        2,
        10,
        sync::NackCode::from_byte(1).expect("a code"),
        "behind",
    );
    msgs.push(m);
    let mut m = Vec::new();
    sync::write_vote_request(&mut m, 9, 3, 12, 2);
    msgs.push(m);
    let mut m = Vec::new();
    sync::write_vote(&mut m, 9, 3, true);
    msgs.push(m);
    let mut framed = Vec::new();
    for m in &msgs {
        sync::write_frame(&mut framed, m).expect("frame");
    }
    msgs.push(framed);
    write("sync_msgs", &msgs)?;

    let id = Identity::from_seed(&Seed::from_u64(5));
    write("binding", &[id.bind(&[9u8; 32]).encode().to_vec()])?;

    // Operation sequences: bytes `arbitrary` turns into connects, sends and deliveries.
    let ops: Vec<Vec<u8>> = (0u8..8)
        .map(|k| (0..200u16).map(|i| (i as u8).wrapping_mul(k + 3)).collect())
        .collect();
    write("session_ops", &ops)?;
    write("stream_ops", &ops)?;
    write("rpc_ops", &ops)?;
    write("log_ops", &ops)?;
    write("log_mesh", &ops)?;
    write("log_file", &ops)?;
    Ok(())
}
