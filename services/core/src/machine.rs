//! The lease protocol as a step function.
//!
//! [`Machine::step`] takes one [`Input`] (a timer tick, a store or route
//! result, an operator's request) and the current instant, updates the
//! node's view, and returns the [`Effect`]s to perform next, the [`Event`]s
//! worth logging, and when it next wants to be woken. It never blocks, sleeps
//! or reads a clock; the driver performs the effects and feeds the results
//! back as inputs, each tagged with the instant its request was *sent*.
//!
//! One pass of planning after every input, in this order:
//! 1. heartbeat and reads when their timers are due;
//! 2. with a valid own lease: take the shards the target assigns to us
//!    (claim free ones, take over those of expired nodes), mark expired nodes
//!    dead, and hand away the shards the target assigns elsewhere (drain,
//!    unhealthy, over quota; rebalancing yields to failover work);
//! 3. route writes for held shards that need them, each fenced by a fresh
//!    confirmation of ownership; a periodic read-back of the routes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::assign::{assign, Assignment, Member};
use crate::config::LeaseConfig;
use crate::liveness::{Observer, OwnLease};
use crate::routes::{RouteEntry, RouteError};
use crate::store::{
    AcquireOutcome, AcquireRequest, Expect, HandoffOutcome, HandoffRequest, HeartbeatOutcome, HeartbeatRequest,
    MarkDeadOutcome, MarkDeadRequest, StoreResult,
};
use crate::time::Instant;
use crate::types::{
    EniId, Epoch, Incarnation, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardId, ShardLayout,
    ShardRecord, Vip,
};

/// Everything a node needs to know about itself and the fleet at start.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub info: NodeInfo,
    pub inc: Incarnation,
    pub lease: LeaseConfig,
    pub layout: ShardLayout,
    pub route_tables: Vec<RouteTableId>,
}

/// What the operator (or the health check) wants this node to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Active,
    Draining,
    Unhealthy,
}

impl Mode {
    fn state(self) -> NodeState {
        match self {
            Mode::Active => NodeState::Active,
            Mode::Draining => NodeState::Draining,
            Mode::Unhealthy => NodeState::Unhealthy,
        }
    }
}

/// Which queue a route write joins: failover work goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Failover,
    Rebalance,
    Repair,
}

/// Point every VIP of a shard, in every route table, at `eni`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteWriteRequest {
    pub shard: ShardId,
    pub epoch: Epoch,
    pub vips: Vec<Vip>,
    pub tables: Vec<RouteTableId>,
    pub eni: EniId,
    pub priority: Priority,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Heartbeat(HeartbeatRequest),
    ReadNodes,
    ReadShards,
    /// A consistent read of one shard: the fence before a route write.
    ConfirmShard(ShardId),
    Acquire(AcquireRequest),
    HandOff(HandoffRequest),
    MarkDead(MarkDeadRequest),
    WriteRoutes(RouteWriteRequest),
    DescribeRoutes(Vec<RouteTableId>),
    /// Stop the agent.
    Exit(ExitReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Drained: this node holds nothing any more.
    Drained,
    /// Another process registered this node id.
    Superseded,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A timer fired (the machine's own `wake_at`, or any periodic tick).
    Tick,
    SetMode(Mode),
    Heartbeat {
        sent_at: Instant,
        result: StoreResult<HeartbeatOutcome>,
    },
    Nodes {
        sent_at: Instant,
        result: StoreResult<Vec<NodeRecord>>,
    },
    Shards {
        sent_at: Instant,
        result: StoreResult<Vec<ShardRecord>>,
    },
    Confirmed {
        shard: ShardId,
        sent_at: Instant,
        result: StoreResult<Option<ShardRecord>>,
    },
    Acquired {
        shard: ShardId,
        sent_at: Instant,
        result: StoreResult<AcquireOutcome>,
    },
    HandedOff {
        shard: ShardId,
        result: StoreResult<HandoffOutcome>,
    },
    MarkedDead {
        node: NodeId,
        result: StoreResult<MarkDeadOutcome>,
    },
    /// A `WriteRoutes` finished; `failed` lists the routes that did not.
    RoutesWritten {
        shard: ShardId,
        eni: EniId,
        failed: Vec<RouteError>,
    },
    RoutesDescribed {
        result: Result<Vec<RouteEntry>, RouteError>,
    },
}

/// Things that happened, for logs, metrics and the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Registered,
    LeaseLapsed,
    LeaseRenewed,
    NodeExpired {
        node: NodeId,
    },
    NodeMarkedDead {
        node: NodeId,
    },
    Acquired {
        shard: ShardId,
        from: Option<NodeId>,
        epoch: Epoch,
    },
    HandedOff {
        shard: ShardId,
        to: NodeId,
        epoch: Epoch,
    },
    Lost {
        shard: ShardId,
        to: Option<NodeId>,
    },
    /// `failed` calls went wrong; `fenced` ones were never sent, because
    /// the shard moved or the lease lapsed while they waited.
    RoutesWritten {
        shard: ShardId,
        eni: EniId,
        failed: usize,
        fenced: usize,
    },
    RouteDrift {
        shard: ShardId,
        table: RouteTableId,
        vip: Vip,
        found: Option<EniId>,
    },
    StoreError {
        detail: String,
    },
}

