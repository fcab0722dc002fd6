//! What goes into the machine ([`Input`]) and what comes out ([`Step`]:
//! [`Effect`]s to perform, [`Event`]s to log and count, when to wake it).

use std::sync::Arc;

use crate::layout::{LayoutId, ShardLayout};
use crate::routes::{RouteChange, RouteEntry, RouteError};
use crate::store::{
    AcquireOutcome, AcquireRequest, EvictOutcome, EvictRequest, HandoffOutcome, HandoffRequest, HeartbeatOutcome,
    HeartbeatRequest, MarkDeadOutcome, MarkDeadRequest, RetireOutcome, RetireRequest, Scan, Skipped, StoreErrorKind,
    StoreResult, Watch, WatchRequest,
};
use crate::time::Instant;
use crate::types::{EniId, Epoch, Incarnation, NodeId, NodeRecord, RouteTableId, ShardId, ShardRecord};

use super::mode::{Health, Mode};

/// Which queue a route write joins: failover work goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Failover,
    Rebalance,
    Repair,
}

/// One route change, and what fences it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteCall {
    pub shard: ShardId,
    /// The epoch of the ownership it acts for.
    pub epoch: Epoch,
    pub change: RouteChange,
    pub priority: Priority,
    /// No attempt may go out at or after this instant; before each, the
    /// driver also asks the machine's [`super::Fence`].
    pub deadline: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Heartbeat(HeartbeatRequest),
    ReadNodes,
    ReadShards,
    /// A consistent read of one shard: the fence before a route write.
    ConfirmShard(ShardId),
    /// Write our layout's item (if absent), so peers can read what we serve.
    PublishLayout(Arc<ShardLayout>),
    ReadLayout(LayoutId),
    Acquire(AcquireRequest),
    HandOff(HandoffRequest),
    MarkDead(MarkDeadRequest),
    /// Peers found a node dead: make it so in the store.
    Evict(EvictRequest),
    ChangeRoute(RouteCall),
    /// Read back the routes of one table.
    DescribeTable(RouteTableId),
    Retire(RetireRequest),
    /// The cheap read of a settled node: the fleet's change counter and
    /// the item of the node it watches.
    Watch(WatchRequest),
    /// Bump the fleet's change counter: we changed membership or
    /// ownership, and settled nodes should read the table again.
    AnnounceChange,
    /// Stop the agent.
    Exit(ExitReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Drained: this node holds nothing any more.
    Drained,
    /// The drain did not finish within the drain timeout: what the node
    /// still holds moves when its lease runs out, as after a crash.
    DrainTimedOut,
    /// Asked to stop without draining (an agent restart or upgrade): the
    /// node keeps its shards, and a prompt restart adopts them again.
    Stopped,
    /// Another process registered this node id.
    Superseded,
    /// Peers found this incarnation dead and evicted it; its shards are
    /// being taken over. The driver starts the node over as a new
    /// incarnation (which holds nothing, and takes again as any new node).
    Evicted,
}

