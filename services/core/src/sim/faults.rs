//! The faults a simulation can inject, and a seeded generator of random
//! fault schedules.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use crate::config::LeaseConfig;

/// How a node is configured: which layout version it serves (version `k`
/// serves VIPs `k .. k + shards`, so each version drops the oldest VIP and
/// adds a new one), how many of the fleet's route tables it maintains, and
/// its lease timings. Nodes that differ disagree, as during a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub layout_version: u32,
    pub route_tables: usize,
    pub lease: LeaseConfig,
}

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
    /// The agent stops (SIGTERM, or `kill -9` with `graceful` false) and a
    /// new process with the same node id starts `down` later: an upgrade.
    Restart {
        node: usize,
        down: Duration,
        graceful: bool,
    },
    /// The node restarts (as [`Fault::Restart`]) with another configuration.
    Reconfigure { node: usize, variant: Variant },
    /// Its haproxy fails for `length`: the node turns unhealthy, then back.
    HealthDown { node: usize, length: Duration },
    /// Someone deletes a shard item by hand.
    DeleteShardItem { shard: usize },
    /// Someone deletes a node's item by hand.
    DeleteNodeItem { node: usize },
    /// Someone puts an item the agents cannot read: a stray `node#junk`, or
    /// (with `over_node`) a corrupt copy of a live node's item.
    JunkItem { over_node: Option<usize>, length: Duration },
    /// Someone marks a live node dead by hand.
    MarkDeadByHand { node: usize },
    /// The table is deleted, and created again empty `length` later.
    TableLoss { length: Duration },
    /// Store calls of one node (or everyone's) take up to `latency` longer
    /// each way, for `length`: a congested path, a slow endpoint.
    SlowStore {
        node: Option<usize>,
        latency: Duration,
        length: Duration,
    },
    /// `percent` of store calls fail for `length`: half throttled before
    /// they apply, half applied with the answer lost.
    FlakyStore { percent: u8, length: Duration },
    /// `percent` of EC2 calls fail for `length`: half with a server error
    /// before they apply, half applied with the answer lost.
    FlakyEc2 { percent: u8, length: Duration },
    /// Route calls of one node take `latency` longer to reach EC2, for
    /// `length`: a congested path. A write sent just before the node is
    /// evicted can then land after its new owner's.
    SlowEc2 {
        node: usize,
        latency: Duration,
        length: Duration,
    },
    /// Every call against one route table fails as if it did not exist
    /// (deleted, or access denied), for `length`.
    TableFails { table: usize, length: Duration },
    /// Nodes `a` and `b` cannot reach each other (both ways) for `length`;
    /// both still reach everyone else and the store.
    PeerCut { a: usize, b: usize, length: Duration },
    /// The node reaches no peer (and none reaches it) for `length`; it still
    /// reaches the store and serves traffic.
    PeerIsolation { node: usize, length: Duration },
    /// `percent` of the datagrams between nodes are lost, for `length`.
    PeerLoss { percent: u8, length: Duration },
}

impl Fault {
    /// How long the fault lasts once injected.
    pub fn length(&self) -> Duration {
        match self {
            Fault::Pause { length, .. }
            | Fault::Partition { length, .. }
            | Fault::StoreOutage { length }
            | Fault::HealthDown { length, .. }
            | Fault::JunkItem { length, .. }
            | Fault::TableLoss { length }
            | Fault::SlowStore { length, .. }
            | Fault::FlakyStore { length, .. }
            | Fault::FlakyEc2 { length, .. }
            | Fault::TableFails { length, .. }
            | Fault::SlowEc2 { length, .. }
            | Fault::PeerCut { length, .. }
            | Fault::PeerIsolation { length, .. }
            | Fault::PeerLoss { length, .. } => *length,
            Fault::Restart { down, .. } => *down,
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
            Fault::Restart { .. } => "restart",
            Fault::Reconfigure { .. } => "reconfigure",
            Fault::HealthDown { .. } => "health-down",
            Fault::DeleteShardItem { .. } => "delete-shard-item",
            Fault::DeleteNodeItem { .. } => "delete-node-item",
            Fault::JunkItem { .. } => "junk-item",
            Fault::MarkDeadByHand { .. } => "mark-dead-by-hand",
            Fault::TableLoss { .. } => "table-loss",
            Fault::SlowStore { .. } => "slow-store",
            Fault::FlakyStore { .. } => "flaky-store",
            Fault::FlakyEc2 { .. } => "flaky-ec2",
            Fault::TableFails { .. } => "table-fails",
            Fault::SlowEc2 { .. } => "slow-ec2",
            Fault::PeerCut { .. } => "peer-cut",
            Fault::PeerIsolation { .. } => "peer-isolation",
            Fault::PeerLoss { .. } => "peer-loss",
        }
    }

