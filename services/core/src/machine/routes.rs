//! Routes: writing them for the shards we hold (each write fenced by a
//! fresh confirmation of ownership), pushing them to the recipient of a
//! hand-off, reading them back to check and repair, deleting the route of a
//! retired shard, and reading which node the route of a *free* shard points
//! at, so a shard whose item vanished goes back to the node that serves it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Effect, Event, Machine, Mode, Priority, RouteWriteRequest, Step};
use crate::routes::{RouteEntry, RouteError};
use crate::store::RetireRequest;
use crate::time::Instant;
use crate::types::{EniId, Epoch, NodeId, RouteTableId, ShardId, Vip};

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

#[derive(Clone, Debug, Default)]
pub(super) struct RouteBook {
    pub(super) checks: BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)>,
    /// Every route the last read-back returned: its ENI target, `None` for a
    /// blackhole or a target that is not an ENI.
    seen: BTreeMap<(RouteTableId, Vip), Option<EniId>>,
    /// Send time of the last successful read-back.
    pub(super) seen_at: Option<Instant>,
    /// Shards whose routes a hand-off of ours is pushing to the recipient.
    /// A drain ends only when none is left: a node that may be terminated
    /// must not leave routes pointing at itself.
    pub(super) pushing: BTreeSet<ShardId>,
    /// Retired shards whose routes are being deleted.
    pub(super) deleting: BTreeSet<ShardId>,
    /// Bumped when a read-back shows routes other than the last one.
    pub(super) version: u64,
}

impl RouteBook {
    pub(super) fn wake_at(&self) -> Option<Instant> {
        None
    }

    pub(super) fn pointing(&self, shard: ShardId, tables: &[RouteTableId]) -> Pointing {
        let mut targets = BTreeSet::new();
        for table in tables {
            if let Some(Some(eni)) = self.seen.get(&(table.clone(), shard.vip())) {
                targets.insert(eni.clone());
            }
        }
        match targets.len() {
            0 => Pointing::Nowhere,
            1 => targets.pop_first().map_or(Pointing::Nowhere, Pointing::At),
            _ => Pointing::Mixed,
        }
    }

    /// Whether the last read-back showed the shard's route in every table
    /// pointing at `eni`.
    pub(super) fn points_everywhere_at(&self, shard: ShardId, eni: &EniId, tables: &[RouteTableId]) -> bool {
        self.seen_at.is_some()
            && tables
                .iter()
                .all(|t| self.seen.get(&(t.clone(), shard.vip())) == Some(&Some(eni.clone())))
    }

    pub(super) fn mark_checked(&mut self, shard: ShardId, tables: Vec<RouteTableId>, now: Instant) {
        for table in tables {
            self.checks.insert((shard, table), (RouteCheck::Ok, now));
        }
    }
}

impl Machine {
    pub(super) fn routes_written(
        &mut self,
        shard: ShardId,
        eni: EniId,
        failed: Vec<RouteError>,
        now: Instant,
        out: &mut Step,
    ) {
        let ours = eni == self.setup.info.eni;
        if !ours {
            self.routes.pushing.remove(&shard);
        }
        let tables = self.route_tables().to_vec();
        if let Some(held) = self.held.get_mut(&shard).filter(|_| ours) {
            held.writing = false;
            if failed.is_empty() {
                held.needs_write = false;
                // EC2 accepted every route: as good as a read-back, and the
                // dashboard should not show the pre-write "missing" until
                // the next reconcile.
                self.routes.mark_checked(shard, tables, now);
            } else {
                self.retry_later(shard, now);
            }
        }
        let fenced = failed.iter().filter(|e| matches!(e, RouteError::Fenced { .. })).count();
        out.events.push(Event::RoutesWritten {
            shard,
            eni,
            failed: failed.len() - fenced,
            fenced,
        });
    }

    pub(super) fn routes_described(
        &mut self,
        sent_at: Instant,
        result: Result<Vec<RouteEntry>, RouteError>,
        now: Instant,
        out: &mut Step,
    ) {
        self.in_flight.describe = false;
        match result {
            Ok(entries) => {
                let seen: BTreeMap<(RouteTableId, Vip), Option<EniId>> = entries
                    .iter()
                    .map(|e| {
                        let target = e.target.clone().filter(|_| !e.blackhole);
                        ((e.table.clone(), e.destination), target)
                    })
                    .collect();
                // A new read-back may end a free shard's wait for it.
                self.routes.version += 1;
                self.routes.seen = seen;
                self.routes.seen_at = Some(sent_at);
                self.check_routes(&entries, now, out);
            }
            Err(e) => out.events.push(Event::RouteError { detail: e.to_string() }),
        }
    }

