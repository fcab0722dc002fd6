//! The lease protocol as a step function.
//!
//! [`Machine::step`] takes one [`Input`] (a timer tick, a store or route
//! result, an operator's request) and the current instant, updates the
//! node's view, and returns the [`Effect`]s to perform next, the [`Event`]s
//! worth logging, and when it next wants to be woken. It never blocks, sleeps
//! or reads a clock; the driver performs the effects and feeds the results
//! back as inputs, each tagged with the instant its request was *sent*.
//!
//! Modules, in the order a step runs through them:
//! - [`messages`]: inputs, effects, events.
//! - [`mode`]: what the node should be (starting, active, draining,
//!   unhealthy) from the drain request, health and ENI.
//! - `inputs`: folds each input into the node's knowledge; `book` keeps
//!   what it knows of the shard items; `reads` backs off failed reads and
//!   has the two take turns while the table throttles us; `verdict`
//!   decides what a peer verdict asks of us (evict if we take the dead
//!   node's shards, else wait for the takers).
//! - `plan`: one pass of planning after every input: timers (heartbeat,
//!   reads, layouts, reconcile); then, with a valid own lease, the
//!   [`crate::membership`] rule and the targets (`targets`: planned afresh,
//!   or kept when only claims landed on them; the
//!   [`crate::assign`]ment, disputed and free shards, and the work lists
//!   they give us): claims, takeovers, hand-offs, marking nodes dead,
//!   retiring shards no node serves, and the drain's end.
//! - `routes`: route writes, each fenced by a fresh confirmation of
//!   ownership; the read-back that checks and repairs routes; which node the
//!   routes of a free shard point at (so a re-created table re-forms around
//!   the routes as they stand).

mod book;
mod inputs;
mod messages;
mod mode;
mod pace;
mod plan;
mod reads;
mod routes;
mod targets;
#[cfg(test)]
mod tests;
mod verdict;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use inputs::EVICTION_RECHECK_SLACK;
pub use messages::{Effect, Event, ExitReason, Input, Priority, RouteCall, Step};
pub use mode::{Health, Mode, Readiness};
pub use pace::{cold_refresh, COLD_REFRESH_PER_BLOCK};
pub use plan::LAYOUT_REPUBLISH_INTERVAL;
pub use routes::{
    Fence, Pacing, PacingError, RouteCheck, TableHealth, DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND, MIN_CALLS_PER_SECOND,
    TABLE_BACKOFF_CAP,
};
pub use verdict::{DEFERRED_EVICTION_WAIT, VERDICT_WEIGH_INTERVAL};

use self::book::ShardBook;
use self::pace::Pace;
use self::reads::{Read, ReadBackoff};
use self::routes::RouteBook;
use crate::assign::AssignMemo;
use crate::config::LeaseConfig;
use crate::layout::{LayoutId, ShardLayout};
use crate::liveness::{Observer, OwnLease};
use crate::membership::Membership;
use crate::store::{BeatKind, Skipped};
use crate::time::Instant;
use crate::types::{
    Epoch, Heartbeat, Incarnation, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardId,
    ShardRecord,
};

/// Everything a node needs to know about itself and the fleet at start.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub info: NodeInfo,
    pub inc: Incarnation,
    pub lease: LeaseConfig,
    pub layout: Arc<ShardLayout>,
    pub route_tables: Vec<RouteTableId>,
    /// A drain that has not finished by then ends anyway
    /// ([`ExitReason::DrainTimedOut`]).
    pub drain_timeout: Duration,
    /// How fast this node may make mutating EC2 calls.
    pub pacing: Pacing,
    /// The UDP port this node answers peer probes on, if it does.
    pub peer_port: Option<u16>,
}

impl NodeSetup {
    /// What the node announces in its item.
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            layout: self.layout.id(),
            route_tables: self.route_tables.clone(),
            lease_ttl: self.lease.lease_ttl,
            heartbeat_interval: self.lease.heartbeat_interval,
            peer_port: self.peer_port,
        }
    }
}

