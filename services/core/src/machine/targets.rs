//! The targets: the owner every served shard should have, planned again
//! when membership, the shard owners, what we hold or the routes of free
//! shards change; and what they ask of this node (shards to take, to give
//! away, to retire).
//!
//! Agreed shards are shared by quota ([`crate::assign`]); disputed ones go
//! by rank among the members that serve them. A free shard whose routes
//! point at a node goes to that node, and waits while that node may still
//! come back: so a table re-created under a running fleet re-forms without
//! moving a route.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::book::Changes;
use super::routes::Pointing;
use super::walk::{MapWalk, SetWalk};
use super::{Held, Machine, OwnershipOp, Step};
use crate::assign::Role;
use crate::time::Instant;
use crate::types::{NodeId, ShardId};

/// What to do about a free shard, from where its routes point.
enum FreeShard {
    /// Its routes point at this member: it gets it back, whatever quotas say.
    BelongsTo(NodeId),
    /// Anyone may claim it, by the usual assignment.
    Open,
    /// Nobody may claim it yet: its last holder may still believe it holds
    /// it (until this instant), its routes were not read since it turned
    /// free, or they point at a node that may still come back.
    Wait(Option<Instant>),
}

impl Machine {
    /// Where a free shard goes, from where its routes point.
    ///
    /// A shard turns free only when its item vanishes (deleted by hand, or
    /// with the table). Its last holder may still hold a confirmation, good
    /// for a lease, from before: nobody claims the shard until it has been
    /// seen free for the longest lease, so no claim can make a second
    /// writer. Then the node its routes point at gets it back.
    fn free_shard(&self, shard: ShardId, free_since: Option<Instant>, now: Instant) -> FreeShard {
        let Some(free_since) = free_since else {
            return FreeShard::Open; // never read: not free, just unknown
        };
        let held_until = free_since + self.longest_ttl();
        if now < held_until {
            return FreeShard::Wait(Some(held_until));
        }
        if self.routes.seen_at(self.route_tables()).is_none_or(|t| t < free_since) {
            return FreeShard::Wait(None);
        }
        let eni = match self.routes.pointing(shard, self.route_tables()) {
            Pointing::Nowhere | Pointing::Mixed => return FreeShard::Open,
            Pointing::At(eni) => eni,
        };
        let node = if eni == self.setup.info.eni {
            Some(self.me())
        } else {
            self.nodes.values().find(|n| n.info.eni == eni).map(|n| &n.info.id)
        };
        match node {
            // A node we have never seen (we waited a lease for it), or one
            // that is gone or leaving: the assignment decides.
            None => FreeShard::Open,
            Some(id) if self.membership.gone.contains_key(id) => FreeShard::Open,
            Some(id) => match self.membership.role_of(id) {
                Some(Role::Takes | Role::Keeps) => FreeShard::BelongsTo(id.clone()),
                Some(Role::Leaves) => FreeShard::Open,
                // Marked dead but not gone yet: wait for the verdict.
                None => FreeShard::Wait(None),
            },
        }
    }

    /// Plans the targets again if what they follow from moved: membership,
    /// shard owners, what we hold, where free shards' routes point, or a
    /// free shard's wait ran out. When only owners moved, each onto its
    /// target, the last plan stands ([`Self::orphans_after_claims`]).
    pub(super) fn update_targets(&mut self, now: Instant, out: &mut Step) {
        let inputs = (
            self.versions.membership,
            self.book.version(),
            self.versions.held,
            self.routes.version,
        );
        let replan_due = self.replan_at.is_some_and(|t| now >= t);
        if inputs == self.targets_from && !replan_due {
            return;
        }
        // Routes count only for free shards, which the shortcut rules out.
        let only_owners_moved = !replan_due && (inputs.0, inputs.2) == (self.targets_from.0, self.targets_from.2);
        let after_claims = match self.book.take_changes() {
            Changes::Owners(changes) if only_owners_moved => self.orphans_after_claims(&changes),
            _ => None,
        };
        self.targets_from = inputs;
        self.replan_at = None;
        match after_claims {
            Some(orphans) if !cfg!(debug_assertions) => {
                self.orphans = orphans;
                self.targets_claiming = self.claiming().collect();
                // What we hold may have changed without a new version (a
                // claim whose landing a read showed first).
                self.plan_work_lists();
            }
            // Debug builds plan afresh anyway, and hold the shortcut to what
            // that gives: every simulation test checks it.
            Some(orphans) => {
                let target = Arc::clone(&self.target);
                self.orphans = self.plan_targets(now, out);
                debug_assert_eq!(orphans, self.orphans, "orphans after claims");
                debug_assert!(target == self.target, "targets after claims");
            }
            None => self.orphans = self.plan_targets(now, out),
        }
    }

