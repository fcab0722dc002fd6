//! The `sim` command: runs fault scenarios over many seeds in the
//! deterministic simulation of `vipfleet-core`, on every core, and
//! summarizes, per scenario, invariant violations, shards moved against the
//! minimum, crash failover time (simulated), store calls per simulated
//! second, and how much faster than real time the simulation ran. A seed
//! that breaks an invariant is listed with the command that replays it.
//!
//! A crate of its own, on the pure core alone, so that the no-root way to
//! see the protocol work (`cargo run -p vipfleet-sim`) builds in seconds
//! instead of compiling the AWS SDK; `vipfleet-loadtest sim` calls [`run`].
//!
//! With `--report FILE`, one seed of a scale scenario runs instead and its
//! measurements go to FILE as JSON (see [`scale`]); `--system kcl` runs it
//! as the KCL-style baseline instead ([`kcl`]).

pub mod kcl;
pub mod scale;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use thiserror::Error;
use vipfleet_core::sim::{self, Fault, Mix, Report, ScheduledFault, SimConfig, StoreThroughput};
use vipfleet_core::LeaseConfig;

use scale::{ScaleRun, System, SCALE_SCENARIOS};

#[derive(Debug, Error)]
pub enum SimError {
    #[error("need at least 2 nodes, 1 shard, 1 route table and 1 seed")]
    TooSmall,
    #[error("at most {MAX_SHARDS} shards (the simulation's VIPs are 10.200.0.0/16)")]
    TooManyShards,
    #[error("no scale scenario {0:?}; there are {SCALE_SCENARIOS:?}")]
    UnknownScaleScenario(String),
    #[error("--system kcl runs the scale scenarios only: give --report FILE.json (and --scenario, --seed)")]
    BaselineNeedsReport,
    #[error("writing the report {path}: {source}")]
    Report {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no scenario {0:?}; there are {SCENARIOS:?} and chaos")]
    UnknownScenario(String),
    #[error("writing the JSON report {path}: {source}")]
    Json {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Nodes at start.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Shards (one VIP each).
    #[arg(long, default_value_t = 64)]
    shards: usize,
    /// Route tables every node maintains.
    #[arg(long, default_value_t = 2)]
    route_tables: usize,
    /// One scenario (default: all but chaos).
    #[arg(long)]
    scenario: Option<String>,
    /// Seeds per scenario.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed (seeds run from it on).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Simulations run at once (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Lease timing profile.
    #[arg(long, value_enum, default_value_t = Profile::Cheap)]
    profile: Profile,
    /// Write every report as JSON lines to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run one seed of a scale scenario (steady, crash, az-loss, scale-out,
    /// rolling) and write its measurements to this file as JSON.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// The seed of a scale scenario (with --report).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds a scale scenario watches the fleet at rest before the event.
    #[arg(long, default_value_t = 60)]
    rest_window: u64,
    /// Read request units a second the lease table sustains in a scale
    /// scenario (default: a new on-demand table's 12,000). Lower it to
    /// make a small fleet's reads meet the limit a large one meets.
    #[arg(long)]
    table_read_units: Option<f64>,
    /// The system that runs a scale scenario: vipfleet, or the KCL-style
    /// baseline of per-shard leases (with --report; --profile does not
    /// apply to it).
    #[arg(long, value_enum, default_value_t = System::Vipfleet)]
    system: System,
    /// Print each seed's trace (machine events, their calls and the
    /// faults), only the lines that contain this text ("" for all): to
    /// follow one shard or node through a failing seed.
    #[arg(long)]
    trace: Option<String>,
}

/// The simulation's VIPs are the addresses of 10.200.0.0/16.
const MAX_SHARDS: usize = 1 << 16;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    /// Heartbeats every 5 s and cold reads once the fleet is settled: the
    /// agent's default.
    Cheap,
    /// Heartbeats every second, every node scanning the table 4 times a
    /// second.
    Hot,
    Fast,
}

const SCENARIOS: [&str; 6] = ["steady", "crash", "drain", "store-outage", "random", "operations"];
/// Every fault at once, slow and failing AWS included: for seeds by the
/// thousand (`--scenario chaos --seeds 2000`).
const CHAOS: &str = "chaos";
/// Late enough that the start-up's route writes, paced through the account's
/// shared EC2 bucket, are done: a failover measured then is the protocol's.
const FAULT_AT: Duration = Duration::from_secs(45);
const RANDOM_WINDOW: Duration = Duration::from_secs(60);
const RANDOM_FAULTS: usize = 8;

fn scenario(name: &str, seed: u64, args: &SimArgs) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.nodes = args.nodes;
    config.shards = args.shards;
    config.route_tables = args.route_tables;
    config.lease = args.profile.lease();
    let victim = (seed as usize) % args.nodes;
    // Spread the fault over the heartbeat cycle: failover time depends on
    // how long before the fault the victim last heartbeated.
    let at = FAULT_AT + Duration::from_millis(seed.wrapping_mul(7919) % 1000);
    let one = |fault| vec![ScheduledFault { at, fault }];
    match name {
        "crash" => config.faults = one(Fault::Crash { node: victim }),
        "drain" => config.faults = one(Fault::Drain { node: victim }),
        "store-outage" => {
            config.faults = one(Fault::StoreOutage {
                length: Duration::from_secs(30),
            })
        }
        "random" => config = config.with_random_faults(RANDOM_WINDOW, RANDOM_FAULTS),
        // What operators and upgrades add: restarts, rollouts, a lost table,
        // items deleted or broken by hand, haproxy failing.
        "operations" => config = config.with_random_faults_of(RANDOM_WINDOW, RANDOM_FAULTS, Mix::Operations),
        CHAOS => config = config.with_random_faults_of(RANDOM_WINDOW, RANDOM_FAULTS, Mix::Chaos),
        _ => {}
    }
    config
}