/// A shard this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    epoch: Epoch,
    /// Send time of the latest write or consistent read that showed us as
    /// owner: the fence for route writes.
    confirmed_at: Instant,
    confirming: bool,
    /// When we found it ours without asking (handed to us, or held by our
    /// previous process). Its giver may still be pushing its routes to us,
    /// until a lease after its hand-off: we hand it on no sooner, or the
    /// push could land after the next owner's writes.
    adopted_at: Option<Instant>,
    /// Held under an epoch we did not write since our latest registration
    /// (adopted from the table, or held across a re-registration): no route
    /// write until our own re-claim lands. An observer that counts us
    /// missing from an older deletion of our item sees only a claim move.
    needs_reclaim: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnershipOp {
    Acquire { from: Option<NodeId> },
    Reclaim,
    HandOff { to: NodeId },
}

const MAX_NODE_READS_IN_FLIGHT: usize = 4;

/// When each periodic call is next due.
#[derive(Clone, Debug)]
struct Timers {
    heartbeat: Instant,
    scan: Instant,
    shard_refresh: Instant,
    reconcile: Instant,
    /// After a failed read of the shards, the next waits until this: a
    /// store that fails fast must not be hammered.
    shards_not_before: Instant,
    publish_layout: Instant,
}

/// What the current targets ask of this node (see `plan_work_lists`).
#[derive(Clone, Debug, Default)]
struct WorkLists {
    take: Vec<ShardId>,
    give: Vec<(ShardId, NodeId)>,
    retire: Vec<ShardId>,
}

/// Change counters of what targets are computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Versions {
    membership: u64,
    held: u64,
    /// The node items as we know them (`Machine::nodes`, unreadable ones).
    nodes: u64,
}

/// What planning asks of the node items as a whole, derived once per read
/// of them: it is asked per free shard on every step, and the nodes are
/// many.
#[derive(Clone, Debug)]
struct NodeFacts {
    /// The longest lease any node we know runs with (ours at least).
    longest_ttl: Duration,
    /// The highest epoch floor any node announces.
    fleet_floor: Epoch,
}

impl NodeFacts {
    fn of(nodes: &BTreeMap<NodeId, NodeRecord>, own_ttl: Duration) -> Self {
        Self {
            longest_ttl: nodes
                .values()
                .filter_map(|n| n.config.as_ref().map(|c| c.lease_ttl.min(crate::config::MAX_LEASE_TTL)))
                .fold(own_ttl, Duration::max),
            fleet_floor: nodes.values().map(|n| n.epoch_floor).max().unwrap_or(0),
        }
    }
}

impl Machine {
    /// The node items a read returned replace those we knew; returns their
    /// size in bytes. Keeps the last record of a node whose item vanished,
    /// or cannot be read now: if an unreadable item later vanishes, its
    /// node must still be known, to be found gone and its shards taken
    /// over.
    fn replace_nodes(&mut self, records: Vec<NodeRecord>) -> u64 {
        // A read mostly shows the nodes the last one did: replaced where
        // they are, rather than a map of them all built on every read, and
        // sized from what they were.
        let in_order = records.windows(2).all(|pair| pair[0].info.id < pair[1].info.id);
        let same_nodes = in_order
            && records.len() == self.nodes.len()
            && records.iter().zip(self.nodes.keys()).all(|(r, id)| r.info.id == *id);
        if same_nodes {
            let sized = self.node_sizes.len() == records.len();
            if !sized {
                self.node_sizes = vec![(0, NodeState::Starting); records.len()];
            }
            let mut total = 0;
            let known = self.nodes.values_mut().zip(self.node_sizes.iter_mut());
            for (record, (known, (size, state))) in records.into_iter().zip(known) {
                // A record marked dead here since it was read no longer
                // shows what was sized.
                *size = if sized && *state == known.state {
                    crate::units::node_item_bytes_after(known, *size, &record)
                } else {
                    crate::units::node_item_bytes(&record)
                };
                debug_assert_eq!(*size, crate::units::node_item_bytes(&record));
                *state = record.state;
                total += *size;
                *known = record;
            }
            return total;
        }
        let sizes: Vec<(u64, NodeState)> = records
            .iter()
            .map(|r| (crate::units::node_item_bytes(r), r.state))
            .collect();
        let total = sizes.iter().map(|(size, _)| size).sum();
        let mut nodes: BTreeMap<NodeId, NodeRecord> = records.into_iter().map(|n| (n.info.id.clone(), n)).collect();
        for (id, record) in std::mem::take(&mut self.nodes) {
            if self.observer.is_missing(&id) || self.unreadable_nodes.contains(&id) {
                nodes.entry(id).or_insert(record);
            }
        }
        self.nodes = nodes;
        // The sizes line up with the map only if it holds the records
        // alone, each once.
        self.node_sizes = if in_order && self.nodes.len() == sizes.len() {
            sizes
        } else {
            Vec::new()
        };
        total
    }
}

