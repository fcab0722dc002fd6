//! The invariants of the protocol, checked by the simulation:
//!
//! - (a) **one writer**: after every event, at most one node may write
//!   routes for any shard ([`crate::machine::Machine::may_write`]); and on
//!   the writes that *land* in EC2, no write of a node for a shard lands
//!   after another node's write for it under a newer epoch (a late write
//!   undoes the new owner's). The one exception is a node evicted on the
//!   peers' word, whose lease may still run: its late write must be
//!   repaired by the new owner's read-back once that lease is over, and a
//!   late write that still stands then is a violation;
//! - (b) **convergence**: once faults stop, within the convergence bound
//!   every shard some live node serves has a live owner that serves it, and
//!   its route in every table a live node maintains points at that owner;
//!   a shard no live node serves has neither item nor routes (retired);
//! - (c) **minimal moves**: when a node crashes or drains in a quiet fleet,
//!   only its shards move (a `kill -9` restart that peers find dead: at
//!   most twice as many and one, its own, its new share and a hand-off
//!   between survivors); when an agent restarts
//!   (gracefully, or not while peers do not probe), the
//!   table is lost and re-created, an item is deleted, broken or marked dead
//!   by hand, nothing moves and no route changes;
//! - (d) **stability**: in steady state nothing moves;
//! - (e) **epochs never go back**: a shard's epoch in the table never falls
//!   below one a live node remembers, even across deleted items and a
//!   re-created table;
//! - (f) **a drained node takes no traffic with it**: when a node reports
//!   its drain done, no route in a table that answers points at it, and no
//!   route write lands pointing at it afterwards;
//! - (g) **a crash's shards are taken over together**: when a node crashes
//!   in a quiet fleet and nothing else strikes until its shards are owned
//!   again, the last of them has a live owner at most
//!   [`Checker::takeover_spread`] after the first. The survivors learn of
//!   the death within a read of each other and decide on the same map: a
//!   shard left for one survivor's next periodic re-read is a split view;
//! - (h) **a put never restarts a counter**: a registration (an item
//!   written anew after a loss included) puts a counter above every value
//!   its incarnation's item showed before the put was sent, or a takeover
//!   conditioned on a counter seen standing still could pass against a
//!   live node.
//!
//! It also measures: moves per event against the minimum, and the time from
//! each crash until the dead node's shards are owned and routed again.
//!
//! Here: (a) after each event, (b)–(f) and (h), and the fault windows that
//! measure moves; `landed` checks (a) on the writes that land in EC2,
//! `recovery` follows each crash to its restoration and checks (g), and
//! `live` is the view of the running nodes they share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod landed;
mod live;
mod recovery;

use super::faults::Fault;
use super::writers::Writers;
use super::{SimConfig, Status, World};
use crate::machine::EVICTION_RECHECK_SLACK;
use crate::time::Instant;
use crate::types::{Epoch, NodeId, ShardId};
use landed::{LateWrite, LATE_WRITE_REPAIR};
use live::{live_node, LiveView};
use recovery::Recovery;

/// Violations beyond this many are counted, not listed.
const MAX_LISTED_VIOLATIONS: usize = 20;
/// A fault counts as "in a quiet fleet" if nothing moved for this long
/// before it and no other fault overlaps its window.
const QUIET_BEFORE: Duration = Duration::from_secs(5);
/// A route may trail a fresh change of owner by this long (the push is in
/// flight) at the convergence check.
const ROUTE_GRACE: Duration = Duration::from_secs(1);
/// Moves caused by one fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMoves {
    pub kind: &'static str,
    pub node: String,
    pub at: Duration,
    pub actual: usize,
    pub minimum: usize,
    /// No other fault or move disturbed the window: the numbers mean what
    /// they say.
    pub clean: bool,
}

/// From a crash until the dead node's shards are all owned by live nodes
/// and routed to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashRecovery {
    pub node: String,
    pub shards: usize,
    pub took: Option<Duration>,
    /// How long each of its shards took until first seen owned and routed
    /// again, in that order (a shard no live node serves any more counts
    /// once that is seen).
    pub per_shard: Vec<Duration>,
}

