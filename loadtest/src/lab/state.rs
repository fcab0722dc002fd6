//! The lab's state file, `<lab dir>/state.json`, which is also what
//! `lab status --json` prints: the contract by which other tools (the load
//! harness, the integration tests) drive a running lab.
//!
//! The schema is versioned ([`STATE_VERSION`]); fields are only ever added.
//! `lab status --json` prints the same document with `alive` filled in on
//! every process record (it is absent from the file itself). The file is
//! replaced atomically (write, then rename), so a reader never sees half.
//!
//! ```text
//! { "version": 1, "prefix": "vf", "octet": 77, "dir": "/var/tmp/vipfleet-lab-vf",
//!   "phase": "up",                       // "starting" while `lab up` waits for convergence
//!   "created_unix_ms": 0, "ready_unix_ms": 0,   // ready: null until converged
//!   "network": { "vpc_ns", "bridge", "host_link", "host_ip", "vpc_cidr", "subnet_cidr" },
//!   "aws": { "endpoint": "http://10.77.0.254:PORT", "region", "az", "vpc_id", "subnet_id",
//!            "table", "asg_name", "launch_template" },
//!   "lease": { "lease_ttl_ms", "heartbeat_ms", "profile" },
//!   "agent_sets": [ "section.key=value", … ],   // extra `--set`s of every agent
//!   "programs": { "loadtest", "agent", "haproxy" },   // paths of the binaries the lab runs
//!   "moto": { "endpoint", "proc": PROC },           // EC2, Auto Scaling, SSM
//!   "moto_dynamodb": { "endpoint", "proc": PROC },  // the lease table; absent in older labs
//!   "imds": { "endpoint", "control_token", "nodes_file", "proc": PROC },
//!   "mirror": { "changes_log", "poll_ms", "propagation_ms", "proc": PROC },
//!   "backends": [ { "name", "ns", "addr": "10.77.0.250:8080", "proc": PROC } ],
//!   "vips": [ "10.200.0.1/32", … ],
//!   "route_tables": [ { "index", "id": "rtb-…", "router_ns", "router_ip", "client_ns", "client_ip",
//!                       "client_net" } ],
//!   "nodes": [ { "index", "name": "n0", "instance_id", "eni", "mac", "ip", "ns", "az",
//!                "dashboard_url", "agent_config", "haproxy_config", "haproxy_stats_socket",
//!                "agent": PROC, "haproxy": PROC } ] }
//! PROC = { "name", "pid", "netns": str|null, "program", "args": [..], "env": {..}, "log",
//!          "alive": bool (status only) }
//! ```
//!
//! A `PROC` holds everything needed to start the process again
//! ([`super::procs::respawn`]): a harness that `kill -9`s an agent can bring
//! it back as it was.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vipfleet_core::Vip;

use super::procs::ProcRecord;

pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Everything is started; `lab up` is waiting for the fleet to converge.
    Starting,
    /// Every shard owned, every route in moto and in the routers agrees.
    Up,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub prefix: String,
    /// The lab lives in 10.octet.0.0/16 (VPC) and 10.(octet+1).0.0/16 (clients).
    pub octet: u8,
    pub dir: PathBuf,
    pub phase: Phase,
    pub created_unix_ms: u64,
    pub ready_unix_ms: Option<u64>,
    pub network: Network,
    pub aws: Aws,
    pub lease: Lease,
    /// Extra agent options (`section.key=value`), passed to every agent as `--set`.
    #[serde(default)]
    pub agent_sets: Vec<String>,
    /// The UDP port the agents probe each other on; `None`: peer probes
    /// off (`lab up --no-peers`), failover by lease expiry only.
    #[serde(default)]
    pub peer_port: Option<u16>,
    pub programs: Programs,
    /// moto for EC2, Auto Scaling and SSM.
    pub moto: Moto,
    /// moto for DynamoDB alone: moto answers one request at a time, and
    /// the route mirror's polls must not queue the lease calls. `None` in
    /// labs made before it: DynamoDB was the one moto.
    #[serde(default)]
    pub moto_dynamodb: Option<Moto>,
    pub imds: Imds,
    pub mirror: Mirror,
    pub backends: Vec<Backend>,
    pub vips: Vec<Vip>,
    pub route_tables: Vec<RouteTableInfo>,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    /// The namespace holding the bridge every other namespace joins.
    pub vpc_ns: String,
    pub bridge: String,
    /// The root namespace's leg on the bridge: how the host (moto, IMDS,
    /// the harness) reaches the lab.
    pub host_link: String,
    pub host_ip: Ipv4Addr,
    pub vpc_cidr: String,
    pub subnet_cidr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aws {
    /// moto for every service but DynamoDB; what the agents get as
    /// `AWS_ENDPOINT_URL` ([`LabState::dynamodb_endpoint`] for DynamoDB).
    pub endpoint: String,
    pub region: String,
    pub az: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// The DynamoDB lease table.
    pub table: String,
    /// The Auto Scaling group the node instances are attached to.
    pub asg_name: String,
    pub launch_template: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    pub lease_ttl_ms: u64,
    pub heartbeat_ms: u64,
    /// The agents' `lease.profile` (the timings above override its own).
    #[serde(default = "hot_profile")]
    pub profile: String,
}