/// Calls of which one at a time is enough (reads of the node items: a few,
/// so that a slow store delays what we see but leaves no gap in it).
#[derive(Clone, Debug, Default)]
struct InFlight {
    nodes: usize,
    /// When the read of the shards in flight was sent.
    shards: Option<Instant>,
    publish: bool,
    layouts: BTreeSet<LayoutId>,
}

#[derive(Clone, Debug)]
pub struct Machine {
    setup: NodeSetup,
    readiness: Readiness,
    mode: Mode,
    /// Send time of the first successful heartbeat that carried the current
    /// mode: from then on, others can see it.
    mode_announced_at: Option<Instant>,
    /// Heartbeats in flight, by send time: the mode each announces and how
    /// it writes our item. They overlap when the store is slow: a stalled
    /// one must not hold up the next.
    heartbeats: BTreeMap<Instant, (Mode, BeatKind)>,
    drain_started_at: Option<Instant>,
    /// Draining, since when this node has held nothing, had nothing under
    /// way and pushed nothing: a read-back of the route tables sent after
    /// that shows every route the node will ever have written.
    drain_quiet_since: Option<Instant>,
    /// The simulation's sabotage of that rule.
    drain_ignores_routes: bool,
    /// How the next heartbeat writes our item.
    beat_kind: BeatKind,
    /// The counter our last registration put (see `HeartbeatRequest`).
    register_hb: Heartbeat,
    /// Renewals this process has sent: each may add one to our item's
    /// counter, whenever it lands.
    renews_sent: Heartbeat,
    /// When our registration landed; until a read of the node items sent a
    /// heartbeat interval after it returns, we do not know who else is
    /// starting with us.
    registered_at: Option<Instant>,
    /// When our latest re-registration (our item had vanished) was
    /// answered. A shard we find handed to us in a read whose predecessor
    /// was sent before it may have been handed to us before it: it is
    /// claimed again before we write its routes.
    reregistered_at: Option<Instant>,
    lease: OwnLease,
    lease_was_valid: bool,
    observer: Observer,
    /// The node items as last read (ourselves included), plus the last
    /// record of nodes whose item has gone missing since.
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// Derived from `nodes`, kept with it.
    node_facts: NodeFacts,
    /// The size of each item in `nodes`, in its order, with the state it
    /// had when sized, when `nodes` holds only what the last read returned
    /// (else empty).
    node_sizes: Vec<(u64, NodeState)>,
    /// Nodes whose item exists but could not be read.
    unreadable_nodes: BTreeSet<NodeId>,
    /// The items the last reads could not use, by key.
    skipped_nodes: Vec<Skipped>,
    skipped_shards: Vec<Skipped>,
    /// Every layout read so far (ours included), by fingerprint.
    layouts: BTreeMap<LayoutId, Arc<ShardLayout>>,
    layout_retry_at: BTreeMap<LayoutId, Instant>,
    layout_published: bool,
    /// A read of the node items sent a heartbeat interval after our
    /// registration has returned.
    nodes_seen: bool,
    shards_seen: bool,
    book: ShardBook,
    held: BTreeMap<ShardId, Held>,
    ops: BTreeMap<ShardId, OwnershipOp>,
    retry_at: BTreeMap<ShardId, Instant>,
    /// Gone nodes we already asked the store to mark dead, by counter.
    marking: BTreeMap<NodeId, Heartbeat>,
    /// Nodes we are evicting on the peers' word, and when we asked.
    evicting: BTreeMap<NodeId, Instant>,
    /// Our evictions that landed since membership was last planned, and
    /// when we asked for each: the live set changed for us then, and a read
    /// of the shards went out with the request.
    evictions_landed: BTreeMap<NodeId, Instant>,
    /// Nodes found dead that held nothing as far as we knew: the next read
    /// of the shards says whether they do.
    unheld_dead: BTreeMap<NodeId, Incarnation>,
    /// Peer verdicts on nodes whose shards others take: they evict, and
    /// we evict only if our reads do not show it in time.
    deferred_verdicts: verdict::DeferredVerdicts,
    weighing: verdict::Weighing,
    /// Read-backs due after the lease of a node we took shards from early
    /// (on eviction) has run out.
    rechecks: BTreeSet<Instant>,
    no_recheck_after_eviction: bool,
    /// The simulation's sabotage: held and adopted shards are written to
    /// without claiming them again.
    no_reclaim: bool,
    /// The simulation's sabotage of the counter a re-registration puts.
    counters_restart: bool,
    /// The simulation's sabotage: claims of free shards go by targets
    /// planned before their wait started over, above whatever epoch floors
    /// were read last.
    claims_on_stale_view: bool,
    retiring: BTreeSet<ShardId>,
    /// An input that can change membership arrived since it was last
    /// computed.
    replan: bool,
    /// When they must be computed again anyway (a wait runs out).
    replan_at: Option<Instant>,
    versions: Versions,
    /// The versions the current targets were computed from.
    targets_from: (u64, u64, u64, u64),
    /// The membership and targets of the last plan.
    membership: Membership,
    /// Shared with the memo: a plan that reuses the assignment and changes
    /// none of its targets copies nothing.
    target: Arc<BTreeMap<ShardId, NodeId>>,
    quota: Arc<BTreeMap<NodeId, usize>>,
    /// The assignment behind them, reused while owners only move to it
    /// (and shared with other machines in a simulation).
    assign_memo: AssignMemo,
    work_lists: WorkLists,
    /// Agreed shards with no member as owner, as of the last plan: failover
    /// work, which rebalancing waits for.
    orphans: usize,
    /// The last plan of the targets had no disputed shard, and no shard
    /// seen free (whose fate time, routes and node items decide): claims
    /// that land on their targets since change none of it, and neither do
    /// the routes (see `targets::orphans_after_claims`).
    targets_incremental: bool,
    /// The shards we were claiming at the last plan of the targets: they
    /// counted as ours (see `targets::counts_as_held`).
    targets_claiming: BTreeSet<ShardId>,
    /// Free shards whose target, as of the last plan, came from where their
    /// routes point (or waits for a read-back) while a table was down for
    /// us: the tables must then be read back on schedule even when we hold
    /// nothing, or a view that leaves the failing table out would decide
    /// for ever, against the other nodes' views.
    free_shards_follow_routes: bool,
    gone_reported: BTreeSet<NodeId>,
    /// When the live set last changed. A shard map read before it may miss
    /// hand-offs we received since, so claims and hand-offs wait for a newer
    /// read.
    members_changed_at: Option<Instant>,
    routes: RouteBook,
    timers: Timers,
    read_backoff: ReadBackoff,
    /// Reads of the node items that may overlap: when the store answers
    /// slowly, a new read still goes out every scan, so nothing goes unseen
    /// for long.
    max_node_reads: usize,
    in_flight: InFlight,
    shards_stale: bool,
    /// A call found the lease table missing since the last read of the
    /// shards.
    table_was_missing: bool,
    pace: Pace,
    exited: Option<ExitReason>,
}

