//! A deterministic simulation of a whole fleet on virtual time.
//!
//! N [`Machine`]s run against one in-memory [`LeaseTable`] and one set of
//! [`RouteTables`]. Every store or route call is a pair of events: it is
//! applied after a random request latency and its result is delivered after
//! a random response latency, so calls overlap and race as they do for real.
//! Faults come from a schedule ([`faults`]); the invariants of the protocol
//! are checked after every event ([`check`]).
//!
//! Nodes may run different configurations ([`Variant`]: layout, route
//! tables, lease timings), at start or through [`Fault::Reconfigure`], as
//! during a rollout. Restarted nodes keep their id and get a new
//! incarnation.
//!
//! Modules: `config` (the fleet, timings, faults and sabotage a run is
//! given), `calls` (store calls and their timeouts), `throughput`
//! (DynamoDB's limits, for runs that opt in), `ec2` (the driver's route
//! calls and EC2's token bucket), `peers` (the network between nodes
//! and their detectors), `inject` (what each fault does), [`faults`] (the
//! faults and random schedules), [`check`] (the invariants), `writers` (who
//! may write each shard, for the checks), `queue` (the events by due time).
//!
//! Same seed, same run: the only randomness is a seeded `SmallRng`, and all
//! maps iterate in key order.

mod calls;
pub mod check;
mod config;
mod ec2;
pub mod faults;
mod inject;
mod peers;
mod probe;
mod queue;
mod throughput;
mod writers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::assign::AssignMemo;
use crate::fake::{LeaseTable, RouteCounters, RouteTables, TableCounters};
use crate::layout::ShardLayout;
use crate::machine::{Effect, ExitReason, Health, Input, Machine, NodeSetup, RouteCall};
use crate::peers::Message;
use crate::time::Instant;
use crate::types::{EniId, Incarnation, NodeId, NodeInfo, RouteTableId, ShardId, Vip};

pub use check::{Checker, CrashRecovery, EventMoves};
pub use config::{Sabotage, SimConfig};
pub use ec2::{
    Landed, ACCOUNT_BURST, ACCOUNT_REFILL_PER_SECOND, EC2_REQUEST_LEG_MICROS, SDK_BACKOFF_BASE, SDK_MAX_ATTEMPTS,
};
pub use faults::{random_schedule, rollout, Fault, Mix, ScheduledFault, Variant};
pub use probe::Probe;
pub use throughput::{StoreThroughput, UnitsPerSecond};

/// The port simulated nodes announce for peer probes.
const SIM_PEER_PORT: u16 = 7946;
/// How long an evicted agent takes to start over as a new incarnation.
const EVICTED_RESTART_DELAY: Duration = Duration::from_millis(50);
/// Assignments the machines of one simulation share: views drift apart
/// while claims land (a node counts its own claims in flight as held), so
/// a few at once are current.
const SHARED_ASSIGNMENTS: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    /// Every change of owner, over the whole run.
    pub moves: u64,
    pub event_moves: Vec<EventMoves>,
    pub crash_recoveries: Vec<CrashRecovery>,
    /// Calls, items and request units of the lease table.
    pub store: TableCounters,
    /// The lease table's size at the end, every item (what a Scan bills).
    pub table_bytes: u64,
    pub routes: RouteCounters,
    pub virtual_time: Duration,
    pub events_processed: u64,
    /// Nodes that exited, by reason.
    pub exits: BTreeMap<&'static str, usize>,
    /// Route writes that landed after a newer owner's while their writer
    /// (or the node they pointed at) was evicted but its lease ran: each
    /// must be repaired in time.
    pub late_writes_of_evicted: usize,
    /// Mutating EC2 attempts that reached a failing table
    /// ([`Fault::TableFails`]): when, and by which node.
    pub refused_by_failing_table: Vec<(Duration, usize)>,
    /// With [`SimConfig::trace`]: one line per machine event and fault.
    pub trace: Vec<String>,
    /// When each change of owner happened.
    pub move_times: Vec<Duration>,
    /// Shards each running node owns in the table at the end, by node id.
    pub owned_at_end: BTreeMap<String, usize>,
    /// With [`SimConfig::probe_every`]: the counters at each probe, and at
    /// the end.
    pub probes: Vec<Probe>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Paused {
        until: Instant,
    },
    /// Not running: crashed, stopped, or between a stop and its restart.
    Down,
    Departed,
}

