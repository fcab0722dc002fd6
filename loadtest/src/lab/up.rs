//! `lab up`: builds the whole lab, starts its processes, waits until the
//! fleet has converged, writes `state.json` and returns with everything
//! running in the background.
//!
//! Order, and why: the bridge and the host's leg first (moto and the IMDS
//! emulator listen on the host's bridge address); moto next, since it takes
//! seconds to import and boots while the routers, clients and backends are
//! made; then the AWS fixtures through the SDK (node MACs and ENIs come from
//! moto); then the nodes' namespaces, the emulator, the mirror, and last
//! haproxy and the agents. If anything fails, the lab is torn down again
//! (unless `--keep-on-failure`), keeping the logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::aws::{self, Fabric, Instance};
use super::layout::{self, Layout, BACKEND_BASE_PORT};
use super::procs::{self, Priority, ProcRecord, ProcSpec};
use super::state::{self, LabState, Phase};
use super::tools::Tools;
use super::{check, http, imds, mirror, netns, node};

/// moto imports a lot of Python before it listens.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);
const IMDS_START_TIMEOUT: Duration = Duration::from_secs(10);
const START_POLL: Duration = Duration::from_millis(100);
const CONVERGE_POLL: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of a dead process's log quoted in the error.
const LOG_TAIL_LINES: usize = 15;

/// The agents' `lease.profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LeaseProfile {
    /// Hot reads (every node scans the table four times a second): the
    /// lab's default, since its scenarios wait out leases and a 3 s lease
    /// keeps them short.
    Hot,
    /// Cold reads once the fleet is settled: the agent's default.
    Cheap,
}

impl LeaseProfile {
    pub fn name(&self) -> &'static str {
        match self {
            LeaseProfile::Hot => "hot",
            LeaseProfile::Cheap => "cheap",
        }
    }

    /// The lease TTL and heartbeat interval (ms) the agents run: the
    /// profile's, unless given.
    pub fn timings_ms(&self, lease_ttl: Option<u64>, heartbeat: Option<u64>) -> (u64, u64) {
        let lease = match self {
            LeaseProfile::Hot => vipfleet_core::LeaseConfig::HOT,
            LeaseProfile::Cheap => vipfleet_core::LeaseConfig::CHEAP,
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        (
            lease_ttl.unwrap_or(ms(lease.lease_ttl)),
            heartbeat.unwrap_or(ms(lease.heartbeat_interval)),
        )
    }
}

#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    /// Nodes (namespaces with haproxy and an agent).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// VIPs (one shard each): 10.200.0.1 and up.
    #[arg(long, default_value_t = 6)]
    pub vips: usize,
    /// Route tables, each with a router and a client namespace.
    #[arg(long, default_value_t = 2)]
    pub route_tables: usize,
    /// The agents' lease TTL (ms; default: the profile's, 3000 hot, 15000
    /// cheap).
    #[arg(long)]
    pub lease_ttl: Option<u64>,
    /// The agents' heartbeat interval (ms; default: the profile's, 1000
    /// hot, 5000 cheap).
    #[arg(long)]
    pub heartbeat: Option<u64>,
    /// The agents' lease profile; `--lease-ttl` and `--heartbeat` override
    /// its timings.
    #[arg(long, value_enum, default_value_t = LeaseProfile::Hot)]
    pub profile: LeaseProfile,
    /// Delay before the mirror applies a route change seen in moto (ms).
    #[arg(long, default_value_t = 0)]
    pub propagation_ms: u64,
    /// How often the mirror reads the route tables (ms).
    #[arg(long, default_value_t = mirror::DEFAULT_POLL_MS)]
    pub mirror_poll_ms: u64,
    /// The lab's networks are 10.N/16 and 10.(N+1)/16; default: the first
    /// free N from 77 on.
    #[arg(long)]
    pub net_octet: Option<u8>,
    /// Backend HTTP servers behind every haproxy.
    #[arg(long, default_value_t = 2)]
    pub backends: usize,
    /// Agents do not probe each other (`[peers] enabled = false`): a dead
    /// node is failed over when its lease runs out, as before peer probes.
    #[arg(long)]
    pub no_peers: bool,
    /// Extra agent option `section.key=value` (repeatable), passed as `--set`.
    #[arg(long = "agent-set", value_name = "SECTION.KEY=VALUE")]
    pub agent_sets: Vec<String>,
    /// Give up if the fleet has not converged after this long (s).
    #[arg(long, default_value_t = 120)]
    pub ready_timeout_s: u64,
    /// Leave whatever was built in place when `up` fails (for debugging).
    #[arg(long)]
    pub keep_on_failure: bool,
}

/// Everything `up` builds on, shared by its steps.
struct Ctx {
    layout: Layout,
    dir: PathBuf,
    tools: Tools,
    args: UpArgs,
    started: Instant,
}

