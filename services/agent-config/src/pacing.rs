//! The `[ec2]` section's pacing of mutating EC2 calls; the token bucket
//! itself is the agent's (`vipfleet_agent::aws::pacing::Pacer`).

use thiserror::Error;

/// Well under EC2's refill of 5 per second: other nodes and tools share it.
pub const DEFAULT_CALLS_PER_SECOND: f64 = 2.0;
/// A fifth of EC2's bucket of 50.
pub const DEFAULT_BURST: u32 = 10;

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
    #[error("mutating_calls_per_second must be a positive number, not {0}")]
    Rate(f64),
    #[error("burst must be at least 1")]
    Burst,
}

impl PacerConfig {
    /// A rate that is a positive finite number and a burst of at least one.
    pub fn validate(&self) -> Result<(), PacingError> {
        if !(self.calls_per_second.is_finite() && self.calls_per_second > 0.0) {
            return Err(PacingError::Rate(self.calls_per_second));
        }
        if self.burst == 0 {
            return Err(PacingError::Burst);
        }
        Ok(())
    }
}