    fn check_routes(&mut self, entries: &[RouteEntry], now: Instant, out: &mut Step) {
        let index: BTreeMap<(&RouteTableId, Vip), &RouteEntry> =
            entries.iter().map(|e| ((&e.table, e.destination), e)).collect();
        let my_eni = self.setup.info.eni.clone();
        let tables = self.route_tables().to_vec();
        for (shard, held) in self.held.iter_mut() {
            for table in &tables {
                let found = index.get(&(table, shard.vip()));
                let check = match found {
                    None => RouteCheck::Missing,
                    Some(e) if e.blackhole => RouteCheck::Blackhole,
                    Some(e) if e.target.as_ref() != Some(&my_eni) => RouteCheck::WrongTarget,
                    Some(_) => RouteCheck::Ok,
                };
                if check != RouteCheck::Ok && !held.writing {
                    out.events.push(Event::RouteDrift {
                        shard: *shard,
                        table: table.clone(),
                        found: found.and_then(|e| e.target.clone()),
                    });
                    held.needs_write = true;
                    held.priority = held.priority.min(Priority::Repair);
                }
                self.routes.checks.insert((*shard, table.clone()), (check, now));
            }
        }
        let held: BTreeSet<&ShardId> = self.held.keys().collect();
        self.routes.checks.retain(|(s, _), _| held.contains(s));
    }

    /// After a hand-off: point the shard's routes at the recipient now,
    /// rather than leave traffic on us until its next reconcile. A push
    /// made while rebalancing must go out within a lease TTL (later, the
    /// shard may have moved on); a drain's pushes may take until the drain
    /// deadline, and the drain ends only once they are done.
    pub(super) fn push_routes(&mut self, shard: ShardId, epoch: Epoch, to: &NodeId, now: Instant, out: &mut Step) {
        let Some(eni) = self.nodes.get(to).map(|n| n.info.eni.clone()) else {
            return;
        };
        let deadline = match self.mode {
            Mode::Draining => self.drain_deadline(),
            _ => Some(now + self.cfg().lease_ttl),
        };
        self.routes.pushing.insert(shard);
        out.effects.push(Effect::WriteRoutes(RouteWriteRequest {
            shard,
            epoch,
            tables: self.route_tables().to_vec(),
            eni,
            priority: Priority::Rebalance,
            deadline,
        }));
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

    pub(super) fn plan_route_writes(&mut self, now: Instant, out: &mut Step) {
        let fresh_for = self.confirm_fresh_for();
        let lease = self.lease;
        let tables = self.route_tables().to_vec();
        for (shard, held) in self.held.iter_mut() {
            if !held.needs_write || held.writing || held.confirming {
                continue;
            }
            if self.retry_at.get(shard).is_some_and(|t| now < *t) {
                continue;
            }
            let fresh =
                lease.vouches_for(held.confirmed_at, now) && now.saturating_since(held.confirmed_at) < fresh_for;
            if fresh {
                held.writing = true;
                out.effects.push(Effect::WriteRoutes(RouteWriteRequest {
                    shard: *shard,
                    epoch: held.epoch,
                    tables: tables.clone(),
                    eni: self.setup.info.eni.clone(),
                    priority: held.priority,
                    deadline: lease.deadline(),
                }));
            } else {
                held.confirming = true;
                out.effects.push(Effect::ConfirmShard(*shard));
            }
        }
    }

    /// Retiring a shard nobody serves, first step: delete its routes.
    pub(super) fn delete_routes(&mut self, shard: ShardId, out: &mut Step) {
        self.routes.deleting.insert(shard);
        out.effects.push(Effect::DeleteRoutes {
            shard,
            tables: self.route_tables().to_vec(),
        });
    }

    /// Second step: once the routes are gone, delete the item, on the
    /// condition that nobody claimed it meanwhile.
    pub(super) fn routes_deleted(&mut self, shard: ShardId, failed: Vec<RouteError>, now: Instant, out: &mut Step) {
        self.routes.deleting.remove(&shard);
        let failed: Vec<RouteError> = failed
            .into_iter()
            .filter(|e| !matches!(e, RouteError::NoRoute { .. }))
            .collect();
        if !failed.is_empty() {
            self.retiring.remove(&shard);
            self.retry_later(shard, now);
            for e in failed {
                out.events.push(Event::RouteError { detail: e.to_string() });
            }
            return;
        }
        let epoch = self.book.epoch(shard);
        out.effects.push(Effect::Retire(RetireRequest { shard, epoch }));
    }
}