    /// Computes the target of every served shard; returns how many agreed
    /// shards have no member as owner (failover work).
    fn plan_targets(&mut self, now: Instant, out: &mut Step) -> usize {
        let me = self.me().clone();
        // Owners that are members, of agreed shards (what the quotas share)
        // and of disputed ones; the two sets are disjoint. Built in shard
        // order, and the book walked beside them (`super::walk`): at ten
        // thousand shards, a search per shard was most of a plan.
        let mut agreed_owners: Vec<(ShardId, NodeId)> = Vec::new();
        let mut disputed_owners: BTreeMap<ShardId, NodeId> = BTreeMap::new();
        // Agreed shards that are not pinned, and how many of them have no
        // member as owner and are not waiting (failover work).
        let mut agreed: Vec<ShardId> = Vec::with_capacity(self.membership.agreed.len());
        let mut orphans = 0;
        // Shards seen free (their item gone, or without an owner): time,
        // where their routes point and the node items decide their fate.
        let mut timed_free_shards = 0;
        // Free shards that go back to the node their routes point at,
        // outside the quotas (rebalancing may move them later).
        let mut pinned: BTreeMap<ShardId, NodeId> = BTreeMap::new();
        // Listed, and made a set once: while a fleet forms, every shard
        // waits.
        let mut waiting = Vec::new();
        let agreed_set = Arc::clone(&self.membership.agreed);
        let disputed_set = Arc::clone(&self.membership.disputed);
        let served = agreed_set
            .iter()
            .map(|s| (*s, true))
            .chain(disputed_set.iter().map(|s| (*s, false)));
        let mut owner_of = self.book.owner_walk();
        let mut free_since = self.book.free_since_walk();
        let mut ours = Self::counts_as_held(&self.held, &self.ops);
        for (shard, is_agreed) in served {
            let (mut waits, mut pins) = (false, false);
            let owner = if ours(shard) {
                Some(me.clone())
            } else {
                match owner_of(shard) {
                    Some(owner) => self.membership.role_of(owner).map(|_| owner.clone()),
                    None if self.book.is_unreadable(shard) => {
                        waits = true;
                        None
                    }
                    None => {
                        let since = free_since(shard);
                        timed_free_shards += usize::from(since.is_some());
                        match self.free_shard(shard, since, now) {
                            FreeShard::BelongsTo(node) => {
                                pins = true;
                                pinned.insert(shard, node);
                            }
                            FreeShard::Open => {}
                            FreeShard::Wait(until) => {
                                waits = true;
                                if let Some(until) = until {
                                    self.replan_at = Some(self.replan_at.map_or(until, |r| r.min(until)));
                                }
                            }
                        }
                        None
                    }
                }
            };
            if waits {
                waiting.push(shard);
            }
            if !is_agreed {
                if let Some(owner) = owner {
                    disputed_owners.insert(shard, owner);
                }
                continue;
            }
            if pins {
                continue;
            }
            agreed.push(shard);
            match owner {
                Some(owner) => agreed_owners.push((shard, owner)),
                None if !waits => orphans += 1,
                None => {}
            }
        }
        drop((owner_of, free_since, ours));
        let waiting: BTreeSet<ShardId> = waiting.into_iter().collect();
        // In shard order already: built in one pass, not key by key.
        let agreed_owners: BTreeMap<ShardId, NodeId> = agreed_owners.into_iter().collect();
        let seen_at = self.routes.seen_at(self.route_tables());
        let mut free_since = self.book.free_since_walk();
        let waiting_for_routes = waiting.iter().any(|s| {
            free_since(*s).is_some_and(|since| now >= since + self.longest_ttl() && seen_at.is_none_or(|t| t < since))
        });
        drop(free_since);
        if waiting_for_routes {
            if !self.any_describing() {
                self.describe_tables(now, out);
            }
            // Look again soon: a read-back that fails changes nothing else
            // that would bring us back here.
            let again = now + self.cfg().scan_interval;
            self.replan_at = Some(self.replan_at.map_or(again, |r| r.min(again)));
        }
        let assignment = self
            .assign_memo
            .assign(&agreed, &self.membership.members, agreed_owners);
        // Changed in place only where the plan differs from the assignment
        // (disputes, pinned or waiting shards): else it stays shared.
        let mut target = assignment.target;
        for &shard in self.membership.disputed.iter() {
            let owner = disputed_owners.get(&shard).or(pinned.get(&shard));
            if let Some(to) = self.membership.disputed_target(shard, owner) {
                Arc::make_mut(&mut target).insert(shard, to);
            }
        }
        for (shard, node) in &pinned {
            if self.membership.agreed.contains(shard) {
                Arc::make_mut(&mut target).insert(*shard, node.clone());
            }
        }
        // Shards we hold outside our layout (we served them before a
        // configuration change) go where the fleet wants them.
        let mut outside_layout = false;
        for record in self.book.records() {
            if record.owner.as_ref() == Some(&me) && !self.setup.layout.contains(record.id) {
                if let Some(to) = self.membership.disputed_target(record.id, None) {
                    if !target.contains_key(&record.id) {
                        Arc::make_mut(&mut target).insert(record.id, to);
                        outside_layout = true;
                    }
                }
            }
        }
        // Rebuilt without them rather than cut one by one: while a fleet
        // forms, they are most of the targets.
        let mut waits = SetWalk::new(&waiting);
        if target.keys().any(|s| waits.contains(*s)) {
            let mut waits = SetWalk::new(&waiting);
            target = Arc::new(
                target
                    .iter()
                    .filter(|(s, _)| !waits.contains(**s))
                    .map(|(s, o)| (*s, o.clone()))
                    .collect(),
            );
        }
        self.free_shards_follow_routes =
            (!pinned.is_empty() || !waiting.is_empty()) && self.routes.any_down(self.route_tables());
        self.targets_incremental = self.membership.disputed.is_empty()
            && pinned.is_empty()
            && waiting.is_empty()
            && timed_free_shards == 0
            && !outside_layout;
        self.targets_claiming = self.claiming().collect();
        self.target = target;
        self.pace.targets_replaced();
        self.quota = assignment.quota;
        self.plan_work_lists();
        orphans + pinned.len()
    }

