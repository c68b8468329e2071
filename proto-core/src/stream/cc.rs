//! Congestion control with integer arithmetic only.
//!
//! This module owns the [`CongestionControl`] trait and its reference implementation,
//! [`NewReno`] (slow start, congestion avoidance, multiplicative decrease once per recovery
//! episode, reset on timeout; RFC 5681 and RFC 6582 in spirit). It never tracks packets itself:
//! the sender reports what was sent, acknowledged and lost, with packet numbers so that one
//! loss episode reduces the window once.

use core::fmt::Debug;
use core::time::Duration;

use crate::time::Instant;

/// A congestion controller. All quantities are bytes and packet numbers; no floating point.
pub trait CongestionControl: Debug + Send {
    /// Bytes that may be in flight now.
    fn window(&self) -> u64;

    /// A packet of `bytes` bytes numbered `packet` was sent at `now`.
    fn on_sent(&mut self, now: Instant, packet: u64, bytes: u64);

    /// A packet was acknowledged; `bytes` left flight. `rtt` is how long it took, when the
    /// sender can tell: `None` when the acknowledgement may belong to an earlier transmission
    /// of the same data (a retransmission acknowledged sooner than the path's minimum RTT),
    /// which would make the sample far too small.
    fn on_ack(&mut self, now: Instant, packet: u64, bytes: u64, rtt: Option<Duration>);

    /// A packet was declared lost (by a gap NACK or a tail-loss probe); `bytes` left flight.
    fn on_loss(&mut self, now: Instant, packet: u64, bytes: u64);

    /// The retransmission timer fired: the path may have changed entirely.
    fn on_timeout(&mut self, now: Instant);

    /// The sender ran out of data with the window open, `in_flight` bytes outstanding: what
    /// it sends until those are delivered says how fast the application writes, not how fast
    /// the path is. Model-based controllers use it to keep such samples from lowering their
    /// estimate; loss-based ones ignore it.
    fn on_app_limited(&mut self, in_flight: u64) {
        let _ = in_flight;
    }

    /// The rate to pace sends at, in bytes per second (`None`: send as the window allows).
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
}

/// NewReno, the reference controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReno {
    mss: u64,
    cwnd: u64,
    ssthresh: u64,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    acked_in_ca: u64,
    /// Largest packet number sent so far.
    largest_sent: u64,
    /// Losses of packets up to this number belong to the current recovery episode.
    recovery_until: Option<u64>,
}

impl NewReno {
    /// A controller for packets of up to `mss` bytes, starting at ten of them (RFC 6928).
    #[must_use]
    pub fn new(mss: u64) -> NewReno {
        let mss = mss.max(1);
        NewReno {
            mss,
            cwnd: mss.saturating_mul(10),
            ssthresh: u64::MAX,
            acked_in_ca: 0,
            largest_sent: 0,
            recovery_until: None,
        }
    }

    /// The slow-start threshold.
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn min_window(&self) -> u64 {
        self.mss.saturating_mul(2)
    }
}

impl CongestionControl for NewReno {
    fn window(&self) -> u64 {
        self.cwnd
    }

    fn on_sent(&mut self, _now: Instant, packet: u64, _bytes: u64) {
        self.largest_sent = self.largest_sent.max(packet);
    }

    fn on_ack(&mut self, _now: Instant, packet: u64, bytes: u64, _rtt: Option<Duration>) {
        if let Some(until) = self.recovery_until {
            if packet <= until {
                // Still acknowledging what was in flight when the loss happened: no growth.
                return;
            }
            self.recovery_until = None;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(bytes);
        } else {
            // One MSS per window's worth of acknowledged bytes.
            self.acked_in_ca = self.acked_in_ca.saturating_add(bytes);
            while self.acked_in_ca >= self.cwnd {
                self.acked_in_ca -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }

    fn on_loss(&mut self, _now: Instant, packet: u64, _bytes: u64) {
        if self.recovery_until.is_some_and(|until| packet <= until) {
            return; // Same episode: reduce once.
        }
        self.ssthresh = (self.cwnd / 2).max(self.min_window());
        self.cwnd = self.ssthresh;
        self.acked_in_ca = 0;
        self.recovery_until = Some(self.largest_sent);
    }

    fn on_timeout(&mut self, _now: Instant) {
        self.ssthresh = (self.cwnd / 2).max(self.min_window());
        self.cwnd = self.mss;
        self.acked_in_ca = 0;
        self.recovery_until = Some(self.largest_sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Instant = Instant::ZERO;
    const MSS: u64 = 1_000;

    fn ack_window(cc: &mut NewReno, first: u64) -> u64 {
        let w = cc.window();
        let packets = w / MSS;
        for p in first..first + packets {
            cc.on_sent(T, p, MSS);
        }
        for p in first..first + packets {
            cc.on_ack(T, p, MSS, None);
        }
        first + packets
    }

    #[test]
    fn slow_start_doubles_per_round_trip() {
        let mut cc = NewReno::new(MSS);
        assert_eq!(cc.window(), 10 * MSS);
        let next = ack_window(&mut cc, 1);
        assert_eq!(cc.window(), 20 * MSS);
        ack_window(&mut cc, next);
        assert_eq!(cc.window(), 40 * MSS);
    }

    #[test]
    fn a_loss_halves_once_per_episode_then_avoidance_adds_one_mss_per_window() {
        let mut cc = NewReno::new(MSS);
        let mut next = ack_window(&mut cc, 1);
        next = ack_window(&mut cc, next); // 40 MSS
        for p in next..next + 40 {
            cc.on_sent(T, p, MSS);
        }
        cc.on_loss(T, next, MSS);
        assert_eq!(cc.window(), 20 * MSS);
        assert_eq!(cc.ssthresh(), 20 * MSS);
        // More losses from the same flight do not reduce again.
        cc.on_loss(T, next + 5, MSS);
        cc.on_loss(T, next + 39, MSS);
        assert_eq!(cc.window(), 20 * MSS);
        // Acks of that flight do not grow it.
        cc.on_ack(T, next + 10, MSS, None);
        assert_eq!(cc.window(), 20 * MSS);
        // New data: congestion avoidance, one MSS per window acknowledged.
        let after = ack_window(&mut cc, next + 40);
        assert_eq!(cc.window(), 21 * MSS);
        ack_window(&mut cc, after);
        assert_eq!(cc.window(), 22 * MSS);
    }

    #[test]
    fn a_timeout_resets_to_one_segment() {
        let mut cc = NewReno::new(MSS);
        ack_window(&mut cc, 1);
        cc.on_timeout(T);
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.ssthresh(), 10 * MSS);
        // Slow start again up to ssthresh.
        for p in 100..120 {
            cc.on_sent(T, p, MSS);
            cc.on_ack(T, p, MSS, None);
        }
        assert!(cc.window() >= 10 * MSS);
    }

    #[test]
    fn the_window_never_falls_below_two_segments_after_loss() {
        let mut cc = NewReno::new(MSS);
        for round in 0..20u64 {
            cc.on_sent(T, round * 100 + 50, MSS);
            cc.on_loss(T, round * 100 + 50, MSS);
            cc.on_sent(T, round * 100 + 99, MSS);
        }
        assert_eq!(cc.window(), 2 * MSS);
    }
}
