//! Folding each [`Input`] into what the node knows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::book::Learned;
use super::walk::SetWalk;
use super::{Effect, Event, ExitReason, Held, Input, Machine, Mode, OwnershipOp, Priority, Read, Step};
use crate::liveness::OwnLease;
use crate::store::{
    AcquireOutcome, BeatKind, EvictOutcome, EvictRequest, HandoffOutcome, HeartbeatOutcome, MarkDeadOutcome,
    RetireOutcome, Scan, Skipped, StoreError, StoreErrorKind,
};
use crate::time::Instant;
use crate::types::Incarnation;
use crate::types::{NodeId, NodeRecord, NodeState, ShardId, ShardRecord};

/// A failed shard operation is not retried before this many scans; keeps a
/// node that keeps losing races from hammering the store.
const RETRY_AFTER_SCANS: u32 = 2;
/// A layout item that is not there yet (its node is just starting) is
/// looked for again after this many scans.
const LAYOUT_RETRY_SCANS: u32 = 4;
/// Mixed into the jitter seed of each kind of read, so one node's two
/// backoffs do not move in step.
const NODE_READS_SEED: u64 = 0x6e6f_6465;
const SHARD_READS_SEED: u64 = 0x7368_6172;
/// After an evicted node's own lease is over, the routes of the shards we
/// took from it are read back this much later: a call it sent just before
/// its deadline has landed by then.
pub const EVICTION_RECHECK_SLACK: Duration = Duration::from_secs(1);

