//! Routes: the one path every route change takes, from the reason for it to
//! the call that lands.
//!
//! - What is wanted ([`work`]): the routes of shards we hold, pointed at our
//!   ENI (each fenced by a fresh confirmation of ownership); after a
//!   hand-off, pushed to the recipient; the routes of a retired shard,
//!   deleted. One item per shard and table, retried by error class.
//! - When it goes out: in priority order, as the token [`bucket`] allows,
//!   while its table is not backing off; each call carries the deadline
//!   after which no attempt may be sent, and the driver asks the [`Fence`]
//!   before every attempt the SDK makes.
//! - What is there: the read-back of each table, on its own, to check and
//!   repair our routes, and to see where the routes of *free* shards point,
//!   so a shard whose item vanished goes back to the node that serves it.

mod bucket;
mod seen;
mod work;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use bucket::{Pacing, PacingError, DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND, MIN_CALLS_PER_SECOND};
pub use work::{TableHealth, PERMANENT_CAP as TABLE_BACKOFF_CAP};

use self::bucket::Bucket;
use self::seen::SeenRoutes;
use self::work::{Purpose, Work};
use super::{Effect, Event, Machine, Mode, Priority, RouteCall, Step};
use crate::backoff::Backoff;
use crate::routes::{RouteEntry, RouteError, RouteErrorClass};
use crate::store::RetireRequest;
use crate::time::Instant;
use crate::types::{EniId, Epoch, NodeId, RouteTableId, ShardId, Vip};

/// Mixed into the jitter seed of route retries.
const ROUTE_RETRY_SEED: u64 = 0x726f_7574;

/// What the route read-back found for one shard in one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteCheck {
    Ok,
    WrongTarget,
    Missing,
    Blackhole,
}

impl RouteCheck {
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteCheck::Ok => "ok",
            RouteCheck::WrongTarget => "wrong_target",
            RouteCheck::Missing => "missing",
            RouteCheck::Blackhole => "blackhole",
        }
    }
}

/// Which route writes may still go out, and until when: what the driver
/// asks before every attempt of a call, the SDK's retries included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fence {
    allowed: BTreeMap<(ShardId, Epoch), Instant>,
}

impl Fence {
    pub fn allows(&self, shard: ShardId, epoch: Epoch, now: Instant) -> bool {
        self.allowed.get(&(shard, epoch)).is_some_and(|until| now < *until)
    }
}

/// Where the routes of a shard point, across the fleet's tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pointing {
    /// No table has a route to an ENI for it.
    Nowhere,
    /// Every table that has a route points at this ENI.
    At(EniId),
    /// Tables disagree: no hint.
    Mixed,
}

#[derive(Clone, Debug)]
pub(super) struct RouteBook {
    pub(super) checks: BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)>,
    /// Every route the read-backs returned.
    seen: SeenRoutes,
    pub(super) tables: BTreeMap<RouteTableId, TableHealth>,
    work: BTreeMap<(ShardId, RouteTableId), Work>,
    bucket: Bucket,
    /// EC2 throttled us: every call waits until then.
    throttle: Backoff,
    throttled_until: Instant,
    /// Bumped when a read-back shows routes other than the last one.
    pub(super) version: u64,
}

impl RouteBook {
    pub(super) fn new(pacing: Pacing, now: Instant) -> Self {
        Self {
            checks: BTreeMap::new(),
            seen: SeenRoutes::default(),
            tables: BTreeMap::new(),
            work: BTreeMap::new(),
            bucket: Bucket::new(pacing, now),
            throttle: Backoff::new(work::THROTTLED_BASE, work::THROTTLED_CAP),
            throttled_until: Instant::ZERO,
            version: 0,
        }
    }

    /// Whether any of `tables` is down for us: our view of it is as old as
    /// its last read-back, and [`Self::pointing`] leaves it out.
    pub(super) fn any_down(&self, tables: &[RouteTableId]) -> bool {
        tables
            .iter()
            .any(|t| self.tables.get(t).is_some_and(TableHealth::is_down))
    }

    /// When every table that answers was last read back (send time): the
    /// oldest of them. Tables that keep refusing do not hold it back.
    pub(super) fn seen_at(&self, tables: &[RouteTableId]) -> Option<Instant> {
        self.oldest_read_back(tables, |table| {
            !self.tables.get(table).is_some_and(TableHealth::is_down)
        })
    }

