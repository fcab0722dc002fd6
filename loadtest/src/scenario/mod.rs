//! `run --scenario NAME` and `demo`: load through a lab while a fault
//! strikes, then the report.
//!
//! For each scenario: read the lab's state, note shard owners and call
//! counters, start one load generator per client namespace, wait a warm-up,
//! inject the fault ([`faults`]), let the load finish, and turn the request
//! records into outages ([`crate::timeline`]) and a [`Report`]; then heal
//! the lab and wait until it has converged again before the next one.
//! The lab itself is brought up and down with this binary's `lab` command.

mod at_rest;
mod aws_faults;
mod aws_proxy;
mod checks;
mod crashes;
mod drain_storm;
pub mod faults;
pub mod fleet;
mod peer_faults;
mod rewire;
mod rollout;
pub mod route_log;
mod soak;
mod store_faults;
mod trace;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::footprint;
use crate::lab::state::LabState;
pub use crate::lab::up::LeaseProfile;
use crate::load::{self, Record};
use crate::report::{self, Moves, Report};
use crate::timeline;
use checks::Seen;
pub use faults::Scenario;
use trace::Trace;

/// Load runs this long before the fault strikes.
const WARMUP: Duration = Duration::from_secs(4);
/// A healed lab must converge within this long.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Where to write the JSON report (an array for `all`); the SVG goes next to it.
    #[arg(long)]
    pub report: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 12)]
    pub vips: usize,
    #[arg(long, default_value_t = 2)]
    pub route_tables: usize,
    /// Seconds of load per scenario (store-outage and table-recreate run
    /// longer if their faults need it).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// The agents' lease TTL (ms; default: the profile's).
    #[arg(long)]
    pub lease_ttl: Option<u64>,
    /// The agents' heartbeat interval (ms; default: the profile's).
    #[arg(long)]
    pub heartbeat: Option<u64>,
    /// Requests per second to each VIP from each client.
    #[arg(long, default_value_t = load::DEFAULT_RATE_PER_VIP)]
    pub rate: f64,
    /// How long moto stays stopped in store-outage, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub store_outage: f64,
    /// Lab name prefix.
    #[arg(long, default_value = "vf")]
    pub prefix: String,
    /// Leave the lab running afterwards (and reuse a running one).
    #[arg(long)]
    pub keep_lab: bool,
    /// Seed of the soak's choice of faults, victims and gaps.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Agents do not probe each other: failover by lease expiry only, and
    /// the crash bound is the lease's (to compare with peer probes on).
    #[arg(long)]
    pub no_peers: bool,
    /// The agents' lease profile (`--lease-ttl` and `--heartbeat` override
    /// its timings).
    #[arg(long, value_enum, default_value_t = LeaseProfile::Hot)]
    pub profile: LeaseProfile,
}

impl RunArgs {
    /// The settings of the README's demo.
    pub fn demo(report: PathBuf, lease_ttl: u64, heartbeat: u64) -> Self {
        Self {
            scenario: Scenario::All,
            report,
            nodes: 4,
            vips: 32,
            route_tables: 2,
            duration: 20.0,
            lease_ttl: Some(lease_ttl),
            heartbeat: Some(heartbeat),
            rate: load::DEFAULT_RATE_PER_VIP,
            store_outage: 30.0,
            prefix: "vfdemo".into(),
            keep_lab: false,
            seed: 1,
            no_peers: false,
            profile: LeaseProfile::Hot,
        }
    }
}

/// Checks the demo can run here and prepares its output folder.
pub fn demo(out: &Path, lease_ttl: u64, heartbeat: u64) -> Result<RunArgs> {
    crate::lab::tools::preflight()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(RunArgs::demo(out.join("report.json"), lease_ttl, heartbeat))
}

fn lab_command(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let status = Command::new(&exe)
        .arg("lab")
        .args(args)
        .status()
        .context("running lab")?;
    if !status.success() {
        bail!("`{} lab {}` failed ({status})", exe.display(), args.join(" "));
    }
    Ok(())
}

fn lab_dir(prefix: &str) -> PathBuf {
    crate::lab::layout::lab_dir(prefix)
}

