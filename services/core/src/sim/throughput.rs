//! DynamoDB's throughput limits, for runs that opt in
//! ([`SimConfig::store_throughput`]): a fleet of a thousand nodes reads
//! enough to meet them, and a throttled read is a read a node goes
//! without.
//!
//! Two limits bind this table. The table as a whole: a new on-demand
//! table sustains 4,000 write and 12,000 read request units a second (it
//! grows to twice an earlier peak, up to the account's 40,000 per table
//! unless raised). And one partition: 1,000 write and 3,000 read units a
//! second, which only an item every node touches can reach, the fleet's
//! change counter (a watch reads it, every announcement writes it); every
//! other item is one node's own or is read in Scans spread over the
//! table's partitions.
//!
//! A call is refused as throttled while its bucket is in debt; a call that
//! goes through takes what it was billed, so one large Scan can put the
//! bucket in debt (DynamoDB, too, charges a read by what it returned).
//! Throttled calls are not billed.

use std::time::Duration;

use super::SimConfig;
use crate::fake::TableCounters;
use crate::machine::Effect;
use crate::time::Instant;

/// Request units a second, read and write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitsPerSecond {
    pub read: f64,
    pub write: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreThroughput {
    pub table: UnitsPerSecond,
    /// One partition: what the fleet item alone may take.
    pub partition: UnitsPerSecond,
}

impl StoreThroughput {
    /// A new on-demand table, as AWS documents it.
    pub const NEW_ON_DEMAND_TABLE: StoreThroughput = StoreThroughput {
        table: UnitsPerSecond {
            read: 12_000.0,
            write: 4_000.0,
        },
        partition: UnitsPerSecond {
            read: 3_000.0,
            write: 1_000.0,
        },
    };

    /// This table with `read` units a second for the table as a whole
    /// (the fleet item's partition at most that).
    pub fn with_table_reads(self, read: f64) -> StoreThroughput {
        StoreThroughput {
            table: UnitsPerSecond { read, ..self.table },
            partition: UnitsPerSecond {
                read: self.partition.read.min(read),
                ..self.partition
            },
        }
    }
}

/// A bucket holds at most this long's worth of units: a short burst over
/// the rate goes through, a sustained one is throttled.
const BURST_WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
struct Bucket {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: f64, now: Instant) -> Self {
        Self {
            per_second,
            tokens: per_second * BURST_WINDOW.as_secs_f64(),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second * BURST_WINDOW.as_secs_f64());
    }

    fn in_debt(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens < 0.0
    }
}

/// Which buckets a store call draws from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Draw {
    read: bool,
    write: bool,
    fleet_item: bool,
}

pub(super) fn draw(effect: &Effect) -> Draw {
    let (read, write, fleet_item) = match effect {
        Effect::ReadNodes | Effect::ReadShards | Effect::ConfirmShard(_) | Effect::ReadLayout(_) => {
            (true, false, false)
        }
        Effect::Watch(_) => (true, false, true),
        Effect::AnnounceChange => (false, true, true),
        _ => (false, true, false),
    };
    Draw {
        read,
        write,
        fleet_item,
    }
}

/// The table's buckets, read and write, and the fleet item's.
#[derive(Clone, Debug)]
pub(super) struct Throughput {
    /// Nothing is limited before then: the start-up of a fleet that formed
    /// long ago ([`SimConfig::bucket_from`]).
    from: Instant,
    table_read: Bucket,
    table_write: Bucket,
    fleet_read: Bucket,
    fleet_write: Bucket,
    /// Store calls refused, over the run.
    pub(super) throttled: u64,
}

impl Throughput {
    pub(super) fn new(config: &SimConfig, from: Instant) -> Option<Self> {
        let limits = config.store_throughput?;
        Some(Self {
            from,
            table_read: Bucket::new(limits.table.read, from),
            table_write: Bucket::new(limits.table.write, from),
            fleet_read: Bucket::new(limits.partition.read, from),
            fleet_write: Bucket::new(limits.partition.write, from),
            throttled: 0,
        })
    }

