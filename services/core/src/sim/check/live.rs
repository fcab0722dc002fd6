//! The running nodes as the checks look at them, gathered once per look.

use std::collections::{BTreeMap, BTreeSet};

use crate::sim::World;
use crate::types::{NodeId, ShardId};

/// The running nodes, looked up once for many shards: whether some running
/// node serves a shard, and whether the shard is served by its owner.
pub(super) struct LiveView<'w> {
    eni_of: BTreeMap<&'w NodeId, &'w crate::types::EniId>,
    tables: BTreeSet<&'w crate::types::RouteTableId>,
    /// The layouts the running nodes serve (nodes share few of them).
    layouts: Vec<&'w crate::layout::ShardLayout>,
}

impl<'w> LiveView<'w> {
    pub(super) fn of(world: &'w World) -> Self {
        let live = || world.nodes.iter().filter(|n| n.is_live());
        let mut layouts: Vec<&crate::layout::ShardLayout> = Vec::new();
        for node in live() {
            let layout = &*node.machine.setup().layout;
            if !layouts.iter().any(|l| std::ptr::eq(*l, layout) || *l == layout) {
                layouts.push(layout);
            }
        }
        Self {
            eni_of: live().map(|n| (n.id(), n.eni())).collect(),
            tables: live().flat_map(|n| n.machine.setup().route_tables.iter()).collect(),
            layouts,
        }
    }

    pub(super) fn serves(&self, shard: ShardId) -> bool {
        self.layouts.iter().any(|l| l.contains(shard))
    }

    /// The shard has a running owner.
    pub(super) fn owned(&self, world: &World, shard: ShardId) -> bool {
        world
            .table
            .peek_shard(shard)
            .and_then(|r| r.owner.as_ref())
            .is_some_and(|owner| self.eni_of.contains_key(owner))
    }

    /// The shard has a running owner and its route, in every table some
    /// running node maintains, points at that owner.
    pub(super) fn served_by_owner(&self, world: &World, shard: ShardId) -> bool {
        let Some(owner) = world.table.peek_shard(shard).and_then(|r| r.owner.as_ref()) else {
            return false;
        };
        let Some(eni) = self.eni_of.get(owner) else {
            return false;
        };
        self.tables
            .iter()
            .all(|table| world.routes.target(table, shard.vip()) == Some(*eni))
    }
}

pub(super) fn live_node(world: &World, id: &NodeId) -> Option<usize> {
    world.node_index.get(id).copied().filter(|&i| world.nodes[i].is_live())
}