fn lab_up(args: &RunArgs) -> Result<LabState> {
    if let Some(state) = LabState::load(&lab_dir(&args.prefix))? {
        if args.keep_lab
            && state.nodes.len() == args.nodes
            && state.vips.len() == args.vips
            && state.peer_port.is_some() != args.no_peers
            && state.lease.profile == args.profile.name()
        {
            eprintln!("==> reusing the running lab {}", args.prefix);
            return Ok(state);
        }
        eprintln!("==> taking down the old lab {}", args.prefix);
        lab_command(&["down".into(), "--prefix".into(), args.prefix.clone()])?;
    }
    let (lease_ttl, heartbeat) = args.profile.timings_ms(args.lease_ttl, args.heartbeat);
    eprintln!(
        "==> lab up: {} nodes, {} VIPs, {} route tables, {} profile, lease {} ms / heartbeat {} ms, peer probes {}",
        args.nodes,
        args.vips,
        args.route_tables,
        args.profile.name(),
        lease_ttl,
        heartbeat,
        if args.no_peers { "off" } else { "on" }
    );
    let mut up: Vec<String> = vec![
        "up".into(),
        "--prefix".into(),
        args.prefix.clone(),
        "--nodes".into(),
        args.nodes.to_string(),
        "--vips".into(),
        args.vips.to_string(),
        "--route-tables".into(),
        args.route_tables.to_string(),
        "--lease-ttl".into(),
        lease_ttl.to_string(),
        "--heartbeat".into(),
        heartbeat.to_string(),
        "--profile".into(),
        args.profile.name().into(),
    ];
    if args.no_peers {
        up.push("--no-peers".into());
    }
    lab_command(&up)?;
    LabState::load(&lab_dir(&args.prefix))?.context("lab up left no state file")
}

/// Runs the scenario(s) and writes the report(s); returns them.
pub async fn run(args: &RunArgs) -> Result<Vec<Report>> {
    let mut state = lab_up(args)?;
    let result = run_on(args, &mut state).await;
    if !args.keep_lab {
        eprintln!("==> lab down");
        if let Err(e) = lab_command(&["down".into(), "--prefix".into(), args.prefix.clone()]) {
            eprintln!("warning: {e:#}");
        }
    }
    let reports = result?;
    let json = if reports.len() == 1 {
        serde_json::to_string_pretty(&reports[0])?
    } else {
        serde_json::to_string_pretty(&reports)?
    };
    std::fs::write(&args.report, json + "\n").with_context(|| format!("writing {}", args.report.display()))?;
    println!("{}", Report::SUMMARY_HEADER);
    for r in &reports {
        println!("{}", r.summary_line());
        for v in &r.violations {
            println!("    violation: {v}");
        }
    }
    if let Some(steady) = reports.iter().find(|r| r.scenario == Scenario::Steady.name()) {
        println!("{} (steady: idle)", steady.agent_footprint.summary_line());
    }
    if let Some(soak) = reports.iter().find(|r| r.scenario == Scenario::Soak.name()) {
        println!("soak: {}", soak.agent_footprint.rss_line());
    }
    println!("report: {}", args.report.display());
    Ok(reports)
}

async fn run_on(args: &RunArgs, state: &mut LabState) -> Result<Vec<Report>> {
    let scenarios: Vec<Scenario> = match args.scenario {
        Scenario::All => Scenario::EACH.to_vec(),
        one => vec![one],
    };
    let mut reports = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        eprintln!("==> [{}/{}] scenario {}", i + 1, scenarios.len(), scenario.name());
        let svg = args.report.with_extension(format!("{}.svg", scenario.name()));
        reports.push(run_one(*scenario, args, state, &svg).await?);
    }
    Ok(reports)
}

fn start_load(
    state: &LabState,
    args: &RunArgs,
    duration: f64,
    out_dir: &Path,
    tag: &str,
) -> Result<Vec<(Child, PathBuf)>> {
    let exe = std::env::current_exe()?;
    let vips: Vec<String> = state.vips.iter().map(|v| v.addr().to_string()).collect();
    let mut children = Vec::new();
    for table in &state.route_tables {
        let out = out_dir.join(format!("load-{tag}-{}.jsonl", table.index));
        let child = Command::new("ip")
            .args(["netns", "exec", &table.client_ns])
            .arg(&exe)
            .args(["load", "--vips", &vips.join(","), "--client", &table.id])
            .args(["--rate", &args.rate.to_string(), "--duration", &duration.to_string()])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting load in {}", table.client_ns))?;
        children.push((child, out));
    }
    Ok(children)
}

