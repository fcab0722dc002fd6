//! Client-side pacing of mutating EC2 calls: a token bucket ([`Pacer`]) with
//! two priorities, and [`PacedRoutes`], a `RouteTable` that takes a token
//! before every route write.
//!
//! Why: EC2 throttles mutating calls per account and region (a bucket of 50,
//! refilled at 5 per second, shared by every node and every other tool in
//! the account). A node that inherits many routes at once must stay well
//! inside that, and the writes that restore traffic (failover) must not
//! queue behind those that merely tidy up (rebalancing, repair).
//!
//! Design: one [`Pacer`] per agent, shared (`Arc`) by every [`PacedRoutes`].
//! A `PacedRoutes` carries the priority of the work it is used for;
//! [`PacedRoutes::at`] makes a copy at another priority, so the driver holds
//! one per kind of work and hands it to `point_route`. Only `replace` and
//! `create` are paced; `describe` is a read, with EC2's separate and larger
//! bucket. The SDK's adaptive retry handles throttling that happens anyway.
//!
//! Waiting uses `tokio::time`, so tests run on paused time. A waiter sleeps
//! until the bucket should hold its token, then looks again; a background
//! waiter also leaves one token for each failover waiter.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use vipfleet_core::routes::{RouteEntry, RouteError, RouteTable};
use vipfleet_core::{EniId, RouteTableId, Vip};

pub use vipfleet_agent_config::pacing::{PacerConfig, PacingError, DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND};

/// Shortest sleep between looks at the bucket, so that float rounding can
/// never make a waiter spin.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Tokens are fractional; this much short of one still counts as one.
const TOKEN_EPSILON: f64 = 1e-9;

/// What a mutating call is for. Failover is served first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Restoring traffic: routes of shards just taken over.
    Failover,
    /// Rebalancing, drain hand-offs and reconcile repairs.
    Background,
}

/// A token bucket, full at start. Shared by reference; all methods take `&self`.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled_at: Instant,
    /// Failover callers waiting now; background callers yield to them.
    failover_waiting: usize,
}

impl Bucket {
    fn refill(&mut self, config: &PacerConfig, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * config.calls_per_second).min(f64::from(config.burst));
        self.refilled_at = now;
    }
}

/// Counts a failover waiter for as long as it waits, even if its future is
/// dropped mid-wait.
struct FailoverWaiter<'a>(&'a Pacer);

impl Drop for FailoverWaiter<'_> {
    fn drop(&mut self) {
        self.0.lock().failover_waiting -= 1;
    }
}

impl Pacer {
    pub fn new(config: PacerConfig) -> Result<Self, PacingError> {
        config.validate()?;
        Ok(Self {
            config,
            state: Mutex::new(Bucket {
                tokens: f64::from(config.burst),
                refilled_at: Instant::now(),
                failover_waiting: 0,
            }),
        })
    }

    pub fn config(&self) -> PacerConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // The bucket holds no invariant a panic could break half-way.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tokens in the bucket now (for metrics): from 0 to `burst`.
    pub fn level(&self) -> f64 {
        let mut bucket = self.lock();
        bucket.refill(&self.config, Instant::now());
        bucket.tokens
    }

    /// Failover callers waiting for a token now (for metrics).
    pub fn failover_waiting(&self) -> usize {
        self.lock().failover_waiting
    }

    /// Waits for a token and takes it. Cancel-safe: a dropped future takes
    /// no token.
    pub async fn acquire(&self, priority: Priority) {
        let _waiter = (priority == Priority::Failover).then(|| {
            self.lock().failover_waiting += 1;
            FailoverWaiter(self)
        });
        loop {
            let wait = {
                let mut bucket = self.lock();
                bucket.refill(&self.config, Instant::now());
                // A failover waiter counts itself; a background one must
                // leave a token for every failover waiter.
                let needed = match priority {
                    Priority::Failover => 1.0,
                    Priority::Background => bucket.failover_waiting as f64 + 1.0,
                };
                if bucket.tokens + TOKEN_EPSILON >= needed {
                    bucket.tokens = (bucket.tokens - 1.0).max(0.0);
                    return;
                }
                self.config.refill_time(needed - bucket.tokens).max(MIN_WAIT)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A `RouteTable` whose writes wait for the shared [`Pacer`] at this
/// value's priority. Cheap to clone.
#[derive(Debug)]
pub struct PacedRoutes<R> {
    inner: Arc<R>,
    pacer: Arc<Pacer>,
    priority: Priority,
}

impl<R> Clone for PacedRoutes<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            pacer: Arc::clone(&self.pacer),
            priority: self.priority,
        }
    }
}

impl<R: RouteTable> PacedRoutes<R> {
    pub fn new(inner: Arc<R>, pacer: Arc<Pacer>, priority: Priority) -> Self {
        Self { inner, pacer, priority }
    }

    /// The same routes and bucket, for work of another priority.
    pub fn at(&self, priority: Priority) -> Self {
        Self {
            priority,
            ..self.clone()
        }
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.pacer
    }

