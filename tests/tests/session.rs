//! Handshake and session behaviour of two nodes over the in-memory pair harness.

use std::time::Duration;

use net_tests::{config, identity, Link, Pair, Side};
use proto_core::{DisconnectReason, Error, Event, HandshakeError, Instant, Node, PeerSpec};

const SECOND: Duration = Duration::from_secs(1);

fn exchange(p: &mut Pair, count: usize, gap: Duration) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let sa = p.session(Side::A).expect("a connected");
    let sb = p.session(Side::B).expect("b connected");
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    for i in 0..count {
        let msg_a = format!("a->b {i}").into_bytes();
        let msg_b = format!("b->a {i}").into_bytes();
        let now = p.now;
        p.a.send_datagram(now, sa, &msg_a).unwrap();
        p.b.send_datagram(now, sb, &msg_b).unwrap();
        sent_a.push(msg_a);
        sent_b.push(msg_b);
        p.drain();
        p.run_for(gap);
    }
    p.run_for(2 * SECOND);
    (sent_a, sent_b)
}

/// Every received datagram was sent, none twice.
fn assert_subset_no_dups(received: &[Vec<u8>], sent: &[Vec<u8>]) {
    let mut seen = std::collections::BTreeSet::new();
    for r in received {
        assert!(sent.contains(r), "received something never sent: {r:?}");
        assert!(
            seen.insert(r.clone()),
            "delivered twice: {:?}",
            String::from_utf8_lossy(r)
        );
    }
}

#[test]
fn ik_handshake_and_exchange_on_a_perfect_link() {
    let mut p = Pair::default_pair();
    let start = p.now;
    p.connect(true, 5 * SECOND);
    // IK: one round trip (20 ms) plus the confirmation's one way.
    assert!(
        p.now - start <= Duration::from_millis(31),
        "{:?}",
        p.now - start
    );
    let (sa, sb) = exchange(&mut p, 50, Duration::from_millis(5));
    assert_eq!(p.datagrams(Side::B), sa);
    assert_eq!(p.datagrams(Side::A), sb);
    let Event::Connected {
        peer, initiator, ..
    } = &p.a_events[0]
    else {
        panic!("{:?}", p.a_events)
    };
    assert_eq!(*peer, identity(2).node_id());
    assert!(*initiator);
    assert_eq!(p.a.stats().handshakes_initiated, 1);
    assert_eq!(p.b.stats().handshakes_answered, 1);
}

#[test]
fn xx_handshake_learns_the_identity_and_static_key() {
    let mut p = Pair::default_pair();
    p.connect(false, 5 * SECOND);
    let Event::Connected {
        peer, static_key, ..
    } = &p.a_events[0]
    else {
        panic!()
    };
    assert_eq!(*peer, identity(2).node_id());
    assert_eq!(*static_key, p.b.static_key());
    let info = p.a.session_info(p.session(Side::A).unwrap()).unwrap();
    assert_eq!(info.pattern, proto_core::wire::Pattern::XX);
    let (sa, sb) = exchange(&mut p, 20, Duration::from_millis(5));
    assert_eq!(p.datagrams(Side::B), sa);
    assert_eq!(p.datagrams(Side::A), sb);
}

#[test]
fn datagrams_queued_before_the_handshake_are_delivered() {
    let mut p = Pair::default_pair();
    let spec = p.b.peer_spec();
    let s = p.a.connect(p.now, p.b_addr, spec).unwrap();
    for i in 0..5u8 {
        p.a.send_datagram(p.now, s, &[i]).unwrap();
    }
    p.drain();
    assert!(p.run_until_cond(5 * SECOND, |p| p.datagrams(Side::B).len() == 5));
    assert_eq!(
        p.datagrams(Side::B),
        (0..5u8).map(|i| vec![i]).collect::<Vec<_>>()
    );
}

fn faulty(latency_ms: u64, jitter_ms: u64, loss_ppm: u32, dup_ppm: u32) -> Link {
    Link {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        loss_ppm,
        duplicate_ppm: dup_ppm,
    }
}

