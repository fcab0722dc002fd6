//! Lease timing: the two profiles and the rules that make a set
//! of timings workable.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The timings of the lease protocol. Configuration, not code: both profiles
/// are presets of this struct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// How often a node bumps its heartbeat counter.
    pub heartbeat_interval: Duration,
    /// How long an observer waits for a counter to move before it calls the
    /// node expired.
    pub lease_ttl: Duration,
    /// How often each node reads the node items (with `cold_reads`: while
    /// the fleet is unsettled: a node joined, left or died, shards move).
    pub scan_interval: Duration,
    /// Whether a settled node stops reading the table and only watches
    /// (see `machine::pace`): what makes the `CHEAP` profile cheap.
    pub cold_reads: bool,
    /// How often a settled node reads the fleet's change counter and the
    /// item of the node it watches (two small items).
    pub watch_interval: Duration,
    /// How often a settled node reads the whole table anyway (longer for a
    /// table of many 4 KB blocks, so that each node's share of the bill
    /// stays the same whatever the fleet's size): catches hand edits no
    /// node announced.
    pub cold_refresh_interval: Duration,
    /// How often each owner reads its routes back and repairs them.
    pub reconcile_interval: Duration,
    /// How often an unsettled node re-reads the shard items when nothing
    /// else asks for it.
    pub shard_refresh_interval: Duration,
    /// Share of `lease_ttl`, in percent, by which a node's own write deadline
    /// falls short of what observers allow it (covers clock-rate drift).
    pub safety_margin_percent: u32,
    /// Hand-offs (rebalancing and drain) a node keeps in flight at once.
    pub max_handoffs_in_flight: usize,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LeaseConfigError {
    #[error("{name} must be above zero")]
    Zero { name: &'static str },
    #[error(
        "heartbeat_interval ({heartbeat:?}) plus a heartbeat's timeout (one interval) must fit in \
         the own lease ({own_lease:?}: lease_ttl less the safety margin), or one slow heartbeat \
         lapses a healthy node's lease"
    )]
    HeartbeatTooSlowForLease { heartbeat: Duration, own_lease: Duration },
    #[error(
        "scan_interval ({scan:?}) must be under half of lease_ttl ({ttl:?}), \
         or expiry is noticed too late to be useful"
    )]
    ScanTooSlow { scan: Duration, ttl: Duration },
    #[error("lease_ttl ({0:?}) must be at most {MAX_LEASE_TTL:?}")]
    TtlTooLong(Duration),
    #[error("safety_margin_percent ({0}) must be between 1 and 50")]
    Margin(u32),
    #[error("max_handoffs_in_flight must be at least 1")]
    NoHandoffs,
}

