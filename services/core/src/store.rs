//! `LeaseStore`: the lease operations, shaped around what the protocol does
//! rather than around DynamoDB's API. The agent implements it over DynamoDB;
//! [`crate::fake::FakeLeaseStore`] implements it in memory.
//!
//! Lost races are outcomes, not errors: a conditional write that fails its
//! condition tells the caller something true about the world. Reads are
//! lenient: an item the reader cannot use is reported in [`Scan::skipped`]
//! and the rest of the read stands.

use std::future::Future;

use thiserror::Error;

use crate::layout::{LayoutId, ShardLayout};
use crate::liveness::NodeCheck;
use crate::types::{
    Epoch, Heartbeat, Incarnation, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, ShardId, ShardRecord,
};

/// How a heartbeat writes the node item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeatKind {
    /// `UpdateItem SET hb = hb + 1 … IF inc = :inc AND
    /// attribute_not_exists(evicted_by)`.
    Renew,
    /// A new process: the item is written whatever it held, taking the node
    /// id over for this incarnation (a previous process of this node, dead
    /// or stuck, loses it).
    Register,
    /// Our item vanished (deleted by hand, or the table was re-created):
    /// written again, unless another incarnation registered meanwhile.
    Reregister,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub info: NodeInfo,
    pub config: NodeConfig,
    pub inc: Incarnation,
    pub state: NodeState,
    pub kind: BeatKind,
    /// The highest shard epoch this node has seen.
    pub epoch_floor: Epoch,
    /// The counter a registration's put writes: above every value this
    /// process's item has held (its last put plus every renewal it sent),
    /// so that observers see each put as a heartbeat (a put that always
    /// wrote the same value would look like a node that stopped, while its
    /// answers were lost and it kept registering), and an item written
    /// anew never shows a counter an observer saw stand still before.
    pub register_hb: Heartbeat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The counter moved; the new value.
    Beat(Heartbeat),
    /// Our item is gone: re-register.
    Missing,
    /// Another process holds this node id now (a different incarnation).
    NotMine,
    /// Peers found this incarnation dead and evicted it: it can never
    /// renew again. The process starts over as a new incarnation.
    Evicted,
}

/// An item a read could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The item's key as stored (`node#…`, `shard#…`).
    pub key: String,
    pub reason: String,
    /// The node the key names, when it names one: that node's item exists,
    /// so it is not missing, whatever else is wrong with it.
    pub node: Option<NodeId>,
    /// The shard the key names, when it names one: nobody may claim it as
    /// free while its item is there.
    pub shard: Option<ShardId>,
}

/// What a read of many items returned: the usable records and the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan<T> {
    pub records: Vec<T>,
    pub skipped: Vec<Skipped>,
}

impl<T> Scan<T> {
    pub fn clean(records: Vec<T>) -> Self {
        Self {
            records,
            skipped: Vec::new(),
        }
    }
}

/// What the shard must look like for an acquisition to succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No owner, and no epoch at or above `next_epoch`:
    /// `attribute_not_exists(owner) AND (attribute_not_exists(epoch) OR
    /// epoch < :next)`, setting `epoch = :next`. The claimant passes one
    /// more than the highest epoch it remembers or reads in any node's
    /// floor, so an item that vanished and comes back (a table re-created)
    /// never takes an epoch that a node which remembers the old one would
    /// read as older.
    Free { next_epoch: Epoch },
    /// The owner is gone: a transaction of the shard update
    /// `IF owner = :x AND epoch = :e` and a `ConditionCheck` on the owner's
    /// node item that it is still gone as we saw it (`hb = :hb AND inc =
    /// :inc`, or `attribute_not_exists(pk)`). If the owner heartbeated or
    /// came back meanwhile, the transaction is cancelled: it is alive.
    GoneOwner {
        owner: NodeId,
        epoch: Epoch,
        check: NodeCheck,
    },
    /// We hold it already, at `epoch`, by a write made before our latest
    /// registration (or not by us): `IF owner = :me AND epoch = :e`, setting
    /// `epoch = :e + 1` and our incarnation. A re-claim moves nothing; it
    /// makes the claim ours again, so that an observer who counts us
    /// missing from an older deletion sees the epoch move and starts over.
    Held { epoch: Epoch },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    pub shard: ShardId,
    pub me: NodeId,
    pub inc: Incarnation,
    pub expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The shard is ours at this epoch.
    Acquired { epoch: Epoch },
    /// The shard was not as expected: someone else moved first.
    LostRace,
    /// The owner is not gone after all (it heartbeated, or came back).
    OwnerAlive,
}