    /// The orphans once `changes` (shards whose owner moved, each with its
    /// owner before) and the claims we started or ended since are in, if
    /// each shard's owner, counting our claims as ours, either stayed or
    /// moved to its target: then the assignment stands (the memo's rule,
    /// `crate::assign::memo`), so do the targets and quotas, and only
    /// shards that had no member as owner stop counting as orphans. `None`:
    /// plan afresh. While a fleet forms or fails over, nearly every change
    /// a node learns is such a claim, and planning afresh is a pass over
    /// every shard.
    fn orphans_after_claims(&self, changes: &[(ShardId, Option<NodeId>)]) -> Option<usize> {
        if !self.targets_incremental {
            return None;
        }
        let me = self.me();
        let claiming: BTreeSet<ShardId> = self.claiming().collect();
        let claimed_then = &self.targets_claiming;
        // Each shard once, with its owner in the book as of the last plan.
        let mut book_then: BTreeMap<ShardId, Option<&NodeId>> = BTreeMap::new();
        for (shard, before) in changes {
            book_then.entry(*shard).or_insert(before.as_ref());
        }
        for shard in claiming.symmetric_difference(claimed_then) {
            book_then.entry(*shard).or_insert_with(|| self.book.owner(*shard));
        }
        let mut orphans = self.orphans;
        for (shard, book_before) in book_then {
            let held = self.held.contains_key(&shard);
            // A claim that started and landed between two plans: whether we
            // held it then is not known here.
            if held && !claimed_then.contains(&shard) && book_before != Some(me) {
                return None;
            }
            let then = if held || claimed_then.contains(&shard) {
                Some(me)
            } else {
                book_before
            };
            let now = if held || claiming.contains(&shard) {
                Some(me)
            } else {
                self.book.owner(shard)
            };
            if then == now {
                continue;
            }
            if !self.membership.agreed.contains(&shard) || now != self.target.get(&shard) {
                return None;
            }
            if then.is_none_or(|owner| self.membership.role_of(owner).is_none()) {
                orphans = orphans.checked_sub(1)?;
            }
        }
        Some(orphans)
    }

    /// The shards we are claiming, in order.
    fn claiming(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.ops
            .iter()
            .filter(|(_, op)| matches!(op, OwnershipOp::Acquire { .. }))
            .map(|(shard, _)| *shard)
    }

    /// What the targets ask of us, derived once per new set of targets
    /// rather than on every step: shards to take, shards to give away,
    /// shards no member serves.
    fn plan_work_lists(&mut self) {
        let me = self.me().clone();
        self.work_lists.take = self
            .target
            .iter()
            .filter(|(s, owner)| **owner == me && self.setup.layout.contains(**s) && !self.held.contains_key(s))
            .map(|(s, _)| *s)
            .collect();
        // Both walk what they ask of beside the shards, in shard order.
        let mut owner_of = self.book.owner_walk();
        let mut held = MapWalk::new(&self.held);
        self.work_lists.give = self
            .target
            .iter()
            .filter(|(s, to)| **to != me && (held.get(**s).is_some() || owner_of(**s) == Some(&me)))
            .map(|(s, to)| (*s, to.clone()))
            .collect();
        let mut agreed = SetWalk::new(&self.membership.agreed);
        let mut disputed = SetWalk::new(&self.membership.disputed);
        self.work_lists.retire = self
            .book
            .records()
            .map(|r| r.id)
            .filter(|s| !(agreed.contains(*s) || disputed.contains(*s)))
            .collect();
    }

    /// Whether the targets count a shard as ours: held, or a claim of it
    /// in flight. Planned again before a claim lands (another death found
    /// meanwhile), we would otherwise take our quota once more on top of it.
    /// Asked of shards in ascending order, walking what we hold and do.
    pub(super) fn counts_as_held<'a>(
        held: &'a BTreeMap<ShardId, Held>,
        ops: &'a BTreeMap<ShardId, OwnershipOp>,
    ) -> impl FnMut(ShardId) -> bool + 'a {
        let (mut held, mut ops) = (MapWalk::new(held), MapWalk::new(ops));
        move |shard| held.get(shard).is_some() || matches!(ops.get(shard), Some(OwnershipOp::Acquire { .. }))
    }
}