/// The longest lease any node may run with, or claim to in its item: peers
/// hold a longer announced TTL to this, so an item edited by hand (or a bad
/// value) cannot keep a dead node's shards waiting for ever.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl LeaseConfig {
    /// What a node runs unless configured otherwise: the cheap profile.
    /// Peer probes find a crash in well under a second whatever the lease.
    pub const DEFAULT: LeaseConfig = LeaseConfig::CHEAP;

    /// One write per node per second; every node scans the table four
    /// times a second: about $38 a month for 10 nodes and 64 VIPs. Without
    /// peer probes a crashed node's VIPs move in ~3.3 s.
    pub const HOT: LeaseConfig = LeaseConfig {
        heartbeat_interval: Duration::from_millis(1000),
        lease_ttl: Duration::from_millis(3000),
        scan_interval: Duration::from_millis(250),
        cold_reads: false,
        watch_interval: Duration::from_secs(1),
        cold_refresh_interval: Duration::from_secs(60),
        reconcile_interval: Duration::from_secs(10),
        shard_refresh_interval: Duration::from_secs(5),
        safety_margin_percent: 10,
        max_handoffs_in_flight: 2,
    };

    /// Five writes per node per second; without peer probes VIPs move in
    /// ~1.1 s.
    pub const FAST: LeaseConfig = LeaseConfig {
        heartbeat_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_millis(1000),
        scan_interval: Duration::from_millis(100),
        cold_reads: false,
        watch_interval: Duration::from_secs(1),
        cold_refresh_interval: Duration::from_secs(30),
        reconcile_interval: Duration::from_secs(5),
        shard_refresh_interval: Duration::from_secs(2),
        safety_margin_percent: 10,
        max_handoffs_in_flight: 2,
    };

    /// One write per node every 5 s, and a settled fleet reads only small
    /// items (cold reads): about $4 a month for 10 nodes and 64 VIPs.
    /// Peer probes find a crashed node; the lease only bounds how long a
    /// node cut off from DynamoDB keeps writing routes.
    pub const CHEAP: LeaseConfig = LeaseConfig {
        heartbeat_interval: Duration::from_secs(5),
        lease_ttl: Duration::from_secs(15),
        scan_interval: Duration::from_millis(250),
        cold_reads: true,
        watch_interval: Duration::from_secs(5),
        cold_refresh_interval: Duration::from_secs(60),
        reconcile_interval: Duration::from_secs(10),
        shard_refresh_interval: Duration::from_secs(5),
        safety_margin_percent: 10,
        max_handoffs_in_flight: 2,
    };

    /// How long a node may keep writing routes after the send time of its
    /// last successful heartbeat.
    pub fn own_lease(&self) -> Duration {
        self.lease_ttl - self.safety_margin()
    }

    /// Longest a heartbeat call may take: one interval, so that a stalled
    /// call never holds up the next heartbeat.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Longest any other store call may take. Reads overlap rather than
    /// wait for a slow one, so this bounds how many are in flight, not how
    /// often the node looks.
    pub fn store_call_timeout(&self) -> Duration {
        self.lease_ttl / 2
    }

    pub fn safety_margin(&self) -> Duration {
        self.lease_ttl * self.safety_margin_percent / 100
    }

    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        for (name, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("lease_ttl", self.lease_ttl),
            ("scan_interval", self.scan_interval),
            ("watch_interval", self.watch_interval),
            ("cold_refresh_interval", self.cold_refresh_interval),
            ("reconcile_interval", self.reconcile_interval),
            ("shard_refresh_interval", self.shard_refresh_interval),
        ] {
            if value.is_zero() {
                return Err(LeaseConfigError::Zero { name });
            }
        }
        if self.lease_ttl > MAX_LEASE_TTL {
            return Err(LeaseConfigError::TtlTooLong(self.lease_ttl));
        }
        // A heartbeat that answers just within its timeout must still land
        // before the lease of the one before it runs out.
        if self.heartbeat_interval + self.heartbeat_timeout() > self.own_lease() {
            return Err(LeaseConfigError::HeartbeatTooSlowForLease {
                heartbeat: self.heartbeat_interval,
                own_lease: self.own_lease(),
            });
        }
        if self.scan_interval * 2 > self.lease_ttl {
            return Err(LeaseConfigError::ScanTooSlow {
                scan: self.scan_interval,
                ttl: self.lease_ttl,
            });
        }
        if !(1..=50).contains(&self.safety_margin_percent) {
            return Err(LeaseConfigError::Margin(self.safety_margin_percent));
        }
        if self.max_handoffs_in_flight == 0 {
            return Err(LeaseConfigError::NoHandoffs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_are_valid() {
        assert_eq!(LeaseConfig::HOT.validate(), Ok(()));
        assert_eq!(LeaseConfig::FAST.validate(), Ok(()));
        assert_eq!(LeaseConfig::CHEAP.validate(), Ok(()));
        assert_eq!(LeaseConfig::HOT.own_lease(), Duration::from_millis(2700));
    }

    #[test]
    fn unworkable_timings_are_rejected() {
        let mut c = LeaseConfig::HOT;
        c.lease_ttl = Duration::from_millis(1500);
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::HeartbeatTooSlowForLease { .. })
        ));
        // Twice the interval fits in the TTL, but not in the own lease.
        let mut c = LeaseConfig::HOT;
        c.lease_ttl = Duration::from_millis(2100);
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::HeartbeatTooSlowForLease { .. })
        ));
        let mut c = LeaseConfig::HOT;
        c.scan_interval = Duration::from_secs(2);
        assert!(matches!(c.validate(), Err(LeaseConfigError::ScanTooSlow { .. })));
        let mut c = LeaseConfig::HOT;
        c.heartbeat_interval = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(LeaseConfigError::Zero {
                name: "heartbeat_interval"
            })
        );
        let mut c = LeaseConfig::HOT;
        c.lease_ttl = MAX_LEASE_TTL + Duration::from_millis(1);
        c.heartbeat_interval = Duration::from_secs(60);
        assert_eq!(c.validate(), Err(LeaseConfigError::TtlTooLong(c.lease_ttl)));
        let mut c = LeaseConfig::HOT;
        c.safety_margin_percent = 0;
        assert_eq!(c.validate(), Err(LeaseConfigError::Margin(0)));
    }
}