#[test]
fn handshake_and_exchange_under_each_fault() {
    let cases = [
        ("latency", faulty(150, 0, 0, 0)),
        ("loss", faulty(10, 0, 300_000, 0)),
        ("duplication", faulty(10, 5, 0, 500_000)),
        ("reordering", faulty(10, 80, 0, 0)),
        ("everything", faulty(40, 60, 200_000, 200_000)),
    ];
    for (name, link) in cases {
        for ik in [true, false] {
            for seed in 0..4 {
                let mut p = Pair::new(config(1 + seed), config(100 + seed), seed);
                p.set_link(link);
                p.connect(ik, 30 * SECOND);
                let (sa, sb) = exchange(&mut p, 60, Duration::from_millis(3));
                let (ra, rb) = (p.datagrams(Side::A), p.datagrams(Side::B));
                assert_subset_no_dups(&rb, &sa);
                assert_subset_no_dups(&ra, &sb);
                if link.loss_ppm == 0 {
                    assert_eq!(rb.len(), sa.len(), "{name} ik={ik} seed={seed}");
                    assert_eq!(ra.len(), sb.len(), "{name} ik={ik} seed={seed}");
                } else {
                    // Datagrams are unreliable: what arrives is what the link did not drop.
                    assert!(
                        rb.len() >= sa.len() / 3,
                        "{name}: {} of {}",
                        rb.len(),
                        sa.len()
                    );
                }
                if link.duplicate_ppm > 0 {
                    let drops = p.b.stats().drops;
                    assert!(drops.replayed > 0, "{name}: duplicates must be rejected");
                }
                // Exactly one session on each side.
                assert_eq!(p.a.session_count(), 1, "{name}");
                assert_eq!(p.b.session_count(), 1, "{name}");
            }
        }
    }
}

#[test]
fn rekey_under_traffic_loses_nothing_the_link_did_not_drop() {
    let mut a = config(1);
    let mut b = config(2);
    a.rekey_after_packets = 17;
    b.rekey_after_packets = 23;
    let mut p = Pair::new(a, b, 9);
    p.set_link(faulty(10, 40, 0, 100_000));
    p.connect(true, 5 * SECOND);
    let (sa, sb) = exchange(&mut p, 400, Duration::from_millis(2));
    assert_eq!(p.datagrams(Side::B).len(), sa.len());
    assert_eq!(p.datagrams(Side::A).len(), sb.len());
    assert_subset_no_dups(&p.datagrams(Side::B), &sa);
    let info = p.a.session_info(p.session(Side::A).unwrap()).unwrap();
    assert!(info.key_generations.0 >= 10, "{info:?}");
    assert!(info.key_generations.1 >= 10, "{info:?}");
}

#[test]
fn rekey_by_time_keeps_the_session() {
    let mut a = config(1);
    a.rekey_after_time = 5 * SECOND;
    let mut p = Pair::new(a, config(2), 3);
    p.connect(true, 5 * SECOND);
    for _ in 0..6 {
        exchange(&mut p, 3, SECOND);
        p.run_for(4 * SECOND);
    }
    let info = p.a.session_info(p.session(Side::A).unwrap()).unwrap();
    assert!(info.key_generations.0 >= 4, "{info:?}");
    assert_eq!(p.datagrams(Side::B).len(), 18);
}

#[test]
fn replayed_packets_are_rejected_and_change_nothing() {
    let mut p = Pair::default_pair();
    p.connect(true, 5 * SECOND);
    exchange(&mut p, 3, Duration::from_millis(5));
    let before = p.datagrams(Side::B).len();
    let data_from_a: Vec<Vec<u8>> = p
        .wire_log
        .iter()
        .filter(|(_, s, b)| *s == Side::A && b[1] == proto_core::wire::kind::DATA)
        .map(|(_, _, b)| b.clone())
        .collect();
    assert!(data_from_a.len() >= 3);
    let replayed_before = p.b.stats().drops.replayed;
    for pkt in &data_from_a {
        p.inject(Side::B, pkt);
    }
    assert_eq!(
        p.b.stats().drops.replayed - replayed_before,
        data_from_a.len() as u64
    );
    assert_eq!(p.datagrams(Side::B).len(), before);
    // The session still works.
    exchange(&mut p, 2, Duration::from_millis(5));
    assert_eq!(p.datagrams(Side::B).len(), before + 2);
}

