//! The trace of a run: every delivered, dropped or corrupted datagram, timer firing, machine
//! event and fault, in order, with a running BLAKE3 hash that identifies the run.
//!
//! This module owns the record format, its canonical byte encoding (what the hash covers), the
//! JSON-lines rendering and the bounded tail kept for failure reports. It never decides what
//! happens in the world; it only writes it down.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write;

use proto_core::Instant;

use crate::link::DropReason;
use crate::HostId;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// A datagram reached a host.
    Deliver {
        /// Sending host (`None` for injected datagrams).
        from: Option<HostId>,
        /// Receiving host.
        to: HostId,
        /// Length in bytes.
        len: usize,
        /// The first 8 bytes of the BLAKE3 hash of the datagram (what the trace hash covers).
        digest: [u8; 8],
    },
    /// A datagram was dropped.
    Drop {
        /// Sending host (`None` for injected datagrams).
        from: Option<HostId>,
        /// Intended recipient, if known.
        to: Option<HostId>,
        /// Length in bytes.
        len: usize,
        /// Why.
        reason: DropReason,
    },
    /// A datagram had a bit flipped on the way.
    Corrupt {
        /// Sending host.
        from: HostId,
        /// Receiving host.
        to: HostId,
        /// The flipped bit.
        bit: usize,
    },
    /// A host's timer fired.
    Timer {
        /// The host.
        host: HostId,
    },
    /// A machine produced an event (described without payloads).
    Event {
        /// The host.
        host: HostId,
        /// The description.
        text: String,
    },
    /// A fault took effect (scheduled actions are recorded through what they cause).
    Fault {
        /// The description.
        text: String,
    },
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// Step number (inputs processed so far).
    pub step: u64,
    /// Virtual time.
    pub at: Instant,
    /// What happened.
    pub event: TraceEvent,
}

