//! Stream frames: STREAM (a numbered chunk), ACK (acknowledgement and credit), NACK (gaps the
//! receiver is waiting for) and RESET (abnormal end of a stream).
//!
//! This module owns their byte layouts (see `docs/wire.md`, "Stream frames") and nothing else:
//! it never decides when a frame is sent or what a frame means for a stream's state. All
//! integers are little-endian. A decoder checks every length and reserved bit before it
//! returns, so a frame that decodes is well-formed; range lists are walked lazily from bytes
//! whose length was checked.

use super::WireError;

/// Frame type bytes (continuing the table in [`super::frame::ty`]).
pub mod ty {
    /// A chunk of a stream.
    pub const STREAM: u8 = 0x10;
    /// Cumulative and selective acknowledgement plus the receive credit of one stream.
    pub const ACK: u8 = 0x11;
    /// Sequence ranges a receiver is missing.
    pub const NACK: u8 = 0x12;
    /// The stream ends abnormally.
    pub const RESET: u8 = 0x13;
}

/// STREAM header: type, stream id (u32), seq (u64), flags (u8), length (u16).
pub const STREAM_HEADER_LEN: usize = 16;
/// ACK without ranges: type, stream (u32), cumulative (u64), limit (u64), count (u8).
pub const ACK_BASE_LEN: usize = 22;
/// NACK without ranges: type, stream (u32), base (u64), count (u8).
pub const NACK_BASE_LEN: usize = 14;
/// One range in an ACK or NACK: offset from the base (u32), length (u32).
pub const RANGE_LEN: usize = 8;
/// RESET: type, stream (u32), origin (u8), code (u16).
pub const RESET_LEN: usize = 8;
/// Most ranges one ACK or NACK carries.
pub const MAX_RANGES: usize = 64;

/// STREAM flag: this chunk is the last of its direction.
const FLAG_FIN: u8 = 0x04;
/// STREAM flags: the low two bits are the reliability mode.
const MODE_MASK: u8 = 0x03;
/// STREAM flags: bits 3–4 are the stream's class.
const CLASS_SHIFT: u8 = 3;
const CLASS_MASK: u8 = 0x18;

/// Which layer of the node a stream belongs to, carried in every STREAM frame beside the mode.
/// The node routes a stream by its class: application streams surface as stream events, nRPC
/// streams belong to the node's RPC machine. Values 2 and 3 are reserved (Malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Class {
    /// Opened by the application with `Node::open_stream`.
    #[default]
    App,
    /// Opened by the nRPC layer: one per call, plus one announcement stream per direction.
    Rpc,
    /// Opened by the replicated-log layer: one per direction of a session, carrying every
    /// log's replication messages.
    Log,
}

impl Class {
    fn bits(self) -> u8 {
        match self {
            Class::App => 0,
            Class::Rpc => 1 << CLASS_SHIFT,
            Class::Log => 2 << CLASS_SHIFT,
        }
    }

    fn from_flags(flags: u8) -> Option<Class> {
        match (flags & CLASS_MASK) >> CLASS_SHIFT {
            0 => Some(Class::App),
            1 => Some(Class::Rpc),
            2 => Some(Class::Log),
            _ => None,
        }
    }
}

/// How a stream delivers, carried in every STREAM frame so that either end can open a stream
/// with its first chunk (no round trip) whatever order chunks arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mode {
    /// Reliable, ordered bytes (the default; what TCP and QUIC users expect).
    Ordered,
    /// Reliable messages, delivered as they arrive (boundaries kept, order not).
    Unordered,
    /// Unreliable messages: never retransmitted, delivered as they arrive.
    Unreliable,
}

impl Mode {
    fn bits(self) -> u8 {
        match self {
            Mode::Ordered => 0,
            Mode::Unordered => 1,
            Mode::Unreliable => 2,
        }
    }