#[test]
fn idle_timeout_ends_a_dead_session_and_keepalives_keep_a_quiet_one() {
    let mut p = Pair::default_pair();
    p.connect(true, 5 * SECOND);
    // Quiet but alive: keepalives keep it up for minutes.
    p.run_for(Duration::from_secs(300));
    assert!(!p
        .a_events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. })));
    assert!(p.b.stats().datagrams_in > 20, "keepalives flow");
    // Cut the link both ways: both sides give up after the idle timeout.
    p.set_link(faulty(10, 0, 1_000_000, 0));
    let cut = p.now;
    p.run_for(Duration::from_secs(60));
    for side in [Side::A, Side::B] {
        let reason = p.events(side).iter().find_map(|e| match e {
            Event::Disconnected { reason, .. } => Some(*reason),
            _ => None,
        });
        assert_eq!(reason, Some(DisconnectReason::IdleTimeout), "{side:?}");
    }
    assert_eq!(p.a.session_count(), 0);
    assert!(p.now - cut >= Duration::from_secs(35));
}

#[test]
fn handshake_gives_up_after_its_timeout() {
    let mut p = Pair::default_pair();
    p.set_link(faulty(10, 0, 1_000_000, 0));
    let spec = p.b.peer_spec();
    p.a.connect(p.now, p.b_addr, spec).unwrap();
    p.drain();
    p.run_for(Duration::from_secs(20));
    assert!(matches!(
        p.a_events.as_slice(),
        [Event::Disconnected {
            reason: DisconnectReason::HandshakeTimeout,
            ..
        }]
    ));
    let retransmits = p.a.stats().handshake_retransmits;
    assert!((3..=8).contains(&retransmits), "{retransmits}");
    assert_eq!(p.a.session_count(), 0);
}

#[test]
fn simultaneous_open_resolves_to_one_session() {
    for ik in [true, false] {
        for seed in 0..12 {
            let mut p = Pair::new(config(10 + seed), config(50 + seed), seed);
            let (spec_a, spec_b) = if ik {
                (p.b.peer_spec(), p.a.peer_spec())
            } else {
                (PeerSpec::any(), PeerSpec::any())
            };
            let now = p.now;
            let sa = p.a.connect(now, p.b_addr, spec_a).unwrap();
            let sb = p.b.connect(now, p.a_addr, spec_b).unwrap();
            p.drain();
            // Once one side has yielded, connecting again still names the same session.
            assert!(p.run_until_cond(5 * SECOND, |p| {
                p.a.stats().handshakes_answered + p.b.stats().handshakes_answered > 0
            }));
            let now = p.now;
            assert_eq!(p.a.connect(now, p.b_addr, spec_a).unwrap(), sa);
            assert_eq!(p.b.connect(now, p.a_addr, spec_b).unwrap(), sb);
            p.drain();
            assert!(p.run_until_cond(5 * SECOND, |p| p.connected(Side::A) && p.connected(Side::B)));
            p.run_for(SECOND);
            assert_eq!(p.a.session_count(), 1, "ik={ik} seed={seed}");
            assert_eq!(p.b.session_count(), 1, "ik={ik} seed={seed}");
            // The ids the applications hold are the ones that connected.
            assert_eq!(p.session(Side::A), Some(sa));
            assert_eq!(p.session(Side::B), Some(sb));
            assert!(!p
                .a_events
                .iter()
                .any(|e| matches!(e, Event::Disconnected { .. })));
            let (sent_a, sent_b) = exchange(&mut p, 5, Duration::from_millis(5));
            assert_eq!(p.datagrams(Side::B), sent_a);
            assert_eq!(p.datagrams(Side::A), sent_b);
            let lost_ties =
                p.a.stats().drops.simultaneous_open + p.b.stats().drops.simultaneous_open;
            assert_eq!(lost_ties, 1, "exactly one initiation is ignored");
        }
    }
}

