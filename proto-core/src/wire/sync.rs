//! Replication messages: SYNC_REQUEST, SYNC_RESPONSE, SYNC_HEARTBEAT and SYNC_NACK.
//!
//! This module owns their byte layouts (see `docs/wire.md`, "Replication messages") and
//! nothing else: it never decides what a message means for a log. All integers are
//! little-endian. Beyond the seed's fields every message carries the sender's `term`, and
//! SYNC_RESPONSE and SYNC_HEARTBEAT the leader's `commit` point (see `docs/replication.md`).
//! A decoder checks every length, count and sequence before it returns.

use alloc::vec::Vec;

use super::{Reader, WireError};
use crate::replication::role::Role;

/// Message type bytes.
pub mod ty {
    /// Replica → leader: send me events from `since`.
    pub const SYNC_REQUEST: u8 = 0x20;
    /// Leader → replica: events.
    pub const SYNC_RESPONSE: u8 = 0x21;
    /// Both ways: role, term, tail and commit point.
    pub const SYNC_HEARTBEAT: u8 = 0x22;
    /// Leader → replica: a request refused, with a code.
    pub const SYNC_NACK: u8 = 0x23;
    /// Candidate → replicas: acknowledge my term (ours; the seed has no terms).
    pub const VOTE_REQUEST: u8 = 0x24;
    /// Replica → candidate: the term acknowledged or refused.
    pub const VOTE: u8 = 0x25;
}

/// SYNC_REQUEST length: type, log, term, since, prev_term, chunk_max.
pub const SYNC_REQUEST_LEN: usize = 1 + 8 + 8 + 8 + 8 + 4;
/// VOTE_REQUEST length: type, log, term, next, last_term.
pub const VOTE_REQUEST_LEN: usize = 1 + 8 + 8 + 8 + 8;
/// VOTE length: type, log, term, granted.
pub const VOTE_LEN: usize = 1 + 8 + 8 + 1;
/// SYNC_HEARTBEAT length: type, log, term, tail, commit, role, wall clock.
pub const SYNC_HEARTBEAT_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1 + 8;
/// SYNC_RESPONSE header: type, log, term, first_seq, prev_term, leader_first_retained,
/// commit, leader_next, count.
pub const SYNC_RESPONSE_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 4;
/// Per event in a SYNC_RESPONSE: seq, term, len.
pub const SYNC_EVENT_HEADER_LEN: usize = 8 + 8 + 4;
/// SYNC_NACK header: type, log, term, since, code, detail length.
pub const SYNC_NACK_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 1 + 2;
/// Most events one SYNC_RESPONSE carries.
pub const MAX_EVENTS: u32 = 4096;
/// Most payload bytes one SYNC_RESPONSE carries, even for a single event: 64 MiB.
pub const CHUNK_HARD_CEILING: u64 = 64 << 20;
/// Longest NACK detail, bytes (cut at a character boundary).
pub const NACK_DETAIL_MAX: usize = 1024;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NackCode {
    /// The receiver does not lead this log (in this term).
    NotLeader,
    /// The requested range is not in the log.
    BadRange,
    /// The bandwidth budget is spent; ask again later.
    Backpressure,
    /// The log is closed.
    ChannelClosed,
}

impl NackCode {
    /// Its byte.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            NackCode::NotLeader => 1,
            NackCode::BadRange => 2,
            NackCode::Backpressure => 3,
            NackCode::ChannelClosed => 4,
        }
    }

    /// The code a byte carries.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<NackCode> {
        match b {
            1 => Some(NackCode::NotLeader),
            2 => Some(NackCode::BadRange),
            3 => Some(NackCode::Backpressure),
            4 => Some(NackCode::ChannelClosed),
            _ => None,
        }
    }
}

/// The events of a SYNC_RESPONSE, walked from checked bytes: `(seq, term, payload)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Events<'a> {
    bytes: &'a [u8],
    count: u32,
}

impl core::fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Events")
            .field("count", &self.count)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<'a> Events<'a> {
    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each event's sequence, term and payload.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &'a [u8])> {
        let mut r = Reader::new(self.bytes);
        (0..self.count).map_while(move |_| {
            let seq = r.u64().ok()?;
            let term = r.u64().ok()?;
            let len = usize::try_from(r.u32().ok()?).ok()?;
            Some((seq, term, r.take(len).ok()?))
        })
    }
}