impl Profile {
    fn lease(self) -> LeaseConfig {
        match self {
            Profile::Cheap => LeaseConfig::CHEAP,
            Profile::Hot => LeaseConfig::HOT,
            Profile::Fast => LeaseConfig::FAST,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Profile::Cheap => "cheap",
            Profile::Hot => "hot",
            Profile::Fast => "fast",
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `name` for every seed, on `threads` threads; the reports in seed
/// order.
fn run_seeds(name: &str, args: &SimArgs, threads: usize) -> Vec<Report> {
    let next = AtomicU64::new(args.first_seed);
    let end = args.first_seed + args.seeds;
    let done = AtomicU64::new(0);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let mut config = scenario(name, seed, args);
                config.trace = args.trace.is_some();
                let report = sim::run(&config);
                if let Some(filter) = &args.trace {
                    let lines = report.trace.iter().filter(|l| l.contains(filter.as_str()));
                    let text: String = lines.map(|l| format!("seed {seed}: {l}\n")).collect();
                    print!("{text}");
                }
                reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished.is_multiple_of(10) || finished == args.seeds {
                    eprint!("\r  {name}: {finished}/{} seeds   ", args.seeds);
                }
            });
        }
    });
    eprint!("\r{:40}\r", "");
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|r| r.seed);
    reports
}

/// The command that runs one seed again.
fn replay(name: &str, seed: u64, args: &SimArgs) -> String {
    format!(
        "cargo run -p vipfleet-sim -- --scenario {name} --seeds 1 --first-seed {seed} --nodes {} --shards {} --route-tables {} --profile {}",
        args.nodes,
        args.shards,
        args.route_tables,
        args.profile.name()
    )
}