#[test]
fn cookie_challenge_then_handshake() {
    let mut b = config(2);
    b.cookie_threshold = 0; // always under load
    let mut p = Pair::new(config(1), b, 0);
    p.connect(true, 5 * SECOND);
    assert_eq!(p.b.stats().drops.cookie_challenged, 1);
    assert_eq!(p.b.stats().handshakes_answered, 1);
    let kinds: Vec<u8> = p.wire_log.iter().map(|(_, _, b)| b[1]).collect();
    assert_eq!(
        &kinds[..3],
        &[0x01, 0x04, 0x01],
        "init, cookie, init with cookie"
    );
    exchange(&mut p, 3, Duration::from_millis(5));
    assert_eq!(p.datagrams(Side::B).len(), 3);
}

#[test]
fn spoofed_handshake_flood_costs_no_diffie_hellman() {
    let mut b = config(2);
    b.cookie_threshold = 0;
    let mut p = Pair::new(config(1), b, 0);
    // Capture one genuine initiation to replay from many spoofed addresses.
    let spec = p.b.peer_spec();
    p.a.connect(p.now, p.b_addr, spec).unwrap();
    let mut buf = vec![0u8; 1500];
    let t = p.a.poll_transmit(p.now, &mut buf).unwrap().unwrap();
    let init = buf[..t.len].to_vec();
    for i in 0..1000u32 {
        let from =
            std::net::SocketAddr::from(([192, 0, 2, (i % 250) as u8], 1000 + (i / 250) as u16));
        p.b.handle_datagram(p.now, from, &init).unwrap();
        while p.b.poll_transmit(p.now, &mut buf).unwrap().is_some() {}
    }
    let s = p.b.stats();
    assert_eq!(s.handshakes_answered, 0);
    assert_eq!(s.drops.cookie_challenged, 1000);
    assert_eq!(p.b.session_count(), 0);
    // A forged cookie does not get through either.
    let mut forged = init.clone();
    forged[3] = 1;
    forged.splice(8..8, [0xAA; 16]);
    p.b.handle_datagram(p.now, "192.0.2.1:1000".parse().unwrap(), &forged)
        .unwrap();
    while p.b.poll_transmit(p.now, &mut buf).unwrap().is_some() {}
    assert_eq!(p.b.stats().drops.bad_cookie, 1);
    assert_eq!(p.b.stats().handshakes_answered, 0);
}

#[test]
fn per_source_rate_limit_applies_even_with_cookies() {
    let mut b = config(2);
    b.handshake_burst_per_source = 3;
    b.handshake_rate_per_source = 1;
    let mut p = Pair::new(config(1), b, 0);
    let mut buf = vec![0u8; 1500];
    let from: std::net::SocketAddr = "192.0.2.7:9".parse().unwrap();
    // Fresh initiations (distinct ephemeral keys and indices) from one source.
    let mut answered = 0;
    for i in 0..10u64 {
        let mut n = Node::new(config(500 + i), identity(1), p.now).unwrap();
        n.connect(p.now, p.b_addr, p.b.peer_spec()).unwrap();
        let t = n.poll_transmit(p.now, &mut buf).unwrap().unwrap();
        let init = buf[..t.len].to_vec();
        p.b.handle_datagram(p.now, from, &init).unwrap();
        while let Some(t) = p.b.poll_transmit(p.now, &mut buf).unwrap() {
            // Answer cookie challenges like a real initiator.
            if buf[1] == 0x04 {
                n.handle_datagram(p.now, p.b_addr, &buf[..t.len]).unwrap();
                let mut b2 = vec![0u8; 1500];
                let t2 = n.poll_transmit(p.now, &mut b2).unwrap().unwrap();
                p.b.handle_datagram(p.now, from, &b2[..t2.len]).unwrap();
            } else {
                answered += 1;
            }
        }
        while p.b.poll_event().is_some() {}
    }
    assert_eq!(
        answered, 3,
        "burst of 3, then nothing within the same instant"
    );
    assert_eq!(p.b.stats().handshakes_answered, 3);
    assert!(
        p.b.stats().drops.rate_limited >= 7,
        "{:?}",
        p.b.stats().drops
    );
}