/// One decoded replication message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMsg<'a> {
    /// Send me events from `since`, at most `chunk_max` of them.
    Request {
        /// The log.
        log: u64,
        /// The sender's term.
        term: u64,
        /// The first sequence wanted; everything below it the sender has stored (the
        /// acknowledgement a leader counts for its commit point).
        since: u64,
        /// The term of the sender's event `since − 1` (0 if none): the leader checks that the
        /// logs match there.
        prev_term: u64,
        /// Most events wanted.
        chunk_max: u32,
    },
    /// Events `first_seq..`, in order without gaps.
    Response {
        /// The log.
        log: u64,
        /// The leader's term.
        term: u64,
        /// The first event's sequence.
        first_seq: u64,
        /// The term of the leader's event `first_seq − 1` (0 if none or no longer retained): a
        /// replica applies the events only where its own log matches there.
        prev_term: u64,
        /// The leader's first retained sequence: a replica behind it skips ahead (a
        /// retention trim); any other gap is divergence.
        leader_first_retained: u64,
        /// Events below this are acknowledged by a majority.
        commit: u64,
        /// The leader's next sequence when it answered: when the events reach it, a replica
        /// drops anything of its own beyond (an old term's writes that never committed).
        leader_next: u64,
        /// The events.
        events: Events<'a>,
    },
    /// Liveness and position.
    Heartbeat {
        /// The log.
        log: u64,
        /// The sender's term.
        term: u64,
        /// The sender's next sequence.
        tail: u64,
        /// The sender's commit point.
        commit: u64,
        /// The sender's role.
        role: Role,
        /// The sender's wall clock, milliseconds (for lag gauges only, never for decisions).
        wall_clock_ms: u64,
    },
    /// A request refused.
    Nack {
        /// The log.
        log: u64,
        /// The sender's term.
        term: u64,
        /// The request's `since`.
        since: u64,
        /// Why.
        code: NackCode,
        /// For humans.
        detail: &'a str,
    },
    /// Acknowledge my term.
    VoteRequest {
        /// The log.
        log: u64,
        /// The proposed term.
        term: u64,
        /// The candidate's next sequence.
        next: u64,
        /// The term of its last event (0 if none).
        last_term: u64,
    },
    /// A term acknowledged or refused.
    Vote {
        /// The log.
        log: u64,
        /// The voter's term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
}

/// Decodes one whole message.
pub fn decode(bytes: &[u8]) -> Result<SyncMsg<'_>, WireError> {
    let mut r = Reader::new(bytes);
    let t = r.u8()?;
    let log = r.u64()?;
    let term = r.u64()?;
    let msg = match t {
        ty::SYNC_REQUEST => {
            let since = r.u64()?;
            let prev_term = r.u64()?;
            let chunk_max = r.u32()?;
            SyncMsg::Request {
                log,
                term,
                since,
                prev_term,
                chunk_max,
            }
        }
        ty::VOTE_REQUEST => {
            let next = r.u64()?;
            let last_term = r.u64()?;
            SyncMsg::VoteRequest {
                log,
                term,
                next,
                last_term,
            }
        }
        ty::VOTE => {
            let granted = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Malformed),
            };
            SyncMsg::Vote { log, term, granted }
        }
        ty::SYNC_RESPONSE => {
            let first_seq = r.u64()?;
            let prev_term = r.u64()?;
            let leader_first_retained = r.u64()?;
            let commit = r.u64()?;
            let leader_next = r.u64()?;
            let count = r.u32()?;
            if count > MAX_EVENTS {
                return Err(WireError::Malformed);
            }
            let start = r.buf;
            let mut total = 0u64;
            for i in 0..u64::from(count) {
                let seq = r.u64()?;
                // Strictly consecutive from first_seq.
                if Some(seq) != first_seq.checked_add(i) {
                    return Err(WireError::Malformed);
                }
                let _term = r.u64()?;
                let len = r.u32()?;
                total += u64::from(len);
                if total > CHUNK_HARD_CEILING {
                    return Err(WireError::Malformed);
                }
                r.take(usize::try_from(len).map_err(|_| WireError::Malformed)?)?;
            }
            r.end()?;
            return Ok(SyncMsg::Response {
                log,
                term,
                first_seq,
                prev_term,
                leader_first_retained,
                commit,
                leader_next,
                events: Events {
                    bytes: start,
                    count,
                },
            });
        }
        ty::SYNC_HEARTBEAT => {
            let tail = r.u64()?;
            let commit = r.u64()?;
            let role = Role::from_byte(r.u8()?).ok_or(WireError::Malformed)?;
            let wall_clock_ms = r.u64()?;
            SyncMsg::Heartbeat {
                log,
                term,
                tail,
                commit,
                role,
                wall_clock_ms,
            }
        }
        ty::SYNC_NACK => {
            let since = r.u64()?;
            let code = NackCode::from_byte(r.u8()?).ok_or(WireError::Malformed)?;
            let len = usize::from(r.u16()?);
            if len > NACK_DETAIL_MAX {
                return Err(WireError::Malformed);
            }
            let detail = core::str::from_utf8(r.take(len)?).map_err(|_| WireError::Malformed)?;
            SyncMsg::Nack {
                log,
                term,
                since,
                code,
                detail,
            }
        }
        _ => return Err(WireError::Kind),
    };
    r.end()?;
    Ok(msg)
}

