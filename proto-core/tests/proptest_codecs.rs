//! Round-trip properties for the codecs `proptest_wire.rs` does not cover: stream frames
//! (STREAM, ACK, NACK, RESET), every SYNC message and the log stream's framing, and the
//! identity binding. Decode of encode is identity here; encode of decode is identity for
//! every accepted input in the fuzz targets (`docs/fuzzing.md`).

use proptest::prelude::*;
use proto_core::identity::Binding;
use proto_core::replication::Role;
use proto_core::wire::frame::{self, Frame, Frames};
use proto_core::wire::stream::{self as ws, Class, Mode, ResetFrame, ResetOrigin, StreamFrame};
use proto_core::wire::sync::{self, NackCode, SyncMsg};
use proto_core::{Identity, Seed};

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Ordered),
        Just(Mode::Unordered),
        Just(Mode::Unreliable)
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![Just(Class::App), Just(Class::Rpc), Just(Class::Log)]
}

fn origin() -> impl Strategy<Value = ResetOrigin> {
    prop_oneof![
        Just(ResetOrigin::Application),
        Just(ResetOrigin::GaveUp),
        Just(ResetOrigin::CloseDeadline),
        Just(ResetOrigin::Refused),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Idle),
        Just(Role::Replica),
        Just(Role::Candidate),
        Just(Role::Leader)
    ]
}

