//! The application's route calls, through the account's EC2 bucket and
//! the SDK's retries, and when a crashed worker's lease counts as restored.

use std::time::Duration;

use rand::Rng;
use vipfleet_core::sim::{
    ACCOUNT_BURST, ACCOUNT_REFILL_PER_SECOND, EC2_REQUEST_LEG_MICROS, SDK_BACKOFF_BASE, SDK_MAX_ATTEMPTS,
};

use super::{Ev, Route, World};
use crate::kcl::ROUTE_RETRY_PAUSE;

impl World<'_> {
    /// The shard's consumer starts: its VIP's route in every table.
    pub(super) fn start_consumer(&mut self, w: usize, lease: usize) {
        if self.holds(w, lease) {
            for table in 0..self.routes.len() {
                let route = Route {
                    w,
                    lease,
                    table,
                    attempt: 1,
                };
                self.schedule(self.now, Ev::RouteAttempt(route));
            }
        }
    }

    pub(super) fn route_attempt(&mut self, route: Route) {
        // The application writes a route only for a lease it holds.
        if self.holds(route.w, route.lease) {
            let at = self.now + Duration::from_micros(self.rng.random_range(EC2_REQUEST_LEG_MICROS));
            self.schedule(at, Ev::RouteArrives(route));
        }
    }

    /// The account's bucket, as the core simulation models it: it refuses
    /// nothing before [`SimConfig::bucket_from`] (the fleet formed long
    /// ago), and is full then.
    ///
    /// [`SimConfig::bucket_from`]: vipfleet_core::sim::SimConfig::bucket_from
    fn take_token(&mut self) -> bool {
        if self.now < self.config.bucket_from {
            return true;
        }
        let elapsed = self.now.saturating_sub(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * ACCOUNT_REFILL_PER_SECOND).min(ACCOUNT_BURST);
        self.refilled_at = self.now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// An attempt reaches EC2: applied if the account's bucket has a token.
    pub(super) fn route_arrives(&mut self, route: Route) {
        let Route { w, lease, table, .. } = route;
        let landed = self.take_token();
        if landed {
            self.route_counters.mutating_calls += 1;
            let target = &mut self.routes[table][lease];
            if *target != Some(w) {
                *target = Some(w);
                self.route_counters.target_changes += 1;
            }
            self.check_restored(lease);
        } else {
            self.throttled += 1;
        }
        let at = self.now + self.leg();
        self.schedule(at, Ev::RouteAnswer { route, landed });
    }

    /// A crashed worker's lease is back when a live worker owns it and
    /// every table routes it there.
    pub(super) fn check_restored(&mut self, lease: usize) {
        let Some(&i) = self.restoring.get(&lease) else {
            return;
        };
        let Some(owner) = self.leases[lease].owner.filter(|&o| self.alive(o)) else {
            return;
        };
        if self.routes.iter().any(|t| t[lease] != Some(owner)) {
            return;
        }
        self.restoring.remove(&lease);
        let r = &mut self.recoveries[i];
        r.per_shard.push(self.now.saturating_sub(r.at));
        if r.per_shard.len() == r.shards {
            r.took = Some(self.now.saturating_sub(r.at));
        }
    }

    pub(super) fn route_answered(&mut self, route: Route, landed: bool) {
        if landed {
            return;
        }
        // Throttled: the SDK's next attempt after a jittered backoff, or
        // the application's own retry.
        let (at, attempt) = if route.attempt < SDK_MAX_ATTEMPTS {
            let ceiling = SDK_BACKOFF_BASE * 2u32.pow(route.attempt - 1);
            let backoff = Duration::from_micros(self.rng.random_range(0..=ceiling.as_micros() as u64));
            (self.now + backoff, route.attempt + 1)
        } else {
            (self.now + ROUTE_RETRY_PAUSE, 1)
        };
        self.schedule(at, Ev::RouteAttempt(Route { attempt, ..route }));
    }
}