pub(crate) struct SimNode {
    pub(crate) machine: Machine,
    pub(crate) status: Status,
    pub(crate) variant: Variant,
    /// Bumped at every restart: results of an older process are dropped.
    generation: u64,
    /// The incarnation of each generation's process.
    pub(crate) incarnations: Vec<Incarnation>,
    /// Results that arrived while paused, delivered on resume.
    inbox: Vec<Input>,
    /// The wake-up we have queued, so stale ones can be skipped.
    wake_at: Option<Instant>,
    /// Likewise for the peer detector.
    peer_wake_at: Option<Instant>,
    /// What the machine was last told: the peers' probes stopped reaching it.
    cut_off: bool,
    partitioned_until: Option<Instant>,
}

impl SimNode {
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.status, Status::Running)
    }
    pub(crate) fn id(&self) -> &NodeId {
        &self.machine.setup().info.id
    }
    pub(crate) fn eni(&self) -> &EniId {
        &self.machine.setup().info.eni
    }
    pub(crate) fn serves(&self, shard: ShardId) -> bool {
        self.machine.setup().layout.contains(shard)
    }
}

enum What {
    Wake(usize),
    /// A call reaches the store (or EC2).
    Apply {
        node: usize,
        generation: u64,
        effect: Effect,
        sent_at: Instant,
        call: u64,
    },
    /// Its result reaches the node, unless the call timed out first.
    Deliver {
        node: usize,
        generation: u64,
        input: Input,
        call: u64,
    },
    /// An attempt of a route call, as the driver makes it: fenced first.
    RouteAttempt {
        node: usize,
        generation: u64,
        call: u64,
        route: RouteCall,
        attempt: u32,
    },
    /// A transmitted attempt reaches EC2.
    RouteArrives {
        node: usize,
        generation: u64,
        call: u64,
        route: RouteCall,
        attempt: u32,
    },
    /// The driver gives up on a call: the node gets a timeout error, and
    /// whatever the call does later (it may still apply) it never hears of.
    TimedOut {
        node: usize,
        generation: u64,
        input: Input,
        call: u64,
    },
    Resume(usize),
    /// A stopped node's agent starts again.
    Start {
        node: usize,
        variant: Variant,
    },
    Healthy {
        node: usize,
        generation: u64,
    },
    RemoveJunk(String),
    Fault(usize),
    /// Read the counters into the report.
    Probe,
    /// A peer probe datagram reaches node `to`.
    Datagram {
        to: usize,
        message: Message,
    },
    /// Node's peer detector has a timer due.
    PeerWake(usize),
}

