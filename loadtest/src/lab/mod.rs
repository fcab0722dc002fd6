//! The lab: a whole vipfleet fleet on one Linux machine (docs/design.md, "The
//! lab"), as `vipfleet-loadtest lab up|down|status`.
//!
//! - moto (server mode, behind the agent tests' serializing launcher) plays
//!   DynamoDB, EC2 and Auto Scaling; the agent crate's IMDSv2 emulator plays
//!   instance metadata. Both run in the host namespace on the host's leg of
//!   the lab bridge, so every node reaches them and the emulator tells nodes
//!   apart by source address.
//! - Network namespaces and veths play the VPC: a bridge namespace (the
//!   subnet), one namespace per node (real haproxy + `vipfleet-agent`, the
//!   node's address equal to its ENI's private IP in moto), one router
//!   namespace per route table with a client namespace behind it, and a
//!   backend namespace. The route mirror copies moto's route tables into the
//!   routers' kernel routes. Names and addresses: [`layout`].
//! - Agents get everything from the environment a real node would have:
//!   `AWS_ENDPOINT_URL` (moto), `AWS_EC2_METADATA_SERVICE_ENDPOINT` (the
//!   emulator), no `[node]` overrides, so the IMDS path is exercised.
//!
//! Flow: [`tools`] checks the machine, [`claims`] picks a free network,
//! [`up`] builds it with [`netns`], [`aws`] and [`procs`], starts
//! [`mirror`], [`imds`] and [`backend`] as lab processes of this same
//! binary, waits with [`check`], and records [`state`]; [`down`] removes it
//! all, with or without the state file.
//!
//! Why processes, not tasks of one daemon: the harness kills, stops and
//! restarts pieces independently (moto for a store outage, one agent for a
//! crash), and every piece then behaves as it would on real machines.
//!
//! The lab directory, `/var/tmp/vipfleet-lab-<prefix>/`: `state.json` (the
//! contract with other tools, see [`state`]), `pids/<name>.pid`,
//! `logs/<name>.log` (every process; `logs/mirror-changes.jsonl` holds one
//! JSON object per kernel route change), `conf/` (agent TOML, haproxy
//! configs, the IMDS node table and control token, the agents' dashboard
//! token), `run/` (haproxy admin
//! sockets). `down` keeps `logs/` and `conf/` unless `--purge`.
//!
//! Choices worth knowing:
//! - Node instances are launched by the lab with their planned private IPs
//!   and attached to the Auto Scaling group, not launched by the group
//!   (moto's group would pick its own addresses); see [`aws`].
//! - Two labs can run at once: besides the prefix, each takes its own
//!   network octet (10.77/10.78 by default, else the next free pair), see
//!   [`claims`].
//! - Kernel routes in the routers carry `proto 177`; the routers have
//!   `rp_filter` off, nodes have `ip_nonlocal_bind` on and `ip_forward` off.
//! - `add-node --bootstrap` makes a node as the Auto Scaling group would:
//!   the real `infra/bootstrap/bootstrap.sh` in a chroot in the node's
//!   namespace, with a systemctl stand-in, see [`bootstrap`].
//! - Exit codes: 0 done, 1 failure, 2 refused (not root, no `ip netns`, or
//!   a lab with this prefix exists).

pub mod aws;
pub mod backend;
pub mod bootstrap;
pub mod check;
pub mod claims;
pub mod down;
pub mod http;
pub mod imds;
pub mod layout;
pub mod mirror;
pub mod netns;
pub mod node;
pub mod procs;
pub mod state;
pub mod tools;
pub mod up;

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use self::state::LabState;
use self::tools::Refusal;

/// Exit code when the machine cannot host a lab or the lab already exists.
const EXIT_REFUSED: u8 = 2;

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Names every namespace, link, file and process of the lab.
    #[arg(long, global = true, default_value = layout::DEFAULT_PREFIX)]
    prefix: String,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Build the lab, start the fleet, wait until it has converged.
    Up(up::UpArgs),
    /// Remove every namespace, link and process of the lab (also after a crash).
    Down {
        /// Also remove the lab directory with its logs.
        #[arg(long)]
        purge: bool,
    },
    /// Show the lab's nodes, VIPs, route tables and endpoints.
    Status {
        /// The state file's JSON, with `alive` on every process.
        #[arg(long)]
        json: bool,
    },
    /// Scale out: launch one more node (instance, namespace, haproxy, agent) in a running lab.
    AddNode {
        /// Provision it as user data would: run infra/bootstrap/bootstrap.sh in a chroot in the
        /// node's namespace (haproxy and the agent then run from that chroot).
        #[arg(long)]
        bootstrap: bool,
    },
    /// Run the bootstrap again on a node `add-node --bootstrap` made (it should change nothing).
    Bootstrap {
        /// The node's name, e.g. n3.
        node: String,
    },
    /// (lab process) Copy moto's route tables into the routers' kernel routes.
    #[command(hide = true)]
    Mirror(mirror::MirrorArgs),
    /// (lab process) The IMDSv2 emulator.
    #[command(hide = true)]
    Imds(imds::ImdsArgs),
    /// (lab process) A backend HTTP server.
    #[command(hide = true)]
    Backend(backend::BackendArgs),
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Logs of the lab's own processes go to stderr (their log files).
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIPFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

