//! One pass of planning after every input.
//!
//! 1. Timers: heartbeat, node and shard reads, our layout item, route
//!    read-back.
//! 2. With a valid own lease and fresh reads: the membership rule, then the
//!    target of every shard the fleet serves (`super::targets`), when
//!    what they follow from changed.
//! 3. Claims of free shards, takeovers from gone owners, marking gone nodes
//!    dead and retiring shards no member serves (both by the coordinator
//!    only), hand-offs (drain, unhealthy, over quota; rebalancing yields to
//!    failover work), route writes, the end of a drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Effect, Event, ExitReason, Machine, Mode, OwnershipOp, Read, Step};
use crate::assign::Role;
use crate::liveness::NodeCheck;
use crate::membership::{membership, Me, Membership, Peers};
use crate::store::{AcquireRequest, BeatKind, Expect, HandoffRequest, HeartbeatRequest, MarkDeadRequest};
use crate::time::Instant;
use crate::types::{NodeId, ShardId, Vip};

/// Our layout item is written again this often, in case it was deleted.
pub const LAYOUT_REPUBLISH_INTERVAL: Duration = Duration::from_secs(600);
/// While some shard has no live owner in our view, re-read the shards this
/// often: either someone took it and we should know, or it is ours to take.
const ORPHAN_REFRESH_SCANS: u32 = 4;
/// Peers read the node items every scan (hot); after this many scans past
/// the send time of our heartbeat, they have seen what it said.
const PEER_NOTICE_SCANS: u32 = 2;
/// A drained node whose routes still point at it (a push ran out of time,
/// the new owner has not repaired them yet) reads the tables back again
/// after this many scans.
const DRAIN_RECHECK_SCANS: u32 = 4;

impl Machine {
    pub(super) fn plan(&mut self, now: Instant, out: &mut Step) {
        self.retry_at.retain(|_, t| *t > now);
        self.layout_retry_at.retain(|_, t| *t > now);
        self.plan_pace(now, out);
        self.plan_timers(now, out);
        if self.weighing.next.is_some_and(|t| now >= t) {
            self.weigh_verdicts(now, out);
        }
        let valid = self.lease.is_valid(now);
        if self.lease_was_valid && !valid {
            out.events.push(Event::LeaseLapsed);
        }
        self.lease_was_valid = valid;
        if self.drain_deadline().is_some_and(|d| now >= d) {
            self.exit(ExitReason::DrainTimedOut, out);
            return;
        }
        if !valid || !self.nodes_seen || !self.shards_seen {
            return;
        }
        if !self.no_reclaim {
            self.plan_reclaims(now, out);
        }
        // Membership and targets are a function of what the node knows:
        // they only change with an input (or when a free shard's wait runs
        // out), not with a timer tick.
        let replan = self.replan || self.replan_at.is_some_and(|t| now >= t);
        if replan {
            self.replan = false;
            self.plan_membership(now, out);
        }
        // Claims planned from a shard map older than the change in the live
        // set overshoot: hand-offs we received since are missing from it, so
        // we look under capacity, take too many orphans, and rebalancing then
        // moves shards that were never the dead node's. Read first.
        let fresh = self
            .members_changed_at
            .is_none_or(|changed| self.book.read_at().is_some_and(|read| read >= changed));
        if !fresh && self.shards_stale && self.may_read_shards(now) {
            self.read_shards(now, out);
        }
        self.update_targets(now, out);
        let orphans = self.orphans;
        // A layout read in flight: the member will likely turn out to take
        // a share, so planning without it would move shards twice.
        let fresh = fresh && self.in_flight.layouts.is_empty();
        if fresh {
            self.plan_acquisitions(now, out);
        }
        if self.membership.coordinator() == Some(self.me()) {
            self.plan_mark_dead(out);
            self.plan_retire(now);
        }
        if fresh {
            self.plan_handoffs(orphans, now, out);
        }
        self.plan_route_writes(now, out);
        if orphans > 0
            && self
                .book
                .read_at()
                .is_some_and(|t| now.saturating_since(t) >= self.orphan_refresh_interval())
        {
            // Someone should be taking these; if our map is stale we would
            // hold back rebalancing for nothing.
            self.shards_stale = true;
        }
        self.plan_drain_exit(now, out);
    }