    /// Whether the call is refused, before it is performed.
    pub(super) fn refuses(&mut self, d: Draw, now: Instant) -> bool {
        if now < self.from {
            return false;
        }
        let refused = (d.read && self.table_read.in_debt(now))
            || (d.write && self.table_write.in_debt(now))
            || (d.fleet_item && d.read && self.fleet_read.in_debt(now))
            || (d.fleet_item && d.write && self.fleet_write.in_debt(now));
        if refused {
            self.throttled += 1;
        }
        refused
    }

    /// Takes what a performed call was billed: the table's counters before
    /// and after it.
    pub(super) fn charge(&mut self, d: Draw, now: Instant, before: &TableCounters, after: &TableCounters) {
        if now < self.from {
            return;
        }
        let read = (after.read_half_units - before.read_half_units) as f64 / 2.0;
        let write = (after.write_units - before.write_units) as f64;
        self.table_read.tokens -= read;
        self.table_write.tokens -= write;
        if d.fleet_item {
            self.fleet_read.tokens -= read;
            self.fleet_write.tokens -= write;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_offset(Duration::from_millis(ms))
    }

    fn counters(read_units: u64, write_units: u64) -> TableCounters {
        TableCounters {
            read_half_units: read_units * 2,
            write_units,
            ..TableCounters::default()
        }
    }

    fn limited(read: f64, write: f64) -> Throughput {
        let mut config = SimConfig::small(0);
        config.store_throughput = Some(StoreThroughput {
            table: UnitsPerSecond { read, write },
            partition: UnitsPerSecond {
                read: read / 4.0,
                write: write / 4.0,
            },
        });
        Throughput::new(&config, at(0)).expect("limits configured")
    }

    #[test]
    fn a_read_that_overdraws_the_table_throttles_reads_until_refilled() {
        let mut t = limited(100.0, 10.0);
        assert!(!t.refuses(draw(&Effect::ReadNodes), at(0)));
        t.charge(draw(&Effect::ReadNodes), at(0), &counters(0, 0), &counters(150, 0));
        assert!(t.refuses(draw(&Effect::ReadShards), at(100)), "50 units in debt");
        assert!(
            !t.refuses(draw(&Effect::AnnounceChange), at(100)),
            "writes have their own bucket"
        );
        assert!(
            !t.refuses(draw(&Effect::ReadShards), at(600)),
            "half a second refills 50 units"
        );
        assert_eq!(t.throttled, 1);
    }

    #[test]
    fn the_fleet_item_is_limited_to_one_partition() {
        let mut t = limited(100.0, 100.0);
        t.charge(draw(&Effect::AnnounceChange), at(0), &counters(0, 0), &counters(0, 30));
        assert!(
            t.refuses(draw(&Effect::AnnounceChange), at(0)),
            "25 write units a second for one item"
        );
        assert!(!t.refuses(draw(&Effect::ReadNodes), at(0)));
        assert!(!t.refuses(draw(&Effect::AnnounceChange), at(1_000)));
    }

    #[test]
    fn a_formed_fleet_is_limited_from_its_rest_window_only() {
        let mut config = SimConfig::small(0);
        config.store_throughput = Some(StoreThroughput::NEW_ON_DEMAND_TABLE);
        let mut t = Throughput::new(&config, at(10_000)).expect("limits configured");
        t.charge(
            draw(&Effect::ReadNodes),
            at(0),
            &counters(0, 0),
            &counters(1_000_000, 0),
        );
        assert!(!t.refuses(draw(&Effect::ReadNodes), at(5_000)));
        t.charge(
            draw(&Effect::ReadNodes),
            at(10_000),
            &counters(0, 0),
            &counters(20_000, 0),
        );
        assert!(t.refuses(draw(&Effect::ReadNodes), at(10_000)));
    }

    #[test]
    fn without_limits_nothing_is_modelled() {
        assert!(Throughput::new(&SimConfig::small(0), at(0)).is_none());
    }
}
