//! Wire codecs: the packet header and every message layout, separate from any state.
//!
//! This module owns encoding and decoding only. Decoders take untrusted bytes and either return
//! a borrowed view or a [`WireError`]; they never panic, never allocate and never touch a
//! session. `docs/wire.md` describes every layout here, and the tests pin their bytes.
//!
//! All integers are little-endian. Every packet starts with the version byte and the kind byte.

pub mod frame;
pub mod rpc;
pub mod stream;
pub mod sync;

use core::fmt;

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Smallest `max_packet_size` a node accepts (the QUIC minimum, safe on every path).
pub const MIN_PACKET_SIZE: usize = 1200;
/// Length of a cookie.
pub const COOKIE_LEN: usize = 16;
/// Length of the DATA packet header.
pub const DATA_HEADER_LEN: usize = 16;
/// Bytes a DATA packet adds around its plaintext: header plus AEAD tag.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + crate::crypto::TAG_LEN;

/// Zero bytes carried as the (clear) payload of XX message 1. An XX RESPONSE packet is 208
/// bytes; padding the INIT packet to 208 means a spoofed INIT can never make a responder send
/// more bytes than it received (no reflection amplification).
pub const XX_INIT_PADDING: usize = 168;

/// Length of an X25519 public key.
const DH_LEN: usize = 32;
/// Length of an AEAD tag inside Noise messages.
const NOISE_TAG: usize = 16;
/// Length of the handshake payload (a [`Binding`](crate::identity::Binding)).
const PAYLOAD_LEN: usize = crate::identity::BINDING_LEN;
/// Length of message 2's payload: the responder's binding, then its session index (u32 LE),
/// so that the index the initiator will address is authenticated by the handshake.
pub const RESPONSE_PAYLOAD_LEN: usize = PAYLOAD_LEN + 4;

/// Noise message lengths, fixed by the patterns and the 96-byte payload.
pub mod noise_len {
    use super::{DH_LEN, NOISE_TAG, PAYLOAD_LEN, RESPONSE_PAYLOAD_LEN};
    /// IK message 1: `e, es, s, ss` + payload.
    pub const IK_INIT: usize = DH_LEN + DH_LEN + NOISE_TAG + PAYLOAD_LEN + NOISE_TAG;
    /// IK message 2: `e, ee, se` + payload (binding and session index).
    pub const IK_RESPONSE: usize = DH_LEN + RESPONSE_PAYLOAD_LEN + NOISE_TAG;
    /// XX message 1: `e`, then a payload of [`XX_INIT_PADDING`](super::XX_INIT_PADDING) zero
    /// bytes, so that the message is no smaller than the RESPONSE it elicits.
    pub const XX_INIT: usize = DH_LEN + super::XX_INIT_PADDING;
    /// XX message 2: `e, ee, s, es` + payload (binding and session index).
    pub const XX_RESPONSE: usize = DH_LEN + DH_LEN + NOISE_TAG + RESPONSE_PAYLOAD_LEN + NOISE_TAG;
    /// XX message 3: `s, se` + payload.
    pub const XX_FINAL: usize = DH_LEN + NOISE_TAG + PAYLOAD_LEN + NOISE_TAG;
}

/// Packet kinds (byte 1).
pub mod kind {
    /// First handshake message.
    pub const INIT: u8 = 0x01;
    /// Second handshake message.
    pub const RESPONSE: u8 = 0x02;
    /// Third handshake message (XX only).
    pub const FINAL: u8 = 0x03;
    /// Cookie challenge from a loaded responder.
    pub const COOKIE: u8 = 0x04;
    /// Encrypted frames of an established session.
    pub const DATA: u8 = 0x05;
}

