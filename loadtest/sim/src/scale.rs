//! Scale scenarios: one seed of a large fleet through one event, measured.
//!
//! `vipfleet-sim --nodes N --shards S --route-tables R --scenario NAME
//! --seed K --report FILE.json` starts the fleet, lets it form, watches it
//! at rest for `--rest-window` seconds, then strikes:
//!
//! - `steady`: nothing, for [`STEADY_WATCH`]; nothing may move;
//! - `crash`: one node is killed;
//! - `az-loss`: every node of one AZ (a third of them) at once;
//! - `scale-out`: 10 % more nodes join at once;
//! - `rolling`: every node is replaced, one by one, as an instance refresh
//!   does (a new node joins, then the old one drains).
//!
//! The report ([`ScaleReport`]) gives restoration times over the lost
//! shards, shards moved against the minimum the event forces, DynamoDB
//! units per second at rest and during the event (and their monthly cost),
//! EC2's mutating calls and bucket refusals, and how much faster than real
//! time the simulation ran. [`ScaleReport::broken_promises`] lists what
//! falls short of the promises, for CI to assert.
//!
//! The fleet an event strikes formed long ago, so its start is not what a
//! scale run measures, and two pieces of the model are cheaper here than in
//! the other simulations (the defaults of `SimConfig` keep them off):
//!
//! - **a formed start** (`SimConfig::bucket_from`): until the rest window
//!   the account's EC2 bucket refuses nothing, so the start-up's route
//!   writes (20,000 at 10,000 shards and two tables: over an hour at 5 a
//!   second) go at each node's own pacing; from the rest window on the
//!   bucket is full (50) and refills at 5 a second, as always. The rest
//!   window, the event and everything after are modelled as elsewhere, and
//!   the report's timeline says so (`start`, `bucket_from_s`);
//! - **prompt datagrams** (`SimConfig::prompt_datagrams`): a peer datagram
//!   on an intact link to a running node is handled within the event that
//!   sent it, not 0.2 to 2 ms later as an event of its own. A probe of a
//!   healthy peer is answered inside its round's first event, long before
//!   its 50 ms ack timeout, as it would be anyway; probes of a crashed
//!   node and every datagram on a cut or lossy link go as before, so a
//!   crash is detected within the same bound.
//!
//! `--system kcl` runs the same scenario, on the same fault schedule,
//! latencies and EC2 bucket, as a KCL-style fleet of per-shard leases
//! ([`crate::kcl`]) and measures it with the same code, into the same
//! report: the two can be tabulated side by side. It starts formed too:
//! leases spread and routes written, the same bucket from its rest window.

use std::time::{Duration, Instant};

use serde::Serialize;
use vipfleet_core::cost::{self, Fleet, ItemSizes, UnitsPerSecond};
use vipfleet_core::machine::Pacing;
use vipfleet_core::sim::{self, Fault, Probe, Report, ScheduledFault, SimConfig, StoreThroughput};
use vipfleet_core::LeaseConfig;

use crate::kcl;

/// Start-up is done this long after each node could have written its
/// share of the routes: claims, read-backs, cold reads settling.
const STARTUP_SLACK: Duration = Duration::from_secs(60);
/// What a report's timeline says of the start.
pub const FORMED_START: &str = "formed: the fleet starts as if it had formed long ago; \
     its start-up route writes are not held back by the account's EC2 bucket, \
     which limits from the rest window on, full";
/// How long `steady` watches a fleet where nothing happens.
pub const STEADY_WATCH: Duration = Duration::from_secs(600);
/// Quiet time after the event's bound before the run ends.
const COOLDOWN: Duration = Duration::from_secs(30);
/// A run that is not `steady` ends once the fleet has been settled this
/// long after the event (`SimConfig::end_once_settled_for`), rather than at
/// the event's worst-case bound: at 1,000 nodes that bound is some 12
/// minutes past the last shard's return.
const SETTLED_QUIET: Duration = Duration::from_secs(30);
/// How often a long run says how far it has got (real time).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the world's counters are read.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Extra time for the last detail of a restoration, in the acceptance
/// bound (`detection + (calls - 50) / 5 s + 2 s`).
const RESTORATION_SLACK: Duration = Duration::from_secs(2);
/// From EC2 applying a route to the VPC's routers using it, for both
/// systems: a shard counts as restored this long after its last route
/// write landed. AWS documents no figure; this is an assumption, five
/// times the poll of the lab's route mirror, which stands in for it.
pub const ROUTE_PROPAGATION: Duration = Duration::from_millis(500);
/// At rest, write units per second may differ from one heartbeat per node
/// per interval by this much (layout items are re-put now and then).
const AT_REST_WRITES_TOLERANCE: f64 = 0.05;
/// A replaced node's shards may move at most this many times each.
const ROLLING_MOVES_PER_SHARD: usize = 2;

