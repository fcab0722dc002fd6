//! An in-memory lease table with DynamoDB's conditional semantics, as plain
//! synchronous data. [`super::FakeLeaseStore`] wraps it for async callers;
//! the simulation drives it directly on virtual time.
//!
//! Besides the protocol's operations it takes the edits an operator (or a
//! slip) makes by hand: items deleted, junk items, a node marked dead, the
//! whole table re-created empty.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::layout::{LayoutId, ShardLayout};
use crate::liveness::NodeCheck;
use crate::store::{
    AcquireOutcome, AcquireRequest, BeatKind, EvictOutcome, EvictRequest, Expect, HandoffOutcome, HandoffRequest,
    HeartbeatOutcome, HeartbeatRequest, MarkDeadOutcome, MarkDeadRequest, RetireOutcome, RetireRequest, Scan, Skipped,
    Watch, WatchRequest, Watched,
};
use crate::types::{NodeId, NodeRecord, NodeState, ShardId, ShardRecord};
use crate::units::{self, Consistency};

/// The size assumed for a junk item: its key, `pk` and a small value (what
/// an operator's `put-item` by hand typically holds).
const JUNK_VALUE_BYTES: u64 = 16;

/// Calls, items and request units, counted as DynamoDB would bill them
/// (one write per conditional update or transaction item, one read per item
/// returned; units by the item-size rules of [`crate::units`], a Scan on
/// the whole table whatever it keeps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub write_calls: u64,
    pub read_calls: u64,
    pub items_written: u64,
    pub items_read: u64,
    /// Write request units.
    pub write_units: u64,
    /// Read request units, in halves (see [`units::read_half_units`]).
    pub read_half_units: u64,
}

impl TableCounters {
    pub fn read_units(&self) -> f64 {
        self.read_half_units as f64 / 2.0
    }
}

/// An item the agent cannot read, as a key and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Junk {
    reason: String,
    node: Option<NodeId>,
    shard: Option<ShardId>,
}

#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    nodes: BTreeMap<NodeId, NodeRecord>,
    shards: BTreeMap<ShardId, ShardRecord>,
    layouts: BTreeMap<LayoutId, ShardLayout>,
    /// The fleet item's change counter; `None` while the item is missing.
    fleet_version: Option<u64>,
    /// Junk items by key (`node#…`, `shard#…`, anything).
    junk: BTreeMap<String, Junk>,
    counters: TableCounters,
    /// Bumped whenever a shard item changes (for checks that only need to
    /// look again then).
    shards_version: u64,
    /// Every shard item written (claimed or handed off), in order: checks
    /// look again at those alone, not at ten thousand shards per claim.
    shards_written: Vec<ShardId>,
    /// The sizes of all node items and of all shard items, kept up to date
    /// with every change: every node scans several times per heartbeat,
    /// and every heartbeat changes an item, so sizing the whole table again
    /// after each change would cost more than the rest of the simulation.
    node_bytes_total: u64,
    shard_bytes_total: u64,
    /// The size of the layout and junk items (which change rarely) since
    /// the last change of one.
    rare_bytes_cache: Cell<Option<u64>>,
    /// The size of each layout item written or read, with the layout it
    /// sizes: sizing one formats every VIP, and every node publishes its
    /// layout (ten thousand VIPs at scale) when it starts.
    layout_sizes: BTreeMap<LayoutId, (ShardLayout, u64)>,
}

impl LeaseTable {
    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    /// One write call of `items` items, billed `write_units`.
    fn wrote(&mut self, items: u64, write_units: u64) {
        self.counters.write_calls += 1;
        self.counters.items_written += items;
        self.counters.write_units += write_units;
    }

    /// One read call returning `items` items, billed on `bytes`.
    fn read(&mut self, items: usize, bytes: u64, consistency: Consistency) {
        self.counters.read_calls += 1;
        self.counters.items_read += items as u64;
        self.counters.read_half_units += units::read_half_units(bytes, consistency);
    }

