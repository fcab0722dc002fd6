//! The `[ec2]` section's pacing of mutating EC2 calls; the token bucket
//! itself is the agent's (`vipfleet_agent::aws::pacing::Pacer`).

use std::time::Duration;

use thiserror::Error;

/// Well under EC2's refill of 5 per second: other nodes and tools share it.
pub const DEFAULT_CALLS_PER_SECOND: f64 = 2.0;
/// A fifth of EC2's bucket of 50.
pub const DEFAULT_BURST: u32 = 10;
/// The slowest pace accepted: one call an hour. Slower is a stop, not a
/// pace, and near zero the wait for a token is longer than a `Duration`
/// holds (`1e-300` passed validation once and panicked the first waiter).
pub const MIN_CALLS_PER_SECOND: f64 = 1.0 / 3600.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacerConfig {
    pub calls_per_second: f64,
    pub burst: u32,
}

impl Default for PacerConfig {
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

impl PacerConfig {
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
    /// caller that needs them waits. Saturates rather than panics.
    pub fn refill_time(&self, tokens: f64) -> Duration {
        Duration::try_from_secs_f64(tokens.max(0.0) / self.calls_per_second).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(calls_per_second: f64, burst: u32) -> PacerConfig {
        PacerConfig {
            calls_per_second,
            burst,
        }
    }

    #[test]
    fn rates_near_zero_are_refused_and_never_panic() {
        for rate in [1e-300, f64::MIN_POSITIVE, 1e-5, 0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(config(rate, 1).validate().is_err(), "{rate}");
            // Even a config that skipped validation waits, if for ever.
            let _ = config(rate, 1).refill_time(10.0);
        }
        assert_eq!(config(1e-300, 1).refill_time(1.0), Duration::MAX);
        assert_eq!(config(MIN_CALLS_PER_SECOND, 1).validate(), Ok(()));
        assert_eq!(config(MIN_CALLS_PER_SECOND, 1).refill_time(1.0).as_secs(), 3600);
        assert_eq!(config(2.0, 1).refill_time(1.0), Duration::from_millis(500));
        assert_eq!(config(2.0, 1).refill_time(-1.0), Duration::ZERO);
    }
}
