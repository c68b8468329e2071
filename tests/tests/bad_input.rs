//! Every kind of bad packet is dropped, counted under its own reason, and changes nothing.

use std::time::Duration;

use net_tests::{identity, Pair, Side};
use proto_core::wire::{self, kind};
use proto_core::{DropCounters, Error, Event, Node, SessionInfo};

const SECOND: Duration = Duration::from_secs(1);

fn connected_pair() -> Pair {
    let mut p = Pair::default_pair();
    p.connect(true, 5 * SECOND);
    p
}

fn snapshot(p: &Pair) -> (SessionInfo, usize, usize) {
    let s = p.session(Side::B).unwrap();
    (
        p.b.session_info(s).unwrap(),
        p.b.session_count(),
        p.b_events.len(),
    )
}

/// A DATA packet from A that B has not seen yet (sealed, not delivered).
fn fresh_data_from_a(p: &mut Pair) -> Vec<u8> {
    let sa = p.session(Side::A).unwrap();
    p.a.send_datagram(p.now, sa, b"fresh").unwrap();
    let mut buf = vec![0u8; 1500];
    let t = p.a.poll_transmit(p.now, &mut buf).unwrap().unwrap();
    buf.truncate(t.len);
    buf
}

fn last_data_from_a(p: &Pair) -> Vec<u8> {
    p.wire_log
        .iter()
        .rev()
        .find(|(_, s, b)| *s == Side::A && b[1] == kind::DATA)
        .map(|(_, _, b)| b.clone())
        .unwrap()
}

/// Injects `bytes` into B and checks that exactly the counter `pick` rose by one and nothing
/// else about B changed; then checks the session still carries traffic.
fn assert_dropped(p: &mut Pair, bytes: &[u8], what: &str, pick: fn(&DropCounters) -> u64) {
    let before = p.b.stats().drops;
    let snap = snapshot(p);
    p.inject(Side::B, bytes);
    let after = p.b.stats().drops;
    assert_eq!(pick(&after), pick(&before) + 1, "{what}: {after:?}");
    assert_eq!(snapshot(p), snap, "{what}: state changed");
    let sa = p.session(Side::A).unwrap();
    let n = p.datagrams(Side::B).len();
    p.a.send_datagram(p.now, sa, b"still alive").unwrap();
    p.drain();
    p.run_for(SECOND);
    assert_eq!(p.datagrams(Side::B).len(), n + 1, "{what}: session broken");
}

#[test]
fn truncated_wrong_version_unknown_kind_and_malformed() {
    let mut p = connected_pair();
    let good = last_data_from_a(&p);
    assert_dropped(&mut p, &[], "empty", |d| d.truncated);
    assert_dropped(&mut p, &good[..10], "truncated header", |d| d.truncated);
    assert_dropped(&mut p, &good[..20], "truncated tag", |d| d.truncated);
    let mut v = good.clone();
    v[0] = 2;
    assert_dropped(&mut p, &v, "version 2", |d| d.bad_version);
    let mut k = good.clone();
    k[1] = 0x7f;
    assert_dropped(&mut p, &k, "kind 0x7f", |d| d.unknown_kind);
    let mut r = good.clone();
    r[3] = 1;
    assert_dropped(&mut p, &r, "reserved byte", |d| d.malformed);
    let mut init = vec![1, kind::INIT, 0, 0x80, 0, 0, 0, 0];
    init.extend_from_slice(&[0; 192]);
    assert_dropped(&mut p, &init, "unknown init flag", |d| d.malformed);
}

#[test]
fn oversized_packets_are_dropped_not_buffered() {
    let mut p = connected_pair();
    let mut big = fresh_data_from_a(&mut p);
    big.resize(60_000, 0xAB);
    assert_dropped(&mut p, &big, "oversized data", |d| d.auth_failed);
    let mut init = vec![1, kind::INIT, 0, 0, 1, 2, 3, 4];
    init.resize(60_000, 0);
    assert_dropped(&mut p, &init, "oversized init", |d| d.malformed);
}