pub(crate) struct World {
    pub(crate) now: Instant,
    pub(crate) nodes: Vec<SimNode>,
    /// Each node's index, by id (a node keeps its id through restarts).
    pub(crate) node_index: BTreeMap<NodeId, usize>,
    pub(crate) table: LeaseTable,
    pub(crate) routes: RouteTables,
    tables: Vec<RouteTableId>,
    shards: usize,
    layouts: BTreeMap<u32, Arc<ShardLayout>>,
    /// Handed to every machine: nodes whose views agree compute their
    /// assignment once between them.
    assignments: AssignMemo,
    /// Every shard any layout in this run has served.
    pub(crate) all_shards: BTreeSet<ShardId>,
    store_down_until: Option<Instant>,
    table_missing_until: Option<Instant>,
    /// Store latency added for everyone (`None`) or one node, until when.
    slow_store: Vec<(Option<usize>, Duration, Instant)>,
    /// Latency added to one node's EC2 calls, until when.
    slow_ec2: Vec<(usize, Duration, Instant)>,
    /// A share of store calls fails, until when: (percent, until).
    flaky_store: Option<(u8, Instant)>,
    /// Calls whose answer the node still waits for.
    open_calls: BTreeSet<u64>,
    pub(crate) ec2: ec2::Ec2,
    store_throughput: Option<throughput::Throughput>,
    peers: peers::PeerNet,
    /// When each incarnation was first evicted.
    pub(crate) evictions: BTreeMap<(NodeId, Incarnation), Instant>,
    /// Each incarnation's item's counter as it rose: when, and to what.
    counters: BTreeMap<(NodeId, Incarnation), Vec<(Instant, u64)>>,
    /// Beats that showed a counter the item had shown before: (h).
    pub(crate) counters_back: Vec<String>,
    exits: BTreeMap<&'static str, usize>,
    /// Nodes that exited drained, and when: their ENI must not be a route
    /// target any more.
    pub(crate) drained: Vec<(usize, Instant)>,
    /// Nodes whose machine stepped during the current event: only they can
    /// have become a second writer.
    pub(crate) stepped: BTreeSet<usize>,
    /// The lease table or the routes changed during the current event.
    pub(crate) changed: bool,
    trace: Option<Vec<String>>,
    queue: queue::Agenda<What>,
    seq: u64,
    rng: SmallRng,
}

/// How far a run has got: for a caller that shows progress on a long run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub virtual_time: Duration,
    /// When the run will end (simulated).
    pub end: Duration,
    pub events: u64,
}

/// [`run_observed`] calls its observer once per this many events: often
/// enough for a line every few seconds, rarely enough to cost nothing.
const PROGRESS_EVERY_EVENTS: u64 = 1 << 12;

/// Runs one simulation to its end and reports what it saw.
pub fn run(config: &SimConfig) -> Report {
    run_observed(config, |_| {})
}

/// [`run`], telling `progress` how far it has got every so many events.
pub fn run_observed(config: &SimConfig, mut progress: impl FnMut(Progress)) -> Report {
    let mut world = World::new(config);
    let mut checker = Checker::new(config);
    for i in 0..config.nodes {
        let variant = config
            .variants
            .get(&i)
            .cloned()
            .unwrap_or_else(|| config.base_variant());
        world.add_node(config, i, variant);
    }
    for (i, fault) in config.faults.iter().enumerate() {
        world.schedule(Instant::ZERO + fault.at, What::Fault(i));
    }
    let faults_end = Instant::ZERO + config.faults_end();
    let mut end = faults_end + config.convergence_bound() + config.cooldown;
    if let Some(every) = config.probe_every.filter(|e| !e.is_zero()) {
        let mut at = Instant::ZERO;
        while at <= end {
            world.schedule(at, What::Probe);
            at = at + every;
        }
    }
    let mut probes = Vec::new();
    let mut events = 0u64;
    let mut quiet = config.end_once_settled_for.map(QuietWatch::new);
    while let Some((at, what)) = world.queue.pop() {
        if at > end {
            break;
        }
        world.now = at;
        if let What::Probe = what {
            probes.push(world.probe());
            if let Some(quiet) = quiet.as_mut().filter(|_| at >= faults_end) {
                let (moves, settled) = checker.moves_and_settled(&world);
                if quiet.long_enough(at, settled.then_some(moves)) {
                    end = at;
                    break;
                }
            }
            continue;
        }
        world.stepped.clear();
        world.changed = matches!(what, What::Apply { .. } | What::Fault(_) | What::RemoveJunk(_));
        if let What::Fault(i) = &what {
            checker.before_fault(&world, &config.faults[*i].fault);
        }
        world.handle(config, what);
        events += 1;
        checker.after_event(&world);
        if events.is_multiple_of(PROGRESS_EVERY_EVENTS) {
            progress(Progress {
                virtual_time: at.as_offset(),
                end: end.as_offset(),
                events,
            });
        }
    }
    world.now = end;
    checker.at_end(&world);
    if config.probe_every.is_some() && probes.last().is_none_or(|p: &Probe| p.at < end.as_offset()) {
        probes.push(world.probe());
    }
    let mut owned_at_end = BTreeMap::new();
    for node in world.nodes.iter().filter(|n| n.is_live()) {
        owned_at_end.insert(node.id().to_string(), 0);
    }
    for &shard in &world.all_shards {
        if let Some(owner) = world.table.peek_shard(shard).and_then(|r| r.owner.as_ref()) {
            if let Some(count) = owned_at_end.get_mut(owner.as_str()) {
                *count += 1;
            }
        }
    }
    Report {
        seed: config.seed,
        violations: checker.violations,
        moves: checker.moves,
        event_moves: checker.event_moves,
        crash_recoveries: checker.crash_recoveries,
        store: world.table.counters(),
        table_bytes: world.table.table_bytes(),
        routes: world.routes.counters(),
        virtual_time: end.as_offset(),
        events_processed: events,
        exits: world.exits.clone(),
        late_writes_of_evicted: checker.late_writes_seen,
        refused_by_failing_table: world
            .ec2
            .refused_by_failing_table
            .iter()
            .map(|(at, node)| (at.as_offset(), *node))
            .collect(),
        trace: world.trace.take().unwrap_or_default(),
        move_times: checker.move_times.iter().map(|t| t.as_offset()).collect(),
        owned_at_end,
        probes,
    }
}

