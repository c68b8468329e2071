//! The send half of one stream: what the application wrote, cut into numbered chunks, and
//! every chunk sent but not yet acknowledged.
//!
//! This module owns the send buffer (bounded in bytes), the tracking window (bounded in
//! chunks, never smaller than the credit the sender may use, and refusing rather than
//! forgetting when full), the set of chunks declared lost and waiting to be sent again, and
//! the FIN. It never decides *when* to send or what counts as lost: the session machine
//! (`conn`) does, and tells this half with `now` and transmission numbers.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use super::{Mode, StreamError};
use crate::time::Instant;

/// One chunk sent and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its bytes (kept for retransmission).
    pub data: Vec<u8>,
    /// The last chunk of the direction.
    pub fin: bool,
    /// Session-wide number of its latest transmission.
    pub tx: u64,
    /// When it was last sent.
    pub sent_at: Instant,
    /// Times it was sent.
    pub transmissions: u32,
}

/// What [`SendHalf::next`] chose to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// Its sequence number.
    pub seq: u64,
    /// Data bytes.
    pub len: usize,
    /// A retransmission of a lost chunk.
    pub retransmission: bool,
}

/// The send half of a stream.
#[derive(Debug, Clone)]
pub struct SendHalf {
    mode: Mode,
    bytes: VecDeque<u8>,
    messages: VecDeque<Vec<u8>>,
    buffered: usize,
    capacity: usize,
    fin_requested: bool,
    fin_sent: bool,
    next_seq: u64,
    acked_below: u64,
    unacked: BTreeMap<u64, Chunk>,
    lost: BTreeSet<u64>,
    limit: u64,
    tracking: usize,
    /// A write was refused or cut short: a Writable event is owed.
    pub(crate) blocked: bool,
    pub(crate) backpressure_events: u64,
    pub(crate) tracking_full: u64,
    pub(crate) retransmits: u64,
    pub(crate) bytes_written: u64,
}

impl SendHalf {
    /// A send half that buffers up to `capacity` bytes, may send chunks below `limit` until
    /// the peer grants more, and tracks at most `tracking` unacknowledged chunks.
    #[must_use]
    pub fn new(mode: Mode, capacity: usize, limit: u64, tracking: usize) -> SendHalf {
        SendHalf {
            mode,
            bytes: VecDeque::new(),
            messages: VecDeque::new(),
            buffered: 0,
            capacity: capacity.max(1),
            fin_requested: false,
            fin_sent: false,
            next_seq: 0,
            acked_below: 0,
            unacked: BTreeMap::new(),
            lost: BTreeSet::new(),
            limit,
            tracking: tracking.max(1),
            blocked: false,
            backpressure_events: 0,
            tracking_full: 0,
            retransmits: 0,
            bytes_written: 0,
        }
    }

    fn writable(&self) -> Result<(), StreamError> {
        if self.fin_requested {
            Err(StreamError::Finished)
        } else {
            Ok(())
        }
    }

    fn refuse(&mut self) -> StreamError {
        self.blocked = true;
        self.backpressure_events += 1;
        StreamError::WouldBlock
    }