/// `UpdateItem shard#S SET owner = :to IF owner = :me AND epoch = :e`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffRequest {
    pub shard: ShardId,
    pub me: NodeId,
    pub epoch: Epoch,
    pub to: NodeId,
    pub to_inc: Incarnation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffOutcome {
    Done {
        epoch: Epoch,
    },
    /// We did not hold the shard at that epoch any more.
    NotOwner,
}

/// `UpdateItem node#x SET state = dead IF hb = :observed_hb AND inc = :inc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkDeadRequest {
    pub node: NodeId,
    pub inc: Incarnation,
    pub observed_hb: Heartbeat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkDeadOutcome {
    Marked,
    /// It heartbeated (or restarted) meanwhile.
    Alive,
}

/// `UpdateItem node#x SET evicted_by = :by IF inc = :inc`, returning the
/// item's counter: peers found incarnation `inc` of `node` dead. From then
/// on its renewals fail (they require `attribute_not_exists(evicted_by)`),
/// so its counter stands still at the returned value, which is what a
/// takeover of its shards checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictRequest {
    pub node: NodeId,
    pub inc: Incarnation,
    pub by: NodeId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictOutcome {
    /// The incarnation is evicted (by us, or by someone before us) and its
    /// counter stands at `hb` for good.
    Evicted { hb: Heartbeat },
    /// Its item is missing, or holds another incarnation (it restarted).
    NotThere,
}

/// `DeleteItem shard#S IF epoch = :e`: the shard of a VIP that no node
/// serves any more, once its routes are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetireRequest {
    pub shard: ShardId,
    pub epoch: Epoch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireOutcome {
    Retired,
    /// The item changed meanwhile (someone claimed it: a node that serves
    /// the VIP after all).
    Changed,
}

/// The fleet's change counter: one more with every change of membership
/// or ownership a node announced (`fleet` item, `version` attribute).
/// `None` while the item does not exist (a new or re-created table).
pub type FleetVersion = Option<u64>;

/// The cheap read of a settled node: the change counter, and the item of
/// the one node it watches (its successor in id order), both eventually
/// consistent: `GetItem fleet`, `GetItem node#watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    pub node: Option<NodeId>,
}

/// The watched node's item, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    Record(NodeRecord),
    Missing,
    /// The item exists but cannot be read.
    Unreadable(Skipped),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub version: FleetVersion,
    /// `None` when the request watched no node.
    pub node: Option<Watched>,
}

/// Which store operation failed, for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreOp {
    Heartbeat,
    ReadNodes,
    ReadShards,
    ReadShard,
    ReadLayout,
    PublishLayout,
    Acquire,
    Handoff,
    MarkDead,
    Evict,
    Retire,
    Watch,
    AnnounceChange,
}

