//! The KCL baseline's discrete-event loop (the model: [`super`]): the
//! world, its events and faults, and the report; the lease calls are in
//! `leases`, the route calls in `routes`.
//!
//! Every store call is three events, as in the core simulation: sent,
//! applied at the store after a request leg, answered after a response
//! leg. The store is one table of lease items, applied atomically per call.
//! Same seed, same run: one seeded `SmallRng`, ties broken by scheduling
//! order, every map a `BTreeMap`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

mod leases;
mod routes;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vipfleet_core::fake::{RouteCounters, TableCounters};
use vipfleet_core::sim::{self, CrashRecovery, EventMoves, Fault, Probe, Report, SimConfig, ACCOUNT_BURST};

use super::{lease_item_bytes, settle_bound, DISPATCH_POLL_INTERVAL, RENEW_INTERVAL, TAKER_INTERVAL};

/// Lease counters start this high, as in a table that has run for days
/// (their digits count in the item's size).
const COUNTER_START: std::ops::Range<u64> = 100_000..1_000_000;
/// Leases listed by name in the end-of-run violations, at most.
const VIOLATIONS_LISTED: usize = 10;

/// A lease item in the table.
struct Lease {
    vip: String,
    owner: Option<usize>,
    counter: u64,
    switches: u64,
    /// When its counter last changed (a renewal or a take).
    changed_at: Duration,
    bytes: u64,
}

struct Worker {
    name: String,
    alive: bool,
    /// Leases the worker holds, with the counter its last write left.
    held: BTreeMap<usize, u64>,
    /// When the taker's previous Scan read the table.
    prev_scan: Option<Duration>,
    /// This taker run's takes still to make, one after another.
    takes: VecDeque<Take>,
    /// The scheduler's polls fall on this offset plus whole seconds.
    dispatch_phase: Duration,
}

/// A take as the taker planned it: the counter and owner its Scan showed
/// are the write's condition.
#[derive(Clone, Copy, Debug)]
struct Take {
    lease: usize,
    counter: u64,
    owner: Option<usize>,
}

#[derive(Debug)]
enum Ev {
    Renew {
        w: usize,
    },
    RenewArrives {
        w: usize,
        lease: usize,
        expected: u64,
    },
    RenewAnswer {
        w: usize,
        lease: usize,
        counter: Option<u64>,
    },
    Taker {
        w: usize,
    },
    ScanArrives {
        w: usize,
    },
    ScanDone {
        w: usize,
    },
    TakeArrives {
        w: usize,
        take: Take,
    },
    TakeAnswer {
        w: usize,
        lease: usize,
        counter: Option<u64>,
    },
    StartConsumer {
        w: usize,
        lease: usize,
    },
    RouteAttempt(Route),
    RouteArrives(Route),
    RouteAnswer {
        route: Route,
        landed: bool,
    },
    Fault(usize),
    Probe,
}

/// One attempt of a route call: worker `w` points `lease`'s VIP at its ENI
/// in route table `table`.
#[derive(Clone, Copy, Debug)]
struct Route {
    w: usize,
    lease: usize,
    table: usize,
    attempt: u32,
}

struct Scheduled {
    at: Duration,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A crashed worker's leases on their way back.
struct Recovery {
    node: String,
    at: Duration,
    shards: usize,
    per_shard: Vec<Duration>,
    took: Option<Duration>,
}

struct World<'a> {
    config: &'a SimConfig,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    rng: SmallRng,
    leases: Vec<Lease>,
    /// Every lease by when its counter last changed: the expired ones are a
    /// range of it.
    by_change: BTreeSet<(Duration, usize)>,
    /// The leases each worker owns in the table.
    owned: Vec<BTreeSet<usize>>,
    table_bytes: u64,
    store: TableCounters,
    workers: Vec<Worker>,
    /// Where each table routes each lease's VIP: to the ENI of this worker.
    routes: Vec<Vec<Option<usize>>>,
    route_counters: RouteCounters,
    tokens: f64,
    refilled_at: Duration,
    throttled: u64,
    recoveries: Vec<Recovery>,
    /// Leases of a crash not yet owned by a live worker and routed to it.
    restoring: BTreeMap<usize, usize>,
    moves: u64,
    move_times: Vec<Duration>,
    event_moves: Vec<EventMoves>,
    /// Drained workers, to their entry in `event_moves`.
    drained: BTreeMap<usize, usize>,
    probes: Vec<Probe>,
    violations: Vec<String>,
}