/// Waits until every VIP is owned and routed, and the shards are spread
/// evenly again (rebalancing after a node came back has finished), so the
/// next scenario's numbers are its own.
pub(super) async fn wait_converged(state: &LabState, sdk: &aws_config::SdkConfig, serving_nodes: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + HEAL_TIMEOUT;
    loop {
        let c = crate::lab::check::check(state, sdk).await?;
        if c.converged() && c.balanced(serving_nodes) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the lab did not converge again within {HEAL_TIMEOUT:?}: {}",
                c.summary()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the fleet is converged and balanced and the shards' owners
/// and epochs stay put for a heartbeat: a restarted agent claims its
/// shards again just after it is ready (an epoch step that moves nothing),
/// a fresh lab may still be handing shards to its last node, and the
/// ownership read before the fault must come after those steps.
async fn wait_reclaimed(state: &LabState, sdk: &aws_config::SdkConfig) -> Result<()> {
    wait_converged(state, sdk, state.nodes.len()).await?;
    let deadline = tokio::time::Instant::now() + HEAL_TIMEOUT;
    let mut last = fleet::ownership(state, sdk).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(state.lease.heartbeat_ms)).await;
        let now = fleet::ownership(state, sdk).await?;
        if now == last {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the shards' owners or epochs still changed {HEAL_TIMEOUT:?} after the fleet converged");
        }
        last = now;
    }
}

/// Starts the fault proxy where the scenario needs it, and restarts every
/// agent through it or with the scenario's own settings; whether it did.
async fn rewire_agents(scenario: Scenario, state: &mut LabState) -> Result<(Option<aws_proxy::AwsProxy>, bool)> {
    let proxy = if scenario.needs_proxy() {
        let upstreams = aws_proxy::Upstreams {
            aws: crate::lab::http::endpoint_addr(&state.aws.endpoint)?,
            dynamodb: crate::lab::http::endpoint_addr(state.dynamodb_endpoint())?,
        };
        let proxy = aws_proxy::AwsProxy::start(std::net::IpAddr::V4(state.network.host_ip), upstreams).await?;
        eprintln!(
            "==> the agents call AWS through the fault proxy at {}",
            proxy.endpoint()
        );
        Some(proxy)
    } else {
        None
    };
    let wiring = rewire::Wiring {
        endpoint: proxy.as_ref().map(aws_proxy::AwsProxy::endpoint),
        sets: scenario.agent_sets().iter().map(ToString::to_string).collect(),
    };
    let rewired = wiring != rewire::Wiring::default();
    if rewired {
        rewire::rewire_all(state, &wiring).await?;
    }
    Ok((proxy, rewired))
}

