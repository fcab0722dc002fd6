//! Monotonic time as the core sees it: an offset from an origin the driver
//! picks (agent start, or zero in the simulation). The core never reads a
//! clock; every step is handed `now`.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the driver's monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instant(Duration);

impl Instant {
    pub const ZERO: Instant = Instant(Duration::ZERO);

    pub const fn from_millis(ms: u64) -> Self {
        Instant(Duration::from_millis(ms))
    }

    pub const fn from_offset(since_origin: Duration) -> Self {
        Instant(since_origin)
    }

    pub fn as_offset(&self) -> Duration {
        self.0
    }

    pub fn as_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }

    /// `self + duration`, or the last instant there is.
    pub fn saturating_add(self, duration: Duration) -> Instant {
        Instant(self.0.saturating_add(duration))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0 + rhs)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(rhs))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:.3}s", self.0.as_secs_f64())
    }
}
