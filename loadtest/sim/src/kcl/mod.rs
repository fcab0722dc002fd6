//! A baseline for the scale scenarios: the same fleet run the way the
//! Kinesis Client Library (KCL) runs its workers, one lease per shard, with
//! KCL's published defaults (issue 13).
//!
//! Where the model comes from (KCL 1.x `LeaseCoordinator`, `LeaseTaker`,
//! `LeaseRenewer`; 2.x `DynamoDBLeaseCoordinator`, `DynamoDBLeaseTaker`,
//! `DynamoDBLeaseRenewer`, `LeaseManagementConfig`; the same rules in both):
//!
//! - **One item per shard**: `leaseKey`, `leaseOwner`, `leaseCounter`,
//!   `ownerSwitchesSinceCheckpoint`, `checkpoint`,
//!   `checkpointSubSequenceNumber` ([`lease_item_bytes`]), billed by the
//!   core's item-size rules (`vipfleet_core::units`).
//! - **Renewer**: every [`RENEW_INTERVAL`] (`failoverTimeMillis / 3 -
//!   epsilonMillis`, at a fixed rate) each worker renews every lease it
//!   holds, one conditional `UpdateItem` each (`leaseCounter` and
//!   `leaseOwner` as it last saw them; the counter goes up by one). A
//!   renewal whose condition fails loses the lease. The renewals go out in
//!   parallel (KCL's pool has 20 threads; a worker holds about 10 here).
//! - **Taker**: every [`TAKER_INTERVAL`] (`(failoverTimeMillis +
//!   epsilonMillis) × 2`, with a fixed delay: the next run starts that long
//!   after this one ended) each worker lists the whole table (a Scan,
//!   eventually consistent, in 1 MB pages), and runs [`taker::plan`]: take
//!   expired leases up to `ceil(leases / workers)`, or else steal at most
//!   [`MAX_LEASES_TO_STEAL_AT_ONE_TIME`] from the most loaded worker. Takes
//!   are conditional `UpdateItem`s, one after another.
//! - **Expiry**: a taker holds a lease expired when its counter has not
//!   changed for [`FAILOVER_TIME`] as this taker saw it: the counter it
//!   last changed at is stamped with the time of the first Scan that showed
//!   it. As the taker scans every 20 s, more than the failover time, that
//!   is exactly "the counter is the one the previous Scan showed": what the
//!   model checks (a lease first seen by a taker is fresh).
//! - **The application**: a taken lease starts its shard's consumer at the
//!   scheduler's next poll ([`DISPATCH_POLL_INTERVAL`]); its start writes
//!   the VIP's route to the worker's ENI in every route table (the
//!   `/32 -> ENI` write vipfleet makes). We count no further consumer state
//!   transitions: the baseline is given the fastest start KCL allows.
//!
//! The rest is the core simulation's, reused: store latencies drawn by
//! [`vipfleet_core::sim::leg`] from the same `SimConfig`, the account's EC2
//! bucket for mutating calls (50, refilled at 5 a second), the SDK's three
//! attempts with jittered backoff, the fault schedule ([`ScaleRun::config`]
//! builds it) and the core's `Report`, so that [`crate::scale`] measures
//! both systems with the same code, with the same route propagation
//! ([`crate::scale::ROUTE_PROPAGATION`]). DynamoDB's throughput limits
//! (`vipfleet_core::sim::StoreThroughput`) bind vipfleet's fleet only: the
//! baseline's store takes whatever it is sent.
//!
//! Not modelled, as they play no part in these scenarios: checkpoints (no
//! stream records), shard sync and lease creation (the leases exist),
//! graceful lease hand-off (KCL 3), store faults. The fleet starts as KCL
//! settles: leases spread evenly, routes written, and the account's bucket
//! limiting from `SimConfig::bucket_from` (the rest window), full, as for
//! vipfleet's formed start; a drained worker simply stops, and its leases
//! expire.
//!
//! [`ScaleRun::config`]: crate::scale::ScaleRun::config

pub mod taker;
mod world;

use std::time::Duration;

use vipfleet_core::cost::UnitsPerSecond;
use vipfleet_core::sim::{ACCOUNT_BURST, ACCOUNT_REFILL_PER_SECOND};
use vipfleet_core::units::{self, Consistency};

pub use world::run;

/// `failoverTimeMillis`: a lease whose counter stood still this long is
/// expired.
pub const FAILOVER_TIME: Duration = Duration::from_millis(10_000);
/// `epsilonMillis`: slack in KCL's interval arithmetic.
pub const EPSILON: Duration = Duration::from_millis(25);
/// `failoverTimeMillis / 3 - epsilonMillis` = 3,308 ms.
pub const RENEW_INTERVAL: Duration = Duration::from_millis(10_000 / 3 - 25);
/// `(failoverTimeMillis + epsilonMillis) × 2` = 20,050 ms.
pub const TAKER_INTERVAL: Duration = Duration::from_millis((10_000 + 25) * 2);
/// `maxLeasesToStealAtOneTime`.
pub const MAX_LEASES_TO_STEAL_AT_ONE_TIME: usize = 1;
/// How often KCL's scheduler looks for new leases to start consumers for
/// (`shardConsumerDispatchPollIntervalMillis` in 2.x; the worker loop's
/// idle time in 1.x).
pub const DISPATCH_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A route call whose SDK attempts were all throttled is made again this
/// long after (the application's own retry).
pub const ROUTE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// From the balanced start until the rest window: every taker has scanned
/// twice, so each knows every counter.
pub const STARTUP: Duration = Duration::from_secs(60);
/// The most bytes one Scan page reads.
pub const SCAN_PAGE_BYTES: u64 = 1 << 20;
/// The profile name reports give the baseline.
pub const PROFILE: &str = "kcl-defaults";