/// The result of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    /// When to feed the next `Input::Tick` if nothing else arrives first.
    pub wake_at: Option<Instant>,
}

/// A shard this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    epoch: Epoch,
    /// Send time of the latest write or consistent read that showed us as
    /// owner: the fence for route writes.
    confirmed_at: Instant,
    needs_write: bool,
    priority: Priority,
    writing: bool,
    confirming: bool,
}

/// What the route read-back found for one shard in one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteCheck {
    Ok,
    WrongTarget,
    Missing,
    Blackhole,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnershipOp {
    Acquire { from: Option<NodeId> },
    HandOff { to: NodeId },
}

/// A failed shard operation is not retried before this; keeps a node that
/// keeps losing races from hammering the store.
const RETRY_AFTER_SCANS: u32 = 2;
/// While some shard has no live owner in our view, re-read the shards this
/// often: either someone took it and we should know, or it is ours to take.
const ORPHAN_REFRESH_SCANS: u32 = 4;
/// Peers read the node items every scan; after this many scans past the
/// send time of our heartbeat, they have seen what it said.
const PEER_NOTICE_SCANS: u32 = 2;

#[derive(Clone, Debug)]
pub struct Machine {
    setup: NodeSetup,
    mode: Mode,
    /// Send time of the first successful heartbeat that carried the current
    /// mode: from then on, others can see it.
    mode_announced_at: Option<Instant>,
    /// The mode the heartbeat in flight carries.
    heartbeat_mode: Mode,
    /// Send time of the last successful read of the shard items.
    shards_read_at: Option<Instant>,
    registered: bool,
    lease: OwnLease,
    lease_was_valid: bool,
    observer: Observer,
    /// The node items as last read (ourselves included).
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// Best knowledge of every shard: the last read, plus our own writes.
    /// A record only replaces one with a lower or equal epoch, so a read
    /// that was in flight during a change never undoes it.
    shards: BTreeMap<ShardId, ShardRecord>,
    /// When our registration landed; until a read of the node items sent
    /// after it returns, we do not know who else is starting with us.
    registered_at: Option<Instant>,
    /// A read of the node items sent after our registration has returned.
    nodes_seen: bool,
    shards_seen: bool,
    held: BTreeMap<ShardId, Held>,
    ops: BTreeMap<ShardId, OwnershipOp>,
    retry_at: BTreeMap<ShardId, Instant>,
    /// Expired nodes we already asked the store to mark dead, by counter.
    marking: BTreeMap<NodeId, u64>,
    /// Members and expiries as of the last plan, to notice changes.
    last_members: Vec<Member>,
    expired: BTreeSet<NodeId>,
    /// When the live set last changed. A shard map read before it may miss
    /// hand-offs we received since, so claims and hand-offs wait for a newer
    /// read.
    members_changed_at: Option<Instant>,
    route_checks: BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)>,
    /// Shards whose routes a hand-off of ours is pushing to the recipient.
    /// A drain ends only when none is left: a node that may be terminated
    /// must not leave routes pointing at itself.
    pushing: BTreeSet<ShardId>,
    heartbeat_in_flight: bool,
    nodes_in_flight: bool,
    shards_in_flight: bool,
    describe_in_flight: bool,
    shards_stale: bool,
    /// After a failed read of the shards, the next waits until this: a
    /// store that fails fast must not be hammered.
    shards_not_before: Instant,
    next_heartbeat_at: Instant,
    next_scan_at: Instant,
    next_shard_refresh_at: Instant,
    next_reconcile_at: Instant,
    exited: bool,
}

impl Machine {
    pub fn new(setup: NodeSetup, now: Instant) -> Self {
        let reconcile = setup.lease.reconcile_interval;
        Self {
            setup,
            mode: Mode::Active,
            mode_announced_at: None,
            heartbeat_mode: Mode::Active,
            shards_read_at: None,
            registered: false,
            lease: OwnLease::default(),
            lease_was_valid: false,
            observer: Observer::default(),
            nodes: BTreeMap::new(),
            shards: BTreeMap::new(),
            registered_at: None,
            nodes_seen: false,
            shards_seen: false,
            held: BTreeMap::new(),
            ops: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            marking: BTreeMap::new(),
            last_members: Vec::new(),
            expired: BTreeSet::new(),
            members_changed_at: None,
            route_checks: BTreeMap::new(),
            pushing: BTreeSet::new(),
            heartbeat_in_flight: false,
            nodes_in_flight: false,
            shards_in_flight: false,
            describe_in_flight: false,
            shards_stale: true,
            shards_not_before: now,
            next_heartbeat_at: now,
            next_scan_at: now,
            next_shard_refresh_at: now,
            next_reconcile_at: now + reconcile,
            exited: false,
        }
    }

