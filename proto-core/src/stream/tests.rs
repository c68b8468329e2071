//! The session stream machine (`conn::Streams`) driven on its own: two machines connected by
//! a perfect in-memory link at the frame level (no encryption, no node), so caller mistakes,
//! peer violations and the frame-sharing behaviour can be checked exactly.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::conn::{Streams, TransportStats};
use super::{Class, Mode, ResetOrigin, StreamConfig, StreamError, StreamEvent, StreamId};
use crate::time::Instant;
use crate::wire::frame::{Frame, Frames};
use crate::wire::stream::{self as sw, StreamFrame};

/// A 1400-byte packet with 32 bytes of DATA overhead: 1368 bytes of frames.
const PACKET: usize = 1400;
const OVERHEAD: usize = 32;
const ROOM: usize = PACKET - OVERHEAD;

fn cfg() -> StreamConfig {
    StreamConfig {
        max_streams: 4,
        send_buffer: 8 * 1024,
        ..StreamConfig::default()
    }
}

struct Pair {
    a: Streams,
    b: Streams,
    now: Instant,
    /// Packets (as frame lists) each side sent, for inspection.
    a_packets: Vec<Vec<u8>>,
}

impl Pair {
    fn new(cfg: StreamConfig) -> Pair {
        Pair {
            a: Streams::new(cfg, true, PACKET, OVERHEAD),
            b: Streams::new(cfg, false, PACKET, OVERHEAD),
            now: Instant::from_millis(1),
            a_packets: Vec::new(),
        }
    }

    /// Everything each side wants to send is delivered to the other, until both are quiet;
    /// then time moves on by 5 ms and timers fire. Repeated `rounds` times.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for _ in 0..10_000 {
                let a = Self::flush(
                    &mut self.a,
                    &mut self.b,
                    self.now,
                    Some(&mut self.a_packets),
                );
                let b = Self::flush(&mut self.b, &mut self.a, self.now, None);
                if a + b == 0 {
                    break;
                }
            }
            self.now = self.now.saturating_add(Duration::from_millis(5));
            self.a.on_timeout(self.now);
            self.b.on_timeout(self.now);
        }
    }

    fn flush(
        from: &mut Streams,
        to: &mut Streams,
        now: Instant,
        mut log: Option<&mut Vec<Vec<u8>>>,
    ) -> usize {
        let mut sent = 0;
        while from.wants_send(now) {
            let mut buf = vec![0u8; ROOM];
            let n = from.write_frames(now, &mut buf);
            if n == 0 {
                break;
            }
            buf.truncate(n);
            for f in Frames::new(&buf) {
                let f = f.expect("our own frames decode");
                to.on_frame(now, &f);
            }
            to.end_packet(now);
            if let Some(log) = log.as_deref_mut() {
                log.push(buf);
            }
            sent += 1;
        }
        sent
    }
}

fn events(s: &mut Streams) -> Vec<(StreamId, StreamEvent)> {
    core::iter::from_fn(|| s.poll_event().map(|(id, _, ev)| (id, ev))).collect()
}

fn stats(s: &Streams) -> TransportStats {
    s.transport_stats()
}

#[test]
fn caller_mistakes_are_typed_errors_that_change_nothing() {
    let mut p = Pair::new(cfg());
    let bytes = p.a.open(Mode::Ordered, Class::App).expect("open");
    let msgs = p.a.open(Mode::Unordered, Class::App).expect("open");
    assert_eq!(
        (bytes, msgs),
        (StreamId(0), StreamId(2)),
        "initiator ids are even"
    );
    assert_eq!(
        p.a.send_message(bytes, b"m"),
        Err(StreamError::WrongMode(Mode::Ordered))
    );
    assert_eq!(
        p.a.write(msgs, b"b"),
        Err(StreamError::WrongMode(Mode::Unordered))
    );
    let max = p.a.max_message();
    assert_eq!(max, ROOM - sw::STREAM_HEADER_LEN);
    assert_eq!(
        p.a.send_message(msgs, &vec![0u8; max + 1]),
        Err(StreamError::MessageTooLarge { len: max + 1, max })
    );
    assert_eq!(
        p.a.write(StreamId(40), b"x"),
        Err(StreamError::Unknown(StreamId(40)))
    );
    p.a.open(Mode::Ordered, Class::App).expect("third");
    p.a.open(Mode::Unreliable, Class::App).expect("fourth");
    assert_eq!(
        p.a.open(Mode::Ordered, Class::App),
        Err(StreamError::TooManyStreams)
    );
    p.a.finish(p.now, bytes).expect("finish");
    assert_eq!(p.a.write(bytes, b"late"), Err(StreamError::Finished));
    // None of that queued anything but the FIN of `bytes`.
    let s = p.a.stats(bytes).expect("stats");
    assert_eq!((s.bytes_written, s.buffered), (0, 0));
    assert_eq!(p.a.stats(msgs).expect("stats").bytes_written, 0);
}

