//! DynamoDB request units by the item-size rules, for the lease table's
//! items as the agent writes them (`services/agent/src/aws/dynamo_items.rs`).
//!
//! The fake table counts units with these, so the simulation bills what
//! DynamoDB would; the cost model ([`crate::cost`]) prices them. An agent
//! test holds [`node_item_bytes`] and [`shard_item_bytes`] to the size of
//! the items the agent really encodes, so the two cannot drift apart.
//!
//! The rules (DynamoDB developer guide, "Item sizes and formats" and
//! "Read/write capacity mode"):
//! - an item's size is the sum of its attribute names and values: a string
//!   is its UTF-8 bytes, a number 1 byte per two significant digits plus 1,
//!   a list 3 bytes plus each element and 1 byte per element;
//! - a write costs 1 unit per KB of the item (the larger of before and
//!   after), rounded up per item, 2 in a transaction; a failed condition
//!   costs the same;
//! - a read costs 1 unit per 4 KB when strongly consistent, half when
//!   eventually consistent; a Scan is billed on the total size of the items
//!   it reads (filter or not), rounded up to 4 KB once; a read of a missing
//!   item still costs the minimum.

use std::fmt::{self, Display, Write as _};

use crate::layout::ShardLayout;
use crate::types::{NodeRecord, NodeState, ShardId, ShardRecord};

/// Bytes per write request unit.
pub const WRITE_UNIT_BYTES: u64 = 1024;
/// Bytes per strongly consistent read request unit.
pub const READ_UNIT_BYTES: u64 = 4096;
/// A transaction bills each of its items twice.
pub const TRANSACTION_FACTOR: u64 = 2;
/// Digits of the wall-clock attributes (`updated_at`, `moved_at`,
/// `expires_at`: unix seconds, 10 digits until 2286). The core has no wall
/// clock, so it assumes this width.
pub const UNIX_SECONDS_DIGITS: u64 = 10;

/// How a read is made; an eventually consistent read costs half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Eventual,
    Strong,
}

/// The agent's read choices (`services/agent/src/aws/dynamo.rs`): node
/// scans and layout reads are eventually consistent, shard reads strongly
/// (a read that shows us as owner confirms the lease).
pub const NODE_SCAN: Consistency = Consistency::Eventual;
pub const SHARD_SCAN: Consistency = Consistency::Strong;
pub const SHARD_GET: Consistency = Consistency::Strong;
pub const LAYOUT_GET: Consistency = Consistency::Eventual;
/// A settled node's watch: the change counter and one node item, each a
/// `GetItem` billed on its own.
pub const WATCH_GET: Consistency = Consistency::Eventual;

/// Read units in halves (an eventually consistent 4 KB is half a unit), so
/// counters stay exact integers: the read of `bytes` in one call (one item,
/// or a Scan's whole page).
pub fn read_half_units(bytes: u64, consistency: Consistency) -> u64 {
    let blocks = bytes.div_ceil(READ_UNIT_BYTES).max(1);
    match consistency {
        Consistency::Eventual => blocks,
        Consistency::Strong => blocks * 2,
    }
}

/// Write units of one item of `bytes` (the larger of before and after).
pub fn write_units(bytes: u64, transactional: bool) -> u64 {
    let units = bytes.div_ceil(WRITE_UNIT_BYTES).max(1);
    if transactional {
        units * TRANSACTION_FACTOR
    } else {
        units
    }
}

/// Counts what `Display` writes, without allocating.
struct Len(u64);

impl fmt::Write for Len {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len() as u64;
        Ok(())
    }
}

fn display_len(value: &impl Display) -> u64 {
    let mut len = Len(0);
    // Writing into a counter cannot fail.
    let _ = write!(len, "{value}");
    len.0
}

/// A string attribute.
pub fn string_bytes(name: &str, value: &impl Display) -> u64 {
    name.len() as u64 + display_len(value)
}

/// A string attribute whose text is at hand: the table sizes every item it
/// writes and scans, and formatting just to count would dominate that.
fn str_bytes(name: &str, value: &str) -> u64 {
    name.len() as u64 + value.len() as u64
}

/// Digits of `value` in decimal (0 has one).
fn decimal_digits(value: u64) -> u64 {
    value.checked_ilog10().map_or(1, |d| u64::from(d) + 1)
}

/// An incarnation is written as 16 hex digits (zero-padded; a `u64` never
/// needs more).
const INCARNATION_DIGITS: u64 = 16;

/// Length of a shard's text, `a.b.c.d/p`, counted rather than formatted.
fn shard_text_len(shard: ShardId) -> u64 {
    let vip = shard.vip();
    let octets: u64 = vip.addr().octets().iter().map(|o| decimal_digits(u64::from(*o))).sum();
    // Three dots and the slash.
    octets + 4 + decimal_digits(u64::from(vip.prefix()))
}