impl Ctx {
    fn progress(&self, what: &str) {
        eprintln!(
            "lab {} [{:5.1}s] {what}",
            self.layout.prefix,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn spawn(
        &self,
        name: &str,
        netns: Option<String>,
        program: &Path,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        priority: Priority,
    ) -> Result<ProcRecord> {
        procs::spawn(
            &self.dir,
            &self.layout.prefix,
            &ProcSpec {
                name: name.to_string(),
                netns,
                program: program.to_path_buf(),
                args,
                env,
                priority,
            },
        )
    }

    fn conf(&self, file: &str) -> PathBuf {
        self.dir.join("conf").join(file)
    }
}

/// A free TCP port on `ip` (the host's bridge address), for moto and IMDS.
fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("finding a free port on {ip}"))?;
    Ok(listener.local_addr()?.port())
}

/// 128 random bits, hex: the IMDS control token, the dashboard token.
fn random_token() -> Result<String> {
    random_hex::<16>()
}

/// `N` random bytes, hex.
fn random_hex<const N: usize>() -> Result<String> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Writes `text` to a new file only its owner may read.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Builds the lab. On error the caller tears down what was built.
pub async fn bring_up(layout: Layout, tools: Tools, args: UpArgs) -> Result<LabState> {
    let dir = layout::lab_dir(&layout.prefix);
    for sub in ["conf", "logs", "pids", "run"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A new lab starts with fresh logs; old ones of a previous lab go.
    for entry in std::fs::read_dir(procs::log_dir(&dir))?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    // Read by every agent at start (`dashboard.token_file`).
    std::fs::write(
        dir.join("conf").join(node::DASHBOARD_TOKEN_FILE),
        format!("{}\n", random_token()?),
    )?;
    // One key per fleet (`peers.key_file`), 256 bits, readable by its
    // owner only, as the bootstrap writes it.
    write_secret(
        &dir.join("conf").join(node::PEER_KEY_FILE),
        &format!("{}\n", random_hex::<32>()?),
    )?;
    let ctx = Ctx {
        layout,
        dir,
        tools,
        args,
        started: Instant::now(),
    };
    let l = &ctx.layout;
    let a = &ctx.args;

    ctx.progress(&format!(
        "network 10.{}.0.0/16, bridge namespace {}",
        l.octet,
        l.vpc_ns()
    ));
    netns::create_vpc(l)?;
    let host_ip = l.host_ip();
    let moto = start_moto(&ctx, "moto", host_ip)?;
    let moto_dynamodb = start_moto(&ctx, "moto-dynamodb", host_ip)?;

    ctx.progress(&format!("{} routers with their clients, backends", a.route_tables));
    for j in 0..a.route_tables {
        netns::create_router_and_client(l, j)?;
    }
    netns::create_backend_ns(l)?;
    let mut backends = Vec::new();
    for b in 0..a.backends {
        let port = BACKEND_BASE_PORT + u16::try_from(b).unwrap_or(0);
        let addr = SocketAddr::from((l.backend_ip(), port));
        let name = format!("be{b}");
        let proc = ctx.spawn(
            &name,
            Some(l.backend_ns()),
            &ctx.tools.loadtest,
            vec![
                "lab".into(),
                "backend".into(),
                "--listen".into(),
                addr.to_string(),
                "--name".into(),
                name.clone(),
            ],
            BTreeMap::new(),
            Priority::Normal,
        )?;
        backends.push(state::Backend {
            name,
            ns: l.backend_ns(),
            addr,
            proc,
        });
    }

    wait_for_moto(&ctx, &moto).await?;
    wait_for_moto(&ctx, &moto_dynamodb).await?;
    let endpoints = node::Endpoints {
        aws: &moto.endpoint,
        dynamodb: &moto_dynamodb.endpoint,
    };
    let sdk = endpoints.sdk().await;
    let fabric = aws::build_fabric(&sdk, l, a.route_tables).await?;
    ctx.progress(&format!(
        "moto: {} with subnet {}, route tables {}, group {}",
        fabric.vpc_id,
        fabric.subnet_id,
        fabric.route_tables.join(" "),
        fabric.asg_name
    ));
    init_table(&ctx, endpoints)?;

    let mut instances = Vec::new();
    for i in 0..a.nodes {
        let instance = aws::launch_node(&sdk, &fabric, l, i).await?;
        netns::create_node(l, i, &instance.mac, a.route_tables)?;
        instances.push(instance);
    }
    ctx.progress(&format!("{} node instances and namespaces", instances.len()));

    let imds_state = start_imds(&ctx, &fabric, &instances).await?;
    let mirror_state = start_mirror(&ctx, &moto.endpoint, &fabric)?;

    let vips: Vec<_> = (0..a.vips).map(layout::vip).collect();
    let mut lab = LabState {
        version: state::STATE_VERSION,
        prefix: l.prefix.clone(),
        octet: l.octet,
        dir: ctx.dir.clone(),
        phase: Phase::Starting,
        created_unix_ms: state::unix_ms_now(),
        ready_unix_ms: None,
        network: state::Network {
            vpc_ns: l.vpc_ns(),
            bridge: layout::BRIDGE.to_string(),
            host_link: l.host_link(),
            host_ip,
            vpc_cidr: l.vpc_cidr(),
            subnet_cidr: l.subnet_cidr(),
        },
        aws: state::Aws {
            endpoint: moto.endpoint.clone(),
            region: aws::REGION.to_string(),
            az: aws::AZ.to_string(),
            vpc_id: fabric.vpc_id.clone(),
            subnet_id: fabric.subnet_id.clone(),
            table: l.table_name(),
            asg_name: fabric.asg_name.clone(),
            launch_template: fabric.launch_template.clone(),
        },
        lease: state::Lease {
            lease_ttl_ms: a.profile.timings_ms(a.lease_ttl, a.heartbeat).0,
            heartbeat_ms: a.profile.timings_ms(a.lease_ttl, a.heartbeat).1,
            profile: a.profile.name().into(),
        },
        agent_sets: a.agent_sets.clone(),
        peer_port: (!a.no_peers).then_some(super::node::PEER_PORT),
        programs: state::Programs {
            loadtest: ctx.tools.loadtest.clone(),
            agent: ctx.tools.agent.clone(),
            haproxy: ctx.tools.haproxy.clone(),
        },
        moto,
        moto_dynamodb: Some(moto_dynamodb),
        imds: imds_state,
        mirror: mirror_state,
        backends,
        vips,
        route_tables: fabric
            .route_tables
            .iter()
            .enumerate()
            .map(|(j, id)| state::RouteTableInfo {
                index: j,
                id: id.clone(),
                router_ns: l.router_ns(j),
                router_ip: l.router_ip(j),
                client_ns: l.client_ns(j),
                client_ip: l.client_ip(j),
                client_net: l.client_net(j),
            })
            .collect(),
        nodes: Vec::new(),
    };
    for (i, instance) in instances.iter().enumerate() {
        let node = node::start_node(&lab, i, instance)?;
        lab.nodes.push(node);
    }
    lab.save()?;
    ctx.progress(&format!("{} nodes started (haproxy + agent)", lab.nodes.len()));

    wait_converged(&ctx, &lab, &sdk).await?;
    lab.phase = Phase::Up;
    lab.ready_unix_ms = Some(state::unix_ms_now());
    lab.save()?;
    ctx.progress("up");
    Ok(lab)
}

/// Starts one moto on a free port of the host's bridge address.
fn start_moto(ctx: &Ctx, name: &str, host_ip: Ipv4Addr) -> Result<state::Moto> {
    let port = free_port(host_ip)?;
    let endpoint = format!("http://{host_ip}:{port}");
    let proc = ctx.spawn(
        name,
        None,
        &ctx.tools.python,
        vec![
            ctx.tools.moto_launcher.display().to_string(),
            "-H".into(),
            host_ip.to_string(),
            "-p".into(),
            port.to_string(),
        ],
        BTreeMap::new(),
        Priority::AwsStandIn,
    )?;
    ctx.progress(&format!("{name} starting at {endpoint} (pid {})", proc.pid));
    Ok(state::Moto { endpoint, proc })
}

async fn wait_for_moto(ctx: &Ctx, moto: &state::Moto) -> Result<()> {
    let (endpoint, name) = (&moto.endpoint, &moto.proc.name);
    let addr = http::endpoint_addr(endpoint)?;
    let deadline = Instant::now() + MOTO_START_TIMEOUT;
    loop {
        if let Ok(r) = http::request(addr, "GET", "/moto-api/", &[], "", PROBE_TIMEOUT).await {
            if r.status == 200 {
                ctx.progress(&format!("{name} answers"));
                return Ok(());
            }
        }
        ensure_alive(&moto.proc)?;
        if Instant::now() >= deadline {
            bail!(
                "{name} did not answer at {endpoint} within {MOTO_START_TIMEOUT:?}; see {}",
                moto.proc.log.display()
            );
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// `up` started every process and never reaps them, so a pid that is
/// running (not a zombie) is still the process it started.
fn ensure_alive(proc: &ProcRecord) -> Result<()> {
    if procs::is_running(proc.pid) {
        return Ok(());
    }
    bail!(
        "{} (pid {}) exited; last lines of {}:\n{}",
        proc.name,
        proc.pid,
        proc.log.display(),
        procs::log_tail(&proc.log, LOG_TAIL_LINES)
    )
}

fn init_table(ctx: &Ctx, endpoints: node::Endpoints<'_>) -> Result<()> {
    let table = ctx.layout.table_name();
    let out = Command::new(&ctx.tools.agent)
        .args(["init-table", "--table", &table])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(node::aws_env(endpoints, None))
        .output()
        .with_context(|| format!("running {} init-table", ctx.tools.agent.display()))?;
    if !out.status.success() {
        bail!(
            "vipfleet-agent init-table --table {table} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ctx.progress(String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

async fn start_imds(ctx: &Ctx, fabric: &Fabric, instances: &[Instance]) -> Result<state::Imds> {
    let token = random_token()?;
    let token_file = ctx.conf("imds.token");
    std::fs::write(&token_file, &token)?;
    let nodes_file = ctx.conf("imds-nodes.json");
    let entries: Vec<imds::Entry> = instances
        .iter()
        .map(|inst| node::imds_entry(&fabric.vpc_id, inst))
        .collect();
    imds::write_nodes(&nodes_file, &entries)?;
    let listen = SocketAddr::from((ctx.layout.host_ip(), free_port(ctx.layout.host_ip())?));
    let endpoint = format!("http://{listen}");
    let proc = ctx.spawn(
        "imds",
        None,
        &ctx.tools.loadtest,
        vec![
            "lab".into(),
            "imds".into(),
            "--listen".into(),
            listen.to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--nodes-file".into(),
            nodes_file.display().to_string(),
        ],
        BTreeMap::new(),
        Priority::AwsStandIn,
    )?;
    // Ready when the control API answers with the node table.
    let auth = format!("Bearer {token}");
    let deadline = Instant::now() + IMDS_START_TIMEOUT;
    loop {
        match http::request(
            listen,
            "GET",
            "/control/nodes",
            &[("Authorization", &auth)],
            "",
            PROBE_TIMEOUT,
        )
        .await
        {
            Ok(r) if r.status == 200 => break,
            _ if Instant::now() >= deadline => bail!(
                "the IMDS emulator did not answer at {endpoint}; see {}",
                proc.log.display()
            ),
            _ => {
                ensure_alive(&proc)?;
                tokio::time::sleep(START_POLL).await;
            }
        }
    }
    ctx.progress(&format!("IMDS emulator at {endpoint} (pid {})", proc.pid));
    Ok(state::Imds {
        endpoint,
        control_token: token,
        nodes_file,
        proc,
    })
}

fn start_mirror(ctx: &Ctx, moto_endpoint: &str, fabric: &Fabric) -> Result<state::Mirror> {
    let changes_log = ctx.dir.join("logs").join("mirror-changes.jsonl");
    procs::truncate(&changes_log)?;
    let mut args = vec![
        "lab".to_string(),
        "mirror".into(),
        "--endpoint".into(),
        moto_endpoint.to_string(),
        "--poll-ms".into(),
        ctx.args.mirror_poll_ms.to_string(),
        "--propagation-ms".into(),
        ctx.args.propagation_ms.to_string(),
        "--changes-log".into(),
        changes_log.display().to_string(),
    ];
    for (j, id) in fabric.route_tables.iter().enumerate() {
        args.push("--route-table".into());
        args.push(format!("{id}={}", ctx.layout.router_ns(j)));
    }
    let proc = ctx.spawn(
        "mirror",
        None,
        &ctx.tools.loadtest,
        args,
        BTreeMap::new(),
        Priority::AwsStandIn,
    )?;
    ctx.progress(&format!(
        "route mirror (pid {}), propagation {} ms",
        proc.pid, ctx.args.propagation_ms
    ));
    Ok(state::Mirror {
        changes_log,
        poll_ms: ctx.args.mirror_poll_ms,
        propagation_ms: ctx.args.propagation_ms,
        proc,
    })
}

async fn wait_converged(ctx: &Ctx, lab: &LabState, sdk: &aws_config::SdkConfig) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(ctx.args.ready_timeout_s);
    let mut last = String::new();
    loop {
        for proc in lab.procs() {
            ensure_alive(proc)?;
        }
        let (summary, problems, done) = match check::check(lab, sdk).await {
            // Settled, not only routed: a scenario's counts start here, and
            // a hand-off still under way would be counted as its own.
            Ok(c) => (
                c.summary(),
                c.problems.clone(),
                c.converged() && c.balanced(lab.nodes.len()),
            ),
            Err(e) => (format!("not readable yet: {e:#}"), Vec::new(), false),
        };
        if done {
            ctx.progress(&format!("converged: {summary}"));
            return Ok(());
        }
        if summary != last {
            ctx.progress(&format!("waiting: {summary}"));
            last = summary.clone();
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "the fleet did not converge within {} s: {summary}\n  {}",
                ctx.args.ready_timeout_s,
                problems.join("\n  ")
            ));
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}