/// A worker id as KCL applications commonly set it (the instance id).
const WORKER_ID: &str = "i-0123456789abcdef0";
/// A Kinesis sequence number as KCL checkpoints it (56 digits).
const CHECKPOINT_DIGITS: u64 = 56;

/// The size of a lease item: `leaseKey` (the VIP, as vipfleet keys its
/// shard items), `leaseOwner`, `leaseCounter`, `ownerSwitchesSinceCheckpoint`,
/// `checkpoint`, `checkpointSubSequenceNumber`.
pub fn lease_item_bytes(vip: &str, counter: u64, owner_switches: u64) -> u64 {
    units::string_bytes("leaseKey", &vip)
        + units::string_bytes("leaseOwner", &WORKER_ID)
        + units::number_bytes("leaseCounter", counter)
        + units::number_bytes("ownerSwitchesSinceCheckpoint", owner_switches)
        + "checkpoint".len() as u64
        + CHECKPOINT_DIGITS
        + units::number_bytes("checkpointSubSequenceNumber", 0)
}

/// One Scan of a table of `bytes`: its pages (calls) and its read
/// half-units, billed page by page (eventually consistent, as KCL scans).
pub fn scan_half_units(bytes: u64) -> (u64, u64) {
    let pages = bytes.div_ceil(SCAN_PAGE_BYTES).max(1);
    let full = bytes / SCAN_PAGE_BYTES;
    let rest = bytes % SCAN_PAGE_BYTES;
    let mut half = full * units::read_half_units(SCAN_PAGE_BYTES, Consistency::Eventual);
    if rest > 0 || full == 0 {
        half += units::read_half_units(rest, Consistency::Eventual);
    }
    (pages, half)
}

/// A typical lease item (a counter of 6 digits, a few owner switches).
fn typical_item_bytes() -> u64 {
    lease_item_bytes("10.200.100.123/32", 123_456, 12)
}

/// Write units per second of the renewals alone: every lease, once per
/// [`RENEW_INTERVAL`].
pub fn renew_write_units_per_s(shards: usize) -> f64 {
    shards as f64 * units::write_units(typical_item_bytes(), false) as f64 / RENEW_INTERVAL.as_secs_f64()
}

/// Units per second at rest: the renewals, and every worker's Scan of the
/// whole table once per [`TAKER_INTERVAL`].
pub fn at_rest(nodes: usize, shards: usize) -> UnitsPerSecond {
    let (_, half) = scan_half_units(shards as u64 * typical_item_bytes());
    UnitsPerSecond {
        read: nodes as f64 * half as f64 / 2.0 / TAKER_INTERVAL.as_secs_f64(),
        write: renew_write_units_per_s(shards),
    }
}

/// From a crash until a taker takes its leases, when no take of them is
/// lost to a race (a loser tries again a taker run later): the first Scan
/// after the last renewal shows the new counter, the next one (a taker
/// interval later, plus a Scan and the takes before it) finds it unchanged.
/// Then the consumer starts at the next poll. Not a promise: the report
/// shows it beside the measured times.
pub fn detection_bound() -> Duration {
    TAKER_INTERVAL * 2 + RENEW_INTERVAL + DISPATCH_POLL_INTERVAL
}

/// How long the account's bucket holds back `calls` mutating calls.
pub fn bucket_time(calls: usize) -> Duration {
    Duration::from_secs_f64((calls as f64 - ACCOUNT_BURST).max(0.0) / ACCOUNT_REFILL_PER_SECOND)
}

/// Until a fleet whose share per worker is `share` leases settles after an
/// event: newcomers steal one lease per taker run, the lost leases take two
/// runs to look expired, takers that lose a race try again a run later.
pub fn settle_bound(share: usize) -> Duration {
    (TAKER_INTERVAL + Duration::from_secs(1)) * (share as u32 + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcl_intervals_are_its_published_defaults() {
        assert_eq!(RENEW_INTERVAL, Duration::from_millis(3308));
        assert_eq!(TAKER_INTERVAL, Duration::from_millis(20_050));
    }

    #[test]
    fn a_lease_item_is_a_couple_hundred_bytes_and_one_write_unit() {
        let bytes = typical_item_bytes();
        assert!((150..400).contains(&bytes), "{bytes}");
        assert_eq!(units::write_units(bytes, false), 1);
    }

    #[test]
    fn scans_are_billed_by_page() {
        // 300 leases of ~200 bytes: 15 blocks of 4 KB, eventually consistent.
        let (pages, half) = scan_half_units(300 * 200);
        assert_eq!((pages, half), (1, 15));
        // 2.5 MB: 3 pages, each rounded up on its own.
        let (pages, half) = scan_half_units(5 * SCAN_PAGE_BYTES / 2);
        assert_eq!(pages, 3);
        assert_eq!(half, 256 * 2 + 128);
    }
}
