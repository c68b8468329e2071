//! The stream machine against a reference model: node 0 opens streams of every mode and
//! writes, node 1 reads, over a hostile wire (loss, duplication, reordering, time).
//!
//! The model keeps what node 0's streams accepted. After every step:
//! - an ordered stream's reader has read exactly a prefix of what was written (every byte is
//!   a known function of its stream and offset), and an end of stream only after all of it;
//! - a message stream's reader gets whole messages that were sent on that stream, intact,
//!   each at most once;
//! - the stream opens at the reader with the mode its writer chose.
//!
//! At the end the wire turns clean and time runs on: every reliable stream that was finished
//! and not reset must then be read to its end, complete (retransmission heals the losses).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use proto_core::crypto::RustCrypto;
use proto_core::{Event, Mode, SessionId, StreamError, StreamEvent, StreamId};

use crate::node::{Pair, WireOp};

const MAX_STEPS: usize = 512;
const MAX_STREAMS: usize = 8;

/// One step of a [`stream_ops`] input.
#[derive(Arbitrary, Debug)]
pub enum StreamOp {
    /// Node 0 opens a stream (`mode % 3`: ordered, unordered, unreliable).
    Open {
        /// The mode.
        mode: u8,
    },
    /// Node 0 writes `len` bytes (or one message of `len` bytes) on stream `stream`.
    Write {
        /// Which of node 0's streams (modulo how many).
        stream: u8,
        /// How much.
        len: u16,
    },
    /// Node 1 reads what it can from every stream.
    Read,
    /// Node 0 finishes a stream.
    Finish {
        /// Which.
        stream: u8,
    },
    /// Node 0 resets a stream.
    Reset {
        /// Which.
        stream: u8,
        /// The code.
        code: u16,
    },
    /// Something the wire does (delivery, loss, duplication, time).
    Wire(WireOp),
}

/// The byte at `offset` of stream `id`.
fn byte(id: StreamId, offset: usize) -> u8 {
    (offset.wrapping_mul(7) ^ (id.0 as usize).wrapping_mul(131) ^ (offset >> 9)) as u8
}

/// Message `n` of stream `id`: the ids, then a pattern.
fn message(id: StreamId, n: u32, len: u16) -> Vec<u8> {
    let len = usize::from(len % 1000).max(8);
    let mut m = id.0.to_le_bytes().to_vec();
    m.extend_from_slice(&n.to_le_bytes());
    m.extend((8..len).map(|i| byte(id, i + n as usize)));
    m
}

#[derive(Default)]
struct Model {
    mode: Option<Mode>,
    /// Ordered: bytes accepted by `write`. Messages: how many were accepted, and their bytes.
    written: usize,
    sent: BTreeMap<u32, Vec<u8>>,
    finished: bool,
    reset: bool,
    /// What node 1 read.
    read: usize,
    received: BTreeSet<u32>,
    eof: bool,
    opened_as: Option<Mode>,
    peer_reset: bool,
}

struct World {
    p: Pair,
    s0: SessionId,
    s1: SessionId,
    order: Vec<StreamId>,
    streams: BTreeMap<StreamId, Model>,
}

impl World {
    fn write(&mut self, id: StreamId, len: u16) {
        let Some(m) = self.streams.get_mut(&id) else {
            return;
        };
        let Ok(mut h) = self.p.nodes[0].stream(self.s0, id) else {
            return;
        };
        match m.mode {
            Some(Mode::Ordered) => {
                let data: Vec<u8> = (m.written..m.written + usize::from(len))
                    .map(|o| byte(id, o))
                    .collect();
                if let Ok(n) = h.write(&data) {
                    assert!(n <= data.len());
                    m.written += n;
                }
            }
            Some(_) => {
                let n = u32::try_from(m.sent.len()).unwrap_or(u32::MAX);
                let msg = message(id, n, len);
                if h.send_message(&msg).is_ok() {
                    m.sent.insert(n, msg);
                }
            }
            None => {}
        }
        self.p.drain();
    }

