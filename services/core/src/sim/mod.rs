//! A deterministic simulation of a whole fleet on virtual time.
//!
//! N [`Machine`]s run against one in-memory [`LeaseTable`] and one set of
//! [`RouteTables`]. Every store or route call is a pair of events: it is
//! applied after a random request latency and its result is delivered after
//! a random response latency, so calls overlap and race as they do for real.
//! Faults come from a schedule ([`faults`]); the invariants of the protocol
//! are checked after every event ([`check`]).
//!
//! Same seed, same run: the only randomness is a seeded `SmallRng`, and all
//! maps iterate in key order.

pub mod check;
pub mod faults;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::LeaseConfig;
use crate::fake::{LeaseTable, RouteCounters, RouteTables, TableCounters};
use crate::machine::{Effect, ExitReason, Input, Machine, Mode, NodeSetup};
use crate::routes::RouteError;
use crate::store::{StoreError, StoreErrorKind, StoreOp};
use crate::time::Instant;
use crate::types::{EniId, Incarnation, NodeId, NodeInfo, RouteTableId, ShardLayout, Vip};

pub use check::{Checker, CrashRecovery, EventMoves};
pub use faults::{random_schedule, Fault, ScheduledFault};

/// Ways to break the protocol on purpose, to prove the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Take over a shard on the shard's condition alone, without checking
    /// that its owner is still expired (or dead): a zombie that woke up and
    /// confirmed its shards loses them while it still writes routes.
    TakeoverWithoutNodeCheck,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub shards: usize,
    pub route_tables: usize,
    pub lease: LeaseConfig,
    /// Each call's request and response legs each take a uniform share of
    /// `[min, max] / 2`.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Time to settle before the first fault.
    pub warmup: Duration,
    pub faults: Vec<ScheduledFault>,
    /// Quiet time after the last fault ends, before the run stops.
    pub cooldown: Duration,
    pub sabotage: Option<Sabotage>,
    /// Record every machine event and fault in [`Report::trace`].
    pub trace: bool,
}

impl SimConfig {
    /// 5 nodes, 64 shards, 2 route tables, default lease, no faults.
    pub fn small(seed: u64) -> Self {
        Self {
            seed,
            nodes: 5,
            shards: 64,
            route_tables: 2,
            lease: LeaseConfig::DEFAULT,
            latency_min: Duration::from_millis(4),
            latency_max: Duration::from_millis(60),
            warmup: Duration::from_secs(10),
            faults: Vec::new(),
            cooldown: Duration::from_secs(40),
            sabotage: None,
            trace: false,
        }
    }

    /// Adds `count` random faults spread over `window` after the warm-up.
    pub fn with_random_faults(mut self, window: Duration, count: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ 0x5eed_fa17);
        self.faults = random_schedule(
            &mut rng,
            self.nodes,
            self.shards,
            &self.lease,
            self.warmup,
            window,
            count,
        );
        self
    }

    /// When the last fault has ended.
    pub fn faults_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.at + f.fault.length())
            .max()
            .unwrap_or(self.warmup)
            .max(self.warmup)
    }

    /// The promise of DESIGN.md: after faults stop, everything is owned by
    /// a live node with routes pointing at it within this long.
    pub fn convergence_bound(&self) -> Duration {
        self.lease.lease_ttl + self.lease.scan_interval * 2 + self.lease.reconcile_interval
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    /// Every change of owner, over the whole run.
    pub moves: u64,
    pub event_moves: Vec<EventMoves>,
    pub crash_recoveries: Vec<CrashRecovery>,
    pub store: TableCounters,
    pub routes: RouteCounters,
    pub virtual_time: Duration,
    pub events_processed: u64,
    /// With [`SimConfig::trace`]: one line per machine event and fault.
    pub trace: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Paused { until: Instant },
    Crashed,
    Departed,
}

pub(crate) struct SimNode {
    pub(crate) machine: Machine,
    pub(crate) status: Status,
    /// Results that arrived while paused, delivered on resume.
    inbox: Vec<Input>,
    /// The wake-up we have queued, so stale ones can be skipped.
    wake_at: Option<Instant>,
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
}

enum What {
    Wake(usize),
    /// A call reaches the store (or EC2).
    Apply {
        node: usize,
        effect: Effect,
        sent_at: Instant,
    },
    /// Its result reaches the node.
    Deliver {
        node: usize,
        input: Input,
    },
    Resume(usize),
    Fault(usize),
}

pub(crate) struct World {
    pub(crate) now: Instant,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) table: LeaseTable,
    pub(crate) routes: RouteTables,
    pub(crate) layout: ShardLayout,
    store_down_until: Option<Instant>,
    trace: Option<Vec<String>>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: BTreeMap<u64, What>,
    seq: u64,
    rng: SmallRng,
}

