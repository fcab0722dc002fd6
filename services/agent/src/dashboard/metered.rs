//! Outcome labels for store and EC2 calls, and [`MeteredRoutes`], the
//! `RouteTable` wrapper that counts every EC2 call as it is made.
//!
//! The driver composes route calls (`ReplaceRoute`, then `CreateRoute` when
//! there is none), so counting at the trait boundary is the only place that
//! sees each call EC2 actually answered, including the expected `no_route`.
//! A call dropped by the driver's timeout is counted as `timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant as TokioInstant;
use vipfleet_core::routes::{Gate, RouteChange, RouteEntry, RouteError, RouteOp, RouteTable};
use vipfleet_core::store::{
    AcquireOutcome, EvictOutcome, HandoffOutcome, HeartbeatOutcome, MarkDeadOutcome, RetireOutcome, Scan, StoreResult,
    Watch,
};
use vipfleet_core::{RouteTableId, ShardLayout, ShardRecord};

use super::metrics::{Metrics, OUTCOME_OK, OUTCOME_TIMEOUT};

/// The `outcome` label of a successful call's result. Lost conditional
/// writes are outcomes, not errors; they get their own label because a rise
/// in them means nodes are contending.
pub trait OutcomeLabel {
    fn outcome_label(&self) -> &'static str;
}

impl OutcomeLabel for HeartbeatOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            HeartbeatOutcome::Beat(_) => OUTCOME_OK,
            HeartbeatOutcome::Missing => "missing",
            HeartbeatOutcome::NotMine => "superseded",
            HeartbeatOutcome::Evicted => "evicted",
        }
    }
}

impl OutcomeLabel for AcquireOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            AcquireOutcome::Acquired { .. } => OUTCOME_OK,
            AcquireOutcome::LostRace => "lost_race",
            AcquireOutcome::OwnerAlive => "owner_alive",
        }
    }
}

impl OutcomeLabel for HandoffOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            HandoffOutcome::Done { .. } => OUTCOME_OK,
            HandoffOutcome::NotOwner => "not_owner",
        }
    }
}

impl OutcomeLabel for MarkDeadOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            MarkDeadOutcome::Marked => OUTCOME_OK,
            MarkDeadOutcome::Alive => "alive",
        }
    }
}

impl OutcomeLabel for EvictOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            EvictOutcome::Evicted { .. } => OUTCOME_OK,
            EvictOutcome::NotThere => "not_there",
        }
    }
}

impl OutcomeLabel for RetireOutcome {
    fn outcome_label(&self) -> &'static str {
        match self {
            RetireOutcome::Retired => OUTCOME_OK,
            RetireOutcome::Changed => "changed",
        }
    }
}

/// A read that skipped items still succeeded; the skipped ones are counted
/// on their own.
impl<T> OutcomeLabel for Scan<T> {
    fn outcome_label(&self) -> &'static str {
        OUTCOME_OK
    }
}

/// What the watch saw (a moved counter, a stalled node) is the machine's
/// to judge; the read itself succeeded.
impl OutcomeLabel for Watch {
    fn outcome_label(&self) -> &'static str {
        OUTCOME_OK
    }
}

/// An announcement's answer: the counter it produced.
impl OutcomeLabel for u64 {
    fn outcome_label(&self) -> &'static str {
        OUTCOME_OK
    }
}

impl OutcomeLabel for () {
    fn outcome_label(&self) -> &'static str {
        OUTCOME_OK
    }
}

impl OutcomeLabel for Option<ShardLayout> {
    fn outcome_label(&self) -> &'static str {
        match self {
            Some(_) => OUTCOME_OK,
            None => "not_found",
        }
    }
}

impl OutcomeLabel for Option<ShardRecord> {
    fn outcome_label(&self) -> &'static str {
        match self {
            Some(_) => OUTCOME_OK,
            None => "not_found",
        }
    }
}

/// The `outcome` label of a store call's result.
pub fn store_outcome<T: OutcomeLabel>(result: &StoreResult<T>) -> &'static str {
    match result {
        Ok(value) => value.outcome_label(),
        Err(e) => match e.kind {
            vipfleet_core::store::StoreErrorKind::Other => "error",
            kind => kind.as_str(),
        },
    }
}

/// The `outcome` label of an EC2 call's result.
pub fn route_outcome<T>(result: &Result<T, RouteError>) -> &'static str {
    match result {
        Ok(_) => OUTCOME_OK,
        Err(RouteError::NoRoute { .. }) => "no_route",
        Err(RouteError::AlreadyExists { .. }) => "already_exists",
        Err(RouteError::UnknownTable(_)) => "unknown_table",
        Err(RouteError::Throttled { .. }) => "throttled",
        Err(RouteError::Unavailable { .. }) => "unavailable",
        Err(RouteError::Other { .. }) => "error",
        // Refused by the gate before an attempt went out.
        Err(RouteError::Fenced) => "fenced",
    }
}