    /// The oldest read-back of all `tables`, those that keep refusing
    /// included: what a drained node must have seen before it leaves (a
    /// table that is down now may still route to it when it is back).
    pub(super) fn all_seen_at(&self, tables: &[RouteTableId]) -> Option<Instant> {
        self.oldest_read_back(tables, |_| true)
    }

    fn oldest_read_back(&self, tables: &[RouteTableId], counts: impl Fn(&RouteTableId) -> bool) -> Option<Instant> {
        let mut oldest: Option<Instant> = None;
        for table in tables.iter().filter(|t| counts(t)) {
            let at = self.tables.get(table).and_then(|h| h.described_at)?;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// Where the shard's routes point, in the tables that answer: what a
    /// table that keeps refusing showed last may be long out of date.
    pub(super) fn pointing(&self, shard: ShardId, tables: &[RouteTableId]) -> Pointing {
        let mut targets = BTreeSet::new();
        for table in tables {
            if self.tables.get(table).is_some_and(TableHealth::is_down) {
                continue;
            }
            if let Some(Some(eni)) = self.seen.get(table, shard.vip()) {
                targets.insert(eni.clone());
            }
        }
        match targets.len() {
            0 => Pointing::Nowhere,
            1 => targets.pop_first().map_or(Pointing::Nowhere, Pointing::At),
            _ => Pointing::Mixed,
        }
    }

    /// Whether the last read-backs showed a route for any of `vips`
    /// pointing at `eni`.
    pub(super) fn any_points_at(&self, eni: &EniId, vips: &BTreeSet<Vip>) -> bool {
        self.seen
            .iter()
            .any(|(vip, target)| target.as_ref() == Some(eni) && vips.contains(vip))
    }

    /// Whether the read-backs showed the shard's route in every table
    /// pointing at `eni`.
    pub(super) fn points_everywhere_at(&self, shard: ShardId, eni: &EniId, tables: &[RouteTableId]) -> bool {
        self.seen_at(tables).is_some()
            && tables
                .iter()
                .all(|t| self.seen.get(t, shard.vip()) == Some(&Some(eni.clone())))
    }

    pub(super) fn mark_checked(&mut self, shard: ShardId, tables: &[RouteTableId], now: Instant) {
        for table in tables {
            self.checks.insert((shard, table.clone()), (RouteCheck::Ok, now));
        }
    }

    /// Whether a route of ours for `shard` is being written.
    pub(super) fn writing(&self, shard: ShardId) -> bool {
        self.items_of(shard)
            .any(|(_, w)| w.in_flight && w.purpose == Purpose::Own)
    }

    /// Whether any push is under way: a drain waits for them.
    pub(super) fn any_pushes(&self) -> bool {
        self.work.values().any(|w| matches!(w.purpose, Purpose::Push { .. }))
    }

    fn deleting(&self, shard: ShardId) -> bool {
        self.items_of(shard)
            .any(|(_, w)| matches!(w.purpose, Purpose::Retire { .. }))
    }

    fn items_of(&self, shard: ShardId) -> impl Iterator<Item = (&RouteTableId, &Work)> {
        self.work
            .range((shard, RouteTableId(String::new()))..)
            .take_while(move |((s, _), _)| *s == shard)
            .map(|((_, t), w)| (t, w))
    }

    /// Route calls this node could make now if it had tokens: the token
    /// bucket's level and the work waiting, for metrics.
    pub(super) fn pending(&self) -> (usize, usize) {
        let failover = self.work.values().filter(|w| w.priority == Priority::Failover).count();
        (failover, self.work.len() - failover)
    }

    pub(super) fn tokens(&self, now: Instant) -> f64 {
        self.bucket.level(now)
    }

    pub(super) fn wake_at(&self, now: Instant) -> Option<Instant> {
        let mut wake: Vec<Instant> = Vec::new();
        for ((_, table), w) in &self.work {
            if w.in_flight {
                continue;
            }
            let table_ready = self.tables.get(table).map_or(Instant::ZERO, |h| h.not_before);
            let ready = w.not_before.max(table_ready).max(self.throttled_until);
            wake.push(if ready > now {
                ready
            } else {
                self.bucket.next_token_at(now)
            });
            match w.purpose {
                Purpose::Push { until, .. } | Purpose::Retire { until } => wake.push(until),
                Purpose::Own => {}
            }
        }
        for health in self.tables.values() {
            wake.push(health.not_before);
        }
        wake.into_iter().filter(|t| *t > now).min()
    }
}

impl Machine {
    fn retry_seed(&self) -> u64 {
        self.jitter_seed(ROUTE_RETRY_SEED)
    }

    /// Whether a route for `vip` is in `table`, as its last read-back
    /// showed; `unread` if it was never read back.
    fn route_exists(&self, table: &RouteTableId, vip: Vip, unread: bool) -> bool {
        match self.routes.tables.get(table).and_then(|h| h.described_at) {
            Some(_) => self.routes.seen.contains(table, vip),
            None => unread,
        }
    }

    /// Our routes for `shard` in these tables should point at us. Where a
    /// table was never read back, a shard taken from another owner most
    /// likely has a route there already: the first call replaces it (a
    /// create would fail and cost a second call of the scarce budget).
    pub(super) fn want_own_routes(&mut self, shard: ShardId, tables: &[RouteTableId], priority: Priority) {
        let taken = self.book.record(shard).is_some_and(|r| r.moves > 0);
        let Some(epoch) = self.held.get(&shard).map(|h| h.epoch) else {
            return;
        };
        let eni = self.setup.info.eni.clone();
        for table in tables {
            let key = (shard, table.clone());
            if let Some(w) = self.routes.work.get_mut(&key) {
                if w.made(epoch, &w.change(shard, table)) && w.purpose == Purpose::Own {
                    w.priority = w.priority.min(priority);
                    continue;
                }
            }
            let exists = self.route_exists(table, shard.vip(), taken);
            let work = Work::new(epoch, Some(eni.clone()), Purpose::Own, priority, exists);
            self.routes.work.insert(key, work);
        }
    }

    /// After a hand-off (sent at `sent_at`): point the shard's routes at
    /// the recipient now, rather than leave traffic on us until it reads
    /// the shards again. Only while the shard cannot have moved on from the
    /// recipient: it hands a shard on no sooner than a lease after it found
    /// it handed over, and nobody takes it from the recipient before a lease
    /// after its last heartbeat (which we bound from below). A margin before
    /// either, so the push has landed by then. A drain's pushes also stop at
    /// the drain deadline.
    pub(super) fn push_routes(&mut self, shard: ShardId, epoch: Epoch, to: &NodeId, sent_at: Instant, now: Instant) {
        let Some(eni) = self.nodes.get(to).map(|n| n.info.eni.clone()) else {
            return;
        };
        let Some(heard_after) = self.observer.heard_after(to) else {
            return; // never seen it heartbeat twice: no bound, no push
        };
        let to_ttl = self
            .nodes
            .get(to)
            .and_then(|n| n.config.as_ref())
            .map_or(self.cfg().lease_ttl, |c| c.lease_ttl.min(self.cfg().lease_ttl));
        let margin = self.cfg().safety_margin();
        let mut until = (heard_after + to_ttl).min(sent_at + self.handed_hold()) - margin;
        if self.mode == Mode::Draining {
            until = until.min(self.drain_deadline().unwrap_or(until));
        }
        if until <= now {
            return;
        }
        for table in self.route_tables().to_vec() {
            let exists = self.route_exists(&table, shard.vip(), true);
            let purpose = Purpose::Push { to: to.clone(), until };
            let work = Work::new(epoch, Some(eni.clone()), purpose, Priority::Rebalance, exists);
            self.routes.work.insert((shard, table), work);
        }
    }

    /// How long a node keeps a shard it found handed to it before it may
    /// hand it on: the giver's pushes end before that.
    pub(super) fn handed_hold(&self) -> Duration {
        self.cfg().lease_ttl
    }

    /// Retiring a shard nobody serves, first step: delete its routes.
    pub(super) fn delete_routes(&mut self, shard: ShardId, now: Instant) {
        let until = now + self.cfg().lease_ttl;
        let epoch = self.book.epoch(shard);
        for table in self.route_tables().to_vec() {
            let work = Work::new(epoch, None, Purpose::Retire { until }, Priority::Repair, true);
            self.routes.work.insert((shard, table), work);
        }
    }

    /// Until when a call for `shard` at `epoch` may go out, if at all.
    pub fn call_allowed_until(&self, shard: ShardId, epoch: Epoch) -> Option<Instant> {
        let mut until = None;
        for (_, w) in self.routes.items_of(shard).filter(|(_, w)| w.epoch == epoch) {
            let u = match &w.purpose {
                Purpose::Own => self
                    .held
                    .get(&shard)
                    .filter(|h| h.epoch == epoch)
                    .and(self.writable_until(shard)),
                Purpose::Push { to, until } => {
                    // A recipient found gone (evicted, say) is no longer
                    // where the shard's traffic should go.
                    let owner = self.book.record(shard).and_then(|r| r.owner.as_ref());
                    let gone = self.membership.gone.contains_key(to);
                    (owner == Some(to) && self.book.epoch(shard) == epoch && !gone).then_some(*until)
                }
                Purpose::Retire { until } => (self.book.epoch(shard) == epoch).then_some(*until),
            };
            until = until.max(u);
        }
        until
    }

    /// What the driver checks before every attempt of a route call.
    pub fn fence(&self) -> Fence {
        let keys: BTreeSet<(ShardId, Epoch)> = self.routes.work.iter().map(|((s, _), w)| (*s, w.epoch)).collect();
        Fence {
            allowed: keys
                .into_iter()
                .filter_map(|(s, e)| Some(((s, e), self.call_allowed_until(s, e)?)))
                .collect(),
        }
    }

    /// Sends what route work is ready, in priority order, as tokens allow.
    pub(super) fn plan_route_writes(&mut self, now: Instant, out: &mut Step) {
        self.expire_route_work(now);
        if now < self.routes.throttled_until {
            return;
        }
        let mut ready: Vec<(Priority, ShardId, RouteTableId)> = self
            .routes
            .work
            .iter()
            .filter(|((_, table), w)| {
                !w.in_flight && now >= w.not_before && self.routes.tables.get(table).is_none_or(|h| h.ready(now))
            })
            .map(|((s, t), w)| (w.priority, *s, t.clone()))
            .collect();
        ready.sort();
        // A table that is down gets one call at a time, a probe: only once
        // it succeeds do the others follow. Otherwise every round of its
        // backoff would cost one call per shard.
        let mut probing: BTreeSet<RouteTableId> = self
            .routes
            .work
            .iter()
            .filter(|((_, table), w)| w.in_flight && self.routes.tables.get(table).is_some_and(TableHealth::is_down))
            .map(|((_, table), _)| table.clone())
            .collect();
        let lease = self.lease;
        let fresh_for = self.confirm_fresh_for();
        // Confirmations go only to what the tokens we have can send: one
        // made for a write that then waits for a token goes stale.
        let mut budget = self.routes.tokens(now).floor() as usize;
        for (priority, shard, table) in ready {
            if budget == 0 {
                break; // nothing behind it may pass it
            }
            let key = (shard, table.clone());
            let Some(epoch) = self.routes.work.get(&key).map(|w| w.epoch) else {
                continue;
            };
            let down = self.routes.tables.get(&table).is_some_and(TableHealth::is_down);
            if down && probing.contains(&table) {
                continue;
            }
            if self.routes.work[&key].purpose == Purpose::Own {
                let Some(held) = self.held.get_mut(&shard).filter(|h| h.epoch == epoch) else {
                    self.routes.work.remove(&key);
                    continue;
                };
                let after_drift = self.routes.work[&key]
                    .confirm_after
                    .is_none_or(|t| held.confirmed_at >= t);
                let fresh = after_drift
                    && lease.vouches_for(held.confirmed_at, now)
                    && now.saturating_since(held.confirmed_at) < fresh_for;
                if !fresh {
                    if !held.confirming {
                        held.confirming = true;
                        out.effects.push(Effect::ConfirmShard(shard));
                    }
                    budget -= 1;
                    continue;
                }
            }
            let Some(deadline) = self.call_allowed_until(shard, epoch).filter(|u| now < *u) else {
                continue; // expire_route_work drops what can never go
            };

            if !self.routes.bucket.take(now) {
                break;
            }
            budget -= 1;
            if down {
                probing.insert(table.clone());
            }
            let Some(w) = self.routes.work.get_mut(&key) else {
                continue;
            };
            w.in_flight = true;
            out.effects.push(Effect::ChangeRoute(RouteCall {
                shard,
                epoch,
                change: w.change(shard, &table),
                priority,
                deadline,
            }));
        }
    }

    /// Drops pushes and deletes that can no longer go out, and own work for
    /// shards we no longer hold.
    fn expire_route_work(&mut self, now: Instant) {
        let mut abandoned_retires = BTreeSet::new();
        let keys: Vec<(ShardId, RouteTableId)> = self.routes.work.keys().cloned().collect();
        for key in keys {
            let w = &self.routes.work[&key];
            if w.in_flight {
                continue;
            }
            let live = match w.purpose {
                Purpose::Own => self.held.get(&key.0).is_some_and(|h| h.epoch == w.epoch),
                _ => self.call_allowed_until(key.0, w.epoch).is_some_and(|u| now < u),
            };
            if !live {
                if matches!(w.purpose, Purpose::Retire { .. }) {
                    abandoned_retires.insert(key.0);
                }
                self.routes.work.remove(&key);
            }
        }
        for shard in abandoned_retires {
            self.routes.work.retain(|(s, _), w| *s != shard || w.in_flight);
            self.retiring.remove(&shard);
            self.retry_later(shard, now);
        }
    }

    pub(super) fn route_changed(
        &mut self,
        call: RouteCall,
        result: Result<(), RouteError>,
        now: Instant,
        out: &mut Step,
    ) {
        let table = call.change.table().clone();
        let key = (call.shard, table.clone());
        out.events.push(Event::RouteChanged {
            call: call.clone(),
            error: result.as_ref().err().cloned(),
        });
        let ours = self
            .routes
            .work
            .get(&key)
            .is_some_and(|w| w.made(call.epoch, &call.change));
        if let Some(w) = self.routes.work.get_mut(&key).filter(|_| ours) {
            w.in_flight = false;
        }
        let done = match &result {
            Ok(()) => true,
            // Deleting what is not there is done; the others pick the other call.
            Err(RouteError::NoRoute { .. }) if call.change.eni().is_none() => true,
            Err(RouteError::NoRoute { .. }) | Err(RouteError::AlreadyExists { .. }) => {
                if let Some(w) = self.routes.work.get_mut(&key).filter(|_| ours) {
                    w.exists = matches!(result, Err(RouteError::AlreadyExists { .. }));
                }
                false
            }
            // Not sent: the fence closed. Own work waits for a fresh
            // confirmation; anything else is dropped by the next plan.
            Err(RouteError::Fenced) => false,
            Err(e) => {
                let class = e.class().unwrap_or(RouteErrorClass::Transient);
                self.route_call_failed(&key, ours, class, e.to_string(), now);
                false
            }
        };
        if result.is_ok() || done {
            self.routes.throttle.succeeded();
            self.routes.tables.entry(table.clone()).or_default().succeeded();
            match call.change.eni() {
                Some(eni) => self.routes.seen.set(&table, call.shard.vip(), Some(eni.clone())),
                None => self.routes.seen.remove(&table, call.shard.vip()),
            }
        }
        if !done || !ours {
            return;
        }
        let Some(w) = self.routes.work.remove(&key) else {
            return;
        };
        match w.purpose {
            // EC2 accepted it: as good as a read-back, and the dashboard
            // should not show the pre-write "missing" until the next one.
            Purpose::Own => self.routes.mark_checked(call.shard, &[table], now),
            Purpose::Push { .. } => {}
            Purpose::Retire { .. } => {
                if !self.routes.deleting(call.shard) {
                    let epoch = self.book.epoch(call.shard);
                    out.effects.push(Effect::Retire(RetireRequest {
                        shard: call.shard,
                        epoch,
                    }));
                }
            }
        }
    }

    fn route_call_failed(
        &mut self,
        key: &(ShardId, RouteTableId),
        ours: bool,
        class: RouteErrorClass,
        detail: String,
        now: Instant,
    ) {
        let seed = self.retry_seed();
        self.routes
            .tables
            .entry(key.1.clone())
            .or_default()
            .failed(class, detail, now, seed);
        // Calls already under way when the throttling began come back
        // throttled too: one round of them is one refusal, or a burst of
        // calls would back every write off for the cap at once.
        if class == RouteErrorClass::Throttled && now >= self.routes.throttled_until {
            self.routes.throttle.failed();
            self.routes.throttled_until = now + self.routes.throttle.delay(seed);
        }
        if let Some(w) = self.routes.work.get_mut(key).filter(|_| ours) {
            w.priority = Priority::Repair;
            if class == RouteErrorClass::Transient {
                w.backoff.failed();
                w.not_before = now + w.backoff.delay(seed ^ key.0.vip().addr().to_bits() as u64);
            }
        }
    }

    /// Reads back every table that is due and not backing off.
    pub(super) fn describe_tables(&mut self, now: Instant, out: &mut Step) {
        for table in self.route_tables().to_vec() {
            let health = self.routes.tables.entry(table.clone()).or_default();
            if health.describing || !health.ready(now) {
                continue;
            }
            health.describing = true;
            out.effects.push(Effect::DescribeTable(table));
        }
    }

    pub(super) fn any_describing(&self) -> bool {
        self.routes.tables.values().any(|h| h.describing)
    }

    pub(super) fn table_described(
        &mut self,
        table: RouteTableId,
        sent_at: Instant,
        result: Result<Arc<[RouteEntry]>, RouteError>,
        now: Instant,
        out: &mut Step,
    ) {
        let seed = self.retry_seed();
        let health = self.routes.tables.entry(table.clone()).or_default();
        health.describing = false;
        match result {
            Ok(entries) => {
                health.succeeded();
                health.described_at = Some(health.described_at.map_or(sent_at, |t| t.max(sent_at)));
                self.routes.seen.replace(&table, &entries);
                // A new read-back may end a free shard's wait for it.
                self.routes.version += 1;
                self.check_routes(&table, &entries, now, out);
            }
            Err(e) => {
                let class = e.class().unwrap_or(RouteErrorClass::Transient);
                health.failed(class, e.to_string(), now, seed);
                out.events.push(Event::RouteError {
                    table: Some(table),
                    detail: e.to_string(),
                });
            }
        }
    }

    fn check_routes(&mut self, table: &RouteTableId, entries: &[RouteEntry], now: Instant, out: &mut Step) {
        // Only our shards' routes are looked up: index those alone (the
        // last entry for a destination wins), not the whole table.
        let mut index: BTreeMap<Vip, &RouteEntry> = BTreeMap::new();
        let held_vips: BTreeSet<Vip> = self.held.keys().map(|s| s.vip()).collect();
        for e in entries.iter().filter(|e| held_vips.contains(&e.destination)) {
            index.insert(e.destination, e);
        }
        let my_eni = self.setup.info.eni.clone();
        let held: Vec<ShardId> = self.held.keys().copied().collect();
        for shard in held {
            let found = index.get(&shard.vip());
            let check = match found {
                None => RouteCheck::Missing,
                Some(e) if e.blackhole => RouteCheck::Blackhole,
                Some(e) if e.target.as_ref() != Some(&my_eni) => RouteCheck::WrongTarget,
                Some(_) => RouteCheck::Ok,
            };
            let pending = self.routes.work.contains_key(&(shard, table.clone()));
            if check != RouteCheck::Ok && !pending {
                out.events.push(Event::RouteDrift {
                    shard,
                    table: table.clone(),
                    found: found.and_then(|e| e.target.clone()),
                });
                // A route at a node that may hold the shard now (not one
                // we know gone) may be right, and we wrong: only a
                // confirmation sent after this read-back repairs it. One at
                // a gone node (a late write of an evicted owner) sends the
                // traffic nowhere: as urgent as a failover.
                let at_gone_node = found
                    .and_then(|e| e.target.as_ref())
                    .is_some_and(|eni| self.eni_of_gone_node(eni));
                let elsewhere_alive = check == RouteCheck::WrongTarget && !at_gone_node;
                let priority = if at_gone_node {
                    Priority::Failover
                } else {
                    Priority::Repair
                };
                self.want_own_routes(shard, std::slice::from_ref(table), priority);
                if let Some(w) = self.routes.work.get_mut(&(shard, table.clone())) {
                    w.confirm_after = elsewhere_alive.then_some(now);
                }
            }
            self.routes.checks.insert((shard, table.clone()), (check, now));
        }
        let held: BTreeSet<&ShardId> = self.held.keys().collect();
        self.routes.checks.retain(|(s, _), _| held.contains(s));
    }

    fn eni_of_gone_node(&self, eni: &EniId) -> bool {
        self.nodes
            .values()
            .filter(|n| n.info.eni == *eni)
            .any(|n| self.membership.gone.contains_key(&n.info.id))
    }

    /// A confirmation younger than this fences a route write; older ones
    /// are renewed with a consistent read first. One lease: a shard is
    /// taken from its holder only once the holder is gone, by our own
    /// hand-off, or (after its item vanished) once it has been seen free
    /// for a lease, so a confirmation younger than a lease cannot be
    /// contradicted by another holder. It must exceed a store round trip by
    /// far, or a slow store would keep every confirmation stale and no route
    /// would ever be written (seen in the lab with the fast profile).
    pub(super) fn confirm_fresh_for(&self) -> Duration {
        self.cfg().lease_ttl
    }
}