/// Whether the fleet has been settled, with no shard moving, for `quiet`
/// (`SimConfig::end_once_settled_for`), as seen at the probes.
struct QuietWatch {
    quiet: Duration,
    /// Since when it has been settled, and how many moves it had then.
    since: Option<(Instant, u64)>,
}

impl QuietWatch {
    fn new(quiet: Duration) -> Self {
        Self { quiet, since: None }
    }

    /// At the probe at `at`: the moves so far if settled, `None` if not.
    fn long_enough(&mut self, at: Instant, settled_with_moves: Option<u64>) -> bool {
        self.since = match (settled_with_moves, self.since) {
            (None, _) => None,
            (Some(moves), Some((since, then))) if moves == then => Some((since, then)),
            (Some(moves), _) => Some((at, moves)),
        };
        self.since
            .is_some_and(|(since, _)| at.saturating_since(since) >= self.quiet)
    }
}

/// One leg (request or response) of a store call: a uniform share of
/// `[latency_min, latency_max] / 2`, or now and then the tail. Public so
/// that other models on this clock (the KCL baseline in `vipfleet-sim`)
/// draw their latencies the same way.
pub fn leg(rng: &mut SmallRng, config: &SimConfig) -> Duration {
    if let Some((probability, max)) = config.latency_tail {
        if rng.random_bool(probability) {
            return Duration::from_micros(rng.random_range(0..max.as_micros().max(1) as u64));
        }
    }
    let lo = config.latency_min.as_micros() as u64 / 2;
    let hi = (config.latency_max.as_micros() as u64 / 2).max(lo + 1);
    Duration::from_micros(rng.random_range(lo..hi))
}

/// The VIP of shard number `n` (10.200.0.0/16 holds 65k: plenty).
pub fn vip_of(n: usize) -> Vip {
    let n = n as u32;
    Vip::new(std::net::Ipv4Addr::new(10, 200, (n >> 8) as u8, (n & 0xff) as u8), 32)
        .unwrap_or_else(|_| unreachable!("a /32 has no host bits to reject"))
}

pub fn shard_of(n: usize) -> ShardId {
    ShardId::of(vip_of(n))
}