impl Machine {
    pub fn new(setup: NodeSetup, now: Instant) -> Self {
        let reconcile = setup.lease.reconcile_interval;
        // A store in an outage is asked at most about once a lease per
        // reader, not four times a second; but reads keep their pace
        // through failures that span less than half a lease (a store that
        // fails now and then): waiting longer would make the node blind.
        let (setup_scan, setup_ttl) = (setup.lease.scan_interval, setup.lease.lease_ttl);
        let read_grace = (setup_ttl.as_millis() / 2 / setup_scan.as_millis().max(1)) as u32;
        let setup_pacing = setup.pacing;
        let layouts = BTreeMap::from([(setup.layout.id(), setup.layout.clone())]);
        let readiness = Readiness::default();
        Self {
            setup,
            readiness,
            mode: readiness.mode(),
            mode_announced_at: None,
            drain_quiet_since: None,
            drain_ignores_routes: false,
            heartbeats: BTreeMap::new(),
            drain_started_at: None,
            beat_kind: BeatKind::Register,
            register_hb: 0,
            renews_sent: 0,
            registered_at: None,
            reregistered_at: None,
            lease: OwnLease::default(),
            lease_was_valid: false,
            observer: Observer::default(),
            nodes: BTreeMap::new(),
            node_facts: NodeFacts::of(&BTreeMap::new(), setup_ttl),
            node_sizes: Vec::new(),
            unreadable_nodes: BTreeSet::new(),
            skipped_nodes: Vec::new(),
            skipped_shards: Vec::new(),
            layouts,
            layout_retry_at: BTreeMap::new(),
            layout_published: false,
            nodes_seen: false,
            shards_seen: false,
            book: ShardBook::default(),
            held: BTreeMap::new(),
            ops: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            marking: BTreeMap::new(),
            retiring: BTreeSet::new(),
            replan: true,
            replan_at: None,
            versions: Versions::default(),
            targets_from: (u64::MAX, 0, 0, 0),
            membership: Membership::default(),
            target: Arc::default(),
            quota: Arc::default(),
            assign_memo: AssignMemo::default(),
            work_lists: WorkLists::default(),
            orphans: 0,
            targets_incremental: false,
            targets_claiming: BTreeSet::new(),
            free_shards_follow_routes: false,
            gone_reported: BTreeSet::new(),
            evicting: BTreeMap::new(),
            evictions_landed: BTreeMap::new(),
            unheld_dead: BTreeMap::new(),
            deferred_verdicts: BTreeMap::new(),
            weighing: verdict::Weighing::default(),
            rechecks: BTreeSet::new(),
            no_recheck_after_eviction: false,
            no_reclaim: false,
            counters_restart: false,
            claims_on_stale_view: false,
            members_changed_at: None,
            routes: RouteBook::new(setup_pacing, now),
            timers: Timers {
                heartbeat: now,
                scan: now,
                shard_refresh: now,
                reconcile: now + reconcile,
                shards_not_before: now,
                publish_layout: now,
            },
            max_node_reads: MAX_NODE_READS_IN_FLIGHT,
            read_backoff: ReadBackoff::new(setup_scan, setup_ttl, read_grace),
            in_flight: InFlight::default(),
            shards_stale: true,
            table_was_missing: false,
            pace: Pace::new(now),
            exited: None,
        }
    }

