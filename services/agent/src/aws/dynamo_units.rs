//! DynamoDB request units the lease store consumed, for
//! `vipfleet_dynamodb_{read,write}_units_total`.
//!
//! Every call asks for `ReturnConsumedCapacity = TOTAL`, and what DynamoDB
//! reports is what is counted. Where an answer carries none, the store
//! counts its own estimate by the item-size rules ([`item_bytes`], the same
//! rules as `vipfleet_core::units`): a failed condition is billed, but its
//! error carries no capacity.
//!
//! Against another endpoint (`AWS_ENDPOINT_URL`: moto in the lab and the
//! tests) the store counts only its estimate ([`Sink::estimating`]): moto
//! 5.2 answers constants whatever the size (1.0 for a Scan, PutItem and
//! DeleteItem, 0.5 for a GetItem and UpdateItem, nothing for
//! TransactWriteItems), which would make the lab's counts meaningless
//! beside the cost model.
//!
//! Throttled and failed calls are not billed and not counted.

use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use vipfleet_core::store::StoreOp;
use vipfleet_core::units::{read_half_units, write_units, Consistency};

use super::dynamo_items::Item;

/// Where consumed units go (the agent's metrics).
pub trait UnitsSink: Send + Sync {
    fn consumed(&self, op: StoreOp, units: Units);
}

/// Request units of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

impl Units {
    pub fn read(units: f64) -> Self {
        Self {
            read: units,
            write: 0.0,
        }
    }

    pub fn write(units: f64) -> Self {
        Self {
            read: 0.0,
            write: units,
        }
    }

    /// What DynamoDB reported, if anything: the read or write share when
    /// given, else the total, counted as a read for reads and a write for
    /// writes.
    pub fn reported<'a>(capacity: impl IntoIterator<Item = &'a ConsumedCapacity>, reads: bool) -> Option<Self> {
        let mut total: Option<Self> = None;
        for c in capacity {
            let (read, write) = match (c.read_capacity_units(), c.write_capacity_units(), c.capacity_units()) {
                (None, None, None) => continue,
                (None, None, Some(all)) if reads => (all, 0.0),
                (None, None, Some(all)) => (0.0, all),
                (read, write, _) => (read.unwrap_or(0.0), write.unwrap_or(0.0)),
            };
            let sum = total.get_or_insert_with(Self::default);
            sum.read += read;
            sum.write += write;
        }
        total
    }
}

/// The sink of a store, if any (`Debug` for the store's derive).
#[derive(Clone, Default)]
pub(crate) struct Sink {
    sink: Option<Arc<dyn UnitsSink>>,
    /// Ignore what the endpoint reports (not DynamoDB: see the header).
    estimating: bool,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("sink", &self.sink.is_some())
            .field("estimating", &self.estimating)
            .finish()
    }
}

impl Sink {
    pub fn new(sink: Arc<dyn UnitsSink>, estimating: bool) -> Self {
        Self {
            sink: Some(sink),
            estimating,
        }
    }

    /// Counts what DynamoDB reported, else `estimate`.
    pub fn count(&self, op: StoreOp, reported: Option<Units>, estimate: impl FnOnce() -> Units) {
        if let Some(sink) = &self.sink {
            let reported = reported.filter(|_| !self.estimating);
            sink.consumed(op, reported.unwrap_or_else(estimate));
        }
    }
}

/// The size of a number: 1 byte per two significant digits, plus 1.
fn number_bytes(text: &str) -> u64 {
    let digits = text.trim_start_matches('-').replace('.', "");
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    (significant.len().max(1) as u64).div_ceil(2) + 1
}

/// The size of a value, by DynamoDB's rules.
pub(crate) fn value_bytes(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number_bytes(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_bytes(v) + 1).sum::<u64>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| k.len() as u64 + value_bytes(v) + 1)
                .sum::<u64>()
        }
        AttributeValue::Ss(set) => set.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_bytes(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len() as u64).sum(),
        _ => 0,
    }
}

/// The size of an item: its attribute names and values.
pub(crate) fn item_bytes(item: &Item) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_bytes(value))
        .sum()
}

/// The estimate of a read of `bytes` in one call.
pub(crate) fn read_estimate(bytes: u64, consistency: Consistency) -> Units {
    Units::read(read_half_units(bytes, consistency) as f64 / 2.0)
}