#[test]
fn identity_mismatch_is_refused() {
    let mut p = Pair::default_pair();
    let wrong = PeerSpec {
        identity: Some(identity(3).public()),
        static_key: None,
    };
    p.a.connect(p.now, p.b_addr, wrong).unwrap();
    p.drain();
    p.run_for(5 * SECOND);
    assert!(
        matches!(
            p.a_events.as_slice(),
            [Event::Disconnected {
                reason: DisconnectReason::HandshakeFailed(HandshakeError::IdentityMismatch),
                ..
            }]
        ),
        "{:?}",
        p.a_events
    );
    assert_eq!(p.a.session_count(), 0);
}

#[test]
fn close_tells_the_peer() {
    let mut p = Pair::default_pair();
    let s = p.connect(true, 5 * SECOND);
    p.a.close(p.now, s, 42).unwrap();
    p.drain();
    p.run_for(SECOND);
    assert!(p.a_events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: DisconnectReason::LocallyClosed { code: 42 },
            ..
        }
    )));
    assert!(p.b_events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: DisconnectReason::ClosedByPeer { code: 42 },
            ..
        }
    )));
    assert_eq!(p.a.session_count(), 0);
    assert_eq!(p.b.session_count(), 0);
    assert_eq!(
        p.a.send_datagram(p.now, s, b"x"),
        Err(Error::UnknownSession(s))
    );
}

/// The INIT `side` last put on the wire.
fn last_init(p: &Pair, side: Side) -> Vec<u8> {
    p.wire_log
        .iter()
        .rev()
        .find(|(_, s, b)| *s == side && b[1] == proto_core::wire::kind::INIT)
        .map(|(_, _, b)| b.clone())
        .unwrap()
}

fn ephemeral(init: &[u8]) -> Vec<u8> {
    match proto_core::wire::decode(init) {
        Ok(proto_core::wire::Packet::Init(i)) => i.ephemeral().unwrap().to_vec(),
        other => panic!("not an INIT: {other:?}"),
    }
}

#[test]
fn a_stale_initiation_from_a_restarted_peer_does_not_stall_a_connect() {
    // A's INIT towards B is lost. Then an INIT that B sent before it restarted arrives late
    // and wins the simultaneous-open tie, so A's initiation yields to it; but the B that sent
    // it is gone, and the B that runs now never will confirm it. A must initiate again by its
    // next retry, not wait for the handshake timeout (found by the `log_mesh` fuzz target).
    let mut tried = 0;
    for seed in 0..64 {
        let mut p = Pair::new(config(1), config(100 + seed), 0);
        p.tap = Some(Box::new(|_, _| None));
        let spec_b = p.b.peer_spec();
        let session = p.a.connect(p.now, p.b_addr, spec_b).unwrap();
        let spec_a = p.a.peer_spec();
        p.b.connect(p.now, p.a_addr, spec_a).unwrap();
        p.drain();
        let (ours, stale) = (last_init(&p, Side::A), last_init(&p, Side::B));
        if ephemeral(&ours) < ephemeral(&stale) {
            continue; // A's initiation would win the tie: not the case under test.
        }
        tried += 1;
        p.tap = None;
        p.b = Node::new(config(500 + seed), identity(2), p.now).unwrap();
        p.run_for(Duration::from_millis(100));
        p.inject(Side::A, &stale);
        assert!(
            p.a.stats().handshakes_answered == 1,
            "A yielded to the stale INIT"
        );
        assert!(
            p.run_until_cond(3 * SECOND, |p| p.connected(Side::A)),
            "A still not connected 3 s after the stale INIT (seed {seed}): {:?}",
            p.a_events
        );
        assert_eq!(p.session(Side::A), Some(session), "the session A asked for");
        assert!(p.run_until_cond(SECOND, |p| p.connected(Side::B)));
        assert_eq!(p.a.session_count(), 1);
        let (sent_a, _) = exchange(&mut p, 5, Duration::from_millis(5));
        assert_eq!(p.datagrams(Side::B), sent_a);
    }
    assert!(
        tried >= 8,
        "only {tried} seeds put A's initiation on the yielding side"
    );
}

