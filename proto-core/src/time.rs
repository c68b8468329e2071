//! Time as the core sees it: a plain integer that the caller supplies.
//!
//! This module owns [`Instant`], the core's only notion of "now", and the [`Clock`] guard that
//! keeps it monotonic. It never reads a clock: drivers map their own clock (tokio's, smol's,
//! the simulator's virtual one) onto nanoseconds since an origin of their choosing.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in nanoseconds since an origin chosen by the driver.
///
/// It has no relation to wall-clock time: only differences between two `Instant`s from the same
/// driver mean anything. Arithmetic saturates instead of overflowing, so no input can make it
/// panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);
    /// The largest representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// An instant `micros` microseconds after the origin (saturating).
    #[must_use]
    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros.saturating_mul(1_000))
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at [`Instant::ZERO`].
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_nanos(d)))
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
#[must_use]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        self.saturating_sub(rhs)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        write!(f, "Instant({secs}.{nanos:09}s)")
    }
}

/// Keeps the core's view of time monotonic.
///
/// Every input carries a `now`. If a driver hands in a `now` earlier than one it handed in
/// before (a clock step, a buggy mapping), the clock clamps it to the latest value seen and
/// counts the event; it never panics and never moves backwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    latest: Instant,
    backwards: u64,
}

impl Clock {
    /// A clock that has seen `start`.
    #[must_use]
    pub fn new(start: Instant) -> Clock {
        Clock {
            latest: start,
            backwards: 0,
        }
    }

    /// Accepts a caller's `now` and returns the monotonic time to use.
    pub fn observe(&mut self, now: Instant) -> Instant {
        if now < self.latest {
            self.backwards = self.backwards.saturating_add(1);
        } else {
            self.latest = now;
        }
        self.latest
    }

    /// The latest instant seen.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.latest
    }

    /// How many times time was seen going backwards (and was clamped).
    #[must_use]
    pub fn backwards_count(&self) -> u64 {
        self.backwards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            Instant::from_millis(5) - Instant::from_millis(7),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_millis(7) - Instant::from_millis(5),
            Duration::from_millis(2)
        );
        assert_eq!(Instant::from_micros(3).as_nanos(), 3_000);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
    }

    #[test]
    fn clock_clamps_and_counts_backwards_time() {
        let mut c = Clock::new(Instant::from_millis(10));
        assert_eq!(
            c.observe(Instant::from_millis(12)),
            Instant::from_millis(12)
        );
        assert_eq!(
            c.observe(Instant::from_millis(11)),
            Instant::from_millis(12)
        );
        assert_eq!(c.backwards_count(), 1);
        assert_eq!(
            c.observe(Instant::from_millis(12)),
            Instant::from_millis(12)
        );
        assert_eq!(c.backwards_count(), 1);
        assert_eq!(c.now(), Instant::from_millis(12));
    }

    #[test]
    fn debug_prints_seconds() {
        assert_eq!(
            alloc::format!("{:?}", Instant::from_millis(1_500)),
            "Instant(1.500000000s)"
        );
    }
}