    /// Plans with `memo` from now on: machines in one process whose views
    /// agree then compute their assignment once between them.
    pub fn share_assignments(&mut self, memo: AssignMemo) {
        self.assign_memo = memo;
    }

    fn cfg(&self) -> &LeaseConfig {
        &self.setup.lease
    }

    fn me(&self) -> &NodeId {
        &self.setup.info.id
    }

    /// Seeds the jitter of this process's retries, so that a fleet's nodes
    /// retry apart.
    fn jitter_seed(&self, what: u64) -> u64 {
        self.setup.inc.0 ^ what
    }

    pub fn step(&mut self, input: Input, now: Instant) -> Step {
        let mut out = Step::default();
        if self.exited.is_some() {
            return out;
        }
        // Membership is a function of the node items, the layouts and our
        // own mode: only these inputs can change it.
        self.replan |= matches!(
            input,
            Input::Nodes { .. }
                | Input::Layout { .. }
                | Input::MarkedDead { .. }
                | Input::Health(_)
                | Input::Drain(_)
                | Input::SourceDestCheckOff(_)
                | Input::Stop
        );
        self.apply(input, now, &mut out);
        if self.exited.is_none() {
            self.plan(now, &mut out);
        }
        out.wake_at = self.next_wake(now);
        out
    }