    /// How long a shard without a live owner may go unread: a few scans,
    /// or in a large table as long as a hot scan of its shard items (every
    /// node reads them while orphans last, and the orphans' takers must
    /// get their reads through).
    fn orphan_refresh_interval(&self) -> Duration {
        let scans = self.cfg().scan_interval * ORPHAN_REFRESH_SCANS;
        scans.max(super::pace::hot_scan(self.cfg(), self.pace.shard_bytes()))
    }

    /// No read of the shards in flight, none failed too recently, and not
    /// the node items' turn (see `reads`).
    pub(super) fn may_read_shards(&self, now: Instant) -> bool {
        self.in_flight.shards.is_none()
            && now >= self.timers.shards_not_before
            && self.read_backoff.may_send(Read::Shards)
    }

    pub(super) fn read_shards(&mut self, now: Instant, out: &mut Step) {
        self.in_flight.shards = Some(now);
        self.shards_stale = false;
        self.timers.shard_refresh = now + self.shard_read_interval();
        out.effects.push(Effect::ReadShards);
    }

    fn plan_timers(&mut self, now: Instant, out: &mut Step) {
        // A (re-)registration waits for our layout item: a peer that reads
        // our node item must find what we serve.
        let may_beat = self.layout_published || self.beat_kind == BeatKind::Renew;
        if now >= self.timers.heartbeat && may_beat {
            self.heartbeats.insert(now, (self.mode, self.beat_kind));
            if self.beat_kind == BeatKind::Renew {
                self.renews_sent += 1;
            } else {
                // Above every value our item has held: none exceeds our
                // last put plus every renewal we sent. A put that restarted
                // lower (our item vanished with a lost table, or was
                // deleted) could climb back to a counter an observer saw
                // stand still before, and its takeover's `Unchanged`
                // condition would pass while we live and write.
                let renewed = if self.counters_restart { 0 } else { self.renews_sent };
                self.register_hb = self.register_hb.saturating_add(renewed).saturating_add(1);
            }
            self.timers.heartbeat = now + self.cfg().heartbeat_interval;
            out.effects.push(Effect::Heartbeat(HeartbeatRequest {
                info: self.setup.info.clone(),
                config: self.setup.config(),
                inc: self.setup.inc,
                state: self.mode.state(),
                kind: self.beat_kind,
                epoch_floor: self.book.floor(),
                register_hb: self.register_hb,
            }));
        }
        if !self.in_flight.publish && now >= self.timers.publish_layout {
            self.in_flight.publish = true;
            self.timers.publish_layout = now + LAYOUT_REPUBLISH_INTERVAL;
            out.effects.push(Effect::PublishLayout(self.setup.layout.clone()));
        }
        if self.in_flight.nodes < self.max_node_reads
            && now >= self.timers.scan
            && self.read_backoff.may_send(Read::Nodes)
        {
            self.in_flight.nodes += 1;
            self.timers.scan = now + self.node_read_interval();
            out.effects.push(Effect::ReadNodes);
        }
        let refresh_due = now >= self.timers.shard_refresh;
        if (self.shards_stale && self.may_read_shards(now))
            || (refresh_due && self.in_flight.shards.is_none() && self.read_backoff.may_send(Read::Shards))
        {
            self.read_shards(now, out);
        }
        // A read-back due while our lease has lapsed waits for it, rather
        // than for the next interval: what we hold needs checking most
        // just then.
        let recheck_due = self.rechecks.first().is_some_and(|t| now >= *t);
        if (now >= self.timers.reconcile || recheck_due) && (self.held.is_empty() || self.lease.is_valid(now)) {
            self.timers.reconcile = now + self.cfg().reconcile_interval;
            self.rechecks.retain(|t| *t > now);
            // A draining node reads back what it no longer holds too: it
            // leaves only once no route points at it. So does a node whose
            // free shards wait on where their routes point while a table is
            // down for it: the read-back is also that table's probe.
            if !self.held.is_empty() || self.drain_quiet_since.is_some() || self.free_shards_follow_routes {
                self.describe_tables(now, out);
            }
        }
    }