    fn cfg(&self) -> &LeaseConfig {
        &self.setup.lease
    }

    fn me(&self) -> &NodeId {
        &self.setup.info.id
    }

    pub fn step(&mut self, input: Input, now: Instant) -> Step {
        let mut out = Step::default();
        if self.exited {
            return out;
        }
        self.apply(input, now, &mut out);
        self.plan(now, &mut out);
        out.wake_at = self.next_wake(now);
        out
    }

    // ----- inputs -------------------------------------------------------

    fn apply(&mut self, input: Input, now: Instant, out: &mut Step) {
        match input {
            Input::Tick => {}
            Input::SetMode(mode) => {
                if mode != self.mode {
                    self.mode = mode;
                    self.mode_announced_at = None;
                    self.next_heartbeat_at = now;
                }
            }
            Input::Heartbeat { sent_at, result } => {
                self.heartbeat_in_flight = false;
                match result {
                    Ok(HeartbeatOutcome::Beat(_)) => {
                        if !self.registered {
                            self.registered = true;
                            self.registered_at = Some(now);
                            self.next_scan_at = now;
                            out.events.push(Event::Registered);
                        }
                        if self.heartbeat_mode == self.mode && self.mode_announced_at.is_none() {
                            self.mode_announced_at = Some(sent_at);
                        }
                        if self.lease.heartbeat_succeeded(sent_at, now, self.cfg().own_lease()) {
                            // Whatever we held before the lapse must be
                            // confirmed again: re-read it all.
                            self.shards_stale = true;
                            out.events.push(Event::LeaseRenewed);
                        }
                    }
                    Ok(HeartbeatOutcome::NotMine) => {
                        self.exited = true;
                        self.held.clear();
                        out.effects.push(Effect::Exit(ExitReason::Superseded));
                    }
                    Err(e) => out.events.push(Event::StoreError { detail: e.to_string() }),
                }
            }
            Input::Nodes { sent_at, result } => {
                self.nodes_in_flight = false;
                match result {
                    Ok(nodes) => {
                        self.observer.observe(&nodes, now, self.cfg().lease_ttl);
                        self.nodes = nodes.into_iter().map(|n| (n.info.id.clone(), n)).collect();
                        self.nodes_seen |= self.registered_at.is_some_and(|t| sent_at >= t);
                    }
                    Err(e) => out.events.push(Event::StoreError { detail: e.to_string() }),
                }
            }
            Input::Shards { sent_at, result } => {
                self.shards_in_flight = false;
                match result {
                    Ok(records) => {
                        for record in records {
                            self.learn_shard(record, sent_at, now, out);
                        }
                        self.shards_seen = true;
                        self.shards_read_at = Some(sent_at);
                    }
                    Err(e) => {
                        self.shards_stale = true;
                        self.shards_not_before = now + self.cfg().scan_interval;
                        out.events.push(Event::StoreError { detail: e.to_string() });
                    }
                }
            }
            Input::Confirmed { shard, sent_at, result } => {
                if let Some(held) = self.held.get_mut(&shard) {
                    held.confirming = false;
                }
                match result {
                    Ok(Some(record)) => self.learn_shard(record, sent_at, now, out),
                    Ok(None) => self.lose(shard, None, out),
                    Err(e) => {
                        self.retry_later(shard, now);
                        out.events.push(Event::StoreError { detail: e.to_string() });
                    }
                }
            }
            Input::Acquired { shard, sent_at, result } => {
                let from = match self.ops.remove(&shard) {
                    Some(OwnershipOp::Acquire { from }) => from,
                    _ => None,
                };
                match result {
                    Ok(AcquireOutcome::Acquired { epoch }) => {
                        let vips = self.setup.layout.vips_of(shard).to_vec();
                        self.record_owner(shard, vips, Some(self.me().clone()), Some(self.setup.inc), epoch);
                        self.held.insert(
                            shard,
                            Held {
                                epoch,
                                confirmed_at: sent_at,
                                needs_write: true,
                                priority: Priority::Failover,
                                writing: false,
                                confirming: false,
                            },
                        );
                        out.events.push(Event::Acquired { shard, from, epoch });
                    }
                    Ok(AcquireOutcome::LostRace | AcquireOutcome::OwnerAlive) => {
                        self.shards_stale = true;
                        self.retry_later(shard, now);
                    }
                    Err(e) => {
                        self.shards_stale = true;
                        self.retry_later(shard, now);
                        out.events.push(Event::StoreError { detail: e.to_string() });
                    }
                }
            }
            Input::HandedOff { shard, result } => {
                let to = match self.ops.remove(&shard) {
                    Some(OwnershipOp::HandOff { to }) => to,
                    _ => return,
                };
                match result {
                    Ok(HandoffOutcome::Done { epoch }) => {
                        let vips = self.setup.layout.vips_of(shard).to_vec();
                        let to_inc = self.nodes.get(&to).map(|n| n.inc);
                        self.record_owner(shard, vips.clone(), Some(to.clone()), to_inc, epoch);
                        out.events.push(Event::HandedOff {
                            shard,
                            to: to.clone(),
                            epoch,
                        });
                        // Push the routes to the new owner now rather than
                        // leave traffic on us until its next reconcile.
                        if let Some(eni) = self.nodes.get(&to).map(|n| n.info.eni.clone()) {
                            self.pushing.insert(shard);
                            out.effects.push(Effect::WriteRoutes(RouteWriteRequest {
                                shard,
                                epoch,
                                vips,
                                tables: self.setup.route_tables.clone(),
                                eni,
                                priority: Priority::Rebalance,
                            }));
                        }
                    }
                    Ok(HandoffOutcome::NotOwner) | Err(_) => {
                        // Unknown or lost: the next read tells who owns it.
                        self.shards_stale = true;
                        self.retry_later(shard, now);
                    }
                }
            }
            Input::MarkedDead { node, result } => {
                if let Ok(MarkDeadOutcome::Marked) = result {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.state = NodeState::Dead;
                    }
                    out.events.push(Event::NodeMarkedDead { node });
                }
            }
            Input::RoutesWritten { shard, eni, failed } => {
                let ours = eni == self.setup.info.eni;
                if !ours {
                    self.pushing.remove(&shard);
                }
                if let Some(held) = self.held.get_mut(&shard).filter(|_| ours) {
                    held.writing = false;
                    if failed.is_empty() {
                        held.needs_write = false;
                        // EC2 accepted every route: as good as a read-back,
                        // and the dashboard should not show the pre-write
                        // "missing" until the next reconcile.
                        for table in &self.setup.route_tables {
                            self.route_checks.insert((shard, table.clone()), (RouteCheck::Ok, now));
                        }
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
            Input::RoutesDescribed { result } => {
                self.describe_in_flight = false;
                match result {
                    Ok(entries) => self.check_routes(&entries, now, out),
                    Err(e) => out.events.push(Event::StoreError { detail: e.to_string() }),
                }
            }
        }
    }

    /// Folds a shard record read at `sent_at` into our knowledge.
    fn learn_shard(&mut self, record: ShardRecord, sent_at: Instant, now: Instant, out: &mut Step) {
        if self.setup.layout.vips_of(record.id).is_empty() {
            return; // not a shard of our layout (a peer with other config)
        }
        let known_epoch = self.shards.get(&record.id).map_or(0, |r| r.epoch);
        if record.epoch < known_epoch {
            return; // older than what we already know
        }
        let shard = record.id;
        let mine = record.owner.as_ref() == Some(self.me());
        let owner = record.owner.clone();
        let epoch = record.epoch;
        self.shards.insert(shard, record);
        if mine {
            match self.held.get_mut(&shard) {
                Some(held) => {
                    held.epoch = epoch;
                    held.confirmed_at = held.confirmed_at.max(sent_at);
                }
                None if !self.ops.contains_key(&shard) => {
                    // Ours without our asking: handed to us, or held by a
                    // previous incarnation of this node. Check its routes soon.
                    self.held.insert(
                        shard,
                        Held {
                            epoch,
                            confirmed_at: sent_at,
                            needs_write: false,
                            priority: Priority::Repair,
                            writing: false,
                            confirming: false,
                        },
                    );
                    self.next_reconcile_at = self.next_reconcile_at.min(now + self.cfg().scan_interval);
                }
                None => {}
            }
        } else if self.held.contains_key(&shard) {
            self.lose(shard, owner, out);
        }
    }

    fn lose(&mut self, shard: ShardId, to: Option<NodeId>, out: &mut Step) {
        if self.held.remove(&shard).is_some() {
            out.events.push(Event::Lost { shard, to });
        }
    }

    fn record_owner(
        &mut self,
        shard: ShardId,
        vips: Vec<Vip>,
        owner: Option<NodeId>,
        owner_inc: Option<Incarnation>,
        epoch: Epoch,
    ) {
        let moves = self
            .shards
            .get(&shard)
            .map_or(0, |r| r.moves + u64::from(r.owner.is_some()));
        self.shards.insert(
            shard,
            ShardRecord {
                id: shard,
                vips,
                owner,
                owner_inc,
                epoch,
                moves,
            },
        );
    }

    fn retry_later(&mut self, shard: ShardId, now: Instant) {
        let backoff = self.cfg().scan_interval * RETRY_AFTER_SCANS;
        self.retry_at.insert(shard, now + backoff);
    }

    fn check_routes(&mut self, entries: &[RouteEntry], now: Instant, out: &mut Step) {
        let index: BTreeMap<(&RouteTableId, Vip), &RouteEntry> =
            entries.iter().map(|e| ((&e.table, e.destination), e)).collect();
        let my_eni = self.setup.info.eni.clone();
        for (shard, held) in self.held.iter_mut() {
            for table in &self.setup.route_tables {
                let mut check = RouteCheck::Ok;
                for vip in self.setup.layout.vips_of(*shard) {
                    let found = index.get(&(table, *vip));
                    let this = match found {
                        None => RouteCheck::Missing,
                        Some(e) if e.blackhole => RouteCheck::Blackhole,
                        Some(e) if e.target.as_ref() != Some(&my_eni) => RouteCheck::WrongTarget,
                        Some(_) => RouteCheck::Ok,
                    };
                    if this != RouteCheck::Ok {
                        check = this;
                        if !held.writing {
                            out.events.push(Event::RouteDrift {
                                shard: *shard,
                                table: table.clone(),
                                vip: *vip,
                                found: found.and_then(|e| e.target.clone()),
                            });
                        }
                    }
                }
                if check != RouteCheck::Ok && !held.writing {
                    held.needs_write = true;
                    held.priority = held.priority.min(Priority::Repair);
                }
                self.route_checks.insert((*shard, table.clone()), (check, now));
            }
        }
    }

    // ----- planning -----------------------------------------------------

    fn plan(&mut self, now: Instant, out: &mut Step) {
        self.retry_at.retain(|_, t| *t > now);
        self.plan_timers(now, out);
        let valid = self.lease.is_valid(now);
        if self.lease_was_valid && !valid {
            out.events.push(Event::LeaseLapsed);
        }
        self.lease_was_valid = valid;
        if !valid || !self.nodes_seen || !self.shards_seen {
            return;
        }
        let members = self.members(now, out);
        // Claims planned from a shard map older than the change in the live
        // set overshoot: hand-offs we received since are missing from it, so
        // we look under capacity, take too many orphans, and rebalancing then
        // moves shards that were never the dead node's. Read first.
        let fresh = self
            .members_changed_at
            .is_none_or(|changed| self.shards_read_at.is_some_and(|read| read >= changed));
        if !fresh && self.shards_stale && !self.shards_in_flight && now >= self.shards_not_before {
            self.shards_in_flight = true;
            self.shards_stale = false;
            self.next_shard_refresh_at = now + self.cfg().shard_refresh_interval;
            out.effects.push(Effect::ReadShards);
        }
        let owners: BTreeMap<ShardId, NodeId> = self
            .shards
            .iter()
            .filter_map(|(id, r)| {
                r.owner
                    .clone()
                    .filter(|o| members.iter().any(|m| &m.id == o))
                    .map(|o| (*id, o))
            })
            .chain(self.held.keys().map(|id| (*id, self.me().clone())))
            .collect();
        let shard_ids: Vec<ShardId> = self.setup.layout.ids().collect();
        let target = assign(&shard_ids, &members, &owners);
        let orphans = shard_ids.iter().filter(|s| !owners.contains_key(s)).count();

        if fresh {
            self.plan_acquisitions(&target, &members, now, out);
        }
        self.plan_mark_dead(&members, out);
        if fresh {
            self.plan_handoffs(&target, orphans, now, out);
        }
        self.plan_route_writes(now, out);
        if orphans > 0
            && self
                .shards_read_at
                .is_some_and(|t| now.saturating_since(t) >= self.orphan_refresh())
        {
            // Someone should be taking these; if our map is stale we would
            // hold back rebalancing for nothing.
            self.shards_stale = true;
        }
        self.plan_drain_exit(now, out);
    }

    /// Whether peers have had time to read the mode our heartbeat carries.
    fn peers_see_mode(&self, now: Instant) -> bool {
        self.mode_announced_at
            .is_some_and(|t| now >= t + self.cfg().scan_interval * PEER_NOTICE_SCANS)
    }

    fn orphan_refresh(&self) -> Duration {
        self.cfg().scan_interval * ORPHAN_REFRESH_SCANS
    }

    /// A drained node leaves once a read of the shards shows it owns
    /// nothing, sent late enough that every peer had seen it draining (a
    /// peer deciding on an older view may still hand it a shard).
    fn plan_drain_exit(&mut self, now: Instant, out: &mut Step) {
        let Some(announced) = self.mode_announced_at.filter(|_| self.mode == Mode::Draining) else {
            return;
        };
        if !self.held.is_empty() || !self.ops.is_empty() || !self.pushing.is_empty() {
            return;
        }
        let peers_know_at = announced + self.cfg().scan_interval * PEER_NOTICE_SCANS + self.cfg().heartbeat_interval;
        if self.shards_read_at.is_some_and(|t| t >= peers_know_at) {
            self.exited = true;
            out.effects.push(Effect::Exit(ExitReason::Drained));
        } else if now < peers_know_at {
            self.next_shard_refresh_at = self.next_shard_refresh_at.min(peers_know_at);
        }
    }

    fn plan_timers(&mut self, now: Instant, out: &mut Step) {
        if !self.heartbeat_in_flight && now >= self.next_heartbeat_at {
            self.heartbeat_in_flight = true;
            self.heartbeat_mode = self.mode;
            self.next_heartbeat_at = now + self.cfg().heartbeat_interval;
            out.effects.push(Effect::Heartbeat(HeartbeatRequest {
                info: self.setup.info.clone(),
                inc: self.setup.inc,
                state: self.mode.state(),
                register: !self.registered,
            }));
        }
        if !self.nodes_in_flight && now >= self.next_scan_at {
            self.nodes_in_flight = true;
            self.next_scan_at = now + self.cfg().scan_interval;
            out.effects.push(Effect::ReadNodes);
        }
        let stale_read_due = self.shards_stale && now >= self.shards_not_before;
        if !self.shards_in_flight && (stale_read_due || now >= self.next_shard_refresh_at) {
            self.shards_in_flight = true;
            self.shards_stale = false;
            self.next_shard_refresh_at = now + self.cfg().shard_refresh_interval;
            out.effects.push(Effect::ReadShards);
        }
        if !self.describe_in_flight && now >= self.next_reconcile_at {
            self.next_reconcile_at = now + self.cfg().reconcile_interval;
            if !self.held.is_empty() && self.lease.is_valid(now) {
                self.describe_in_flight = true;
                out.effects
                    .push(Effect::DescribeRoutes(self.setup.route_tables.clone()));
            }
        }
    }

    /// The live nodes as this observer sees them, ourselves included while
    /// our lease holds. Unhealthy nodes serve when nobody healthy is left:
    /// a struggling haproxy beats a black hole.
    fn members(&mut self, now: Instant, out: &mut Step) -> Vec<Member> {
        let ttl = self.cfg().lease_ttl;
        let mut expired = BTreeSet::new();
        let mut members = Vec::new();
        let mut unhealthy = Vec::new();
        for (id, node) in &self.nodes {
            if id == self.me() || node.state == NodeState::Dead {
                continue;
            }
            if self.observer.is_expired(id, ttl) {
                expired.insert(id.clone());
                continue;
            }
            let member = Member {
                id: id.clone(),
                weight: node.info.weight,
                eligible: node.state == NodeState::Active,
            };
            if node.state == NodeState::Unhealthy {
                unhealthy.push(members.len());
            }
            members.push(member);
        }
        members.push(Member {
            id: self.me().clone(),
            weight: self.setup.info.weight,
            eligible: self.mode == Mode::Active,
        });
        if self.mode == Mode::Unhealthy {
            unhealthy.push(members.len() - 1);
        }
        if !members.iter().any(|m| m.eligible) {
            for i in unhealthy {
                members[i].eligible = true;
            }
        }
        for node in expired.difference(&self.expired) {
            out.events.push(Event::NodeExpired { node: node.clone() });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        if members != self.last_members || expired != self.expired {
            self.shards_stale = true;
            self.members_changed_at = Some(now);
        }
        self.last_members = members.clone();
        self.expired = expired;
        members
    }

    fn may_start(&self, shard: ShardId, now: Instant) -> bool {
        !self.ops.contains_key(&shard) && self.retry_at.get(&shard).is_none_or(|t| now >= *t)
    }

    fn plan_acquisitions(&mut self, target: &Assignment, members: &[Member], now: Instant, out: &mut Step) {
        let me = self.me().clone();
        let wanted: Vec<ShardId> = target
            .target
            .iter()
            .filter(|(s, owner)| **owner == me && !self.held.contains_key(s) && self.may_start(**s, now))
            .map(|(s, _)| *s)
            .collect();
        for shard in wanted {
            let record = self.shards.get(&shard);
            let epoch = record.map_or(0, |r| r.epoch);
            let expect = match record.and_then(|r| r.owner.clone()) {
                None => Expect::Free,
                Some(owner) if owner == me || members.iter().any(|m| m.id == owner) => continue,
                Some(owner) => match self.nodes.get(&owner) {
                    Some(node) if node.state != NodeState::Dead => match self.observer.observed_hb(&owner) {
                        Some(observed_hb) => Expect::ExpiredOwner {
                            owner,
                            epoch,
                            observed_hb,
                        },
                        None => continue,
                    },
                    // Marked dead, or its item is gone altogether.
                    _ => Expect::DeadOwner { owner, epoch },
                },
            };
            let from = match &expect {
                Expect::Free => None,
                Expect::DeadOwner { owner, .. } | Expect::ExpiredOwner { owner, .. } => Some(owner.clone()),
            };
            self.ops.insert(shard, OwnershipOp::Acquire { from });
            out.effects.push(Effect::Acquire(AcquireRequest {
                shard,
                vips: self.setup.layout.vips_of(shard).to_vec(),
                me: me.clone(),
                inc: self.setup.inc,
                expect,
            }));
        }
    }

    /// One observer marks each expired node dead: the live member with the
    /// lowest id, so the fleet spends one write per death.
    fn plan_mark_dead(&mut self, members: &[Member], out: &mut Step) {
        if members.first().map(|m| &m.id) != Some(self.me()) {
            return;
        }
        let ttl = self.cfg().lease_ttl;
        for (id, node) in &self.nodes {
            if node.state == NodeState::Dead || id == self.me() || !self.observer.is_expired(id, ttl) {
                continue;
            }
            if self.marking.get(id) == Some(&node.hb) {
                continue;
            }
            self.marking.insert(id.clone(), node.hb);
            out.effects.push(Effect::MarkDead(MarkDeadRequest {
                node: id.clone(),
                inc: node.inc,
                observed_hb: node.hb,
            }));
        }
    }

    fn plan_handoffs(&mut self, target: &Assignment, orphans: usize, now: Instant, out: &mut Step) {
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
        let leaving: Vec<(ShardId, NodeId)> = self
            .held
            .keys()
            .filter_map(|s| {
                target
                    .target
                    .get(s)
                    .filter(|to| *to != self.me())
                    .map(|to| (*s, to.clone()))
            })
            .collect();
        for (shard, to) in leaving {
            if budget == 0 {
                break;
            }
            let Some(to_inc) = self.nodes.get(&to).map(|n| n.inc) else {
                continue;
            };
            if !self.may_start(shard, now) {
                continue;
            }
            let Some(held) = self.held.remove(&shard) else { continue };
            budget -= 1;
            // From here on we are not the owner: no more route writes.
            self.ops.insert(shard, OwnershipOp::HandOff { to: to.clone() });
            out.effects.push(Effect::HandOff(HandoffRequest {
                shard,
                me: self.me().clone(),
                epoch: held.epoch,
                to,
                to_inc,
            }));
        }
    }

    /// A confirmation younger than this fences a route write; older ones
    /// are renewed with a consistent read first. One lease: ownership can
    /// only be lost while our own lease has lapsed (which voids every
    /// confirmation anyway) or by our own hand-off, so this only bounds
    /// trust in old reads. It must exceed a store round trip by far, or a
    /// slow store would keep every confirmation stale and no route would
    /// ever be written (seen in the lab with the fast profile).
    fn confirm_fresh_for(&self) -> Duration {
        self.cfg().lease_ttl
    }

    fn plan_route_writes(&mut self, now: Instant, out: &mut Step) {
        let fresh_for = self.confirm_fresh_for();
        let lease = self.lease;
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
                    vips: self.setup.layout.vips_of(*shard).to_vec(),
                    tables: self.setup.route_tables.clone(),
                    eni: self.setup.info.eni.clone(),
                    priority: held.priority,
                }));
            } else {
                held.confirming = true;
                out.effects.push(Effect::ConfirmShard(*shard));
            }
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.exited {
            return None;
        }
        let mut wake = vec![self.next_scan_at, self.next_shard_refresh_at, self.next_reconcile_at];
        if self.shards_stale {
            wake.push(self.shards_not_before);
        }
        if !self.heartbeat_in_flight {
            wake.push(self.next_heartbeat_at);
        }
        wake.extend(self.lease.deadline());
        wake.extend(self.retry_at.values().copied());
        wake.into_iter().filter(|t| *t > now).min()
    }

    // ----- introspection (dashboard, simulation) ------------------------

    /// Whether this node may write routes for `shard` at `now`: it holds the
    /// shard, its lease is valid, and its ownership was confirmed after the
    /// lease last became valid.
    pub fn may_write(&self, shard: ShardId, now: Instant) -> bool {
        self.held
            .get(&shard)
            .is_some_and(|h| self.lease.vouches_for(h.confirmed_at, now))
    }

    pub fn held(&self) -> impl Iterator<Item = (ShardId, Epoch)> + '_ {
        self.held.iter().map(|(s, h)| (*s, h.epoch))
    }

    pub fn holds(&self, shard: ShardId) -> bool {
        self.held.contains_key(&shard)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn setup(&self) -> &NodeSetup {
        &self.setup
    }

    pub fn lease_deadline(&self) -> Option<Instant> {
        self.lease.deadline()
    }

    pub fn lease_valid(&self, now: Instant) -> bool {
        self.lease.is_valid(now)
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeRecord> {
        &self.nodes
    }

    pub fn shards(&self) -> &BTreeMap<ShardId, ShardRecord> {
        &self.shards
    }

    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    pub fn is_expired(&self, node: &NodeId) -> bool {
        self.observer.is_expired(node, self.cfg().lease_ttl)
    }

    pub fn route_checks(&self) -> &BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)> {
        &self.route_checks
    }

    pub fn has_exited(&self) -> bool {
        self.exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreError, StoreErrorKind, StoreOp};
    use crate::types::{EniId, Vip};

    fn machine() -> Machine {
        let vips: Vec<Vip> = ["10.200.0.1", "10.200.0.2"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        Machine::new(
            NodeSetup {
                info: NodeInfo {
                    id: NodeId::new("a"),
                    eni: EniId("eni-a".into()),
                    az: "az".into(),
                    addr: String::new(),
                    weight: 1,
                    version: String::new(),
                },
                inc: Incarnation(1),
                lease: LeaseConfig::DEFAULT,
                layout: ShardLayout::one_per_vip(&vips).unwrap(),
                route_tables: vec![RouteTableId("rtb-1".into())],
            },
            Instant::ZERO,
        )
    }

    fn reads_of_shards(step: &Step) -> usize {
        step.effects.iter().filter(|e| matches!(e, Effect::ReadShards)).count()
    }

    #[test]
    fn a_failing_shard_read_is_retried_after_a_scan_not_at_once() {
        let mut m = machine();
        let first = m.step(Input::Tick, Instant::ZERO);
        assert_eq!(reads_of_shards(&first), 1);
        let failed = Err(StoreError::new(
            StoreOp::ReadShards,
            StoreErrorKind::Unavailable,
            "down",
        ));
        let t = Instant::from_millis(5);
        let after_failure = m.step(
            Input::Shards {
                sent_at: Instant::ZERO,
                result: failed,
            },
            t,
        );
        assert_eq!(reads_of_shards(&after_failure), 0, "no retry storm");
        let scan = LeaseConfig::DEFAULT.scan_interval;
        assert!(after_failure.wake_at.is_some_and(|w| w <= t + scan));
        assert_eq!(
            reads_of_shards(&m.step(Input::Tick, t + scan)),
            1,
            "retried after a scan"
        );
    }

    #[test]
    fn the_first_step_registers_and_reads() {
        let mut m = machine();
        let step = m.step(Input::Tick, Instant::ZERO);
        let register = step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Heartbeat(req) if req.register && req.state == NodeState::Active));
        assert!(register, "{:?}", step.effects);
        assert!(step.effects.contains(&Effect::ReadNodes));
        assert!(
            !step.effects.iter().any(|e| matches!(e, Effect::Acquire(_))),
            "no claims before the lease"
        );
    }

    /// Drives `m` through registration and a first snapshot in which every
    /// shard is free, each store call taking `rtt`; returns what the
    /// machine asks for once its claims succeed.
    fn acquire_all(m: &mut Machine, rtt: std::time::Duration) -> Vec<Effect> {
        let mut now = Instant::ZERO;
        m.step(Input::Tick, now);
        now = now + rtt;
        let beat = Input::Heartbeat {
            sent_at: Instant::ZERO,
            result: Ok(HeartbeatOutcome::Beat(1)),
        };
        m.step(beat, now);
        let mut sent = now;
        now = now + rtt;
        m.step(
            Input::Nodes {
                sent_at: sent,
                result: Ok(vec![]),
            },
            now,
        );
        let mut acquires = Vec::new();
        // The first plan sees the live set change and reads the shards again.
        for _ in 0..2 {
            let step = m.step(
                Input::Shards {
                    sent_at: sent,
                    result: Ok(vec![]),
                },
                now,
            );
            acquires = step
                .effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Acquire(req) => Some(req.shard),
                    _ => None,
                })
                .collect();
            sent = now;
            now = now + rtt;
            if !acquires.is_empty() {
                break;
            }
        }
        assert_eq!(acquires.len(), 2);
        let mut effects = Vec::new();
        for (i, shard) in acquires.into_iter().enumerate() {
            let out = m.step(
                Input::Acquired {
                    shard,
                    sent_at: sent,
                    result: Ok(AcquireOutcome::Acquired { epoch: i as u64 + 1 }),
                },
                now,
            );
            effects.extend(out.effects);
        }
        effects
    }

    #[test]
    fn routes_are_written_right_after_a_claim_even_with_a_slow_store() {
        // A store round trip longer than a heartbeat interval must not keep
        // the claim's own confirmation from fencing the route write.
        let mut m = machine();
        m.setup.lease.heartbeat_interval = std::time::Duration::from_millis(200);
        let effects = acquire_all(&mut m, std::time::Duration::from_millis(400));
        let writes = effects.iter().filter(|e| matches!(e, Effect::WriteRoutes(_))).count();
        assert_eq!(writes, 2, "{effects:?}");
        assert!(!effects.iter().any(|e| matches!(e, Effect::ConfirmShard(_))));
    }

    #[test]
    fn a_successful_route_write_counts_as_a_check_and_a_failed_one_does_not() {
        let mut m = machine();
        let effects = acquire_all(&mut m, std::time::Duration::from_millis(10));
        let writes: Vec<RouteWriteRequest> = effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::WriteRoutes(req) => Some(req),
                _ => None,
            })
            .collect();
        assert_eq!(writes.len(), 2);
        let table = RouteTableId("rtb-1".into());
        let at = Instant::from_millis(500);
        let written = |req: &RouteWriteRequest, failed| Input::RoutesWritten {
            shard: req.shard,
            eni: req.eni.clone(),
            failed,
        };
        m.step(written(&writes[0], vec![]), at);
        let failure = RouteError::Unavailable {
            op: crate::routes::RouteOp::Replace,
            detail: "down".into(),
        };
        m.step(written(&writes[1], vec![failure]), at);
        assert_eq!(
            m.route_checks().get(&(writes[0].shard, table.clone())),
            Some(&(RouteCheck::Ok, at))
        );
        assert_eq!(m.route_checks().get(&(writes[1].shard, table)), None, "not checked yet");
    }
}
