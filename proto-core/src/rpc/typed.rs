//! The typed nRPC layer (feature `typed`): requests and responses as serde types, encoded
//! with a [`Codec`]: [`Json`] by default, [`Postcard`] when compact bytes matter.
//!
//! It owns only encoding and the status mapping; calls still go through the [`Node`](crate::Node) and its
//! events. A caller encodes with [`encode`] (failure: `Codec { direction: Encode }`) and
//! decodes replies and streamed messages with [`decode`] / [`decode_reply`] (failure:
//! `Codec { direction: Decode }`). A server runs its handler through [`handle`], which turns
//! a request that does not decode into status [`TYPED_BAD_REQUEST`](super::status) (0x8000)
//! and a handler error into [`TYPED_HANDLER_ERROR`](super::status) (0x8001), and answers
//! with [`respond`].
//!
//! ```
//! use proto_core::rpc::typed::{self, Handled, Json};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Add { a: i64, b: i64 }
//!
//! // Server side: decode, run, encode.
//! let body = typed::encode::<Json, _>(&Add { a: 2, b: 3 }).unwrap();
//! let out = typed::handle::<Json, Add, i64, &str>(&body, |req| Ok(req.a + req.b));
//! assert_eq!(out, Handled::Reply(b"5".to_vec()));
//! // A request that does not decode is the caller's fault: status 0x8000.
//! let bad = typed::handle::<Json, Add, i64, &str>(b"{", |req| Ok(req.a));
//! assert!(matches!(bad, Handled::Fail { status: 0x8000, .. }));
//! // Caller side: the reply decodes into the response type.
//! assert_eq!(typed::decode_reply::<Json, i64>(Ok(b"5".to_vec())), Ok(5));
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{status, CodecDirection, RpcError};
use crate::node::CallHandle;
use crate::time::Instant;

/// How typed messages become bytes.
pub trait Codec {
    /// A name for logs and errors.
    const NAME: &'static str;
    /// Encodes `v`.
    fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, String>;
    /// Decodes a `T` from all of `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// JSON (serde_json): readable, and what other languages' clients expect by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";
    fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(v).map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// postcard: compact binary, for Rust peers (small unary calls stay in one datagram).
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const NAME: &'static str = "postcard";
    fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(v).map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(alloc::format!("{} trailing bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn codec_error(direction: CodecDirection, message: String) -> RpcError {
    RpcError::Codec { direction, message }
}

/// Encodes a request (caller) or a response message (server).
pub fn encode<C: Codec, T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, RpcError> {
    C::encode(v).map_err(|m| codec_error(CodecDirection::Encode, m))
}

/// Decodes a streamed message (a response on the caller's side, a request on the server's).
pub fn decode<C: Codec, T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    C::decode(bytes).map_err(|m| codec_error(CodecDirection::Decode, m))
}

/// Decodes the result of a unary or client-streaming call
/// ([`RpcEvent::Reply`](super::RpcEvent::Reply)): its error passes through unchanged.
pub fn decode_reply<C: Codec, T: DeserializeOwned>(
    result: Result<Vec<u8>, RpcError>,
) -> Result<T, RpcError> {
    decode::<C, T>(&result?)
}

/// What a typed handler produced, ready for [`respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The encoded response.
    Reply(Vec<u8>),
    /// The call fails with this status and detail.
    Fail {
        /// 0x8000 (bad request), 0x8001 (handler error) or `INTERNAL` (the response did not
        /// encode).
        status: u16,
        /// The detail text.
        message: String,
    },
}

/// Decodes `body` as `Req`, runs `f`, encodes its `Resp`. A request that does not decode is
/// status 0x8000, a handler error 0x8001 with the error's text, a response that does not
/// encode `INTERNAL`.
pub fn handle<C: Codec, Req: DeserializeOwned, Resp: Serialize, E: fmt::Display>(
    body: &[u8],
    f: impl FnOnce(Req) -> Result<Resp, E>,
) -> Handled {
    let req = match C::decode::<Req>(body) {
        Ok(r) => r,
        Err(m) => {
            return Handled::Fail {
                status: status::TYPED_BAD_REQUEST,
                message: alloc::format!("request did not decode as {}: {m}", C::NAME),
            }
        }
    };
    match f(req) {
        Ok(resp) => match C::encode(&resp) {
            Ok(b) => Handled::Reply(b),
            Err(m) => Handled::Fail {
                status: status::INTERNAL,
                message: alloc::format!("response did not encode: {m}"),
            },
        },
        Err(e) => Handled::Fail {
            status: status::TYPED_HANDLER_ERROR,
            message: e.to_string(),
        },
    }
}

/// Decodes one streamed request on the server's side; a message that does not decode is the
/// caller's fault, so its `Err` is the 0x8000 failure to answer with.
pub fn decode_request<C: Codec, T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Handled> {
    C::decode(bytes).map_err(|m| Handled::Fail {
        status: status::TYPED_BAD_REQUEST,
        message: alloc::format!("request did not decode as {}: {m}", C::NAME),
    })
}

/// Answers a unary or client-streaming call with what a handler produced (a reply with
/// status 0, or the failure status); for streaming responses, `Handled::Fail` ends the
/// stream with its status and `Handled::Reply` sends one message.
pub fn respond(call: &mut CallHandle<'_>, now: Instant, h: Handled) -> Result<(), RpcError> {
    let streams = call.shape().is_some_and(|s| s.streams_responses());
    match h {
        Handled::Reply(b) if streams => call.send(now, &b),
        Handled::Reply(b) => call.reply(now, &b),
        Handled::Fail { status, message } => call.finish(now, status, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Req {
        name: String,
        n: u32,
    }

    fn round_trip<C: Codec>() {
        let r = Req {
            name: "x".into(),
            n: 7,
        };
        let b = encode::<C, _>(&r).unwrap();
        assert_eq!(decode::<C, Req>(&b), Ok(r.clone()));
        let bad = decode::<C, Req>(&b[..b.len() - 1]);
        assert!(matches!(
            bad,
            Err(RpcError::Codec {
                direction: CodecDirection::Decode,
                ..
            })
        ));
        // The status mapping.
        let ok = handle::<C, Req, u32, &str>(&b, |r| Ok(r.n * 2));
        assert_eq!(ok, Handled::Reply(C::encode(&14u32).unwrap()));
        let fail = handle::<C, Req, u32, &str>(&b, |_| Err("no"));
        assert_eq!(
            fail,
            Handled::Fail {
                status: 0x8001,
                message: "no".into()
            }
        );
        let undecodable = handle::<C, Req, u32, &str>(&[0xff, 0xff], |_| Ok(1));
        assert!(matches!(undecodable, Handled::Fail { status: 0x8000, .. }));
        assert!(matches!(
            decode_request::<C, Req>(&[0xff]),
            Err(Handled::Fail { status: 0x8000, .. })
        ));
        assert_eq!(
            decode_reply::<C, u32>(Err(RpcError::Timeout)),
            Err(RpcError::Timeout)
        );
    }

    #[test]
    fn json_and_postcard_round_trip_and_map_failures() {
        round_trip::<Json>();
        round_trip::<Postcard>();
        // postcard is the compact one.
        let r = Req {
            name: "abc".into(),
            n: 300,
        };
        assert!(Postcard::encode(&r).unwrap().len() < Json::encode(&r).unwrap().len());
    }
}