    fn plan_membership(&mut self, now: Instant, out: &mut Step) {
        let membership = membership(
            Me {
                id: &self.setup.info.id,
                weight: self.setup.info.weight,
                state: self.mode.state(),
                layout: &self.setup.layout,
                tables: &self.setup.route_tables,
                lease_ttl: self.setup.lease.lease_ttl,
            },
            Peers {
                nodes: &self.nodes,
                unreadable: &self.unreadable_nodes,
                observer: &self.observer,
                layouts: &self.layouts,
            },
        );
        for id in &membership.unknown_layouts {
            if !self.in_flight.layouts.contains(id) && !self.layout_retry_at.contains_key(id) {
                self.in_flight.layouts.insert(id.clone());
                out.effects.push(Effect::ReadLayout(id.clone()));
            }
        }
        for node in membership.gone.keys() {
            if !self.gone_reported.contains(node) {
                out.events.push(Event::NodeGone { node: node.clone() });
                // Nodes that read cold saw nothing: an eviction makes it
                // gone for them at once, and announces it.
                if self.cfg().cold_reads {
                    if let Some(inc) = self.nodes.get(node).map(|n| n.inc) {
                        self.evict_dead(node.clone(), inc, now, out);
                    }
                }
            }
        }
        self.gone_reported = membership.gone.keys().cloned().collect();
        let gone_changed = !membership.gone.keys().eq(self.membership.gone.keys());
        let landed = std::mem::take(&mut self.evictions_landed);
        if membership.members != self.membership.members || gone_changed {
            let changed_at = self.live_set_changed_at(&membership, &landed, now);
            self.members_changed_at = Some(changed_at);
            let read_since = |sent: Option<Instant>| sent.is_some_and(|t| t >= changed_at);
            if !read_since(self.book.read_at()) && !read_since(self.in_flight.shards) {
                self.shards_stale = true;
            }
        }
        if membership != self.membership {
            self.versions.membership += 1;
            self.membership = membership;
        }
    }

    /// When the live set changed, as far as `new` shows: when we asked for
    /// the last of our own evictions, if they explain the whole change (the
    /// read of the shards sent with each then covers it), else now.
    fn live_set_changed_at(&self, new: &Membership, landed: &BTreeMap<NodeId, Instant>, now: Instant) -> Instant {
        let old = &self.membership;
        let ours = |id: &NodeId| landed.contains_key(id);
        let others_same_members = old.members.iter().filter(|m| !ours(&m.id)).eq(new.members.iter());
        let others_same_gone = old
            .gone
            .iter()
            .filter(|(id, _)| !ours(id))
            .eq(new.gone.iter().filter(|(id, _)| !ours(id)));
        if !others_same_members || !others_same_gone {
            return now;
        }
        let was_member = |id: &NodeId| old.role_of(id).is_some();
        landed
            .iter()
            .filter(|(id, _)| was_member(id) || (new.gone.contains_key(*id) && !old.gone.contains_key(*id)))
            .map(|(_, asked_at)| *asked_at)
            .max()
            .map_or(now, |asked_at| asked_at.min(now))
    }

    /// The highest epoch floor any node announces.
    fn fleet_floor(&self) -> crate::types::Epoch {
        self.node_facts.fleet_floor
    }

    /// Whether the epoch floors we know were read (a read of the node
    /// items sent) after `shard`'s wait as a free shard ended.
    fn floors_read_after_wait(&self, shard: ShardId) -> bool {
        let Some(free_since) = self.book.free_since(shard).filter(|_| !self.claims_on_stale_view) else {
            return true; // never read: nothing to wait for
        };
        let wait_end = free_since + self.longest_ttl();
        self.observer.read_sent_at().is_some_and(|sent| sent >= wait_end)
    }

    /// The longest lease any node we know runs with.
    pub(super) fn longest_ttl(&self) -> Duration {
        self.node_facts.longest_ttl
    }

    fn may_start(&self, shard: ShardId, now: Instant) -> bool {
        !self.ops.contains_key(&shard) && self.retry_at.get(&shard).is_none_or(|t| now >= *t)
    }

