//! Our handshake and DATA packets against a plain `snow` peer that follows `docs/wire.md`:
//! the layouts, prologue, payload and nonce rules are enough to interoperate.

use std::net::SocketAddr;

use net_tests::{config, identity};
use proto_core::identity::Binding;
use proto_core::wire::{self, frame, kind, Pattern};
use proto_core::{Event, Instant, Node, PeerSpec};

const NOW: Instant = Instant::from_millis(5);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    proto_core::crypto::x25519_public(&proto_core::crypto::RustCrypto, private).unwrap()
}

/// A snow peer with identity 7 and its own static key.
struct SnowPeer {
    static_private: [u8; 32],
    binding: [u8; 96],
}

impl SnowPeer {
    fn new() -> SnowPeer {
        let static_private = [0x42u8; 32];
        let binding = identity(7).bind(&x25519_public(&static_private)).encode();
        SnowPeer {
            static_private,
            binding,
        }
    }

    fn builder(&self, pattern: Pattern) -> snow::Builder<'_> {
        snow::Builder::new(pattern.noise_name().parse().unwrap())
            .local_private_key(&self.static_private)
            .unwrap()
    }
}

/// Sends `noise` as an INIT from 10.0.0.7:7000 and returns the node's RESPONSE.
fn initiate(node: &mut Node, pattern: Pattern, sender_index: u32, noise: &[u8]) -> Vec<u8> {
    let mut init = Vec::new();
    wire::encode_init(
        &mut init,
        &wire::Init {
            pattern,
            sender_index,
            cookie: None,
            noise,
        },
    );
    node.handle_datagram(NOW, addr("10.0.0.7:7000"), &init)
        .unwrap();
    poll_one(node)
}

fn poll_one(node: &mut Node) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let t = node
        .poll_transmit(NOW, &mut buf)
        .unwrap()
        .expect("a transmit");
    buf.truncate(t.len);
    buf
}

fn events(node: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

/// DATA packet: header, then snow's transport ciphertext of `frames` under `counter`.
fn seal_data(
    t: &snow::StatelessTransportState,
    receiver_index: u32,
    counter: u64,
    frames: &[u8],
) -> Vec<u8> {
    let mut pkt = vec![0u8; 16 + frames.len() + 16];
    wire::write_data_header(
        &mut pkt,
        &wire::DataHeader {
            key_phase: 0,
            receiver_index,
            counter,
        },
    )
    .unwrap();
    let n = t.write_message(counter, frames, &mut pkt[16..]).unwrap();
    pkt.truncate(16 + n);
    pkt
}

fn open_data(t: &snow::StatelessTransportState, pkt: &[u8]) -> Vec<u8> {
    let Ok(wire::Packet::Data(h, ct)) = wire::decode(pkt) else {
        panic!("not DATA")
    };
    let mut out = vec![0u8; ct.len()];
    let n = t.read_message(h.counter, ct, &mut out).unwrap();
    out.truncate(n);
    out
}

fn datagram_frame(body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; body.len() + 3];
    frame::write(&mut f, &frame::Frame::Datagram(body)).unwrap();
    f
}

#[test]
fn snow_initiator_ik_against_our_responder() {
    let peer = SnowPeer::new();
    let mut node = Node::new(config(2), identity(2), NOW).unwrap();
    let mut hs = peer
        .builder(Pattern::IK)
        .remote_public_key(&node.static_key())
        .unwrap()
        .prologue(&Pattern::IK.prologue())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 512];
    let n = hs.write_message(&peer.binding, &mut msg).unwrap();
    assert_eq!(n, wire::noise_len::IK_INIT);
    let from = addr("10.0.0.7:7000");
    let resp = initiate(&mut node, Pattern::IK, 0x01020304, &msg[..n]);
    let Ok(wire::Packet::Response(r)) = wire::decode(&resp) else {
        panic!()
    };
    assert_eq!(r.receiver_index, 0x01020304);
    let mut payload = vec![0u8; 256];
    let n = hs.read_message(r.noise, &mut payload).unwrap();
    let binding = Binding::decode(&payload[..n - 4]).unwrap();
    assert_eq!(binding.verify(&node.static_key()), Ok(identity(2).public()));
    // After the binding, the responder's session index, authenticated.
    assert_eq!(n, wire::RESPONSE_PAYLOAD_LEN);
    assert_eq!(payload[n - 4..n], r.sender_index.to_le_bytes());
    let t = hs.into_stateless_transport_mode().unwrap();

    // Our DATA (counter 0) confirms us to the node and carries a datagram.
    let pkt = seal_data(&t, r.sender_index, 0, &datagram_frame(b"from snow"));
    node.handle_datagram(NOW, from, &pkt).unwrap();
    let ev = events(&mut node);
    let Some(Event::Connected {
        session, peer: who, ..
    }) = ev.first().cloned()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(who, identity(7).node_id());
    assert!(matches!(&ev[1], Event::Datagram { data, .. } if data == b"from snow"));

    // And the node's datagram opens with snow's transport state.
    node.send_datagram(NOW, session, b"from node").unwrap();
    let pkt = poll_one(&mut node);
    assert_eq!(
        u32::from_le_bytes(pkt[4..8].try_into().unwrap()),
        0x01020304
    );
    assert_eq!(open_data(&t, &pkt), datagram_frame(b"from node"));
}