#[test]
fn frames_of_several_streams_share_one_packet() {
    let mut p = Pair::new(cfg());
    let ids: Vec<StreamId> = (0..3)
        .map(|_| p.a.open(Mode::Ordered, Class::App).expect("open"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(p.a.write(*id, &[i as u8; 100]), Ok(100));
    }
    p.run(1);
    let first = p.a_packets.first().expect("a packet");
    let streams: Vec<u32> = Frames::new(first)
        .filter_map(|f| match f {
            Ok(Frame::Stream(s)) => Some(s.stream),
            _ => None,
        })
        .collect();
    assert_eq!(streams, vec![0, 2, 4], "one packet, three streams");
    let opened: Vec<StreamId> = events(&mut p.b)
        .into_iter()
        .filter(|(_, e)| matches!(e, StreamEvent::Opened { .. }))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(opened, ids);
    let mut buf = [0u8; 256];
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(p.b.read(*id, &mut buf), Ok(100));
        assert!(buf[..100].iter().all(|&b| b == i as u8));
    }
}

#[test]
fn back_pressure_is_a_partial_write_then_would_block_then_writable() {
    let mut p = Pair::new(cfg());
    let id = p.a.open(Mode::Ordered, Class::App).expect("open");
    let big = vec![7u8; 20 * 1024];
    // The send buffer holds 8 KiB: a partial write, then nothing.
    assert_eq!(p.a.write(id, &big), Ok(8 * 1024));
    assert_eq!(p.a.write(id, &big), Err(StreamError::WouldBlock));
    assert_eq!(p.a.stats(id).expect("stats").backpressure_events, 2);
    p.run(3);
    assert!(
        events(&mut p.a).contains(&(id, StreamEvent::Writable)),
        "room again after the buffer drained"
    );
    assert_eq!(p.a.write(id, &big), Ok(8 * 1024));
}

#[test]
fn a_graceful_close_ends_in_acknowledged_then_closed_on_both_sides() {
    let mut p = Pair::new(cfg());
    let id = p.a.open(Mode::Ordered, Class::App).expect("open");
    p.a.write(id, b"hello").expect("write");
    p.a.finish(p.now, id).expect("finish");
    p.run(2);
    let mut buf = [0u8; 16];
    assert_eq!(p.b.read(id, &mut buf), Ok(5));
    assert_eq!(p.b.read(id, &mut buf), Ok(0), "the end");
    p.b.finish(p.now, id).expect("finish the other direction");
    p.run(3);
    let a = events(&mut p.a);
    assert!(a.contains(&(id, StreamEvent::Acknowledged)), "{a:?}");
    assert!(a.contains(&(id, StreamEvent::Finished)), "{a:?}");
    // Closed only once A's application has read B's end too.
    assert!(!a.contains(&(id, StreamEvent::Closed)), "{a:?}");
    assert_eq!(p.a.read(id, &mut buf), Ok(0));
    assert_eq!(events(&mut p.a), vec![(id, StreamEvent::Closed)]);
    let b = events(&mut p.b);
    assert!(b.contains(&(id, StreamEvent::Finished)), "{b:?}");
    assert!(b.contains(&(id, StreamEvent::Closed)), "{b:?}");
    assert_eq!((p.a.open_streams(), p.b.open_streams()), (0, 0));
    // A late retransmission of the closed stream is acknowledged, not reopened.
    let mut late = [0u8; 64];
    let n = sw::write_stream(
        &mut late,
        &StreamFrame {
            stream: id.0,
            seq: 0,
            mode: Mode::Ordered,
            class: Class::App,
            fin: false,
            data: b"hello",
        },
    )
    .expect("fits");
    for f in Frames::new(&late[..n]) {
        p.b.on_frame(p.now, &f.expect("decodes"));
    }
    assert_eq!(p.b.open_streams(), 0);
    assert!(p.b.wants_send(p.now), "the late chunk is acknowledged");
}

