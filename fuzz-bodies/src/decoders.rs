//! Decoder targets: arbitrary bytes into one codec each. Every body checks two properties on
//! top of "never panics":
//!
//! - **encode of decode is identity**: whatever a decoder accepts, the matching encoder writes
//!   back byte for byte (so no two encodings mean the same thing, and nothing a decoder
//!   accepted is silently ignored), except where the layout says a part is ignored (the body
//!   after PADDING);
//! - **decode is total**: an error is a value, and a rejected input changes nothing (the node
//!   bodies compare counters before and after).

use proto_core::identity::Binding;
use proto_core::wire::{self, frame, rpc, sync, Packet};

/// `wire::decode` of one UDP payload; accepted handshake and cookie packets re-encode to the
/// same bytes, and a DATA header re-encodes to the input's first 16 bytes.
pub fn packet(data: &[u8]) {
    let Ok(p) = wire::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    match p {
        Packet::Init(i) => wire::encode_init(&mut out, &i),
        Packet::Response(r) => wire::encode_response(&mut out, &r),
        Packet::Final(f) => wire::encode_final(&mut out, &f),
        Packet::Cookie(c) => wire::encode_cookie(&mut out, &c),
        Packet::Data(h, ciphertext) => {
            out.resize(wire::DATA_HEADER_LEN, 0);
            assert!(wire::write_data_header(&mut out, &h).is_some());
            out.extend_from_slice(ciphertext);
        }
    }
    assert_eq!(out, data, "{p:?} does not re-encode to its bytes");
}

/// The frames of a decrypted DATA body: if every frame decodes, writing them again gives the
/// same bytes (up to a PADDING frame, whose rest is ignored by definition).
pub fn frames(data: &[u8]) {
    let Ok(all) = frame::Frames::new(data).collect::<Result<Vec<_>, _>>() else {
        assert!(frame::Frames::validate(data).is_err());
        return;
    };
    assert!(frame::Frames::validate(data).is_ok());
    let mut out = vec![0u8; data.len()];
    let mut at = 0;
    for f in &all {
        if matches!(f, frame::Frame::Padding) {
            assert_eq!(data.get(at), Some(&frame::ty::PADDING));
            return;
        }
        let room = out
            .get_mut(at..)
            .expect("the output is as long as the input");
        let n = frame::write(room, f).unwrap_or_else(|| panic!("{f:?} does not re-encode"));
        assert_eq!(n, frame::encoded_len(f), "{f:?}: written length");
        assert_eq!(
            out.get(at..at + n),
            data.get(at..at + n),
            "{f:?} re-encodes differently"
        );
        at += n;
    }
    assert_eq!(at, data.len(), "frames cover the input");
}

/// The nRPC frames of a stream's bytes, decoded one after another as a stream receiver
/// does; each accepted frame re-encodes to the bytes it took.
pub fn rpc_frames(data: &[u8]) {
    // A small body limit too, so the "over the limit" path is reached.
    for max_body in [64usize, 1 << 20] {
        let mut rest = data;
        while let Ok(Some((f, used))) = rpc::decode(rest, max_body) {
            assert!(
                used > 0 && used <= rest.len(),
                "{f:?} took {used} of {}",
                rest.len()
            );
            let mut out = Vec::new();
            match f {
                rpc::RpcFrame::Call(c) => rpc::write_call(
                    &mut out,
                    c.shape,
                    c.deadline_us,
                    c.credit,
                    c.service,
                    c.method,
                    c.metadata.iter().collect::<Vec<_>>().into_iter(),
                )
                .expect("an accepted CALL re-encodes"),
                rpc::RpcFrame::Msg(body) => {
                    rpc::write_msg_header(&mut out, body.len()).expect("an accepted MSG fits");
                    out.extend_from_slice(body);
                }
                rpc::RpcFrame::End { status, detail } => rpc::write_end(&mut out, status, detail),
                rpc::RpcFrame::Grant(n) => rpc::write_grant(&mut out, n),
                rpc::RpcFrame::Eos => rpc::write_eos(&mut out),
                rpc::RpcFrame::Services(s) => {
                    let services: Vec<(&str, Vec<(&str, rpc::Shape)>)> = s
                        .iter()
                        .map(|(name, m)| (name, m.iter().collect()))
                        .collect();
                    rpc::write_services(
                        &mut out,
                        s.version,
                        services.iter().map(|(n, m)| (*n, m.iter().copied())),
                    )
                    .expect("accepted SERVICES re-encode");
                }
            }
            assert_eq!(
                Some(out.as_slice()),
                rest.get(..used),
                "{f:?} re-encodes differently"
            );
            rest = rest.get(used..).unwrap_or_default();
        }
    }
}

/// One replication message (`sync::decode`), and the length-prefixed framing of a log
/// stream (`sync::split_frame`); accepted messages re-encode to their bytes.
pub fn sync_msgs(data: &[u8]) {
    sync_msg(data);
    let mut rest = data;
    while let Ok(Some((msg, used))) = sync::split_frame(rest) {
        assert!(used > msg.len() && used <= rest.len());
        sync_msg(msg);
        let mut framed = Vec::new();
        sync::write_frame(&mut framed, msg).expect("an accepted frame re-frames");
        assert_eq!(Some(framed.as_slice()), rest.get(..used));
        rest = rest.get(used..).unwrap_or_default();
    }
}

fn sync_msg(data: &[u8]) {
    let Ok(m) = sync::decode(data) else {
        return;
    };
    assert!(sync::log_of(data).is_some(), "{m:?} has a log id");
    let mut out = Vec::new();
    match m {
        sync::SyncMsg::Request {
            log,
            term,
            since,
            prev_term,
            chunk_max,
        } => sync::write_request(&mut out, log, term, since, prev_term, chunk_max),
        sync::SyncMsg::Response {
            log,
            term,
            first_seq,
            prev_term,
            leader_first_retained,
            commit,
            leader_next,
            events,
        } => {
            let evs: Vec<(u64, &[u8])> = events.iter().map(|(_, t, p)| (t, p)).collect();
            assert_eq!(evs.len(), events.len(), "every counted event is there");
            sync::write_response(
                &mut out,
                log,
                term,
                first_seq,
                prev_term,
                leader_first_retained,
                commit,
                leader_next,
                evs.iter().copied(),
            )
            .expect("an accepted response re-encodes");
        }
        sync::SyncMsg::Heartbeat {
            log,
            term,
            tail,
            commit,
            role,
            wall_clock_ms,
        } => sync::write_heartbeat(&mut out, log, term, tail, commit, role, wall_clock_ms),
        sync::SyncMsg::Nack {
            log,
            term,
            since,
            code,
            detail,
        } => sync::write_nack(&mut out, log, term, since, code, detail),
        sync::SyncMsg::VoteRequest {
            log,
            term,
            next,
            last_term,
        } => sync::write_vote_request(&mut out, log, term, next, last_term),
        sync::SyncMsg::Vote { log, term, granted } => {
            sync::write_vote(&mut out, log, term, granted);
        }
        _ => return,
    }
    assert_eq!(out, data, "{m:?} re-encodes differently");
}

/// The identity binding carried in handshake payloads.
pub fn binding(data: &[u8]) {
    if let Ok(b) = Binding::decode(data) {
        assert_eq!(
            b.encode().as_slice(),
            data,
            "a binding re-encodes to its bytes"
        );
    }
}