impl TraceRecord {
    /// The canonical encoding the trace hash covers.
    fn hash_into(&self, h: &mut blake3::Hasher) {
        h.update(&self.step.to_le_bytes());
        h.update(&self.at.as_nanos().to_le_bytes());
        let host = |h: &mut blake3::Hasher, id: Option<HostId>| {
            h.update(&id.map_or(u32::MAX, |i| i.0).to_le_bytes());
        };
        match &self.event {
            TraceEvent::Deliver {
                from,
                to,
                len,
                digest,
            } => {
                h.update(&[1]);
                host(h, *from);
                host(h, Some(*to));
                h.update(&(*len as u64).to_le_bytes());
                h.update(digest);
            }
            TraceEvent::Drop {
                from,
                to,
                len,
                reason,
            } => {
                h.update(&[2]);
                host(h, *from);
                host(h, *to);
                h.update(&(*len as u64).to_le_bytes());
                h.update(reason.as_str().as_bytes());
            }
            TraceEvent::Corrupt { from, to, bit } => {
                h.update(&[3]);
                host(h, Some(*from));
                host(h, Some(*to));
                h.update(&(*bit as u64).to_le_bytes());
            }
            TraceEvent::Timer { host: id } => {
                h.update(&[4]);
                host(h, Some(*id));
            }
            TraceEvent::Event { host: id, text } => {
                h.update(&[5]);
                host(h, Some(*id));
                h.update(&(text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
            TraceEvent::Fault { text } => {
                h.update(&[6]);
                h.update(&(text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
        }
    }

    /// The record as one JSON object (no trailing newline).
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut s = format!("{{\"step\":{},\"t_ns\":{},", self.step, self.at.as_nanos());
        let hex = |d: &[u8]| {
            d.iter().fold(String::new(), |mut acc, b| {
                let _ = write!(acc, "{b:02x}");
                acc
            })
        };
        let host = |id: Option<HostId>| id.map_or("null".to_string(), |i| i.0.to_string());
        let _ = match &self.event {
            TraceEvent::Deliver {
                from,
                to,
                len,
                digest,
            } => write!(
                s,
                "\"kind\":\"deliver\",\"from\":{},\"to\":{},\"len\":{len},\"digest\":\"{}\"}}",
                host(*from),
                to.0,
                hex(digest)
            ),
            TraceEvent::Drop {
                from,
                to,
                len,
                reason,
            } => write!(
                s,
                "\"kind\":\"drop\",\"from\":{},\"to\":{},\"len\":{len},\"reason\":\"{}\"}}",
                host(*from),
                host(*to),
                reason.as_str()
            ),
            TraceEvent::Corrupt { from, to, bit } => write!(
                s,
                "\"kind\":\"corrupt\",\"from\":{},\"to\":{},\"bit\":{bit}}}",
                from.0, to.0
            ),
            TraceEvent::Timer { host: h } => {
                write!(s, "\"kind\":\"timer\",\"host\":{}}}", h.0)
            }
            TraceEvent::Event { host: h, text } => write!(
                s,
                "\"kind\":\"event\",\"host\":{},\"text\":\"{}\"}}",
                h.0,
                json_escape(text)
            ),
            TraceEvent::Fault { text } => {
                write!(s, "\"kind\":\"fault\",\"text\":\"{}\"}}", json_escape(text))
            }
        };
        s
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The running trace: hash, counters, a bounded tail, and an optional JSON-lines sink.
pub struct Trace {
    hasher: blake3::Hasher,
    records: u64,
    tail: VecDeque<TraceRecord>,
    tail_len: usize,
    sink: Option<Box<dyn Write>>,
    sink_error: Option<String>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("records", &self.records)
            .field("hash", &self.hash_hex())
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// A trace that keeps the last `tail_len` records.
    #[must_use]
    pub fn new(tail_len: usize) -> Trace {
        Trace {
            hasher: blake3::Hasher::new(),
            records: 0,
            tail: VecDeque::with_capacity(tail_len.min(4096)),
            tail_len,
            sink: None,
            sink_error: None,
        }
    }

    /// Also write every record as a JSON line to `sink`.
    pub fn set_sink(&mut self, sink: Box<dyn Write>) {
        self.sink = Some(sink);
    }

    /// Appends a record.
    pub fn push(&mut self, record: TraceRecord) {
        record.hash_into(&mut self.hasher);
        self.records += 1;
        if let Some(sink) = self.sink.as_mut() {
            if let Err(e) = writeln!(sink, "{}", record.to_json()) {
                self.sink_error.get_or_insert_with(|| e.to_string());
            }
        }
        if self.tail_len > 0 {
            if self.tail.len() == self.tail_len {
                self.tail.pop_front();
            }
            self.tail.push_back(record);
        }
    }

    /// The hash of everything so far.
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// The hash as hex.
    #[must_use]
    pub fn hash_hex(&self) -> String {
        self.hash().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Records so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The last records kept.
    pub fn tail(&self) -> impl Iterator<Item = &TraceRecord> {
        self.tail.iter()
    }

    /// Flushes the sink; the first write error, if any.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(sink) = self.sink.as_mut() {
            if let Err(e) = sink.flush() {
                self.sink_error.get_or_insert_with(|| e.to_string());
            }
        }
        match self.sink_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, text: &str) -> TraceRecord {
        TraceRecord {
            step,
            at: Instant::from_millis(step),
            event: TraceEvent::Event {
                host: HostId(1),
                text: text.to_string(),
            },
        }
    }

    #[test]
    fn the_hash_covers_order_and_content() {
        let mut a = Trace::new(2);
        let mut b = Trace::new(0);
        for (i, t) in ["x", "y", "z"].iter().enumerate() {
            a.push(rec(i as u64, t));
            b.push(rec(i as u64, t));
        }
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(0);
        for (i, t) in ["x", "z", "y"].iter().enumerate() {
            c.push(rec(i as u64, t));
        }
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.tail().count(), 2);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn json_lines_escape_text() {
        let r = rec(3, "say \"hi\"\n");
        assert_eq!(
            r.to_json(),
            "{\"step\":3,\"t_ns\":3000000,\"kind\":\"event\",\"host\":1,\"text\":\"say \\\"hi\\\"\\u000a\"}"
        );
        let d = TraceRecord {
            step: 1,
            at: Instant::ZERO,
            event: TraceEvent::Drop {
                from: Some(HostId(0)),
                to: None,
                len: 5,
                reason: DropReason::NoRoute,
            },
        };
        assert_eq!(
            d.to_json(),
            "{\"step\":1,\"t_ns\":0,\"kind\":\"drop\",\"from\":0,\"to\":null,\"len\":5,\"reason\":\"no-route\"}"
        );
    }
}
