//! The receive side of a stream: bounded reassembly of numbered chunks, in-order delivery,
//! duplicate suppression, and the acknowledgement state (cumulative point, selective ranges and
//! gaps) the sender needs.
//!
//! This module owns the buffer of chunks that arrived ahead of a gap. It never decodes frames
//! and never decides when to send an acknowledgement; the stream machine feeds it chunks and
//! reads its state. Every chunk carries a per-stream sequence number; a chunk more than
//! `window` numbers ahead of the next expected one is refused, so memory stays bounded by the
//! window the receiver granted.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

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

    /// Bytes waiting for a gap to fill (or for the application to read).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Grants more room: chunks up to `next + window` are accepted.
    pub fn set_window(&mut self, window: u64) {
        self.window = window.max(1);
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