#[test]
fn peer_violations_are_counted_and_change_nothing() {
    let mut p = Pair::new(cfg());
    let chunk = |stream: u32, seq: u64, mode: Mode| {
        let mut buf = [0u8; 64];
        let n = sw::write_stream(
            &mut buf,
            &StreamFrame {
                stream,
                seq,
                mode,
                class: Class::App,
                fin: false,
                data: b"x",
            },
        )
        .expect("fits");
        buf[..n].to_vec()
    };
    let deliver = |s: &mut Streams, now: Instant, bytes: &[u8]| {
        for f in Frames::new(bytes) {
            s.on_frame(now, &f.expect("decodes"));
        }
        s.end_packet(now);
    };
    // B is the responder: even ids are the peer's (A's), odd ids are B's own. A chunk for an
    // odd id B never opened is a broken peer.
    deliver(&mut p.b, p.now, &chunk(1, 0, Mode::Ordered));
    assert_eq!(stats(&p.b).violations, 1);
    assert_eq!(p.b.open_streams(), 0);
    assert!(events(&mut p.b).is_empty());
    // A peer stream; then a chunk contradicting its mode, and one far beyond the credit.
    deliver(&mut p.b, p.now, &chunk(0, 0, Mode::Ordered));
    assert_eq!(p.b.open_streams(), 1);
    deliver(&mut p.b, p.now, &chunk(0, 1, Mode::Unreliable));
    deliver(&mut p.b, p.now, &chunk(0, 1 << 40, Mode::Ordered));
    assert_eq!(stats(&p.b).violations, 3);
    let s = p.b.stats(StreamId(0)).expect("stats");
    assert_eq!(s.rx_seq, 1, "only the first chunk counts");
    let mut buf = [0u8; 8];
    assert_eq!(p.b.read(StreamId(0), &mut buf), Ok(1));
    assert_eq!(
        p.b.read(StreamId(0), &mut buf),
        Err(StreamError::WouldBlock)
    );
}

#[test]
fn a_stream_beyond_max_streams_is_refused_with_a_reset() {
    let mut p = Pair::new(StreamConfig {
        max_streams: 1,
        ..cfg()
    });
    let one = p.a.open(Mode::Ordered, Class::App).expect("open");
    p.a.write(one, b"1").expect("write");
    p.run(1);
    // A's own limit is also 1; a second A-side machine that thinks otherwise:
    let mut rogue = Streams::new(cfg(), true, PACKET, OVERHEAD);
    rogue.open(Mode::Ordered, Class::App).expect("open 0");
    let two = rogue.open(Mode::Ordered, Class::App).expect("open 2");
    rogue.write(two, b"2").expect("write");
    let mut buf = vec![0u8; ROOM];
    let n = rogue.write_frames(p.now, &mut buf);
    for f in Frames::new(&buf[..n]) {
        p.b.on_frame(p.now, &f.expect("decodes"));
    }
    assert_eq!(stats(&p.b).refused, 1);
    assert_eq!(p.b.open_streams(), 1);
    // B answers with RESET(Refused), which the rogue surfaces as a remote reset.
    let mut out = vec![0u8; ROOM];
    let n = p.b.write_frames(p.now, &mut out);
    for f in Frames::new(&out[..n]) {
        rogue.on_frame(p.now, &f.expect("decodes"));
    }
    let ev = events(&mut rogue);
    assert!(
        ev.contains(&(
            two,
            StreamEvent::Reset {
                origin: ResetOrigin::Refused,
                code: 0,
                remote: true
            }
        )),
        "{ev:?}"
    );
}