    /// The node the fault strikes, if it strikes one.
    pub fn node(&self) -> Option<usize> {
        match self {
            Fault::Crash { node }
            | Fault::Pause { node, .. }
            | Fault::Partition { node, .. }
            | Fault::Drain { node }
            | Fault::Restart { node, .. }
            | Fault::Reconfigure { node, .. }
            | Fault::HealthDown { node, .. }
            | Fault::DeleteNodeItem { node }
            | Fault::MarkDeadByHand { node }
            | Fault::PeerIsolation { node, .. }
            | Fault::SlowEc2 { node, .. } => Some(*node),
            Fault::PeerCut { a, b, .. } => Some(*a.max(b)),
            Fault::RouteDrift { to_node, .. } => Some(*to_node),
            Fault::JunkItem { over_node, .. } => *over_node,
            Fault::SlowStore { node, .. } => *node,
            Fault::StoreOutage { .. }
            | Fault::Join
            | Fault::DeleteShardItem { .. }
            | Fault::TableLoss { .. }
            | Fault::FlakyStore { .. }
            | Fault::FlakyEc2 { .. }
            | Fault::TableFails { .. }
            | Fault::PeerLoss { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    /// Virtual time since the start of the run.
    pub at: Duration,
    pub fault: Fault,
}

/// Which kinds of fault a random schedule draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Crashes, pauses, partitions, outages, joins, drains, route drift.
    Classic,
    /// The classic faults plus what operators and upgrades do: restarts,
    /// configuration rollouts, health flaps, items deleted or broken by
    /// hand, nodes marked dead by hand, the table lost and re-created.
    Operations,
    /// All of the above plus slow and failing AWS: store latency past the
    /// heartbeat and half a lease, store and EC2 calls that fail or apply
    /// with the answer lost, a route table that fails; and a network
    /// between nodes that cuts links, isolates a node or loses packets.
    Chaos,
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
    mix: Mix,
) -> Vec<ScheduledFault> {
    let ttl_ms = lease.lease_ttl.as_millis() as u64;
    let mut total_nodes = nodes;
    let mut gone = std::collections::BTreeSet::new();
    let mut schedule = Vec::new();
    let kinds = match mix {
        Mix::Classic => 8,
        Mix::Operations => 16,
        Mix::Chaos => 24,
    };
    for _ in 0..count {
        let at = start + Duration::from_millis(rng.random_range(0..window.as_millis() as u64));
        let alive: Vec<usize> = (0..total_nodes).filter(|n| !gone.contains(n)).collect();
        let pick = alive[rng.random_range(0..alive.len())];
        let can_lose = alive.len() > 2;
        let length = |rng: &mut SmallRng| Duration::from_millis(rng.random_range(ttl_ms / 2..ttl_ms * 3));
        let fault = match rng.random_range(0..kinds) {
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
                length: length(rng),
            },
            3 => Fault::Partition {
                node: pick,
                length: length(rng),
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
            8 | 9 => Fault::Restart {
                node: pick,
                down: Duration::from_millis(rng.random_range(100..ttl_ms / 2)),
                graceful: rng.random_bool(0.5),
            },
            10 => Fault::HealthDown {
                node: pick,
                length: length(rng),
            },
            11 => Fault::DeleteShardItem {
                shard: rng.random_range(0..shards.max(1)),
            },
            12 => Fault::DeleteNodeItem { node: pick },
            13 => Fault::JunkItem {
                over_node: rng.random_bool(0.3).then_some(pick),
                length: length(rng),
            },
            14 => Fault::MarkDeadByHand { node: pick },
            15 => Fault::TableLoss {
                length: Duration::from_millis(rng.random_range(200..ttl_ms * 2)),
            },
            16 => Fault::SlowStore {
                node: rng.random_bool(0.5).then_some(pick),
                // Past the heartbeat interval and half a lease, at times.
                latency: Duration::from_millis(rng.random_range(ttl_ms / 10..ttl_ms * 2 / 3)),
                length: length(rng) * 2,
            },
            17 => Fault::FlakyStore {
                percent: rng.random_range(5..40),
                length: length(rng) * 2,
            },
            18 => Fault::FlakyEc2 {
                percent: rng.random_range(5..50),
                length: length(rng) * 2,
            },
            19 => Fault::TableFails {
                table: rng.random_range(0..2),
                length: length(rng) * 3,
            },
            21 if alive.len() > 1 => {
                let other = alive[(alive.iter().position(|n| *n == pick).unwrap_or(0) + 1) % alive.len()];
                Fault::PeerCut {
                    a: pick,
                    b: other,
                    length: length(rng) * 3,
                }
            }
            22 => Fault::PeerIsolation {
                node: pick,
                length: length(rng) * 2,
            },
            23 => Fault::PeerLoss {
                percent: rng.random_range(1..20),
                length: length(rng) * 3,
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
        if f.fault == Fault::Join {
            joined += 1;
            return true;
        }
        f.fault.node().is_none_or(|n| n < joined)
    });
    schedule
}

/// A VIP list rolled through the fleet: every node in turn restarts with
/// `variant`, `gap` apart, starting at `start`.
pub fn rollout(nodes: usize, variant: &Variant, start: Duration, gap: Duration) -> Vec<ScheduledFault> {
    (0..nodes)
        .map(|node| ScheduledFault {
            at: start + gap * node as u32,
            fault: Fault::Reconfigure {
                node,
                variant: variant.clone(),
            },
        })
        .collect()
}
