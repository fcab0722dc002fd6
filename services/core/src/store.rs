//! `LeaseStore`: the lease operations of DESIGN.md, shaped around what the
//! protocol does rather than around DynamoDB's API. The agent implements it
//! over DynamoDB; [`crate::fake::FakeLeaseStore`] implements it in memory.
//!
//! Lost races are outcomes, not errors: a conditional write that fails its
//! condition tells the caller something true about the world.

use std::future::Future;

use thiserror::Error;

use crate::types::{Epoch, Heartbeat, Incarnation, NodeId, NodeInfo, NodeRecord, NodeState, ShardId, ShardRecord, Vip};

/// `UpdateItem node#me SET hb = hb + 1, state = :state IF inc = :inc`; with
/// `register`, the item is written whatever it held, taking the node id over
/// for this incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub info: NodeInfo,
    pub inc: Incarnation,
    pub state: NodeState,
    pub register: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The counter moved; the new value.
    Beat(Heartbeat),
    /// Another process holds this node id now (a different incarnation).
    NotMine,
}

/// What the shard must look like for an acquisition to succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No owner: `attribute_not_exists(owner)`.
    Free,
    /// The owner was marked dead, or its item is gone: a transaction with
    /// `ConditionCheck node#x: attribute_not_exists(pk) OR state = dead`
    /// beside the update `IF owner = :x AND epoch = :e`. The node check
    /// matters: a zombie that wakes up heartbeats itself back to `active`,
    /// confirms its shards, and must not lose them to a stale verdict.
    DeadOwner { owner: NodeId, epoch: Epoch },
    /// The owner's lease expired on our clock: a transaction with
    /// `ConditionCheck node#x: hb = :observed_hb` beside the update.
    ExpiredOwner {
        owner: NodeId,
        epoch: Epoch,
        observed_hb: Heartbeat,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    pub shard: ShardId,
    pub vips: Vec<Vip>,
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
    /// The owner heartbeated after we observed it (or is no longer marked
    /// dead): it is alive.
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

/// Which store operation failed, for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreOp {
    Heartbeat,
    ReadNodes,
    ReadShards,
    ReadShard,
    Acquire,
    Handoff,
    MarkDead,
}

impl StoreOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreOp::Heartbeat => "heartbeat",
            StoreOp::ReadNodes => "read_nodes",
            StoreOp::ReadShards => "read_shards",
            StoreOp::ReadShard => "read_shard",
            StoreOp::Acquire => "acquire",
            StoreOp::Handoff => "handoff",
            StoreOp::MarkDead => "mark_dead",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreErrorKind {
    /// The store asked us to slow down; retry later.
    Throttled,
    /// Could not reach the store, or it timed out.
    Unavailable,
    /// An item we could not read (a schema problem).
    Corrupt,
    /// Anything else the store said.
    Other,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("lease store {}: {kind:?}: {detail}", op.as_str())]
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
    fn read_nodes(&self) -> impl Future<Output = StoreResult<Vec<NodeRecord>>> + Send;
    fn read_shards(&self) -> impl Future<Output = StoreResult<Vec<ShardRecord>>> + Send;
    fn read_shard(&self, shard: ShardId) -> impl Future<Output = StoreResult<Option<ShardRecord>>> + Send;
    fn acquire(&self, req: &AcquireRequest) -> impl Future<Output = StoreResult<AcquireOutcome>> + Send;
    fn hand_off(&self, req: &HandoffRequest) -> impl Future<Output = StoreResult<HandoffOutcome>> + Send;
    fn mark_dead(&self, req: &MarkDeadRequest) -> impl Future<Output = StoreResult<MarkDeadOutcome>> + Send;
}