#[test]
fn an_application_reset_reaches_the_peer_with_its_code() {
    let mut p = Pair::new(cfg());
    let id = p.a.open(Mode::Ordered, Class::App).expect("open");
    p.a.write(id, b"abc").expect("write");
    p.run(1);
    p.a.reset(p.now, id, 0x0bad).expect("reset");
    assert_eq!(p.a.write(id, b"x"), Err(StreamError::Unknown(id)));
    p.run(1);
    let ev = events(&mut p.b);
    assert!(
        ev.contains(&(
            id,
            StreamEvent::Reset {
                origin: ResetOrigin::Application,
                code: 0x0bad,
                remote: true
            }
        )),
        "{ev:?}"
    );
    assert_eq!(p.b.open_streams(), 0);
    // The RESET was acknowledged: A stops repeating it.
    p.run(5);
    assert!(!p.a.wants_send(p.now));
}

#[test]
fn an_ack_with_more_ranges_than_it_carries_says_it_is_truncated() {
    let mut p = Pair::new(cfg());
    // Every other chunk of a peer stream arrives: 100 separate ranges above the cumulative
    // point, more than the 64 one ACK carries.
    for seq in (1..200).step_by(2) {
        let mut buf = [0u8; 64];
        let n = sw::write_stream(
            &mut buf,
            &StreamFrame {
                stream: 0,
                seq,
                mode: Mode::Ordered,
                class: Class::App,
                fin: false,
                data: b"x",
            },
        )
        .expect("fits");
        for f in Frames::new(&buf[..n]) {
            p.b.on_frame(p.now, &f.expect("decodes"));
        }
        p.b.end_packet(p.now);
    }
    let mut out = vec![0u8; ROOM];
    let n = p.b.write_frames(p.now, &mut out);
    let ack = Frames::new(&out[..n])
        .find_map(|f| match f {
            Ok(Frame::Ack(a)) => Some((a.ranges.len(), a.truncated)),
            _ => None,
        })
        .expect("an ACK");
    assert_eq!(ack, (sw::MAX_RANGES, true));
}

#[test]
fn a_quiet_streams_lost_tail_is_resent_while_other_streams_keep_the_session_busy() {
    // Regression: the quiet stream's only chunk is lost, nothing follows it on that stream
    // (so no ACK range or NACK reveals a gap), and a busy stream keeps sending, which kept
    // postponing the session-wide tail probe: the chunk waited forever. A later transmission's
    // acknowledgement now reveals the loss after the loss delay.
    let mut p = Pair::new(StreamConfig {
        send_buffer: 1 << 20,
        ..cfg()
    });
    let quiet = p.a.open(Mode::Ordered, Class::App).expect("open");
    let busy = p.a.open(Mode::Ordered, Class::App).expect("open");
    p.a.write(quiet, b"tail").expect("write");
    let mut dropped = false;
    let mut delivered_at = None;
    for round in 0..200 {
        p.a.write(busy, &[1u8; 200]).expect("write");
        for _ in 0..100 {
            let mut moved = 0;
            while p.a.wants_send(p.now) {
                let mut buf = vec![0u8; ROOM];
                let n = p.a.write_frames(p.now, &mut buf);
                if n == 0 {
                    break;
                }
                for f in Frames::new(&buf[..n]) {
                    let f = f.expect("decodes");
                    if let Frame::Stream(s) = &f {
                        if s.stream == quiet.0 && !dropped {
                            dropped = true;
                            continue;
                        }
                    }
                    p.b.on_frame(p.now, &f);
                }
                p.b.end_packet(p.now);
                moved += 1;
            }
            moved += Pair::flush(&mut p.b, &mut p.a, p.now, None);
            if moved == 0 {
                break;
            }
        }
        let mut buf = [0u8; 4096];
        while p.b.read(busy, &mut buf).is_ok_and(|n| n > 0) {}
        if p.b.read(quiet, &mut buf) == Ok(4) {
            delivered_at = Some(round);
            break;
        }
        p.now = p.now.saturating_add(Duration::from_millis(5));
        p.a.on_timeout(p.now);
        p.b.on_timeout(p.now);
    }
    assert!(dropped);
    let round = delivered_at.expect("the lost tail was never resent");
    assert!(round <= 10, "resent after {round} rounds of 5 ms");
}

