//! One node of the lab: its haproxy and agent configs, the environment its
//! agent runs in, and starting both processes in its namespace. Everything
//! is derived from the [`LabState`], so `lab up` and a scale-out in the
//! middle of a scenario ([`add_node`]) make nodes the same way.
//!
//! The agent gets no `[node]` section: its identity comes from the IMDS
//! emulator (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), and its AWS calls go to
//! moto (`AWS_ENDPOINT_URL`), as on a real instance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use vipfleet_agent::identity::emulator::EmulatedNode;

use super::aws::{self, Fabric, Instance};
use super::layout::{Layout, DASHBOARD_PORT, HAPROXY_HEALTH_PORT};
use super::procs::{self, Priority, ProcSpec};
use super::state::{self, LabState};
use super::{bootstrap, imds, netns};

/// How often agents read their lifecycle state from IMDS: scale-in
/// scenarios should not wait the production default of 5 s.
const LIFECYCLE_POLL_MS: u64 = 500;

/// The UDP port the agents probe each other on (`[peers] port`), the same
/// on every node, as the template's `PeerPort`.
pub const PEER_PORT: u16 = 7946;

/// The lab's AWS credentials. moto takes any; these are fake, and made to be
/// recognised: the lab test fails if one of them shows up in any log of the
/// lab (loadtest/tests/lab.rs), as the session token would if the SDK's
/// signed requests were logged.
pub const LAB_ACCESS_KEY_ID: &str = "AKIAVIPFLEETLAB7Q2XZ";
pub const LAB_SECRET_ACCESS_KEY: &str = "vipfleet-lab-secret-key-7f3a9c2e-never-logged";
pub const LAB_SESSION_TOKEN: &str = "vipfleet-lab-session-token-4b81d6f0-never-logged";
/// The agents' dashboard bearer token (`dashboard.token_file`), in `conf/`,
/// written by `lab up`: the drain and undrain endpoints are on, as on a
/// node the infra bootstrap made.
pub const DASHBOARD_TOKEN_FILE: &str = "dashboard.token";
/// The fleet's peer key (`peers.key_file`), in `conf/`: 256 random bits,
/// new with every `lab up`, shared by the lab's agents as one fleet's nodes
/// share theirs.
pub const PEER_KEY_FILE: &str = "peer.key";

/// The SDK's variables naming the AWS endpoint of every service, and
/// DynamoDB's own.
pub const ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL";
pub const DYNAMODB_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_DYNAMODB";

/// The AWS endpoints a process of the lab is given.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints<'a> {
    /// Every service but DynamoDB (`AWS_ENDPOINT_URL`).
    pub aws: &'a str,
    /// DynamoDB (`AWS_ENDPOINT_URL_DYNAMODB`).
    pub dynamodb: &'a str,
}

impl<'a> Endpoints<'a> {
    /// The lab's own: its two motos.
    pub fn of(lab: &'a LabState) -> Self {
        Self {
            aws: &lab.aws.endpoint,
            dynamodb: lab.dynamodb_endpoint(),
        }
    }

    /// The SDK configuration for these endpoints (the harness's own calls).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        vipfleet_agent::aws::local_endpoints_config(self.aws, self.dynamodb).await
    }
}

/// The environment of every agent (and of `init-table`): the lab's motos
/// as the AWS endpoints, fixed fake credentials, the emulator as IMDS, and
/// no shared AWS config files that could point anywhere else.
pub fn aws_env(endpoints: Endpoints<'_>, imds_endpoint: Option<&str>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        (ENDPOINT_VAR, endpoints.aws),
        (DYNAMODB_ENDPOINT_VAR, endpoints.dynamodb),
        ("AWS_ACCESS_KEY_ID", LAB_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", LAB_SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", LAB_SESSION_TOKEN),
        ("AWS_REGION", aws::REGION),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(imds) = imds_endpoint {
        env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), imds.to_string());
    }
    env
}

/// The fixtures of `lab` as [`aws`] takes them.
pub fn fabric_of(lab: &LabState) -> Fabric {
    Fabric {
        vpc_id: lab.aws.vpc_id.clone(),
        subnet_id: lab.aws.subnet_id.clone(),
        route_tables: lab.route_tables.iter().map(|t| t.id.clone()).collect(),
        launch_template: lab.aws.launch_template.clone(),
        asg_name: lab.aws.asg_name.clone(),
    }
}

