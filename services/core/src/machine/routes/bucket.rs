//! Client-side pacing of mutating EC2 calls: a token bucket on the
//! machine's clock.
//!
//! Why: EC2 throttles mutating calls per account and region (a bucket of
//! 50, refilled at 5 per second, shared by every node and every other tool
//! in the account). A node that inherits many routes at once must stay
//! well inside that. The machine spends tokens in priority order, so the
//! writes that restore traffic go before those that merely tidy up.

use std::time::Duration;

use thiserror::Error;

use crate::time::Instant;

/// Well under EC2's refill of 5 per second: other nodes and tools share it.
pub const DEFAULT_CALLS_PER_SECOND: f64 = 2.0;
/// A fifth of EC2's bucket of 50.
pub const DEFAULT_BURST: u32 = 10;
/// The slowest pace accepted: one call an hour. Slower is a stop, not a
/// pace, and near zero the wait for a token is longer than a `Duration`
/// holds (`1e-300` passed validation once and panicked the first waiter).
pub const MIN_CALLS_PER_SECOND: f64 = 1.0 / 3600.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    pub calls_per_second: f64,
    pub burst: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            calls_per_second: DEFAULT_CALLS_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum PacingError {
    #[error(
        "mutating_calls_per_second must be a number of at least {MIN_CALLS_PER_SECOND:.6} (one call an hour), not {0}"
    )]
    Rate(f64),
    #[error("burst must be at least 1")]
    Burst,
}

impl Pacing {
    /// A finite rate of at least [`MIN_CALLS_PER_SECOND`] and a burst of at
    /// least one.
    pub fn validate(&self) -> Result<(), PacingError> {
        if !(self.calls_per_second.is_finite() && self.calls_per_second >= MIN_CALLS_PER_SECOND) {
            return Err(PacingError::Rate(self.calls_per_second));
        }
        if self.burst == 0 {
            return Err(PacingError::Burst);
        }
        Ok(())
    }

    /// How long the bucket takes to refill `tokens` at this rate: what a
    /// caller that needs them waits. Saturates rather than panics, even for
    /// a pace that skipped validation.
    pub fn refill_time(&self, tokens: f64) -> Duration {
        Duration::try_from_secs_f64(tokens.max(0.0) / self.calls_per_second).unwrap_or(Duration::MAX)
    }
}

/// A token bucket, full at start.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    pacing: Pacing,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    pub(crate) fn new(pacing: Pacing, now: Instant) -> Self {
        Self {
            pacing,
            tokens: f64::from(pacing.burst),
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.pacing.calls_per_second).min(f64::from(self.pacing.burst));
        self.refilled_at = self.refilled_at.max(now);
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // Float rounding must not leave a token a hair short for ever.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens now (for metrics): from 0 to `burst`.
    pub(crate) fn level(&self, now: Instant) -> f64 {
        let mut copy = self.clone();
        copy.refill(now);
        copy.tokens
    }

    /// When the next token will be there.
    pub(crate) fn next_token_at(&self, now: Instant) -> Instant {
        let missing = 1.0 - self.level(now);
        now.saturating_add(
            self.pacing
                .refill_time(missing)
                .saturating_add(Duration::from_millis(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let pacing = Pacing {
            calls_per_second: 2.0,
            burst: 3,
        };
        let t0 = Instant::from_millis(1000);
        let mut b = Bucket::new(pacing, t0);
        assert!((0..3).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0));
        let next = b.next_token_at(t0);
        assert!(next >= t0 + Duration::from_millis(500) && next <= t0 + Duration::from_millis(502));
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(next));
        // Idle for long: full again, never more.
        let later = t0 + Duration::from_secs(60);
        assert!((b.level(later) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |calls_per_second, burst| {
            Pacing {
                calls_per_second,
                burst,
            }
            .validate()
        };
        assert_eq!(bad(0.0, 1), Err(PacingError::Rate(0.0)));
        assert!(bad(f64::NAN, 1).is_err());
        assert_eq!(bad(1.0, 0), Err(PacingError::Burst));
        assert_eq!(bad(1.0, 1), Ok(()));
    }

    #[test]
    fn rates_near_zero_are_refused_and_never_panic() {
        let pacing = |calls_per_second| Pacing {
            calls_per_second,
            burst: 1,
        };
        for rate in [1e-300, f64::MIN_POSITIVE, 1e-5, 0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(pacing(rate).validate().is_err(), "{rate}");
            // Even a pace that skipped validation waits, if for ever.
            let _ = pacing(rate).refill_time(10.0);
        }
        assert_eq!(pacing(1e-300).refill_time(1.0), Duration::MAX);
        assert_eq!(pacing(MIN_CALLS_PER_SECOND).validate(), Ok(()));
        assert_eq!(pacing(MIN_CALLS_PER_SECOND).refill_time(1.0).as_secs(), 3600);
        assert_eq!(pacing(2.0).refill_time(1.0), Duration::from_millis(500));
        assert_eq!(pacing(2.0).refill_time(-1.0), Duration::ZERO);
        let mut bucket = Bucket::new(pacing(1e-300), Instant::ZERO);
        assert!(bucket.take(Instant::ZERO));
        assert!(bucket.next_token_at(Instant::ZERO) > Instant::from_millis(1_000_000_000));
    }
}