#[test]
fn a_restarted_peer_supersedes_its_old_session() {
    let mut p = Pair::default_pair();
    let old = p.connect(true, 5 * SECOND);
    // B restarts with the same identity and a new seed, and reconnects to A.
    p.b = Node::new(config(77), identity(2), p.now).unwrap();
    p.b_events.clear();
    let spec = p.a.peer_spec();
    p.b.connect(p.now, p.a_addr, spec).unwrap();
    p.drain();
    assert!(p.run_until_cond(5 * SECOND, |p| p.connected(Side::B)));
    p.run_for(SECOND);
    assert!(p.a_events.iter().any(|e| matches!(
        e,
        Event::Disconnected { session, reason: DisconnectReason::Superseded, .. } if *session == old
    )), "{:?}", p.a_events);
    assert_eq!(p.a.session_count(), 1);
    assert_eq!(
        p.a.session_with(&identity(2).node_id()).map(|s| s == old),
        Some(false)
    );
}

#[test]
fn the_same_seeds_give_the_same_bytes() {
    fn run() -> Vec<(Instant, Side, Vec<u8>)> {
        let mut p = Pair::new(config(5), config(6), 7);
        p.set_link(faulty(20, 30, 100_000, 100_000));
        p.connect(false, 10 * SECOND);
        exchange(&mut p, 30, Duration::from_millis(3));
        p.wire_log
    }
    let a = run();
    assert!(a.len() > 60);
    assert_eq!(a, run());
}

#[test]
fn nodes_with_different_providers_interoperate() {
    use std::sync::Arc;
    let a = config(1).with_provider(Arc::new(proto_core::crypto::AwsLc));
    let b = config(2);
    for ik in [true, false] {
        let mut p = Pair::new(a.clone(), b.clone(), 1);
        p.set_link(faulty(10, 20, 50_000, 50_000));
        p.connect(ik, 10 * SECOND);
        let (sa, sb) = exchange(&mut p, 30, Duration::from_millis(3));
        assert_subset_no_dups(&p.datagrams(Side::B), &sa);
        assert_subset_no_dups(&p.datagrams(Side::A), &sb);
        assert!(p.datagrams(Side::B).len() >= 20);
    }
}

#[test]
fn a_late_duplicate_initiation_costs_nothing_after_the_handshake() {
    let mut p = Pair::default_pair();
    p.connect(true, 5 * SECOND);
    let init = p
        .wire_log
        .iter()
        .find(|(_, s, b)| *s == Side::A && b[1] == proto_core::wire::kind::INIT)
        .map(|(_, _, b)| b.clone())
        .unwrap();
    let answered = p.b.stats().handshakes_answered;
    p.inject(Side::B, &init);
    assert_eq!(p.b.stats().handshakes_answered, answered);
    assert_eq!(p.b.session_count(), 1);
    assert_eq!(p.b.stats().drops.out_of_state, 1);
}