    fn plan_acquisitions(&mut self, now: Instant, out: &mut Step) {
        // Only a node that takes claims: a starting one only keeps.
        if self.membership.role_of(self.me()) != Some(Role::Takes) {
            return;
        }
        let me = self.me().clone();
        let wanted: Vec<ShardId> = self
            .work_lists
            .take
            .iter()
            .filter(|s| !self.held.contains_key(s) && self.may_start(**s, now))
            .copied()
            .collect();
        for shard in wanted {
            let (expect, from) = match self.book.owner(shard) {
                // The claim goes above every epoch floor the nodes announce,
                // so those floors must be read after the shard's wait ended:
                // a node that remembers a higher epoch (its item lost with a
                // table, say) has written its floor again by then. Floors
                // read before (we were cut off from the store, and read the
                // node items last long ago) may all be below it.
                None if !self.floors_read_after_wait(shard) => continue,
                None => (
                    Expect::Free {
                        next_epoch: self.book.next_epoch(shard, self.fleet_floor()),
                    },
                    None,
                ),
                Some(owner) if *owner == me || self.membership.role_of(owner).is_some() => continue,
                Some(owner) => match self.membership.gone.get(owner) {
                    Some(check) => (
                        Expect::GoneOwner {
                            owner: owner.clone(),
                            epoch: self.book.epoch(shard),
                            check: *check,
                        },
                        Some(owner.clone()),
                    ),
                    None => continue, // not a member, not gone yet: wait
                },
            };
            self.ops.insert(shard, OwnershipOp::Acquire { from });
            out.effects.push(Effect::Acquire(AcquireRequest {
                shard,
                me: me.clone(),
                inc: self.setup.inc,
                expect,
            }));
        }
    }

    /// Shards we hold under an epoch we did not write since our latest
    /// registration are claimed again before their routes are written.
    /// A shard handed to this incarnation waits out its giver's pushes
    /// first: a push at the hand-off's epoch must not land after our write
    /// at the next one.
    fn plan_reclaims(&mut self, now: Instant, out: &mut Step) {
        let hold = self.handed_hold();
        let mut due = Vec::new();
        let mut wait_until: Option<Instant> = None;
        for (&shard, held) in self
            .held
            .iter()
            .filter(|(s, h)| h.needs_reclaim && self.may_start(**s, now))
        {
            let handed_to_us = self
                .book
                .record(shard)
                .is_some_and(|r| r.owner_inc == Some(self.setup.inc));
            match held
                .adopted_at
                .map(|t| t + hold)
                .filter(|until| handed_to_us && now < *until)
            {
                Some(until) => wait_until = Some(wait_until.map_or(until, |w| w.min(until))),
                None => due.push((shard, held.epoch)),
            }
        }
        if let Some(until) = wait_until {
            self.replan_at = Some(self.replan_at.map_or(until, |r| r.min(until)));
        }
        for (shard, epoch) in due {
            self.ops.insert(shard, OwnershipOp::Reclaim);
            out.effects.push(Effect::Acquire(AcquireRequest {
                shard,
                me: self.me().clone(),
                inc: self.setup.inc,
                expect: Expect::Held { epoch },
            }));
        }
    }

    /// The coordinator marks each gone node dead (one write per death): for
    /// the dashboard, for DynamoDB's TTL to collect its item, and so that
    /// every observer drops it from the members at once.
    fn plan_mark_dead(&mut self, out: &mut Step) {
        for (id, check) in &self.membership.gone {
            let NodeCheck::Unchanged { hb, inc } = *check else {
                continue; // no item to mark
            };
            let marked = self
                .nodes
                .get(id)
                .is_none_or(|n| n.state == crate::types::NodeState::Dead);
            if marked || self.marking.get(id) == Some(&hb) {
                continue;
            }
            self.marking.insert(id.clone(), hb);
            out.effects.push(Effect::MarkDead(MarkDeadRequest {
                node: id.clone(),
                inc,
                observed_hb: hb,
            }));
        }
    }

    /// The coordinator retires shards whose VIP no member serves any more
    /// (removed from the fleet's configuration): their routes, then their
    /// item. Only once every member's layout is known: a layout we have not
    /// read may still list the VIP.
    fn plan_retire(&mut self, now: Instant) {
        if !self.membership.layouts_complete {
            return;
        }
        let retire: Vec<ShardId> = self
            .work_lists
            .retire
            .iter()
            .filter(|s| !self.retiring.contains(s))
            .copied()
            .collect();
        for shard in retire {
            if !self.may_start(shard, now) {
                continue;
            }
            self.retiring.insert(shard);
            self.delete_routes(shard, now);
        }
    }