/// What `LiveView::served_by_owner` depends on, summed up: when none of it moved
/// since the last look, neither has the answer. Shard owners, route
/// targets, and which nodes run.
type ServedInputs = (u64, u64, usize, usize);

struct Window {
    kind: &'static str,
    node: NodeId,
    opened: Instant,
    closes: Instant,
    owned: BTreeSet<ShardId>,
    moved: BTreeSet<ShardId>,
    /// Route target changes when the window opened, for windows that must
    /// not change any.
    route_changes_at_open: Option<u64>,
    clean: bool,
}

pub struct Checker {
    /// Who may write each shard, for the one-writer check.
    writers: Writers,
    bound: Duration,
    /// How long after a fault the fleet has noticed it (its route writes
    /// may still be under way: [`settled`] looks at those).
    settle: Duration,
    faults_end: Instant,
    window_length: Duration,
    steady_from: Instant,
    pub violations: Vec<String>,
    violation_count: usize,
    pub moves: u64,
    owners: BTreeMap<ShardId, (Option<NodeId>, Epoch)>,
    table_epoch: BTreeMap<ShardId, Epoch>,
    changed_at: BTreeMap<ShardId, Instant>,
    last_move_at: Option<Instant>,
    /// When the last fault so far ends (a fault with a length, such as a
    /// node cut off from its peers, moves shards again when it heals).
    last_fault_end: Option<Instant>,
    windows: Vec<Window>,
    pub event_moves: Vec<EventMoves>,
    recoveries: Vec<Recovery>,
    /// What the open recoveries were last checked against.
    recoveries_checked: Option<ServedInputs>,
    /// Whether the fleet was settled at this instant (many faults may
    /// strike at once, as when an AZ is lost).
    settled_at: Option<(Instant, bool)>,
    /// When each change of owner happened, over the whole run.
    pub move_times: Vec<Instant>,
    pub crash_recoveries: Vec<CrashRecovery>,
    converged_checked: bool,
    shards_version_seen: u64,
    /// How many shard writes [`Self::track_moves`] has looked at.
    shard_writes_seen: usize,
    /// How many landed route writes have been checked.
    landed_checked: usize,
    /// How many counters that came back have been reported.
    counters_back_checked: usize,
    /// The newest epoch each node's writes for each shard landed with.
    landed_epochs: BTreeMap<ShardId, BTreeMap<usize, Epoch>>,
    /// How many drained exits have been checked.
    drained_checked: usize,
    /// Whether nodes probe each other (a `kill -9` restart may then move
    /// the node's shards, as a crash does).
    peers: bool,
    late_writes: Vec<LateWrite>,
    /// Late writes of evicted incarnations seen landing, over the run.
    pub late_writes_seen: usize,
    /// From an eviction until a late write of the evicted node must be
    /// repaired.
    late_write_bound: Duration,
    /// How much longer when the shard has moved on from the node that took
    /// it: a reconcile, and the repair through the pacing.
    late_write_extension: Duration,
    /// (g): the most a clean crash's first and last takeovers may lie apart.
    pub takeover_spread: Duration,
}

