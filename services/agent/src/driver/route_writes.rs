//! One `WriteRoutes` effect, performed: every VIP of the shard pointed at
//! the ENI in every table, one paced EC2 call at a time.
//!
//! Writes for our own ENI are fenced by the [`Fence`] the driver republishes
//! after every step. A call is checked before it queues for a pacer token,
//! again every [`FENCE_POLL_INTERVAL`] while it waits, and once more with the
//! token in hand, right before it is sent. A write whose shard moved (or
//! whose lease lapsed) while it queued therefore stops without spending a
//! token: after a start-up claim-and-rebalance, those tokens are the ones
//! the new owners' writes wait for. [`ROUTE_CALL_TIMEOUT`] bounds the EC2
//! call itself, never the wait for a token, which is long by design when
//! many routes move at once.
//!
//! A hand-off pushes the shard's routes to the recipient's ENI, which no
//! fence of ours covers. Such a push only saves the recipient its own
//! repair (it reads the routes back soon after it learns of the shard), so
//! a rebalancing push is dropped if it cannot go out within a lease TTL
//! ([`Guard::Push`]): later, the shard may have moved on, and a late push
//! would point its routes at a node that no longer holds it. A drain's
//! pushes have no deadline: the machine ends a drain only when they are
//! done, so that a node about to be terminated leaves no route behind.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant as TokioInstant;
use vipfleet_core::machine::{Input, RouteWriteRequest};
use vipfleet_core::routes::{point_route, RouteEntry, RouteError, RouteOp, RouteTable};
use vipfleet_core::{EniId, Epoch, Instant, RouteTableId, ShardId, Vip};

use super::ROUTE_CALL_TIMEOUT;
use crate::aws::pacing::PacedRoutes;

/// How often a write queued for a token looks at the fence again.
pub const FENCE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Which shards the machine lets us write routes for, at which epoch, and
/// until when (the end of the lease, or of the confirmation's freshness).
#[derive(Clone, Debug, Default)]
pub struct Fence {
    pub writable: BTreeMap<ShardId, (Epoch, Instant)>,
}

impl Fence {
    fn allows(&self, shard: ShardId, epoch: Epoch, now: Instant) -> bool {
        self.writable
            .get(&shard)
            .is_some_and(|(e, until)| *e == epoch && now < *until)
    }
}

/// What a write must still satisfy when its call can go out.
pub enum Guard<'a> {
    /// Our own ENI: the [`Fence`], on the machine's clock, which starts at
    /// `origin`.
    Own {
        fence: &'a Mutex<Fence>,
        origin: TokioInstant,
    },
    /// A hand-off's push to the recipient: only before `until`, if set.
    Push { until: Option<TokioInstant> },
}

/// Performs `req` under `guard`.
pub async fn write_routes<R: RouteTable>(routes: PacedRoutes<R>, req: RouteWriteRequest, guard: Guard<'_>) -> Input {
    let fenced = FencedRoutes {
        routes: &routes,
        guard,
        shard: req.shard,
        epoch: req.epoch,
    };
    let mut failed = Vec::new();
    for table in &req.tables {
        if let Err(e) = point_route(&fenced, table, req.vip(), &req.eni).await {
            failed.push(e);
        }
    }
    Input::RoutesWritten {
        shard: req.shard,
        eni: req.eni,
        failed,
    }
}

/// The paced routes of one `WriteRoutes`, each call fenced and bounded.
struct FencedRoutes<'a, R> {
    routes: &'a PacedRoutes<R>,
    guard: Guard<'a>,
    shard: ShardId,
    epoch: Epoch,
}

impl<R: RouteTable> FencedRoutes<'_, R> {
    fn allowed(&self) -> bool {
        match &self.guard {
            Guard::Own { fence, origin } => {
                let now = Instant::from_offset(TokioInstant::now().saturating_duration_since(*origin));
                fence
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allows(self.shard, self.epoch, now)
            }
            Guard::Push { until } => until.is_none_or(|t| TokioInstant::now() < t),
        }
    }

    fn fenced(&self) -> RouteError {
        RouteError::Fenced {
            shard: self.shard,
            epoch: self.epoch,
        }
    }

    /// Takes a pacer token for one call, unless the fence closes first.
    async fn admit(&self) -> Result<(), RouteError> {
        let pacer = self.routes.pacer();
        loop {
            if !self.allowed() {
                return Err(self.fenced());
            }
            tokio::select! {
                // `acquire` is cancel-safe: giving up the wait takes no token.
                () = pacer.acquire(self.routes.priority()) => break,
                () = tokio::time::sleep(FENCE_POLL_INTERVAL) => {}
            }
        }
        // The guard may have closed between the last look and the token.
        if self.allowed() {
            Ok(())
        } else {
            Err(self.fenced())
        }
    }

    async fn bounded(
        &self,
        op: RouteOp,
        table: &RouteTableId,
        vip: Vip,
        call: impl std::future::Future<Output = Result<(), RouteError>>,
    ) -> Result<(), RouteError> {
        tokio::time::timeout(ROUTE_CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(RouteError::Unavailable {
                    op,
                    detail: format!("{table} {vip}: timed out"),
                })
            })
    }
}