    /// Buffers bytes (ordered streams): all of them, or as many as fit (the count), or
    /// `WouldBlock` when none fit.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if self.mode.is_message() {
            return Err(StreamError::WrongMode(self.mode));
        }
        self.writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.capacity.saturating_sub(self.buffered);
        if room == 0 {
            return Err(self.refuse());
        }
        let n = room.min(data.len());
        if n < data.len() {
            self.blocked = true;
            self.backpressure_events += 1;
        }
        self.bytes.extend(data.get(..n).unwrap_or_default());
        self.buffered += n;
        self.bytes_written += n as u64;
        Ok(n)
    }

    /// Queues one message (message streams): whole, or `WouldBlock`.
    pub fn send_message(&mut self, msg: &[u8], max: usize) -> Result<(), StreamError> {
        if !self.mode.is_message() {
            return Err(StreamError::WrongMode(self.mode));
        }
        self.writable()?;
        if msg.len() > max {
            return Err(StreamError::MessageTooLarge {
                len: msg.len(),
                max,
            });
        }
        if self.buffered > 0 && self.buffered + msg.len() > self.capacity {
            return Err(self.refuse());
        }
        self.buffered += msg.len();
        self.bytes_written += msg.len() as u64;
        self.messages.push_back(msg.to_vec());
        Ok(())
    }

    /// Ends this direction after what is buffered. Idempotent.
    pub fn finish(&mut self) {
        self.fin_requested = true;
    }

    /// Whether `finish` was called.
    #[must_use]
    pub fn finishing(&self) -> bool {
        self.fin_requested
    }

    /// Whether the direction is over: FIN sent and (reliable modes) everything acknowledged.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.fin_sent && self.unacked.is_empty()
    }

    /// Whether a Writable event is due (a write was refused and a quarter of the buffer is
    /// free again).
    pub fn take_writable(&mut self) -> bool {
        if self.blocked && self.buffered <= self.capacity - self.capacity / 4 {
            self.blocked = false;
            return true;
        }
        false
    }

    /// The size of the next chunk's data if `room` data bytes are available, or `None` if
    /// nothing can be sent now (nothing pending, no credit, tracking window full).
    /// `max_chunk` is the most a chunk may carry. A retransmission or a message needs its
    /// whole size; ordered bytes are cut to fit.
    #[must_use]
    pub fn peek(&self, max_chunk: usize) -> Option<usize> {
        if let Some(seq) = self.lost.first() {
            return self.unacked.get(seq).map(|c| c.data.len());
        }
        if !self.has_new() {
            return None;
        }
        Some(match self.mode {
            Mode::Ordered => self.bytes.len().min(max_chunk),
            _ => self.messages.front().map_or(0, Vec::len),
        })
    }

    fn has_new(&self) -> bool {
        let pending = self.buffered > 0 || (self.fin_requested && !self.fin_sent);
        if !pending {
            return false;
        }
        if !self.mode.is_reliable() {
            return true;
        }
        self.next_seq < self.limit && self.unacked.len() < self.tracking
    }

    /// Records that new chunks wait only because the tracking window is full.
    pub fn note_tracking_full(&mut self) {
        let pending = self.buffered > 0 || (self.fin_requested && !self.fin_sent);
        if pending && self.next_seq < self.limit && self.unacked.len() >= self.tracking {
            self.tracking_full += 1;
        }
    }

    /// Takes the next chunk to send, with at most `room` data bytes: a lost chunk first, then
    /// new data. Calls `emit(seq, data, fin)` to write it; the chunk is recorded as sent with
    /// transmission number `tx` only if `emit` returns true.
    pub fn next(
        &mut self,
        now: Instant,
        tx: u64,
        room: usize,
        emit: impl FnOnce(u64, &[u8], bool) -> bool,
    ) -> Option<Next> {
        if let Some(&seq) = self.lost.first() {
            let c = self.unacked.get_mut(&seq)?;
            if c.data.len() > room || !emit(seq, &c.data, c.fin) {
                return None;
            }
            self.lost.remove(&seq);
            c.tx = tx;
            c.sent_at = now;
            c.transmissions = c.transmissions.saturating_add(1);
            self.retransmits += 1;
            return Some(Next {
                seq,
                len: c.data.len(),
                retransmission: true,
            });
        }
        if !self.has_new() {
            return None;
        }
        let data: Vec<u8> = match self.mode {
            Mode::Ordered => {
                let n = self.bytes.len().min(room);
                if n == 0 && !self.bytes.is_empty() {
                    return None;
                }
                // The buffer is a ring: copy its (at most two) contiguous runs.
                let (front, back) = self.bytes.as_slices();
                let from_front = front.len().min(n);
                let mut data = Vec::with_capacity(n);
                data.extend_from_slice(front.get(..from_front).unwrap_or_default());
                data.extend_from_slice(back.get(..n - from_front).unwrap_or_default());
                data
            }
            _ => match self.messages.front() {
                Some(m) if m.len() > room => return None,
                Some(m) => m.clone(),
                None => Vec::new(),
            },
        };
        // Bytes: the chunk that empties the buffer carries the FIN. Messages: the FIN is an
        // empty chunk of its own, so an empty message is never mistaken for it.
        let fin = self.fin_requested
            && match self.mode {
                Mode::Ordered => data.len() == self.bytes.len(),
                _ => self.messages.is_empty(),
            };
        let seq = self.next_seq;
        if !emit(seq, &data, fin) {
            return None;
        }
        match self.mode {
            Mode::Ordered => {
                self.bytes.drain(..data.len());
            }
            _ => {
                self.messages.pop_front();
            }
        }
        self.buffered = self.buffered.saturating_sub(data.len());
        self.next_seq += 1;
        self.fin_sent |= fin;
        let len = data.len();
        if self.mode.is_reliable() {
            self.unacked.insert(
                seq,
                Chunk {
                    data,
                    fin,
                    tx,
                    sent_at: now,
                    transmissions: 1,
                },
            );
        }
        Some(Next {
            seq,
            len,
            retransmission: false,
        })
    }

    /// Applies an acknowledgement: everything below `cumulative`, plus `ranges`. Returns the
    /// chunks it acknowledged, by sequence number. Raises the credit to `limit`.
    pub fn on_ack(
        &mut self,
        cumulative: u64,
        limit: u64,
        ranges: impl Iterator<Item = (u64, u64)>,
    ) -> Vec<(u64, Chunk)> {
        // A peer cannot acknowledge what was never sent: clamp rather than trust.
        let cumulative = cumulative.min(self.next_seq);
        self.limit = self.limit.max(limit);
        let mut acked = Vec::new();
        while let Some(entry) = self.unacked.first_entry() {
            if *entry.key() >= cumulative {
                break;
            }
            let seq = *entry.key();
            acked.push((seq, entry.remove()));
        }
        self.acked_below = self.acked_below.max(cumulative);
        for (start, end) in ranges {
            let keys: Vec<u64> = self.unacked.range(start..end).map(|(k, _)| *k).collect();
            for k in keys {
                if let Some(c) = self.unacked.remove(&k) {
                    acked.push((k, c));
                }
            }
        }
        for (seq, _) in &acked {
            self.lost.remove(seq);
        }
        acked
    }

    /// Marks an unacknowledged chunk lost (to be sent again); returns its transmissions so
    /// far, or `None` if it is not outstanding (acknowledged, or already marked).
    pub fn mark_lost(&mut self, seq: u64) -> Option<u32> {
        let c = self.unacked.get(&seq)?;
        self.lost.insert(seq).then_some(c.transmissions)
    }

    /// The outstanding chunk `seq`.
    #[must_use]
    pub fn chunk(&self, seq: u64) -> Option<&Chunk> {
        self.unacked.get(&seq)
    }

    /// Outstanding chunks in `[start, end)` that are not marked lost.
    pub fn outstanding_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &Chunk)> {
        self.unacked
            .range(start..end)
            .filter(|(s, _)| !self.lost.contains(s))
            .map(|(s, c)| (*s, c))
    }

    /// Every outstanding chunk (to forget them when the stream ends abnormally).
    pub fn outstanding(&self) -> impl Iterator<Item = (u64, &Chunk)> {
        self.unacked.iter().map(|(s, c)| (*s, c))
    }

    /// Next sequence number to send.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every chunk below this was acknowledged.
    #[must_use]
    pub fn acked_below(&self) -> u64 {
        self.acked_below
    }

    /// Chunks outstanding.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.unacked.len() as u64
    }

    /// The peer's credit.
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes written and not yet sent.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const T0: Instant = Instant::ZERO;

    fn send_all(s: &mut SendHalf, room: usize) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut tx = 0;
        while s.peek(room).is_some() {
            let mut got = None;
            s.next(T0, tx, room, |seq, d, fin| {
                got = Some((seq, d.to_vec(), fin));
                true
            })
            .unwrap();
            out.push(got.unwrap());
            tx += 1;
        }
        out
    }

    #[test]
    fn bytes_are_cut_into_chunks_and_the_last_carries_fin() {
        let mut s = SendHalf::new(Mode::Ordered, 100, 64, 64);
        assert_eq!(s.write(b"hello world"), Ok(11));
        s.finish();
        assert_eq!(s.write(b"x"), Err(StreamError::Finished));
        let chunks = send_all(&mut s, 4);
        assert_eq!(
            chunks,
            vec![
                (0, b"hell".to_vec(), false),
                (1, b"o wo".to_vec(), false),
                (2, b"rld".to_vec(), true)
            ]
        );
        assert!(!s.is_done(), "waits for acknowledgements");
        let acked = s.on_ack(2, 64, [(2, 3)].into_iter());
        assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(s.is_done());
    }

    #[test]
    fn back_pressure_is_a_partial_write_then_would_block() {
        let mut s = SendHalf::new(Mode::Ordered, 8, 64, 64);
        assert_eq!(s.write(b"0123456789"), Ok(8));
        assert_eq!(s.write(b"x"), Err(StreamError::WouldBlock));
        assert_eq!(s.backpressure_events, 2);
        assert!(!s.take_writable(), "still full");
        send_all(&mut s, 4);
        assert!(s.take_writable());
        assert!(!s.take_writable(), "once per blocking");
    }

    #[test]
    fn credit_and_tracking_window_limit_new_chunks() {
        let mut s = SendHalf::new(Mode::Ordered, 100, 2, 3);
        s.write(&[7u8; 40]).unwrap();
        assert_eq!(send_all(&mut s, 4).len(), 2, "credit of two chunks");
        s.on_ack(0, 10, core::iter::empty());
        assert_eq!(send_all(&mut s, 4).len(), 1, "tracking window of three");
        s.note_tracking_full();
        assert_eq!(s.tracking_full, 1);
        s.on_ack(1, 10, core::iter::empty());
        assert_eq!(send_all(&mut s, 4).len(), 1);
    }

    #[test]
    fn lost_chunks_go_first_and_keep_their_bytes() {
        let mut s = SendHalf::new(Mode::Unordered, 100, 64, 64);
        for m in [&b"a"[..], b"bb", b"ccc"] {
            s.send_message(m, 10).unwrap();
        }
        assert_eq!(
            s.send_message(&[0; 11], 10),
            Err(StreamError::MessageTooLarge { len: 11, max: 10 })
        );
        assert_eq!(s.write(b"x"), Err(StreamError::WrongMode(Mode::Unordered)));
        send_all(&mut s, 10);
        s.on_ack(0, 64, [(2, 3)].into_iter());
        assert_eq!(s.mark_lost(1), Some(1));
        assert_eq!(s.mark_lost(1), None, "already marked");
        assert_eq!(s.mark_lost(2), None, "acknowledged");
        assert_eq!(s.peek(10), Some(2));
        assert_eq!(s.peek(1), Some(2), "a retransmission needs its whole size");
        assert!(s.next(T0, 9, 1, |_, _, _| true).is_none(), "does not fit");
        let again = send_all(&mut s, 10);
        assert_eq!(again, vec![(1, b"bb".to_vec(), false)]);
        assert_eq!(s.chunk(1).unwrap().transmissions, 2);
        assert_eq!(s.retransmits, 1);
    }

    #[test]
    fn unreliable_chunks_are_not_tracked() {
        let mut s = SendHalf::new(Mode::Unreliable, 100, 0, 1);
        s.send_message(b"m1", 10).unwrap();
        s.send_message(b"m2", 10).unwrap();
        assert_eq!(
            send_all(&mut s, 10).len(),
            2,
            "no credit or tracking applies"
        );
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn acknowledgements_beyond_what_was_sent_are_clamped() {
        let mut s = SendHalf::new(Mode::Ordered, 100, 64, 64);
        s.write(b"abcd").unwrap();
        send_all(&mut s, 2);
        s.on_ack(1_000, 64, core::iter::empty());
        assert_eq!(s.acked_below(), 2);
    }
}
