//! The cost model: DynamoDB request units per second, and dollars per
//! month, of a fleet at rest under today's protocol. The README's "What it
//! costs" quotes it; `tests/cost_model.rs` holds it to what the simulation
//! counts.
//!
//! At rest each agent, per [`crate::machine`]'s timers:
//! - writes its heartbeat every `heartbeat_interval` (an `UpdateItem` of its
//!   node item), and puts its layout item again every
//!   [`LAYOUT_REPUBLISH_INTERVAL`];
//! - **hot** (`cold_reads` off, the default profile): scans the node items
//!   every `scan_interval` (a Scan, eventually consistent, billed on the
//!   **whole table**: nodes, shards and layouts, whatever the filter keeps)
//!   and the shard items every `shard_refresh_interval` (the same Scan,
//!   strongly consistent);
//! - **cold** (`cold_reads` on, the cheap profile; see
//!   `machine::pace`): every `watch_interval` reads the fleet item and one
//!   node item (two eventually consistent `GetItem`s, half a unit each),
//!   and reads the whole table (both Scans) every `cold_refresh`, which is
//!   `cold_refresh_interval` or [`COLD_REFRESH_PER_BLOCK`] per 4 KB block of
//!   the table, whichever is longer.
//!
//! With `N` nodes, `S` VIPs and a table of `T = N·node + S·shard + layout`
//! bytes, `B = ⌈T / 4 KB⌉` (one page: `T` ≤ 1 MB):
//!
//! ```text
//! writes/s     = N · (⌈node / 1 KB⌉ / heartbeat_interval + ⌈layout / 1 KB⌉ / layout_republish)
//! reads/s hot  = N · B · (0.5 / scan_interval + 1 / shard_refresh_interval)
//! reads/s cold = N · (1 / watch_interval + 1.5 · B / cold_refresh)
//! cold_refresh = max(cold_refresh_interval, B · 20 s)
//! ```
//!
//! Hot reads grow with `N · (N + S)`; cold reads with `N` alone (a bigger
//! table is read in full less often). Route tables enter through the node
//! item (each table id is listed in it); `reconcile_interval` reads routes
//! from EC2, not DynamoDB, so it costs nothing here. Events cost on top of
//! this: a claim 1 write unit, a takeover 4 (a transaction of two items), a
//! route write 1 strongly consistent read (the owner confirms its shard
//! first), an announced change 1 write, and a cold fleet turns hot for a
//! lease after each change. At rest there are none.

use std::sync::Arc;
use std::time::Duration;

use crate::config::LeaseConfig;
use crate::layout::ShardLayout;
use crate::types::{
    EniId, Incarnation, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardRecord,
};
use crate::units;
use crate::vip::Vip;

pub use crate::machine::{cold_refresh, COLD_REFRESH_PER_BLOCK, LAYOUT_REPUBLISH_INTERVAL};

/// On-demand price per million read request units (us-east-1).
pub const ON_DEMAND_USD_PER_MILLION_READS: f64 = 0.125;
/// On-demand price per million write request units (us-east-1).
pub const ON_DEMAND_USD_PER_MILLION_WRITES: f64 = 0.625;
/// Provisioned price per read capacity unit-hour (us-east-1).
pub const PROVISIONED_USD_PER_RCU_HOUR: f64 = 0.00013;
/// Provisioned price per write capacity unit-hour (us-east-1).
pub const PROVISIONED_USD_PER_WCU_HOUR: f64 = 0.00065;
/// AWS bills a month as 730 hours.
pub const HOURS_PER_MONTH: f64 = 730.0;
const SECONDS_PER_HOUR: f64 = 3600.0;

/// The fleet's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fleet {
    pub nodes: u64,
    pub vips: u64,
    pub route_tables: u64,
}

/// The size of each kind of item, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemSizes {
    pub node: u64,
    pub shard: u64,
    pub layout: u64,
}