impl<R: RouteTable> RouteTable for FencedRoutes<'_, R> {
    async fn describe(&self, tables: &[RouteTableId]) -> Result<Vec<RouteEntry>, RouteError> {
        self.routes.inner().describe(tables).await
    }

    async fn replace(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.admit().await?;
        let call = self.routes.inner().replace(table, vip, eni);
        self.bounded(RouteOp::Replace, table, vip, call).await
    }

    async fn create(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.admit().await?;
        let call = self.routes.inner().create(table, vip, eni);
        self.bounded(RouteOp::Create, table, vip, call).await
    }

    async fn delete(&self, table: &RouteTableId, vip: Vip) -> Result<(), RouteError> {
        self.admit().await?;
        let call = self.routes.inner().delete(table, vip);
        self.bounded(RouteOp::Delete, table, vip, call).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vipfleet_core::fake::FakeRouteTable;
    use vipfleet_core::machine::Priority as MachinePriority;

    use super::*;
    use crate::aws::pacing::{Pacer, PacerConfig, Priority};

    const SHARD: ShardId = ShardId::of(VIP);
    const VIP: Vip = Vip::host(std::net::Ipv4Addr::new(10, 200, 0, 1));
    const EPOCH: Epoch = 1;

    fn table() -> RouteTableId {
        RouteTableId("rtb-1".into())
    }

    fn vip() -> Vip {
        VIP
    }

    fn request() -> RouteWriteRequest {
        RouteWriteRequest {
            shard: SHARD,
            epoch: EPOCH,
            tables: vec![table()],
            eni: EniId("eni-a".into()),
            priority: MachinePriority::Rebalance,
            deadline: None,
        }
    }

    /// A fake route table behind a pacer of one token at `calls_per_second`,
    /// which the test has already spent.
    async fn drained(calls_per_second: f64) -> (Arc<FakeRouteTable>, Arc<Pacer>, PacedRoutes<FakeRouteTable>) {
        let fake = Arc::new(FakeRouteTable::new([table()]));
        let pacer = Arc::new(
            Pacer::new(PacerConfig {
                calls_per_second,
                burst: 1,
            })
            .unwrap(),
        );
        pacer.acquire(Priority::Background).await;
        let routes = PacedRoutes::new(fake.clone(), pacer.clone(), Priority::Background);
        (fake, pacer, routes)
    }

    fn open_fence() -> Arc<Mutex<Fence>> {
        Arc::new(Mutex::new(Fence {
            writable: BTreeMap::from([(SHARD, (EPOCH, Instant::from_millis(3_600_000)))]),
        }))
    }

    fn failures(input: &Input) -> &[RouteError] {
        match input {
            Input::RoutesWritten { failed, .. } => failed,
            other => panic!("not a RoutesWritten: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_fenced_while_it_queues_stops_without_spending_a_token() {
        let (fake, pacer, routes) = drained(1.0).await;
        let fence = open_fence();
        let task = tokio::spawn({
            let fence = fence.clone();
            async move {
                let guard = Guard::Own {
                    fence: &fence,
                    origin: TokioInstant::now(),
                };
                write_routes(routes, request(), guard).await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "the write waits for a token");
        // A hand-off: the shard is no longer ours to write.
        fence.lock().unwrap().writable.clear();
        tokio::time::sleep(FENCE_POLL_INTERVAL * 2).await;
        assert!(task.is_finished(), "the write noticed the fence while it queued");
        let input = task.await.unwrap();
        assert_eq!(
            failures(&input),
            [RouteError::Fenced {
                shard: SHARD,
                epoch: EPOCH
            }]
        );
        assert_eq!(fake.tables().target(&table(), vip()), None, "nothing was sent");
        // 0.5 s of refill at 1/s: the fenced write took nothing from it.
        assert!(pacer.level() > 0.45, "level {}", pacer.level());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_for_a_token_is_not_a_timeout() {
        let calls_per_second = 0.5 / ROUTE_CALL_TIMEOUT.as_secs_f64();
        let (fake, _pacer, routes) = drained(calls_per_second).await;
        let fence = open_fence();
        let started = TokioInstant::now();
        let guard = Guard::Own {
            fence: &fence,
            origin: started,
        };
        let input = write_routes(routes, request(), guard).await;
        assert!(
            started.elapsed() > ROUTE_CALL_TIMEOUT,
            "the token took {:?}",
            started.elapsed()
        );
        assert_eq!(failures(&input), []);
        assert_eq!(fake.tables().target(&table(), vip()), Some(&EniId("eni-a".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_goes_out_if_a_token_comes_in_time() {
        let (fake, _pacer, routes) = drained(1.0).await;
        let until = Some(TokioInstant::now() + Duration::from_secs(3));
        let input = write_routes(routes, request(), Guard::Push { until }).await;
        assert_eq!(failures(&input), []);
        assert!(fake.tables().target(&table(), vip()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_that_would_go_out_too_late_is_dropped_without_a_token() {
        // One token in 10 s; the push may wait 3 s.
        let (fake, pacer, routes) = drained(0.1).await;
        let started = TokioInstant::now();
        let until = Some(started + Duration::from_secs(3));
        let input = write_routes(routes, request(), Guard::Push { until }).await;
        assert_eq!(
            failures(&input),
            [RouteError::Fenced {
                shard: SHARD,
                epoch: EPOCH
            }]
        );
        assert!(started.elapsed() < Duration::from_secs(3) + FENCE_POLL_INTERVAL * 2);
        assert_eq!(fake.tables().target(&table(), vip()), None);
        assert!(pacer.level() > 0.25, "level {}", pacer.level());
    }
}