/// Runs the fleet of `config` (nodes, shards, route tables, latencies,
/// faults, probes) as KCL workers.
pub fn run(config: &SimConfig) -> Report {
    let mut world = World::new(config);
    let joins = config.faults.iter().filter(|f| f.fault == Fault::Join).count();
    let leaves = config
        .faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::Crash { .. } | Fault::Drain { .. }))
        .count();
    let last_nodes = (config.nodes + joins).saturating_sub(leaves).max(1);
    let end = config.faults_end()
        + settle_bound(config.shards.div_ceil(last_nodes))
        + config.bucket_allowance
        + config.cooldown;
    for (i, fault) in config.faults.iter().enumerate() {
        world.schedule(fault.at, Ev::Fault(i));
    }
    if let Some(every) = config.probe_every.filter(|e| !e.is_zero()) {
        let mut at = Duration::ZERO;
        while at <= end {
            world.schedule(at, Ev::Probe);
            at += every;
        }
    }
    let mut events = 0u64;
    while let Some(next) = world.queue.pop() {
        if next.at > end {
            break;
        }
        world.now = next.at;
        world.handle(next.ev);
        events += 1;
    }
    world.now = end;
    if config.probe_every.is_some() {
        world.probe();
    }
    world.report(end, events)
}

impl<'a> World<'a> {
    fn new(config: &'a SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x6b63_6c00);
        let nodes = config.nodes.max(1);
        let mut leases = Vec::with_capacity(config.shards);
        let mut owned = vec![BTreeSet::new(); nodes];
        let mut by_change = BTreeSet::new();
        let mut table_bytes = 0;
        // As KCL settles: each lease owned, spread evenly, routed.
        for i in 0..config.shards {
            let vip = sim::vip_of(i).to_string();
            let counter = rng.random_range(COUNTER_START);
            let switches = rng.random_range(1..20);
            let bytes = lease_item_bytes(&vip, counter, switches);
            table_bytes += bytes;
            owned[i % nodes].insert(i);
            by_change.insert((Duration::ZERO, i));
            leases.push(Lease {
                vip,
                owner: Some(i % nodes),
                counter,
                switches,
                changed_at: Duration::ZERO,
                bytes,
            });
        }
        let routes = (0..config.route_tables)
            .map(|_| (0..config.shards).map(|i| Some(i % nodes)).collect())
            .collect();
        let mut world = Self {
            config,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            leases,
            by_change,
            owned,
            table_bytes,
            store: TableCounters::default(),
            workers: Vec::new(),
            routes,
            route_counters: RouteCounters::default(),
            tokens: ACCOUNT_BURST,
            refilled_at: config.bucket_from,
            throttled: 0,
            recoveries: Vec::new(),
            restoring: BTreeMap::new(),
            moves: 0,
            move_times: Vec::new(),
            event_moves: Vec::new(),
            drained: BTreeMap::new(),
            probes: Vec::new(),
            violations: Vec::new(),
        };
        for w in 0..nodes {
            world.add_worker();
            let held = world.owned[w].iter().map(|&l| (l, world.leases[l].counter)).collect();
            world.workers[w].held = held;
        }
        world
    }

    /// A worker starts: its renewer and its taker run at once, then on
    /// their intervals. Those at start run at random phases.
    fn add_worker(&mut self) {
        let w = self.workers.len();
        let joining = self.now > Duration::ZERO;
        let phase = |rng: &mut SmallRng, every: Duration| {
            if joining {
                Duration::ZERO
            } else {
                Duration::from_micros(rng.random_range(0..every.as_micros() as u64))
            }
        };
        let renew_at = self.now + phase(&mut self.rng, RENEW_INTERVAL);
        let taker_at = self.now + phase(&mut self.rng, TAKER_INTERVAL);
        let dispatch_phase = Duration::from_micros(self.rng.random_range(0..DISPATCH_POLL_INTERVAL.as_micros() as u64));
        if self.owned.len() <= w {
            self.owned.push(BTreeSet::new());
        }
        self.workers.push(Worker {
            name: format!("n{w:02}"),
            alive: true,
            held: BTreeMap::new(),
            prev_scan: None,
            takes: VecDeque::new(),
            dispatch_phase,
        });
        self.schedule(renew_at, Ev::Renew { w });
        self.schedule(taker_at, Ev::Taker { w });
    }