impl Checker {
    pub fn new(config: &SimConfig) -> Self {
        let faults_end = Instant::ZERO + config.faults_end();
        let bound = config.convergence_bound();
        let lease = config.longest_lease();
        // The node that took an evicted node's shards may have twice its
        // share of routes to write (its own just taken, and these) through
        // its pacing before the repair's turn.
        let share = (config.shards * config.route_tables).div_ceil(config.nodes.max(1)) * 2;
        let share_writes = Duration::from_secs_f64(share as f64 / config.pacing.calls_per_second);
        Self {
            writers: Writers::default(),
            bound,
            settle: lease.lease_ttl + lease.scan_interval * 2 + lease.reconcile_interval,
            faults_end,
            // A cold fleet without peer probes hears of an expiry at a
            // watch, and of the eviction at the next one.
            window_length: lease.lease_ttl * 2
                + lease.scan_interval * 4
                + config.latency_max * 4
                + if lease.cold_reads {
                    lease.watch_interval * 2
                } else {
                    Duration::ZERO
                },
            steady_from: faults_end + bound + config.cooldown / 2,
            violations: Vec::new(),
            violation_count: 0,
            moves: 0,
            owners: BTreeMap::new(),
            table_epoch: BTreeMap::new(),
            changed_at: BTreeMap::new(),
            last_move_at: None,
            last_fault_end: None,
            windows: Vec::new(),
            event_moves: Vec::new(),
            recoveries: Vec::new(),
            recoveries_checked: None,
            settled_at: None,
            move_times: Vec::new(),
            crash_recoveries: Vec::new(),
            converged_checked: false,
            shards_version_seen: u64::MAX,
            shard_writes_seen: 0,
            landed_checked: 0,
            counters_back_checked: 0,
            landed_epochs: BTreeMap::new(),
            drained_checked: 0,
            peers: config.peers.is_some(),
            late_writes: Vec::new(),
            late_writes_seen: 0,
            late_write_bound: lease.lease_ttl + EVICTION_RECHECK_SLACK + LATE_WRITE_REPAIR + share_writes,
            late_write_extension: lease.reconcile_interval + bound,
            // Each survivor acts on its first read after the eviction: a
            // scan apart at most, plus the calls' round trips. A shard left
            // for the periodic re-read of a node that still sees orphans
            // comes back four scans later. Without peer probes, a cold
            // fleet hears of the expiry from the dead node's watcher, and
            // the others at their next watch.
            takeover_spread: lease.scan_interval * 2
                + config.latency_max * 4
                + if lease.cold_reads && config.peers.is_none() {
                    lease.watch_interval * 2
                } else {
                    Duration::ZERO
                },
        }
    }

    fn violation(&mut self, text: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED_VIOLATIONS {
            self.violations.push(text);
        }
    }

    pub(crate) fn after_event(&mut self, world: &World) {
        let now = world.now;
        self.check_one_writer(world);
        self.check_drained(world);
        self.check_landed_writes(world);
        for text in world.counters_back.iter().skip(self.counters_back_checked) {
            self.violation(format!("(h) {text}"));
        }
        self.counters_back_checked = world.counters_back.len();
        if world.changed && world.table.shards_version() != self.shards_version_seen {
            self.shards_version_seen = world.table.shards_version();
            self.track_moves(world);
        }
        self.close_windows(world);
        self.track_recoveries(world);
        if !self.converged_checked && now >= self.faults_end + self.bound {
            self.converged_checked = true;
            self.check_converged(world, "after faults stopped", ROUTE_GRACE);
        }
    }

    pub(crate) fn at_end(&mut self, world: &World) {
        let now = world.now;
        for window in std::mem::take(&mut self.windows) {
            self.finish_window(window, world);
        }
        self.check_converged(world, "at the end", Duration::ZERO);
        if self.last_move_at.is_some_and(|t| t >= self.steady_from) {
            self.violation(format!(
                "(d) a shard moved in steady state, at {}",
                self.last_move_at.unwrap_or(now)
            ));
        }
        for recovery in std::mem::take(&mut self.recoveries) {
            self.check_takeover_spread(&recovery);
            self.crash_recoveries.push(CrashRecovery {
                node: recovery.node.to_string(),
                shards: recovery.shards.len(),
                took: recovery.took,
                per_shard: recovery.per_shard,
            });
        }
        if self.violation_count > self.violations.len() {
            let more = self.violation_count - self.violations.len();
            self.violations.push(format!("... and {more} more"));
        }
    }