#[test]
fn tampered_replayed_wrong_key_and_unknown_index() {
    let mut p = connected_pair();
    let good = fresh_data_from_a(&mut p);
    for i in [0usize, 8, 16, good.len() - 1] {
        let mut t = good.clone();
        t[i.max(16)] ^= 0x40;
        if i == 8 {
            // Tampering with the counter changes the nonce: authentication fails too.
            let mut c = good.clone();
            c[8] ^= 0x40;
            assert_dropped(&mut p, &c, "tampered counter", |d| d.auth_failed);
            continue;
        }
        assert_dropped(&mut p, &t, "tampered body", |d| d.auth_failed);
    }
    p.inject(Side::B, &good);
    assert_eq!(p.datagrams(Side::B).last().unwrap(), b"fresh");
    assert_dropped(&mut p, &good, "replay", |d| d.replayed);
    let mut phase = fresh_data_from_a(&mut p);
    phase[2] = 9;
    assert_dropped(&mut p, &phase, "unknown key phase", |d| d.key_phase);
    let mut idx = good.clone();
    idx[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    assert_dropped(&mut p, &idx, "unknown index", |d| d.unknown_index);

    // A packet sealed under another session's keys (right index, wrong key).
    let mut q = Pair::new(net_tests::config(31), net_tests::config(32), 5);
    q.connect(true, 5 * SECOND);
    let sa = q.session(Side::A).unwrap();
    q.a.send_datagram(q.now, sa, b"other").unwrap();
    q.drain();
    let mut foreign = fresh_data_from_a(&mut q);
    let b_index = good[4..8].to_vec();
    foreign[4..8].copy_from_slice(&b_index);
    // A counter B has not seen, so that the replay check passes and the key is what fails.
    foreign[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
    assert_dropped(&mut p, &foreign, "wrong key", |d| d.auth_failed);
}

#[test]
fn too_old_counters_are_rejected() {
    let mut p = connected_pair();
    let first = last_data_from_a(&p);
    let sa = p.session(Side::A).unwrap();
    for _ in 0..2100 {
        p.a.send_datagram(p.now, sa, b"x").unwrap();
        p.drain();
        p.run_for(Duration::from_millis(1));
    }
    p.run_for(SECOND);
    assert_dropped(&mut p, &first, "too old", |d| d.too_old);
}

#[test]
fn out_of_state_handshake_messages() {
    let mut p = connected_pair();
    // A RESPONSE sent to the responder, a FINAL to an IK session: wrong state.
    let resp = p
        .wire_log
        .iter()
        .find(|(_, s, b)| *s == Side::B && b[1] == kind::RESPONSE)
        .map(|(_, _, b)| b.clone())
        .unwrap();
    let b_index = last_data_from_a(&p)[4..8].to_vec();
    let mut to_b = resp.clone();
    to_b[8..12].copy_from_slice(&b_index);
    assert_dropped(&mut p, &to_b, "response to responder", |d| d.out_of_state);
    let mut fin = vec![1, kind::FINAL, 0, 0];
    fin.extend_from_slice(&b_index);
    fin.extend_from_slice(&[0; 160]);
    assert_dropped(&mut p, &fin, "final to an IK session", |d| d.out_of_state);
    let mut cookie = vec![1, kind::COOKIE, 0, 0];
    cookie.extend_from_slice(&b_index);
    cookie.extend_from_slice(&[0; 16]);
    assert_dropped(&mut p, &cookie, "cookie to an established session", |d| {
        d.out_of_state
    });
}

#[test]
fn garbage_initiations_fail_without_state() {
    let mut p = connected_pair();
    let mut init = Vec::new();
    wire::encode_init(
        &mut init,
        &wire::Init {
            pattern: wire::Pattern::IK,
            sender_index: 5,
            cookie: None,
            noise: &[0x5a; 192],
        },
    );
    assert_dropped(&mut p, &init, "garbage IK init", |d| d.handshake_failed);
    assert_eq!(p.b.session_count(), 1);
}

#[test]
fn a_binding_for_another_static_key_is_refused() {
    // A snow initiator whose payload binds its identity to a different static key.
    let b = Node::new(net_tests::config(2), identity(2), proto_core::Instant::ZERO).unwrap();
    let mut b = b;
    let my_static = [0x11u8; 32];
    let other_static = [0x22u8; 32];
    let binding = identity(1).bind(&x25519_public(&other_static)).encode();
    let mut hs = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .local_private_key(&my_static)
        .unwrap()
        .remote_public_key(&b.static_key())
        .unwrap()
        .prologue(&wire::Pattern::IK.prologue())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 256];
    let n = hs.write_message(&binding, &mut msg).unwrap();
    let mut init = Vec::new();
    wire::encode_init(
        &mut init,
        &wire::Init {
            pattern: wire::Pattern::IK,
            sender_index: 1,
            cookie: None,
            noise: &msg[..n],
        },
    );
    let from = "10.0.0.9:1".parse().unwrap();
    b.handle_datagram(proto_core::Instant::ZERO, from, &init)
        .unwrap();
    assert_eq!(b.stats().drops.handshake_failed, 1);
    assert_eq!(b.stats().handshakes_answered, 0);
    assert_eq!(b.session_count(), 0);
    let mut buf = [0u8; 1500];
    assert_eq!(
        b.poll_transmit(proto_core::Instant::ZERO, &mut buf),
        Ok(None)
    );
}

fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    let p = proto_core::crypto::RustCrypto;
    proto_core::crypto::x25519_public(&p, private).unwrap()
}