impl World {
    fn new(config: &SimConfig) -> Self {
        let tables: Vec<RouteTableId> = (0..config.route_tables)
            .map(|i| RouteTableId(format!("rtb-{i}")))
            .collect();
        Self {
            now: Instant::ZERO,
            nodes: Vec::new(),
            node_index: BTreeMap::new(),
            table: LeaseTable::default(),
            routes: RouteTables::new(tables.clone()),
            tables,
            shards: config.shards,
            layouts: BTreeMap::new(),
            assignments: AssignMemo::shared(SHARED_ASSIGNMENTS),
            all_shards: BTreeSet::new(),
            store_down_until: None,
            table_missing_until: None,
            slow_store: Vec::new(),
            slow_ec2: Vec::new(),
            flaky_store: None,
            open_calls: BTreeSet::new(),
            ec2: ec2::Ec2::limiting_from(Instant::ZERO + config.bucket_from),
            store_throughput: throughput::Throughput::new(config, Instant::ZERO + config.bucket_from),
            peers: peers::PeerNet::new(config.peers),
            evictions: BTreeMap::new(),
            counters: BTreeMap::new(),
            counters_back: Vec::new(),
            exits: BTreeMap::new(),
            drained: Vec::new(),
            stepped: BTreeSet::new(),
            changed: true,
            trace: config.trace.then(Vec::new),
            queue: queue::Agenda::default(),
            seq: 0,
            rng: SmallRng::seed_from_u64(config.seed),
        }
    }

    fn layout(&mut self, version: u32) -> Arc<ShardLayout> {
        let shards = self.shards;
        let layout = self
            .layouts
            .entry(version)
            .or_insert_with(|| {
                let start = version as usize;
                Arc::new(ShardLayout::from_shards((start..start + shards).map(shard_of)))
            })
            .clone();
        self.all_shards.extend(layout.ids());
        layout
    }

    fn schedule(&mut self, at: Instant, what: What) {
        self.seq += 1;
        self.queue.push(at, self.seq, what);
    }

    fn leg(&mut self, config: &SimConfig) -> Duration {
        leg(&mut self.rng, config)
    }

    /// Latency a slow store adds to the request of a store call of
    /// `node` (the path from the nodes to the store is the slow one).
    fn store_delay(&mut self, node: usize, store: bool) -> Duration {
        let now = self.now;
        let extra = self
            .slow_store
            .iter()
            .filter(|(who, _, until)| now < *until && who.is_none_or(|n| n == node))
            .map(|(_, latency, _)| *latency)
            .max()
            .unwrap_or_default();
        if !store || extra.is_zero() {
            return Duration::ZERO;
        }
        // Most of it: a delaying path with some jitter.
        extra.mul_f64(self.rng.random_range(0.8..1.0))
    }

    fn setup(&mut self, config: &SimConfig, index: usize, variant: &Variant) -> NodeSetup {
        let id = NodeId::new(format!("n{index:02}"));
        NodeSetup {
            info: NodeInfo {
                eni: EniId(format!("eni-{id}")),
                id,
                az: format!("az-{}", index % 3),
                addr: String::new(),
                weight: 1,
                version: "sim".into(),
            },
            inc: Incarnation(self.rng.random()),
            lease: variant.lease.clone(),
            layout: self.layout(variant.layout_version),
            route_tables: self.tables[..variant.route_tables.clamp(1, self.tables.len())].to_vec(),
            drain_timeout: Duration::from_secs(120),
            pacing: config.pacing,
            peer_port: config.peers.map(|_| SIM_PEER_PORT),
        }
    }

    fn machine(&mut self, config: &SimConfig, index: usize, variant: &Variant) -> Machine {
        let setup = self.setup(config, index, variant);
        let mut machine = Machine::new(setup, self.now);
        machine.share_assignments(self.assignments.clone());
        match config.sabotage {
            Some(Sabotage::BlindByReturnTimes) => machine.sabotage_blindness_by_return_times(),
            Some(Sabotage::DrainIgnoresRoutes) => machine.sabotage_drain_ignoring_routes(),
            Some(Sabotage::NoRecheckAfterEviction) => machine.sabotage_no_recheck_after_eviction(),
            Some(Sabotage::NoReclaim) => machine.sabotage_no_reclaim(),
            Some(Sabotage::ClaimsOnStaleView) => machine.sabotage_claims_on_stale_view(),
            Some(Sabotage::CountersRestart) => machine.sabotage_counters_restart(),
            _ => {}
        }
        machine
    }