    /// Only a node that just stepped can have gained the right to write a
    /// shard (the right is lost, never gained, with time alone).
    fn check_one_writer(&mut self, world: &World) {
        let now = world.now;
        // An evicted incarnation may still write until its lease is over;
        // its late writes are checked where they land.
        let evicted = |n: &super::SimNode| {
            !world.evictions.is_empty() && world.evictions.contains_key(&(n.id().clone(), n.machine.setup().inc))
        };
        let writing = |n: &super::SimNode, shard| {
            matches!(n.status, Status::Running | Status::Paused { .. })
                && n.machine.may_write(shard, now)
                && !evicted(n)
        };
        for &stepped in &world.stepped {
            self.writers.update(stepped, &world.nodes[stepped].machine);
        }
        for &stepped in &world.stepped {
            let node = &world.nodes[stepped];
            for (shard, _) in node.machine.held() {
                if !writing(node, shard) {
                    continue;
                }
                let others: Vec<&NodeId> = self
                    .writers
                    .of(shard, now)
                    .into_iter()
                    .filter(|i| *i != stepped && writing(&world.nodes[*i], shard))
                    .map(|i| world.nodes[i].id())
                    .collect();
                if !others.is_empty() {
                    self.violation(format!(
                        "(a) at {now} shard {shard} has writers {} and {others:?}",
                        node.id()
                    ));
                }
            }
        }
    }

    fn check_drained(&mut self, world: &World) {
        for &(node, at) in &world.drained[self.drained_checked..] {
            let eni = world.nodes[node].eni();
            let stranded: Vec<String> = world
                .routes
                .all()
                .filter(|(table, _, target)| *target == eni && !world.ec2.table_fails(table, at))
                .map(|(table, vip, _)| format!("{vip} in {table}"))
                .collect();
            if !stranded.is_empty() {
                let id = world.nodes[node].id().clone();
                self.violation(format!(
                    "(f) at {at} {id} reported drained with routes pointing at it: {stranded:?}"
                ));
            }
        }
        self.drained_checked = world.drained.len();
    }

    fn track_moves(&mut self, world: &World) {
        // Only the shards written since the last look can have moved; in
        // shard order, as if every shard were looked at.
        let (written, all) = world.table.shards_written_since(self.shard_writes_seen);
        let mut written: Vec<ShardId> = written
            .iter()
            .copied()
            .filter(|s| world.all_shards.contains(s))
            .collect();
        written.sort_unstable();
        written.dedup();
        self.shard_writes_seen = all;
        for shard in written {
            let Some(record) = world.table.peek_shard(shard) else {
                continue;
            };
            let last = self.table_epoch.insert(shard, record.epoch);
            if last.is_some_and(|l| record.epoch < l) {
                let remembered = world
                    .nodes
                    .iter()
                    .filter(|n| n.is_live())
                    .map(|n| n.machine.remembered_epoch(shard))
                    .max()
                    .unwrap_or(0);
                if record.epoch < remembered {
                    let epoch = record.epoch;
                    self.violation(format!(
                        "(e) at {} shard {shard} went back to epoch {epoch}, below the {remembered} a live node remembers",
                        world.now
                    ));
                }
            }
            let now_owner = (record.owner.clone(), record.epoch);
            let before = self.owners.insert(shard, now_owner.clone());
            match before {
                Some((Some(old), _)) if now_owner.0.as_ref() != Some(&old) => {
                    self.moves += 1;
                    self.move_times.push(world.now);
                    self.last_move_at = Some(world.now);
                    self.changed_at.insert(shard, world.now);
                    for window in &mut self.windows {
                        window.moved.insert(shard);
                    }
                }
                None | Some((None, _)) if now_owner.0.is_some() => {
                    self.changed_at.insert(shard, world.now);
                }
                _ => {}
            }
        }
    }

