//! In-memory stand-ins for DynamoDB and EC2, with their conditional semantics
//! and with faults to inject: latency, errors, throttling, an outage.
//!
//! - [`table`]: the lease table as synchronous data (`LeaseTable`).
//! - [`route_state`]: the route tables as synchronous data (`RouteTables`).
//! - this module: [`FakeLeaseStore`] and [`FakeRouteTable`], the async
//!   `LeaseStore` / `RouteTable` implementations over them, and [`Faults`].
//!
//! The core has no timer, so latency needs a sleep function from the caller
//! (`tokio::time::sleep` in the agent's tests); without one it is ignored.

pub mod route_state;
pub mod table;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::layout::{LayoutId, ShardLayout};
use crate::routes::{Gate, RouteChange, RouteEntry, RouteError, RouteOp, RouteTable};
use crate::store::{
    AcquireOutcome, AcquireRequest, EvictOutcome, EvictRequest, HandoffOutcome, HandoffRequest, HeartbeatOutcome,
    HeartbeatRequest, LeaseStore, MarkDeadOutcome, MarkDeadRequest, RetireOutcome, RetireRequest, Scan, StoreError,
    StoreErrorKind, StoreOp, StoreResult, Watch, WatchRequest,
};
use crate::types::{NodeRecord, RouteTableId, ShardId, ShardRecord};

pub use route_state::{RouteCounters, RouteTables};
pub use table::{LeaseTable, TableCounters};

pub type SleepFn = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Faults a fake injects into every call, until changed.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Every call fails as if the service could not be reached.
    pub unavailable: bool,
    /// Every call fails as if the table did not exist (lease store only).
    pub table_missing: bool,
    /// The next this many calls fail as throttled.
    pub throttle_next: u32,
    /// Added before each call (needs a sleep function).
    pub latency: Duration,
}

enum Injected {
    Unavailable,
    TableMissing,
    Throttled,
}

/// Shared fault state and sleep function of both fakes.
#[derive(Clone, Default)]
struct FaultInjector {
    faults: Arc<Mutex<Faults>>,
    sleep: Option<SleepFn>,
}

impl FaultInjector {
    async fn before_call(&self) -> Option<Injected> {
        let latency = lock(&self.faults).latency;
        if let (Some(sleep), false) = (&self.sleep, latency.is_zero()) {
            sleep(latency).await;
        }
        let mut faults = lock(&self.faults);
        if faults.unavailable {
            Some(Injected::Unavailable)
        } else if faults.table_missing {
            Some(Injected::TableMissing)
        } else if faults.throttle_next > 0 {
            faults.throttle_next -= 1;
            Some(Injected::Throttled)
        } else {
            None
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the fake's state from the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `LeaseStore` in memory. Clones share one table.
#[derive(Clone, Default)]
pub struct FakeLeaseStore {
    table: Arc<Mutex<LeaseTable>>,
    injector: FaultInjector,
}

impl FakeLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.injector.sleep = Some(sleep);
        self
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.injector.faults) = faults;
    }

    /// Direct access to the table, for setup and checks.
    pub fn table(&self) -> MutexGuard<'_, LeaseTable> {
        lock(&self.table)
    }

    async fn call<T>(&self, op: StoreOp, f: impl FnOnce(&mut LeaseTable) -> T) -> StoreResult<T> {
        match self.injector.before_call().await {
            Some(Injected::Unavailable) => Err(StoreError::new(op, StoreErrorKind::Unavailable, "injected outage")),
            Some(Injected::TableMissing) => Err(StoreError::new(
                op,
                StoreErrorKind::TableMissing,
                "injected: the table does not exist",
            )),
            Some(Injected::Throttled) => Err(StoreError::new(op, StoreErrorKind::Throttled, "injected throttling")),
            None => Ok(f(&mut lock(&self.table))),
        }
    }
}

