//! Resilience helpers: a retry policy with exponential backoff and seeded jitter, and a
//! circuit breaker. Both are sans-IO: they take `now` and outcomes and return decisions; the
//! caller (a driver, or an application loop) waits and re-issues the call itself.
//!
//! They own no calls and never read a clock or an OS random source: jitter comes from a
//! [`Seed`], so a simulated run retries at the same instants every time.
//!
//! ```
//! use core::time::Duration;
//! use proto_core::rpc::resilience::{Backoff, RetryPolicy};
//! use proto_core::rpc::RpcError;
//! use proto_core::Seed;
//!
//! let mut backoff = Backoff::new(RetryPolicy::default(), &Seed::from_u64(7));
//! // A NoRoute failure is retried after a delay; a server error is not.
//! assert!(backoff.next(&RpcError::NoRoute).is_some());
//! let server = RpcError::ServerError { status: 0x8001, message: "boom".into() };
//! assert_eq!(backoff.next(&server), None);
//! ```

use core::time::Duration;

use super::RpcError;
use crate::rng::{Rng, Seed};
use crate::time::{duration_nanos, Instant};

/// When to retry a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Each retry waits this many times longer than the previous one, in eighths (16 = x2).
    pub multiplier_eighths: u32,
    /// Up to this fraction of each delay, in percent, is replaced by a random amount (full
    /// jitter at 100): spreads retries of many callers apart.
    pub jitter_percent: u32,
    /// Also retry timeouts (off by default: a timed-out call may have run).
    pub retry_timeouts: bool,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
            multiplier_eighths: 16,
            jitter_percent: 50,
            retry_timeouts: false,
        }
    }
}

impl RetryPolicy {
    /// Whether `err` is worth retrying under this policy: `NoRoute` and `Transport` (and
    /// `Timeout` with `retry_timeouts`). Server errors, codec errors, cancels and misuse never.
    #[must_use]
    pub fn retries(&self, err: &RpcError) -> bool {
        err.is_retryable() || (self.retry_timeouts && *err == RpcError::Timeout)
    }
}

/// One call's retry state: how many attempts were made and the jitter stream.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempts: u32,
    rng: Rng,
}

impl Backoff {
    /// The state before the first attempt. `seed` feeds the jitter (derive one per call).
    #[must_use]
    pub fn new(policy: RetryPolicy, seed: &Seed) -> Backoff {
        Backoff {
            policy,
            attempts: 1,
            rng: seed.rng("net/rpc-retry", 0),
        }
    }

    /// Attempts made so far (the first counts).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt: the delay before the next one, or `None` to give up (the
    /// error is not retryable, or the attempts are used up).
    pub fn next(&mut self, err: &RpcError) -> Option<Duration> {
        if !self.policy.retries(err) || self.attempts >= self.policy.max_attempts {
            return None;
        }
        let p = self.policy;
        let mut base = duration_nanos(p.initial_backoff);
        for _ in 1..self.attempts {
            base = base.saturating_mul(u64::from(p.multiplier_eighths)) / 8;
            if base >= duration_nanos(p.max_backoff) {
                break;
            }
        }
        let base = base.min(duration_nanos(p.max_backoff));
        let jitter_span = base / 100 * u64::from(p.jitter_percent.min(100));
        let delay = base - jitter_span + self.rng.below(jitter_span.saturating_add(1));
        self.attempts += 1;
        Some(Duration::from_nanos(delay))
    }
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe may pass.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When one probe may pass.
        until: Instant,
    },
    /// One probe is in flight; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// Refused by an open breaker, in [`CircuitBreaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    /// When a probe will be allowed.
    pub retry_at: Instant,
}