impl ItemSizes {
    /// Sizes taken from one item of each kind.
    pub fn of(node: &NodeRecord, shard: &ShardRecord, layout: &ShardLayout) -> Self {
        Self {
            node: units::node_item_bytes(node),
            shard: units::shard_item_bytes(shard),
            layout: units::layout_item_bytes(layout),
        }
    }

    /// Sizes of items as an agent on EC2 writes them: AWS-shaped ids,
    /// `/32` VIPs, a held shard, counters a few digits long.
    pub fn on_aws(fleet: &Fleet) -> Self {
        let id = NodeId::new("i-0123456789abcdef0");
        let node = NodeRecord {
            info: Arc::new(NodeInfo {
                id: id.clone(),
                eni: EniId("eni-0123456789abcdef0".into()),
                az: "us-east-1a".into(),
                addr: "10.0.128.123".into(),
                weight: 1,
                version: "0.1.0".into(),
            }),
            hb: 123_456,
            inc: Incarnation(u64::MAX),
            state: NodeState::Active,
            config: Some(Arc::new(NodeConfig {
                layout: crate::layout::LayoutId("0123456789abcdef".into()),
                route_tables: (0..fleet.route_tables)
                    .map(|_| RouteTableId("rtb-0123456789abcdef0".into()))
                    .collect(),
                lease_ttl: LeaseConfig::DEFAULT.lease_ttl,
                heartbeat_interval: LeaseConfig::DEFAULT.heartbeat_interval,
                peer_port: None,
            })),
            epoch_floor: 1234,
            evicted_by: None,
        };
        let vips: Vec<Vip> = (0..fleet.vips)
            .map(|i| {
                format!("10.200.{}.{}/32", i / 250, 1 + i % 250)
                    .parse()
                    .expect("a /32 VIP")
            })
            .collect();
        let layout = ShardLayout::from_vips(&vips).unwrap_or_else(|_| ShardLayout::from_shards([]));
        let shard = ShardRecord {
            id: "10.200.100.123/32".parse().expect("a /32 shard"),
            owner: Some(id),
            owner_inc: Some(Incarnation(u64::MAX)),
            epoch: 123,
            moves: 12,
        };
        Self::of(&node, &shard, &layout)
    }
}

/// Request units per second, whole fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitsPerSecond {
    pub read: f64,
    pub write: f64,
}

/// Every item of the table: node items, shard items, one layout.
pub fn table_bytes(fleet: &Fleet, sizes: &ItemSizes) -> u64 {
    fleet.nodes * sizes.node + fleet.vips * sizes.shard + sizes.layout
}

fn per_second(units: f64, every: Duration) -> f64 {
    units / every.as_secs_f64()
}

/// The fleet's request units per second at rest (see the module header).
pub fn at_rest(fleet: &Fleet, sizes: &ItemSizes, lease: &LeaseConfig) -> UnitsPerSecond {
    let table = table_bytes(fleet, sizes);
    let half = |bytes, consistency| units::read_half_units(bytes, consistency) as f64 / 2.0;
    let full_read = half(table, units::NODE_SCAN) + half(table, units::SHARD_SCAN);
    let per_node_reads = if lease.cold_reads {
        let watch = half(units::fleet_item_bytes(0), units::WATCH_GET) + half(sizes.node, units::WATCH_GET);
        per_second(watch, lease.watch_interval) + per_second(full_read, cold_refresh(lease, table))
    } else {
        per_second(half(table, units::NODE_SCAN), lease.scan_interval)
            + per_second(half(table, units::SHARD_SCAN), lease.shard_refresh_interval)
    };
    let per_node_writes = per_second(units::write_units(sizes.node, false) as f64, lease.heartbeat_interval)
        + per_second(
            units::write_units(sizes.layout, false) as f64,
            LAYOUT_REPUBLISH_INTERVAL,
        );
    let n = fleet.nodes as f64;
    UnitsPerSecond {
        read: n * per_node_reads,
        write: n * per_node_writes,
    }
}