    fn read_all(&mut self) {
        let mut buf = vec![0u8; 8192];
        for (&id, m) in &mut self.streams {
            if m.opened_as.is_none() || m.eof {
                continue;
            }
            for _ in 0..64 {
                let Ok(mut h) = self.p.nodes[1].stream(self.s1, id) else {
                    break;
                };
                if m.mode == Some(Mode::Ordered) {
                    match h.read(&mut buf) {
                        Ok(0) => {
                            assert!(m.finished, "{id:?}: end of stream before a finish");
                            assert_eq!(m.read, m.written, "{id:?}: end of stream before all bytes");
                            m.eof = true;
                            break;
                        }
                        Ok(n) => {
                            for (k, b) in buf.iter().take(n).enumerate() {
                                assert_eq!(*b, byte(id, m.read + k), "{id:?}: byte {}", m.read + k);
                            }
                            m.read += n;
                            assert!(m.read <= m.written, "{id:?}: read more than was written");
                        }
                        Err(_) => break,
                    }
                } else {
                    match h.recv_message() {
                        Ok(None) => {
                            assert!(m.finished, "{id:?}: end of messages before a finish");
                            m.eof = true;
                            break;
                        }
                        Ok(Some(msg)) => {
                            let head: [u8; 8] = msg
                                .get(..8)
                                .and_then(|b| b.try_into().ok())
                                .expect("messages carry their ids");
                            let (sid, n) = head.split_at(4);
                            assert_eq!(sid, id.0.to_le_bytes(), "a message of another stream");
                            let n = u32::from_le_bytes(n.try_into().expect("4 bytes"));
                            assert_eq!(m.sent.get(&n), Some(&msg), "{id:?}: message {n} changed");
                            assert!(m.received.insert(n), "{id:?}: message {n} twice");
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        self.p.drain();
    }

    /// Applies node 1's stream events to the model.
    fn observe(&mut self) {
        for ev in self.p.events[1].drain(..) {
            if let Event::Stream { stream, event, .. } = ev {
                let Some(m) = self.streams.get_mut(&stream) else {
                    panic!("node 1 saw {stream:?}, which node 0 never opened");
                };
                match event {
                    StreamEvent::Opened { mode } => {
                        assert_eq!(Some(mode), m.mode, "{stream:?} opened with another mode");
                        m.opened_as = Some(mode);
                    }
                    StreamEvent::Reset { .. } => m.peer_reset = true,
                    _ => {}
                }
            }
        }
        // The writer's side ends streams too: a retry limit or a close deadline resets them
        // (the reader may never have heard of one that lost every chunk).
        for ev in self.p.events[0].drain(..) {
            if let Event::Stream {
                stream,
                event: StreamEvent::Reset { .. },
                ..
            } = ev
            {
                if let Some(m) = self.streams.get_mut(&stream) {
                    m.reset = true;
                }
            }
        }
    }
}

/// See the module docs.
pub fn stream_ops(data: &[u8]) {
    let mut p = Pair::new(Arc::new(RustCrypto));
    let Some((s0, s1)) = p.establish() else {
        panic!("the handshake must complete on a clean wire");
    };
    p.events[0].clear();
    p.events[1].clear();
    let mut w = World {
        p,
        s0,
        s1,
        order: Vec::new(),
        streams: BTreeMap::new(),
    };
    let mut u = Unstructured::new(data);
    let pick = |w: &World, i: u8| -> Option<StreamId> {
        (!w.order.is_empty()).then(|| w.order[usize::from(i) % w.order.len()])
    };
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = StreamOp::arbitrary(&mut u) else {
            break;
        };
        match op {
            StreamOp::Open { mode } => {
                if w.order.len() < MAX_STREAMS {
                    let mode =
                        [Mode::Ordered, Mode::Unordered, Mode::Unreliable][usize::from(mode % 3)];
                    if let Ok(id) = w.p.nodes[0].open_stream(w.p.now, s0, mode) {
                        w.order.push(id);
                        w.streams.insert(
                            id,
                            Model {
                                mode: Some(mode),
                                ..Model::default()
                            },
                        );
                    }
                }
            }
            StreamOp::Write { stream, len } => {
                if let Some(id) = pick(&w, stream) {
                    w.write(id, len);
                }
            }
            StreamOp::Read => w.read_all(),
            StreamOp::Finish { stream } => {
                if let Some(id) = pick(&w, stream) {
                    let now = w.p.now;
                    if let Ok(mut h) = w.p.nodes[0].stream(s0, id) {
                        match h.finish(now) {
                            Ok(()) | Err(StreamError::Finished) => {
                                if let Some(m) = w.streams.get_mut(&id) {
                                    m.finished = true;
                                }
                            }
                            Err(_) => {}
                        }
                    }
                    w.p.drain();
                }
            }
            StreamOp::Reset { stream, code } => {
                if let Some(id) = pick(&w, stream) {
                    let now = w.p.now;
                    if let Ok(mut h) = w.p.nodes[0].stream(s0, id) {
                        if h.reset(now, code).is_ok() {
                            if let Some(m) = w.streams.get_mut(&id) {
                                m.reset = true;
                            }
                        }
                    }
                    w.p.drain();
                }
            }
            StreamOp::Wire(op) => w.p.apply(&op, 2_000),
        }
        w.observe();
    }
    // A clean wire from here: reliable streams that were finished and not reset complete.
    for _ in 0..300 {
        w.p.settle(256);
        w.observe();
        w.read_all();
        w.observe();
        w.p.advance(Duration::from_millis(50));
        w.observe();
    }
    let alive = w.p.nodes[0].session_info(s0).is_some() && w.p.nodes[1].session_info(s1).is_some();
    if !alive {
        return; // an idle timeout or a close ended everything; the checks above still held
    }
    for (id, m) in &w.streams {
        let done = m.finished && !m.reset && !m.peer_reset;
        if done && m.mode == Some(Mode::Ordered) {
            assert!(
                m.eof,
                "{id:?}: finished, not reset, never read to its end ({} of {})",
                m.read, m.written
            );
        }
        if done && m.mode == Some(Mode::Unordered) {
            assert_eq!(
                m.received.len(),
                m.sent.len(),
                "{id:?}: reliable messages lost"
            );
        }
    }
}