    /// Opens the measurement window of a fault, on the world as it was just
    /// before the fault struck.
    pub(crate) fn before_fault(&mut self, world: &World, fault: &Fault) {
        let now = world.now;
        let quiet = self
            .last_fault_end
            .is_none_or(|t| now >= t && now.saturating_since(t) >= self.settle)
            && self
                .last_move_at
                .is_none_or(|t| now.saturating_since(t) >= QUIET_BEFORE)
            && self.settled_now(world);
        let end = now + fault.length();
        self.last_fault_end = Some(self.last_fault_end.map_or(end, |t| t.max(end)));
        for window in &mut self.windows {
            window.clean = false;
        }
        for recovery in &mut self.recoveries {
            if !recovery.unowned.is_empty() {
                recovery.clean = false;
            }
        }
        let (kind, node) = match fault {
            Fault::Crash { node } => ("crash", Some(*node)),
            Fault::Drain { node } => ("drain", Some(*node)),
            // Peers cannot tell `kill -9` from a crash: if the process is
            // down past the detection time, its shards move, as a crash's.
            Fault::Restart {
                node, graceful: false, ..
            } if self.peers => ("kill-restart", Some(*node)),
            Fault::Restart { node, .. } => ("restart", Some(*node)),
            Fault::TableLoss { .. } => ("table-loss", None),
            Fault::DeleteShardItem { .. } => ("delete-shard-item", None),
            Fault::DeleteNodeItem { node } => ("delete-node-item", Some(*node)),
            Fault::MarkDeadByHand { node } => ("mark-dead-by-hand", Some(*node)),
            Fault::JunkItem { .. } => ("junk-item", None),
            _ => return,
        };
        let id = match node {
            Some(node) => match world.nodes.get(node).filter(|n| n.is_live()) {
                Some(n) => n.id().clone(),
                None => return,
            },
            None => NodeId::new("-"),
        };
        // What the fault may move: a crashed or drained node's shards;
        // nothing for a restart or a table loss.
        let owned: BTreeSet<ShardId> = match kind {
            "crash" | "drain" | "kill-restart" => self
                .owners
                .iter()
                .filter(|(_, (o, _))| o.as_ref() == Some(&id))
                .map(|(s, _)| *s)
                .collect(),
            _ => BTreeSet::new(),
        };
        if kind == "crash" {
            self.recoveries.push(Recovery {
                node: id.clone(),
                at: now,
                shards: owned.clone(),
                pending: owned.clone(),
                per_shard: Vec::new(),
                took: None,
                unowned: owned.clone(),
                owned_at: Vec::new(),
                clean: quiet,
            });
            self.recoveries_checked = None;
        }
        let length = self.window_length + fault.length();
        self.windows.push(Window {
            kind,
            node: id,
            opened: now,
            closes: now + length,
            owned,
            moved: BTreeSet::new(),
            // Faults that must move nothing must not change a route either.
            route_changes_at_open: (!matches!(kind, "crash" | "drain" | "kill-restart"))
                .then(|| world.routes.counters().target_changes),
            clean: quiet,
        });
    }

    fn close_windows(&mut self, world: &World) {
        let now = world.now;
        if !self.windows.iter().any(|w| now >= w.closes) {
            return;
        }
        let (done, open): (Vec<Window>, Vec<Window>) = std::mem::take(&mut self.windows)
            .into_iter()
            .partition(|w| now >= w.closes);
        self.windows = open;
        for window in done {
            self.finish_window(window, world);
        }
    }

