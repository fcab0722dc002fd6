//! Exponential backoff with jitter, for calls that keep failing: reads of a
//! store in an outage, route writes that EC2 throttles or refuses.
//!
//! The jitter is deterministic: it comes from a seed the caller passes (the
//! node's incarnation, mixed with what the retry is for) and the number of
//! failures, never from a clock or a global RNG, so a simulation replays it
//! exactly while nodes of a fleet still spread out.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failures in a row that wait only `base` before the waits grow.
    grace: u32,
    failures: u32,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            grace: 0,
            failures: 0,
        }
    }

    /// A backoff that only grows after `grace` failures in a row: for
    /// calls that fail now and then as a matter of course, where waiting
    /// longer would cost more than the calls.
    pub const fn with_grace(base: Duration, cap: Duration, grace: u32) -> Self {
        Self {
            base,
            cap,
            grace,
            failures: 0,
        }
    }

    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// A failure that asks us to slow down (the store throttled the call):
    /// the waits grow from this one on, past any grace. The grace is for
    /// calls that fail now and then; a throttled fleet that kept retrying
    /// at the base pace would keep the limit it hit.
    pub fn throttled(&mut self) {
        self.failures = self.failures.max(self.grace).saturating_add(1);
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait before the next attempt: zero after a success; `base`
    /// while the failures are within the grace; then `base × 2^k` for the
    /// k-th failure past it, at most `cap`, of which a random share between
    /// half and all ("equal jitter": never a burst of retries at once,
    /// never much faster than the schedule).
    pub fn delay(&self, seed: u64) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        if self.failures <= self.grace {
            return self.base;
        }
        let doublings = (self.failures - self.grace - 1).min(30);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.cap);
        let share = splitmix64(seed ^ u64::from(self.failures)) as f64 / u64::MAX as f64;
        full.mul_f64(0.5 + share / 2.0)
    }
}

/// A well-mixed 64-bit hash (Steele, Lea and Flood's SplitMix64 finalizer).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(3);

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_between_half_and_all() {
        let mut b = Backoff::new(BASE, CAP);
        assert_eq!(b.delay(7), Duration::ZERO, "no failure, no wait");
        for failures in 1..=10u32 {
            b.failed();
            let full = (BASE * 2u32.pow(failures - 1)).min(CAP);
            let d = b.delay(7);
            assert!(
                d >= full / 2 && d <= full,
                "{failures} failures: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
        b.succeeded();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.delay(7), Duration::ZERO);
    }

    #[test]
    fn a_grace_keeps_the_first_failures_at_the_base() {
        let mut b = Backoff::with_grace(BASE, CAP, 3);
        for _ in 0..3 {
            b.failed();
            assert_eq!(b.delay(1), BASE);
        }
        b.failed();
        let d = b.delay(1);
        assert!(d >= BASE / 2 && d <= BASE, "{d:?}");
        b.failed();
        assert!(b.delay(1) > BASE);
    }

    #[test]
    fn a_throttle_backs_off_at_once_past_the_grace() {
        let mut b = Backoff::with_grace(BASE, CAP, 3);
        b.failed();
        assert_eq!(b.delay(1), BASE, "an ordinary failure is within the grace");
        b.throttled();
        let first = b.delay(1);
        assert!(first >= BASE / 2 && first <= BASE, "{first:?}");
        b.throttled();
        let second = b.delay(1);
        assert!(second > BASE && second <= BASE * 2, "{second:?}");
        b.failed();
        assert!(b.delay(1) > BASE * 2, "growing on, whatever the next failure was");
    }

    #[test]
    fn the_same_seed_replays_and_different_seeds_spread() {
        let mut b = Backoff::new(BASE, CAP);
        b.failed();
        b.failed();
        assert_eq!(b.delay(42), b.delay(42));
        let delays: std::collections::BTreeSet<Duration> = (0..20).map(|seed| b.delay(seed)).collect();
        assert!(delays.len() > 15, "20 nodes should not retry in lockstep: {delays:?}");
    }
}