    fn plan_handoffs(&mut self, orphans: usize, now: Instant, out: &mut Step) {
        let acquiring = self.ops.values().any(|op| matches!(op, OwnershipOp::Acquire { .. }));
        if self.mode == Mode::Active && (orphans > 0 || acquiring) {
            return; // rebalancing waits for failover work
        }
        if self.mode != Mode::Active && !self.peers_see_mode(now) {
            // Peers that still think we are active would hand shards right
            // back to us: wait until they have read our new state.
            return;
        }
        let in_flight = self
            .ops
            .values()
            .filter(|op| matches!(op, OwnershipOp::HandOff { .. }))
            .count();
        let mut budget = self.cfg().max_handoffs_in_flight.saturating_sub(in_flight);
        let me = self.me().clone();
        let leaving: Vec<(ShardId, NodeId)> = self
            .work_lists
            .give
            .iter()
            .filter(|(s, _)| self.held.contains_key(s) || self.book.owner(*s) == Some(&me))
            .cloned()
            .collect();
        for (shard, to) in leaving {
            if budget == 0 {
                break;
            }
            let Some(to_inc) = self.nodes.get(&to).map(|n| n.inc) else {
                continue;
            };
            // Our own write for it in flight could land after the
            // recipient's: hand it off once that write has answered.
            if !self.may_start(shard, now) || self.routes.writing(shard) {
                continue;
            }
            let hold = self.handed_hold();
            if let Some(until) = self.held.get(&shard).and_then(|h| h.adopted_at).map(|t| t + hold) {
                if now < until {
                    self.replan_at = Some(self.replan_at.map_or(until, |r| r.min(until)));
                    continue;
                }
            }
            let epoch = match self.held.remove(&shard) {
                Some(held) => {
                    self.versions.held += 1;
                    held.epoch
                }
                None => self.book.epoch(shard),
            };
            budget -= 1;
            // From here on we are not the owner: no more route writes.
            self.ops.insert(shard, OwnershipOp::HandOff { to: to.clone() });
            out.effects.push(Effect::HandOff(HandoffRequest {
                shard,
                me: me.clone(),
                epoch,
                to,
                to_inc,
            }));
        }
    }

    /// Whether peers have had time to read the mode our heartbeat carries.
    fn peers_see_mode(&self, now: Instant) -> bool {
        self.mode_announced_at
            .is_some_and(|t| now >= t + self.peer_notice_delay())
    }

    /// How long after a heartbeat was sent every peer has read it: a few
    /// scans, and with cold reads a watch before them (the change is
    /// announced as soon as the heartbeat lands).
    fn peer_notice_delay(&self) -> Duration {
        let scans = self.cfg().scan_interval * PEER_NOTICE_SCANS;
        if self.cfg().cold_reads {
            scans + self.cfg().watch_interval
        } else {
            scans
        }
    }

    /// A drained node leaves once a read of the shards shows it owns
    /// nothing, sent late enough that every peer had seen it draining (a
    /// peer deciding on an older view may still hand it a shard), and once
    /// a read-back of the route tables, sent after it last held or pushed
    /// anything, shows no route of the fleet's pointing at it: a push that
    /// ran out of time leaves the route to the new owner's repair, and the
    /// node told it may terminate must not take that traffic with it.
    fn plan_drain_exit(&mut self, now: Instant, out: &mut Step) {
        let Some(announced) = self.mode_announced_at.filter(|_| self.mode == Mode::Draining) else {
            self.drain_quiet_since = None;
            return;
        };
        let me = self.me().clone();
        let owns_any = self.book.records().any(|r| r.owner.as_ref() == Some(&me));
        if !self.held.is_empty() || !self.ops.is_empty() || self.routes.any_pushes() || owns_any {
            self.drain_quiet_since = None;
            return;
        }
        let quiet_since = *self.drain_quiet_since.get_or_insert(now);
        let peers_know_at = announced + self.peer_notice_delay() + self.cfg().heartbeat_interval;
        if self.book.read_at().is_none_or(|t| t < peers_know_at) {
            if now < peers_know_at {
                self.timers.shard_refresh = self.timers.shard_refresh.min(peers_know_at);
            }
            return;
        }
        let tables = self.route_tables().to_vec();
        let read_back = self.routes.all_seen_at(&tables).is_some_and(|t| t >= quiet_since);
        let vips: BTreeSet<Vip> = self
            .book
            .known()
            .chain(self.setup.layout.ids())
            .map(|s| s.vip())
            .collect();
        let clean = read_back && !self.routes.any_points_at(&self.setup.info.eni, &vips);
        if clean || self.drain_ignores_routes {
            self.exit(ExitReason::Drained, out);
        } else if !self.any_describing() {
            let recheck_at = now + self.cfg().scan_interval * DRAIN_RECHECK_SCANS;
            self.timers.reconcile = self.timers.reconcile.min(recheck_at);
        }
    }
}