fn head(out: &mut Vec<u8>, t: u8, log: u64, term: u64) {
    out.push(t);
    out.extend_from_slice(&log.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
}

/// Appends a SYNC_REQUEST.
pub fn write_request(
    out: &mut Vec<u8>,
    log: u64,
    term: u64,
    since: u64,
    prev_term: u64,
    chunk_max: u32,
) {
    head(out, ty::SYNC_REQUEST, log, term);
    out.extend_from_slice(&since.to_le_bytes());
    out.extend_from_slice(&prev_term.to_le_bytes());
    out.extend_from_slice(&chunk_max.to_le_bytes());
}

/// Appends a VOTE_REQUEST.
pub fn write_vote_request(out: &mut Vec<u8>, log: u64, term: u64, next: u64, last_term: u64) {
    head(out, ty::VOTE_REQUEST, log, term);
    out.extend_from_slice(&next.to_le_bytes());
    out.extend_from_slice(&last_term.to_le_bytes());
}

/// Appends a VOTE.
pub fn write_vote(out: &mut Vec<u8>, log: u64, term: u64, granted: bool) {
    head(out, ty::VOTE, log, term);
    out.push(u8::from(granted));
}

/// Appends a SYNC_HEARTBEAT.
pub fn write_heartbeat(
    out: &mut Vec<u8>,
    log: u64,
    term: u64,
    tail: u64,
    commit: u64,
    role: Role,
    wall_clock_ms: u64,
) {
    head(out, ty::SYNC_HEARTBEAT, log, term);
    out.extend_from_slice(&tail.to_le_bytes());
    out.extend_from_slice(&commit.to_le_bytes());
    out.push(role.byte());
    out.extend_from_slice(&wall_clock_ms.to_le_bytes());
}

/// Appends a SYNC_NACK; a detail over [`NACK_DETAIL_MAX`] bytes is cut at a character
/// boundary.
pub fn write_nack(
    out: &mut Vec<u8>,
    log: u64,
    term: u64,
    since: u64,
    code: NackCode,
    detail: &str,
) {
    let detail = super::rpc::truncate_utf8(detail, NACK_DETAIL_MAX);
    head(out, ty::SYNC_NACK, log, term);
    out.extend_from_slice(&since.to_le_bytes());
    out.push(code.byte());
    // At most 1024: fits u16.
    out.extend_from_slice(&(detail.len() as u16).to_le_bytes());
    out.extend_from_slice(detail.as_bytes());
}

/// Why a SYNC_RESPONSE could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// More than [`MAX_EVENTS`] events.
    TooManyEvents,
    /// More than [`CHUNK_HARD_CEILING`] payload bytes (even one event that large is refused:
    /// answer with a NACK instead).
    OverCeiling,
}