impl StoreOp {
    pub const ALL: [StoreOp; 13] = [
        StoreOp::Heartbeat,
        StoreOp::ReadNodes,
        StoreOp::ReadShards,
        StoreOp::ReadShard,
        StoreOp::ReadLayout,
        StoreOp::PublishLayout,
        StoreOp::Acquire,
        StoreOp::Handoff,
        StoreOp::MarkDead,
        StoreOp::Evict,
        StoreOp::Retire,
        StoreOp::Watch,
        StoreOp::AnnounceChange,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StoreOp::Heartbeat => "heartbeat",
            StoreOp::ReadNodes => "read_nodes",
            StoreOp::ReadShards => "read_shards",
            StoreOp::ReadShard => "read_shard",
            StoreOp::ReadLayout => "read_layout",
            StoreOp::PublishLayout => "publish_layout",
            StoreOp::Acquire => "acquire",
            StoreOp::Handoff => "handoff",
            StoreOp::MarkDead => "mark_dead",
            StoreOp::Evict => "evict",
            StoreOp::Retire => "retire",
            StoreOp::Watch => "watch",
            StoreOp::AnnounceChange => "announce_change",
        }
    }

    /// Whether the operation writes (for cost accounting).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            StoreOp::ReadNodes | StoreOp::ReadShards | StoreOp::ReadShard | StoreOp::ReadLayout | StoreOp::Watch
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// The store asked us to slow down; retry later.
    Throttled,
    /// Could not reach the store, or it timed out.
    Unavailable,
    /// The lease table does not exist (deleted, or not restored yet).
    TableMissing,
    /// An item we could not read (a schema problem).
    Corrupt,
    /// Anything else the store said.
    Other,
}

impl StoreErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreErrorKind::Throttled => "throttled",
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::TableMissing => "table_missing",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("lease store {}: {}: {detail}", op.as_str(), kind.as_str())]
pub struct StoreError {
    pub op: StoreOp,
    pub kind: StoreErrorKind,
    pub detail: String,
}

impl StoreError {
    pub fn new(op: StoreOp, kind: StoreErrorKind, detail: impl Into<String>) -> Self {
        Self {
            op,
            kind,
            detail: detail.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The lease table. Reads of shards are strongly consistent: a read that
/// shows us as owner confirms the lease at the time it was sent.
pub trait LeaseStore: Send + Sync {
    fn heartbeat(&self, req: &HeartbeatRequest) -> impl Future<Output = StoreResult<HeartbeatOutcome>> + Send;
    fn read_nodes(&self) -> impl Future<Output = StoreResult<Scan<NodeRecord>>> + Send;
    fn read_shards(&self) -> impl Future<Output = StoreResult<Scan<ShardRecord>>> + Send;
    /// One shard, strongly consistent; an item that cannot be read is a
    /// `Corrupt` error.
    fn read_shard(&self, shard: ShardId) -> impl Future<Output = StoreResult<Option<ShardRecord>>> + Send;
    /// Writes the layout item for `layout.id()` unless it exists.
    fn publish_layout(&self, layout: &ShardLayout) -> impl Future<Output = StoreResult<()>> + Send;
    /// A peer's layout; `None` if its item does not exist (yet).
    fn read_layout(&self, id: &LayoutId) -> impl Future<Output = StoreResult<Option<ShardLayout>>> + Send;
    fn acquire(&self, req: &AcquireRequest) -> impl Future<Output = StoreResult<AcquireOutcome>> + Send;
    fn hand_off(&self, req: &HandoffRequest) -> impl Future<Output = StoreResult<HandoffOutcome>> + Send;
    fn mark_dead(&self, req: &MarkDeadRequest) -> impl Future<Output = StoreResult<MarkDeadOutcome>> + Send;
    fn evict(&self, req: &EvictRequest) -> impl Future<Output = StoreResult<EvictOutcome>> + Send;
    fn retire(&self, req: &RetireRequest) -> impl Future<Output = StoreResult<RetireOutcome>> + Send;
    /// The change counter and one node's item, eventually consistent.
    fn watch(&self, req: &WatchRequest) -> impl Future<Output = StoreResult<Watch>> + Send;
    /// `UpdateItem fleet ADD version 1`, unconditional: tells settled nodes
    /// to read the table again. Returns the new value.
    fn announce_change(&self) -> impl Future<Output = StoreResult<u64>> + Send;
}