pub fn run(args: LabArgs) -> Result<ExitCode> {
    layout::check_prefix(&args.prefix)?;
    let prefix = args.prefix;
    let outcome = match args.command {
        LabCommand::Mirror(a) => {
            init_tracing("info");
            runtime()?.block_on(mirror::run(a)).map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Imds(a) => {
            init_tracing("info");
            runtime()?.block_on(imds::run(a)).map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Backend(a) => {
            init_tracing("info");
            runtime()?.block_on(backend::run(a)).map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Up(a) => {
            init_tracing("warn");
            lab_up(&prefix, a)
        }
        LabCommand::Down { purge } => {
            init_tracing("warn");
            lab_down(&prefix, purge)
        }
        LabCommand::Status { json } => lab_status(&prefix, json),
        LabCommand::AddNode { bootstrap } => {
            init_tracing("warn");
            let how = if bootstrap {
                node::Provisioning::Bootstrap
            } else {
                node::Provisioning::Direct
            };
            lab_add_node(&prefix, how)
        }
        LabCommand::Bootstrap { node } => lab_rebootstrap(&prefix, &node),
    };
    match outcome {
        Err(e) if e.is::<Refusal>() => {
            eprintln!("vipfleet-loadtest lab: {e}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        other => other,
    }
}

/// Why a lab with this prefix is considered to exist (empty: it does not).
fn existing(prefix: &str) -> Result<Vec<String>> {
    let mut why = down::leftovers(prefix)?;
    let state = LabState::path(&layout::lab_dir(prefix));
    if state.exists() {
        why.push(format!("state file {}", state.display()));
    }
    Ok(why)
}

fn lab_up(prefix: &str, args: up::UpArgs) -> Result<ExitCode> {
    tools::preflight()?;
    layout::check_counts(args.nodes, args.vips, args.route_tables)?;
    if !(1..=layout::MAX_BACKENDS).contains(&args.backends) {
        anyhow::bail!(
            "--backends {}: haproxy needs 1..={} backends",
            args.backends,
            layout::MAX_BACKENDS
        );
    }
    let exists = existing(prefix)?;
    if !exists.is_empty() {
        return Err(Refusal(format!(
            "a lab with prefix {prefix} exists ({}); remove it with `vipfleet-loadtest lab down --prefix {prefix}` \
             or choose another --prefix",
            exists.join("; ")
        ))
        .into());
    }
    let tools = tools::find()?;
    let octet = claims::claim(prefix, args.net_octet)?;
    let layout = layout::Layout::new(prefix, octet)?;
    let keep = args.keep_on_failure;
    let started = std::time::Instant::now();
    match runtime()?.block_on(up::bring_up(layout, tools, args)) {
        Ok(state) => {
            print!("{}", status_text(&state));
            eprintln!("lab {prefix}: up in {:.1} s", started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let logs = procs::log_dir(&layout::lab_dir(prefix));
            eprintln!("lab {prefix}: up failed: {e:#}");
            if keep {
                eprintln!(
                    "lab {prefix}: left in place (--keep-on-failure); logs in {}",
                    logs.display()
                );
            } else {
                eprintln!("lab {prefix}: tearing down; logs kept in {}", logs.display());
                if let Err(down) = down::teardown(prefix) {
                    eprintln!("lab {prefix}: teardown failed too: {down:#}");
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn lab_down(prefix: &str, purge: bool) -> Result<ExitCode> {
    tools::preflight()?;
    let started = std::time::Instant::now();
    let report = down::teardown(prefix)?;
    if purge {
        down::purge(prefix)?;
    }
    eprintln!(
        "lab {prefix}: down in {:.1} s ({} processes killed, {} namespaces and {} host links removed)",
        started.elapsed().as_secs_f64(),
        report.killed.len(),
        report.namespaces.len(),
        report.links.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_lab(prefix: &str) -> Result<LabState> {
    let dir = layout::lab_dir(prefix);
    LabState::load(&dir)?
        .ok_or_else(|| anyhow::anyhow!("no lab with prefix {prefix} (no {})", LabState::path(&dir).display()))
}

fn lab_add_node(prefix: &str, how: node::Provisioning) -> Result<ExitCode> {
    tools::preflight()?;
    let mut state = load_lab(prefix)?;
    let (index, bootstrap_output) = runtime()?.block_on(node::add_node(&mut state, how))?;
    eprint!("{bootstrap_output}");
    let n = &state.nodes[state.nodes.len() - 1];
    println!("{} {} {} {} {}", n.name, n.instance_id, n.ns, n.ip, n.eni);
    eprintln!("lab {prefix}: node {index} added");
    Ok(ExitCode::SUCCESS)
}

fn lab_rebootstrap(prefix: &str, name: &str) -> Result<ExitCode> {
    tools::preflight()?;
    let state = load_lab(prefix)?;
    let Some(node) = state.nodes.iter().find(|n| n.name == name) else {
        anyhow::bail!("lab {prefix} has no node {name}");
    };
    print!("{}", bootstrap::rerun(&state, node)?);
    Ok(ExitCode::SUCCESS)
}

fn lab_status(prefix: &str, json: bool) -> Result<ExitCode> {
    let dir = layout::lab_dir(prefix);
    let Some(mut state) = LabState::load(&dir)? else {
        eprintln!("no lab with prefix {prefix} (no {})", LabState::path(&dir).display());
        if let Ok(left) = down::leftovers(prefix) {
            if !left.is_empty() {
                eprintln!(
                    "but {}: run `vipfleet-loadtest lab down --prefix {prefix}`",
                    left.join("; ")
                );
            }
        }
        return Ok(ExitCode::FAILURE);
    };
    for proc in state.procs_mut() {
        proc.alive = Some(procs::is_alive(proc.pid, prefix));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", status_text(&state));
    }
    Ok(ExitCode::SUCCESS)
}

fn liveness(proc: &procs::ProcRecord, prefix: &str) -> String {
    let alive = proc.alive.unwrap_or_else(|| procs::is_alive(proc.pid, prefix));
    let how = match (alive, procs::is_stopped(proc.pid)) {
        (true, true) => "STOPPED",
        (true, false) => "alive",
        (false, _) => "DEAD",
    };
    format!("pid {} {how}", proc.pid)
}

fn status_text(s: &LabState) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "lab {} ({:?}) in {}", s.prefix, s.phase, s.dir.display());
    let _ = writeln!(
        out,
        "  moto    {}  ({})",
        s.moto.endpoint,
        liveness(&s.moto.proc, &s.prefix)
    );
    if let Some(dynamodb) = &s.moto_dynamodb {
        let _ = writeln!(
            out,
            "  moto    {}  DynamoDB  ({})",
            dynamodb.endpoint,
            liveness(&dynamodb.proc, &s.prefix)
        );
    }
    let _ = writeln!(
        out,
        "  imds    {}  control token {}  ({})",
        s.imds.endpoint,
        s.imds.control_token,
        liveness(&s.imds.proc, &s.prefix)
    );
    let _ = writeln!(
        out,
        "  mirror  poll {} ms, propagation {} ms, changes in {}  ({})",
        s.mirror.poll_ms,
        s.mirror.propagation_ms,
        s.mirror.changes_log.display(),
        liveness(&s.mirror.proc, &s.prefix)
    );
    let _ = writeln!(
        out,
        "  aws     {} {} table {} group {}; lease ttl {} ms, heartbeat {} ms",
        s.aws.vpc_id, s.aws.subnet_id, s.aws.table, s.aws.asg_name, s.lease.lease_ttl_ms, s.lease.heartbeat_ms
    );
    let peers = s.peer_port.map_or_else(
        || "off (failover by lease expiry)".to_string(),
        |p| format!("probes on udp/{p}"),
    );
    let _ = writeln!(out, "  peers   {peers}");
    let _ = writeln!(out, "  nodes");
    for n in &s.nodes {
        let _ = writeln!(
            out,
            "    {:<4} {} {:<8} {:<13} {} {}  agent {}  haproxy {}",
            n.name,
            n.instance_id,
            n.ns,
            n.ip,
            n.eni,
            n.dashboard_url,
            liveness(&n.agent, &s.prefix),
            liveness(&n.haproxy, &s.prefix)
        );
    }
    let _ = writeln!(out, "  route tables");
    for t in &s.route_tables {
        let _ = writeln!(
            out,
            "    {} router {} ({})  client {} ({})",
            t.id, t.router_ns, t.router_ip, t.client_ns, t.client_ip
        );
    }
    let vips: Vec<String> = s.vips.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "  vips ({}) {}", vips.len(), vips.join(" "));
    for b in &s.backends {
        let _ = writeln!(
            out,
            "  backend {} {} in {}  ({})",
            b.name,
            b.addr,
            b.ns,
            liveness(&b.proc, &s.prefix)
        );
    }
    out
}
