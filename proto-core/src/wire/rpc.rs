//! nRPC frames: what travels inside the bytes of an nRPC stream (a stream of class
//! [`Class::Rpc`](super::stream::Class)).
//!
//! This module owns the byte layouts (see `docs/wire.md`, "nRPC frames") and nothing else: it
//! never decides what a frame means for a call. Every frame is `type: u8`, `len: u32` (little
//! endian), then `len` body bytes, so a reader can always find the next frame's end before it
//! decodes the body. A decoder checks every field before it returns, so a frame that decodes
//! is well-formed; metadata and service lists are walked lazily from bytes that were checked.

use alloc::vec::Vec;

use super::{Reader, WireError};

/// Frame type bytes.
pub mod ty {
    /// Opens a call: shape, deadline, response credit, service, method, metadata.
    pub const CALL: u8 = 0x01;
    /// One message of the call (a request or a response).
    pub const MSG: u8 = 0x02;
    /// The server's last frame: the call's status and a detail text.
    pub const END: u8 = 0x03;
    /// Credit: the receiver accepts this many more messages.
    pub const GRANT: u8 = 0x04;
    /// The caller sends no more messages (end of a request stream).
    pub const EOS: u8 = 0x05;
    /// The services a node serves (on its announcement stream only).
    pub const SERVICES: u8 = 0x06;
}

/// Bytes before every frame's body: type (u8) and body length (u32).
pub const FRAME_HEADER_LEN: usize = 5;
/// CALL body bytes besides the names and metadata: shape, flags, deadline (u64), credit (u32),
/// the two name lengths and the metadata count.
pub const CALL_FIXED_LEN: usize = 1 + 1 + 8 + 4 + 1 + 1 + 1;
/// Longest service or method name, bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest END detail text, bytes (longer details are cut at a character boundary).
pub const MAX_DETAIL_LEN: usize = 1024;
/// Most metadata entries one CALL carries.
pub const MAX_METADATA: usize = 32;

/// The four call shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Both directions stream.
    Duplex,
}

impl Shape {
    /// The byte that carries it.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            Shape::Unary => 0,
            Shape::ServerStreaming => 1,
            Shape::ClientStreaming => 2,
            Shape::Duplex => 3,
        }
    }

    /// The shape a byte carries.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Shape> {
        match b {
            0 => Some(Shape::Unary),
            1 => Some(Shape::ServerStreaming),
            2 => Some(Shape::ClientStreaming),
            3 => Some(Shape::Duplex),
            _ => None,
        }
    }

    /// Whether the caller sends a stream of requests (otherwise exactly one).
    #[must_use]
    pub fn streams_requests(self) -> bool {
        matches!(self, Shape::ClientStreaming | Shape::Duplex)
    }

    /// Whether the server sends a stream of responses (otherwise exactly one).
    #[must_use]
    pub fn streams_responses(self) -> bool {
        matches!(self, Shape::ServerStreaming | Shape::Duplex)
    }
}

/// The header of a call, as carried by CALL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallHeader<'a> {
    /// The call's shape.
    pub shape: Shape,
    /// Time left before the caller's deadline, microseconds; `None` for no deadline.
    pub deadline_us: Option<u64>,
    /// Response messages the caller accepts before its first GRANT (streaming responses).
    pub credit: u32,
    /// Service name (UTF-8, 1 to 255 bytes).
    pub service: &'a str,
    /// Method name (UTF-8, 1 to 255 bytes).
    pub method: &'a str,
    /// Metadata entries, already checked.
    pub metadata: Metadata<'a>,
}

/// Metadata entries of a CALL: `(key, value)` pairs, walked from checked bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl core::fmt::Debug for Metadata<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Metadata")
            .field("entries", &self.count)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<'a> Metadata<'a> {
    /// How many entries.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut r = Reader::new(self.bytes);
        (0..self.count).map_while(move |_| {
            let key = read_name(&mut r).ok()?;
            let len = usize::from(r.u16().ok()?);
            let value = r.take(len).ok()?;
            Some((key, value))
        })
    }
}

