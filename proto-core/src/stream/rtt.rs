//! Round-trip estimation and the retransmission timeout, per RFC 6298, with Karn's rule.
//!
//! This module owns SRTT, RTTVAR, the minimum RTT seen and the RTO with its exponential
//! backoff, all in integer nanoseconds. It never decides what is retransmitted; callers tell
//! it whether a sample came from a retransmitted packet (Karn: such samples are ambiguous and
//! ignored).

use core::time::Duration;

use crate::time::duration_nanos;

/// Bounds of the retransmission timeout.
pub const MIN_RTO: Duration = Duration::from_millis(10);
/// Upper bound of the retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(2);
/// The RTO before any sample (RFC 6298 says 1 s).
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Clock granularity G of RFC 6298.
const GRANULARITY_NS: u64 = 1_000_000;

/// The estimator of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<u64>,
    rttvar: u64,
    min_rtt: Option<u64>,
    latest: Option<u64>,
    /// Doublings of the RTO since the last valid sample.
    backoff: u32,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator::new()
    }
}

impl RttEstimator {
    /// No samples yet.
    #[must_use]
    pub const fn new() -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: 0,
            min_rtt: None,
            latest: None,
            backoff: 0,
        }
    }

    /// Feeds one sample. Samples from retransmitted packets are ignored (Karn's rule); a valid
    /// sample also ends any timeout backoff.
    pub fn on_sample(&mut self, rtt: Duration, from_retransmission: bool) {
        if from_retransmission {
            return;
        }
        let r = duration_nanos(rtt);
        self.latest = Some(r);
        self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                // RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|; SRTT = 7/8 SRTT + 1/8 R.
                let diff = srtt.abs_diff(r);
                self.rttvar = (self.rttvar / 4).saturating_mul(3).saturating_add(diff / 4);
                self.srtt = Some((srtt / 8).saturating_mul(7).saturating_add(r / 8));
            }
        }
        self.backoff = 0;
    }

    /// An acknowledgement of new data arrived, even one whose timing is ambiguous: the path
    /// delivers again, so the timeout backoff ends (as RFC 9002 6.2.1 does with its probe
    /// count). Under heavy loss most acknowledged chunks are retransmissions, whose samples
    /// Karn's rule discards; keeping the backoff until a clean sample would leave the RTO at
    /// its 2 s ceiling while acknowledgements keep arriving.
    pub fn on_progress(&mut self) {
        self.backoff = 0;
    }

    /// A retransmission timeout fired: double the RTO (up to the maximum).
    pub fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// The current retransmission timeout, clamped to [10 ms, 2 s].
    #[must_use]
    pub fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => duration_nanos(INITIAL_RTO),
            Some(srtt) => srtt.saturating_add(GRANULARITY_NS.max(self.rttvar.saturating_mul(4))),
        };
        let backed = base.saturating_mul(1u64 << self.backoff);
        Duration::from_nanos(backed.clamp(duration_nanos(MIN_RTO), duration_nanos(MAX_RTO)))
    }

    /// The RTO doubled `doublings` more times, at most the ceiling (and never below the RTO):
    /// the spacing of things repeated while nothing answers (NACKs, RESETs).
    #[must_use]
    pub fn rto_backed_off(&self, doublings: u32) -> Duration {
        let rto = self.rto();
        rto.saturating_mul(1 << doublings.min(16))
            .min(MAX_RTO)
            .max(rto)
    }

    /// The smoothed RTT, if any sample arrived.
    #[must_use]
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_nanos)
    }

    /// The smallest RTT seen.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(Duration::from_nanos)
    }

    /// The latest valid sample.
    #[must_use]
    pub fn latest(&self) -> Option<Duration> {
        self.latest.map(Duration::from_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_sample_sets_srtt_and_half_of_it_as_variance() {
        let mut r = RttEstimator::new();
        assert_eq!(r.rto(), INITIAL_RTO);
        r.on_sample(100 * MS, false);
        assert_eq!(r.srtt(), Some(100 * MS));
        // RTO = SRTT + 4 * RTTVAR = 100 + 4 * 50 ms.
        assert_eq!(r.rto(), 300 * MS);
    }

    #[test]
    fn later_samples_follow_rfc_6298() {
        let mut r = RttEstimator::new();
        r.on_sample(100 * MS, false);
        r.on_sample(200 * MS, false);
        // RTTVAR = 3/4 * 50 + 1/4 * 100 = 62.5 ms; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5 ms.
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(r.rto(), Duration::from_micros(112_500 + 4 * 62_500));
        assert_eq!(r.min_rtt(), Some(100 * MS));
        assert_eq!(r.latest(), Some(200 * MS));
    }

    #[test]
    fn karn_ignores_retransmitted_samples() {
        let mut r = RttEstimator::new();
        r.on_sample(50 * MS, false);
        let before = r;
        r.on_sample(900 * MS, true);
        assert_eq!(r, before);
    }

    #[test]
    fn timeouts_back_off_and_a_valid_sample_resets() {
        let mut r = RttEstimator::new();
        r.on_sample(20 * MS, false);
        let rto = r.rto();
        r.on_timeout();
        assert_eq!(r.rto(), rto * 2);
        for _ in 0..40 {
            r.on_timeout();
        }
        assert_eq!(r.rto(), MAX_RTO);
        r.on_sample(20 * MS, false);
        assert!(r.rto() < 100 * MS);
    }

    #[test]
    fn the_rto_is_clamped() {
        let mut r = RttEstimator::new();
        for _ in 0..50 {
            r.on_sample(Duration::from_micros(100), false);
        }
        assert_eq!(r.rto(), MIN_RTO);
        let mut r = RttEstimator::new();
        r.on_sample(Duration::from_secs(10), false);
        assert_eq!(r.rto(), MAX_RTO);
    }
}
