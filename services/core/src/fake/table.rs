//! An in-memory lease table with DynamoDB's conditional semantics, as plain
//! synchronous data. [`super::FakeLeaseStore`] wraps it for async callers;
//! the simulation drives it directly on virtual time.

use std::collections::BTreeMap;

use crate::store::{
    AcquireOutcome, AcquireRequest, Expect, HandoffOutcome, HandoffRequest, HeartbeatOutcome, HeartbeatRequest,
    MarkDeadOutcome, MarkDeadRequest,
};
use crate::types::{NodeId, NodeRecord, NodeState, ShardId, ShardRecord};

/// Calls and items, counted as DynamoDB would bill them (one write per
/// conditional update or transaction item, one read per item returned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub write_calls: u64,
    pub read_calls: u64,
    pub items_written: u64,
    pub items_read: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    nodes: BTreeMap<NodeId, NodeRecord>,
    shards: BTreeMap<ShardId, ShardRecord>,
    counters: TableCounters,
}

impl LeaseTable {
    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    fn wrote(&mut self, items: u64) {
        self.counters.write_calls += 1;
        self.counters.items_written += items;
    }

    fn read(&mut self, items: usize) {
        self.counters.read_calls += 1;
        self.counters.items_read += items as u64;
    }

    pub fn heartbeat(&mut self, req: &HeartbeatRequest) -> HeartbeatOutcome {
        self.wrote(1);
        match self.nodes.get_mut(&req.info.id) {
            Some(node) if req.register || node.inc == req.inc => {
                node.hb += 1;
                node.inc = req.inc;
                node.state = req.state;
                node.info = req.info.clone();
                HeartbeatOutcome::Beat(node.hb)
            }
            Some(_) => HeartbeatOutcome::NotMine,
            None if req.register => {
                self.nodes.insert(
                    req.info.id.clone(),
                    NodeRecord {
                        info: req.info.clone(),
                        hb: 1,
                        inc: req.inc,
                        state: req.state,
                    },
                );
                HeartbeatOutcome::Beat(1)
            }
            None => HeartbeatOutcome::NotMine,
        }
    }

    pub fn read_nodes(&mut self) -> Vec<NodeRecord> {
        let nodes: Vec<_> = self.nodes.values().cloned().collect();
        self.read(nodes.len());
        nodes
    }

    pub fn read_shards(&mut self) -> Vec<ShardRecord> {
        let shards: Vec<_> = self.shards.values().cloned().collect();
        self.read(shards.len());
        shards
    }

    pub fn read_shard(&mut self, shard: ShardId) -> Option<ShardRecord> {
        let record = self.shards.get(&shard).cloned();
        self.read(usize::from(record.is_some()));
        record
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
        let shard = self.shards.get(&req.shard);
        let (owner, epoch) = match shard {
            Some(s) => (s.owner.as_ref(), s.epoch),
            None => (None, 0),
        };
        let shard_ok = match &req.expect {
            Expect::Free => owner.is_none(),
            Expect::DeadOwner { owner: x, epoch: e } | Expect::ExpiredOwner { owner: x, epoch: e, .. } => {
                owner == Some(x) && epoch == *e
            }
        };
        let node_ok = !check_node
            || match &req.expect {
                Expect::Free => true,
                Expect::ExpiredOwner { owner, observed_hb, .. } => {
                    self.nodes.get(owner).is_some_and(|n| n.hb == *observed_hb)
                }
                Expect::DeadOwner { owner, .. } => self.nodes.get(owner).is_none_or(|n| n.state == NodeState::Dead),
            };
        // A transaction writes (and bills) both items even when cancelled.
        let items = if matches!(req.expect, Expect::Free) { 1 } else { 2 };
        self.wrote(items);
        if !shard_ok {
            return AcquireOutcome::LostRace;
        }
        if !node_ok {
            return AcquireOutcome::OwnerAlive;
        }
        let record = self.shards.entry(req.shard).or_insert_with(|| ShardRecord {
            id: req.shard,
            vips: req.vips.clone(),
            owner: None,
            owner_inc: None,
            epoch: 0,
            moves: 0,
        });
        if record.owner.is_some() {
            record.moves += 1;
        }
        record.owner = Some(req.me.clone());
        record.owner_inc = Some(req.inc);
        record.vips = req.vips.clone();
        record.epoch += 1;
        AcquireOutcome::Acquired { epoch: record.epoch }
    }

    pub fn hand_off(&mut self, req: &HandoffRequest) -> HandoffOutcome {
        self.wrote(1);
        match self.shards.get_mut(&req.shard) {
            Some(s) if s.owner.as_ref() == Some(&req.me) && s.epoch == req.epoch => {
                s.owner = Some(req.to.clone());
                s.owner_inc = Some(req.to_inc);
                s.epoch += 1;
                s.moves += 1;
                HandoffOutcome::Done { epoch: s.epoch }
            }
            _ => HandoffOutcome::NotOwner,
        }
    }

    pub fn mark_dead(&mut self, req: &MarkDeadRequest) -> MarkDeadOutcome {
        self.wrote(1);
        match self.nodes.get_mut(&req.node) {
            Some(n) if n.hb == req.observed_hb && n.inc == req.inc => {
                n.state = NodeState::Dead;
                MarkDeadOutcome::Marked
            }
            _ => MarkDeadOutcome::Alive,
        }
    }

    /// The current record of a shard, without counting a read (for checks).
    pub fn peek_shard(&self, shard: ShardId) -> Option<&ShardRecord> {
        self.shards.get(&shard)
    }

    pub fn peek_node(&self, node: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }
}