    fn node_bytes(&self, id: &NodeId) -> u64 {
        self.nodes.get(id).map_or(0, units::node_item_bytes)
    }

    fn shard_bytes(&self, id: ShardId) -> u64 {
        self.shards.get(&id).map_or(0, units::shard_item_bytes)
    }

    /// A node item changed from `before` bytes (0: it did not exist).
    fn node_resized(&mut self, id: &NodeId, before: u64) {
        self.node_bytes_total = self.node_bytes_total + self.node_bytes(id) - before;
    }

    fn shard_resized(&mut self, id: ShardId, before: u64) {
        self.shard_bytes_total = self.shard_bytes_total + self.shard_bytes(id) - before;
    }

    /// What a Scan reads: every item, whatever its filter keeps.
    pub fn table_bytes(&self) -> u64 {
        let fleet = self.fleet_version.map_or(0, units::fleet_item_bytes);
        self.node_bytes_total + self.shard_bytes_total + fleet + self.rare_bytes()
    }

    fn rare_bytes(&self) -> u64 {
        if let Some(bytes) = self.rare_bytes_cache.get() {
            return bytes;
        }
        let layouts: u64 = self.layouts.values().map(units::layout_item_bytes).sum();
        let junk: u64 = self
            .junk
            .keys()
            .map(|key| "pk".len() as u64 + key.len() as u64 + JUNK_VALUE_BYTES)
            .sum();
        self.rare_bytes_cache.set(Some(layouts + junk));
        layouts + junk
    }

    /// [`Self::table_bytes`] sized item by item, for tests of the running
    /// totals.
    #[cfg(test)]
    fn table_bytes_recounted(&self) -> u64 {
        let nodes: u64 = self.nodes.values().map(units::node_item_bytes).sum();
        let shards: u64 = self.shards.values().map(units::shard_item_bytes).sum();
        let fleet = self.fleet_version.map_or(0, units::fleet_item_bytes);
        nodes + shards + fleet + self.rare_bytes()
    }

    fn junk_node(&self, id: &NodeId) -> bool {
        self.junk.values().any(|j| j.node.as_ref() == Some(id))
    }

    fn junk_shard(&self, id: ShardId) -> bool {
        self.junk.values().any(|j| j.shard == Some(id))
    }

