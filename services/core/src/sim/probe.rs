//! Counters read off the simulated world at fixed instants, so that a
//! report can give rates over any window (at rest, during an event) rather
//! than over the whole run.

use std::time::Duration;

use super::World;
use crate::fake::{RouteCounters, TableCounters};

/// The world's counters at one instant, all cumulative from the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub at: Duration,
    pub store: TableCounters,
    pub routes: RouteCounters,
    /// Mutating EC2 attempts refused because the account's bucket was empty.
    pub ec2_throttled: u64,
    /// Store calls refused for DynamoDB's throughput limits (with
    /// [`super::SimConfig::store_throughput`]).
    pub store_throttled: u64,
    /// Running nodes.
    pub live_nodes: usize,
}

impl World {
    pub(super) fn probe(&self) -> Probe {
        Probe {
            at: self.now.as_offset(),
            store: self.table.counters(),
            routes: self.routes.counters(),
            ec2_throttled: self.ec2.throttled,
            store_throttled: self.store_throughput.as_ref().map_or(0, |t| t.throttled),
            live_nodes: self.nodes.iter().filter(|n| n.is_live()).count(),
        }
    }
}