impl Machine {
    pub(super) fn apply(&mut self, input: Input, now: Instant, out: &mut Step) {
        match input {
            Input::Tick => {}
            Input::Drain(drain) => self.set_readiness(|r| r.drain = drain, now, out),
            Input::Health(health) => self.set_readiness(|r| r.health = health, now, out),
            Input::SourceDestCheckOff(off) => self.set_readiness(|r| r.source_dest_check_off = off, now, out),
            Input::PeersCutOff(cut_off) => self.set_readiness(|r| r.cut_off_from_peers = cut_off, now, out),
            Input::Stop => {
                if self.mode == Mode::Draining {
                    out.events.push(Event::StopDeferred);
                } else {
                    self.exit(ExitReason::Stopped, out);
                }
            }
            Input::Heartbeat { sent_at, result } => self.heartbeat_result(sent_at, result, now, out),
            Input::Nodes { sent_at, result } => {
                self.in_flight.nodes = self.in_flight.nodes.saturating_sub(1);
                match result {
                    Ok(scan) => {
                        self.read_backoff.succeeded(Read::Nodes);
                        self.learn_nodes(scan, sent_at, now, out);
                    }
                    Err(e) => {
                        let seed = self.jitter_seed(NODE_READS_SEED);
                        let wait = self.read_backoff.failed(Read::Nodes, e.kind, seed);
                        self.timers.scan = self.timers.scan.max(now + wait);
                        self.store_error(e, out);
                    }
                }
            }
            Input::Shards { sent_at, result } => {
                self.in_flight.shards = None;
                match result {
                    Ok(scan) => {
                        self.read_backoff.succeeded(Read::Shards);
                        self.learn_shards(scan, sent_at, now, out);
                    }
                    Err(e) => {
                        self.shards_stale = true;
                        let seed = self.jitter_seed(SHARD_READS_SEED);
                        let wait = self.read_backoff.failed(Read::Shards, e.kind, seed);
                        self.timers.shards_not_before = now + wait.max(self.cfg().scan_interval);
                        self.store_error(e, out);
                    }
                }
            }
            Input::Layout { id, result } => {
                self.in_flight.layouts.remove(&id);
                match result {
                    // A fingerprint names one layout for good: believe an
                    // item only if it hashes to its name.
                    Ok(Some(layout)) if layout.id() == id => {
                        self.layout_retry_at.remove(&id);
                        self.layouts.insert(id, Arc::new(layout));
                    }
                    Ok(_) => {
                        self.layout_retry_at
                            .insert(id, now + self.cfg().scan_interval * LAYOUT_RETRY_SCANS);
                    }
                    Err(e) => {
                        self.layout_retry_at
                            .insert(id, now + self.cfg().scan_interval * LAYOUT_RETRY_SCANS);
                        self.store_error(e, out);
                    }
                }
            }
            Input::LayoutPublished { result } => {
                self.in_flight.publish = false;
                match result {
                    Ok(()) => {
                        self.layout_published = true;
                        self.timers.publish_layout = now + super::plan::LAYOUT_REPUBLISH_INTERVAL;
                        self.timers.heartbeat = self.timers.heartbeat.min(now);
                    }
                    Err(e) => {
                        self.timers.publish_layout = now + self.cfg().scan_interval * RETRY_AFTER_SCANS;
                        self.store_error(e, out);
                    }
                }
            }
            Input::Confirmed { shard, sent_at, result } => {
                if let Some(held) = self.held.get_mut(&shard) {
                    held.confirming = false;
                }
                match result {
                    Ok(Some(record)) => self.learn_shard(record, sent_at, now, out),
                    Ok(None) => {
                        if self.book.learn_absent(shard, sent_at, now) == Learned::Accepted {
                            self.lose(shard, None, out);
                        }
                    }
                    Err(e) => {
                        self.retry_later(shard, now);
                        self.store_error(e, out);
                    }
                }
            }
            Input::Acquired { shard, sent_at, result } => self.acquired(shard, sent_at, result, now, out),
            Input::HandedOff { shard, sent_at, result } => self.handed_off(shard, sent_at, result, now, out),
            Input::MarkedDead { node, result } => {
                if let Ok(MarkDeadOutcome::Marked) = result {
                    self.pace.announce();
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.state = NodeState::Dead;
                        self.versions.nodes += 1;
                    }
                    out.events.push(Event::NodeMarkedDead { node });
                }
            }
            Input::PeerDead { node, inc } => self.peer_verdict(node, inc, now, out),
            Input::Evicted { node, inc, result } => {
                let asked_at = self.evicting.remove(&node);
                match result {
                    Ok(EvictOutcome::Evicted { hb }) => {
                        if let Some(asked_at) = asked_at {
                            self.evictions_landed.insert(node.clone(), asked_at);
                        }
                        self.pace.announce();
                        self.observer.evicted(&node, inc, hb, now, self.cfg().lease_ttl);
                        self.replan = true;
                        out.events.push(Event::NodeEvicted { node });
                    }
                    // It restarted, or its item went: a read tells us which.
                    Ok(EvictOutcome::NotThere) => self.timers.scan = now,
                    Err(e) => self.store_error(e, out),
                }
            }
            Input::Watched { result } => self.watched(result, now, out),
            Input::ChangeAnnounced { result } => self.change_announced(result, now, out),
            Input::RouteChanged { call, result } => self.route_changed(call, result, now, out),
            Input::TableDescribed { table, sent_at, result } => self.table_described(table, sent_at, result, now, out),
            Input::Retired { shard, result } => {
                self.retiring.remove(&shard);
                match result {
                    Ok(RetireOutcome::Retired) => {
                        self.pace.announce();
                        self.book.forget(shard);
                        out.events.push(Event::Retired { shard });
                    }
                    Ok(RetireOutcome::Changed) => self.shards_stale = true,
                    Err(e) => {
                        self.retry_later(shard, now);
                        self.store_error(e, out);
                    }
                }
            }
        }
    }

    pub(super) fn store_error(&mut self, e: StoreError, out: &mut Step) {
        if e.kind == StoreErrorKind::TableMissing {
            // When the table is back, it may be a new, empty one.
            self.layout_published = false;
            self.table_was_missing = true;
        }
        out.events.push(Event::StoreError {
            kind: e.kind,
            detail: e.to_string(),
        });
    }

    fn set_readiness(&mut self, change: impl FnOnce(&mut super::Readiness), now: Instant, out: &mut Step) {
        change(&mut self.readiness);
        let mode = self.readiness.mode();
        if mode == self.mode {
            return;
        }
        out.events.push(Event::ModeChanged {
            from: self.mode,
            to: mode,
        });
        match (self.mode, mode) {
            (_, Mode::Draining) => self.drain_started_at = Some(now),
            (Mode::Draining, _) => self.drain_started_at = None,
            _ => {}
        }
        self.mode = mode;
        self.mode_announced_at = None;
        self.timers.heartbeat = now;
    }

    fn heartbeat_result(
        &mut self,
        sent_at: Instant,
        result: crate::store::StoreResult<HeartbeatOutcome>,
        now: Instant,
        out: &mut Step,
    ) {
        let (mode, kind) = self.heartbeats.remove(&sent_at).unwrap_or((self.mode, self.beat_kind));
        match result {
            Ok(HeartbeatOutcome::Beat(_)) => {
                match kind {
                    BeatKind::Register if self.registered_at.is_none() => {
                        self.registered_at = Some(now);
                        self.timers.scan = now;
                        out.events.push(Event::Registered);
                    }
                    BeatKind::Reregister if self.beat_kind == BeatKind::Reregister => {
                        out.events.push(Event::Reregistered)
                    }
                    _ => {}
                }
                self.pace.beat_landed(mode.state(), kind != BeatKind::Renew);
                if kind != BeatKind::Renew {
                    self.beat_kind = BeatKind::Renew;
                    if kind == BeatKind::Reregister {
                        self.reregistered_at = Some(now);
                    }
                    // Our item was written anew: an observer that counted
                    // it missing before may have missed it, and may not
                    // see it before it is deleted again. Only a claim it
                    // sees move tells it we live.
                    for held in self.held.values_mut() {
                        held.needs_reclaim = true;
                    }
                }
                if mode == self.mode && self.mode_announced_at.is_none() {
                    self.mode_announced_at = Some(sent_at);
                }
                if self.lease.heartbeat_succeeded(sent_at, now, self.cfg().own_lease()) {
                    // Whatever we held before the lapse must be confirmed
                    // again: re-read it all, and plan no change of owner
                    // from what we knew before.
                    self.shards_stale = true;
                    self.members_changed_at = Some(now);
                    self.book.restart_free_clocks(now);
                    // Back after a lapse: peers that read cold would see us
                    // ready to take our share only at their next refresh.
                    self.pace.announce();
                    out.events.push(Event::LeaseRenewed);
                }
            }
            Ok(HeartbeatOutcome::Missing) => {
                // Deleted by hand, or the table was re-created: write it
                // again (and our layout, which went with it) at once.
                self.beat_kind = BeatKind::Reregister;
                self.timers.heartbeat = now;
                self.layout_published = false;
                self.timers.publish_layout = now;
            }
            Ok(HeartbeatOutcome::NotMine) => {
                self.held.clear();
                self.versions.held += 1;
                self.exit(ExitReason::Superseded, out);
            }
            Ok(HeartbeatOutcome::Evicted) => {
                // Our lease can never be renewed: stop writing now rather
                // than at its end, and start over.
                self.lease = OwnLease::default();
                self.held.clear();
                self.versions.held += 1;
                self.exit(ExitReason::Evicted, out);
            }
            Err(e) => self.store_error(e, out),
        }
    }

    fn learn_nodes(&mut self, scan: Scan<NodeRecord>, sent_at: Instant, now: Instant, out: &mut Step) {
        let unreadable: BTreeSet<NodeId> = scan.skipped.iter().filter_map(|s| s.node.clone()).collect();
        if !self.observer.observe(
            &scan.records,
            &unreadable,
            self.book.owners(),
            sent_at,
            now,
            self.cfg().lease_ttl,
        ) {
            return; // a later read has already been learned
        }
        self.unreadable_nodes = unreadable;
        self.versions.nodes += 1;
        let node_bytes = self.replace_nodes(scan.records);
        self.pace.nodes_read(node_bytes);
        self.node_facts = super::NodeFacts::of(&self.nodes, self.cfg().lease_ttl);
        self.review_deferred_verdicts(sent_at, now, out);
        // Peers started with us register within a round trip or two of us:
        // a read sent a heartbeat interval after our registration sees them,
        // so a fleet started at once shares its shards without moving any.
        let settle = self.cfg().heartbeat_interval;
        self.nodes_seen |= self.registered_at.is_some_and(|t| sent_at >= t + settle);
        if changed_keys(&self.skipped_nodes, &scan.skipped) {
            self.skipped_nodes = scan.skipped;
            self.report_skipped(out);
        }
    }

    fn learn_shards(&mut self, scan: Scan<ShardRecord>, sent_at: Instant, now: Instant, out: &mut Step) {
        let unreadable: BTreeSet<ShardId> = scan.skipped.iter().filter_map(|s| s.shard).collect();
        // Sorted once and searched: a read returns every shard, and a set
        // built of them all would cost more than learning them.
        let mut present: Vec<ShardId> = scan
            .records
            .iter()
            .map(|r| r.id)
            .chain(unreadable.iter().copied())
            .collect();
        present.sort_unstable();
        self.pace.shards_read(scan.records.iter());
        match self.book.refresh_in_order(&scan.records, sent_at) {
            Some(refreshed) => {
                for (record, refreshed) in scan.records.into_iter().zip(refreshed) {
                    self.learn_refreshed_shard(record, refreshed, sent_at, now, out);
                }
            }
            None => {
                for record in scan.records {
                    self.learn_shard(record, sent_at, now, out);
                }
            }
        }
        // Layout shards the read did not return are free: their items were
        // deleted (by hand, or with the table). Shards of other layouts we
        // only know through their items; those we just forget about.
        let mut absent: Vec<ShardId> = self.setup.layout.ids().chain(self.book.known()).collect();
        // Two runs in shard order: merged, not sorted afresh.
        absent.sort();
        absent.dedup();
        absent.retain(|s| present.binary_search(s).is_err());
        let mut layout = SetWalk::new(self.setup.layout.shards());
        let (lost, forgotten): (Vec<ShardId>, Vec<ShardId>) = self
            .book
            .learn_all_absent(&absent, sent_at, now)
            .into_iter()
            .partition(|shard| layout.contains(*shard));
        for shard in lost {
            self.lose(shard, None, out);
        }
        for shard in forgotten {
            self.book.forget(shard);
        }
        self.book.set_unreadable(unreadable);
        self.book.finished_read(sent_at);
        self.shards_seen = true;
        // Nodes found dead while we knew of nothing they held: evicted now
        // if this read shows them holding something, else forgotten.
        for (node, inc) in std::mem::take(&mut self.unheld_dead) {
            if self.book.records().any(|r| r.owner.as_ref() == Some(&node)) {
                self.evict_dead(node, inc, now, out);
            }
        }
        if std::mem::take(&mut self.table_was_missing) {
            // The table came back, maybe restored from a backup or created
            // anew: a shard we saw free before may have been claimed and
            // lost with it, by a node whose lease outlived the outage.
            self.book.restart_free_clocks(now);
        }
        if changed_keys(&self.skipped_shards, &scan.skipped) {
            self.skipped_shards = scan.skipped;
            self.report_skipped(out);
        }
    }

    fn report_skipped(&self, out: &mut Step) {
        out.events.push(Event::ItemsSkipped {
            skipped: self.skipped().cloned().collect(),
        });
    }

    /// Folds a shard record read at `sent_at` into our knowledge.
    pub(super) fn learn_shard(&mut self, record: ShardRecord, sent_at: Instant, now: Instant, out: &mut Step) {
        let refreshed = self.book.refresh(&record, sent_at);
        self.learn_refreshed_shard(record, refreshed, sent_at, now, out);
    }

    /// [`Self::learn_shard`], given what refreshing the book with it gave.
    fn learn_refreshed_shard(
        &mut self,
        record: ShardRecord,
        refreshed: Option<Learned>,
        sent_at: Instant,
        now: Instant,
        out: &mut Step,
    ) {
        let shard = record.id;
        let mine = record.owner.as_ref() == Some(self.me());
        let record_inc = record.owner_inc;
        let epoch = record.epoch;
        let owner = match refreshed {
            Some(Learned::Stale) => return,
            // As we knew it: no claim moved.
            Some(Learned::Accepted) => record.owner,
            None => {
                let owner = record.owner.clone();
                let claim_moved = self
                    .book
                    .record(shard)
                    .is_none_or(|r| r.owner != owner || r.epoch != epoch);
                if self.book.learn(record, sent_at, now) == Learned::Stale {
                    return;
                }
                if let Some(claimant) = owner.as_ref().filter(|o| claim_moved && !mine && *o != self.me()) {
                    self.observer.saw_claim(claimant, now);
                }
                owner
            }
        };
        if mine && self.setup.layout.contains(shard) {
            // Held by a previous process of this node; or handed to this
            // one since our previous read, which was sent before we
            // registered again, so maybe before that too.
            let needs_reclaim = record_inc != Some(self.setup.inc)
                || self
                    .reregistered_at
                    .is_some_and(|registered| self.book.read_at().is_none_or(|previous| previous < registered));
            match self.held.get_mut(&shard) {
                Some(held) => {
                    if held.epoch != epoch {
                        // Lost and given back while we did not look: as
                        // good as handed to us now.
                        held.epoch = epoch;
                        held.confirmed_at = sent_at;
                        held.adopted_at = Some(now);
                        held.needs_reclaim |= needs_reclaim;
                    } else {
                        held.confirmed_at = held.confirmed_at.max(sent_at);
                    }
                }
                None if !self.ops.contains_key(&shard) => {
                    // Ours without our asking: handed to us, or held by a
                    // previous incarnation of this node (a restart). Its
                    // routes probably point at us already: check them soon
                    // rather than write them blindly.
                    self.versions.held += 1;
                    self.held.insert(
                        shard,
                        Held {
                            epoch,
                            confirmed_at: sent_at,
                            confirming: false,
                            adopted_at: Some(now),
                            needs_reclaim,
                        },
                    );
                    self.timers.reconcile = self.timers.reconcile.min(now + self.cfg().scan_interval);
                }
                None => {}
            }
        } else if self.held.contains_key(&shard) {
            self.lose(shard, owner, out);
        }
    }

    pub(super) fn lose(&mut self, shard: ShardId, to: Option<NodeId>, out: &mut Step) {
        if self.held.remove(&shard).is_some() {
            self.versions.held += 1;
            out.events.push(Event::Lost { shard, to });
        }
    }

    pub(super) fn retry_later(&mut self, shard: ShardId, now: Instant) {
        let backoff = self.cfg().scan_interval * RETRY_AFTER_SCANS;
        self.retry_at.insert(shard, now + backoff);
    }

    /// Evicts incarnation `inc` of `node`, found dead by the peers (or, on
    /// the cheap profile, expired by our observer), if that gains anything.
    /// The peers' verdict is only a suspicion until the store agrees: only
    /// a successful eviction (ours, or one we read) makes the node gone.
    /// Nothing is asked of a node that cannot write (a lapsed lease: we may
    /// be the one cut off).
    pub(super) fn evict_dead(&mut self, node: NodeId, inc: Incarnation, now: Instant, out: &mut Step) {
        let known = self.nodes.get(&node).is_some_and(|n| n.inc == inc);
        // Evicting a node that holds nothing gains nothing (and a node cut
        // off from its peers, started over empty, would be evicted again
        // and again).
        let holds = self.book.records().any(|r| r.owner.as_ref() == Some(&node));
        if node == *self.me() || !known || !self.lease.is_valid(now) || self.observer.is_evicted(&node, inc) {
            return;
        }
        if !holds {
            // Our map may predate its claims (it just registered, or the
            // table was re-created): a fresh read of the shards decides.
            self.unheld_dead.insert(node, inc);
            self.shards_stale = true;
            return;
        }
        if self.evicting.contains_key(&node) {
            return;
        }
        self.evicting.insert(node.clone(), now);
        let by = self.me().clone();
        out.effects.push(Effect::Evict(EvictRequest { node, inc, by }));
        // Claims wait for a read of the shards sent since the live set
        // changed (see `plan`). Sent with the eviction, it comes back with
        // it, rather than a round trip after.
        if self.may_read_shards(now) {
            self.read_shards(now, out);
        }
    }

    fn acquired(
        &mut self,
        shard: ShardId,
        sent_at: Instant,
        result: crate::store::StoreResult<AcquireOutcome>,
        now: Instant,
        out: &mut Step,
    ) {
        let from = match self.ops.remove(&shard) {
            Some(OwnershipOp::Acquire { from }) => from,
            Some(OwnershipOp::Reclaim) => return self.reclaimed(shard, sent_at, result, now, out),
            _ => None,
        };
        match result {
            Ok(AcquireOutcome::Acquired { epoch }) => {
                self.pace.announce();
                let me = self.me().clone();
                self.book.wrote(shard, me, Some(self.setup.inc), epoch, now);
                // A free shard whose routes already point at us (a table
                // re-created around them) needs no write: check it instead.
                let tables = self.route_tables().to_vec();
                let routed_here =
                    from.is_none() && self.routes.points_everywhere_at(shard, &self.setup.info.eni, &tables);
                self.held.insert(
                    shard,
                    Held {
                        epoch,
                        confirmed_at: sent_at,
                        confirming: false,
                        adopted_at: None,
                        needs_reclaim: false,
                    },
                );
                if routed_here {
                    self.routes.mark_checked(shard, &tables, now);
                } else {
                    self.want_own_routes(shard, &tables, Priority::Failover);
                }
                // Taken from an evicted node before its own lease can have
                // run out: a write it (or a node pushing routes to it) sent
                // may still land after ours. Read back once that lease is
                // over, and repair.
                if let Some(lease_end) = from.as_ref().and_then(|f| self.observer.eviction_lease_end(f)) {
                    if lease_end > now && !self.no_recheck_after_eviction {
                        self.rechecks.insert(lease_end + EVICTION_RECHECK_SLACK);
                    }
                }
                out.events.push(Event::Acquired { shard, from, epoch });
            }
            Ok(AcquireOutcome::LostRace | AcquireOutcome::OwnerAlive) => self.read_again_later(shard, now),
            Err(e) => {
                self.read_again_later(shard, now);
                self.store_error(e, out);
            }
        }
    }

    fn reclaimed(
        &mut self,
        shard: ShardId,
        sent_at: Instant,
        result: crate::store::StoreResult<AcquireOutcome>,
        now: Instant,
        out: &mut Step,
    ) {
        match result {
            Ok(AcquireOutcome::Acquired { epoch }) => {
                self.pace.announce();
                let me = self.me().clone();
                self.book.wrote(shard, me, Some(self.setup.inc), epoch, now);
                let held = self.held.entry(shard).or_insert(Held {
                    epoch,
                    confirmed_at: sent_at,
                    confirming: false,
                    adopted_at: None,
                    needs_reclaim: false,
                });
                held.epoch = epoch;
                held.confirmed_at = sent_at;
                held.needs_reclaim = false;
                self.versions.held += 1;
                // Its routes were left as they stood: check them soon.
                self.timers.reconcile = self.timers.reconcile.min(now + self.cfg().scan_interval);
                out.events.push(Event::Reclaimed { shard, epoch });
            }
            // Not ours at that epoch any more: the next read says whose.
            Ok(AcquireOutcome::LostRace | AcquireOutcome::OwnerAlive) => self.read_again_later(shard, now),
            Err(e) => {
                self.unsure_write(shard, now);
                self.store_error(e, out);
            }
        }
    }

    fn handed_off(
        &mut self,
        shard: ShardId,
        sent_at: Instant,
        result: crate::store::StoreResult<HandoffOutcome>,
        now: Instant,
        out: &mut Step,
    ) {
        let Some(OwnershipOp::HandOff { to }) = self.ops.remove(&shard) else {
            return;
        };
        match result {
            Ok(HandoffOutcome::Done { epoch }) => {
                self.pace.announce();
                let to_inc = self.nodes.get(&to).map(|n| n.inc);
                self.book.wrote(shard, to.clone(), to_inc, epoch, now);
                out.events.push(Event::HandedOff {
                    shard,
                    to: to.clone(),
                    epoch,
                });
                self.push_routes(shard, epoch, &to, sent_at, now);
            }
            // Lost meanwhile: the next read tells who owns it.
            Ok(HandoffOutcome::NotOwner) => self.read_again_later(shard, now),
            Err(_) => self.unsure_write(shard, now),
        }
    }

    /// An ownership write found the shard otherwise than we thought: the
    /// next read tells who owns it, and we try again after that.
    fn read_again_later(&mut self, shard: ShardId, now: Instant) {
        self.shards_stale = true;
        self.retry_later(shard, now);
    }

    /// An ownership write failed, and may have applied: only a read sent
    /// from now on tells.
    fn unsure_write(&mut self, shard: ShardId, now: Instant) {
        self.book.distrust_reads_before(shard, now);
        self.read_again_later(shard, now);
    }
}

/// Whether two lists of skipped items name different keys.
fn changed_keys(before: &[Skipped], after: &[Skipped]) -> bool {
    before.len() != after.len() || before.iter().zip(after).any(|(a, b)| a.key != b.key)
}