impl LeaseStore for FakeLeaseStore {
    async fn heartbeat(&self, req: &HeartbeatRequest) -> StoreResult<HeartbeatOutcome> {
        self.call(StoreOp::Heartbeat, |t| t.heartbeat(req)).await
    }
    async fn read_nodes(&self) -> StoreResult<Scan<NodeRecord>> {
        self.call(StoreOp::ReadNodes, LeaseTable::read_nodes).await
    }
    async fn read_shards(&self) -> StoreResult<Scan<ShardRecord>> {
        self.call(StoreOp::ReadShards, LeaseTable::read_shards).await
    }
    async fn read_shard(&self, shard: ShardId) -> StoreResult<Option<ShardRecord>> {
        self.call(StoreOp::ReadShard, |t| t.read_shard(shard))
            .await?
            .map_err(|reason| StoreError::new(StoreOp::ReadShard, StoreErrorKind::Corrupt, reason))
    }
    async fn publish_layout(&self, layout: &ShardLayout) -> StoreResult<()> {
        self.call(StoreOp::PublishLayout, |t| t.publish_layout(layout)).await
    }
    async fn read_layout(&self, id: &LayoutId) -> StoreResult<Option<ShardLayout>> {
        self.call(StoreOp::ReadLayout, |t| t.read_layout(id)).await
    }
    async fn acquire(&self, req: &AcquireRequest) -> StoreResult<AcquireOutcome> {
        self.call(StoreOp::Acquire, |t| t.acquire(req)).await
    }
    async fn hand_off(&self, req: &HandoffRequest) -> StoreResult<HandoffOutcome> {
        self.call(StoreOp::Handoff, |t| t.hand_off(req)).await
    }
    async fn mark_dead(&self, req: &MarkDeadRequest) -> StoreResult<MarkDeadOutcome> {
        self.call(StoreOp::MarkDead, |t| t.mark_dead(req)).await
    }
    async fn evict(&self, req: &EvictRequest) -> StoreResult<EvictOutcome> {
        self.call(StoreOp::Evict, |t| t.evict(req)).await
    }
    async fn retire(&self, req: &RetireRequest) -> StoreResult<RetireOutcome> {
        self.call(StoreOp::Retire, |t| t.retire(req)).await
    }
    async fn watch(&self, req: &WatchRequest) -> StoreResult<Watch> {
        self.call(StoreOp::Watch, |t| t.watch(req)).await
    }
    async fn announce_change(&self) -> StoreResult<u64> {
        self.call(StoreOp::AnnounceChange, LeaseTable::announce_change).await
    }
}

/// `RouteTable` in memory. Clones share the tables.
#[derive(Clone, Default)]
pub struct FakeRouteTable {
    tables: Arc<Mutex<RouteTables>>,
    injector: FaultInjector,
}

impl FakeRouteTable {
    pub fn new(tables: impl IntoIterator<Item = RouteTableId>) -> Self {
        Self {
            tables: Arc::new(Mutex::new(RouteTables::new(tables))),
            injector: FaultInjector::default(),
        }
    }

    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.injector.sleep = Some(sleep);
        self
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.injector.faults) = faults;
    }

    pub fn tables(&self) -> MutexGuard<'_, RouteTables> {
        lock(&self.tables)
    }

    async fn call<T>(
        &self,
        op: RouteOp,
        f: impl FnOnce(&mut RouteTables) -> Result<T, RouteError>,
    ) -> Result<T, RouteError> {
        match self.injector.before_call().await {
            Some(Injected::Unavailable) => Err(RouteError::Unavailable {
                op,
                detail: "injected outage".into(),
            }),
            Some(Injected::Throttled) => Err(RouteError::Throttled {
                op,
                detail: "injected throttling".into(),
            }),
            Some(Injected::TableMissing) => Err(RouteError::Other {
                op,
                detail: "injected: no such lease table (not an EC2 fault)".into(),
            }),
            None => f(&mut lock(&self.tables)),
        }
    }
}

impl RouteTable for FakeRouteTable {
    async fn describe(&self, table: &RouteTableId) -> Result<Vec<RouteEntry>, RouteError> {
        self.call(RouteOp::Describe, |t| t.describe(table)).await
    }
    async fn change(&self, change: &RouteChange, gate: &Gate) -> Result<(), RouteError> {
        // One attempt, asked once: after the injected latency, as EC2's
        // would be after the SDK's wait.
        self.call(change.op(), |t| {
            if gate.allows() {
                t.apply(change)
            } else {
                Err(RouteError::Fenced)
            }
        })
        .await
    }
}