/// One service in a SERVICES frame, walked from checked bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServicesFrame<'a> {
    /// Announcement version: a receiver keeps the highest it has seen.
    pub version: u32,
    count: u16,
    bytes: &'a [u8],
}

impl core::fmt::Debug for ServicesFrame<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServicesFrame")
            .field("version", &self.version)
            .field("services", &self.count)
            .finish()
    }
}

impl<'a> ServicesFrame<'a> {
    /// How many services.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether it announces none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each service: its name and its methods `(name, shape)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, ServiceMethods<'a>)> {
        let mut r = Reader::new(self.bytes);
        (0..self.count).map_while(move |_| {
            let name = read_name(&mut r).ok()?;
            let n = r.u8().ok()?;
            let start = r.buf;
            for _ in 0..n {
                read_name(&mut r).ok()?;
                r.u8().ok()?;
            }
            let used = start.len() - r.buf.len();
            Some((
                name,
                ServiceMethods {
                    bytes: start.get(..used)?,
                    count: n,
                },
            ))
        })
    }
}

/// The methods of one announced service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceMethods<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> ServiceMethods<'a> {
    /// Each method's name and shape.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Shape)> {
        let mut r = Reader::new(self.bytes);
        (0..self.count).map_while(move |_| {
            let name = read_name(&mut r).ok()?;
            let shape = Shape::from_byte(r.u8().ok()?)?;
            Some((name, shape))
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcFrame<'a> {
    /// A call opens.
    Call(CallHeader<'a>),
    /// One message.
    Msg(&'a [u8]),
    /// The call's end, from the server.
    End {
        /// 0 is success; see `docs/rpc.md` for the bands.
        status: u16,
        /// A text for humans (at most [`MAX_DETAIL_LEN`] bytes).
        detail: &'a str,
    },
    /// More credit, in messages (never zero).
    Grant(u32),
    /// The caller's last request was sent.
    Eos,
    /// A node's services.
    Services(ServicesFrame<'a>),
}

/// A length-prefixed (u8) non-empty UTF-8 name.
fn read_name<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    let len = usize::from(r.u8()?);
    if len == 0 {
        return Err(WireError::Malformed);
    }
    core::str::from_utf8(r.take(len)?).map_err(|_| WireError::Malformed)
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: the frame is not complete yet (read more bytes). `Err(Truncated)` never
/// happens; `Err(Malformed)`: an unknown type, a body longer than `max_body`, or a body that
/// fails its checks. On success, returns the frame and the bytes it took.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Option<(RpcFrame<'_>, usize)>, WireError> {
    let Some((head, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let [t, l0, l1, l2, l3] = *head;
    let len = usize::try_from(u32::from_le_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    if len > max_body || !(ty::CALL..=ty::SERVICES).contains(&t) {
        return Err(WireError::Malformed);
    }
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let mut r = Reader::new(body);
    // The body is whole (its length was checked): a read past its end is Malformed.
    let frame = (|| {
        Ok(match t {
            ty::CALL => {
                let shape = Shape::from_byte(r.u8()?).ok_or(WireError::Malformed)?;
                let flags = r.u8()?;
                let deadline = r.u64()?;
                let credit = r.u32()?;
                let service = read_name(&mut r)?;
                let method = read_name(&mut r)?;
                let count = r.u8()?;
                if flags != 0 || usize::from(count) > MAX_METADATA {
                    return Err(WireError::Malformed);
                }
                let meta_start = r.buf;
                for _ in 0..count {
                    read_name(&mut r)?;
                    let vlen = usize::from(r.u16()?);
                    r.take(vlen)?;
                }
                r.end()?;
                RpcFrame::Call(CallHeader {
                    shape,
                    deadline_us: (deadline != 0).then_some(deadline),
                    credit,
                    service,
                    method,
                    metadata: Metadata {
                        bytes: meta_start,
                        count,
                    },
                })
            }
            ty::MSG => RpcFrame::Msg(body),
            ty::END => {
                let status = r.u16()?;
                if r.buf.len() > MAX_DETAIL_LEN {
                    return Err(WireError::Malformed);
                }
                let detail = core::str::from_utf8(r.buf).map_err(|_| WireError::Malformed)?;
                RpcFrame::End { status, detail }
            }
            ty::GRANT => {
                let n = r.u32()?;
                r.end()?;
                if n == 0 {
                    return Err(WireError::Malformed);
                }
                RpcFrame::Grant(n)
            }
            ty::EOS => {
                r.end()?;
                RpcFrame::Eos
            }
            _ => {
                let version = r.u32()?;
                let count = r.u16()?;
                let start = r.buf;
                for _ in 0..count {
                    read_name(&mut r)?;
                    let methods = r.u8()?;
                    for _ in 0..methods {
                        read_name(&mut r)?;
                        Shape::from_byte(r.u8()?).ok_or(WireError::Malformed)?;
                    }
                }
                r.end()?;
                RpcFrame::Services(ServicesFrame {
                    version,
                    count,
                    bytes: start,
                })
            }
        })
    })()
    .map_err(|e| match e {
        WireError::Truncated => WireError::Malformed,
        e => e,
    })?;
    Ok(Some((frame, FRAME_HEADER_LEN + len)))
}

/// Why a frame could not be written: a field is out of its wire range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A service, method or metadata key is empty or over 255 bytes.
    BadName,
    /// Over [`MAX_METADATA`] entries, or a value over 65535 bytes.
    Metadata,
    /// A body over 4 GiB, or over 65535 services or 255 methods.
    TooLarge,
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(name.len()).map_err(|_| EncodeError::BadName)?;
    if len == 0 {
        return Err(EncodeError::BadName);
    }
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_header(out: &mut Vec<u8>, t: u8, len: usize) -> Result<(), EncodeError> {
    let len = u32::try_from(len).map_err(|_| EncodeError::TooLarge)?;
    out.push(t);
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends a frame whose body was built after a placeholder header at `start`.
fn patch_len(out: &mut [u8], start: usize) -> Result<(), EncodeError> {
    let body = out.len() - start - FRAME_HEADER_LEN;
    let len = u32::try_from(body).map_err(|_| EncodeError::TooLarge)?;
    if let Some(slot) = out.get_mut(start + 1..start + FRAME_HEADER_LEN) {
        slot.copy_from_slice(&len.to_le_bytes());
    }
    Ok(())
}

/// Appends CALL. On error `out` is unchanged.
pub fn write_call<'m>(
    out: &mut Vec<u8>,
    shape: Shape,
    deadline_us: Option<u64>,
    credit: u32,
    service: &str,
    method: &str,
    metadata: impl ExactSizeIterator<Item = (&'m str, &'m [u8])>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let r = (|| {
        let count = u8::try_from(metadata.len()).map_err(|_| EncodeError::Metadata)?;
        if usize::from(count) > MAX_METADATA {
            return Err(EncodeError::Metadata);
        }
        put_header(out, ty::CALL, 0)?;
        out.push(shape.byte());
        out.push(0);
        out.extend_from_slice(&deadline_us.map_or(0, |d| d.max(1)).to_le_bytes());
        out.extend_from_slice(&credit.to_le_bytes());
        put_name(out, service)?;
        put_name(out, method)?;
        out.push(count);
        for (k, v) in metadata {
            put_name(out, k)?;
            let vl = u16::try_from(v.len()).map_err(|_| EncodeError::Metadata)?;
            out.extend_from_slice(&vl.to_le_bytes());
            out.extend_from_slice(v);
        }
        patch_len(out, start)
    })();
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Appends the header of a MSG frame with a body of `len` bytes (the caller appends the body).
pub fn write_msg_header(out: &mut Vec<u8>, len: usize) -> Result<(), EncodeError> {
    put_header(out, ty::MSG, len)
}

/// Appends END. A detail over [`MAX_DETAIL_LEN`] bytes is cut at a character boundary.
pub fn write_end(out: &mut Vec<u8>, status: u16, detail: &str) {
    let detail = truncate_utf8(detail, MAX_DETAIL_LEN);
    // At most 2 + 1024 bytes: always fits the u32 length.
    let _ = put_header(out, ty::END, 2 + detail.len());
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(detail.as_bytes());
}

/// Appends GRANT of `n` (at least 1) more messages.
pub fn write_grant(out: &mut Vec<u8>, n: u32) {
    let _ = put_header(out, ty::GRANT, 4);
    out.extend_from_slice(&n.max(1).to_le_bytes());
}

/// Appends EOS.
pub fn write_eos(out: &mut Vec<u8>) {
    let _ = put_header(out, ty::EOS, 0);
}

/// Appends SERVICES: `services` yields each service's name and methods. On error `out` is
/// unchanged.
pub fn write_services<'s, M>(
    out: &mut Vec<u8>,
    version: u32,
    services: impl ExactSizeIterator<Item = (&'s str, M)>,
) -> Result<(), EncodeError>
where
    M: ExactSizeIterator<Item = (&'s str, Shape)>,
{
    let start = out.len();
    let r = (|| {
        let count = u16::try_from(services.len()).map_err(|_| EncodeError::TooLarge)?;
        put_header(out, ty::SERVICES, 0)?;
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for (name, methods) in services {
            put_name(out, name)?;
            out.push(u8::try_from(methods.len()).map_err(|_| EncodeError::TooLarge)?);
            for (m, shape) in methods {
                put_name(out, m)?;
                out.push(shape.byte());
            }
        }
        patch_len(out, start)
    })();
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
#[must_use]
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn one(buf: &[u8]) -> RpcFrame<'_> {
        let (f, used) = decode(buf, 1 << 20).unwrap().unwrap();
        assert_eq!(used, buf.len());
        f
    }

    #[test]
    fn call_bytes_are_pinned() {
        let mut out = Vec::new();
        let meta: [(&str, &[u8]); 1] = [("k", b"v")];
        write_call(
            &mut out,
            Shape::ServerStreaming,
            Some(1500),
            16,
            "kv",
            "get",
            meta.into_iter(),
        )
        .unwrap();
        assert_eq!(
            out,
            [
                0x01, 27, 0, 0, 0, // CALL, body length 27
                0x01, 0x00, // server-streaming, flags
                0xdc, 0x05, 0, 0, 0, 0, 0, 0, // deadline 1500 us
                16, 0, 0, 0, // credit
                2, b'k', b'v', 3, b'g', b'e', b't', // names
                1, 1, b'k', 1, 0, b'v', // one metadata entry
            ]
        );
        let RpcFrame::Call(h) = one(&out) else {
            panic!("not a call");
        };
        assert_eq!(
            (h.shape, h.deadline_us, h.credit, h.service, h.method),
            (Shape::ServerStreaming, Some(1500), 16, "kv", "get")
        );
        assert_eq!(h.metadata.iter().collect::<Vec<_>>(), [("k", &b"v"[..])]);
    }

    #[test]
    fn msg_end_grant_eos_bytes_are_pinned() {
        let mut out = Vec::new();
        write_msg_header(&mut out, 2).unwrap();
        out.extend_from_slice(b"hi");
        write_end(&mut out, 0x8001, "no");
        write_grant(&mut out, 7);
        write_eos(&mut out);
        assert_eq!(
            out,
            [
                0x02, 2, 0, 0, 0, b'h', b'i', // MSG "hi"
                0x03, 4, 0, 0, 0, 0x01, 0x80, b'n', b'o', // END 0x8001 "no"
                0x04, 4, 0, 0, 0, 7, 0, 0, 0, // GRANT 7
                0x05, 0, 0, 0, 0, // EOS
            ]
        );
        let mut at = 0;
        let mut frames = Vec::new();
        while let Some((f, n)) = decode(&out[at..], 64).unwrap() {
            frames.push(f);
            at += n;
        }
        assert_eq!(
            frames,
            [
                RpcFrame::Msg(b"hi"),
                RpcFrame::End {
                    status: 0x8001,
                    detail: "no"
                },
                RpcFrame::Grant(7),
                RpcFrame::Eos
            ]
        );
    }

    #[test]
    fn services_bytes_are_pinned() {
        let mut out = Vec::new();
        let methods = [("get", Shape::Unary), ("watch", Shape::ServerStreaming)];
        write_services(&mut out, 3, [("kv", methods.into_iter())].into_iter()).unwrap();
        assert_eq!(
            out,
            [
                0x06, 22, 0, 0, 0, // SERVICES, 22 bytes
                3, 0, 0, 0, 1, 0, // version 3, one service
                2, b'k', b'v', 2, // "kv", two methods
                3, b'g', b'e', b't', 0, // get: unary
                5, b'w', b'a', b't', b'c', b'h', 1, // watch: server-streaming
            ]
        );
        let RpcFrame::Services(s) = one(&out) else {
            panic!("not services");
        };
        let got: Vec<_> = s
            .iter()
            .map(|(n, m)| (n, m.iter().collect::<Vec<_>>()))
            .collect();
        assert_eq!(got, [("kv", methods.to_vec())]);
    }

    #[test]
    fn partial_frames_wait_and_bad_frames_are_refused() {
        let mut out = Vec::new();
        write_grant(&mut out, 1);
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut], 64), Ok(None), "cut at {cut}");
        }
        // Unknown type, oversized body, zero grant, trailing bytes, bad UTF-8, bad shape.
        assert!(decode(&[0x07, 0, 0, 0, 0], 64).is_err());
        assert!(decode(&[0x02, 65, 0, 0, 0], 64).is_err());
        assert!(decode(&[0x04, 4, 0, 0, 0, 0, 0, 0, 0], 64).is_err());
        assert!(decode(&[0x05, 1, 0, 0, 0, 0], 64).is_err());
        assert!(decode(&[0x03, 3, 0, 0, 0, 0, 0, 0xff], 64).is_err());
        let mut call = Vec::new();
        write_call(
            &mut call,
            Shape::Unary,
            None,
            0,
            "s",
            "m",
            core::iter::empty(),
        )
        .unwrap();
        call[5] = 9;
        assert!(decode(&call, 64).is_err());
        call[5] = 0;
        call[6] = 1; // flags
        assert!(decode(&call, 64).is_err());
        call[6] = 0;
        assert!(decode(&call, 64).is_ok());
        // An empty name is refused by the writer and the reader.
        assert_eq!(
            write_call(
                &mut Vec::new(),
                Shape::Unary,
                None,
                0,
                "",
                "m",
                core::iter::empty()
            ),
            Err(EncodeError::BadName)
        );
        let long = "x".repeat(256);
        let mut unchanged = vec![9u8];
        assert!(write_call(
            &mut unchanged,
            Shape::Unary,
            None,
            0,
            &long,
            "m",
            core::iter::empty()
        )
        .is_err());
        assert_eq!(unchanged, [9]);
    }

    #[test]
    fn detail_is_cut_on_a_character_boundary() {
        let s = "é".repeat(600); // 1200 bytes
        let cut = truncate_utf8(&s, MAX_DETAIL_LEN);
        assert_eq!(cut.len(), 1024);
        let odd = alloc::format!("a{s}");
        assert_eq!(truncate_utf8(&odd, MAX_DETAIL_LEN).len(), 1023);
        let mut out = Vec::new();
        write_end(&mut out, 5, &odd);
        let RpcFrame::End { detail, .. } = one(&out) else {
            panic!("not end");
        };
        assert_eq!(detail.len(), 1023);
    }
}
