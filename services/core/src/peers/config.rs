//! The detector's timings, their defaults, and the rules they must obey.

use std::time::Duration;

use thiserror::Error;

/// How often a detector starts probe rounds.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a direct ping waits for its ack before others are asked to help.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the indirect phase of a round lasts.
pub const DEFAULT_INDIRECT_TIMEOUT: Duration = Duration::from_millis(100);
/// Failed rounds in a row (each with a nack) that make a suspect dead.
pub const DEFAULT_CONFIRM_ROUNDS: u32 = 2;

/// Members probed every interval: in fleets of up to four nodes, everyone
/// probes everyone every interval.
pub const PROBES_PER_INTERVAL: usize = 3;
/// Members asked to ping a target that missed its direct ack.
pub const INDIRECT_FANOUT: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub probe_interval: Duration,
    pub ack_timeout: Duration,
    pub indirect_timeout: Duration,
    pub confirm_rounds: u32,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            probe_interval: DEFAULT_PROBE_INTERVAL,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            indirect_timeout: DEFAULT_INDIRECT_TIMEOUT,
            confirm_rounds: DEFAULT_CONFIRM_ROUNDS,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeerConfigError {
    #[error("{name} must be above zero")]
    Zero { name: &'static str },
    #[error(
        "ack_timeout ({ack_timeout:?}) must be below indirect_timeout ({indirect_timeout:?}): \
         an intermediary's nack comes an ack_timeout after it was asked, and must arrive in time"
    )]
    AckNotBelowIndirect {
        ack_timeout: Duration,
        indirect_timeout: Duration,
    },
    #[error("confirm_rounds must be at least 1")]
    NoConfirmRounds,
}

impl PeerConfig {
    pub fn validate(&self) -> Result<(), PeerConfigError> {
        for (name, value) in [
            ("probe_interval", self.probe_interval),
            ("ack_timeout", self.ack_timeout),
            ("indirect_timeout", self.indirect_timeout),
        ] {
            if value.is_zero() {
                return Err(PeerConfigError::Zero { name });
            }
        }
        if self.ack_timeout >= self.indirect_timeout {
            return Err(PeerConfigError::AckNotBelowIndirect {
                ack_timeout: self.ack_timeout,
                indirect_timeout: self.indirect_timeout,
            });
        }
        if self.confirm_rounds == 0 {
            return Err(PeerConfigError::NoConfirmRounds);
        }
        Ok(())
    }

    /// Worst case from a crash to `Dead`, when someone probes the crashed
    /// member in the first interval after it: the wait for that interval,
    /// then `confirm_rounds` back-to-back failed rounds. (In fleets above
    /// `PROBES_PER_INTERVAL + 1` nodes, nobody may happen to probe it in
    /// that interval; see the module header.)
    pub fn detection_bound(&self) -> Duration {
        self.probe_interval + (self.ack_timeout + self.indirect_timeout) * self.confirm_rounds
    }

    /// One round, from its first ping to its verdict when nobody answers.
    pub fn round_duration(&self) -> Duration {
        self.ack_timeout + self.indirect_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bound_detection_at_400_ms() {
        let c = PeerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.detection_bound(), Duration::from_millis(400));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let ok = PeerConfig::default();
        for (name, c) in [
            (
                "probe_interval",
                PeerConfig {
                    probe_interval: Duration::ZERO,
                    ..ok
                },
            ),
            (
                "ack_timeout",
                PeerConfig {
                    ack_timeout: Duration::ZERO,
                    ..ok
                },
            ),
            (
                "indirect_timeout",
                PeerConfig {
                    indirect_timeout: Duration::ZERO,
                    ..ok
                },
            ),
        ] {
            assert_eq!(c.validate(), Err(PeerConfigError::Zero { name }));
        }
        let equal = PeerConfig {
            ack_timeout: ok.indirect_timeout,
            ..ok
        };
        assert!(matches!(
            equal.validate(),
            Err(PeerConfigError::AckNotBelowIndirect { .. })
        ));
        let longer = PeerConfig {
            ack_timeout: ok.indirect_timeout * 2,
            ..ok
        };
        assert!(matches!(
            longer.validate(),
            Err(PeerConfigError::AckNotBelowIndirect { .. })
        ));
        let none = PeerConfig {
            confirm_rounds: 0,
            ..ok
        };
        assert_eq!(none.validate(), Err(PeerConfigError::NoConfirmRounds));
    }
}