    fn exit(&mut self, reason: ExitReason, out: &mut Step) {
        if self.exited.is_none() {
            self.exited = Some(reason);
            out.effects.push(Effect::Exit(reason));
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.exited.is_some() {
            return None;
        }
        let t = &self.timers;
        let mut wake = vec![t.scan, t.shard_refresh, t.reconcile, t.publish_layout];
        if self.shards_stale {
            wake.push(t.shards_not_before);
        }
        wake.push(t.heartbeat);
        wake.extend(self.lease.deadline());
        wake.extend(self.retry_at.values().copied());
        wake.extend(self.layout_retry_at.values().copied());
        wake.extend(self.drain_deadline());
        wake.extend(self.replan_at);
        wake.extend(self.weighing.next);
        wake.extend(self.rechecks.first().copied());
        wake.extend(self.pace.wake_at());
        wake.extend(self.routes.wake_at(now));
        wake.into_iter().filter(|t| *t > now).min()
    }

    fn drain_deadline(&self) -> Option<Instant> {
        self.drain_started_at.map(|t| t + self.setup.drain_timeout)
    }

    // ----- introspection (driver, dashboard, simulation) -----------------

    /// Whether this node may write routes for `shard` at `now`: it holds the
    /// shard, its lease is valid, and its ownership was confirmed after the
    /// lease last became valid and less than a lease ago.
    pub fn may_write(&self, shard: ShardId, now: Instant) -> bool {
        self.writable_until(shard).is_some_and(|until| now < until)
    }

    /// Until when this node may write routes for `shard`, if it holds it
    /// with a confirmation made under its current lease: the end of the
    /// lease, or of the confirmation's freshness, whichever comes first.
    pub fn writable_until(&self, shard: ShardId) -> Option<Instant> {
        let held = self.held.get(&shard).filter(|h| !h.needs_reclaim || self.no_reclaim)?;
        let lease_end = self.lease.deadline()?;
        self.lease
            .covers(held.confirmed_at)
            .then(|| lease_end.min(held.confirmed_at + self.confirm_fresh_for()))
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

    pub fn readiness(&self) -> Readiness {
        self.readiness
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

    pub fn unreadable_nodes(&self) -> &BTreeSet<NodeId> {
        &self.unreadable_nodes
    }

    /// Every shard item this node knows exists.
    pub fn shard_records(&self) -> impl Iterator<Item = &ShardRecord> {
        self.book.records()
    }

    /// The highest epoch this node has seen for `shard`.
    pub fn remembered_epoch(&self, shard: ShardId) -> Epoch {
        self.book.remembered(shard)
    }

    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The membership as of the last plan (empty before the first).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Where the last plan wanted every shard.
    pub fn target(&self) -> &BTreeMap<ShardId, NodeId> {
        &self.target
    }

    pub fn quota(&self) -> &BTreeMap<NodeId, usize> {
        &self.quota
    }

    /// Layouts known so far, by fingerprint.
    pub fn layouts(&self) -> &BTreeMap<LayoutId, Arc<ShardLayout>> {
        &self.layouts
    }

    /// Breaks the blindness rule on purpose (the simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_blindness_by_return_times(&mut self) {
        self.observer.sabotage_blindness_by_return_times();
        self.max_node_reads = 1;
    }

    /// Never reads routes back after an evicted owner's lease (the
    /// simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_no_recheck_after_eviction(&mut self) {
        self.no_recheck_after_eviction = true;
    }

    /// Writes the routes of held and adopted shards without claiming them
    /// again after a registration (the simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_no_reclaim(&mut self) {
        self.no_reclaim = true;
    }

