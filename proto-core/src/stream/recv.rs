//! The receive side of a stream: bounded reassembly of numbered chunks, in-order delivery,
//! duplicate suppression, and the acknowledgement state (cumulative point, selective ranges and
//! gaps) the sender needs.
//!
//! This module owns the buffer of chunks that arrived ahead of a gap. It never decodes frames
//! and never decides when to send an acknowledgement; the stream machine feeds it chunks and
//! reads its state. Every chunk carries a per-stream sequence number; a chunk more than
//! `window` numbers ahead of the next expected one is refused, so memory stays bounded by the
//! window the receiver granted.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::{Mode, StreamError};

/// What happened to an arriving chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Stored (or ready for delivery).
    Accepted,
    /// Already delivered or already buffered: dropped.
    Duplicate,
    /// Beyond the receive window: dropped (the sender overran its grant).
    BeyondWindow,
}

/// Reassembly state of one stream.
#[derive(Debug, Clone)]
pub struct Reassembly {
    /// The next sequence number to deliver in order.
    next: u64,
    /// Chunks at or after `next`, not yet delivered.
    buffered: BTreeMap<u64, Vec<u8>>,
    /// How far ahead of `next` chunks are accepted.
    window: u64,
    buffered_bytes: usize,
}

impl Reassembly {
    /// Accepts chunks numbered `0..window` to begin with.
    #[must_use]
    pub fn new(window: u64) -> Reassembly {
        Reassembly {
            next: 0,
            buffered: BTreeMap::new(),
            window: window.max(1),
            buffered_bytes: 0,
        }
    }

    /// A chunk arrived.
    pub fn insert(&mut self, seq: u64, data: &[u8]) -> Arrival {
        if seq < self.next || self.buffered.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        if seq - self.next >= self.window {
            return Arrival::BeyondWindow;
        }
        self.buffered_bytes += data.len();
        self.buffered.insert(seq, data.to_vec());
        Arrival::Accepted
    }

    /// The common case of an in-order stream: `seq` is the next expected chunk and nothing
    /// waits behind a gap, so it is delivered at once without being stored. Returns whether
    /// that applied (otherwise use [`Reassembly::insert`]).
    pub fn take_in_order(&mut self, seq: u64) -> bool {
        if seq != self.next || !self.buffered.is_empty() {
            return false;
        }
        self.next += 1;
        true
    }

    /// The next chunk in order, if it has arrived.
    pub fn pop_in_order(&mut self) -> Option<Vec<u8>> {
        let data = self.buffered.remove(&self.next)?;
        self.next += 1;
        self.buffered_bytes = self.buffered_bytes.saturating_sub(data.len());
        Some(data)
    }

    /// The next sequence number expected in order: everything below it has arrived.
    #[must_use]
    pub fn cumulative(&self) -> u64 {
        self.next
    }

    /// Ranges `[start, end)` received beyond the cumulative point, in order (at most `max`).
    #[must_use]
    pub fn selective_ranges(&self, max: usize) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &seq in self.buffered.keys() {
            match ranges.last_mut() {
                Some((_, end)) if *end == seq => *end += 1,
                _ => {
                    if ranges.len() == max {
                        break;
                    }
                    ranges.push((seq, seq + 1));
                }
            }
        }
        ranges
    }

    /// Gaps `[start, end)` below the highest received chunk: what a NACK asks for.
    #[must_use]
    pub fn gaps(&self, max: usize) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut expect = self.next;
        for &seq in self.buffered.keys() {
            if seq > expect {
                if gaps.len() == max {
                    break;
                }
                gaps.push((expect, seq));
            }
            expect = seq + 1;
        }
        gaps
    }

    /// Chunks waiting for a gap to fill.
    #[must_use]
    pub fn buffered_count(&self) -> usize {
        self.buffered.len()
    }

    /// Bytes waiting for a gap to fill.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Grants more room: chunks up to `next + window` are accepted.
    pub fn set_window(&mut self, window: u64) {
        self.window = window.max(1);
    }
}

/// What [`RecvHalf::on_chunk`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The chunk was new (not a duplicate, within credit).
    pub accepted: bool,
    /// A duplicate (the sender missed an acknowledgement).
    pub duplicate: bool,
    /// It arrived ahead of a gap (or left one open): acknowledge at once.
    pub out_of_order: bool,
    /// The receive queue went from empty to non-empty, or the end became readable.
    pub readable: bool,
    /// The peer's FIN was reached just now (everything before it is queued).
    pub finished: bool,
}

/// The receive half of a stream: reassembly, the queue the application reads from, the
/// credit granted to the sender and the FIN.
#[derive(Debug, Clone)]
pub struct RecvHalf {
    mode: Mode,
    reasm: Reassembly,
    queue: VecDeque<Vec<u8>>,
    front_read: usize,
    window: u64,
    fin_seq: Option<u64>,
    fin_reached: bool,
    end_read: bool,
    advertised: u64,
    pub(crate) duplicates: u64,
    pub(crate) dropped: u64,
    pub(crate) bytes_read: u64,
}