    fn schedule(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, ev });
    }

    fn leg(&mut self) -> Duration {
        sim::leg(&mut self.rng, self.config)
    }

    fn alive(&self, w: usize) -> bool {
        self.workers.get(w).is_some_and(|x| x.alive)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Renew { w } => self.renew(w),
            Ev::RenewArrives { w, lease, expected } => self.renew_arrives(w, lease, expected),
            Ev::RenewAnswer { w, lease, counter } => self.renew_answered(w, lease, counter),
            Ev::Taker { w } => {
                if self.alive(w) {
                    let at = self.now + self.leg();
                    self.schedule(at, Ev::ScanArrives { w });
                }
            }
            Ev::ScanArrives { w } => self.scan(w),
            Ev::ScanDone { w } => self.next_take(w),
            Ev::TakeArrives { w, take } => self.take_arrives(w, take),
            Ev::TakeAnswer { w, lease, counter } => self.take_answered(w, lease, counter),
            Ev::StartConsumer { w, lease } => self.start_consumer(w, lease),
            Ev::RouteAttempt(route) => self.route_attempt(route),
            Ev::RouteArrives(route) => self.route_arrives(route),
            Ev::RouteAnswer { route, landed } => self.route_answered(route, landed),
            Ev::Fault(i) => self.fault(i),
            Ev::Probe => self.probe(),
        }
    }

    fn holds(&self, w: usize, lease: usize) -> bool {
        self.workers
            .get(w)
            .is_some_and(|x| x.alive && x.held.contains_key(&lease))
    }

    fn fault(&mut self, i: usize) {
        let fault = self.config.faults[i].fault.clone();
        match fault {
            Fault::Join => self.add_worker(),
            Fault::Crash { node } if self.alive(node) => {
                self.workers[node].alive = false;
                let index = self.recoveries.len();
                let leases: Vec<usize> = self.owned[node].iter().copied().collect();
                for &l in &leases {
                    self.restoring.insert(l, index);
                }
                self.recoveries.push(Recovery {
                    node: self.workers[node].name.clone(),
                    at: self.now,
                    shards: leases.len(),
                    per_shard: Vec::new(),
                    took: leases.is_empty().then_some(Duration::ZERO),
                });
            }
            // KCL (before 3.x) hands nothing off: a worker shut down stops
            // renewing, and its leases expire.
            Fault::Drain { node } if self.alive(node) => {
                self.workers[node].alive = false;
                self.drained.insert(node, self.event_moves.len());
                self.event_moves.push(EventMoves {
                    kind: "drain",
                    node: self.workers[node].name.clone(),
                    at: self.now,
                    actual: 0,
                    minimum: self.owned[node].len(),
                    clean: true,
                });
            }
            Fault::Crash { .. } | Fault::Drain { .. } => {}
            other => self
                .violations
                .push(format!("the KCL baseline does not model the fault {other:?}")),
        }
    }

    fn probe(&mut self) {
        let live_nodes = self.workers.iter().filter(|w| w.alive).count();
        self.probes.push(Probe {
            at: self.now,
            store: self.store,
            routes: self.route_counters,
            ec2_throttled: self.throttled,
            // The baseline's model draws from no DynamoDB limit.
            store_throttled: 0,
            live_nodes,
        });
    }

    fn report(mut self, end: Duration, events: u64) -> Report {
        // At the end every lease must be owned by a live worker and routed
        // to it in every table.
        let astray: Vec<&str> = (0..self.leases.len())
            .filter(|&l| {
                let owner = self.leases[l].owner.filter(|&o| self.alive(o));
                owner.is_none() || self.routes.iter().any(|t| t[l] != owner)
            })
            .map(|l| self.leases[l].vip.as_str())
            .collect();
        if !astray.is_empty() {
            let listed: Vec<&str> = astray.iter().take(VIOLATIONS_LISTED).copied().collect();
            self.violations.push(format!(
                "{} leases not owned by a live worker and routed to it at the end: {}",
                astray.len(),
                listed.join(", ")
            ));
        }
        let owned_at_end = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.alive)
            .map(|(i, w)| (w.name.clone(), self.owned[i].len()))
            .collect();
        Report {
            seed: self.config.seed,
            violations: self.violations,
            moves: self.moves,
            event_moves: self.event_moves,
            crash_recoveries: self
                .recoveries
                .into_iter()
                .map(|r| CrashRecovery {
                    node: r.node,
                    shards: r.shards,
                    took: r.took,
                    per_shard: r.per_shard,
                })
                .collect(),
            store: self.store,
            table_bytes: self.table_bytes,
            routes: self.route_counters,
            virtual_time: end,
            events_processed: events,
            move_times: self.move_times,
            owned_at_end,
            probes: self.probes,
            ..Report::default()
        }
    }
}