pub const SCALE_SCENARIOS: [&str; 5] = ["steady", "crash", "az-loss", "scale-out", "rolling"];

/// Which system runs the fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// vipfleet's agents: node heartbeats, the assignment, hand-offs.
    #[default]
    Vipfleet,
    /// The baseline: per-shard leases as the Kinesis Client Library keeps
    /// them, at its defaults ([`crate::kcl`]).
    Kcl,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Vipfleet => "vipfleet",
            System::Kcl => "kcl",
        }
    }
}

/// One scale run's shape.
#[derive(Clone, Debug)]
pub struct ScaleRun {
    pub system: System,
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub shards: usize,
    pub route_tables: usize,
    pub profile: &'static str,
    pub lease: LeaseConfig,
    pub rest_window: Duration,
    /// What the lease table sustains: a new on-demand table, unless a run
    /// lowers it to make a small fleet meet the limits a large one meets.
    pub throughput: StoreThroughput,
}

/// When things happen in a scale run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timeline {
    /// How the fleet starts: [`FORMED_START`].
    pub start: &'static str,
    /// The account's EC2 bucket limits mutating calls from here on, full
    /// (50 tokens, 5 a second); before it, it refused nothing.
    pub bucket_from_s: f64,
    /// Start-up done (routes written), at rest from here.
    pub rest_from_s: f64,
    /// The event strikes; the rest window ends.
    pub event_at_s: f64,
    pub end_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Restoration {
    /// Shards the lost nodes owned.
    pub shards: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
    /// Shards not owned and routed again by the end.
    pub unrestored: usize,
    /// Included in the times above ([`ROUTE_PROPAGATION`]).
    pub route_propagation_ms: u64,
    /// `lease detection + (route calls needed - burst) / refill + 2 s`.
    /// KCL promises no bound: its figure is the same sum with detection
    /// as two taker runs ([`kcl::detection_bound`]), what a lease takes
    /// when no take of it is lost to a race; not checked.
    pub bound_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Moves {
    /// Changes of owner from the event on.
    pub during_event: usize,
    /// Changes of owner during the rest window (must be none).
    pub at_rest: usize,
    /// What the event forces: the lost nodes' shards, the new nodes'
    /// share, or (rolling) every replaced node's shards.
    pub minimum: usize,
    /// `equal`, `at most` (twice the minimum, rolling) or `none`.
    pub rule: &'static str,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Units {
    pub window_s: f64,
    /// Calls per second (`None` for the model).
    pub read_calls_per_s: Option<f64>,
    pub write_calls_per_s: Option<f64>,
    pub read_units_per_s: f64,
    pub write_units_per_s: f64,
    pub usd_per_month_on_demand: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DynamoDb {
    pub at_rest: Units,
    /// What `cost.rs` predicts at rest for this fleet.
    pub at_rest_model: Units,
    /// The heartbeat writes alone: nodes / heartbeat interval (KCL: the
    /// lease renewals, shards / renew interval).
    pub heartbeat_write_units_per_s: f64,
    pub during_event: Option<Units>,
    /// Store calls refused for the table's throughput limits
    /// (`vipfleet_core::sim::StoreThroughput`, a new on-demand table), at
    /// rest and from the event on.
    pub throttled_calls_at_rest: u64,
    pub throttled_calls_event: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ec2 {
    pub mutating_calls_total: u64,
    pub mutating_calls_event: u64,
    /// Attempts the account's bucket refused during the event (the driver
    /// retries them).
    pub throttled_attempts_event: u64,
    /// How long the bucket alone holds the event's calls back:
    /// `(calls - 50) / 5` s.
    pub bucket_delay_s: f64,
    /// From the event until its last mutating call.
    pub calls_span_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Speed {
    pub simulated_s: f64,
    pub wall_s: f64,
    pub times_real_time: f64,
    pub events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// `vipfleet`, or `kcl` for the baseline.
    pub system: &'static str,
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub shards: usize,
    pub route_tables: usize,
    pub profile: &'static str,
    /// KCL: the renew interval.
    pub heartbeat_interval_ms: u64,
    /// KCL: the failover time.
    pub lease_ttl_ms: u64,
    pub timeline: Timeline,
    pub violations: Vec<String>,
    pub restoration: Option<Restoration>,
    pub moves: Moves,
    pub dynamodb: DynamoDb,
    pub ec2: Ec2,
    pub speed: Speed,
}

fn bucket_time(calls: usize) -> Duration {
    Duration::from_secs_f64((calls as f64 - sim::ACCOUNT_BURST).max(0.0) / sim::ACCOUNT_REFILL_PER_SECOND)
}

impl ScaleRun {
    /// Until the fleet has formed: the rest window starts here, and the
    /// account's bucket limits from here on ([`SimConfig::bucket_from`]).
    fn startup(&self) -> Duration {
        if self.system == System::Kcl {
            return kcl::STARTUP;
        }
        // Cold reads start a few leases after the last change; each node
        // then writes its share of the routes at its own pacing (the
        // account's bucket does not hold them back: the fleet formed long
        // ago).
        self.lease.lease_ttl * 4 + self.lease.watch_interval * 2 + self.pacing_time() + STARTUP_SLACK
    }

    /// How long a node's own pacing takes to write its share of the routes.
    fn pacing_time(&self) -> Duration {
        let pacing = Pacing::default();
        let share = self.shards.div_ceil(self.nodes) * self.route_tables;
        let paced = share.saturating_sub(pacing.burst as usize);
        Duration::from_secs_f64(paced as f64 / pacing.calls_per_second)
    }

    fn event_at(&self) -> Duration {
        self.startup() + self.rest_window
    }

    /// The nodes of the AZ that is lost (nodes are spread over three).
    fn lost_az(&self) -> Vec<usize> {
        let az = (self.seed % 3) as usize;
        (0..self.nodes).filter(|i| i % 3 == az).collect()
    }

    fn joining(&self) -> usize {
        self.nodes.div_ceil(10)
    }

    /// Between two replacements of a rolling refresh: the new node joins and
    /// takes its share, the old one drains (its hand-offs wait for peers to
    /// see it draining), and the routes go through the bucket.
    fn rolling_gap(&self) -> Duration {
        let share = self.shards.div_ceil(self.nodes) * self.route_tables * ROLLING_MOVES_PER_SHARD;
        match self.system {
            System::Vipfleet => {
                self.lease.lease_ttl * 4 + self.lease.watch_interval * 2 + bucket_time(share) + Duration::from_secs(20)
            }
            // The newcomer steals one lease per taker run, then the old
            // worker's leases expire and are taken.
            System::Kcl => self.rolling_join_first() + kcl::settle_bound(1) + bucket_time(share),
        }
    }

    /// From a new node's join until the old one drains, in a rolling
    /// replacement.
    fn rolling_join_first(&self) -> Duration {
        match self.system {
            System::Vipfleet => self.rolling_gap() / 3,
            System::Kcl => kcl::settle_bound(self.shards.div_ceil(self.nodes + 1)),
        }
    }

    /// Route calls the event needs, at least.
    fn event_route_calls(&self) -> usize {
        let per_node = self.shards.div_ceil(self.nodes) * self.route_tables;
        match self.scenario.as_str() {
            "crash" => per_node,
            "az-loss" => self.lost_az().len() * per_node,
            "scale-out" => self.joining() * per_node,
            "rolling" => per_node * ROLLING_MOVES_PER_SHARD,
            _ => 0,
        }
    }

    pub fn config(&self) -> SimConfig {
        let mut config = SimConfig::small(self.seed);
        config.nodes = self.nodes;
        config.shards = self.shards;
        config.route_tables = self.route_tables;
        config.lease = self.lease.clone();
        config.probe_every = Some(PROBE_EVERY);
        config.cooldown = COOLDOWN;
        config.end_once_settled_for = (self.scenario != "steady").then_some(SETTLED_QUIET);
        let at = self.event_at();
        let fault = |at, fault| ScheduledFault { at, fault };
        config.faults = match self.scenario.as_str() {
            "crash" => vec![fault(
                at,
                Fault::Crash {
                    node: (self.seed as usize) % self.nodes,
                },
            )],
            "az-loss" => self
                .lost_az()
                .into_iter()
                .map(|node| fault(at, Fault::Crash { node }))
                .collect(),
            "scale-out" => (0..self.joining()).map(|_| fault(at, Fault::Join)).collect(),
            "rolling" => {
                let gap = self.rolling_gap();
                let join_first = self.rolling_join_first();
                (0..self.nodes)
                    .flat_map(|node| {
                        let start = at + gap * node as u32;
                        [
                            fault(start, Fault::Join),
                            fault(start + join_first, Fault::Drain { node }),
                        ]
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        config.warmup = if self.scenario == "steady" {
            at + STEADY_WATCH
        } else {
            at
        };
        config.bucket_allowance = bucket_time(self.event_route_calls() * 2);
        config.store_throughput = Some(self.throughput);
        config.bucket_from = self.startup();
        config.prompt_datagrams = true;
        config
    }

    /// Runs the scenario and measures it.
    pub fn run(&self) -> ScaleReport {
        self.run_reporting(false, |_| {}).0
    }

    /// [`Self::run`], passing a line about how far it has got to `say`
    /// every [`PROGRESS_EVERY`] of real time: a large fleet runs for
    /// minutes.
    /// With `trace`, the simulation's trace comes back too (vipfleet only).
    pub fn run_reporting(&self, trace: bool, mut say: impl FnMut(&str)) -> (ScaleReport, Vec<String>) {
        let mut config = self.config();
        config.trace = trace;
        let started = Instant::now();
        let mut next_line = started + PROGRESS_EVERY;
        let report = match self.system {
            System::Vipfleet => sim::run_observed(&config, |p| {
                let now = Instant::now();
                if now >= next_line {
                    next_line = now + PROGRESS_EVERY;
                    say(&progress_line(&p, now.duration_since(started)));
                }
            }),
            // The baseline runs in seconds at every size.
            System::Kcl => kcl::run(&config),
        };
        let wall = started.elapsed();
        (self.measure(&report, wall), report.trace)
    }

    fn measure(&self, report: &Report, wall: Duration) -> ScaleReport {
        let rest_from = self.startup();
        let event_at = self.event_at();
        let probes = &report.probes;
        let at_or_after = |t: Duration| probes.iter().find(|p| p.at >= t).or(probes.last());
        // The rest window ends at the last probe before the event.
        let before = |t: Duration| probes.iter().rev().find(|p| p.at < t).or(probes.first());
        let rest_start = at_or_after(rest_from);
        let rest_end = before(event_at);
        let units = |from: Option<&Probe>, to: Option<&Probe>| -> Units {
            let (Some(from), Some(to)) = (from, to) else {
                return Units::zero();
            };
            let secs = to.at.saturating_sub(from.at).as_secs_f64().max(f64::EPSILON);
            let rate = UnitsPerSecond {
                read: (to.store.read_units() - from.store.read_units()) / secs,
                write: (to.store.write_units - from.store.write_units) as f64 / secs,
            };
            Units {
                read_calls_per_s: Some((to.store.read_calls - from.store.read_calls) as f64 / secs),
                write_calls_per_s: Some((to.store.write_calls - from.store.write_calls) as f64 / secs),
                ..Units::of(secs, &rate)
            }
        };
        let at_rest = units(rest_start, rest_end);
        // The event lasts until the last mutating route call it caused.
        let last_call = probes
            .windows(2)
            .rev()
            .find(|w| w[0].at >= event_at && w[1].routes.mutating_calls > w[0].routes.mutating_calls)
            .map(|w| w[1].at);
        let event_end = last_call.unwrap_or(event_at + PROBE_EVERY);
        let during_event = (self.scenario != "steady").then(|| units(rest_end, at_or_after(event_end)));
        let fleet = Fleet {
            nodes: self.nodes as u64,
            vips: self.shards as u64,
            route_tables: self.route_tables as u64,
        };
        let model = match self.system {
            System::Vipfleet => cost::at_rest(&fleet, &ItemSizes::on_aws(&fleet), &self.lease),
            System::Kcl => kcl::at_rest(self.nodes, self.shards),
        };
        // A counter's growth from the end of the rest window to the end.
        let since_rest = |count: fn(&Probe) -> u64| match (rest_end, probes.last()) {
            (Some(a), Some(b)) => count(b) - count(a),
            _ => 0,
        };
        let calls_event = since_rest(|p| p.routes.mutating_calls);
        let throttled_event = since_rest(|p| p.ec2_throttled);
        let store_throttled_at_rest = match (rest_start, rest_end) {
            (Some(a), Some(b)) => b.store_throttled - a.store_throttled,
            _ => 0,
        };
        let moves_in =
            |from: Duration, to: Duration| report.move_times.iter().filter(|t| **t >= from && **t < to).count();
        let end = report.virtual_time;
        let (minimum, rule) = match self.scenario.as_str() {
            "crash" | "az-loss" => (report.crash_recoveries.iter().map(|c| c.shards).sum(), "equal"),
            "scale-out" => {
                let joined = (self.nodes..self.nodes + self.joining()).map(node_id);
                (
                    joined
                        .map(|id| report.owned_at_end.get(&id).copied().unwrap_or(0))
                        .sum(),
                    "equal",
                )
            }
            "rolling" => (
                report
                    .event_moves
                    .iter()
                    .filter(|e| e.kind == "drain")
                    .map(|e| e.minimum)
                    .sum(),
                "at most",
            ),
            _ => (0, "none"),
        };
        let restoration = matches!(self.scenario.as_str(), "crash" | "az-loss").then(|| {
            let mut times: Vec<Duration> = report
                .crash_recoveries
                .iter()
                .flat_map(|c| c.per_shard.iter().map(|t| *t + ROUTE_PROPAGATION))
                .collect();
            times.sort();
            let shards = report.crash_recoveries.iter().map(|c| c.shards).sum::<usize>();
            let lease = &self.lease;
            let detection = match self.system {
                System::Vipfleet => lease.lease_ttl + lease.scan_interval * 2,
                System::Kcl => kcl::detection_bound(),
            };
            let bound = detection + bucket_time(shards * self.route_tables) + RESTORATION_SLACK;
            Restoration {
                shards,
                p50_ms: millis(crate::percentile(&times, 50.0)),
                p99_ms: millis(crate::percentile(&times, 99.0)),
                max_ms: millis(crate::percentile(&times, 100.0)),
                unrestored: shards - times.len(),
                route_propagation_ms: millis(ROUTE_PROPAGATION),
                bound_ms: millis(bound),
            }
        });
        let (heartbeat, ttl, heartbeat_writes) = match self.system {
            System::Vipfleet => (
                self.lease.heartbeat_interval,
                self.lease.lease_ttl,
                self.nodes as f64 / self.lease.heartbeat_interval.as_secs_f64(),
            ),
            System::Kcl => (
                kcl::RENEW_INTERVAL,
                kcl::FAILOVER_TIME,
                kcl::renew_write_units_per_s(self.shards),
            ),
        };
        ScaleReport {
            system: self.system.name(),
            scenario: self.scenario.clone(),
            seed: self.seed,
            nodes: self.nodes,
            shards: self.shards,
            route_tables: self.route_tables,
            profile: self.profile,
            heartbeat_interval_ms: millis(heartbeat),
            lease_ttl_ms: millis(ttl),
            timeline: Timeline {
                start: FORMED_START,
                bucket_from_s: self.config().bucket_from.as_secs_f64(),
                rest_from_s: rest_from.as_secs_f64(),
                event_at_s: event_at.as_secs_f64(),
                end_s: end.as_secs_f64(),
            },
            violations: report.violations.clone(),
            restoration,
            moves: Moves {
                during_event: moves_in(event_at, end + Duration::from_secs(1)),
                at_rest: moves_in(rest_from, event_at),
                minimum,
                rule,
            },
            dynamodb: DynamoDb {
                at_rest,
                at_rest_model: Units::of(0.0, &model),
                heartbeat_write_units_per_s: heartbeat_writes,
                during_event,
                throttled_calls_at_rest: store_throttled_at_rest,
                throttled_calls_event: since_rest(|p| p.store_throttled),
            },
            ec2: Ec2 {
                mutating_calls_total: probes.last().map_or(0, |p| p.routes.mutating_calls),
                mutating_calls_event: calls_event,
                throttled_attempts_event: throttled_event,
                bucket_delay_s: bucket_time(calls_event as usize).as_secs_f64(),
                calls_span_s: last_call.map_or(0.0, |t| t.saturating_sub(event_at).as_secs_f64()),
            },
            speed: Speed {
                simulated_s: end.as_secs_f64(),
                wall_s: wall.as_secs_f64(),
                times_real_time: end.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON),
                events: report.events_processed,
            },
        }
    }
}

fn progress_line(p: &sim::Progress, wall: Duration) -> String {
    format!(
        "  {:.0}/{:.0} s simulated, {} events, {:.0} s real",
        p.virtual_time.as_secs_f64(),
        p.end.as_secs_f64(),
        p.events,
        wall.as_secs_f64()
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The simulation names node `index` so.
fn node_id(index: usize) -> String {
    format!("n{index:02}")
}

impl Units {
    fn zero() -> Self {
        Self::of(0.0, &UnitsPerSecond { read: 0.0, write: 0.0 })
    }

    fn of(window_s: f64, rate: &UnitsPerSecond) -> Self {
        Self {
            window_s,
            read_calls_per_s: None,
            write_calls_per_s: None,
            read_units_per_s: rate.read,
            write_units_per_s: rate.write,
            usd_per_month_on_demand: cost::on_demand_usd_per_month(rate),
        }
    }
}

impl ScaleReport {
    /// What falls short of the promises (empty: all kept). Times are not
    /// judged here: they depend on the machine.
    pub fn broken_promises(&self) -> Vec<String> {
        let mut broken: Vec<String> = self.violations.iter().map(|v| format!("invariant: {v}")).collect();
        let m = &self.moves;
        if m.at_rest > 0 {
            broken.push(format!("{} shards moved at rest", m.at_rest));
        }
        let moves_ok = match m.rule {
            "equal" => m.during_event == m.minimum,
            "at most" => m.during_event <= ROLLING_MOVES_PER_SHARD * m.minimum,
            _ => m.during_event == 0,
        };
        if !moves_ok {
            broken.push(format!(
                "{} shards moved, against a minimum of {} ({})",
                m.during_event, m.minimum, m.rule
            ));
        }
        if let Some(r) = &self.restoration {
            if r.unrestored > 0 {
                broken.push(format!("{} of {} lost shards never restored", r.unrestored, r.shards));
            }
            if r.max_ms > r.bound_ms && self.system == System::Vipfleet.name() {
                broken.push(format!(
                    "restoration took {} ms, above the bound {} ms",
                    r.max_ms, r.bound_ms
                ));
            }
        }
        if self.dynamodb.throttled_calls_at_rest > 0 {
            broken.push(format!(
                "{} store calls throttled at rest: the fleet at rest does not fit a new on-demand table",
                self.dynamodb.throttled_calls_at_rest
            ));
        }
        let writes = self.dynamodb.at_rest.write_units_per_s;
        let expected = self.dynamodb.heartbeat_write_units_per_s;
        if (writes - expected).abs() > expected * AT_REST_WRITES_TOLERANCE {
            broken.push(format!(
                "{writes:.3} write units/s at rest, not {expected:.3} ({}) within 5 %",
                match self.system {
                    "kcl" => "shards / renew interval",
                    _ => "nodes / heartbeat interval",
                }
            ));
        }
        broken
    }
}