#[test]
fn the_last_acknowledgement_survives_the_stream_closing() {
    // Regression: A's read of B's FIN closes A's side of the stream, and the removal dropped
    // the acknowledgement A still owed for that FIN; B only got it after resending by timer.
    let mut p = Pair::new(cfg());
    let id = p.a.open(Mode::Ordered, Class::App).expect("open");
    p.a.write(id, b"request").expect("write");
    p.a.finish(p.now, id).expect("finish");
    p.run(1);
    let mut buf = [0u8; 64];
    assert_eq!(p.b.read(id, &mut buf), Ok(7));
    assert_eq!(p.b.read(id, &mut buf), Ok(0));
    p.b.write(id, b"reply").expect("write");
    p.b.finish(p.now, id).expect("finish");
    // B's reply and FIN reach A; A reads to the end before anything is sent back.
    while p.b.wants_send(p.now) {
        let mut out = vec![0u8; ROOM];
        let n = p.b.write_frames(p.now, &mut out);
        for f in Frames::new(&out[..n]) {
            p.a.on_frame(p.now, &f.expect("decodes"));
        }
        p.a.end_packet(p.now);
    }
    assert_eq!(p.a.read(id, &mut buf), Ok(5));
    assert_eq!(p.a.read(id, &mut buf), Ok(0));
    assert!(events(&mut p.a).contains(&(id, StreamEvent::Closed)));
    // A still acknowledges B's FIN at once, from the closed stream's tombstone.
    assert!(p.a.wants_send(p.now), "the acknowledgement is still due");
    p.run(1);
    assert!(events(&mut p.b).contains(&(id, StreamEvent::Closed)));
    assert_eq!(stats(&p.b).retransmits, 0);
    assert_eq!(stats(&p.b).probes, 0);
}

#[test]
fn a_late_duplicate_of_a_long_gone_stream_is_never_opened_again() {
    // Tombstones are bounded (16 with max_streams 4). A chunk of a peer stream that ended so
    // long ago that its tombstone was forgotten must not open it again: for nRPC that would
    // run the call twice.
    let mut p = Pair::new(cfg());
    let mut first: Option<Vec<u8>> = None;
    for i in 0..24u8 {
        let id = p.a.open(Mode::Ordered, Class::App).expect("open");
        p.a.write(id, &[i; 10]).expect("write");
        p.a.finish(p.now, id).expect("finish");
        p.run(1);
        if first.is_none() {
            first = p.a_packets.first().cloned();
        }
        let mut buf = [0u8; 32];
        assert_eq!(p.b.read(id, &mut buf), Ok(10));
        assert_eq!(p.b.read(id, &mut buf), Ok(0));
        p.b.finish(p.now, id).expect("finish");
        p.run(2);
        let mut buf = [0u8; 8];
        let _ = p.a.read(id, &mut buf);
        p.run(1);
    }
    let _ = events(&mut p.b);
    let replay = first.expect("stream 0's first packet");
    for f in Frames::new(&replay) {
        p.b.on_frame(p.now, &f.expect("decodes"));
    }
    p.b.end_packet(p.now);
    let ev = events(&mut p.b);
    assert!(
        !ev.iter()
            .any(|(_, e)| matches!(e, StreamEvent::Opened { .. })),
        "stream 0 opened again: {ev:?}"
    );
    assert_eq!(stats(&p.b).stale, 1);
    assert!(
        p.b.wants_send(p.now),
        "a RESET tells a sender that might still wait"
    );
}