    fn skipped(&self, prefix: &str) -> Vec<Skipped> {
        self.junk
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, j)| Skipped {
                key: key.clone(),
                reason: j.reason.clone(),
                node: j.node.clone(),
                shard: j.shard,
            })
            .collect()
    }

    pub fn heartbeat(&mut self, req: &HeartbeatRequest) -> HeartbeatOutcome {
        let before = self.node_bytes(&req.info.id);
        let outcome = self.beat(req);
        let after = self.node_bytes(&req.info.id);
        self.node_resized(&req.info.id, before);
        self.wrote(1, units::write_units(before.max(after), false));
        outcome
    }

    fn beat(&mut self, req: &HeartbeatRequest) -> HeartbeatOutcome {
        let id = &req.info.id;
        let fresh = || NodeRecord {
            info: Arc::new(req.info.clone()),
            hb: req.register_hb,
            inc: req.inc,
            state: req.state,
            config: Some(Arc::new(req.config.clone())),
            epoch_floor: req.epoch_floor,
            evicted_by: None,
        };
        let current_inc = self.nodes.get(id).map(|n| n.inc);
        let junk = self.junk_node(id);
        match req.kind {
            // A put: whatever the item held, junk included.
            BeatKind::Register => {
                self.drop_junk_node(id);
                self.nodes.insert(id.clone(), fresh());
                HeartbeatOutcome::Beat(req.register_hb)
            }
            BeatKind::Reregister => match current_inc {
                Some(inc) if inc != req.inc => HeartbeatOutcome::NotMine,
                _ => {
                    self.drop_junk_node(id);
                    self.nodes.insert(id.clone(), fresh());
                    HeartbeatOutcome::Beat(req.register_hb)
                }
            },
            // An update of an unreadable item fails DynamoDB's type checks;
            // the caller sees an error, not an outcome.
            BeatKind::Renew if junk => HeartbeatOutcome::Missing,
            BeatKind::Renew => match self.nodes.get_mut(id) {
                Some(node) if node.inc == req.inc && node.evicted_by.is_some() => HeartbeatOutcome::Evicted,
                Some(node) if node.inc == req.inc => {
                    node.hb += 1;
                    node.state = req.state;
                    // Shared with every read that returned them: replaced
                    // only when they change, as they rarely do.
                    if *node.info != req.info {
                        node.info = Arc::new(req.info.clone());
                    }
                    if node.config.as_deref() != Some(&req.config) {
                        node.config = Some(Arc::new(req.config.clone()));
                    }
                    node.epoch_floor = req.epoch_floor;
                    HeartbeatOutcome::Beat(node.hb)
                }
                Some(_) => HeartbeatOutcome::NotMine,
                None => HeartbeatOutcome::Missing,
            },
        }
    }

    /// A put of a node item replaces any junk item under its key.
    fn drop_junk_node(&mut self, id: &NodeId) {
        if self.junk_node(id) {
            self.junk.retain(|_, j| j.node.as_ref() != Some(id));
            self.rare_bytes_cache.set(None);
        }
    }

    pub fn read_nodes(&mut self) -> Scan<NodeRecord> {
        let records: Vec<_> = self.nodes.values().cloned().collect();
        let skipped = self.skipped("node#");
        self.read(records.len() + skipped.len(), self.table_bytes(), units::NODE_SCAN);
        Scan { records, skipped }
    }

    pub fn read_shards(&mut self) -> Scan<ShardRecord> {
        let records: Vec<_> = self.shards.values().cloned().collect();
        let skipped = self.skipped("shard#");
        self.read(records.len() + skipped.len(), self.table_bytes(), units::SHARD_SCAN);
        Scan { records, skipped }
    }

    /// `Err` with the reason when the item exists but cannot be read.
    pub fn read_shard(&mut self, shard: ShardId) -> Result<Option<ShardRecord>, String> {
        let record = self.shards.get(&shard).cloned();
        self.read(usize::from(record.is_some()), self.shard_bytes(shard), units::SHARD_GET);
        if let Some(junk) = self.junk.values().find(|j| j.shard == Some(shard)) {
            return Err(junk.reason.clone());
        }
        Ok(record)
    }

    pub fn watch(&mut self, req: &WatchRequest) -> Watch {
        let fleet_bytes = self.fleet_version.map_or(0, units::fleet_item_bytes);
        self.read(usize::from(self.fleet_version.is_some()), fleet_bytes, units::WATCH_GET);
        let node = req.node.as_ref().map(|id| {
            let record = self.nodes.get(id).cloned();
            self.read(usize::from(record.is_some()), self.node_bytes(id), units::WATCH_GET);
            let junk = self.junk.iter().find(|(_, j)| j.node.as_ref() == Some(id));
            match (record, junk) {
                (_, Some((key, j))) => Watched::Unreadable(Skipped {
                    key: key.clone(),
                    reason: j.reason.clone(),
                    node: Some(id.clone()),
                    shard: None,
                }),
                (Some(record), None) => Watched::Record(record),
                (None, None) => Watched::Missing,
            }
        });
        Watch {
            version: self.fleet_version,
            node,
        }
    }

    pub fn announce_change(&mut self) -> u64 {
        let version = self.fleet_version.unwrap_or(0) + 1;
        self.fleet_version = Some(version);
        self.wrote(1, units::write_units(units::fleet_item_bytes(version), false));
        version
    }

    /// The change counter, as an operator would read it.
    pub fn fleet_version(&self) -> Option<u64> {
        self.fleet_version
    }

    /// [`units::layout_item_bytes`], remembered per layout.
    fn layout_bytes(&mut self, layout: &ShardLayout) -> u64 {
        let id = layout.id();
        if let Some((known, bytes)) = self.layout_sizes.get(&id) {
            // Layouts share their shards: mostly a pointer compared.
            if known == layout {
                return *bytes;
            }
        }
        let bytes = units::layout_item_bytes(layout);
        self.layout_sizes.insert(id, (layout.clone(), bytes));
        bytes
    }

    pub fn publish_layout(&mut self, layout: &ShardLayout) {
        // A conditional put bills the item's size whether it lands or not.
        let bytes = self.layout_bytes(layout);
        self.wrote(1, units::write_units(bytes, false));
        if let std::collections::btree_map::Entry::Vacant(entry) = self.layouts.entry(layout.id()) {
            entry.insert(layout.clone());
            self.rare_bytes_cache.set(None);
        }
    }

    pub fn read_layout(&mut self, id: &LayoutId) -> Option<ShardLayout> {
        let layout = self.layouts.get(id).cloned();
        let bytes = layout.as_ref().map_or(0, |l| self.layout_bytes(l));
        self.read(usize::from(layout.is_some()), bytes, units::LAYOUT_GET);
        layout
    }

    pub fn acquire(&mut self, req: &AcquireRequest) -> AcquireOutcome {
        self.acquire_checked(req, true)
    }

    /// [`Self::acquire`] without the condition on the old owner's node
    /// item: the protocol broken on purpose, so tests can prove that the
    /// simulation's invariant checks notice.
    pub fn acquire_without_node_check(&mut self, req: &AcquireRequest) -> AcquireOutcome {
        self.acquire_checked(req, false)
    }

    fn acquire_checked(&mut self, req: &AcquireRequest, check_node: bool) -> AcquireOutcome {
        let before = self.shard_bytes(req.shard);
        // A takeover is a transaction: a check of the gone owner's item
        // beside the shard update, each billed twice.
        let node_check_units = match &req.expect {
            Expect::Free { .. } => 0,
            Expect::GoneOwner { owner, .. } => units::write_units(self.node_bytes(owner), true),
            Expect::Held { .. } => 0,
        };
        let outcome = self.acquire_unbilled(req, check_node);
        self.shard_resized(req.shard, before);
        let shard_bytes = before.max(self.shard_bytes(req.shard));
        let shard_units = units::write_units(shard_bytes, node_check_units > 0);
        let items = if node_check_units > 0 { 2 } else { 1 };
        self.wrote(items, node_check_units + shard_units);
        outcome
    }

    fn acquire_unbilled(&mut self, req: &AcquireRequest, check_node: bool) -> AcquireOutcome {
        let junk = self.junk_shard(req.shard);
        let shard = self.shards.get(&req.shard);
        let (owner, epoch) = match shard {
            Some(s) => (s.owner.as_ref(), s.epoch),
            None => (None, 0),
        };
        let shard_ok = !junk
            && match &req.expect {
                Expect::Free { next_epoch } => owner.is_none() && epoch < *next_epoch,
                Expect::GoneOwner { owner: x, epoch: e, .. } => owner == Some(x) && epoch == *e,
                Expect::Held { epoch: e } => owner == Some(&req.me) && epoch == *e,
            };
        let node_ok = !check_node
            || match &req.expect {
                Expect::Free { .. } | Expect::Held { .. } => true,
                Expect::GoneOwner { owner, check, .. } => match check {
                    NodeCheck::Unchanged { hb, inc } => self
                        .nodes
                        .get(owner)
                        .is_some_and(|n| n.hb == *hb && n.inc == *inc && !self.junk_node(owner)),
                    NodeCheck::Missing => !self.nodes.contains_key(owner) && !self.junk_node(owner),
                },
            };
        // A transaction writes (and bills) both items even when cancelled:
        // the caller bills.
        if !shard_ok {
            return AcquireOutcome::LostRace;
        }
        if !node_ok {
            return AcquireOutcome::OwnerAlive;
        }
        let new_epoch = match &req.expect {
            Expect::Free { next_epoch } => *next_epoch,
            Expect::GoneOwner { epoch, .. } | Expect::Held { epoch } => epoch + 1,
        };
        let record = self.shards.entry(req.shard).or_insert_with(|| ShardRecord {
            id: req.shard,
            owner: None,
            owner_inc: None,
            epoch: 0,
            moves: 0,
        });
        if record.owner.as_ref().is_some_and(|o| *o != req.me) {
            record.moves += 1;
        }
        record.owner = Some(req.me.clone());
        record.owner_inc = Some(req.inc);
        record.epoch = new_epoch;
        self.shards_version += 1;
        self.shards_written.push(req.shard);
        AcquireOutcome::Acquired { epoch: new_epoch }
    }

    pub fn hand_off(&mut self, req: &HandoffRequest) -> HandoffOutcome {
        let before = self.shard_bytes(req.shard);
        let outcome = self.hand_off_unbilled(req);
        self.shard_resized(req.shard, before);
        let bytes = before.max(self.shard_bytes(req.shard));
        self.wrote(1, units::write_units(bytes, false));
        outcome
    }

    fn hand_off_unbilled(&mut self, req: &HandoffRequest) -> HandoffOutcome {
        match self.shards.get_mut(&req.shard) {
            Some(s) if s.owner.as_ref() == Some(&req.me) && s.epoch == req.epoch => {
                s.owner = Some(req.to.clone());
                s.owner_inc = Some(req.to_inc);
                s.epoch += 1;
                s.moves += 1;
                let epoch = s.epoch;
                self.shards_version += 1;
                self.shards_written.push(req.shard);
                HandoffOutcome::Done { epoch }
            }
            _ => HandoffOutcome::NotOwner,
        }
    }

    pub fn mark_dead(&mut self, req: &MarkDeadRequest) -> MarkDeadOutcome {
        let before = self.node_bytes(&req.node);
        let outcome = self.mark_dead_unbilled(req);
        self.node_resized(&req.node, before);
        let bytes = before.max(self.node_bytes(&req.node));
        self.wrote(1, units::write_units(bytes, false));
        outcome
    }

    fn mark_dead_unbilled(&mut self, req: &MarkDeadRequest) -> MarkDeadOutcome {
        match self.nodes.get_mut(&req.node) {
            Some(n) if n.hb == req.observed_hb && n.inc == req.inc => {
                n.state = NodeState::Dead;
                MarkDeadOutcome::Marked
            }
            _ => MarkDeadOutcome::Alive,
        }
    }

    pub fn evict(&mut self, req: &EvictRequest) -> EvictOutcome {
        let before = self.node_bytes(&req.node);
        let outcome = match self.nodes.get_mut(&req.node) {
            Some(n) if n.inc == req.inc => {
                n.evicted_by.get_or_insert_with(|| req.by.clone());
                EvictOutcome::Evicted { hb: n.hb }
            }
            _ => EvictOutcome::NotThere,
        };
        self.node_resized(&req.node, before);
        let bytes = before.max(self.node_bytes(&req.node));
        self.wrote(1, units::write_units(bytes, false));
        outcome
    }

    pub fn retire(&mut self, req: &RetireRequest) -> RetireOutcome {
        // A delete bills the size of the item it deletes (or would have).
        let bytes = self.shard_bytes(req.shard);
        self.wrote(1, units::write_units(bytes, false));
        match self.shards.get(&req.shard) {
            Some(s) if s.epoch == req.epoch => {
                self.shards.remove(&req.shard);
                self.shard_bytes_total -= bytes;
                self.shards_version += 1;
                RetireOutcome::Retired
            }
            None => RetireOutcome::Retired,
            Some(_) => RetireOutcome::Changed,
        }
    }

    // ----- hand edits ----------------------------------------------------

    /// `delete-item` of a shard item.
    pub fn delete_shard(&mut self, shard: ShardId) {
        self.shard_bytes_total -= self.shard_bytes(shard);
        self.shards.remove(&shard);
        self.shards_version += 1;
    }

    /// `delete-item` of a node item.
    pub fn delete_node(&mut self, node: &NodeId) {
        self.node_bytes_total -= self.node_bytes(node);
        self.nodes.remove(node);
    }

    /// `update-item … SET state = dead` on any node.
    pub fn set_state_by_hand(&mut self, node: &NodeId, state: NodeState) {
        let before = self.node_bytes(node);
        if let Some(n) = self.nodes.get_mut(node) {
            n.state = state;
        }
        self.node_resized(node, before);
    }

    /// A `put-item` of something the agent cannot read. A key that names a
    /// node or shard (`node#x`, `shard#10.200.0.1/32`) replaces that item.
    pub fn put_junk(&mut self, key: &str, reason: &str) {
        self.rare_bytes_cache.set(None);
        let node = key.strip_prefix("node#").map(NodeId::new);
        let shard = key.strip_prefix("shard#").and_then(|s| s.parse().ok());
        if let Some(node) = &node {
            self.delete_node(node);
        }
        if let Some(shard) = shard {
            self.shard_bytes_total -= self.shard_bytes(shard);
            self.shards.remove(&shard);
            self.shards_version += 1;
        }
        self.junk.insert(
            key.to_string(),
            Junk {
                reason: reason.to_string(),
                node,
                shard,
            },
        );
    }

    pub fn delete_junk(&mut self, key: &str) {
        self.rare_bytes_cache.set(None);
        self.junk.remove(key);
    }

    /// The table deleted and created again (or restored empty): every item
    /// is gone.
    pub fn recreate(&mut self) {
        let (counters, version) = (self.counters, self.shards_version);
        let written = std::mem::take(&mut self.shards_written);
        *self = Self::default();
        self.counters = counters;
        self.shards_version = version + 1;
        self.shards_written = written;
    }

    // ----- checks ----------------------------------------------------------

    /// Changes whenever a shard item does.
    pub fn shards_version(&self) -> u64 {
        self.shards_version
    }

    /// The shard items written since the first `seen` writes, in order
    /// (a shard once per write), and how many writes there were in all.
    /// Items removed are not listed: they have no owner to check.
    pub fn shards_written_since(&self, seen: usize) -> (&[ShardId], usize) {
        let all = self.shards_written.len();
        (self.shards_written.get(seen..).unwrap_or_default(), all)
    }

    /// The current record of a shard, without counting a read (for checks).
    pub fn peek_shard(&self, shard: ShardId) -> Option<&ShardRecord> {
        self.shards.get(&shard)
    }

    pub fn peek_node(&self, node: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }

    pub fn shard_ids(&self) -> BTreeSet<ShardId> {
        self.shards.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_size_follows_every_change_and_scans_bill_it() {
        let mut table = LeaseTable::default();
        assert_eq!(table.table_bytes(), 0);
        let layout = ShardLayout::from_shards(["10.200.0.1/32".parse().expect("a shard")]);
        table.publish_layout(&layout);
        let with_layout = table.table_bytes();
        assert_eq!(with_layout, units::layout_item_bytes(&layout));
        table.put_junk("junk#1", "by hand");
        assert!(table.table_bytes() > with_layout);
        table.delete_junk("junk#1");
        assert_eq!(table.table_bytes(), with_layout);
        // An eventually consistent scan of under 4 KB: half a unit.
        table.read_nodes();
        assert_eq!(table.counters().read_half_units, 1);
        assert_eq!(table.counters().write_units, 1);
        table.recreate();
        assert_eq!(table.table_bytes(), 0);
    }

    /// Every change of an item keeps the running size what sizing each item
    /// says.
    #[test]
    fn the_running_size_is_the_sum_of_the_items() {
        use crate::layout::LayoutId;
        use crate::types::{EniId, Incarnation, NodeConfig, NodeInfo};
        let mut table = LeaseTable::default();
        let check = |table: &LeaseTable, what: &str| {
            assert_eq!(table.table_bytes(), table.table_bytes_recounted(), "after {what}")
        };
        let shard = |n: u8| -> ShardId { format!("10.200.0.{n}/32").parse().expect("a shard") };
        let beat = |id: &str, inc: u64, kind: BeatKind, hb: u64| HeartbeatRequest {
            info: NodeInfo {
                id: NodeId::new(id),
                eni: EniId(format!("eni-{id}")),
                az: "az-0".into(),
                addr: "10.0.0.1".into(),
                weight: 1,
                version: "v".into(),
            },
            config: NodeConfig {
                layout: LayoutId("l".into()),
                route_tables: Vec::new(),
                lease_ttl: std::time::Duration::from_secs(15),
                heartbeat_interval: std::time::Duration::from_secs(5),
                peer_port: None,
            },
            inc: Incarnation(inc),
            state: NodeState::Active,
            kind,
            epoch_floor: hb * 1000,
            register_hb: hb,
        };
        for (id, inc) in [("a", 1), ("b", 2), ("c", 3)] {
            table.heartbeat(&beat(id, inc, BeatKind::Register, 1));
            check(&table, "a registration");
        }
        for hb in 0..120 {
            table.heartbeat(&beat("a", 1, BeatKind::Renew, hb));
        }
        check(&table, "renewals");
        table.heartbeat(&beat("b", 9, BeatKind::Renew, 1));
        check(&table, "a renewal of another incarnation");
        let acquire = |n: u8, me: &str, inc: u64, expect: Expect| AcquireRequest {
            shard: shard(n),
            me: NodeId::new(me),
            inc: Incarnation(inc),
            expect,
        };
        for n in 1..=20 {
            table.acquire(&acquire(
                n,
                "a",
                1,
                Expect::Free {
                    next_epoch: u64::from(n) * 7,
                },
            ));
        }
        check(&table, "claims");
        table.hand_off(&HandoffRequest {
            shard: shard(1),
            me: NodeId::new("a"),
            epoch: 7,
            to: NodeId::new("bb"),
            to_inc: Incarnation(2),
        });
        check(&table, "a hand-off");
        table.evict(&EvictRequest {
            node: NodeId::new("c"),
            inc: Incarnation(3),
            by: NodeId::new("a"),
        });
        check(&table, "an eviction");
        table.acquire(&acquire(
            2,
            "b",
            2,
            Expect::GoneOwner {
                owner: NodeId::new("a"),
                epoch: 14,
                check: NodeCheck::Unchanged {
                    hb: 119,
                    inc: Incarnation(1),
                },
            },
        ));
        check(&table, "a takeover");
        table.mark_dead(&MarkDeadRequest {
            node: NodeId::new("b"),
            inc: Incarnation(2),
            observed_hb: 1,
        });
        check(&table, "marking dead");
        table.retire(&RetireRequest {
            shard: shard(3),
            epoch: 21,
        });
        check(&table, "a retirement");
        table.delete_shard(shard(4));
        table.delete_node(&NodeId::new("c"));
        table.set_state_by_hand(&NodeId::new("a"), NodeState::Draining);
        check(&table, "edits by hand");
        table.put_junk("shard#10.200.0.5/32", "by hand");
        table.put_junk("node#a", "by hand");
        check(&table, "junk");
        table.heartbeat(&beat("a", 1, BeatKind::Register, 2));
        table.delete_junk("shard#10.200.0.5/32");
        check(&table, "junk replaced and deleted");
        table.announce_change();
        table.publish_layout(&ShardLayout::from_shards([shard(1), shard(2)]));
        check(&table, "the fleet and layout items");
        table.recreate();
        check(&table, "a re-created table");
    }
}