#[test]
fn time_going_backwards_is_clamped_and_counted() {
    let mut p = connected_pair();
    let earlier = p.now - Duration::from_secs(1);
    p.b.handle_timeout(earlier).unwrap();
    assert_eq!(p.b.stats().time_went_backwards, 1);
    assert!(p.b.poll_timeout().unwrap().at >= p.now);
    p.run_for(SECOND);
    assert!(!p
        .b_events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. })));
}

#[test]
fn caller_mistakes_are_typed_errors_that_change_nothing() {
    let mut p = connected_pair();
    let sa = p.session(Side::A).unwrap();
    // Undrained output refuses I/O input (strict_drain) without consuming it.
    p.a.send_datagram(p.now, sa, b"queued").unwrap();
    let pkt = last_data_from_a(&p);
    assert_eq!(
        p.a.handle_datagram(p.now, p.b_addr, &pkt),
        Err(Error::Undrained {
            transmits: 1,
            events: 0
        })
    );
    assert!(matches!(
        p.a.handle_timeout(p.now),
        Err(Error::Undrained { .. })
    ));
    // A buffer too small consumes nothing.
    let mut small = [0u8; 20];
    assert_eq!(
        p.a.poll_transmit(p.now, &mut small),
        Err(Error::BufferTooSmall { needed: 32 + 3 + 6 })
    );
    p.drain();
    p.run_for(SECOND);
    assert_eq!(p.datagrams(Side::B).last().unwrap(), b"queued");
    // Too large, unknown session, full queue.
    let max = p.a.config().max_datagram_payload();
    assert_eq!(
        p.a.send_datagram(p.now, sa, &vec![0; max + 1]),
        Err(Error::DatagramTooLarge { len: max + 1, max })
    );
    p.a.send_datagram(p.now, sa, &vec![7; max]).unwrap();
    let bogus = proto_core::SessionId(999);
    assert_eq!(
        p.a.send_datagram(p.now, bogus, b"x"),
        Err(Error::UnknownSession(bogus))
    );
    assert_eq!(
        p.a.close(p.now, bogus, 0),
        Err(Error::UnknownSession(bogus))
    );
    let cap = p.a.config().max_queued_datagrams;
    for _ in 1..cap {
        p.a.send_datagram(p.now, sa, b"f").unwrap();
    }
    assert_eq!(p.a.send_datagram(p.now, sa, b"f"), Err(Error::QueueFull));
    p.drain();
    p.run_for(SECOND);
    // "queued", then a full queue: the max-size datagram and cap - 1 small ones.
    assert_eq!(p.datagrams(Side::B).len(), 1 + cap);
    assert!(p.datagrams(Side::B).contains(&vec![7; max]));
}

#[test]
fn the_event_queue_is_bounded() {
    let mut b = net_tests::config(2);
    b.max_queued_received = 5;
    b.strict_drain = false;
    let mut p = Pair::new(net_tests::config(1), b, 0);
    p.connect(true, 5 * SECOND);
    let sa = p.session(Side::A).unwrap();
    let sb = p.session(Side::B).unwrap();
    let _ = sb;
    // Feed B ten datagrams without draining its events.
    let mut buf = vec![0u8; 1500];
    for i in 0..10u8 {
        p.a.send_datagram(p.now, sa, &[i]).unwrap();
        let t = p.a.poll_transmit(p.now, &mut buf).unwrap().unwrap();
        p.b.handle_datagram(p.now, p.a_addr, &buf[..t.len]).unwrap();
    }
    assert_eq!(p.b.stats().drops.event_queue_full, 5);
    let mut got = 0;
    while let Some(e) = p.b.poll_event() {
        if matches!(e, Event::Datagram { .. }) {
            got += 1;
        }
    }
    assert_eq!(got, 5);
}