    fn from_bits(b: u8) -> Option<Mode> {
        match b {
            0 => Some(Mode::Ordered),
            1 => Some(Mode::Unordered),
            2 => Some(Mode::Unreliable),
            _ => None,
        }
    }

    /// Whether chunks are acknowledged and retransmitted.
    #[must_use]
    pub fn is_reliable(self) -> bool {
        !matches!(self, Mode::Unreliable)
    }

    /// Whether the application sees messages (true) or a byte stream (false).
    #[must_use]
    pub fn is_message(self) -> bool {
        !matches!(self, Mode::Ordered)
    }
}

/// Why a stream was reset, as carried in a RESET frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetOrigin {
    /// The application reset it (the code is the application's).
    Application,
    /// A chunk was retransmitted `max_retries` times without an acknowledgement.
    GaveUp,
    /// A graceful close did not complete before its deadline.
    CloseDeadline,
    /// The receiver refused the stream (too many streams, or a mode it contradicts).
    Refused,
}

impl ResetOrigin {
    fn byte(self) -> u8 {
        match self {
            ResetOrigin::Application => 0,
            ResetOrigin::GaveUp => 1,
            ResetOrigin::CloseDeadline => 2,
            ResetOrigin::Refused => 3,
        }
    }

    fn from_byte(b: u8) -> Option<ResetOrigin> {
        match b {
            0 => Some(ResetOrigin::Application),
            1 => Some(ResetOrigin::GaveUp),
            2 => Some(ResetOrigin::CloseDeadline),
            3 => Some(ResetOrigin::Refused),
            _ => None,
        }
    }
}

/// RESET origin bit: this RESET acknowledges one received for the same stream.
const RESET_ACK_BIT: u8 = 0x80;

/// One chunk of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFrame<'a> {
    /// The stream.
    pub stream: u32,
    /// The chunk's sequence number in its stream's direction.
    pub seq: u64,
    /// The stream's mode.
    pub mode: Mode,
    /// The layer the stream belongs to.
    pub class: Class,
    /// The last chunk of this direction.
    pub fin: bool,
    /// The chunk's bytes (one message in message modes).
    pub data: &'a [u8],
}

/// Sequence ranges `[start, end)` as carried by ACK and NACK: offsets from a base.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ranges<'a> {
    base: u64,
    raw: &'a [u8],
}

impl core::fmt::Debug for Ranges<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Ranges<'a> {
    /// How many ranges.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len() / RANGE_LEN
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The ranges as `(start, end)` pairs, end exclusive.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let base = self.base;
        self.raw.chunks_exact(RANGE_LEN).map(move |r| {
            let (off, len) = r.split_at(4);
            let start = base.saturating_add(u64::from(le_u32(off)));
            (start, start.saturating_add(u64::from(le_u32(len))))
        })
    }
}

/// Acknowledgement and receive credit for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame<'a> {
    /// The stream.
    pub stream: u32,
    /// Every chunk below this has arrived.
    pub cumulative: u64,
    /// The sender may send chunks below this (flow-control credit; never decreases).
    pub limit: u64,
    /// Chunks at or above `cumulative` that have arrived.
    pub ranges: Ranges<'a>,
    /// More chunks above the last range arrived than this ACK lists (it ran out of room or of
    /// ranges); when false the ACK describes everything the receiver has.
    pub truncated: bool,
}

/// ACK count byte: the high bit says the range list is truncated.
const ACK_TRUNCATED: u8 = 0x80;

/// Gaps the receiver of a stream is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackFrame<'a> {
    /// The stream.
    pub stream: u32,
    /// The missing ranges.
    pub gaps: Ranges<'a>,
}

/// A stream ends abnormally, or (with `ack`) the RESET for it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetFrame {
    /// The stream.
    pub stream: u32,
    /// Why.
    pub origin: ResetOrigin,
    /// The application's code (0 unless `origin` is `Application`).
    pub code: u16,
    /// This frame acknowledges a RESET instead of starting one.
    pub ack: bool,
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    if let Some(src) = b.get(..4) {
        a.copy_from_slice(src);
    }
    u32::from_le_bytes(a)
}