/// Counts a call as `timeout` if it is dropped before it finishes.
struct InFlight<'a> {
    metrics: &'a Metrics,
    op: RouteOp,
    started: TokioInstant,
    done: bool,
}

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics, op: RouteOp) -> Self {
        Self {
            metrics,
            op,
            started: TokioInstant::now(),
            done: false,
        }
    }

    fn finish<T>(mut self, result: Result<T, RouteError>) -> Result<T, RouteError> {
        self.done = true;
        self.metrics
            .observe_route_call(self.op, route_outcome(&result), self.elapsed());
        result
    }

    fn elapsed(&self) -> Duration {
        TokioInstant::now().saturating_duration_since(self.started)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics
                .observe_route_call(self.op, OUTCOME_TIMEOUT, self.elapsed());
        }
    }
}

/// A `RouteTable` that records each call's operation, outcome and latency.
pub struct MeteredRoutes<R> {
    inner: Arc<R>,
    metrics: Arc<Metrics>,
}

impl<R> MeteredRoutes<R> {
    pub fn new(inner: Arc<R>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<R: RouteTable> RouteTable for MeteredRoutes<R> {
    async fn describe(&self, table: &RouteTableId) -> Result<Vec<RouteEntry>, RouteError> {
        let call = InFlight::start(&self.metrics, RouteOp::Describe);
        call.finish(self.inner.describe(table).await)
    }

    async fn change(&self, change: &RouteChange, gate: &Gate) -> Result<(), RouteError> {
        let call = InFlight::start(&self.metrics, change.op());
        call.finish(self.inner.change(change, gate).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipfleet_core::fake::{FakeRouteTable, Faults};
    use vipfleet_core::store::{StoreError, StoreErrorKind, StoreOp};
    use vipfleet_core::{EniId, Vip};

    #[tokio::test]
    async fn every_ec2_call_is_counted_with_its_outcome() {
        let table = RouteTableId("rtb-1".into());
        let fake = Arc::new(FakeRouteTable::new([table.clone()]));
        let metrics = Arc::new(Metrics::new());
        let routes = MeteredRoutes::new(fake.clone(), metrics.clone());
        let vip: Vip = "10.200.0.1/32".parse().unwrap();
        let replace = RouteChange::Replace {
            table: table.clone(),
            vip,
            eni: EniId("eni-a".into()),
        };
        assert!(routes.change(&replace, &Gate::open()).await.is_err(), "no route yet");
        let create = RouteChange::Create {
            table: table.clone(),
            vip,
            eni: EniId("eni-a".into()),
        };
        routes.change(&create, &Gate::open()).await.unwrap();
        fake.set_faults(Faults {
            throttle_next: 1,
            ..Faults::default()
        });
        assert!(routes.describe(&table).await.is_err());
        let text = metrics.render();
        for expected in [
            r#"vipfleet_ec2_calls_total{op="replace_route",outcome="no_route"} 1"#,
            r#"vipfleet_ec2_calls_total{op="create_route",outcome="ok"} 1"#,
            r#"vipfleet_ec2_calls_total{op="describe_route_tables",outcome="throttled"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_by_a_timeout_counts_as_timeout() {
        let table = RouteTableId("rtb-1".into());
        let sleep: vipfleet_core::fake::SleepFn = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
        let fake = Arc::new(FakeRouteTable::new([table.clone()]).with_sleep(sleep));
        fake.set_faults(Faults {
            latency: Duration::from_secs(10),
            ..Faults::default()
        });
        let metrics = Arc::new(Metrics::new());
        let routes = MeteredRoutes::new(fake, metrics.clone());
        let call = routes.describe(&table);
        assert!(tokio::time::timeout(Duration::from_secs(1), call).await.is_err());
        assert!(metrics
            .render()
            .contains(r#"vipfleet_ec2_calls_total{op="describe_route_tables",outcome="timeout"} 1"#));
    }

    #[test]
    fn store_outcomes_tell_lost_races_from_errors() {
        assert_eq!(store_outcome(&Ok(AcquireOutcome::LostRace)), "lost_race");
        assert_eq!(store_outcome(&Ok(HeartbeatOutcome::Beat(3))), "ok");
        let err: StoreResult<HeartbeatOutcome> = Err(StoreError::new(
            StoreOp::Heartbeat,
            StoreErrorKind::Throttled,
            "slow down",
        ));
        assert_eq!(store_outcome(&err), "throttled");
    }
}