    fn add_node(&mut self, config: &SimConfig, index: usize, variant: Variant) {
        let machine = self.machine(config, index, &variant);
        let machine_inc = machine.setup().inc;
        self.node_index.insert(machine.setup().info.id.clone(), index);
        self.nodes.push(SimNode {
            machine,
            status: Status::Running,
            variant,
            generation: 0,
            incarnations: vec![machine_inc],
            inbox: Vec::new(),
            wake_at: None,
            peer_wake_at: None,
            cut_off: false,
            partitioned_until: None,
        });
        self.boot(config, index);
    }

    /// A new agent process on node `index` (same id, new incarnation).
    fn restart(&mut self, config: &SimConfig, index: usize, variant: Variant) {
        let machine = self.machine(config, index, &variant);
        let node = &mut self.nodes[index];
        node.incarnations.push(machine.setup().inc);
        node.machine = machine;
        node.status = Status::Running;
        node.variant = variant;
        node.generation += 1;
        node.inbox.clear();
        node.wake_at = None;
        node.peer_wake_at = None;
        node.cut_off = false;
        self.boot(config, index);
    }

    /// What the agent's start-up tells a fresh machine: haproxy answers,
    /// the source/destination check is off.
    fn boot(&mut self, config: &SimConfig, index: usize) {
        let (id, inc) = {
            let setup = self.nodes[index].machine.setup();
            (setup.info.id.clone(), setup.inc)
        };
        let seed = self.rng.random();
        self.peers.start(index, &id, inc, seed);
        self.step(config, index, Input::Health(Health::Healthy));
        self.step(config, index, Input::SourceDestCheckOff(true));
    }

    fn handle(&mut self, config: &SimConfig, what: What) {
        match what {
            What::Wake(node) => {
                if self.nodes[node].wake_at == Some(self.now) && self.nodes[node].is_live() {
                    self.nodes[node].wake_at = None;
                    self.step(config, node, Input::Tick);
                }
            }
            What::Apply {
                node,
                generation,
                effect,
                sent_at,
                call,
            } => {
                if let Some(input) = self.apply(node, effect, sent_at, config.sabotage) {
                    let at = self.now + self.leg(config);
                    self.schedule(
                        at,
                        What::Deliver {
                            node,
                            generation,
                            input,
                            call,
                        },
                    );
                }
            }
            What::Deliver {
                node,
                generation,
                input,
                call,
            }
            | What::TimedOut {
                node,
                generation,
                input,
                call,
            } => {
                if self.open_calls.remove(&call) && self.nodes[node].generation == generation {
                    self.deliver(config, node, input);
                }
            }
            What::RouteAttempt {
                node,
                generation,
                call,
                route,
                attempt,
            } => self.route_attempt(config, node, generation, call, route, attempt),
            What::RouteArrives {
                node,
                generation,
                call,
                route,
                attempt,
            } => self.route_arrives(config, node, generation, call, route, attempt),
            What::Resume(node) => {
                if let Status::Paused { until } = self.nodes[node].status {
                    if until == self.now {
                        self.nodes[node].status = Status::Running;
                        for input in std::mem::take(&mut self.nodes[node].inbox) {
                            self.step(config, node, input);
                        }
                        self.step(config, node, Input::Tick);
                    }
                }
            }
            What::Start { node, variant } => {
                if self.nodes[node].status == Status::Down {
                    self.restart(config, node, variant);
                }
            }
            What::Healthy { node, generation } => {
                if self.nodes[node].generation == generation {
                    if let Some(d) = self.peers.detector(node) {
                        d.set_healthy(true);
                    }
                    self.deliver(config, node, Input::Health(Health::Healthy));
                }
            }
            What::Datagram { to, message } => {
                if self.nodes[to].is_live() {
                    let out = self.peers.receive(to, message, self.now);
                    self.peer_output(config, to, out);
                }
            }
            What::PeerWake(node) => {
                if self.nodes[node].peer_wake_at == Some(self.now) && self.nodes[node].is_live() {
                    self.nodes[node].peer_wake_at = None;
                    let out = self.peers.tick(node, self.now);
                    self.peer_output(config, node, out);
                }
            }
            What::RemoveJunk(key) => self.table.delete_junk(&key),
            What::Fault(i) => self.inject(config, &config.faults[i].fault),
            What::Probe => {}
        }
    }