/// Cursor over a frame body; every take checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (a, b) = self.0.split_at_checked(n).ok_or(WireError::Truncated)?;
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn ranges(&mut self, base: u64) -> Result<Ranges<'a>, WireError> {
        let n = usize::from(self.u8()?);
        self.ranges_of(base, n)
    }
    fn ranges_of(&mut self, base: u64, n: usize) -> Result<Ranges<'a>, WireError> {
        if n > MAX_RANGES {
            return Err(WireError::Malformed);
        }
        let raw = self.take(n * RANGE_LEN)?;
        let ranges = Ranges { base, raw };
        // Ranges must be non-empty, ascending, disjoint and not overflow.
        let mut prev_end = base;
        for chunk in raw.chunks_exact(RANGE_LEN) {
            let (off, len) = chunk.split_at(4);
            let start = base
                .checked_add(u64::from(le_u32(off)))
                .ok_or(WireError::Malformed)?;
            let end = start
                .checked_add(u64::from(le_u32(len)))
                .ok_or(WireError::Malformed)?;
            if end == start || start < prev_end {
                return Err(WireError::Malformed);
            }
            prev_end = end;
        }
        Ok(ranges)
    }
}

/// Decodes the body of a stream frame of type `t` (the type byte already consumed) from
/// `rest`; returns the frame and what follows it. `None` if `t` is not a stream frame type.
pub(crate) fn decode(
    t: u8,
    rest: &[u8],
) -> Option<Result<(super::frame::Frame<'_>, &[u8]), WireError>> {
    use super::frame::Frame;
    let mut r = Reader(rest);
    let res = match t {
        ty::STREAM => (|| {
            let stream = r.u32()?;
            let seq = r.u64()?;
            let flags = r.u8()?;
            let len = usize::from(r.u16()?);
            let data = r.take(len)?;
            if flags & !(MODE_MASK | FLAG_FIN | CLASS_MASK) != 0 {
                return Err(WireError::Malformed);
            }
            let mode = Mode::from_bits(flags & MODE_MASK).ok_or(WireError::Malformed)?;
            let class = Class::from_flags(flags).ok_or(WireError::Malformed)?;
            Ok(Frame::Stream(StreamFrame {
                stream,
                seq,
                mode,
                class,
                fin: flags & FLAG_FIN != 0,
                data,
            }))
        })(),
        ty::ACK => (|| {
            let stream = r.u32()?;
            let cumulative = r.u64()?;
            let limit = r.u64()?;
            let count = r.u8()?;
            let ranges = r.ranges_of(cumulative, usize::from(count & !ACK_TRUNCATED))?;
            Ok(Frame::Ack(AckFrame {
                stream,
                cumulative,
                limit,
                ranges,
                truncated: count & ACK_TRUNCATED != 0,
            }))
        })(),
        ty::NACK => (|| {
            let stream = r.u32()?;
            let base = r.u64()?;
            let gaps = r.ranges(base)?;
            // `base` is the first gap's start (the receiver's cumulative point): a NACK with
            // no gap, or whose first gap starts above `base`, would say two different things
            // about the chunks below its first gap.
            if gaps.iter().next().is_none_or(|(start, _)| start != base) {
                return Err(WireError::Malformed);
            }
            Ok(Frame::Nack(NackFrame { stream, gaps }))
        })(),
        ty::RESET => (|| {
            let stream = r.u32()?;
            let origin = r.u8()?;
            let code = r.u16()?;
            let reason =
                ResetOrigin::from_byte(origin & !RESET_ACK_BIT).ok_or(WireError::Malformed)?;
            Ok(Frame::Reset(ResetFrame {
                stream,
                origin: reason,
                code,
                ack: origin & RESET_ACK_BIT != 0,
            }))
        })(),
        _ => return None,
    };
    Some(res.map(|f| (f, r.0)))
}