async fn run_one(scenario: Scenario, args: &RunArgs, state: &mut LabState, svg_path: &Path) -> Result<Report> {
    let sdk = state.sdk().await;
    let victim = 1 % state.nodes.len();
    let (proxy, rewired) = rewire_agents(scenario, state).await?;
    // Whether the agents were restarted or the lab has just come up, its
    // shards may still be changing hands: the counts start once they stop.
    wait_reclaimed(state, &sdk).await?;
    faults::prepare(scenario, state, victim).await?;
    if scenario == Scenario::ScaleOut {
        wait_converged(state, &sdk, state.nodes.len() - 1).await?;
    }
    let before = fleet::ownership(state, &sdk).await?;
    let victims = match scenario {
        Scenario::AzLoss => crashes::az_victims(state.nodes.len())?,
        _ => vec![victim],
    };
    let victim_vips: Vec<_> = victims
        .iter()
        .flat_map(|&v| fleet::vips_of(&before, &state.nodes[v].instance_id))
        .collect();
    let lease_ttl = Duration::from_millis(state.lease.lease_ttl_ms);
    let heartbeat = Duration::from_millis(state.lease.heartbeat_ms);
    let crash_bound = match scenario {
        Scenario::SlowStore => aws_faults::slow_store_bound(lease_ttl),
        Scenario::StoreThrottle => {
            aws_faults::store_throttle_bound(checks::crash_outage_bound(state, victim_vips.len()))
        }
        // A third node's item is deleted with the crash: until it writes
        // it again (its next heartbeat) and the survivors read it, it looks
        // like a node restarting, and the dead node's shards wait for the
        // assignment to know it.
        Scenario::LostItems => {
            checks::crash_outage_bound(state, victim_vips.len())
                + heartbeat
                + vipfleet_core::LeaseConfig::HOT.scan_interval
        }
        _ => checks::crash_outage_bound(state, victim_vips.len()),
    };
    let store_outage = Duration::from_secs_f64(args.store_outage);
    let duration = args.duration.max(
        scenario
            .min_duration(WARMUP, lease_ttl, heartbeat, store_outage, crash_bound)
            .as_secs_f64(),
    );
    let duration = match scenario {
        Scenario::Crash => {
            duration.max(crashes::duration(WARMUP, victim_vips.len(), crash_bound, heartbeat).as_secs_f64())
        }
        Scenario::AtRest => duration.max(at_rest::duration(WARMUP, lease_ttl, args.duration).as_secs_f64()),
        _ => duration,
    };
    let mut trace = Trace::new(state);
    trace.read("start", state).await;
    let agent_pids: Vec<u32> = state.nodes.iter().map(|n| n.agent.pid).collect();
    let cpu_before = footprint::start(&agent_pids);

    let started_ms = load::unix_ms();
    let loads = start_load(state, args, duration, &state.dir.clone(), scenario.name())?;
    tokio::time::sleep(WARMUP).await;
    let mut fault = faults::Fault {
        state,
        sdk: &sdk,
        victim,
        before: &before,
        store_outage,
        load_end_ms: started_ms + (duration * 1000.0) as u64,
        crash_bound,
        trace: &mut trace,
        proxy: proxy.as_ref(),
        seed: args.seed,
        duration_s: args.duration,
    };
    faults::inject(scenario, &mut fault).await?;
    let mut records: Vec<Record> = Vec::new();
    for (mut child, out) in loads {
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        if !status.success() {
            bail!("a load generator failed ({status}); see {}", out.display());
        }
        records.extend(load::read_records(&out)?);
    }
    let end_ms = load::unix_ms();
    let running: Vec<u32> = state.nodes.iter().map(|n| n.agent.pid).collect();
    let agent_footprint = footprint::finish(&cpu_before, &running);

    let after = fleet::ownership(state, &sdk).await?;
    trace.read("end", state).await;
    let routes = fleet::routes(state, &sdk).await?;
    let route_log = route_log::read(state);
    let readings: Vec<&fleet::Scrape> = trace.readings.iter().map(|r| &r.scrape).collect();
    let calls = fleet::calls_over(&readings);
    let fault_ms = trace
        .events
        .first()
        .map_or(started_ms + WARMUP.as_millis() as u64, |e| e.t_ms);
    // A VIP taken out of service on purpose is no outage, nor one left
    // routed to a dead node through a table the fault froze.
    records.retain(|r| !trace.unreachable.contains(&(r.client.clone(), r.vip)));
    let kept: Vec<Record> = records
        .iter()
        .filter(|r| !trace.removed.contains(&r.vip))
        .cloned()
        .collect();
    // The harness restarting a crashed node ends that crash's window; what
    // the re-balancing after it does is no crash sample.
    let outages: Vec<timeline::Outage> = timeline::outages(&kept, &trace.events, end_ms)
        .into_iter()
        .filter(|o| trace.events[o.fault].kind != crashes::RESTART_EVENT)
        .collect();
    let flips = if trace.measured.is_empty() {
        route_log::flips(&route_log, started_ms, end_ms)
    } else {
        trace
            .measured
            .iter()
            .map(|(from, to)| route_log::flips(&route_log, *from, *to))
            .sum()
    };

    let mut report = Report {
        scenario: scenario.name().to_string(),
        nodes: state.nodes.len(),
        vips: state.vips.len(),
        route_tables: state.route_tables.len(),
        lease_ttl_ms: state.lease.lease_ttl_ms,
        heartbeat_ms: state.lease.heartbeat_ms,
        duration_s: (end_ms - started_ms) as f64 / 1000.0,
        events: trace.events.clone(),
        moves: trace.series_moves.clone().unwrap_or(Moves {
            // An owner's re-claim steps the epoch and moves nothing.
            actual: fleet::moves(&before, &after, &trace.recreated).saturating_sub(fleet::reclaims_over(&readings)),
            minimum: match scenario {
                Scenario::DrainStorm => drain_storm::minimum_moves(state, &before),
                _ => minimum_moves(scenario, victim_vips.len(), state.vips.len(), state.nodes.len()),
            },
        }),
        ddb: calls.ddb(),
        ec2: calls.ec2(),
        route_changes: route_log::between(&route_log, started_ms, end_ms).count() as u64,
        flips,
        phases: trace.phases(&route_log),
        agent_exits: trace.exits(&state.prefix),
        items_skipped: trace.readings.last().map_or_else(Default::default, |r| {
            r.scrape
                .iter()
                .map(|((id, _), m)| (id.clone(), m.items_skipped))
                .collect()
        }),
        // With peer probes a paused node is evicted as fast as a crashed one.
        outage_bound_ms: (scenario.crashes() || (scenario == Scenario::Zombie && state.peer_port.is_some()))
            .then_some(crash_bound.as_millis() as u64),
        agent_footprint,
        violations: std::mem::take(&mut trace.violations),
        at_rest: trace.at_rest.take(),
        ..Report::default()
    };
    report.add_traffic(&kept, &outages);
    let seen = Seen {
        before: &before,
        after: &after,
        routes: &routes,
        route_log: &route_log,
        records: &records,
        outages: &outages,
        trace: &trace,
        started_ms,
        fault_ms,
        end_ms,
    };
    checks::general(scenario, state, &seen, &mut report);
    match scenario {
        Scenario::Crash => crashes::check_crash(&mut report, state.peer_port.is_some()),
        Scenario::VipChange => rollout::check_vip_change(&mut report),
        Scenario::PeerPartition => {
            let moved = fleet::moved(&before, &after, &trace.recreated);
            peer_faults::check_peer_partition(&mut report, &trace, &moved);
        }
        Scenario::Zombie if state.peer_port.is_some() => {
            let moved = fleet::moved(&before, &after, &trace.recreated);
            checks::check_evicted_zombie(&mut report, &victim_vips, &moved);
        }
        Scenario::ZombieDeleted => {
            let moved = fleet::moved(&before, &after, &trace.recreated);
            let victim = &state.nodes[victim].instance_id;
            store_faults::check_zombie_deleted(&mut report, victim, &victim_vips, &moved, &after);
        }
        Scenario::LostItems => store_faults::check_lost_items(&mut report, &trace, state, &after),
        Scenario::TableRecreate => store_faults::check_table_recreate(&mut report),
        Scenario::SlowStore => aws_faults::check_slow_store(&mut report),
        Scenario::Ec2Partial => {
            let failing = trace.frozen_tables.first().cloned().unwrap_or_default();
            aws_faults::check_ec2_partial(&mut report, proxy.as_ref(), &failing, trace.ec2_window);
        }
        Scenario::DrainStorm => drain_storm::check_drain_storm(&mut report, state, &trace.drains, &route_log, &after),
        _ => {}
    }
    std::fs::write(svg_path, report::svg(&records, &report.events, started_ms, end_ms))
        .with_context(|| format!("writing {}", svg_path.display()))?;

    if rewired {
        // As the lab made them, before the proxy goes (an agent that is
        // down is started by heal).
        rewire::rewire_all(state, &rewire::Wiring::default()).await?;
    }
    drop(proxy);
    faults::heal(scenario, state, victim, &sdk).await?;
    wait_converged(state, &sdk, state.nodes.len()).await?;
    Ok(report)
}

/// What an ideal system moves for the scenario.
fn minimum_moves(scenario: Scenario, victim_shards: usize, shards: usize, nodes: usize) -> u64 {
    let fair_share = (shards / nodes.max(1)) as u64;
    match scenario {
        Scenario::Crash
        | Scenario::AzLoss
        | Scenario::ScaleIn
        | Scenario::BadItems
        | Scenario::LostItems
        | Scenario::TableRecreate
        | Scenario::SlowStore
        | Scenario::StoreThrottle
        | Scenario::Ec2Partial => victim_shards as u64,
        // Every shard but the survivor's (see drain_storm::minimum_moves).
        Scenario::DrainStorm => (shards - shards / nodes.max(1)) as u64,
        Scenario::PeerPartition => 0,
        // Away when the lease is lost, then a fair share back.
        Scenario::Zombie | Scenario::ZombieDeleted | Scenario::Partition => victim_shards as u64 + fair_share,
        Scenario::ScaleOut => fair_share,
        Scenario::Steady
        | Scenario::AtRest
        | Scenario::StoreOutage
        | Scenario::RouteDrift
        | Scenario::AgentRestart
        | Scenario::VipChange
        | Scenario::Soak
        | Scenario::All => 0,
    }
}