    fn finish_window(&mut self, w: Window, world: &World) {
        if w.clean {
            let extra: Vec<_> = w.moved.difference(&w.owned).collect();
            // A node killed and restarted past the detection time loses its
            // shards, as in a crash, and its new process is given a share
            // again; a takeover under way when it came back can cost the
            // survivors a hand-off each. At most twice its share, and one
            // more: the takers shared its shards among one member fewer
            // than the fleet it came back to, so one of them may end up
            // above the share of the fleet with it and hand a shard to
            // another survivor (operations seed 1087, once peers passed
            // suspicions on and every survivor took over in time).
            if w.kind == "kill-restart" {
                if w.moved.len() > 2 * w.owned.len() + 1 {
                    self.violation(format!(
                        "(c) kill-restart of {} at {} moved {} shards; it held {}",
                        w.node,
                        w.opened,
                        w.moved.len(),
                        w.owned.len()
                    ));
                }
            } else if !extra.is_empty() {
                self.violation(format!(
                    "(c) {} of {} at {} also moved shards {extra:?} that it did not own",
                    w.kind, w.node, w.opened
                ));
            }
            if let Some(before) = w.route_changes_at_open {
                let changes = world.routes.counters().target_changes - before;
                if changes > 0 {
                    self.violation(format!(
                        "(c) {} of {} at {} changed {changes} routes; it must change none",
                        w.kind, w.node, w.opened
                    ));
                }
            }
        }
        self.event_moves.push(EventMoves {
            kind: w.kind,
            node: w.node.to_string(),
            at: w.opened.as_offset(),
            actual: w.moved.len(),
            minimum: w.owned.len(),
            clean: w.clean,
        });
    }

    /// How many shards have moved so far, and whether the fleet is
    /// settled now (see [`settled`]).
    pub(crate) fn moves_and_settled(&mut self, world: &World) -> (u64, bool) {
        (self.moves, self.settled_now(world))
    }

    fn settled_now(&mut self, world: &World) -> bool {
        match self.settled_at {
            Some((at, settled)) if at == world.now => settled,
            _ => {
                let answer = settled(world);
                self.settled_at = Some((world.now, answer));
                answer
            }
        }
    }

    fn check_converged(&mut self, world: &World, when: &str, grace: Duration) {
        let now = world.now;
        let live = LiveView::of(world);
        for &shard in &world.all_shards {
            let owner = world.table.peek_shard(shard).and_then(|r| r.owner.clone());
            if !live.serves(shard) {
                let routes = world.routes.all().filter(|(_, v, _)| **v == shard.vip()).count();
                if world.table.peek_shard(shard).is_some() || routes > 0 {
                    self.violation(format!(
                        "(b) {when} ({now}): shard {shard}, which no live node serves, still has an item ({owner:?}) or {routes} routes"
                    ));
                }
                continue;
            }
            let Some(owner_index) = owner.as_ref().and_then(|o| live_node(world, o)) else {
                self.violation(format!(
                    "(b) {when} ({now}): shard {shard} has no live owner ({owner:?})"
                ));
                continue;
            };
            if !world.nodes[owner_index].serves(shard) {
                self.violation(format!(
                    "(b) {when} ({now}): shard {shard} is owned by {}, which does not serve it",
                    world.nodes[owner_index].id()
                ));
                continue;
            }
            if live.served_by_owner(world, shard) {
                continue;
            }
            let fresh = self
                .changed_at
                .get(&shard)
                .is_some_and(|t| now.saturating_since(*t) < grace);
            if !fresh {
                let owner_eni = world.nodes[owner_index].eni();
                self.violation(format!(
                    "(b) {when} ({now}): routes of shard {shard} do not all point to its owner's {owner_eni}"
                ));
            }
        }
    }
}

/// Every shard is where every live node's last plan wants it: no failover
/// or rebalancing is under way.
/// Every live node's targets are where the table says, no route work is
/// left, and every route points at its shard's owner: the last change has
/// played out in full.
fn settled(world: &World) -> bool {
    let live = LiveView::of(world);
    let routed = world
        .all_shards
        .iter()
        .all(|s| !live.serves(*s) || live.served_by_owner(world, *s));
    routed
        && world.nodes.iter().filter(|n| n.is_live()).all(|n| {
            n.machine.route_work_pending() == 0
                && n.machine
                    .target()
                    .iter()
                    .all(|(shard, to)| world.table.peek_shard(*shard).and_then(|r| r.owner.as_ref()) == Some(to))
        })
}

fn served_inputs(world: &World) -> ServedInputs {
    (
        world.table.shards_version(),
        world.routes.counters().target_changes,
        world.nodes.len(),
        world.nodes.iter().filter(|n| n.is_live()).count(),
    )
}