/// Runs one simulation to its end and reports what it saw.
pub fn run(config: &SimConfig) -> Report {
    let mut world = World::new(config);
    let mut checker = Checker::new(config);
    for i in 0..config.nodes {
        world.add_node(config, i);
    }
    for (i, fault) in config.faults.iter().enumerate() {
        world.schedule(Instant::ZERO + fault.at, What::Fault(i));
    }
    let end = Instant::ZERO + config.faults_end() + config.convergence_bound() + config.cooldown;
    let mut events = 0u64;
    while let Some(Reverse((at, seq))) = world.queue.pop() {
        if at > end {
            break;
        }
        world.now = at;
        let Some(what) = world.pending.remove(&seq) else {
            continue;
        };
        if let What::Fault(i) = &what {
            checker.before_fault(&world, &config.faults[*i].fault);
        }
        world.handle(config, what);
        events += 1;
        checker.after_event(&world);
    }
    world.now = end;
    checker.at_end(&world);
    Report {
        seed: config.seed,
        violations: checker.violations,
        moves: checker.moves,
        event_moves: checker.event_moves,
        crash_recoveries: checker.crash_recoveries,
        store: world.table.counters(),
        routes: world.routes.counters(),
        virtual_time: end.as_offset(),
        events_processed: events,
        trace: world.trace.take().unwrap_or_default(),
    }
}

fn vip_of(shard: usize) -> Vip {
    let n = shard as u32;
    // 10.200.0.0/16 holds 65k VIPs: plenty for any simulation.
    Vip::new(std::net::Ipv4Addr::new(10, 200, (n >> 8) as u8, (n & 0xff) as u8), 32)
        .unwrap_or_else(|_| unreachable!("a /32 has no host bits to reject"))
}

impl World {
    fn new(config: &SimConfig) -> Self {
        let vips: Vec<Vip> = (0..config.shards).map(vip_of).collect();
        let layout = ShardLayout {
            shards: vips
                .iter()
                .enumerate()
                .map(|(i, v)| (crate::ShardId(i as u32), vec![*v]))
                .collect(),
        };
        let tables = (0..config.route_tables).map(|i| RouteTableId(format!("rtb-{i}")));
        Self {
            now: Instant::ZERO,
            nodes: Vec::new(),
            table: LeaseTable::default(),
            routes: RouteTables::new(tables),
            layout,
            store_down_until: None,
            trace: config.trace.then(Vec::new),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(config.seed),
        }
    }