pub fn run(args: &SimArgs) -> Result<ExitCode, SimError> {
    if args.nodes < 2 || args.shards == 0 || args.route_tables == 0 || args.seeds == 0 {
        return Err(SimError::TooSmall);
    }
    if args.shards > MAX_SHARDS {
        return Err(SimError::TooManyShards);
    }
    if let Some(path) = &args.report {
        return run_scale(args, path);
    }
    if args.system != System::Vipfleet {
        return Err(SimError::BaselineNeedsReport);
    }
    let scenarios: Vec<&str> = match args.scenario.as_deref() {
        None => SCENARIOS.to_vec(),
        Some(name) if name == CHAOS || SCENARIOS.contains(&name) => vec![name],
        Some(other) => return Err(SimError::UnknownScenario(other.to_string())),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let json_error = |source| SimError::Json {
        path: args.json.clone().unwrap_or_default(),
        source,
    };
    let mut json = match &args.json {
        Some(path) => Some(std::fs::File::create(path).map_err(json_error)?),
        None => None,
    };
    println!(
        "vipfleet simulation: {} nodes, {} shards, {:?} lease profile, seeds {}..{} per scenario, {threads} at a time",
        args.nodes,
        args.shards,
        args.profile,
        args.first_seed,
        args.first_seed + args.seeds
    );
    println!(
        "{:<13} {:>10} {:>12} {:>26} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scenario",
        "violations",
        "moves/min",
        "crash failover p50/p99/max",
        "writes/s",
        "reads/s",
        "WCU/s",
        "RCU/s",
        "speed-up"
    );
    let mut failed_seeds: Vec<(&str, u64)> = Vec::new();
    let mut seeds_run = 0u64;
    let mut violations_found = 0usize;
    for name in scenarios {
        let started = Instant::now();
        let reports = run_seeds(name, args, threads);
        let wall = started.elapsed();
        seeds_run += reports.len() as u64;
        let simulated: Duration = reports.iter().map(|r| r.virtual_time).sum();
        let violations: usize = reports.iter().map(|r| r.violations.len()).sum();
        violations_found += violations;
        let (actual, minimum) = reports
            .iter()
            .flat_map(|r| r.event_moves.iter().filter(|m| m.clean))
            .fold((0, 0), |(a, m), e| (a + e.actual, m + e.minimum));
        let mut failovers: Vec<Duration> = reports
            .iter()
            .flat_map(|r| r.crash_recoveries.iter().filter_map(|c| c.took))
            .collect();
        failovers.sort();
        let secs = simulated.as_secs_f64().max(f64::EPSILON);
        let writes: u64 = reports.iter().map(|r| r.store.items_written).sum();
        let reads: u64 = reports.iter().map(|r| r.store.items_read).sum();
        let write_units: u64 = reports.iter().map(|r| r.store.write_units).sum();
        let read_units: f64 = reports.iter().map(|r| r.store.read_units()).sum();
        let failover = if failovers.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}/{:.2}/{:.2} s",
                percentile(&failovers, 50.0).as_secs_f64(),
                percentile(&failovers, 99.0).as_secs_f64(),
                percentile(&failovers, 100.0).as_secs_f64()
            )
        };
        println!(
            "{:<13} {:>10} {:>12} {:>26} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.0}x",
            name,
            violations,
            format!("{actual}/{minimum}"),
            failover,
            writes as f64 / secs,
            reads as f64 / secs,
            write_units as f64 / secs,
            read_units / secs,
            simulated.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON)
        );
        for report in &reports {
            if !report.violations.is_empty() {
                failed_seeds.push((name, report.seed));
            }
            for v in &report.violations {
                println!("  seed {}: {v}", report.seed);
            }
            if let Some(file) = json.as_mut() {
                use std::io::Write;
                writeln!(
                    file,
                    "{}",
                    serde_json::json!({
                        "scenario": name,
                        "seed": report.seed,
                        "violations": report.violations,
                        "moves": report.moves,
                        "crash_failover_ms": report.crash_recoveries.iter()
                            .map(|c| c.took.map(|t| t.as_millis() as u64)).collect::<Vec<_>>(),
                        "store_items_written": report.store.items_written,
                        "store_items_read": report.store.items_read,
                        "store_write_units": report.store.write_units,
                        "store_read_units": report.store.read_units(),
                        "ec2_mutating": report.routes.mutating_calls,
                        "virtual_s": report.virtual_time.as_secs_f64(),
                    })
                )
                .map_err(json_error)?;
            }
        }
    }
    println!("moves/min: shards moved by crashes and drains in a settled fleet / shards those nodes held");
    println!("writes/s, reads/s: DynamoDB items per simulated second, whole fleet");
    println!("WCU/s, RCU/s: DynamoDB request units per simulated second by the item-size rules, whole fleet");
    println!(
        "{seeds_run} seeds run, {violations_found} violations in {} of them",
        failed_seeds.len()
    );
    if let Some((name, seed)) = failed_seeds.first() {
        println!("replay the first: {}", replay(name, *seed, args));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One seed of a scale scenario, its report written to `path` and
/// summarized on stdout; fails when a promise is broken.
fn run_scale(args: &SimArgs, path: &std::path::Path) -> Result<ExitCode, SimError> {
    let scenario = args.scenario.clone().unwrap_or_else(|| "crash".to_string());
    if !SCALE_SCENARIOS.contains(&scenario.as_str()) {
        return Err(SimError::UnknownScaleScenario(scenario));
    }
    let profile = match args.system {
        System::Vipfleet => args.profile.name(),
        System::Kcl => kcl::PROFILE,
    };
    let run = ScaleRun {
        system: args.system,
        scenario,
        seed: args.seed,
        nodes: args.nodes,
        shards: args.shards,
        route_tables: args.route_tables,
        profile,
        lease: args.profile.lease(),
        rest_window: Duration::from_secs(args.rest_window),
        throughput: args
            .table_read_units
            .map_or(StoreThroughput::NEW_ON_DEMAND_TABLE, |read| {
                StoreThroughput::NEW_ON_DEMAND_TABLE.with_table_reads(read)
            }),
    };
    println!(
        "{} scale run: {} on {} nodes, {} shards, {} route tables, {} lease profile, seed {}",
        run.system.name(),
        run.scenario,
        run.nodes,
        run.shards,
        run.route_tables,
        run.profile,
        run.seed
    );
    let report_error = |source| SimError::Report {
        path: path.to_path_buf(),
        source,
    };
    // Created first: a path that cannot be written fails before the run.
    let mut file = std::fs::File::create(path).map_err(report_error)?;
    let (report, trace) = run.run_reporting(args.trace.is_some(), |line| eprintln!("{line}"));
    if let Some(filter) = &args.trace {
        for line in trace.iter().filter(|l| l.contains(filter.as_str())) {
            println!("{line}");
        }
    }
    serde_json::to_writer_pretty(&mut file, &report).map_err(|e| report_error(e.into()))?;
    std::io::Write::write_all(&mut file, b"\n").map_err(report_error)?;
    if let Some(r) = &report.restoration {
        println!(
            "restoration of {} shards: p50 {} ms, p99 {} ms, max {} ms (bound {} ms)",
            r.shards, r.p50_ms, r.p99_ms, r.max_ms, r.bound_ms
        );
    }
    let m = &report.moves;
    println!(
        "moves: {} during the event, minimum {} ({}); {} at rest",
        m.during_event, m.minimum, m.rule, m.at_rest
    );
    let d = &report.dynamodb;
    println!(
        "DynamoDB at rest: {:.2} RCU/s, {:.2} WCU/s, ${:.2}/month on demand (model: {:.2} RCU/s, {:.2} WCU/s)",
        d.at_rest.read_units_per_s,
        d.at_rest.write_units_per_s,
        d.at_rest.usd_per_month_on_demand,
        d.at_rest_model.read_units_per_s,
        d.at_rest_model.write_units_per_s
    );
    if let Some(e) = &d.during_event {
        println!(
            "DynamoDB during the event ({:.0} s): {:.2} RCU/s, {:.2} WCU/s",
            e.window_s, e.read_units_per_s, e.write_units_per_s
        );
    }
    let e = &report.ec2;
    println!(
        "EC2: {} mutating calls for the event ({} throttled attempts, bucket delay {:.1} s, last call {:.1} s after it)",
        e.mutating_calls_event, e.throttled_attempts_event, e.bucket_delay_s, e.calls_span_s
    );
    let s = &report.speed;
    println!(
        "simulated {:.0} s in {:.1} s: {:.1}x real time, {} events",
        s.simulated_s, s.wall_s, s.times_real_time, s.events
    );
    println!("report: {}", path.display());
    let broken = report.broken_promises();
    for promise in &broken {
        println!("  broken: {promise}");
    }
    Ok(if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