impl RecvHalf {
    /// A receive half granting `window` chunks of credit beyond what the application read.
    #[must_use]
    pub fn new(mode: Mode, window: u64) -> RecvHalf {
        RecvHalf {
            mode,
            reasm: Reassembly::new(u64::MAX),
            queue: VecDeque::new(),
            front_read: 0,
            window: window.max(1),
            fin_seq: None,
            fin_reached: false,
            end_read: false,
            advertised: 0,
            duplicates: 0,
            dropped: 0,
            bytes_read: 0,
        }
    }

    /// Credit: the sender may send chunks below this. `window` beyond the cumulative point,
    /// less what sits unread in the queue; never below what was already advertised (unordered
    /// messages enter the queue ahead of the cumulative point, which would otherwise shrink
    /// it), so memory stays within about twice the window.
    #[must_use]
    pub fn limit(&self) -> u64 {
        let unread = self.queue.len() as u64;
        self.reasm
            .cumulative()
            .saturating_add(self.window.saturating_sub(unread))
            .max(self.advertised)
    }

    /// Every chunk below this arrived.
    #[must_use]
    pub fn cumulative(&self) -> u64 {
        self.reasm.cumulative()
    }

    /// Selective ranges above the cumulative point (at most `max`).
    #[must_use]
    pub fn ranges(&self, max: usize) -> Vec<(u64, u64)> {
        self.reasm.selective_ranges(max)
    }

    /// Gaps the receiver waits for (at most `max`).
    #[must_use]
    pub fn gaps(&self, max: usize) -> Vec<(u64, u64)> {
        self.reasm.gaps(max)
    }

    /// Whether some chunk arrived ahead of a missing one.
    #[must_use]
    pub fn has_gap(&self) -> bool {
        self.reasm.buffered_count() > 0
    }

    /// Records that an ACK carrying `limit()` was sent; returns the previous advertised limit.
    pub fn advertise(&mut self) -> u64 {
        let limit = self.limit();
        core::mem::replace(&mut self.advertised, limit)
    }

    /// Whether the credit grew enough since the last ACK that the sender should hear of it.
    #[must_use]
    pub fn window_update_due(&self) -> bool {
        self.limit().saturating_sub(self.advertised) >= (self.window / 4).max(1)
    }

    /// Takes one arriving chunk.
    pub fn on_chunk(&mut self, seq: u64, fin: bool, data: &[u8]) -> Received {
        let mut r = Received {
            accepted: false,
            duplicate: false,
            out_of_order: false,
            readable: false,
            finished: false,
        };
        if self.fin_seq.is_some_and(|f| seq > f) || (fin && self.fin_seq.is_some_and(|f| f != seq))
        {
            // Beyond (or contradicting) the end the peer announced: a broken peer. Drop.
            self.dropped += 1;
            return r;
        }
        let was_empty = self.queue.is_empty();
        if self.mode == Mode::Unreliable {
            if fin {
                self.fin_seq = Some(seq);
                self.fin_reached = true;
                r.finished = true;
            } else if self.fin_reached || self.queue.len() as u64 >= self.window {
                // After the end, or the application is not keeping up: unreliable, so drop.
                self.dropped += 1;
                return r;
            } else {
                self.queue.push_back(data.to_vec());
            }
            r.accepted = true;
            r.readable = was_empty && (!self.queue.is_empty() || r.finished);
            return r;
        }
        if seq >= self.limit() {
            // Beyond the credit we granted: drop and let the sender retransmit.
            self.dropped += 1;
            return r;
        }
        if self.mode == Mode::Ordered && self.reasm.take_in_order(seq) {
            // In order with nothing waiting: straight to the read queue, not via reassembly.
            if !data.is_empty() {
                self.queue.push_back(data.to_vec());
            }
        } else {
            let stored: &[u8] = if self.mode == Mode::Ordered {
                data
            } else {
                &[]
            };
            match self.reasm.insert(seq, stored) {
                Arrival::Duplicate => {
                    self.duplicates += 1;
                    r.duplicate = true;
                    return r;
                }
                Arrival::BeyondWindow => {
                    self.dropped += 1;
                    return r;
                }
                Arrival::Accepted => {}
            }
        }
        r.accepted = true;
        if fin {
            self.fin_seq = Some(seq);
        }
        if self.mode == Mode::Unordered && !(fin && data.is_empty()) {
            self.queue.push_back(data.to_vec());
        }
        while let Some(chunk) = self.reasm.pop_in_order() {
            if self.mode == Mode::Ordered && !chunk.is_empty() {
                self.queue.push_back(chunk);
            }
        }
        r.out_of_order = self.has_gap();
        if !self.fin_reached && self.fin_seq.is_some_and(|f| self.reasm.cumulative() > f) {
            self.fin_reached = true;
            r.finished = true;
        }
        r.readable = was_empty && (!self.queue.is_empty() || r.finished);
        r
    }