/// The estimate of a write of one item of `bytes`.
pub(crate) fn write_estimate(bytes: u64, transactional: bool) -> Units {
    Units::write(write_units(bytes, transactional) as f64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use vipfleet_core::units::{layout_item_bytes, node_item_bytes, shard_item_bytes};
    use vipfleet_core::{
        EniId, Incarnation, LayoutId, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardLayout,
        ShardRecord, Vip,
    };

    use super::super::dynamo_items::{attr, layout_item, n, node_item, shard_item, Beat};
    use super::*;

    /// A wall clock of 10 significant digits, as the core assumes (a round
    /// number would trim to fewer).
    const NOW_UNIX_SECS: u64 = 1_790_123_457;

    #[test]
    fn numbers_are_sized_by_significant_digits() {
        assert_eq!(number_bytes("0"), 2);
        assert_eq!(number_bytes("12"), 2);
        assert_eq!(number_bytes("123"), 3);
        assert_eq!(number_bytes("3000"), 2);
        assert_eq!(number_bytes("-0.0125"), 3);
    }

    #[test]
    fn the_cores_size_estimate_matches_the_items_the_agent_writes() {
        let info = NodeInfo {
            id: NodeId::new("i-0123456789abcdef0"),
            eni: EniId("eni-0123456789abcdef0".into()),
            az: "us-east-1a".into(),
            addr: "10.0.128.12".into(),
            weight: 1,
            version: "0.1.0".into(),
        };
        let config = NodeConfig {
            layout: LayoutId("00112233aabbccdd".into()),
            route_tables: vec![RouteTableId("rtb-0123456789abcdef0".into()); 2],
            lease_ttl: Duration::from_millis(3000),
            heartbeat_interval: Duration::from_millis(1000),
            peer_port: None,
        };
        let beat = Beat {
            info: &info,
            config: &config,
            inc: Incarnation(0x0123_4567_89ab_cdef),
            state: NodeState::Active,
            epoch_floor: 17,
            register_hb: 123_456,
            now: NOW_UNIX_SECS,
        };
        let record = NodeRecord {
            info: Arc::new(info.clone()),
            hb: 123_456,
            inc: beat.inc,
            state: NodeState::Active,
            config: Some(Arc::new(config.clone())),
            epoch_floor: 17,
            evicted_by: None,
        };
        assert_eq!(item_bytes(&node_item(&beat)), node_item_bytes(&record));
        // A node marked dead carries its TTL too.
        let mut dead = node_item(&beat);
        dead.insert(attr::STATE.into(), AttributeValue::S(NodeState::Dead.as_str().into()));
        dead.insert(attr::EXPIRES_AT.into(), n(NOW_UNIX_SECS + 86_400));
        let dead_record = NodeRecord {
            state: NodeState::Dead,
            ..record
        };
        assert_eq!(item_bytes(&dead), node_item_bytes(&dead_record));

        // A shard as a claim leaves it (`moved_at` set by the update).
        let shard = ShardRecord {
            id: "10.200.0.17/32".parse().unwrap(),
            owner: Some(info.id.clone()),
            owner_inc: Some(beat.inc),
            epoch: 42,
            moves: 3,
        };
        let mut item = shard_item(&shard);
        item.insert(attr::MOVED_AT.into(), n(NOW_UNIX_SECS));
        assert_eq!(item_bytes(&item), shard_item_bytes(&shard));

        let vips: Vec<Vip> = (1..=64).map(|i| format!("10.200.0.{i}/32").parse().unwrap()).collect();
        let layout = ShardLayout::from_vips(&vips).unwrap();
        assert_eq!(item_bytes(&layout_item(&layout)), layout_item_bytes(&layout));
    }

    #[test]
    fn reported_capacity_splits_reads_and_writes() {
        let total = ConsumedCapacity::builder().capacity_units(3.0).build();
        assert_eq!(Units::reported([&total], true), Some(Units::read(3.0)));
        assert_eq!(Units::reported([&total], false), Some(Units::write(3.0)));
        let split = ConsumedCapacity::builder()
            .capacity_units(4.0)
            .write_capacity_units(4.0)
            .build();
        assert_eq!(Units::reported([&split, &total], false), Some(Units::write(7.0)));
        assert_eq!(Units::reported([], true), None);
    }
}
