//! EC2 as the simulation sees it, with the agent's driver in front of it.
//!
//! A route call is a series of attempts, as the SDK makes them: up to
//! [`SDK_MAX_ATTEMPTS`], with the standard strategy's jittered backoff,
//! all within the call's timeout (at most [`ROUTE_CALL_TIMEOUT`], and never
//! past the call's deadline). Before each attempt goes out, the driver asks
//! the node's fence, as its interceptor does; a paused process makes its
//! next attempt only when it resumes. What reaches EC2 is applied within a
//! short, bounded time (well inside the lease's safety margin), unless the
//! account's shared token bucket is empty (throttled), the table is failing
//! (gone, or denied), or a flaky EC2 errs (before applying, or after, with
//! the answer lost).
//!
//! Every change that lands is logged ([`Landed`]) with the writer and the
//! epoch it wrote for: the checker's one-writer rule runs on that log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{Sabotage, SimConfig, Status, What, World};
use crate::machine::{Input, RouteCall};
use crate::routes::{RouteEntry, RouteError, RouteOp, ROUTE_CALL_TIMEOUT};
use crate::time::Instant;
use crate::types::{EniId, Epoch, Incarnation, RouteTableId, ShardId};

/// EC2's bucket for mutating calls, shared by the whole account: 50
/// tokens, refilled at 5 per second (as documented).
pub const ACCOUNT_BURST: f64 = 50.0;
pub const ACCOUNT_REFILL_PER_SECOND: f64 = 5.0;
/// The SDK's standard retry strategy: three attempts, a backoff drawn up to
/// one second, doubling.
pub const SDK_MAX_ATTEMPTS: u32 = 3;
pub const SDK_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// From transmit until EC2 applies a call, in microseconds (uniform).
pub const EC2_REQUEST_LEG_MICROS: std::ops::Range<u64> = 2_000..30_000;

/// A route change EC2 applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landed {
    pub at: Instant,
    pub node: usize,
    /// The incarnation of the process that sent it.
    pub inc: Incarnation,
    pub shard: ShardId,
    pub epoch: Epoch,
    pub table: RouteTableId,
    pub op: RouteOp,
    /// Where the route points now; `None` for a delete.
    pub target: Option<EniId>,
}

#[derive(Clone, Debug)]
pub(crate) struct Ec2 {
    tokens: f64,
    refilled_at: Instant,
    /// The bucket refuses nothing before this instant (a formed fleet's
    /// start, [`SimConfig::bucket_from`]), and is full at it.
    limits_from: Instant,
    /// A share of calls fails (percent), until when.
    pub(crate) flaky: Option<(u8, Instant)>,
    /// Tables whose calls fail as if they did not exist, until when.
    pub(crate) failing: BTreeMap<RouteTableId, Instant>,
    pub(crate) landed: Vec<Landed>,
    /// Mutating attempts that reached a failing table: when, and whose.
    pub(crate) refused_by_failing_table: Vec<(Instant, usize)>,
    /// Attempts refused because the account's bucket was empty.
    pub(crate) throttled: u64,
}

impl Default for Ec2 {
    fn default() -> Self {
        Self {
            tokens: ACCOUNT_BURST,
            refilled_at: Instant::ZERO,
            limits_from: Instant::ZERO,
            flaky: None,
            failing: BTreeMap::new(),
            landed: Vec::new(),
            refused_by_failing_table: Vec::new(),
            throttled: 0,
        }
    }
}

impl Ec2 {
    pub(crate) fn limiting_from(limits_from: Instant) -> Self {
        Self {
            limits_from,
            refilled_at: limits_from,
            ..Self::default()
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        if now < self.limits_from {
            return true;
        }
        let elapsed = now.saturating_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * ACCOUNT_REFILL_PER_SECOND).min(ACCOUNT_BURST);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn table_fails(&self, table: &RouteTableId, now: Instant) -> bool {
        self.failing.get(table).is_some_and(|until| now < *until)
    }

    fn flaky_percent(&self, now: Instant) -> Option<u8> {
        self.flaky.filter(|(_, until)| now < *until).map(|(p, _)| p)
    }
}

/// What EC2 does with one attempt.
enum Outcome {
    /// Not applied; the error comes back.
    Refused(RouteError),
    /// Applied; this comes back (an error if the answer was lost).
    Applied(Result<(), RouteError>),
}

impl World {
    /// A node's driver starts a route call.
    pub(super) fn start_route_call(
        &mut self,
        config: &SimConfig,
        node: usize,
        generation: u64,
        call: u64,
        route: RouteCall,
    ) {
        let now = self.now;
        let timeout = match config.sabotage {
            // As it once was: the SDK's timeout, whatever the lease.
            Some(Sabotage::FenceOncePerCall) => ROUTE_CALL_TIMEOUT,
            _ => ROUTE_CALL_TIMEOUT.min(route.deadline.saturating_since(now)),
        };
        let timed_out = Input::RouteChanged {
            call: route.clone(),
            result: Err(RouteError::Unavailable {
                op: route.change.op(),
                detail: "timed out".into(),
            }),
        };
        self.schedule(
            now + timeout,
            What::TimedOut {
                node,
                generation,
                input: timed_out,
                call,
            },
        );
        self.route_attempt(config, node, generation, call, route, 1);
    }