    /// Reads bytes (ordered streams). `Ok(0)` for a non-empty `buf` means the end.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.mode != Mode::Ordered {
            return Err(StreamError::WrongMode(self.mode));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.queue.front() else {
                break;
            };
            let avail = front.get(self.front_read..).unwrap_or(&[]);
            let take = avail.len().min(buf.len() - n);
            if let (Some(dst), Some(src)) = (buf.get_mut(n..n + take), avail.get(..take)) {
                dst.copy_from_slice(src);
            }
            n += take;
            self.front_read += take;
            if self.front_read >= front.len() {
                self.queue.pop_front();
                self.front_read = 0;
            }
        }
        self.bytes_read += n as u64;
        if n > 0 {
            Ok(n)
        } else if self.fin_reached {
            self.end_read = true;
            Ok(0)
        } else {
            Err(StreamError::WouldBlock)
        }
    }

    /// Takes the next message (message streams); `Ok(None)` means the end.
    pub fn recv_message(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        if self.mode == Mode::Ordered {
            return Err(StreamError::WrongMode(self.mode));
        }
        if let Some(m) = self.queue.pop_front() {
            self.bytes_read += m.len() as u64;
            return Ok(Some(m));
        }
        if self.fin_reached {
            self.end_read = true;
            return Ok(None);
        }
        Err(StreamError::WouldBlock)
    }

    /// Whether the application has read the end.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.end_read
    }

    /// Whether the peer's end was reached (the application may still have data to read).
    #[must_use]
    pub fn fin_reached(&self) -> bool {
        self.fin_reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn in_order_delivery_across_a_gap() {
        let mut r = Reassembly::new(16);
        assert_eq!(r.insert(0, b"a"), Arrival::Accepted);
        assert_eq!(r.insert(2, b"c"), Arrival::Accepted);
        assert_eq!(r.pop_in_order().as_deref(), Some(&b"a"[..]));
        assert_eq!(r.pop_in_order(), None, "waits for 1");
        assert_eq!(r.gaps(8), vec![(1, 2)]);
        assert_eq!(r.selective_ranges(8), vec![(2, 3)]);
        assert_eq!(r.insert(1, b"b"), Arrival::Accepted);
        assert_eq!(r.pop_in_order().as_deref(), Some(&b"b"[..]));
        assert_eq!(r.pop_in_order().as_deref(), Some(&b"c"[..]));
        assert_eq!(r.cumulative(), 3);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn duplicates_and_overruns_are_refused() {
        let mut r = Reassembly::new(4);
        r.insert(0, b"x");
        assert_eq!(r.insert(0, b"x"), Arrival::Duplicate);
        r.pop_in_order();
        assert_eq!(r.insert(0, b"x"), Arrival::Duplicate, "already delivered");
        assert_eq!(r.insert(4, b"y"), Arrival::Accepted);
        assert_eq!(r.insert(5, b"z"), Arrival::BeyondWindow);
        r.set_window(8);
        assert_eq!(r.insert(5, b"z"), Arrival::Accepted);
    }

    #[test]
    fn ranges_and_gaps_describe_what_arrived() {
        let mut r = Reassembly::new(100);
        for s in [0u64, 1, 3, 4, 5, 9, 12, 13] {
            r.insert(s, b"-");
        }
        while r.pop_in_order().is_some() {}
        assert_eq!(r.cumulative(), 2);
        assert_eq!(r.selective_ranges(8), vec![(3, 6), (9, 10), (12, 14)]);
        assert_eq!(r.selective_ranges(2), vec![(3, 6), (9, 10)]);
        assert_eq!(r.gaps(8), vec![(2, 3), (6, 9), (10, 12)]);
        assert_eq!(r.gaps(1), vec![(2, 3)]);
    }

    #[test]
    fn matches_a_model_under_any_arrival_order() {
        // Random arrival orders with duplicates: every chunk is delivered once, in order.
        let mut rng = crate::rng::Seed::from_u64(9).rng("reassembly", 0);
        for _ in 0..50 {
            let mut r = Reassembly::new(64);
            let mut delivered = Vec::new();
            let mut pending: Vec<u64> = (0..200).collect();
            while !pending.is_empty() {
                let i = rng.below(pending.len() as u64) as usize;
                let s = pending[i];
                // Beyond the window: the sender would retry later. Otherwise the chunk may still
                // be sent again (a duplicate) one time in four.
                if r.insert(s, &s.to_le_bytes()) != Arrival::BeyondWindow && rng.below(4) != 0 {
                    pending.swap_remove(i);
                }
                while let Some(d) = r.pop_in_order() {
                    delivered.push(u64::from_le_bytes(d.try_into().unwrap()));
                }
            }
            assert_eq!(delivered, (0..200).collect::<Vec<_>>());
        }
    }
}
