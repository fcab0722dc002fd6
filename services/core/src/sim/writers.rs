//! Who may write each shard's routes, as of each node's latest step: the
//! one-writer check asks it instead of asking every node about every shard
//! a node that just stepped holds (nodes × shards per event, in a fleet of
//! a thousand).
//!
//! A node gains or loses the right to write a shard only when its machine
//! steps (with time alone the right only runs out, at the instant recorded
//! here), so the entries of the nodes that did not step stay true.

use std::collections::HashMap;

use crate::machine::Machine;
use crate::time::Instant;
use crate::types::ShardId;

#[derive(Default)]
pub(super) struct Writers {
    /// By shard: the nodes that may write it, each until when.
    by_shard: HashMap<ShardId, Vec<(usize, Instant)>>,
    /// By node: the shards it has entries for.
    by_node: Vec<Vec<ShardId>>,
}

impl Writers {
    /// Records what `machine`, node `node`'s, may write now that it has
    /// stepped.
    pub(super) fn update(&mut self, node: usize, machine: &Machine) {
        if self.by_node.len() <= node {
            self.by_node.resize_with(node + 1, Vec::new);
        }
        for shard in std::mem::take(&mut self.by_node[node]) {
            if let Some(writers) = self.by_shard.get_mut(&shard) {
                writers.retain(|(n, _)| *n != node);
                if writers.is_empty() {
                    self.by_shard.remove(&shard);
                }
            }
        }
        for (shard, _) in machine.held() {
            if let Some(until) = machine.writable_until(shard) {
                self.by_shard.entry(shard).or_default().push((node, until));
                self.by_node[node].push(shard);
            }
        }
    }

    /// The nodes that may write `shard` at `now`, as far as their machines
    /// go (whether they run is the caller's to check), in node order.
    pub(super) fn of(&self, shard: ShardId, now: Instant) -> Vec<usize> {
        let mut nodes: Vec<usize> = self
            .by_shard
            .get(&shard)
            .into_iter()
            .flatten()
            .filter(|(_, until)| now < *until)
            .map(|(n, _)| *n)
            .collect();
        nodes.sort_unstable();
        nodes
    }
}