/// Tracks consecutive failures of a target and trips open after a threshold: while open,
/// calls are refused outright; after the cooldown one probe passes (half-open), and its
/// outcome closes the breaker or opens it again.
///
/// Only failures that say something about the target count: use
/// [`CircuitBreaker::on_result`] with the call's result, which ignores cancels and misuse.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Times the breaker opened.
    pub trips: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    #[must_use]
    pub fn new(cfg: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            cfg,
            state: BreakerState::Closed { failures: 0 },
            trips: 0,
        }
    }

    /// The current state (an open breaker whose cooldown passed still reads `Open` until
    /// `try_acquire` lets its probe through).
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call at `now`. Closed: yes. Open: no, until the cooldown passes; then
    /// the breaker goes half-open and this call is the probe. Half-open: no (a probe is out).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), BreakerOpen> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until } => Err(BreakerOpen { retry_at: until }),
            BreakerState::HalfOpen => Err(BreakerOpen { retry_at: now }),
        }
    }

    /// A call that was let through succeeded.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// A call that was let through failed at `now`.
    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.cfg.failure_threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => {
                self.trips += 1;
                BreakerState::Open {
                    until: now.saturating_add(self.cfg.cooldown),
                }
            }
        };
    }

    /// Feeds a call's result: success closes, a failure of the target (anything but a
    /// cancel or a caller's mistake) counts; cancels and misuse leave the state alone, except
    /// that a half-open probe that was cancelled lets the next call probe instead.
    pub fn on_result<T>(&mut self, now: Instant, result: &Result<T, RpcError>) {
        match result {
            Ok(_) => self.on_success(),
            Err(RpcError::Cancelled | RpcError::Invalid(_)) => {
                if self.state == BreakerState::HalfOpen {
                    self.state = BreakerState::Open { until: now };
                }
            }
            Err(_) => self.on_failure(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::TransportError;

    #[test]
    fn backoff_grows_caps_and_stops() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            jitter_percent: 0,
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(policy, &Seed::from_u64(1));
        let err = RpcError::Transport(TransportError::Protocol);
        let delays: alloc::vec::Vec<_> = core::iter::from_fn(|| b.next(&err)).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(delays, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
        assert_eq!(b.attempts(), 6);
        let mut b = Backoff::new(policy, &Seed::from_u64(1));
        assert_eq!(b.next(&RpcError::Timeout), None, "timeouts are not retried");
        assert_eq!(b.next(&RpcError::Cancelled), None);
        let with_timeouts = RetryPolicy {
            retry_timeouts: true,
            ..policy
        };
        assert!(Backoff::new(with_timeouts, &Seed::from_u64(1))
            .next(&RpcError::Timeout)
            .is_some());
    }

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let policy = RetryPolicy {
            jitter_percent: 100,
            max_attempts: 50,
            ..RetryPolicy::default()
        };
        let run = |seed| {
            let mut b = Backoff::new(policy, &Seed::from_u64(seed));
            core::iter::from_fn(|| b.next(&RpcError::NoRoute)).collect::<alloc::vec::Vec<_>>()
        };
        assert_eq!(run(3), run(3), "same seed, same delays");
        assert_ne!(run(3), run(4));
        assert!(run(3).iter().all(|d| *d <= policy.max_backoff));
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let t = |ms| Instant::from_millis(ms);
        let mut br = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_millis(100),
        });
        let fail: Result<(), RpcError> = Err(RpcError::NoRoute);
        for i in 0..2 {
            assert!(br.try_acquire(t(i)).is_ok());
            br.on_result(t(i), &fail);
        }
        assert_eq!(br.state(), BreakerState::Closed { failures: 2 });
        br.on_result(t(2), &fail);
        assert_eq!(br.state(), BreakerState::Open { until: t(102) });
        assert_eq!(br.trips, 1);
        assert_eq!(br.try_acquire(t(50)), Err(BreakerOpen { retry_at: t(102) }));
        // The cooldown passes: one probe, and nobody else while it is out.
        assert!(br.try_acquire(t(102)).is_ok());
        assert_eq!(br.state(), BreakerState::HalfOpen);
        assert!(br.try_acquire(t(103)).is_err());
        // The probe fails: open again for another cooldown.
        br.on_result(t(110), &fail);
        assert_eq!(br.state(), BreakerState::Open { until: t(210) });
        assert_eq!(br.trips, 2);
        // The next probe succeeds: closed, failures forgotten.
        assert!(br.try_acquire(t(210)).is_ok());
        br.on_result(t(211), &Ok::<(), RpcError>(()));
        assert_eq!(br.state(), BreakerState::Closed { failures: 0 });
        // Cancels do not count.
        for i in 0..10 {
            br.on_result(t(300 + i), &Err::<(), _>(RpcError::Cancelled));
        }
        assert_eq!(br.state(), BreakerState::Closed { failures: 0 });
    }
}