/// Appends a SYNC_RESPONSE with `events` as `(term, payload)` (consecutive from
/// `first_seq`). On error `out` is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn write_response<'e>(
    out: &mut Vec<u8>,
    log: u64,
    term: u64,
    first_seq: u64,
    prev_term: u64,
    leader_first_retained: u64,
    commit: u64,
    leader_next: u64,
    events: impl ExactSizeIterator<Item = (u64, &'e [u8])> + Clone,
) -> Result<(), ResponseError> {
    let count = u32::try_from(events.len())
        .ok()
        .filter(|c| *c <= MAX_EVENTS)
        .ok_or(ResponseError::TooManyEvents)?;
    let total: u64 = events.clone().map(|(_, e)| e.len() as u64).sum();
    if total > CHUNK_HARD_CEILING {
        return Err(ResponseError::OverCeiling);
    }
    head(out, ty::SYNC_RESPONSE, log, term);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&prev_term.to_le_bytes());
    out.extend_from_slice(&leader_first_retained.to_le_bytes());
    out.extend_from_slice(&commit.to_le_bytes());
    out.extend_from_slice(&leader_next.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (i, (t, e)) in events.enumerate() {
        out.extend_from_slice(&(first_seq + i as u64).to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        // Each event is at most 64 MiB (checked above): fits u32.
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    Ok(())
}

/// The length prefix of a message on a log stream (`docs/wire.md` section 10.4).
pub const FRAME_HEADER_LEN: usize = 4;
/// The largest message a log stream carries: a SYNC_RESPONSE at both ceilings.
pub const MAX_FRAME: usize = SYNC_RESPONSE_HEADER_LEN
    + MAX_EVENTS as usize * SYNC_EVENT_HEADER_LEN
    + CHUNK_HARD_CEILING as usize;

/// The peek at a message's log id: the 8 bytes after its type, or `None` if it is too short
/// to have one.
#[must_use]
pub fn log_of(msg: &[u8]) -> Option<u64> {
    let b: [u8; 8] = msg.get(1..9)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Appends `msg` to a log stream's bytes: `len: u32` then the message. A message over
/// [`MAX_FRAME`] is refused and nothing is written.
pub fn write_frame(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), WireError> {
    if msg.is_empty() || msg.len() > MAX_FRAME {
        return Err(WireError::Malformed);
    }
    // At most MAX_FRAME (under 4 GiB): fits u32.
    out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

/// The first whole message in a log stream's received bytes and the bytes it took;
/// `Ok(None)` when more bytes are needed. A length of zero or over [`MAX_FRAME`] is Malformed
/// (the stream cannot be resynchronised and is reset).
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(head);
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::Malformed);
    }
    Ok(buf
        .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
        .map(|m| (m, FRAME_HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn log_stream_framing_is_pinned() {
        let mut out = Vec::new();
        let mut vote = Vec::new();
        write_vote(&mut vote, 1, 9, true);
        write_frame(&mut out, &vote).unwrap();
        assert_eq!(&out[..4], &[18, 0, 0, 0]);
        assert_eq!(&out[4..], &vote[..]);
        assert_eq!(log_of(&vote), Some(1));
        assert_eq!(log_of(&vote[..8]), None);
        // Partial, whole, then two back to back.
        assert_eq!(split_frame(&out[..3]), Ok(None));
        assert_eq!(split_frame(&out[..21]), Ok(None));
        assert_eq!(split_frame(&out), Ok(Some((&vote[..], 22))));
        write_frame(&mut out, &vote).unwrap();
        assert_eq!(split_frame(&out[22..]), Ok(Some((&vote[..], 22))));
        // Zero and oversize lengths cannot be resynchronised.
        assert_eq!(split_frame(&[0, 0, 0, 0]), Err(WireError::Malformed));
        assert_eq!(split_frame(&[0xff; 8]), Err(WireError::Malformed));
        assert_eq!(write_frame(&mut Vec::new(), &[]), Err(WireError::Malformed));
    }

    #[test]
    fn request_and_heartbeat_bytes_are_pinned() {
        let mut out = Vec::new();
        write_request(&mut out, 0x0102, 7, 300, 6, 64);
        assert_eq!(out.len(), SYNC_REQUEST_LEN);
        assert_eq!(
            out,
            [
                0x20, 0x02, 0x01, 0, 0, 0, 0, 0, 0, // log
                7, 0, 0, 0, 0, 0, 0, 0, // term
                0x2c, 0x01, 0, 0, 0, 0, 0, 0, // since 300
                6, 0, 0, 0, 0, 0, 0, 0, // prev_term
                64, 0, 0, 0, // chunk_max
            ]
        );
        assert_eq!(
            decode(&out),
            Ok(SyncMsg::Request {
                log: 0x0102,
                term: 7,
                since: 300,
                prev_term: 6,
                chunk_max: 64
            })
        );
        let mut v = Vec::new();
        write_vote_request(&mut v, 1, 9, 20, 8);
        assert_eq!(v.len(), VOTE_REQUEST_LEN);
        let mut want = vec![0x24u8];
        for x in [1u64, 9, 20, 8] {
            want.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(v, want);
        let mut g = Vec::new();
        write_vote(&mut g, 1, 9, true);
        assert_eq!(g.len(), VOTE_LEN);
        assert_eq!(g, [0x25, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            decode(&g),
            Ok(SyncMsg::Vote {
                log: 1,
                term: 9,
                granted: true
            })
        );
        g[17] = 2;
        assert_eq!(decode(&g), Err(WireError::Malformed));
        let mut hb = Vec::new();
        write_heartbeat(&mut hb, 1, 2, 3, 4, Role::Leader, 5);
        assert_eq!(hb.len(), SYNC_HEARTBEAT_LEN);
        assert_eq!(
            hb,
            [
                0x22, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0,
                0, 0, 0, 0, 0, 0, 3, 5, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert!(matches!(
            decode(&hb),
            Ok(SyncMsg::Heartbeat {
                role: Role::Leader,
                commit: 4,
                ..
            })
        ));
        hb[33] = 9;
        assert_eq!(decode(&hb), Err(WireError::Malformed), "unknown role");
    }

    #[test]
    fn response_and_nack_bytes_are_pinned() {
        let mut out = Vec::new();
        let evs: [(u64, &[u8]); 2] = [(1, b"ab"), (2, b"c")];
        write_response(&mut out, 1, 2, 10, 1, 5, 9, 12, evs.into_iter()).unwrap();
        let mut want = vec![0x21u8];
        for v in [1u64, 2, 10, 1, 5, 9, 12] {
            // log, term, first, prev_term, retained, commit, leader_next
            want.extend_from_slice(&v.to_le_bytes());
        }
        want.extend_from_slice(&2u32.to_le_bytes()); // count
        want.extend_from_slice(&10u64.to_le_bytes()); // event 10, term 1, "ab"
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&11u64.to_le_bytes()); // event 11, term 2, "c"
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"c");
        assert_eq!(out, want);
        let Ok(SyncMsg::Response {
            events, first_seq, ..
        }) = decode(&out)
        else {
            panic!("not a response");
        };
        assert_eq!(first_seq, 10);
        assert_eq!(
            events.iter().collect::<Vec<_>>(),
            [(10, 1, &b"ab"[..]), (11, 2, &b"c"[..])]
        );
        // A gap in the sequence is refused.
        let mut gap = out.clone();
        gap[SYNC_RESPONSE_HEADER_LEN + SYNC_EVENT_HEADER_LEN + 2] = 12;
        assert_eq!(decode(&gap), Err(WireError::Malformed));
        let mut nack = Vec::new();
        write_nack(&mut nack, 1, 2, 3, NackCode::Backpressure, "slow");
        assert_eq!(
            nack,
            [
                0x23, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 4,
                0, b's', b'l', b'o', b'w'
            ]
        );
        assert_eq!(
            decode(&nack),
            Ok(SyncMsg::Nack {
                log: 1,
                term: 2,
                since: 3,
                code: NackCode::Backpressure,
                detail: "slow"
            })
        );
    }

    #[test]
    fn limits_and_refusals() {
        // A NACK detail is cut on a character boundary and stays valid UTF-8.
        let long = "é".repeat(700);
        let mut nack = Vec::new();
        write_nack(&mut nack, 1, 1, 1, NackCode::NotLeader, &long);
        let Ok(SyncMsg::Nack { detail, .. }) = decode(&nack) else {
            panic!("nack");
        };
        assert_eq!(detail.len(), 1024);
        // The 64 MiB ceiling holds even for one event.
        let big = vec![0u8; (CHUNK_HARD_CEILING + 1) as usize];
        assert_eq!(
            write_response(
                &mut Vec::new(),
                1,
                1,
                0,
                0,
                0,
                0,
                0,
                [(1, &big[..])].into_iter()
            ),
            Err(ResponseError::OverCeiling)
        );
        // Truncation anywhere is Truncated, never a panic; trailing bytes are Malformed.
        let mut req = Vec::new();
        write_request(&mut req, 1, 1, 1, 1, 1);
        for cut in 0..req.len() {
            assert_eq!(decode(&req[..cut]), Err(WireError::Truncated), "cut {cut}");
        }
        req.push(0);
        assert_eq!(decode(&req), Err(WireError::Malformed));
        assert_eq!(decode(&[0x26; 17]), Err(WireError::Kind));
        let mut count = Vec::new();
        write_response(&mut count, 1, 1, 0, 0, 0, 0, 0, core::iter::empty()).unwrap();
        count[SYNC_RESPONSE_HEADER_LEN - 4..].copy_from_slice(&(MAX_EVENTS + 1).to_le_bytes());
        assert_eq!(decode(&count), Err(WireError::Malformed));
    }
}