#[test]
fn snow_initiator_xx_against_our_responder() {
    let peer = SnowPeer::new();
    let mut node = Node::new(config(2), identity(2), NOW).unwrap();
    let mut hs = peer
        .builder(Pattern::XX)
        .prologue(&Pattern::XX.prologue())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 512];
    let n = hs
        .write_message(&[0u8; wire::XX_INIT_PADDING], &mut msg)
        .unwrap();
    let from = addr("10.0.0.7:7000");
    let resp = initiate(&mut node, Pattern::XX, 9, &msg[..n]);
    let Ok(wire::Packet::Response(r)) = wire::decode(&resp) else {
        panic!()
    };
    let mut payload = vec![0u8; 256];
    let n = hs.read_message(r.noise, &mut payload).unwrap();
    let binding = Binding::decode(&payload[..n - 4]).unwrap();
    assert_eq!(binding.verify(&node.static_key()), Ok(identity(2).public()));
    // After the binding, the responder's session index, authenticated.
    assert_eq!(n, wire::RESPONSE_PAYLOAD_LEN);
    assert_eq!(payload[n - 4..n], r.sender_index.to_le_bytes());
    let n = hs.write_message(&peer.binding, &mut msg).unwrap();
    let mut fin = Vec::new();
    wire::encode_final(
        &mut fin,
        &wire::Final {
            receiver_index: r.sender_index,
            noise: &msg[..n],
        },
    );
    node.handle_datagram(NOW, from, &fin).unwrap();
    let ev = events(&mut node);
    assert!(
        matches!(ev.as_slice(), [Event::Connected { peer, initiator: false, .. }] if *peer == identity(7).node_id()),
        "{ev:?}"
    );
    let t = hs.into_stateless_transport_mode().unwrap();
    // The responder acknowledges the FINAL with a PING, so the initiator can stop repeating it.
    let ack = poll_one(&mut node);
    assert_eq!(open_data(&t, &ack), vec![frame::ty::PING]);
    let pkt = seal_data(&t, r.sender_index, 0, &datagram_frame(b"xx"));
    node.handle_datagram(NOW, from, &pkt).unwrap();
    assert!(
        matches!(events(&mut node).as_slice(), [Event::Datagram { data, .. }] if data == b"xx")
    );
}

#[test]
fn our_initiator_against_a_snow_responder() {
    for pattern in [Pattern::IK, Pattern::XX] {
        let peer = SnowPeer::new();
        let mut node = Node::new(config(1), identity(1), NOW).unwrap();
        let spec = match pattern {
            Pattern::IK => {
                PeerSpec::known(identity(7).public(), x25519_public(&peer.static_private))
            }
            Pattern::XX => PeerSpec::any(),
        };
        let to = addr("10.0.0.7:7000");
        let s = node.connect(NOW, to, spec).unwrap();
        node.send_datagram(NOW, s, b"early").unwrap();
        let init = poll_one(&mut node);
        let Ok(wire::Packet::Init(i)) = wire::decode(&init) else {
            panic!()
        };
        assert_eq!(i.pattern, pattern);
        let mut hs = peer
            .builder(pattern)
            .prologue(&pattern.prologue())
            .unwrap()
            .build_responder()
            .unwrap();
        let mut payload = vec![0u8; 256];
        let n = hs.read_message(i.noise, &mut payload).unwrap();
        if pattern == Pattern::IK {
            let b = Binding::decode(&payload[..n]).unwrap();
            assert_eq!(
                b.verify(hs.get_remote_static().unwrap().try_into().unwrap()),
                Ok(identity(1).public())
            );
        }
        // Message 2's payload: the binding, then our session index (77). The header's copy
        // is not authenticated; here it disagrees, and the node must use the payload's.
        let mut response_payload = peer.binding.to_vec();
        response_payload.extend_from_slice(&77u32.to_le_bytes());
        let mut msg = vec![0u8; 512];
        let n = hs.write_message(&response_payload, &mut msg).unwrap();
        let expected = match pattern {
            Pattern::IK => wire::noise_len::IK_RESPONSE,
            Pattern::XX => wire::noise_len::XX_RESPONSE,
        };
        assert_eq!(n, expected);
        let mut resp = Vec::new();
        wire::encode_response(
            &mut resp,
            &wire::Response {
                sender_index: 78,
                receiver_index: i.sender_index,
                noise: &msg[..n],
            },
        );
        node.handle_datagram(NOW, to, &resp).unwrap();
        if pattern == Pattern::XX {
            let fin = poll_one(&mut node);
            assert_eq!(fin[1], kind::FINAL);
            let Ok(wire::Packet::Final(f)) = wire::decode(&fin) else {
                panic!()
            };
            let n = hs.read_message(f.noise, &mut payload).unwrap();
            let b = Binding::decode(&payload[..n]).unwrap();
            assert_eq!(
                b.verify(hs.get_remote_static().unwrap().try_into().unwrap()),
                Ok(identity(1).public())
            );
        }
        let ev = events(&mut node);
        assert!(matches!(ev.as_slice(), [Event::Connected { .. }]), "{ev:?}");
        let t = hs.into_stateless_transport_mode().unwrap();
        let data = poll_one(&mut node);
        assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()), 77);
        assert_eq!(
            open_data(&t, &data),
            datagram_frame(b"early"),
            "{pattern:?}"
        );
        let back = seal_data(&t, i.sender_index, 0, &datagram_frame(b"back"));
        node.handle_datagram(NOW, to, &back).unwrap();
        assert!(
            matches!(events(&mut node).as_slice(), [Event::Datagram { data, .. }] if data == b"back")
        );
    }
}
