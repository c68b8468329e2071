//! Frames: what travels inside the encrypted body of a DATA packet.
//!
//! One packet carries a sequence of frames. This module owns their codecs. Later layers
//! (streams, nRPC, replication) add frame types here; receivers drop a packet whose frames do not
//! all decode, so a frame type is never half-applied.

use super::stream::{AckFrame, NackFrame, ResetFrame, StreamFrame};
use super::WireError;

/// Frame types (the first byte of a frame).
pub mod ty {
    /// Padding: the rest of the plaintext is ignored.
    pub const PADDING: u8 = 0x00;
    /// Keepalive / liveness proof; no body.
    pub const PING: u8 = 0x01;
    /// The sender closes the session: `code: u16`.
    pub const CLOSE: u8 = 0x02;
    /// An unreliable application datagram: `len: u16`, then `len` bytes.
    pub const DATAGRAM: u8 = 0x03;
}

/// Bytes a DATAGRAM frame adds to its payload.
pub const DATAGRAM_FRAME_OVERHEAD: usize = 3;
/// Encoded length of a PING frame.
pub const PING_LEN: usize = 1;
/// Encoded length of a CLOSE frame.
pub const CLOSE_LEN: usize = 3;

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// Padding to the end of the packet.
    Padding,
    /// Keepalive.
    Ping,
    /// The peer closes the session with this application code.
    Close(u16),
    /// An application datagram.
    Datagram(&'a [u8]),
    /// A chunk of a stream (layouts in [`super::stream`]).
    Stream(StreamFrame<'a>),
    /// Acknowledgement and credit for a stream.
    Ack(AckFrame<'a>),
    /// Gaps a stream's receiver waits for.
    Nack(NackFrame<'a>),
    /// A stream ends abnormally (or such an end is acknowledged).
    Reset(ResetFrame),
}

/// Iterates over the frames of a plaintext. Yields an error once and then stops.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `plaintext`.
    #[must_use]
    pub fn new(plaintext: &'a [u8]) -> Frames<'a> {
        Frames {
            buf: plaintext,
            failed: false,
        }
    }

    /// Checks that every frame decodes.
    pub fn validate(plaintext: &'a [u8]) -> Result<(), WireError> {
        Frames::new(plaintext).try_for_each(|f| f.map(|_| ()))
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'a>>, WireError> {
        let Some((&t, rest)) = self.buf.split_first() else {
            return Ok(None);
        };
        let (frame, rest) = match t {
            ty::PADDING => (Frame::Padding, &[][..]),
            ty::PING => (Frame::Ping, rest),
            ty::CLOSE => {
                let (code, rest) = rest.split_at_checked(2).ok_or(WireError::Truncated)?;
                let mut c = [0u8; 2];
                c.copy_from_slice(code);
                (Frame::Close(u16::from_le_bytes(c)), rest)
            }
            ty::DATAGRAM => {
                let (len, rest) = rest.split_at_checked(2).ok_or(WireError::Truncated)?;
                let mut l = [0u8; 2];
                l.copy_from_slice(len);
                let (body, rest) = rest
                    .split_at_checked(usize::from(u16::from_le_bytes(l)))
                    .ok_or(WireError::Truncated)?;
                (Frame::Datagram(body), rest)
            }
            t => match super::stream::decode(t, rest) {
                Some(r) => r?,
                None => return Err(WireError::Kind),
            },
        };
        self.buf = rest;
        Ok(Some(frame))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, WireError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_frame() {
            Ok(f) => f.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes `frame` at the start of `out`, returning the bytes written, or `None` if it does not
/// fit (or a datagram is longer than 65535 bytes).
pub fn write(out: &mut [u8], frame: &Frame<'_>) -> Option<usize> {
    match *frame {
        Frame::Padding => {
            let (t, rest) = out.split_first_mut()?;
            *t = ty::PADDING;
            rest.fill(0);
            Some(out.len())
        }
        Frame::Ping => {
            *out.first_mut()? = ty::PING;
            Some(PING_LEN)
        }
        Frame::Close(code) => {
            let [t, c0, c1] = out.get_mut(..CLOSE_LEN)? else {
                return None;
            };
            *t = ty::CLOSE;
            [*c0, *c1] = code.to_le_bytes();
            Some(CLOSE_LEN)
        }
        Frame::Datagram(body) => {
            let len = u16::try_from(body.len()).ok()?;
            let total = DATAGRAM_FRAME_OVERHEAD.checked_add(body.len())?;
            let dst = out.get_mut(..total)?;
            let (head, tail) = dst.split_at_mut(DATAGRAM_FRAME_OVERHEAD);
            let [t, l0, l1] = head else { return None };
            *t = ty::DATAGRAM;
            [*l0, *l1] = len.to_le_bytes();
            tail.copy_from_slice(body);
            Some(total)
        }
        Frame::Stream(f) => super::stream::write_stream(out, &f),
        Frame::Ack(a) => {
            let ranges: alloc::vec::Vec<(u64, u64)> = a.ranges.iter().collect();
            super::stream::write_ack(out, a.stream, a.cumulative, a.limit, &ranges, a.truncated)
        }
        Frame::Nack(n) => {
            let gaps: alloc::vec::Vec<(u64, u64)> = n.gaps.iter().collect();
            super::stream::write_nack(out, n.stream, &gaps)
        }
        Frame::Reset(r) => super::stream::write_reset(out, &r),
    }
}

/// Encoded length of `frame` (padding counts as one byte).
#[must_use]
pub fn encoded_len(frame: &Frame<'_>) -> usize {
    match frame {
        Frame::Padding | Frame::Ping => 1,
        Frame::Close(_) => CLOSE_LEN,
        Frame::Datagram(b) => DATAGRAM_FRAME_OVERHEAD + b.len(),
        Frame::Stream(f) => super::stream::stream_len(f.data.len()),
        Frame::Ack(a) => super::stream::ACK_BASE_LEN + a.ranges.len() * super::stream::RANGE_LEN,
        Frame::Nack(n) => super::stream::NACK_BASE_LEN + n.gaps.len() * super::stream::RANGE_LEN,
        Frame::Reset(_) => super::stream::RESET_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn frame_bytes_are_pinned() {
        let mut buf = [0xFFu8; 16];
        let mut n = 0;
        n += write(&mut buf[n..], &Frame::Ping).unwrap();
        n += write(&mut buf[n..], &Frame::Close(0x0102)).unwrap();
        n += write(&mut buf[n..], &Frame::Datagram(b"hi")).unwrap();
        assert_eq!(
            &buf[..n],
            &[0x01, 0x02, 0x02, 0x01, 0x03, 0x02, 0x00, b'h', b'i']
        );
        let m = write(&mut buf[n..], &Frame::Padding).unwrap();
        assert_eq!(m, 16 - n);
        let frames: Vec<_> = Frames::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            frames,
            [
                Frame::Ping,
                Frame::Close(0x0102),
                Frame::Datagram(b"hi"),
                Frame::Padding
            ]
        );
    }

    #[test]
    fn bad_frames_fail_once() {
        let mut it = Frames::new(&[0x03, 0x05, 0x00, 1, 2]);
        assert_eq!(it.next(), Some(Err(WireError::Truncated)));
        assert_eq!(it.next(), None);
        assert_eq!(Frames::validate(&[0x09]), Err(WireError::Kind));
        assert_eq!(Frames::validate(&[0x02, 0x01]), Err(WireError::Truncated));
        assert_eq!(Frames::validate(&[]), Ok(()));
    }

    #[test]
    fn write_refuses_what_does_not_fit() {
        assert_eq!(write(&mut [0u8; 4], &Frame::Datagram(b"hi")), None);
        assert_eq!(write(&mut [0u8; 2], &Frame::Close(1)), None);
        assert_eq!(write(&mut [], &Frame::Ping), None);
        assert_eq!(encoded_len(&Frame::Datagram(b"abc")), 6);
    }
}
