//! The KCL baseline's discrete-event loop (the model: [`super`]).
//!
//! Every store call is three events, as in the core simulation: sent,
//! applied at the store after a request leg, answered after a response
//! leg. The store is one table of lease items, applied atomically per call.
//! Same seed, same run: one seeded `SmallRng`, ties broken by scheduling
//! order, every map a `BTreeMap`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vipfleet_core::fake::{RouteCounters, TableCounters};
use vipfleet_core::sim::{
    self, CrashRecovery, EventMoves, Fault, Probe, Report, SimConfig, ACCOUNT_BURST, ACCOUNT_REFILL_PER_SECOND,
    EC2_REQUEST_LEG_MICROS, SDK_BACKOFF_BASE, SDK_MAX_ATTEMPTS,
};
use vipfleet_core::units;

use super::taker::{self, Plan};
use super::{
    lease_item_bytes, scan_half_units, settle_bound, DISPATCH_POLL_INTERVAL, MAX_LEASES_TO_STEAL_AT_ONE_TIME,
    RENEW_INTERVAL, ROUTE_RETRY_PAUSE, TAKER_INTERVAL,
};

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
    RouteAttempt {
        w: usize,
        lease: usize,
        table: usize,
        attempt: u32,
    },
    RouteArrives {
        w: usize,
        lease: usize,
        table: usize,
        attempt: u32,
    },
    RouteAnswer {
        w: usize,
        lease: usize,
        table: usize,
        attempt: u32,
        landed: bool,
    },
    Fault(usize),
    Probe,
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
            refilled_at: Duration::ZERO,
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
            Ev::RenewAnswer { w, lease, counter } => {
                if let Some(worker) = self.workers.get_mut(w).filter(|x| x.alive) {
                    match counter {
                        Some(c) => {
                            if let Some(held) = worker.held.get_mut(&lease) {
                                *held = c;
                            }
                        }
                        // Someone took it: KCL drops the lease.
                        None => {
                            worker.held.remove(&lease);
                        }
                    }
                }
            }
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
            Ev::StartConsumer { w, lease } => {
                if self.holds(w, lease) {
                    for table in 0..self.routes.len() {
                        self.schedule(
                            self.now,
                            Ev::RouteAttempt {
                                w,
                                lease,
                                table,
                                attempt: 1,
                            },
                        );
                    }
                }
            }
            Ev::RouteAttempt {
                w,
                lease,
                table,
                attempt,
            } => {
                // The application writes a route only for a lease it holds.
                if self.holds(w, lease) {
                    let at = self.now + Duration::from_micros(self.rng.random_range(EC2_REQUEST_LEG_MICROS));
                    self.schedule(
                        at,
                        Ev::RouteArrives {
                            w,
                            lease,
                            table,
                            attempt,
                        },
                    );
                }
            }
            Ev::RouteArrives {
                w,
                lease,
                table,
                attempt,
            } => self.route_arrives(w, lease, table, attempt),
            Ev::RouteAnswer {
                w,
                lease,
                table,
                attempt,
                landed,
            } => {
                if !landed {
                    // Throttled: the SDK's next attempt after a jittered
                    // backoff, or the application's own retry.
                    let (at, attempt) = if attempt < SDK_MAX_ATTEMPTS {
                        let ceiling = SDK_BACKOFF_BASE * 2u32.pow(attempt - 1);
                        let backoff = Duration::from_micros(self.rng.random_range(0..=ceiling.as_micros() as u64));
                        (self.now + backoff, attempt + 1)
                    } else {
                        (self.now + ROUTE_RETRY_PAUSE, 1)
                    };
                    self.schedule(
                        at,
                        Ev::RouteAttempt {
                            w,
                            lease,
                            table,
                            attempt,
                        },
                    );
                }
            }
            Ev::Fault(i) => self.fault(i),
            Ev::Probe => self.probe(),
        }
    }

    fn holds(&self, w: usize, lease: usize) -> bool {
        self.workers
            .get(w)
            .is_some_and(|x| x.alive && x.held.contains_key(&lease))
    }

    /// The renewer's run (at a fixed rate): every held lease, in parallel.
    fn renew(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        let held: Vec<(usize, u64)> = self.workers[w].held.iter().map(|(&l, &c)| (l, c)).collect();
        for (lease, expected) in held {
            let at = self.now + self.leg();
            self.schedule(at, Ev::RenewArrives { w, lease, expected });
        }
        self.schedule(self.now + RENEW_INTERVAL, Ev::Renew { w });
    }

    fn renew_arrives(&mut self, w: usize, lease: usize, expected: u64) {
        let l = &self.leases[lease];
        let ok = l.owner == Some(w) && l.counter == expected;
        let counter = if ok {
            self.write(lease, w);
            Some(self.leases[lease].counter)
        } else {
            self.bill_failed_write(lease);
            None
        };
        let at = self.now + self.leg();
        self.schedule(at, Ev::RenewAnswer { w, lease, counter });
    }

    /// The taker's Scan reaches the table: read every item, decide.
    fn scan(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        let (pages, half) = scan_half_units(self.table_bytes);
        self.store.read_calls += pages;
        self.store.read_half_units += half;
        self.store.items_read += self.leases.len() as u64;
        let prev = self.workers[w].prev_scan.replace(self.now);
        // Unchanged since the previous Scan: unchanged for a taker
        // interval, longer than the failover time.
        let expired: Vec<usize> = match prev {
            Some(p) => self.by_change.range(..=(p, usize::MAX)).map(|&(_, l)| l).collect(),
            None => Vec::new(),
        };
        let mut expired_by_owner: BTreeMap<usize, usize> = BTreeMap::new();
        for &l in &expired {
            if let Some(o) = self.leases[l].owner {
                *expired_by_owner.entry(o).or_default() += 1;
            }
        }
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for (o, set) in self.owned.iter().enumerate() {
            let live = set.len() - expired_by_owner.get(&o).copied().unwrap_or(0);
            if live > 0 {
                counts.insert(o, live);
            }
        }
        counts.entry(w).or_insert(0);
        let chosen: Vec<usize> = match taker::plan(
            w,
            self.leases.len(),
            &counts,
            expired.len(),
            MAX_LEASES_TO_STEAL_AT_ONE_TIME,
        ) {
            Plan::Nothing => Vec::new(),
            Plan::TakeExpired(n) => {
                let mut expired = expired;
                expired.shuffle(&mut self.rng);
                expired.truncate(n);
                expired
            }
            Plan::Steal { from, count } => {
                let mut candidates: Vec<usize> = self.owned[from].iter().copied().collect();
                candidates.shuffle(&mut self.rng);
                candidates.truncate(count);
                candidates
            }
        };
        let takes = chosen
            .into_iter()
            .map(|lease| Take {
                lease,
                counter: self.leases[lease].counter,
                owner: self.leases[lease].owner,
            })
            .collect();
        self.workers[w].takes = takes;
        // The Scan's other pages, one after another, then its answer.
        let mut done = self.now + self.leg();
        for _ in 1..pages {
            done += self.leg() + self.leg();
        }
        self.schedule(done, Ev::ScanDone { w });
    }

    /// The taker's next take, or its next run a taker interval after this
    /// one ended (KCL schedules it with a fixed delay).
    fn next_take(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        match self.workers[w].takes.pop_front() {
            Some(take) => {
                let at = self.now + self.leg();
                self.schedule(at, Ev::TakeArrives { w, take });
            }
            None => self.schedule(self.now + TAKER_INTERVAL, Ev::Taker { w }),
        }
    }

    fn take_arrives(&mut self, w: usize, take: Take) {
        let l = &self.leases[take.lease];
        let ok = l.counter == take.counter && l.owner == take.owner;
        let counter = if ok {
            let before = l.owner;
            self.write(take.lease, w);
            if before.is_some_and(|b| b != w) {
                self.moved(before);
            }
            self.check_restored(take.lease);
            Some(self.leases[take.lease].counter)
        } else {
            self.bill_failed_write(take.lease);
            None
        };
        let at = self.now + self.leg();
        self.schedule(
            at,
            Ev::TakeAnswer {
                w,
                lease: take.lease,
                counter,
            },
        );
    }

    fn take_answered(&mut self, w: usize, lease: usize, counter: Option<u64>) {
        if !self.alive(w) {
            return;
        }
        if let Some(c) = counter {
            let worker = &mut self.workers[w];
            worker.held.insert(lease, c);
            // The consumer starts at the scheduler's next poll.
            let since = self.now.saturating_sub(worker.dispatch_phase).as_micros();
            let every = DISPATCH_POLL_INTERVAL.as_micros();
            let polls = since.div_ceil(every).max(1) as u32;
            let at = worker.dispatch_phase + DISPATCH_POLL_INTERVAL * polls;
            self.schedule(at.max(self.now), Ev::StartConsumer { w, lease });
        }
        self.next_take(w);
    }

    fn route_arrives(&mut self, w: usize, lease: usize, table: usize, attempt: u32) {
        let elapsed = self.now.saturating_sub(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * ACCOUNT_REFILL_PER_SECOND).min(ACCOUNT_BURST);
        self.refilled_at = self.now;
        let landed = self.tokens >= 1.0;
        if landed {
            self.tokens -= 1.0;
            self.route_counters.mutating_calls += 1;
            let target = &mut self.routes[table][lease];
            if *target != Some(w) {
                *target = Some(w);
                self.route_counters.target_changes += 1;
            }
            self.check_restored(lease);
        } else {
            self.throttled += 1;
        }
        let at = self.now + self.leg();
        self.schedule(
            at,
            Ev::RouteAnswer {
                w,
                lease,
                table,
                attempt,
                landed,
            },
        );
    }

    /// A successful conditional write: the counter goes up; a new owner
    /// counts an owner switch.
    fn write(&mut self, lease: usize, owner: usize) {
        let now = self.now;
        let l = &mut self.leases[lease];
        let before = l.bytes;
        self.by_change.remove(&(l.changed_at, lease));
        if l.owner != Some(owner) {
            if let Some(old) = l.owner {
                self.owned[old].remove(&lease);
            }
            self.owned[owner].insert(lease);
            l.owner = Some(owner);
            l.switches += 1;
        }
        l.counter += 1;
        l.changed_at = now;
        l.bytes = lease_item_bytes(&l.vip, l.counter, l.switches);
        let after = l.bytes;
        self.by_change.insert((now, lease));
        self.table_bytes = self.table_bytes - before + after;
        self.store.write_calls += 1;
        self.store.items_written += 1;
        self.store.write_units += units::write_units(before.max(after), false);
    }

    /// A failed condition costs what the write would have.
    fn bill_failed_write(&mut self, lease: usize) {
        self.store.write_calls += 1;
        self.store.write_units += units::write_units(self.leases[lease].bytes, false);
    }

    fn moved(&mut self, from: Option<usize>) {
        self.moves += 1;
        self.move_times.push(self.now);
        if let Some(&i) = from.and_then(|f| self.drained.get(&f)) {
            self.event_moves[i].actual += 1;
        }
    }

    /// A crashed worker's lease is back when a live worker owns it and
    /// every table routes it there.
    fn check_restored(&mut self, lease: usize) {
        let Some(&i) = self.restoring.get(&lease) else {
            return;
        };
        let Some(owner) = self.leases[lease].owner.filter(|&o| self.alive(o)) else {
            return;
        };
        if self.routes.iter().any(|t| t[lease] != Some(owner)) {
            return;
        }
        self.restoring.remove(&lease);
        let r = &mut self.recoveries[i];
        r.per_shard.push(self.now.saturating_sub(r.at));
        if r.per_shard.len() == r.shards {
            r.took = Some(self.now.saturating_sub(r.at));
        }
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
            store: self.store.clone(),
            routes: self.route_counters,
            ec2_throttled: self.throttled,
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