/// Writes into `out` at `*pos`, advancing it; `None` (and `*pos` unchanged) if it does not fit.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.out.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }
}

/// Bytes a STREAM frame with `len` data bytes takes.
#[must_use]
pub const fn stream_len(len: usize) -> usize {
    STREAM_HEADER_LEN + len
}

/// Writes a STREAM frame; `None` if it does not fit or the data is over 65535 bytes.
pub fn write_stream(out: &mut [u8], f: &StreamFrame<'_>) -> Option<usize> {
    let len = u16::try_from(f.data.len()).ok()?;
    if out.len() < stream_len(f.data.len()) {
        return None;
    }
    let mut w = Writer { out, pos: 0 };
    let flags = f.mode.bits() | f.class.bits() | if f.fin { FLAG_FIN } else { 0 };
    w.put(&[ty::STREAM])?;
    w.put(&f.stream.to_le_bytes())?;
    w.put(&f.seq.to_le_bytes())?;
    w.put(&[flags])?;
    w.put(&len.to_le_bytes())?;
    w.put(f.data)?;
    Some(w.pos)
}

/// Writes ranges relative to `base`, as many as fit in `room` bytes after the count byte (at
/// most [`MAX_RANGES`]). Ranges must be ascending and start at or above `base`.
fn put_ranges(
    w: &mut Writer<'_>,
    base: u64,
    ranges: &[(u64, u64)],
    room: usize,
    flag: u8,
    incomplete: bool,
) -> Option<()> {
    let fit = (room / RANGE_LEN).min(MAX_RANGES);
    let usable: usize = ranges
        .iter()
        .take(fit)
        .take_while(|(s, e)| {
            s.checked_sub(base)
                .is_some_and(|o| u32::try_from(o).is_ok())
                && e.checked_sub(*s)
                    .is_some_and(|l| l > 0 && u32::try_from(l).is_ok())
        })
        .count();
    let count = u8::try_from(usable).ok()?;
    let flag = if incomplete || usable < ranges.len() {
        flag
    } else {
        0
    };
    w.put(&[count | flag])?;
    for &(s, e) in ranges.iter().take(usable) {
        let off = u32::try_from(s - base).ok()?;
        let len = u32::try_from(e - s).ok()?;
        w.put(&off.to_le_bytes())?;
        w.put(&len.to_le_bytes())?;
    }
    Some(())
}

/// Writes an ACK; the ranges that fit (at most [`MAX_RANGES`]) are included, and the count
/// byte's high bit marks the list as truncated if some did not or if `incomplete` says
/// `ranges` itself leaves some out. `None` if not even the base fits.
pub fn write_ack(
    out: &mut [u8],
    stream: u32,
    cumulative: u64,
    limit: u64,
    ranges: &[(u64, u64)],
    incomplete: bool,
) -> Option<usize> {
    let room = out.len().checked_sub(ACK_BASE_LEN)?;
    let mut w = Writer { out, pos: 0 };
    w.put(&[ty::ACK])?;
    w.put(&stream.to_le_bytes())?;
    w.put(&cumulative.to_le_bytes())?;
    w.put(&limit.to_le_bytes())?;
    put_ranges(&mut w, cumulative, ranges, room, ACK_TRUNCATED, incomplete)?;
    Some(w.pos)
}

/// Writes a NACK for `gaps` (relative to the first gap's start); `None` if no gap fits.
pub fn write_nack(out: &mut [u8], stream: u32, gaps: &[(u64, u64)]) -> Option<usize> {
    let &(base, _) = gaps.first()?;
    let room = out.len().checked_sub(NACK_BASE_LEN)?;
    if room < RANGE_LEN {
        return None;
    }
    let mut w = Writer { out, pos: 0 };
    w.put(&[ty::NACK])?;
    w.put(&stream.to_le_bytes())?;
    w.put(&base.to_le_bytes())?;
    put_ranges(&mut w, base, gaps, room, 0, false)?;
    Some(w.pos)
}