    /// One attempt of a route call, as the driver makes it.
    pub(super) fn route_attempt(
        &mut self,
        config: &SimConfig,
        node: usize,
        generation: u64,
        call: u64,
        route: RouteCall,
        attempt: u32,
    ) {
        let sabotage = config.sabotage;
        if !self.open_calls.contains(&call) || self.nodes[node].generation != generation {
            return; // given up on, or its process is gone
        }
        match self.nodes[node].status {
            Status::Running => {}
            Status::Paused { until } => {
                // The process is stopped: its next attempt waits for it.
                let what = What::RouteAttempt {
                    node,
                    generation,
                    call,
                    route,
                    attempt,
                };
                self.schedule(until, what);
                return;
            }
            Status::Down | Status::Departed => return,
        }
        let now = self.now;
        let checks = attempt == 1 || sabotage != Some(Sabotage::FenceOncePerCall);
        let allowed = !checks || {
            let until = self.nodes[node].machine.call_allowed_until(route.shard, route.epoch);
            now < route.deadline && until.is_some_and(|u| now < u)
        };
        if !allowed {
            self.open_calls.remove(&call);
            let input = Input::RouteChanged {
                call: route,
                result: Err(RouteError::Fenced),
            };
            self.deliver(config, node, input);
            return;
        }
        let at = now + self.ec2_request_leg(node);
        self.schedule(
            at,
            What::RouteArrives {
                node,
                generation,
                call,
                route,
                attempt,
            },
        );
    }

    /// A transmitted attempt reaches EC2.
    pub(super) fn route_arrives(
        &mut self,
        config: &SimConfig,
        node: usize,
        generation: u64,
        call: u64,
        route: RouteCall,
        attempt: u32,
    ) {
        let now = self.now;
        let op = route.change.op();
        let table = route.change.table().clone();
        let outcome = if self.ec2.table_fails(&table, now) {
            if op.mutates() {
                self.ec2.refused_by_failing_table.push((now, node));
            }
            Outcome::Refused(RouteError::UnknownTable(table.clone()))
        } else if !self.ec2.take_token(now) {
            self.ec2.throttled += 1;
            Outcome::Refused(RouteError::Throttled {
                op,
                detail: "simulated: RequestLimitExceeded".into(),
            })
        } else {
            let flake = self
                .ec2
                .flaky_percent(now)
                .is_some_and(|p| self.rng.random_bool(f64::from(p) / 100.0));
            let unavailable = |detail: &str| RouteError::Unavailable {
                op,
                detail: detail.into(),
            };
            if flake && self.rng.random_bool(0.5) {
                Outcome::Refused(unavailable("simulated: InternalError"))
            } else {
                let result = self.routes.apply(&route.change);
                if result.is_ok() {
                    let inc = self.nodes[node].incarnations[generation as usize];
                    self.ec2.landed.push(Landed {
                        at: now,
                        node,
                        inc,
                        shard: route.shard,
                        epoch: route.epoch,
                        table,
                        op,
                        target: route.change.eni().cloned(),
                    });
                    self.changed = true;
                }
                Outcome::Applied(if flake {
                    Err(unavailable("simulated: applied, answer lost"))
                } else {
                    result
                })
            }
        };
        let result = match outcome {
            Outcome::Refused(e) | Outcome::Applied(Err(e)) => Err(e),
            Outcome::Applied(Ok(())) => Ok(()),
        };
        let answered_at = now + self.leg(config);
        let retry = matches!(
            result,
            Err(RouteError::Throttled { .. } | RouteError::Unavailable { .. })
        ) && attempt < SDK_MAX_ATTEMPTS;
        if retry {
            let ceiling = SDK_BACKOFF_BASE * 2u32.pow(attempt - 1);
            let backoff = Duration::from_micros(self.rng.random_range(0..=ceiling.as_micros() as u64));
            let what = What::RouteAttempt {
                node,
                generation,
                call,
                route,
                attempt: attempt + 1,
            };
            self.schedule(answered_at + backoff, what);
        } else {
            let input = Input::RouteChanged { call: route, result };
            self.schedule(
                answered_at,
                What::Deliver {
                    node,
                    generation,
                    input,
                    call,
                },
            );
        }
    }

    /// `DescribeRouteTables` for one table, as it reaches EC2.
    pub(super) fn describe_table(
        &mut self,
        table: RouteTableId,
        sent_at: Instant,
        sabotage: Option<Sabotage>,
    ) -> Input {
        let now = self.now;
        let flake = self
            .ec2
            .flaky_percent(now)
            .is_some_and(|p| self.rng.random_bool(f64::from(p) / 100.0));
        let result: Result<Arc<[RouteEntry]>, RouteError> = if self.ec2.table_fails(&table, now) {
            Err(RouteError::UnknownTable(table.clone()))
        } else if flake {
            Err(RouteError::Unavailable {
                op: RouteOp::Describe,
                detail: "simulated: InternalError".into(),
            })
        } else if sabotage == Some(Sabotage::RoutesUnseen) {
            Ok(Arc::from(Vec::new()))
        } else {
            self.routes.describe_shared(&table)
        };
        Input::TableDescribed { table, sent_at, result }
    }

    /// Time from transmit until EC2 applies: short, and bounded well inside
    /// the lease's safety margin (no tail: a call EC2 received is applied
    /// promptly, whatever happens to its answer).
    fn ec2_request_leg(&mut self, node: usize) -> Duration {
        let now = self.now;
        let slow = self
            .slow_ec2
            .iter()
            .filter(|(n, _, until)| *n == node && now < *until)
            .map(|(_, latency, _)| *latency)
            .max()
            .unwrap_or_default();
        slow + Duration::from_micros(self.rng.random_range(EC2_REQUEST_LEG_MICROS))
    }
}
