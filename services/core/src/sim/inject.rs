//! Fault injection: what each [`Fault`] does to the world when it strikes.

use std::time::Duration;

use super::{shard_of, vip_of, Fault, SimConfig, SimNode, Status, Variant, What, World};
use crate::machine::{Health, Input};
use crate::types::NodeState;

/// How long a node's agent is down while it restarts with a new
/// configuration ([`Fault::Reconfigure`]).
const RECONFIGURE_DOWNTIME: Duration = Duration::from_millis(200);

impl World {
    pub(super) fn inject(&mut self, config: &SimConfig, fault: &Fault) {
        let now = self.now;
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{now} FAULT {fault:?}"));
        }
        let usable = |n: &usize, nodes: &Vec<SimNode>| {
            *n < nodes.len() && matches!(nodes[*n].status, Status::Running | Status::Paused { .. })
        };
        match fault {
            Fault::Crash { node } if usable(node, &self.nodes) => self.nodes[*node].status = Status::Down,
            Fault::Pause { node, length } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                let until = now + *length;
                self.nodes[*node].status = Status::Paused { until };
                self.schedule(until, What::Resume(*node));
            }
            Fault::Partition { node, length } if usable(node, &self.nodes) => {
                self.nodes[*node].partitioned_until = Some(now + *length);
            }
            Fault::StoreOutage { length } => self.store_down_until = Some(now + *length),
            Fault::Join => {
                let index = self.nodes.len();
                self.add_node(config, index, config.base_variant());
            }
            Fault::Drain { node } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                self.step(config, *node, Input::Drain(true));
            }
            Fault::RouteDrift { shard, to_node } if *to_node < self.nodes.len() => {
                let eni = self.nodes[*to_node].eni().clone();
                if let Some(table) = self.tables.first().cloned() {
                    self.routes.set_by_hand(&table, vip_of(*shard), &eni);
                }
            }
            Fault::Restart { node, down, graceful } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                let variant = self.nodes[*node].variant.clone();
                self.stop(config, *node, *graceful, *down, variant);
            }
            Fault::Reconfigure { node, variant } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                self.stop(config, *node, true, RECONFIGURE_DOWNTIME, variant.clone());
            }
            Fault::HealthDown { node, length } if usable(node, &self.nodes) => {
                let generation = self.nodes[*node].generation;
                if let Some(d) = self.peers.detector(*node) {
                    d.set_healthy(false);
                }
                self.deliver(config, *node, Input::Health(Health::Unhealthy));
                self.schedule(
                    now + *length,
                    What::Healthy {
                        node: *node,
                        generation,
                    },
                );
            }
            Fault::DeleteShardItem { shard } => self.table.delete_shard(shard_of(*shard)),
            Fault::DeleteNodeItem { node } if *node < self.nodes.len() => {
                let id = self.nodes[*node].id().clone();
                self.table.delete_node(&id);
            }
            Fault::JunkItem { over_node, length } => {
                let key = match over_node {
                    Some(n) if *n < self.nodes.len() => format!("node#{}", self.nodes[*n].id()),
                    _ => format!("node#junk-{}", self.seq),
                };
                self.table.put_junk(&key, "attribute hb is not a number");
                self.schedule(now + *length, What::RemoveJunk(key));
            }
            Fault::MarkDeadByHand { node } if *node < self.nodes.len() => {
                let id = self.nodes[*node].id().clone();
                self.table.set_state_by_hand(&id, NodeState::Dead);
            }
            Fault::TableLoss { length } => {
                self.table.recreate();
                self.table_missing_until = Some(now + *length);
            }
            Fault::SlowStore { node, latency, length } => {
                self.slow_store.retain(|(_, _, until)| now < *until);
                self.slow_store.push((*node, *latency, now + *length));
            }
            Fault::SlowEc2 { node, latency, length } => {
                self.slow_ec2.retain(|(_, _, until)| now < *until);
                self.slow_ec2.push((*node, *latency, now + *length));
            }
            Fault::FlakyStore { percent, length } => self.flaky_store = Some((*percent, now + *length)),
            Fault::FlakyEc2 { percent, length } => self.ec2.flaky = Some((*percent, now + *length)),
            Fault::PeerCut { a, b, length } => self.peers.cut(*a, *b, now + *length),
            Fault::PeerIsolation { node, length } => self.peers.isolate(*node, now + *length),
            Fault::PeerLoss { percent, length } => self.peers.set_loss(*percent, now + *length),
            Fault::TableFails { table, length } => {
                if let Some(table) = self.tables.get(*table).cloned() {
                    self.ec2.failing.insert(table, now + *length);
                }
            }
            _ => {}
        }
    }

    /// Stops node `index`'s agent (SIGTERM if `graceful`, else `kill -9`)
    /// and starts it again `down` later with `variant`.
    pub(super) fn stop(&mut self, config: &SimConfig, index: usize, graceful: bool, down: Duration, variant: Variant) {
        if graceful {
            self.step(config, index, Input::Stop);
        }
        // A stop during a drain is deferred by the agent; the sim's process
        // manager does not wait (systemd would not either, past its stop
        // timeout).
        self.nodes[index].status = Status::Down;
        self.schedule(self.now + down, What::Start { node: index, variant });
    }
}