    fn deliver(&mut self, config: &SimConfig, node: usize, input: Input) {
        match self.nodes[node].status {
            Status::Running => self.step(config, node, input),
            Status::Paused { .. } => self.nodes[node].inbox.push(input),
            Status::Down | Status::Departed => {}
        }
    }

    fn step(&mut self, config: &SimConfig, node: usize, input: Input) {
        let now = self.now;
        self.stepped.insert(node);
        let out = self.nodes[node].machine.step(input, now);
        if let Some(trace) = &mut self.trace {
            let id = self.nodes[node].id();
            for event in &out.events {
                trace.push(format!("{now} {id} {event:?}"));
            }
            for effect in &out.effects {
                // Node reads and heartbeats go out every scan and beat:
                // traced, they would drown the rest.
                if !matches!(effect, Effect::ReadNodes | Effect::Heartbeat(_)) {
                    trace.push(format!("{now} {id} -> {effect:?}"));
                }
            }
        }
        let generation = self.nodes[node].generation;
        for effect in out.effects {
            match effect {
                Effect::Exit(reason) => {
                    *self.exits.entry(reason.as_str()).or_default() += 1;
                    if reason == ExitReason::Drained {
                        self.drained.push((node, now));
                    }
                    self.nodes[node].status = match reason {
                        ExitReason::Drained | ExitReason::DrainTimedOut => Status::Departed,
                        ExitReason::Stopped | ExitReason::Superseded | ExitReason::Evicted => Status::Down,
                    };
                    if reason == ExitReason::Evicted {
                        // The agent starts over as a new incarnation.
                        let variant = self.nodes[node].variant.clone();
                        self.schedule(now + EVICTED_RESTART_DELAY, What::Start { node, variant });
                    } else if let Some(detector) = self.peers.detector(node) {
                        // An orderly exit: its lease decides, not the probes.
                        let out = detector.leave();
                        self.peer_output(config, node, out);
                    }
                }
                Effect::ChangeRoute(route) => {
                    self.seq += 1;
                    let call = self.seq;
                    self.open_calls.insert(call);
                    self.start_route_call(config, node, generation, call, route);
                }
                effect => {
                    self.seq += 1;
                    let call = self.seq;
                    self.open_calls.insert(call);
                    let lease = &self.nodes[node].machine.setup().lease;
                    if let Some((timeout, input)) = calls::timeout(&effect, lease, now) {
                        self.schedule(
                            now + timeout,
                            What::TimedOut {
                                node,
                                generation,
                                input,
                                call,
                            },
                        );
                    }
                    let at = now + self.leg(config) + self.store_delay(node, calls::is_store_call(&effect));
                    self.schedule(
                        at,
                        What::Apply {
                            node,
                            generation,
                            effect,
                            sent_at: now,
                            call,
                        },
                    );
                }
            }
        }
        if let Some(wake) = out.wake_at {
            let wake = wake.max(now + Duration::from_millis(1));
            if self.nodes[node].wake_at.is_none_or(|w| wake < w || w <= now) {
                self.nodes[node].wake_at = Some(wake);
                self.schedule(wake, What::Wake(node));
            }
        }
        if self.peers.enabled() && self.nodes[node].is_live() {
            let machine = &self.nodes[node].machine;
            self.peers.set_members(node, machine, now);
            self.schedule_peer_wake(node);
        }
    }
}
