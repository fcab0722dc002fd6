//! The faults a simulation can inject, and a seeded generator of random
//! fault schedules.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use crate::config::LeaseConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`: the node stops; what it had in flight still lands.
    Crash { node: usize },
    /// SIGSTOP for `length`, then SIGCONT: a zombie that wakes up.
    Pause { node: usize, length: Duration },
    /// The node cannot reach the lease store (its data plane stays up).
    Partition { node: usize, length: Duration },
    /// Every store call fails for everyone.
    StoreOutage { length: Duration },
    /// A new node joins the fleet.
    Join,
    /// Graceful leave: the node drains, then exits.
    Drain { node: usize },
    /// An operator points a route at the wrong node by hand.
    RouteDrift { shard: usize, to_node: usize },
}

impl Fault {
    /// How long the fault lasts once injected.
    pub fn length(&self) -> Duration {
        match self {
            Fault::Pause { length, .. } | Fault::Partition { length, .. } | Fault::StoreOutage { length } => *length,
            _ => Duration::ZERO,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "partition",
            Fault::StoreOutage { .. } => "store-outage",
            Fault::Join => "join",
            Fault::Drain { .. } => "drain",
            Fault::RouteDrift { .. } => "route-drift",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    /// Virtual time since the start of the run.
    pub at: Duration,
    pub fault: Fault,
}

/// A random schedule over `window`, never leaving the fleet with fewer than
/// two nodes that have not crashed or drained.
pub fn random_schedule(
    rng: &mut SmallRng,
    nodes: usize,
    shards: usize,
    lease: &LeaseConfig,
    start: Duration,
    window: Duration,
    count: usize,
) -> Vec<ScheduledFault> {
    let ttl_ms = lease.lease_ttl.as_millis() as u64;
    let mut total_nodes = nodes;
    let mut gone = std::collections::BTreeSet::new();
    let mut schedule = Vec::new();
    for _ in 0..count {
        let at = start + Duration::from_millis(rng.random_range(0..window.as_millis() as u64));
        let alive: Vec<usize> = (0..total_nodes).filter(|n| !gone.contains(n)).collect();
        let pick = alive[rng.random_range(0..alive.len())];
        let can_lose = alive.len() > 2;
        let fault = match rng.random_range(0..8) {
            0 if can_lose => {
                gone.insert(pick);
                Fault::Crash { node: pick }
            }
            1 if can_lose => {
                gone.insert(pick);
                Fault::Drain { node: pick }
            }
            2 => Fault::Pause {
                node: pick,
                length: Duration::from_millis(rng.random_range(ttl_ms / 2..ttl_ms * 3)),
            },
            3 => Fault::Partition {
                node: pick,
                length: Duration::from_millis(rng.random_range(ttl_ms / 2..ttl_ms * 3)),
            },
            4 => Fault::StoreOutage {
                length: Duration::from_millis(rng.random_range(500..ttl_ms * 3)),
            },
            5 => {
                total_nodes += 1;
                Fault::Join
            }
            6 => Fault::RouteDrift {
                shard: rng.random_range(0..shards.max(1)),
                to_node: pick,
            },
            _ => Fault::Pause {
                node: pick,
                length: Duration::from_millis(rng.random_range(10..ttl_ms / 2)),
            },
        };
        schedule.push(ScheduledFault { at, fault });
    }
    // Node indices are handed out in schedule order, so sort by time and
    // drop faults aimed at nodes that have not joined yet.
    schedule.sort_by_key(|f| f.at);
    let mut joined = nodes;
    schedule.retain(|f| {
        let target = match &f.fault {
            Fault::Join => {
                joined += 1;
                return true;
            }
            Fault::Crash { node }
            | Fault::Pause { node, .. }
            | Fault::Partition { node, .. }
            | Fault::Drain { node } => *node,
            Fault::RouteDrift { to_node, .. } => *to_node,
            Fault::StoreOutage { .. } => 0,
        };
        target < joined
    });
    schedule
}