/// Which Noise pattern a handshake uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// `Noise_IK_25519_ChaChaPoly_BLAKE2s`: the initiator knows the responder's static key;
    /// one round trip.
    IK,
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s`: neither knows the other; one and a half round trips.
    XX,
}

impl Pattern {
    /// The byte on the wire.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        match self {
            Pattern::IK => 0,
            Pattern::XX => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Pattern> {
        match b {
            0 => Some(Pattern::IK),
            1 => Some(Pattern::XX),
            _ => None,
        }
    }

    /// The Noise protocol name.
    #[must_use]
    pub fn noise_name(self) -> &'static str {
        match self {
            Pattern::IK => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            Pattern::XX => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        }
    }

    /// The Noise prologue: binds the protocol version and the pattern into the handshake hash.
    #[must_use]
    pub fn prologue(self) -> [u8; 8] {
        let mut p = *b"net/1\0\0\0";
        if let Some(last) = p.last_mut() {
            *last = self.to_byte();
        }
        p
    }

    fn init_len(self) -> usize {
        match self {
            Pattern::IK => noise_len::IK_INIT,
            Pattern::XX => noise_len::XX_INIT,
        }
    }

    fn response_len(self) -> Option<usize> {
        Some(match self {
            Pattern::IK => noise_len::IK_RESPONSE,
            Pattern::XX => noise_len::XX_RESPONSE,
        })
    }
}

/// Why bytes did not decode. Each maps to a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the layout needs.
    Truncated,
    /// A version this build does not speak.
    Version,
    /// An unknown packet kind.
    Kind,
    /// A field out of range: reserved bits set, unknown pattern, wrong length.
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated packet",
            WireError::Version => "unsupported version",
            WireError::Kind => "unknown packet kind",
            WireError::Malformed => "malformed packet",
        })
    }
}

/// Handshake message 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init<'a> {
    /// The pattern the initiator chose.
    pub pattern: Pattern,
    /// The initiator's session index; the responder puts it in every packet it sends back.
    pub sender_index: u32,
    /// The echoed cookie, when answering a challenge.
    pub cookie: Option<[u8; COOKIE_LEN]>,
    /// The Noise message.
    pub noise: &'a [u8],
}

impl Init<'_> {
    /// The initiator's ephemeral public key (the first 32 bytes of the Noise message, in the
    /// clear in both patterns). Used to break simultaneous-open ties.
    #[must_use]
    pub fn ephemeral(&self) -> Option<&[u8]> {
        self.noise.get(..DH_LEN)
    }
}

/// Handshake message 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The responder's session index.
    pub sender_index: u32,
    /// The initiator's session index, echoed.
    pub receiver_index: u32,
    /// The Noise message (its length tells the pattern).
    pub noise: &'a [u8],
}

/// Handshake message 3 (XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Final<'a> {
    /// The responder's session index.
    pub receiver_index: u32,
    /// The Noise message.
    pub noise: &'a [u8],
}

/// A cookie challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply {
    /// The initiator's session index, echoed.
    pub receiver_index: u32,
    /// The cookie to echo in the retried initiation.
    pub cookie: [u8; COOKIE_LEN],
}

/// The clear header of a DATA packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Low byte of the sender's key generation.
    pub key_phase: u8,
    /// The recipient's session index.
    pub receiver_index: u32,
    /// The packet counter: the AEAD nonce and the replay-window position.
    pub counter: u64,
}

/// A decoded packet, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Handshake message 1.
    Init(Init<'a>),
    /// Handshake message 2.
    Response(Response<'a>),
    /// Handshake message 3.
    Final(Final<'a>),
    /// Cookie challenge.
    Cookie(CookieReply),
    /// Encrypted frames: header and ciphertext (tag included, at least 16 bytes).
    Data(DataHeader, &'a [u8]),
}

/// A cursor over untrusted bytes, shared by every decoder: each read checks the length, and a
/// short read is `Truncated`.
pub(crate) struct Reader<'a> {
    /// What is left.
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(WireError::Truncated)?;
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Nothing may be left (`Malformed` otherwise).
    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed)
        }
    }
    fn zero(&mut self, n: usize) -> Result<(), WireError> {
        if self.take(n)?.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(WireError::Malformed)
        }
    }
    fn rest_exact(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        match self.buf.len() {
            l if l < n => Err(WireError::Truncated),
            l if l > n => Err(WireError::Malformed),
            _ => self.take(n),
        }
    }
}

/// Decodes one UDP payload.
pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, WireError> {
    let mut r = Reader { buf: bytes };
    if r.u8()? != VERSION {
        return Err(WireError::Version);
    }
    match r.u8()? {
        kind::INIT => {
            let pattern = Pattern::from_byte(r.u8()?).ok_or(WireError::Malformed)?;
            let flags = r.u8()?;
            if flags & !1 != 0 {
                return Err(WireError::Malformed);
            }
            let sender_index = r.u32()?;
            let cookie = if flags & 1 == 1 {
                Some(r.array::<COOKIE_LEN>()?)
            } else {
                None
            };
            let noise = r.rest_exact(pattern.init_len())?;
            Ok(Packet::Init(Init {
                pattern,
                sender_index,
                cookie,
                noise,
            }))
        }
        kind::RESPONSE => {
            r.zero(2)?;
            let sender_index = r.u32()?;
            let receiver_index = r.u32()?;
            let noise = r.buf;
            let ok = [Pattern::IK, Pattern::XX]
                .iter()
                .any(|p| p.response_len() == Some(noise.len()));
            if !ok {
                return Err(if noise.len() < noise_len::IK_RESPONSE {
                    WireError::Truncated
                } else {
                    WireError::Malformed
                });
            }
            Ok(Packet::Response(Response {
                sender_index,
                receiver_index,
                noise,
            }))
        }
        kind::FINAL => {
            r.zero(2)?;
            let receiver_index = r.u32()?;
            let noise = r.rest_exact(noise_len::XX_FINAL)?;
            Ok(Packet::Final(Final {
                receiver_index,
                noise,
            }))
        }
        kind::COOKIE => {
            r.zero(2)?;
            let receiver_index = r.u32()?;
            let cookie = r.array::<COOKIE_LEN>()?;
            if !r.buf.is_empty() {
                return Err(WireError::Malformed);
            }
            Ok(Packet::Cookie(CookieReply {
                receiver_index,
                cookie,
            }))
        }
        kind::DATA => {
            let key_phase = r.u8()?;
            r.zero(1)?;
            let receiver_index = r.u32()?;
            let counter = r.u64()?;
            if r.buf.len() < crate::crypto::TAG_LEN {
                return Err(WireError::Truncated);
            }
            Ok(Packet::Data(
                DataHeader {
                    key_phase,
                    receiver_index,
                    counter,
                },
                r.buf,
            ))
        }
        _ => Err(WireError::Kind),
    }
}

/// Appends an INIT packet to `out`.
pub fn encode_init(out: &mut alloc::vec::Vec<u8>, init: &Init<'_>) {
    out.extend_from_slice(&[
        VERSION,
        kind::INIT,
        init.pattern.to_byte(),
        u8::from(init.cookie.is_some()),
    ]);
    out.extend_from_slice(&init.sender_index.to_le_bytes());
    if let Some(c) = &init.cookie {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(init.noise);
}

/// Appends a RESPONSE packet to `out`.
pub fn encode_response(out: &mut alloc::vec::Vec<u8>, resp: &Response<'_>) {
    out.extend_from_slice(&[VERSION, kind::RESPONSE, 0, 0]);
    out.extend_from_slice(&resp.sender_index.to_le_bytes());
    out.extend_from_slice(&resp.receiver_index.to_le_bytes());
    out.extend_from_slice(resp.noise);
}

/// Appends a FINAL packet to `out`.
pub fn encode_final(out: &mut alloc::vec::Vec<u8>, fin: &Final<'_>) {
    out.extend_from_slice(&[VERSION, kind::FINAL, 0, 0]);
    out.extend_from_slice(&fin.receiver_index.to_le_bytes());
    out.extend_from_slice(fin.noise);
}

/// Appends a COOKIE packet to `out`.
pub fn encode_cookie(out: &mut alloc::vec::Vec<u8>, c: &CookieReply) {
    out.extend_from_slice(&[VERSION, kind::COOKIE, 0, 0]);
    out.extend_from_slice(&c.receiver_index.to_le_bytes());
    out.extend_from_slice(&c.cookie);
}

/// Writes a DATA header into the first 16 bytes of `out`; `None` if `out` is shorter.
pub fn write_data_header(out: &mut [u8], h: &DataHeader) -> Option<()> {
    let dst: &mut [u8; DATA_HEADER_LEN] = out.get_mut(..DATA_HEADER_LEN)?.try_into().ok()?;
    let [v, k, phase, reserved, idx @ .., c0, c1, c2, c3, c4, c5, c6, c7] = dst;
    *v = VERSION;
    *k = kind::DATA;
    *phase = h.key_phase;
    *reserved = 0;
    *idx = h.receiver_index.to_le_bytes();
    let [d0, d1, d2, d3, d4, d5, d6, d7] = h.counter.to_le_bytes();
    (*c0, *c1, *c2, *c3, *c4, *c5, *c6, *c7) = (d0, d1, d2, d3, d4, d5, d6, d7);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn init_bytes_are_pinned() {
        let noise = [0xEE; noise_len::XX_INIT];
        let mut out = Vec::new();
        encode_init(
            &mut out,
            &Init {
                pattern: Pattern::XX,
                sender_index: 0x0403_0201,
                cookie: None,
                noise: &noise,
            },
        );
        assert_eq!(hex(&out[..8]), "0101010001020304");
        assert_eq!(out.len(), 8 + 200);
        assert_eq!(
            decode(&out),
            Ok(Packet::Init(Init {
                pattern: Pattern::XX,
                sender_index: 0x0403_0201,
                cookie: None,
                noise: &noise
            }))
        );

        let noise = [0xEE; noise_len::IK_INIT];
        let mut out = Vec::new();
        encode_init(
            &mut out,
            &Init {
                pattern: Pattern::IK,
                sender_index: 7,
                cookie: Some([0xCC; 16]),
                noise: &noise,
            },
        );
        assert_eq!(
            hex(&out[..24]),
            "0101000107000000cccccccccccccccccccccccccccccccc"
        );
        assert_eq!(out.len(), 24 + 192);
        assert!(matches!(decode(&out), Ok(Packet::Init(i)) if i.cookie == Some([0xCC; 16])));
    }

    #[test]
    fn response_final_cookie_bytes_are_pinned() {
        let noise = [0xAB; noise_len::IK_RESPONSE];
        let mut out = Vec::new();
        encode_response(
            &mut out,
            &Response {
                sender_index: 1,
                receiver_index: 2,
                noise: &noise,
            },
        );
        assert_eq!(hex(&out[..12]), "010200000100000002000000");
        assert_eq!(out.len(), 12 + 148);
        assert!(matches!(decode(&out), Ok(Packet::Response(r)) if r.receiver_index == 2));

        let noise = [0xAB; noise_len::XX_FINAL];
        let mut out = Vec::new();
        encode_final(
            &mut out,
            &Final {
                receiver_index: 9,
                noise: &noise,
            },
        );
        assert_eq!(hex(&out[..8]), "0103000009000000");
        assert_eq!(out.len(), 8 + 160);
        assert!(matches!(decode(&out), Ok(Packet::Final(f)) if f.receiver_index == 9));

        let mut out = Vec::new();
        let c = CookieReply {
            receiver_index: 0xAABBCCDD,
            cookie: [1; 16],
        };
        encode_cookie(&mut out, &c);
        assert_eq!(
            hex(&out),
            "01040000ddccbbaa01010101010101010101010101010101"
        );
        assert_eq!(decode(&out), Ok(Packet::Cookie(c)));
    }

    #[test]
    fn data_header_bytes_are_pinned() {
        let mut buf = [0u8; 32];
        let h = DataHeader {
            key_phase: 3,
            receiver_index: 0x11223344,
            counter: 0x0102030405060708,
        };
        write_data_header(&mut buf, &h).unwrap();
        assert_eq!(hex(&buf[..16]), "01050300443322110807060504030201");
        assert_eq!(decode(&buf), Ok(Packet::Data(h, &[0u8; 16])));
        assert_eq!(write_data_header(&mut [0u8; 15], &h), None);
    }

    #[test]
    fn bad_input_is_classified() {
        assert_eq!(decode(&[]), Err(WireError::Truncated));
        assert_eq!(decode(&[2, 5]), Err(WireError::Version));
        assert_eq!(decode(&[1, 0x77]), Err(WireError::Kind));
        assert_eq!(
            decode(&[1, kind::INIT, 9, 0, 0, 0, 0, 0]),
            Err(WireError::Malformed)
        );
        assert_eq!(
            decode(&[1, kind::INIT, 1, 2, 0, 0, 0, 0]),
            Err(WireError::Malformed)
        );
        let mut init = alloc::vec![1, kind::INIT, 1, 0, 0, 0, 0, 0];
        init.extend_from_slice(&[0; 199]);
        assert_eq!(decode(&init), Err(WireError::Truncated));
        init.extend_from_slice(&[0; 2]);
        assert_eq!(decode(&init), Err(WireError::Malformed));
        let mut data = alloc::vec![1, kind::DATA, 0, 1];
        data.extend_from_slice(&[0; 28]);
        assert_eq!(decode(&data), Err(WireError::Malformed));
        let data = [1, kind::DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(decode(&data), Err(WireError::Truncated));
        let mut resp = alloc::vec![1, kind::RESPONSE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        resp.extend_from_slice(&[0; 150]);
        assert_eq!(decode(&resp), Err(WireError::Malformed));
    }

    #[test]
    fn lengths_match_the_patterns() {
        assert_eq!(noise_len::IK_INIT, 192);
        assert_eq!(noise_len::IK_RESPONSE, 148);
        assert_eq!(noise_len::XX_INIT, 200);
        assert_eq!(noise_len::XX_RESPONSE, 196);
        // No amplification: an XX RESPONSE packet is never larger than the INIT it answers.
        assert_eq!(12 + noise_len::XX_RESPONSE, 8 + noise_len::XX_INIT);
        assert_eq!(noise_len::XX_FINAL, 160);
        assert_eq!(Pattern::IK.prologue(), *b"net/1\0\0\0");
        assert_eq!(Pattern::XX.prologue(), *b"net/1\0\0\x01");
    }
}