    fn schedule(&mut self, at: Instant, what: What) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, what);
    }

    fn leg(&mut self, config: &SimConfig) -> Duration {
        let lo = config.latency_min.as_micros() as u64 / 2;
        let hi = (config.latency_max.as_micros() as u64 / 2).max(lo + 1);
        Duration::from_micros(self.rng.random_range(lo..hi))
    }

    fn add_node(&mut self, config: &SimConfig, index: usize) {
        let id = NodeId::new(format!("n{index:02}"));
        let setup = NodeSetup {
            info: NodeInfo {
                id: id.clone(),
                eni: EniId(format!("eni-{id}")),
                az: format!("az-{}", index % 3),
                addr: String::new(),
                weight: 1,
                version: "sim".into(),
            },
            inc: Incarnation(self.rng.random()),
            lease: config.lease.clone(),
            layout: self.layout.clone(),
            route_tables: self.routes.table_ids(),
        };
        self.nodes.push(SimNode {
            machine: Machine::new(setup, self.now),
            status: Status::Running,
            inbox: Vec::new(),
            wake_at: None,
            partitioned_until: None,
        });
        self.step(config, index, Input::Tick);
    }

    fn handle(&mut self, config: &SimConfig, what: What) {
        match what {
            What::Wake(node) => {
                if self.nodes[node].wake_at == Some(self.now) && self.nodes[node].is_live() {
                    self.nodes[node].wake_at = None;
                    self.step(config, node, Input::Tick);
                }
            }
            What::Apply { node, effect, sent_at } => {
                if let Some(input) = self.apply(node, effect, sent_at, config.sabotage) {
                    let at = self.now + self.leg(config);
                    self.schedule(at, What::Deliver { node, input });
                }
            }
            What::Deliver { node, input } => self.deliver(config, node, input),
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
            What::Fault(i) => self.inject(config, &config.faults[i].fault),
        }
    }

    fn deliver(&mut self, config: &SimConfig, node: usize, input: Input) {
        match self.nodes[node].status {
            Status::Running => self.step(config, node, input),
            Status::Paused { .. } => self.nodes[node].inbox.push(input),
            Status::Crashed | Status::Departed => {}
        }
    }

    fn inject(&mut self, config: &SimConfig, fault: &Fault) {
        let now = self.now;
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{now} FAULT {fault:?}"));
        }
        let usable = |n: &usize, nodes: &Vec<SimNode>| {
            *n < nodes.len() && matches!(nodes[*n].status, Status::Running | Status::Paused { .. })
        };
        match fault {
            Fault::Crash { node } if usable(node, &self.nodes) => self.nodes[*node].status = Status::Crashed,
            Fault::Pause { node, length } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                let until = now + *length;
                self.nodes[*node].status = Status::Paused { until };
                self.schedule(until, What::Resume(*node));
            }
            Fault::Partition { node, length } if usable(node, &self.nodes) => {
                self.nodes[*node].partitioned_until = Some(now + *length);
            }
            Fault::StoreOutage { length } => self.store_down_until = Some(now + *length),
            Fault::Join => {
                let index = self.nodes.len();
                self.add_node(config, index);
            }
            Fault::Drain { node } if usable(node, &self.nodes) && self.nodes[*node].is_live() => {
                self.step(config, *node, Input::SetMode(Mode::Draining));
            }
            Fault::RouteDrift { shard, to_node } if *to_node < self.nodes.len() => {
                let eni = self.nodes[*to_node].eni().clone();
                if let Some(table) = self.routes.table_ids().first() {
                    self.routes.set_by_hand(table, vip_of(*shard), &eni);
                }
            }
            _ => {}
        }
    }

    fn step(&mut self, config: &SimConfig, node: usize, input: Input) {
        let now = self.now;
        let out = self.nodes[node].machine.step(input, now);
        if let Some(trace) = &mut self.trace {
            let id = self.nodes[node].id();
            for event in &out.events {
                trace.push(format!("{now} {id} {event:?}"));
            }
            for effect in &out.effects {
                if !matches!(effect, Effect::ReadNodes | Effect::ReadShards | Effect::Heartbeat(_)) {
                    trace.push(format!("{now} {id} -> {effect:?}"));
                }
            }
        }
        for effect in out.effects {
            match effect {
                Effect::Exit(reason) => {
                    self.nodes[node].status = match reason {
                        ExitReason::Drained => Status::Departed,
                        ExitReason::Superseded => Status::Crashed,
                    };
                }
                effect => {
                    let at = now + self.leg(config);
                    self.schedule(
                        at,
                        What::Apply {
                            node,
                            effect,
                            sent_at: now,
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
    }

    /// Performs a call against the store or the route tables at `self.now`.
    fn apply(&mut self, node: usize, effect: Effect, sent_at: Instant, sabotage: Option<Sabotage>) -> Option<Input> {
        let now = self.now;
        let store_down = self.store_down_until.is_some_and(|t| now < t)
            || self.nodes[node].partitioned_until.is_some_and(|t| now < t);
        let down = |op| StoreError::new(op, StoreErrorKind::Unavailable, "simulated outage");
        Some(match effect {
            Effect::Heartbeat(req) => {
                let result = if store_down {
                    Err(down(StoreOp::Heartbeat))
                } else {
                    Ok(self.table.heartbeat(&req))
                };
                Input::Heartbeat { sent_at, result }
            }
            Effect::ReadNodes => Input::Nodes {
                sent_at,
                result: if store_down {
                    Err(down(StoreOp::ReadNodes))
                } else {
                    Ok(self.table.read_nodes())
                },
            },
            Effect::ReadShards => Input::Shards {
                sent_at,
                result: if store_down {
                    Err(down(StoreOp::ReadShards))
                } else {
                    Ok(self.table.read_shards())
                },
            },
            Effect::ConfirmShard(shard) => Input::Confirmed {
                shard,
                sent_at,
                result: if store_down {
                    Err(down(StoreOp::ReadShard))
                } else {
                    Ok(self.table.read_shard(shard))
                },
            },
            Effect::Acquire(req) => Input::Acquired {
                shard: req.shard,
                sent_at,
                result: match (store_down, sabotage) {
                    (true, _) => Err(down(StoreOp::Acquire)),
                    (false, Some(Sabotage::TakeoverWithoutNodeCheck)) => {
                        Ok(self.table.acquire_without_node_check(&req))
                    }
                    (false, None) => Ok(self.table.acquire(&req)),
                },
            },
            Effect::HandOff(req) => Input::HandedOff {
                shard: req.shard,
                result: if store_down {
                    Err(down(StoreOp::Handoff))
                } else {
                    Ok(self.table.hand_off(&req))
                },
            },
            Effect::MarkDead(req) => Input::MarkedDead {
                node: req.node.clone(),
                result: if store_down {
                    Err(down(StoreOp::MarkDead))
                } else {
                    Ok(self.table.mark_dead(&req))
                },
            },
            Effect::WriteRoutes(req) => {
                let mut failed = Vec::new();
                for table in &req.tables {
                    for vip in &req.vips {
                        if let Err(e) = point_route_now(&mut self.routes, table, *vip, &req.eni) {
                            failed.push(e);
                        }
                    }
                }
                Input::RoutesWritten {
                    shard: req.shard,
                    eni: req.eni,
                    failed,
                }
            }
            Effect::DescribeRoutes(tables) => Input::RoutesDescribed {
                result: self.routes.describe(&tables),
            },
            Effect::Exit(_) => return None,
        })
    }
}

/// [`crate::routes::point_route`] for the synchronous route tables.
fn point_route_now(routes: &mut RouteTables, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
    match routes.replace(table, vip, eni) {
        Err(RouteError::NoRoute { .. }) => routes.create(table, vip, eni),
        other => other,
    }
}