impl ExitReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitReason::Drained => "drained",
            ExitReason::DrainTimedOut => "drain_timed_out",
            ExitReason::Stopped => "stopped",
            ExitReason::Superseded => "superseded",
            ExitReason::Evicted => "evicted",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A timer fired (the machine's own `wake_at`, or any periodic tick).
    Tick,
    /// Drain (true: termination, an operator) or stop draining (false).
    Drain(bool),
    /// Stop without draining: exits at once unless a drain is under way.
    Stop,
    /// What the haproxy checks say (always `Healthy` when the configuration
    /// turns checks off explicitly).
    Health(Health),
    /// Whether the source/destination check of our ENI is known to be off;
    /// while it is not, the VPC drops traffic for VIPs routed to us.
    SourceDestCheckOff(bool),
    /// Whether the peer probes of the others stopped reaching us
    /// ([`crate::peers::Detector::cut_off`]).
    PeersCutOff(bool),
    Heartbeat {
        sent_at: Instant,
        result: StoreResult<HeartbeatOutcome>,
    },
    Nodes {
        sent_at: Instant,
        result: StoreResult<Scan<NodeRecord>>,
    },
    Shards {
        sent_at: Instant,
        result: StoreResult<Scan<ShardRecord>>,
    },
    Layout {
        id: LayoutId,
        result: StoreResult<Option<ShardLayout>>,
    },
    LayoutPublished {
        result: StoreResult<()>,
    },
    Confirmed {
        shard: ShardId,
        sent_at: Instant,
        result: StoreResult<Option<ShardRecord>>,
    },
    Acquired {
        shard: ShardId,
        sent_at: Instant,
        result: StoreResult<AcquireOutcome>,
    },
    HandedOff {
        shard: ShardId,
        sent_at: Instant,
        result: StoreResult<HandoffOutcome>,
    },
    MarkedDead {
        node: NodeId,
        result: StoreResult<MarkDeadOutcome>,
    },
    /// The peer detector found incarnation `inc` of `node` dead (probes,
    /// direct and through other peers, went unanswered).
    PeerDead {
        node: NodeId,
        inc: Incarnation,
    },
    Evicted {
        node: NodeId,
        inc: Incarnation,
        result: StoreResult<EvictOutcome>,
    },
    RouteChanged {
        call: RouteCall,
        result: Result<(), RouteError>,
    },
    TableDescribed {
        table: RouteTableId,
        sent_at: Instant,
        /// Shared: a simulation hands every node the same read-back of a
        /// table that did not change (thousands of routes each).
        result: Result<Arc<[RouteEntry]>, RouteError>,
    },
    Retired {
        shard: ShardId,
        result: StoreResult<RetireOutcome>,
    },
    Watched {
        result: StoreResult<Watch>,
    },
    ChangeAnnounced {
        result: StoreResult<u64>,
    },
}

/// Things that happened, for logs, metrics and the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Registered,
    /// Our node item had vanished (deleted by hand, or the table was
    /// re-created) and we wrote it again.
    Reregistered,
    LeaseLapsed,
    LeaseRenewed,
    ModeChanged {
        from: Mode,
        to: Mode,
    },
    /// A stop was asked for during a drain; the drain goes on (it is
    /// bounded by the drain timeout).
    StopDeferred,
    NodeGone {
        node: NodeId,
    },
    NodeMarkedDead {
        node: NodeId,
    },
    /// We evicted `node` on the word of the peer probes.
    NodeEvicted {
        node: NodeId,
    },
    /// We weighed the `held` peer verdicts whose nodes others may take
    /// from; `ranked`: our quota would grow without those nodes, so the
    /// orphans were ranked to find whose shards we take.
    VerdictsWeighed {
        held: usize,
        ranked: bool,
    },
    Acquired {
        shard: ShardId,
        from: Option<NodeId>,
        epoch: Epoch,
    },
    /// A shard we held, claimed again under our latest registration.
    Reclaimed {
        shard: ShardId,
        epoch: Epoch,
    },
    HandedOff {
        shard: ShardId,
        to: NodeId,
        epoch: Epoch,
    },
    Lost {
        shard: ShardId,
        to: Option<NodeId>,
    },
    /// A route call finished: made, or `error` (`Fenced`: never sent,
    /// because the shard moved or the lease lapsed while it waited).
    RouteChanged {
        call: RouteCall,
        error: Option<RouteError>,
    },
    RouteDrift {
        shard: ShardId,
        table: RouteTableId,
        found: Option<EniId>,
    },
    /// A shard no node serves any more: its routes and item are gone.
    Retired {
        shard: ShardId,
    },
    /// The items a read could not use changed (new ones appeared, or all
    /// were fixed); the list is the current one.
    ItemsSkipped {
        skipped: Vec<Skipped>,
    },
    StoreError {
        kind: StoreErrorKind,
        detail: String,
    },
    /// A read-back of a route table failed.
    RouteError {
        table: Option<RouteTableId>,
        detail: String,
    },
}

/// The result of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    /// When to feed the next `Input::Tick` if nothing else arrives first.
    pub wake_at: Option<Instant>,
}