/// How the IMDS emulator describes this instance.
pub fn imds_entry(vpc_id: &str, instance: &Instance) -> imds::Entry {
    imds::Entry {
        source: instance.ip,
        node: EmulatedNode {
            instance_id: instance.instance_id.clone(),
            mac: instance.mac.clone(),
            eni: instance.eni.clone(),
            private_ip: instance.ip,
            az: aws::AZ.to_string(),
            region: aws::REGION.to_string(),
            vpc_id: Some(vpc_id.to_string()),
            lifecycle_state: Some(imds::IN_SERVICE.to_string()),
        },
    }
}

pub fn haproxy_config(name: &str, stats_socket: &Path, backends: &[state::Backend]) -> String {
    let mut servers = String::new();
    for b in backends {
        let _ = writeln!(servers, "    server {} {} check", b.name, b.addr);
    }
    format!(
        "# vipfleet lab node {name}: written by `vipfleet-loadtest lab`.
# Every VIP is bound on the node (the agent's ifb link), so the wildcard bind
# serves them all; the routers' routes decide which node gets traffic.
global
    maxconn 4096
    nbthread 1
    stats socket {sock} mode 600 level admin
    stats timeout 30s

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 5s
    timeout http-keep-alive 30s

# The agent's health check: fails when no backend is up.
frontend health
    bind 127.0.0.1:{HAPROXY_HEALTH_PORT}
    monitor-uri /healthz
    monitor fail if {{ nbsrv(be_app) lt 1 }}

frontend fe_vips
    bind 0.0.0.0:80
    # Which node and VIP answered: the load harness attributes requests by these.
    http-response set-header X-Vipfleet-Node {name}
    http-response set-header X-Vipfleet-Vip %[dst]
    default_backend be_app

backend be_app
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}",
        sock = stats_socket.display(),
    )
}

pub fn agent_config(lab: &LabState, ip: std::net::Ipv4Addr) -> String {
    let quoted = |items: Vec<String>| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "# written by `vipfleet-loadtest lab`; identity comes from the IMDS emulator.
[aws]
table = {table:?}
region = {region:?}

[fleet]
vips = [{vips}]
route_tables = [{tables}]
vpc_id = {vpc:?}

[lease]
profile = {profile:?}
heartbeat_interval_ms = {hb}
lease_ttl_ms = {ttl}

[health]
url = \"http://127.0.0.1:{HAPROXY_HEALTH_PORT}/healthz\"

[vip_binding]
kind = \"ifb\"

[dashboard]
listen = [\"{ip}:{DASHBOARD_PORT}\"]
token_file = {token_file:?}

[lifecycle]
poll_interval_ms = {LIFECYCLE_POLL_MS}

{peers}",
        table = lab.aws.table,
        region = lab.aws.region,
        vips = quoted(lab.vips.iter().map(ToString::to_string).collect()),
        tables = quoted(lab.route_tables.iter().map(|t| t.id.clone()).collect()),
        vpc = lab.aws.vpc_id,
        profile = lab.lease.profile,
        hb = lab.lease.heartbeat_ms,
        ttl = lab.lease.lease_ttl_ms,
        token_file = lab.dir.join("conf").join(DASHBOARD_TOKEN_FILE).display().to_string(),
        peers = peers_section(lab.peer_port, ip, &lab.dir.join("conf").join(PEER_KEY_FILE)),
    )
}

/// `[peers]`: bound to the node's own address on the bridge (where the
/// other nodes reach it), sealed with the lab's key, with the core's
/// default timings written out, so the crash bound the harness holds the
/// lab to ([`crate::scenario`]'s checks) is the one the agents run.
fn peers_section(port: Option<u16>, ip: std::net::Ipv4Addr, key_file: &Path) -> String {
    let Some(port) = port else {
        return "[peers]\nenabled = false\n".into();
    };
    let d = vipfleet_core::peers::PeerConfig::default();
    format!(
        "[peers]
enabled = true
key_file = {key_file:?}
port = {port}
bind = \"{ip}\"
probe_interval_ms = {probe}
ack_timeout_ms = {ack}
indirect_timeout_ms = {indirect}
confirm_rounds = {rounds}
",
        probe = d.probe_interval.as_millis(),
        ack = d.ack_timeout.as_millis(),
        indirect = d.indirect_timeout.as_millis(),
        rounds = d.confirm_rounds,
        key_file = key_file.display().to_string(),
    )
}