/// Ascending, disjoint, non-empty ranges from `base`, as `(start, end)`.
fn ranges(base: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0u32..50, 1u32..50), 0..8).prop_map(move |steps| {
        let mut at = base;
        steps
            .into_iter()
            .map(|(gap, len)| {
                let s = at + u64::from(gap);
                at = s + u64::from(len);
                (s, at)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn stream_chunks_round_trip(
        stream in any::<u32>(), seq in any::<u64>(), mode in mode(), class in class(),
        fin in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let f = Frame::Stream(StreamFrame { stream, seq, mode, class, fin, data: &data });
        let mut buf = vec![0u8; 1024];
        let n = frame::write(&mut buf, &f).expect("fits");
        prop_assert_eq!(n, frame::encoded_len(&f));
        let got: Vec<Frame<'_>> = Frames::new(&buf[..n]).collect::<Result<_, _>>().expect("decodes");
        prop_assert_eq!(got, vec![f]);
    }

    #[test]
    fn acks_round_trip(
        stream in any::<u32>(), cum in 0u64..1 << 40, extra in 0u64..1000,
        truncated in any::<bool>(), gaps in ranges(0),
    ) {
        // Ranges start above the cumulative point.
        let shifted: Vec<(u64, u64)> = gaps.iter().map(|(s, e)| (s + cum + 1, e + cum + 1)).collect();
        let mut buf = vec![0u8; 1024];
        let n = ws::write_ack(&mut buf, stream, cum, cum + extra, &shifted, truncated).expect("fits");
        let Some(Ok(Frame::Ack(a))) = Frames::new(&buf[..n]).next() else {
            return Err(TestCaseError::fail("an ACK did not decode"));
        };
        prop_assert_eq!((a.stream, a.cumulative, a.limit, a.truncated), (stream, cum, cum + extra, truncated));
        prop_assert_eq!(a.ranges.iter().collect::<Vec<_>>(), shifted);
    }

    #[test]
    fn nacks_round_trip(stream in any::<u32>(), base in 0u64..1 << 40, gaps in ranges(0)) {
        // A NACK's base is its first gap's start.
        let gaps: Vec<(u64, u64)> = gaps.iter().map(|(s, e)| (s + base, e + base)).collect();
        let first = gaps.first().map(|(s, _)| *s).unwrap_or(base);
        let gaps: Vec<(u64, u64)> = gaps.iter().map(|(s, e)| (s - first + base, e - first + base)).collect();
        let mut buf = vec![0u8; 1024];
        match ws::write_nack(&mut buf, stream, &gaps) {
            None => prop_assert!(gaps.is_empty(), "a NACK with gaps must encode"),
            Some(n) => {
                let Some(Ok(Frame::Nack(g))) = Frames::new(&buf[..n]).next() else {
                    return Err(TestCaseError::fail("a NACK did not decode"));
                };
                prop_assert_eq!(g.stream, stream);
                prop_assert_eq!(g.gaps.iter().collect::<Vec<_>>(), gaps);
            }
        }
    }

    #[test]
    fn resets_round_trip(stream in any::<u32>(), origin in origin(), code in any::<u16>(), ack in any::<bool>()) {
        let r = ResetFrame { stream, origin, code, ack };
        let mut buf = [0u8; 16];
        let n = ws::write_reset(&mut buf, &r).expect("fits");
        prop_assert_eq!(Frames::new(&buf[..n]).next(), Some(Ok(Frame::Reset(r))));
    }

    #[test]
    fn sync_messages_round_trip(
        log in any::<u64>(), term in any::<u64>(), a in any::<u64>(), b in any::<u64>(),
        c in any::<u64>(), d in any::<u64>(), small in any::<u32>(), flag in any::<bool>(),
        role in role(), code in 1u8..=4, detail in "[a-z ]{0,40}",
        events in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
        which in 0u8..6,
    ) {
        let mut m = Vec::new();
        let code = NackCode::from_byte(code).expect("1..=4 are codes");
        let first_seq = a % (u64::MAX / 2);
        match which {
            0 => sync::write_request(&mut m, log, term, a, b, small),
            1 => sync::write_response(&mut m, log, term, first_seq, b, c, d, a, events.iter().map(|(t, p)| (*t, p.as_slice())))
                .expect("a small response encodes"),
            2 => sync::write_heartbeat(&mut m, log, term, a, b, role, c),
            3 => sync::write_nack(&mut m, log, term, a, code, &detail),
            4 => sync::write_vote_request(&mut m, log, term, a, b),
            _ => sync::write_vote(&mut m, log, term, flag),
        }
        let got = sync::decode(&m).expect("what we encode decodes");
        prop_assert_eq!(sync::log_of(&m), Some(log));
        match got {
            SyncMsg::Request { log: l, term: t, since, prev_term, chunk_max } =>
                prop_assert_eq!((l, t, since, prev_term, chunk_max), (log, term, a, b, small)),
            SyncMsg::Response { log: l, term: t, first_seq: f, prev_term, leader_first_retained, commit, leader_next, events: evs } => {
                prop_assert_eq!((l, t, f, prev_term, leader_first_retained, commit, leader_next), (log, term, first_seq, b, c, d, a));
                let want: Vec<(u64, u64, &[u8])> = events.iter().enumerate()
                    .map(|(i, (t, p))| (first_seq + i as u64, *t, p.as_slice())).collect();
                prop_assert_eq!(evs.iter().collect::<Vec<_>>(), want);
            }
            SyncMsg::Heartbeat { log: l, term: t, tail, commit, role: r, wall_clock_ms } =>
                prop_assert_eq!((l, t, tail, commit, r, wall_clock_ms), (log, term, a, b, role, c)),
            SyncMsg::Nack { log: l, term: t, since, code: k, detail: text } =>
                prop_assert_eq!((l, t, since, k, text), (log, term, a, code, detail.as_str())),
            SyncMsg::VoteRequest { log: l, term: t, next, last_term } =>
                prop_assert_eq!((l, t, next, last_term), (log, term, a, b)),
            SyncMsg::Vote { log: l, term: t, granted } =>
                prop_assert_eq!((l, t, granted), (log, term, flag)),
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
        // The log stream's framing carries it unchanged.
        let mut framed = Vec::new();
        sync::write_frame(&mut framed, &m).expect("frames");
        let (inner, used) = sync::split_frame(&framed).expect("valid").expect("whole");
        prop_assert_eq!((inner, used), (m.as_slice(), framed.len()));
    }

    #[test]
    fn bindings_round_trip(seed in any::<u64>(), key in any::<[u8; 32]>()) {
        let b = Identity::from_seed(&Seed::from_u64(seed)).bind(&key);
        let bytes = b.encode();
        let back = Binding::decode(&bytes).expect("a binding decodes");
        prop_assert_eq!(back.encode(), bytes);
    }
}