#[test]
fn a_spoofed_initiation_is_answered_once_and_never_amplified() {
    for ik in [true, false] {
        let mut p = Pair::default_pair();
        let spec = if ik { p.b.peer_spec() } else { PeerSpec::any() };
        p.a.connect(p.now, p.b_addr, spec).unwrap();
        let mut buf = vec![0u8; 1500];
        let t = p.a.poll_transmit(p.now, &mut buf).unwrap().unwrap();
        let init = buf[..t.len].to_vec();
        // The victim's address is spoofed as the source; the responder answers it exactly once.
        let victim: std::net::SocketAddr = "203.0.113.9:53".parse().unwrap();
        p.b.handle_datagram(p.now, victim, &init).unwrap();
        let mut sent = 0;
        let mut t_end = p.now;
        for _ in 0..40 {
            while let Some(t) = p.b.poll_transmit(t_end, &mut buf).unwrap() {
                assert_eq!(t.destination, victim);
                sent += t.len;
            }
            t_end += Duration::from_millis(500);
            p.b.handle_timeout(t_end).unwrap();
        }
        assert!(sent > 0);
        assert!(
            sent <= init.len(),
            "ik={ik}: {sent} bytes out for {} in",
            init.len()
        );
        assert_eq!(p.b.session_count(), 0, "the half-open handshake expired");
    }
}

#[test]
fn a_damaged_final_does_not_poison_the_xx_responder() {
    let mut p = Pair::default_pair();
    // Corrupt the first FINAL beyond its first 48 bytes (after snow has mixed the `se` key),
    // then let the retransmitted FINAL through.
    let mut corrupted = false;
    p.tap = Some(Box::new(move |from, mut bytes| {
        if from == Side::A && bytes[1] == proto_core::wire::kind::FINAL && !corrupted {
            corrupted = true;
            bytes[8 + 100] ^= 0x01;
        }
        Some(bytes)
    }));
    p.connect(false, 10 * SECOND);
    assert_eq!(p.b.stats().drops.handshake_failed, 1);
    let (sa, sb) = exchange(&mut p, 5, Duration::from_millis(5));
    assert_eq!(p.datagrams(Side::B), sa);
    assert_eq!(p.datagrams(Side::A), sb);
}

#[test]
fn a_lost_confirmation_is_repeated_until_acknowledged() {
    for ik in [true, false] {
        let mut p = Pair::default_pair();
        // Drop A's first confirmation (PING for IK, FINAL for XX).
        let mut dropped = false;
        p.tap = Some(Box::new(move |from, bytes| {
            let confirmation = bytes[1] == proto_core::wire::kind::DATA
                || bytes[1] == proto_core::wire::kind::FINAL;
            if from == Side::A && confirmation && !dropped {
                dropped = true;
                return None;
            }
            Some(bytes)
        }));
        p.connect(ik, 5 * SECOND);
        assert!(p.a.stats().handshake_retransmits >= 1, "ik={ik}");
        // Once acknowledged, nothing more is repeated.
        let after = p.a.stats().handshake_retransmits;
        p.run_for(20 * SECOND);
        assert_eq!(p.a.stats().handshake_retransmits, after, "ik={ik}");
    }
}

#[test]
fn a_vouched_identity_and_static_key_cost_the_initiator_no_signature_check() {
    // PeerSpec::known: the caller vouches for the pair; Noise IK proves the static key.
    let mut p = Pair::default_pair();
    p.connect(true, 5 * SECOND);
    assert_eq!(p.a.stats().bindings_verified, 0);
    assert_eq!(p.b.stats().bindings_verified, 1);
    // Only the static key: the initiator checks the responder's signature.
    let mut p = Pair::default_pair();
    let spec = PeerSpec {
        identity: None,
        static_key: Some(p.b.static_key()),
    };
    p.a.connect(p.now, p.b_addr, spec).unwrap();
    p.drain();
    assert!(p.run_until_cond(5 * SECOND, |p| p.connected(Side::A) && p.connected(Side::B)));
    assert_eq!(p.a.stats().bindings_verified, 1);
    // A vouched pair whose identity is not the responder's still fails.
    let mut p = Pair::default_pair();
    let spec = PeerSpec::known(identity(3).public(), p.b.static_key());
    p.a.connect(p.now, p.b_addr, spec).unwrap();
    p.drain();
    p.run_for(5 * SECOND);
    assert!(matches!(
        p.a_events.as_slice(),
        [Event::Disconnected {
            reason: DisconnectReason::HandshakeFailed(HandshakeError::IdentityMismatch),
            ..
        }]
    ));
}