/// The value part of a number: 1 byte per two significant digits (leading
/// and trailing zeros trimmed) plus 1.
fn number_value_bytes(value: u64) -> u64 {
    let mut v = value;
    while v != 0 && v.is_multiple_of(10) {
        v /= 10;
    }
    decimal_digits(v).div_ceil(2) + 1
}

/// A number attribute.
pub fn number_bytes(name: &str, value: u64) -> u64 {
    name.len() as u64 + number_value_bytes(value)
}

/// A list of strings: 3 bytes, and each element plus 1 byte.
pub fn string_list_bytes<T: Display>(name: &str, values: impl IntoIterator<Item = T>) -> u64 {
    name.len() as u64 + 3 + values.into_iter().map(|v| display_len(&v) + 1).sum::<u64>()
}

/// A wall-clock attribute (unix seconds).
fn clock_bytes(name: &str) -> u64 {
    name.len() as u64 + UNIX_SECONDS_DIGITS.div_ceil(2) + 1
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The size of a node item: `pk` (`node#<id>`), `hb`, `inc`, `state`,
/// `eni`, `az`, `addr`, `weight`, `version`, `epoch_floor`, `updated_at`;
/// what it runs (`layout`, `tables`, `ttl_ms`, `hb_ms`, `peer_port`) when it
/// announces it; `expires_at` once marked dead; `evicted_by`, `evicted_hb`
/// once evicted.
pub fn node_item_bytes(node: &NodeRecord) -> u64 {
    let info = &node.info;
    let mut bytes = "pk".len() as u64
        + "node#".len() as u64
        + info.id.as_str().len() as u64
        + number_bytes("hb", node.hb)
        + "inc".len() as u64
        + INCARNATION_DIGITS
        + str_bytes("state", node.state.as_str())
        + str_bytes("eni", &info.eni.0)
        + str_bytes("az", &info.az)
        + str_bytes("addr", &info.addr)
        + number_bytes("weight", u64::from(info.weight))
        + str_bytes("version", &info.version)
        + number_bytes("epoch_floor", node.epoch_floor)
        + clock_bytes("updated_at");
    if let Some(config) = &node.config {
        bytes += str_bytes("layout", &config.layout.0)
            + "tables".len() as u64
            + 3
            + config.route_tables.iter().map(|t| t.0.len() as u64 + 1).sum::<u64>()
            + number_bytes("ttl_ms", millis(config.lease_ttl))
            + number_bytes("hb_ms", millis(config.heartbeat_interval))
            // Written as 0 when the node does not answer probes.
            + number_bytes("peer_port", u64::from(config.peer_port.unwrap_or(0)));
    }
    if node.state == NodeState::Dead {
        bytes += clock_bytes("expires_at");
    }
    if let Some(by) = &node.evicted_by {
        bytes += str_bytes("evicted_by", by.as_str()) + number_bytes("evicted_hb", node.hb);
    }
    bytes
}

/// [`node_item_bytes`] of `new`, given `old_bytes`, the size of `old`, an
/// earlier record of the same item: when only the counters moved (a
/// heartbeat, what most records of a read show), only they are sized again.
/// A node reads every node item several times a heartbeat, and sizing each
/// from its parts walks three allocations per item.
pub fn node_item_bytes_after(old: &NodeRecord, old_bytes: u64, new: &NodeRecord) -> u64 {
    let same_config = match (&old.config, &new.config) {
        (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    // `evicted_hb` repeats the counter: sized afresh (rare).
    let rest_unchanged = std::sync::Arc::ptr_eq(&old.info, &new.info)
        && same_config
        && old.state == new.state
        && old.evicted_by.is_none()
        && new.evicted_by.is_none();
    if !rest_unchanged {
        return node_item_bytes(new);
    }
    let counters = |n: &NodeRecord| number_bytes("hb", n.hb) + number_bytes("epoch_floor", n.epoch_floor);
    old_bytes + counters(new) - counters(old)
}

/// The size of a shard item: `pk` (`shard#<cidr>`), `owner`, `owner_inc`,
/// `epoch`, `moves`, `moved_at`. Every write of a shard (claim, takeover,
/// hand-off) sets all of them, so an item has either all or only its key.
pub fn shard_item_bytes(shard: &ShardRecord) -> u64 {
    let mut bytes = "pk".len() as u64 + "shard#".len() as u64 + shard_text_len(shard.id);
    if let Some(owner) = &shard.owner {
        bytes += str_bytes("owner", owner.as_str());
    }
    if shard.owner_inc.is_some() {
        bytes += "owner_inc".len() as u64 + INCARNATION_DIGITS;
    }
    bytes + number_bytes("epoch", shard.epoch) + number_bytes("moves", shard.moves) + clock_bytes("moved_at")
}

/// The size of the fleet item: `pk` (`fleet`) and `version`.
pub fn fleet_item_bytes(version: u64) -> u64 {
    "pk".len() as u64 + "fleet".len() as u64 + number_bytes("version", version)
}

/// The size of a layout item: `pk` (`layout#<fingerprint>`) and `vips`.
pub fn layout_item_bytes(layout: &ShardLayout) -> u64 {
    "pk".len() as u64 + "layout#".len() as u64 + display_len(&layout.id()) + string_list_bytes("vips", layout.vips())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_cost_a_byte_per_two_significant_digits() {
        assert_eq!(number_bytes("hb", 0), 2 + 2);
        assert_eq!(number_bytes("hb", 7), 2 + 2);
        assert_eq!(number_bytes("hb", 12), 2 + 2);
        assert_eq!(number_bytes("hb", 123), 2 + 3);
        // Trailing zeros are trimmed: 3000 is one significant digit.
        assert_eq!(number_bytes("ttl_ms", 3000), 6 + 2);
    }

    #[test]
    fn counted_lengths_are_the_formatted_ones() {
        for v in [0, 1, 9, 10, 99, 100, 12_345, 1 << 40, u64::MAX] {
            assert_eq!(decimal_digits(v), v.to_string().len() as u64, "{v}");
            assert_eq!(number_value_bytes(v), {
                let trimmed = v.to_string().trim_end_matches('0').len().max(1) as u64;
                trimmed.div_ceil(2) + 1
            });
        }
        for inc in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(
                crate::types::Incarnation(inc).to_string().len() as u64,
                INCARNATION_DIGITS
            );
        }
        for text in [
            "10.200.0.1/32",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.20.0.0/16",
            "192.168.100.0/24",
        ] {
            let shard: ShardId = text.parse().expect("a shard");
            assert_eq!(shard_text_len(shard), display_len(&shard), "{text}");
        }
    }

    #[test]
    fn lists_cost_three_bytes_and_one_per_element() {
        assert_eq!(string_list_bytes("tables", Vec::<String>::new()), 6 + 3);
        assert_eq!(string_list_bytes("tables", ["ab", "cde"]), 6 + 3 + 3 + 4);
    }

    /// Sized from an earlier record, a record is sized as from its parts,
    /// whatever changed between the two.
    #[test]
    fn a_record_sized_from_an_earlier_one_is_sized_as_from_its_parts() {
        use crate::types::{EniId, Incarnation, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState};
        use std::sync::Arc;
        let info = Arc::new(NodeInfo {
            id: NodeId::new("n1"),
            eni: EniId("eni-1".into()),
            az: "az-0".into(),
            addr: String::new(),
            weight: 1,
            version: "v".into(),
        });
        let config = Arc::new(NodeConfig {
            layout: crate::layout::LayoutId("l".into()),
            route_tables: Vec::new(),
            lease_ttl: std::time::Duration::from_secs(15),
            heartbeat_interval: std::time::Duration::from_secs(5),
            peer_port: Some(7946),
        });
        let old = NodeRecord {
            info: info.clone(),
            hb: 9,
            inc: Incarnation(1),
            state: NodeState::Active,
            config: Some(config.clone()),
            epoch_floor: 99,
            evicted_by: None,
        };
        let changes: [fn(&mut NodeRecord); 6] = [
            |n| n.hb = 10,
            |n| n.epoch_floor = 1_000_001,
            |n| n.state = NodeState::Dead,
            |n| n.evicted_by = Some(NodeId::new("n2")),
            |n| n.config = None,
            |n| Arc::make_mut(&mut n.info).az = "az-11".into(),
        ];
        for change in changes {
            let mut new = old.clone();
            change(&mut new);
            new.hb += 1;
            let old_bytes = node_item_bytes(&old);
            assert_eq!(node_item_bytes_after(&old, old_bytes, &new), node_item_bytes(&new));
        }
    }

    #[test]
    fn units_round_up_per_call_with_a_minimum() {
        assert_eq!(write_units(0, false), 1);
        assert_eq!(write_units(1024, false), 1);
        assert_eq!(write_units(1025, false), 2);
        assert_eq!(write_units(300, true), 2);
        assert_eq!(read_half_units(0, Consistency::Strong), 2);
        assert_eq!(read_half_units(4096, Consistency::Eventual), 1);
        assert_eq!(read_half_units(4097, Consistency::Eventual), 2);
        assert_eq!(read_half_units(4097, Consistency::Strong), 4);
    }
}
