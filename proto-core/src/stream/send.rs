//! The send side of a stream: numbered chunks tracked from first transmission until they are
//! acknowledged, and what needs retransmitting (NACKed gaps, expired timers).
//!
//! This module owns the unacknowledged set. It never holds more than its capacity: when full,
//! it refuses new chunks (back-pressure) instead of forgetting old ones, so nothing in flight is
//! ever silently dropped. It never builds frames or reads a clock.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::time::Duration;

use crate::time::Instant;

/// One tracked chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Its sequence number.
    pub seq: u64,
    /// Payload bytes.
    pub len: usize,
    /// When it was last (re)transmitted.
    pub sent_at: Instant,
    /// How many times it went out.
    pub transmissions: u32,
}

impl InFlight {
    /// Whether it was sent more than once (its RTT sample is ambiguous: Karn's rule).
    #[must_use]
    pub fn retransmitted(&self) -> bool {
        self.transmissions > 1
    }
}

/// The tracking window is full: acknowledge or give up before sending more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull;

/// Unacknowledged chunks of one stream.
#[derive(Debug, Clone)]
pub struct SendWindow {
    next_seq: u64,
    unacked: BTreeMap<u64, InFlight>,
    capacity: usize,
    bytes_in_flight: usize,
}

impl SendWindow {
    /// A window tracking at most `capacity` chunks (at least the send window granted by the
    /// peer, so that every chunk the peer may accept can be tracked).
    #[must_use]
    pub fn new(capacity: usize) -> SendWindow {
        SendWindow {
            next_seq: 0,
            unacked: BTreeMap::new(),
            capacity: capacity.max(1),
            bytes_in_flight: 0,
        }
    }

    /// Whether another chunk can be tracked.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.unacked.len() < self.capacity
    }

    /// Tracks a new chunk of `len` bytes sent now; returns its sequence number.
    pub fn send(&mut self, now: Instant, len: usize) -> Result<u64, WindowFull> {
        if !self.has_room() {
            return Err(WindowFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.insert(
            seq,
            InFlight {
                seq,
                len,
                sent_at: now,
                transmissions: 1,
            },
        );
        self.bytes_in_flight += len;
        Ok(seq)
    }

    /// Records a retransmission of `seq`; `false` if it is no longer outstanding.
    pub fn resent(&mut self, now: Instant, seq: u64) -> bool {
        match self.unacked.get_mut(&seq) {
            Some(c) => {
                c.sent_at = now;
                c.transmissions = c.transmissions.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// An acknowledgement: everything below `cumulative`, and every `[start, end)` range.
    /// Returns the chunks it newly acknowledged, lowest first.
    pub fn on_ack(&mut self, cumulative: u64, ranges: &[(u64, u64)]) -> Vec<InFlight> {
        let mut acked = Vec::new();
        while let Some(entry) = self.unacked.first_entry() {
            if *entry.key() >= cumulative {
                break;
            }
            acked.push(entry.remove());
        }
        for &(start, end) in ranges {
            let keys: Vec<u64> = self.unacked.range(start..end).map(|(k, _)| *k).collect();
            for k in keys {
                if let Some(c) = self.unacked.remove(&k) {
                    acked.push(c);
                }
            }
        }
        for c in &acked {
            self.bytes_in_flight = self.bytes_in_flight.saturating_sub(c.len);
        }
        acked.sort_unstable_by_key(|c| c.seq);
        acked
    }

    /// The outstanding chunks inside NACKed gaps `[start, end)`: what to resend now.
    #[must_use]
    pub fn nacked(&self, gaps: &[(u64, u64)]) -> Vec<u64> {
        let mut out: Vec<u64> = gaps
            .iter()
            .flat_map(|&(s, e)| self.unacked.range(s..e).map(|(k, _)| *k))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The outstanding chunks last sent at least `rto` ago.
    #[must_use]
    pub fn expired(&self, now: Instant, rto: Duration) -> Vec<u64> {
        self.unacked
            .values()
            .filter(|c| now.saturating_duration_since(c.sent_at) >= rto)
            .map(|c| c.seq)
            .collect()
    }

    /// When the oldest outstanding chunk's timer runs out.
    #[must_use]
    pub fn next_expiry(&self, rto: Duration) -> Option<Instant> {
        self.unacked.values().map(|c| c.sent_at + rto).min()
    }

    /// A tracked chunk.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<&InFlight> {
        self.unacked.get(&seq)
    }

    /// Chunks outstanding.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.unacked.len()
    }

    /// Payload bytes outstanding.
    #[must_use]
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// The next sequence number to be assigned.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const T0: Instant = Instant::ZERO;

    fn window_with(n: u64) -> SendWindow {
        let mut w = SendWindow::new(64);
        for _ in 0..n {
            w.send(T0, 100).unwrap();
        }
        w
    }

    #[test]
    fn cumulative_and_selective_acks_prune_exactly() {
        let mut w = window_with(10);
        let acked = w.on_ack(3, &[(5, 7), (9, 20)]);
        assert_eq!(
            acked.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 5, 6, 9]
        );
        assert_eq!(w.outstanding(), 4);
        assert_eq!(w.bytes_in_flight(), 400);
        // Acknowledging again acknowledges nothing new.
        assert!(w.on_ack(3, &[(5, 7)]).is_empty());
        assert_eq!(w.nacked(&[(3, 5), (7, 9)]), vec![3, 4, 7, 8]);
    }

    #[test]
    fn a_full_window_refuses_instead_of_forgetting() {
        let mut w = SendWindow::new(3);
        for _ in 0..3 {
            w.send(T0, 1).unwrap();
        }
        assert_eq!(w.send(T0, 1), Err(WindowFull));
        assert_eq!(w.outstanding(), 3);
        w.on_ack(1, &[]);
        assert_eq!(w.send(T0, 1), Ok(3));
    }

    #[test]
    fn retransmissions_are_marked_and_restart_their_timer() {
        let mut w = window_with(3);
        let rto = Duration::from_millis(200);
        let later = T0 + Duration::from_millis(250);
        assert_eq!(w.expired(later, rto), vec![0, 1, 2]);
        assert!(w.resent(later, 1));
        assert!(w.get(1).unwrap().retransmitted());
        assert!(!w.get(0).unwrap().retransmitted());
        assert_eq!(w.expired(later, rto), vec![0, 2]);
        assert_eq!(w.next_expiry(rto), Some(T0 + rto));
        w.on_ack(1, &[(2, 3)]);
        assert_eq!(w.next_expiry(rto), Some(later + rto));
        assert!(!w.resent(later, 0), "acknowledged chunks are gone");
    }
}