/// What labs made before the profile was recorded ran.
fn hot_profile() -> String {
    "hot".into()
}

impl Lease {
    /// The lease the agents run: the profile with the lab's heartbeat and
    /// TTL, after the agent's own adjustment of the shard refresh to the
    /// reconcile interval.
    pub fn config(&self) -> vipfleet_core::LeaseConfig {
        use vipfleet_core::LeaseConfig;
        let base = match self.profile.as_str() {
            "cheap" => LeaseConfig::CHEAP,
            "fast" => LeaseConfig::FAST,
            _ => LeaseConfig::HOT,
        };
        let mut lease = LeaseConfig {
            heartbeat_interval: std::time::Duration::from_millis(self.heartbeat_ms),
            lease_ttl: std::time::Duration::from_millis(self.lease_ttl_ms),
            ..base
        };
        lease.shard_refresh_interval = lease.shard_refresh_interval.min(lease.reconcile_interval);
        lease
    }
}

/// The binaries the lab runs, so that nodes added later run the same ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Programs {
    pub loadtest: PathBuf,
    pub agent: PathBuf,
    pub haproxy: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Moto {
    pub endpoint: String,
    pub proc: ProcRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Imds {
    /// What the agents get as `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub endpoint: String,
    /// Bearer token of the emulator's control API (`/control/...`).
    pub control_token: String,
    /// The node table the emulator loads at start (JSON), kept in step
    /// with registrations made through the lab.
    pub nodes_file: PathBuf,
    pub proc: ProcRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mirror {
    /// One JSON object per kernel route change (see [`super::mirror`]).
    pub changes_log: PathBuf,
    pub poll_ms: u64,
    pub propagation_ms: u64,
    pub proc: ProcRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backend {
    pub name: String,
    pub ns: String,
    pub addr: SocketAddr,
    pub proc: ProcRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteTableInfo {
    pub index: usize,
    /// The route table's id in moto.
    pub id: String,
    /// Namespace whose kernel routes mirror this table.
    pub router_ns: String,
    pub router_ip: Ipv4Addr,
    /// Namespace to send client traffic from (`ip netns exec`).
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    pub client_net: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub index: usize,
    /// `n<index>`: the name used for files and process records.
    pub name: String,
    pub instance_id: String,
    pub eni: String,
    pub mac: String,
    /// The ENI's private IP in moto, and the node's address on the bridge.
    pub ip: Ipv4Addr,
    pub ns: String,
    pub az: String,
    /// The agent's dashboard, reachable from the host namespace.
    pub dashboard_url: String,
    pub agent_config: PathBuf,
    pub haproxy_config: PathBuf,
    /// haproxy's admin socket (`disable server`, `show stat`, …).
    pub haproxy_stats_socket: PathBuf,
    pub agent: ProcRecord,
    pub haproxy: ProcRecord,
}

impl LabState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state in `dir`, or `None` when there is no state file.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: Self = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(state))
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.dir);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// The moto that serves the lease table (the one moto of an older lab).
    pub fn dynamodb_moto(&self) -> &Moto {
        self.moto_dynamodb.as_ref().unwrap_or(&self.moto)
    }

    /// Where the lease table is served.
    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_moto().endpoint
    }

    /// The SDK configuration the harness calls the lab's AWS with.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        super::node::Endpoints::of(self).sdk().await
    }

    /// Every process record of the lab, hosts' first.
    pub fn procs(&self) -> Vec<&ProcRecord> {
        let mut all = vec![&self.moto.proc];
        all.extend(self.moto_dynamodb.as_ref().map(|m| &m.proc));
        all.extend([&self.imds.proc, &self.mirror.proc]);
        all.extend(self.backends.iter().map(|b| &b.proc));
        for node in &self.nodes {
            all.push(&node.agent);
            all.push(&node.haproxy);
        }
        all
    }

    pub fn procs_mut(&mut self) -> Vec<&mut ProcRecord> {
        let mut all = vec![&mut self.moto.proc];
        all.extend(self.moto_dynamodb.as_mut().map(|m| &mut m.proc));
        all.extend([&mut self.imds.proc, &mut self.mirror.proc]);
        all.extend(self.backends.iter_mut().map(|b| &mut b.proc));
        for node in &mut self.nodes {
            all.push(&mut node.agent);
            all.push(&mut node.haproxy);
        }
        all
    }

    pub fn node_by_instance(&self, instance_id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.instance_id == instance_id)
    }
}

pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