    /// Puts one more than the last put when registering again, whatever
    /// renewals raised the counter since (the simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_counters_restart(&mut self) {
        self.counters_restart = true;
    }

    /// Claims free shards on targets planned before their wait started
    /// over, above epoch floors read whenever (the simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_claims_on_stale_view(&mut self) {
        self.claims_on_stale_view = true;
        self.book.sabotage_quiet_restarts();
    }

    /// Ends drains without looking at the routes (the simulation's sabotage).
    #[cfg(feature = "fakes")]
    #[doc(hidden)]
    pub fn sabotage_drain_ignoring_routes(&mut self) {
        self.drain_ignores_routes = true;
    }

    /// The nodes the peer detector probes, at the incarnation last read:
    /// every other node that answers probes and that we do not already know
    /// dead, evicted, gone or missing.
    pub fn peer_members(&self) -> impl Iterator<Item = (&NodeId, Incarnation)> + '_ {
        let ttl = self.cfg().lease_ttl;
        self.nodes
            .values()
            .filter(move |n| {
                let id = &n.info.id;
                id != self.me()
                    && n.state != NodeState::Dead
                    && n.config.as_ref().is_some_and(|c| c.peer_port.is_some())
                    && !self.unreadable_nodes.contains(id)
                    && !self.observer.is_missing(id)
                    && !self.observer.is_gone(id, ttl)
            })
            .map(|n| (&n.info.id, n.inc))
    }

    /// Grows whenever [`Self::peer_members`] may have changed: a driver
    /// that hands the members to a peer detector after every step compares
    /// this rather than the whole list (thousands of nodes in a large
    /// fleet).
    pub fn peer_members_version(&self) -> u64 {
        self.versions.nodes + self.observer.changes()
    }

    pub fn is_gone(&self, node: &NodeId) -> bool {
        self.observer.is_gone(node, self.cfg().lease_ttl)
    }

    pub fn route_checks(&self) -> &BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)> {
        &self.routes.checks
    }

    /// Route changes this node still wants made.
    pub fn route_work_pending(&self) -> usize {
        let (failover, other) = self.routes.pending();
        failover + other
    }

    /// What the calls against each route table say about it.
    pub fn table_health(&self) -> &BTreeMap<RouteTableId, TableHealth> {
        &self.routes.tables
    }

    /// Tokens left for mutating EC2 calls, and route calls waiting
    /// (failover work, other work).
    pub fn route_pacing(&self, now: Instant) -> (f64, (usize, usize)) {
        (self.routes.tokens(now), self.routes.pending())
    }

    /// The items the last reads skipped (nodes first, then shards).
    pub fn skipped(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped_nodes.iter().chain(self.skipped_shards.iter())
    }

    /// The route tables the fleet maintains: ours and every member's.
    pub fn route_tables(&self) -> &[RouteTableId] {
        if self.membership.tables.is_empty() {
            &self.setup.route_tables
        } else {
            &self.membership.tables
        }
    }

    /// Whether the node reads cold (the fleet is settled: it only watches
    /// the change counter and one peer).
    pub fn reads_cold(&self) -> bool {
        self.pace.is_cold()
    }

    pub fn exited(&self) -> Option<ExitReason> {
        self.exited
    }

    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }
}