pub fn agent_args(lab: &LabState, config: &Path) -> Vec<String> {
    let mut args = vec!["run".to_string(), "--config".into(), config.display().to_string()];
    for set in &lab.agent_sets {
        args.push("--set".into());
        args.push(set.clone());
    }
    args
}

/// `vipfleet-agent check-config` with the agents' arguments, so a bad
/// `--agent-set` or lease setting fails with the agent's own message.
pub fn check_agent_config(lab: &LabState, config: &Path) -> Result<()> {
    let mut args = agent_args(lab, config);
    args[0] = "check-config".into();
    let out = Command::new(&lab.programs.agent)
        .args(&args)
        .env_clear()
        .envs(aws_env(Endpoints::of(lab), Some(&lab.imds.endpoint)))
        .output()
        .with_context(|| format!("running {} check-config", lab.programs.agent.display()))?;
    if !out.status.success() {
        bail!(
            "the agent refuses the lab's config {}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What the lab's agents log unless `VIPFLEET_LOG` says otherwise: every
/// input and effect of the lease machine too, so that a scenario that fails
/// once in CI can be explained from its logs (a few MB per agent over the
/// whole suite).
pub const AGENT_LOG_DEFAULT: &str = "info,vipfleet_agent::driver=trace";

fn agent_env(lab: &LabState) -> BTreeMap<String, String> {
    let mut env = aws_env(Endpoints::of(lab), Some(&lab.imds.endpoint));
    if std::env::var_os("VIPFLEET_LOG").is_none() {
        env.insert("VIPFLEET_LOG".into(), AGENT_LOG_DEFAULT.into());
    }
    env
}

/// The name of node `index`, used for files and process records.
pub fn node_name(index: usize) -> String {
    format!("n{index}")
}

/// Writes node `index`'s configs and starts its haproxy and agent. The
/// instance and the namespace must exist.
pub fn start_node(lab: &LabState, index: usize, instance: &Instance) -> Result<state::Node> {
    let layout = Layout::new(&lab.prefix, lab.octet)?;
    let name = node_name(index);
    let ns = layout.node_ns(index);
    let stats_socket = lab.dir.join("run").join(format!("{name}.haproxy.sock"));
    let haproxy_config_path = lab.dir.join("conf").join(format!("{name}.haproxy.cfg"));
    std::fs::write(
        &haproxy_config_path,
        haproxy_config(&name, &stats_socket, &lab.backends),
    )?;
    let agent_config_path = lab.dir.join("conf").join(format!("{name}.toml"));
    std::fs::write(&agent_config_path, agent_config(lab, instance.ip))?;
    if index == 0 {
        check_agent_config(lab, &agent_config_path)?;
    }

    let haproxy = procs::spawn(
        &lab.dir,
        &lab.prefix,
        &ProcSpec {
            name: format!("{name}-haproxy"),
            netns: Some(ns.clone()),
            program: lab.programs.haproxy.clone(),
            args: vec!["-f".into(), haproxy_config_path.display().to_string()],
            env: BTreeMap::new(),
            priority: Priority::Normal,
        },
    )?;
    let agent = procs::spawn(
        &lab.dir,
        &lab.prefix,
        &ProcSpec {
            name: format!("{name}-agent"),
            netns: Some(ns.clone()),
            program: lab.programs.agent.clone(),
            args: agent_args(lab, &agent_config_path),
            env: agent_env(lab),
            priority: Priority::Normal,
        },
    )?;
    let files = NodeFiles {
        agent_config: agent_config_path,
        haproxy_config: haproxy_config_path,
        haproxy_stats_socket: stats_socket,
    };
    Ok(node_record(index, instance, ns, files, agent, haproxy))
}

/// Where a node's configs and haproxy's admin socket are, in host paths.
pub struct NodeFiles {
    pub agent_config: std::path::PathBuf,
    pub haproxy_config: std::path::PathBuf,
    pub haproxy_stats_socket: std::path::PathBuf,
}

/// The lab's record of node `index`, however it was provisioned.
pub fn node_record(
    index: usize,
    instance: &Instance,
    ns: String,
    files: NodeFiles,
    agent: procs::ProcRecord,
    haproxy: procs::ProcRecord,
) -> state::Node {
    state::Node {
        index,
        name: node_name(index),
        instance_id: instance.instance_id.clone(),
        eni: instance.eni.clone(),
        mac: instance.mac.clone(),
        ip: instance.ip,
        ns,
        az: aws::AZ.to_string(),
        dashboard_url: format!("http://{}:{DASHBOARD_PORT}/", instance.ip),
        agent_config: files.agent_config,
        haproxy_config: files.haproxy_config,
        haproxy_stats_socket: files.haproxy_stats_socket,
        agent,
        haproxy,
    }
}

/// How a new node gets its haproxy and agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// The lab writes the configs and starts both processes ([`start_node`]).
    Direct,
    /// The node bootstrap runs, as user data would ([`bootstrap::bootstrap_node`]).
    Bootstrap,
}

/// Scale-out: a new instance in moto (attached to the group), its
/// namespace, its IMDS entry, haproxy and agent; saves the state. Returns
/// the new node's index and, for a bootstrapped node, the bootstrap's
/// output. Convergence is the caller's to wait for.
pub async fn add_node(lab: &mut LabState, how: Provisioning) -> Result<(usize, String)> {
    let index = lab.nodes.iter().map(|n| n.index + 1).max().unwrap_or(0);
    let layout = Layout::new(&lab.prefix, lab.octet)?;
    super::layout::check_counts(index + 1, lab.vips.len(), lab.route_tables.len())?;
    if how == Provisioning::Bootstrap {
        bootstrap::check_lab(lab)?;
    }
    let sdk = lab.sdk().await;
    let instance = aws::launch_node(&sdk, &fabric_of(lab), &layout, index).await?;
    netns::create_node(&layout, index, &instance.mac, lab.route_tables.len())?;
    let entry = imds_entry(&lab.aws.vpc_id, &instance);
    imds::register(&lab.imds.endpoint, &lab.imds.control_token, &entry).await?;
    let mut entries = imds::read_nodes(&lab.imds.nodes_file)?;
    entries.push(entry);
    imds::write_nodes(&lab.imds.nodes_file, &entries)?;
    let (node, output) = match how {
        Provisioning::Direct => (start_node(lab, index, &instance)?, String::new()),
        Provisioning::Bootstrap => bootstrap::bootstrap_node(lab, index, &instance)?,
    };
    lab.nodes.push(node);
    lab.save()?;
    Ok((index, output))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vipfleet_agent::config::{self, PeerAuthConfig};

    use super::*;

    const REQUIRED: &str = "[aws]\ntable = \"t\"\n[fleet]\nvips = [\"10.200.0.1\"]\n\
                            route_tables = [\"rtb-1\"]\n[health]\ndisabled = true\n";

    #[test]
    fn the_peers_section_seals_with_the_lab_key_and_loads() {
        let key = Path::new("/lab/conf/peer.key");
        let section = peers_section(Some(PEER_PORT), "10.0.0.5".parse().unwrap(), key);
        let loaded = config::load(&format!("{REQUIRED}{section}"), &BTreeMap::new(), &[]).unwrap();
        let peers = loaded.peers.expect("peers on");
        assert_eq!(
            peers.auth,
            PeerAuthConfig::Keys {
                key_file: key.to_path_buf(),
                previous_key_file: None
            }
        );
        assert_eq!(peers.port, PEER_PORT);
        let off = peers_section(None, "10.0.0.5".parse().unwrap(), key);
        let loaded = config::load(&format!("{REQUIRED}{off}"), &BTreeMap::new(), &[]).unwrap();
        assert_eq!(loaded.peers, None);
    }
}
