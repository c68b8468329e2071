//! Per-host clocks: each simulated host sees the world's virtual time through its own offset
//! (skew) and rate error (drift), like a real machine's oscillator.
//!
//! This module owns the conversion between the world's global virtual time and a host's local
//! time, in integers. It never advances time.

use proto_core::Instant;

/// How a host's clock relates to the world's: `local = global + offset + global * drift_ppm / 1e6`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockModel {
    /// Constant offset in nanoseconds (skew).
    pub offset_ns: i64,
    /// Rate error in parts per million (drift): +100 runs 100 µs per second fast.
    pub drift_ppm: i64,
}

impl ClockModel {
    /// The host's reading at global time `global` (never below zero).
    #[must_use]
    pub fn local(&self, global: Instant) -> Instant {
        let g = i128::from(global.as_nanos());
        let l = g + i128::from(self.offset_ns) + g * i128::from(self.drift_ppm) / 1_000_000;
        Instant::from_nanos(l.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// The earliest global time at which the host's clock reads at least `local`.
    #[must_use]
    pub fn global(&self, local: Instant) -> Instant {
        // A clock that starts behind reads zero for a while: the earliest instant may be 0.
        if self.local(Instant::ZERO) >= local {
            return Instant::ZERO;
        }
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        if rate <= 0 {
            return Instant::MAX;
        }
        let l = i128::from(local.as_nanos()) - i128::from(self.offset_ns);
        // Ceiling division, then adjust by the few nanoseconds that integer rounding in
        // `local` can differ by, until `g` is the earliest instant that reads `local`.
        let reads =
            |g: i128| self.local(Instant::from_nanos(g.clamp(0, i128::from(u64::MAX)) as u64));
        let mut g = (l * 1_000_000 + rate - 1).div_euclid(rate).max(0);
        while g < i128::from(u64::MAX) && reads(g) < local {
            g += 1;
        }
        while g > 0 && reads(g - 1) >= local {
            g -= 1;
        }
        Instant::from_nanos(g.clamp(0, i128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_and_drift_round_trip() {
        for clock in [
            ClockModel::default(),
            ClockModel {
                offset_ns: 5_000_000_000,
                drift_ppm: 0,
            },
            ClockModel {
                offset_ns: -1_000,
                drift_ppm: 250,
            },
            ClockModel {
                offset_ns: 7,
                drift_ppm: -300,
            },
        ] {
            for g in [0u64, 1, 999, 1_000_000_007, 86_400_000_000_000] {
                let local = clock.local(Instant::from_nanos(g));
                let back = clock.global(local);
                // The earliest global instant at which the clock reads `local`: not after `g`,
                // and the clock does read at least `local` then.
                assert!(back.as_nanos() <= g, "{clock:?} {g}");
                assert!(clock.local(back) >= local, "{clock:?} {g}");
            }
        }
        let fast = ClockModel {
            offset_ns: 0,
            drift_ppm: 100,
        };
        assert_eq!(
            fast.local(Instant::from_millis(1_000)),
            Instant::from_nanos(1_000_100_000)
        );
    }
}