/// Writes a RESET.
pub fn write_reset(out: &mut [u8], f: &ResetFrame) -> Option<usize> {
    let mut w = Writer {
        out: out.get_mut(..RESET_LEN)?,
        pos: 0,
    };
    let origin = f.origin.byte() | if f.ack { RESET_ACK_BIT } else { 0 };
    w.put(&[ty::RESET])?;
    w.put(&f.stream.to_le_bytes())?;
    w.put(&[origin])?;
    w.put(&f.code.to_le_bytes())?;
    Some(w.pos)
}

#[cfg(test)]
mod tests {
    use super::super::frame::{Frame, Frames};
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn stream_frame_bytes_are_pinned() {
        let mut buf = [0u8; 32];
        let f = StreamFrame {
            stream: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
            mode: Mode::Unordered,
            class: Class::App,
            fin: true,
            data: b"hey",
        };
        let n = write_stream(&mut buf, &f).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x10, 0x04, 0x03, 0x02, 0x01, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x05,
                0x03, 0x00, b'h', b'e', b'y'
            ]
        );
        let frames: Vec<_> = Frames::new(&buf[..n]).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames, [Frame::Stream(f)]);
    }

    #[test]
    fn rpc_class_chunk_bytes_are_pinned() {
        let mut buf = [0u8; 32];
        let f = StreamFrame {
            stream: 2,
            seq: 0,
            mode: Mode::Ordered,
            class: Class::Rpc,
            fin: true,
            data: b"x",
        };
        let n = write_stream(&mut buf, &f).unwrap();
        assert_eq!(
            &buf[..n],
            &[0x10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 1, 0, b'x']
        );
        let frames: Vec<_> = Frames::new(&buf[..n]).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames, [Frame::Stream(f)]);
    }

    #[test]
    fn ack_nack_reset_bytes_are_pinned() {
        let mut buf = [0u8; 128];
        let n = write_ack(&mut buf, 7, 10, 50, &[(12, 14), (20, 21)], false).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x11, 7, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 2, //
                2, 0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0
            ]
        );
        let Some(Ok(Frame::Ack(a))) = Frames::new(&buf[..n]).next() else {
            panic!("ack did not decode");
        };
        assert_eq!((a.stream, a.cumulative, a.limit), (7, 10, 50));
        assert!(!a.truncated);
        assert_eq!(
            a.ranges.iter().collect::<Vec<_>>(),
            vec![(12, 14), (20, 21)]
        );

        let n = write_nack(&mut buf, 9, &[(3, 5), (8, 9)]).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x12, 9, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, //
                0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0
            ]
        );
        let Some(Ok(Frame::Nack(g))) = Frames::new(&buf[..n]).next() else {
            panic!("nack did not decode");
        };
        assert_eq!(g.gaps.iter().collect::<Vec<_>>(), vec![(3, 5), (8, 9)]);

        let r = ResetFrame {
            stream: 1,
            origin: ResetOrigin::GaveUp,
            code: 0x0203,
            ack: true,
        };
        let n = write_reset(&mut buf, &r).unwrap();
        assert_eq!(&buf[..n], &[0x13, 1, 0, 0, 0, 0x81, 0x03, 0x02]);
        assert_eq!(Frames::new(&buf[..n]).next(), Some(Ok(Frame::Reset(r))));
    }

    #[test]
    fn a_nack_must_start_at_its_first_gap() {
        // Found by the `frames` fuzz target: base 5 with a first gap at offset 2 decoded, and
        // re-encoded with base 7. Both that and a NACK without gaps are now Malformed.
        let shifted = [
            0x12, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, //
            2, 0, 0, 0, 2, 0, 0, 0,
        ];
        assert_eq!(Frames::validate(&shifted), Err(WireError::Malformed));
        let empty = [0x12, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Frames::validate(&empty), Err(WireError::Malformed));
        let mut ok = shifted;
        ok[14] = 0;
        assert!(Frames::validate(&ok).is_ok());
    }

    #[test]
    fn malformed_stream_frames_are_refused() {
        // Mode 3 and unknown flag bits.
        let mut chunk = [0x10u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 0];
        assert_eq!(Frames::validate(&chunk), Err(WireError::Malformed));
        chunk[13] = 0x40;
        assert_eq!(Frames::validate(&chunk), Err(WireError::Malformed));
        // Reserved class 3; class 1 (nRPC) and 2 (logs) decode.
        chunk[13] = 0x10;
        let Some(Ok(Frame::Stream(f))) = Frames::new(&chunk).next() else {
            panic!("a log chunk did not decode");
        };
        assert_eq!(f.class, Class::Log);
        chunk[13] = 0x18;
        assert_eq!(Frames::validate(&chunk), Err(WireError::Malformed));
        chunk[13] = 0x08;
        let Some(Ok(Frame::Stream(f))) = Frames::new(&chunk).next() else {
            panic!("an nRPC chunk did not decode");
        };
        assert_eq!((f.class, f.mode, f.fin), (Class::Rpc, Mode::Ordered, false));
        chunk[13] = 0x00;
        assert_eq!(Frames::validate(&chunk), Ok(()));
        // Length beyond the body.
        chunk[14] = 1;
        assert_eq!(Frames::validate(&chunk), Err(WireError::Truncated));
        // Ranges: empty, overlapping, too many, overflowing.
        let mut ack = vec![0x11u8, 1, 0, 0, 0];
        ack.extend_from_slice(&u64::MAX.to_le_bytes());
        ack.extend_from_slice(&0u64.to_le_bytes());
        ack.push(1);
        ack.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            Frames::validate(&ack),
            Err(WireError::Malformed),
            "overflow"
        );
        let mut nack = vec![0x12u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        nack.extend_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            Frames::validate(&nack),
            Err(WireError::Malformed),
            "overlap"
        );
        let mut nack = vec![0x12u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        nack.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Frames::validate(&nack), Err(WireError::Malformed), "empty");
        let nack = [0x12u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 65];
        assert_eq!(Frames::validate(&nack), Err(WireError::Malformed), "count");
        assert_eq!(
            Frames::validate(&[0x13, 1, 0, 0, 0, 0x04, 0, 0]),
            Err(WireError::Malformed),
            "reset origin"
        );
    }

    #[test]
    fn writers_fit_what_they_can() {
        let mut small = [0u8; ACK_BASE_LEN + RANGE_LEN];
        let n = write_ack(&mut small, 1, 0, 8, &[(1, 2), (3, 4), (5, 6)], false).unwrap();
        assert_eq!(n, ACK_BASE_LEN + RANGE_LEN, "one range fits");
        assert_eq!(small[21], 0x81, "one range, truncated");
        let Some(Ok(Frame::Ack(a))) = Frames::new(&small).next() else {
            panic!("ack did not decode");
        };
        assert!(a.truncated);
        assert_eq!(write_ack(&mut [0u8; 21], 1, 0, 8, &[], false), None);
        assert_eq!(write_nack(&mut [0u8; 64], 1, &[]), None);
        assert_eq!(write_nack(&mut [0u8; NACK_BASE_LEN], 1, &[(1, 2)]), None);
        let big = vec![0u8; 70_000];
        let f = StreamFrame {
            stream: 0,
            seq: 0,
            mode: Mode::Ordered,
            class: Class::App,
            fin: false,
            data: &big,
        };
        assert_eq!(write_stream(&mut [0u8; 100], &f), None);
        assert_eq!(
            write_reset(
                &mut [0u8; 7],
                &ResetFrame {
                    stream: 0,
                    origin: ResetOrigin::Application,
                    code: 0,
                    ack: false,
                }
            ),
            None
        );
    }
}