    pub fn inner(&self) -> &Arc<R> {
        &self.inner
    }
}

impl<R: RouteTable> RouteTable for PacedRoutes<R> {
    async fn describe(&self, tables: &[RouteTableId]) -> Result<Vec<RouteEntry>, RouteError> {
        self.inner.describe(tables).await
    }

    async fn replace(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.pacer.acquire(self.priority).await;
        self.inner.replace(table, vip, eni).await
    }

    async fn create(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.pacer.acquire(self.priority).await;
        self.inner.create(table, vip, eni).await
    }

    async fn delete(&self, table: &RouteTableId, vip: Vip) -> Result<(), RouteError> {
        self.pacer.acquire(self.priority).await;
        self.inner.delete(table, vip).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipfleet_core::fake::FakeRouteTable;
    use vipfleet_core::routes::{point_route, RouteWrite};

    fn pacer(calls_per_second: f64, burst: u32) -> Arc<Pacer> {
        Arc::new(
            Pacer::new(PacerConfig {
                calls_per_second,
                burst,
            })
            .unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_the_rate_holds() {
        let pacer = pacer(2.0, 10);
        let start = Instant::now();
        for _ in 0..10 {
            pacer.acquire(Priority::Background).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst must not wait");
        assert!(pacer.level() < 1.0);
        for _ in 0..20 {
            pacer.acquire(Priority::Failover).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        // 20 tokens at 2 per second after the burst: 10 s.
        assert!((elapsed - 10.0).abs() < 0.05, "took {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_up_to_burst_only() {
        let pacer = pacer(5.0, 3);
        for _ in 0..3 {
            pacer.acquire(Priority::Background).await;
        }
        assert!(pacer.level() < 0.01);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!((pacer.level() - 1.0).abs() < 1e-6, "level {}", pacer.level());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(pacer.level(), 3.0);
    }

    #[tokio::test(start_paused = true)]
    async fn failover_waiters_go_before_background_waiters() {
        let pacer = pacer(1.0, 1);
        let t0 = Instant::now();
        pacer.acquire(Priority::Background).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Three background callers queue first, then two failover callers.
        for (i, priority) in [
            (0, Priority::Background),
            (1, Priority::Background),
            (2, Priority::Background),
            (3, Priority::Failover),
            (4, Priority::Failover),
        ] {
            let (pacer, order) = (Arc::clone(&pacer), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                pacer.acquire(priority).await;
                order.lock().unwrap().push((i, Instant::now()));
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let mut first: Vec<_> = order[..2].iter().map(|(i, _)| *i).collect();
        let mut rest: Vec<_> = order[2..].iter().map(|(i, _)| *i).collect();
        first.sort();
        rest.sort();
        // The background callers waited longer, but the failover callers
        // take the next two tokens.
        assert_eq!((first, rest), (vec![3, 4], vec![0, 1, 2]), "order {order:?}");
        assert_eq!(pacer.failover_waiting(), 0);
        // Still one call per second: tokens at 1, 2, 3, 4 and 5 s.
        for (n, (_, at)) in order.iter().enumerate() {
            let secs = (*at - t0).as_secs_f64();
            assert!((secs - (n + 1) as f64).abs() < 0.05, "call {n} at {secs} s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_failover_wait_does_not_block_background_work() {
        let pacer = pacer(1.0, 1);
        pacer.acquire(Priority::Failover).await;
        let waiting = tokio::time::timeout(Duration::from_millis(10), pacer.acquire(Priority::Failover)).await;
        assert!(waiting.is_err());
        assert_eq!(pacer.failover_waiting(), 0);
        let start = Instant::now();
        pacer.acquire(Priority::Background).await;
        assert!(start.elapsed() <= Duration::from_secs(1));
    }

    #[test]
    fn bad_settings_are_refused() {
        let config = |calls_per_second, burst| PacerConfig {
            calls_per_second,
            burst,
        };
        assert_eq!(Pacer::new(config(0.0, 1)).unwrap_err(), PacingError::Rate(0.0));
        assert!(Pacer::new(config(f64::NAN, 1)).is_err());
        assert_eq!(Pacer::new(config(1.0, 0)).unwrap_err(), PacingError::Burst);
        assert_eq!(PacerConfig::default(), config(2.0, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn paced_routes_pace_writes_but_not_reads() {
        let table = RouteTableId("rtb-1".into());
        let fake = Arc::new(FakeRouteTable::new([table.clone()]));
        let routes = PacedRoutes::new(Arc::clone(&fake), pacer(1.0, 1), Priority::Background).at(Priority::Failover);
        assert_eq!(routes.priority(), Priority::Failover);
        let vip: Vip = "10.200.0.1/32".parse().unwrap();
        let eni = EniId("eni-1".into());
        let start = Instant::now();
        // Replace (no route), create: two writes, one token in the bucket.
        assert_eq!(point_route(&routes, &table, vip, &eni).await, Ok(RouteWrite::Created));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        for _ in 0..5 {
            routes.describe(std::slice::from_ref(&table)).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(fake.tables().counters().mutating_calls, 2);
    }
}