/// Dollars a month on on-demand capacity.
pub fn on_demand_usd_per_month(rate: &UnitsPerSecond) -> f64 {
    let seconds = HOURS_PER_MONTH * SECONDS_PER_HOUR;
    (rate.read * ON_DEMAND_USD_PER_MILLION_READS + rate.write * ON_DEMAND_USD_PER_MILLION_WRITES) * seconds / 1e6
}

/// Dollars a month on provisioned capacity sized to the rate at rest
/// (whole units, no headroom for failovers, free tier not counted).
pub fn provisioned_usd_per_month(rate: &UnitsPerSecond) -> f64 {
    (rate.read.ceil() * PROVISIONED_USD_PER_RCU_HOUR + rate.write.ceil() * PROVISIONED_USD_PER_WCU_HOUR)
        * HOURS_PER_MONTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_on_aws_are_as_small_as_the_item_format_says() {
        let sizes = ItemSizes::on_aws(&Fleet {
            nodes: 10,
            vips: 64,
            route_tables: 2,
        });
        // dynamo_items: about 250 bytes a node, 100 a shard.
        assert!((200..=300).contains(&sizes.node), "{sizes:?}");
        assert!((70..=130).contains(&sizes.shard), "{sizes:?}");
        // 64 VIPs of about 14 characters, each with a byte of list overhead.
        assert!((900..1100).contains(&sizes.layout), "{sizes:?}");
    }

    #[test]
    fn ten_nodes_and_64_vips_cost_what_issue_12_says() {
        let fleet = Fleet {
            nodes: 10,
            vips: 64,
            route_tables: 2,
        };
        let rate = at_rest(&fleet, &ItemSizes::on_aws(&fleet), &LeaseConfig::HOT);
        // 3 blocks of 4 KB: 10 × 3 × (0.5 × 4 + 1 / 5) = 66 reads/s.
        assert!((rate.read - 66.0).abs() < 0.01, "{rate:?}");
        assert!((rate.write - 10.0).abs() < 0.1, "{rate:?}");
        let usd = on_demand_usd_per_month(&rate);
        assert!((35.0..40.0).contains(&usd), "{usd}");
        assert!(provisioned_usd_per_month(&rate) < usd);
    }

    #[test]
    fn ten_nodes_and_64_vips_cost_under_5_dollars_a_month_on_the_cheap_profile() {
        let fleet = Fleet {
            nodes: 10,
            vips: 64,
            route_tables: 2,
        };
        let rate = at_rest(&fleet, &ItemSizes::on_aws(&fleet), &LeaseConfig::CHEAP);
        // 10 × (1 / 5 s + 1.5 × 3 blocks / 60 s) reads, 10 / 5 s writes.
        assert!((rate.read - 2.75).abs() < 0.01, "{rate:?}");
        assert!((rate.write - 2.0).abs() < 0.05, "{rate:?}");
        let usd = on_demand_usd_per_month(&rate);
        assert!((3.0..5.0).contains(&usd), "{usd}");
    }

    #[test]
    fn cold_reads_grow_with_nodes_alone() {
        let per_node = |nodes| {
            let fleet = Fleet {
                nodes,
                vips: 64,
                route_tables: 2,
            };
            at_rest(&fleet, &ItemSizes::on_aws(&fleet), &LeaseConfig::CHEAP).read / nodes as f64
        };
        // Each node's share stays within 10 % from 10 to 1,000 nodes.
        let (small, large) = (per_node(10), per_node(1000));
        assert!(
            (large - small).abs() <= 0.1 * small,
            "{small} vs {large} units/s a node"
        );
    }

    #[test]
    fn reads_grow_with_nodes_times_items() {
        let rate = |nodes| {
            let fleet = Fleet {
                nodes,
                vips: 64,
                route_tables: 2,
            };
            at_rest(&fleet, &ItemSizes::on_aws(&fleet), &LeaseConfig::HOT).read
        };
        assert!(rate(100) > 10.0 * rate(10) * 2.0);
    }
}
