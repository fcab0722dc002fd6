//! The agent's configuration: a TOML file, overridden by `VIPFLEET_*`
//! environment variables, overridden by `--set section.key=value` flags,
//! then validated into an [`AgentConfig`].
//!
//! Loading is a pure function over its sources ([`load`] takes the file's
//! text and the environment as a map), so tests never touch the process
//! environment. Every problem is a [`ConfigError`] naming the bad value; the
//! binary exits with code 78 (`EX_CONFIG`) on any of them.
//!
//! Its own crate, with the pure types of the sections it fills ([`health`],
//! [`identity`], [`binding`]; the pacing of EC2 calls is the core's), so
//! that it builds without the agent's runtime and AWS SDK: the fuzz targets
//! (`fuzz/`) feed it arbitrary text. The agent re-exports it as `vipfleet_agent::config`, and each type
//! where its module uses it (`vipfleet_agent::health::HealthCheck`, …).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use vipfleet_core::layout::LayoutError;
use vipfleet_core::machine::{Pacing, PacingError};
use vipfleet_core::peers::{PeerConfig, PeerConfigError};
use vipfleet_core::types::VipError;
use vipfleet_core::{config::LeaseConfigError, LeaseConfig, RouteTableId, ShardLayout, Vip};

pub mod binding;
pub mod health;
pub mod identity;

use crate::binding::LinkKind;
use crate::health::{HealthCheck, HealthConfigError, HealthTarget};
use crate::identity::IdentityOverrides;

/// Sections of the file, in the order `VIPFLEET_<SECTION>_<KEY>` is matched
/// (longest first, so `VIP_BINDING` wins over a hypothetical `VIP`).
const SECTIONS: [&str; 10] = [
    "vip_binding",
    "dashboard",
    "lifecycle",
    "health",
    "fleet",
    "lease",
    "peers",
    "node",
    "aws",
    "ec2",
];
/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 3] = ["vips", "route_tables", "listen"];
pub const DEFAULT_DASHBOARD_LISTEN: &str = "127.0.0.1:9180";
/// The template's default termination hook timeout (300 s) less the 30 s the
/// bootstrap keeps in hand (infra/README.md, "Drain timeout"): a drain gives up
/// before Auto Scaling would, so the termination never waits on a stuck agent.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(270);
pub const DEFAULT_VIP_INTERFACE: &str = "vipfleet0";
pub const DEFAULT_LAUNCH_HOOK_NAME: &str = "vipfleet-launch";
/// The template's default launch hook timeout (600 s) less the same 30 s
/// margin as the drain: a node that cannot become ready abandons its launch
/// itself, before Auto Scaling would.
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(570);
/// The UDP port peer probes use; every node of a fleet uses the same one
/// (the template's `PeerPort`, opened only within the security group).
pub const DEFAULT_PEER_PORT: u16 = 7946;
/// Every address: the probes come from other nodes' private addresses.
pub const DEFAULT_PEER_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config is not valid TOML: {0}")]
    Toml(String),
    #[error("{name}={value:?} is not a usable value: {reason}")]
    Override {
        name: String,
        value: String,
        reason: String,
    },
    #[error("config: {0}")]
    Invalid(String),
    #[error("fleet.vips: {0}")]
    Vip(#[from] VipError),
    #[error("fleet.vips: {0}")]
    Layout(#[from] LayoutError),
    #[error("lease: {0}")]
    Lease(#[from] LeaseConfigError),
    #[error("health: {0}")]
    Health(#[from] HealthConfigError),
    #[error("ec2: {0}")]
    Pacing(#[from] PacingError),
    #[error("peers: {0}")]
    Peers(#[from] PeerConfigError),
}

// ----- the file as written ------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    aws: AwsSection,
    #[serde(default)]
    fleet: FleetSection,
    #[serde(default)]
    lease: LeaseSection,
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    vip_binding: VipBindingSection,
    #[serde(default)]
    ec2: Ec2Section,
    #[serde(default)]
    dashboard: DashboardSection,
    #[serde(default)]
    lifecycle: LifecycleSection,
    #[serde(default)]
    peers: PeersSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsSection {
    table: Option<String>,
    region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetSection {
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    route_tables: Vec<String>,
    vpc_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseSection {
    profile: Option<String>,
    heartbeat_interval_ms: Option<u64>,
    lease_ttl_ms: Option<u64>,
    scan_interval_ms: Option<u64>,
    watch_interval_ms: Option<u64>,
    cold_refresh_interval_ms: Option<u64>,
    reconcile_interval_ms: Option<u64>,
    max_handoffs_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    instance_id: Option<String>,
    eni: Option<String>,
    private_ip: Option<String>,
    az: Option<String>,
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    url: Option<String>,
    stats_socket: Option<String>,
    /// Run without any health source, on purpose (tests, or haproxy
    /// watched by something else).
    disabled: Option<bool>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    fall: Option<u32>,
    rise: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VipBindingSection {
    enabled: Option<bool>,
    interface: Option<String>,
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ec2Section {
    mutating_calls_per_second: Option<f64>,
    burst: Option<u32>,
    disable_source_dest_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DashboardSection {
    listen: Option<Vec<String>>,
    token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSection {
    asg_name: Option<String>,
    hook_name: Option<String>,
    drain_timeout_ms: Option<u64>,
    poll_interval_ms: Option<u64>,
    launch_hook_name: Option<String>,
    launch_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersSection {
    enabled: Option<bool>,
    port: Option<u16>,
    bind: Option<String>,
    probe_interval_ms: Option<u64>,
    ack_timeout_ms: Option<u64>,
    indirect_timeout_ms: Option<u64>,
    confirm_rounds: Option<u32>,
    key_file: Option<String>,
    previous_key_file: Option<String>,
    insecure: Option<bool>,
}

// ----- the validated configuration ----------------------------------------

/// Everything the daemon needs, checked.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub table: String,
    /// `aws.region` as configured (file, `VIPFLEET_AWS_REGION`, `--set`). The
    /// region the node works in is `identity.region`, which also takes the
    /// SDK's `AWS_REGION` before IMDS.
    pub region: Option<String>,
    pub vips: Vec<Vip>,
    pub layout: ShardLayout,
    pub route_tables: Vec<RouteTableId>,
    pub vpc_id: Option<String>,
    pub lease: LeaseConfig,
    pub identity: IdentityOverrides,
    pub weight: u32,
    /// `None` only with `health.disabled = true`: the node then counts as
    /// healthy from the start.
    pub health: Option<HealthCheck>,
    /// The dummy interface that carries every VIP; `None` leaves binding to
    /// someone else.
    pub vip_interface: Option<String>,
    /// `dummy`, or `ifb` on kernels built without dummy links.
    pub vip_link_kind: LinkKind,
    pub pacing: Pacing,
    pub disable_source_dest_check: bool,
    pub dashboard_listen: Vec<SocketAddr>,
    pub dashboard_token_file: Option<PathBuf>,
    pub lifecycle: LifecycleConfig,
    /// Peer probes; `None` with `peers.enabled = false`: this node neither
    /// probes nor answers, and peers judge it by its lease only.
    pub peers: Option<PeersConfig>,
}

/// Where this node's peer detector listens, its timings, and how its
/// datagrams are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeersConfig {
    /// The UDP port, announced in the node item; the same on every node.
    pub port: u16,
    pub bind: IpAddr,
    pub detector: PeerConfig,
    pub auth: PeerAuthConfig,
}

/// How peer datagrams are authenticated: the files the agent reads the
/// fleet's keys from at start (paths only here; the keys never pass
/// through the configuration, so they cannot reach its `Debug` output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAuthConfig {
    /// Sign with the key in `key_file`; accept it and the one in
    /// `previous_key_file` (a rotation).
    Keys {
        key_file: PathBuf,
        previous_key_file: Option<PathBuf>,
    },
    /// `peers.insecure = true`: no key, and anyone who can reach the port
    /// can speak for any node.
    Insecure,
}

impl PeersConfig {
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// With a group name the agent completes the ASG's termination
    /// lifecycle action once drained.
    pub asg_name: Option<String>,
    pub hook_name: String,
    pub drain_timeout: Duration,
    /// How often IMDS `autoscaling/target-lifecycle-state` is read.
    pub poll_interval: Duration,
    /// The launch lifecycle hook the agent completes once ready for service.
    pub launch_hook_name: String,
    /// How long after boot the node may take to become ready for service;
    /// then it abandons its launch.
    pub launch_timeout: Duration,
}

/// Reads the file at `path` (if any) and applies `env` and `sets`.
pub fn load_file(
    path: Option<&std::path::Path>,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> Result<AgentConfig, ConfigError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        None => String::new(),
    };
    load(&text, env, sets)
}

/// Parses `text`, applies `VIPFLEET_*` variables from `env`, then
/// `section.key=value` overrides from `sets`, and validates the result.
pub fn load(text: &str, env: &BTreeMap<String, String>, sets: &[String]) -> Result<AgentConfig, ConfigError> {
    let mut doc: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
    for (name, value) in env.iter().filter(|(k, _)| k.starts_with("VIPFLEET_")) {
        let rest = &name["VIPFLEET_".len()..];
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            rest.to_ascii_lowercase()
                .strip_prefix(&format!("{s}_"))
                .map(|k| (s.to_string(), k.to_string()))
        }) else {
            continue; // not ours to judge (VIPFLEET_TEST_*, …)
        };
        set_value(&mut doc, &section, &key, value).map_err(|reason| ConfigError::Override {
            name: name.clone(),
            value: value.clone(),
            reason,
        })?;
    }
    for set in sets {
        let parsed = set
            .split_once('=')
            .and_then(|(path, value)| path.split_once('.').map(|(s, k)| (s, k, value)));
        let Some((section, key, value)) = parsed else {
            return Err(ConfigError::Override {
                name: "--set".into(),
                value: set.clone(),
                reason: "expected section.key=value".into(),
            });
        };
        set_value(&mut doc, section, key, value).map_err(|reason| ConfigError::Override {
            name: format!("--set {section}.{key}"),
            value: value.to_string(),
            reason,
        })?;
    }
    let file: File = toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
    let mut config = validate(file)?;
    // The SDK's AWS_REGION counts as configured: it wins over IMDS, and
    // with it complete `[node]` overrides need no IMDS at all.
    config.identity.region = identity::configured_region(config.region.as_deref(), env);
    Ok(config)
}

/// A TOML syntax error by line and column, without the quoted line that
/// `toml`'s own message shows: the error reaches the journal, and a secret
/// pasted into the file by mistake (a dashboard token in place of its
/// file's path, say) would go with it.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            format!(
                " at line {}, column {}",
                before.matches('\n').count() + 1,
                before[line_start..].chars().count() + 1
            )
        })
        .unwrap_or_default();
    ConfigError::Toml(format!("{}{at}", e.message().trim_end()))
}

/// Puts a string from the environment or a flag into the document, typed
/// as TOML would type it (numbers, booleans), lists split on commas.
fn set_value(doc: &mut toml::Table, section: &str, key: &str, raw: &str) -> Result<(), String> {
    if !SECTIONS.contains(&section) {
        return Err(format!("unknown section {section:?}"));
    }
    let scalar = |s: &str| -> toml::Value {
        let s = s.trim();
        match format!("v = {s}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(s.to_string())),
            Err(_) => toml::Value::String(s.to_string()),
        }
    };
    let value = if LIST_KEYS.contains(&key) {
        toml::Value::Array(
            raw.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| toml::Value::String(s.trim().to_string()))
                .collect(),
        )
    } else {
        scalar(raw)
    };
    let table = doc
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match table {
        toml::Value::Table(t) => {
            t.insert(key.to_string(), value);
            Ok(())
        }
        _ => Err(format!("{section} is not a table in the config file")),
    }
}

fn millis(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

fn validate(file: File) -> Result<AgentConfig, ConfigError> {
    let invalid = |s: String| ConfigError::Invalid(s);
    let table = file
        .aws
        .table
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("aws.table is required (the DynamoDB lease table)".into()))?;

    let vips = file
        .fleet
        .vips
        .iter()
        .map(|v| v.parse::<Vip>())
        .collect::<Result<Vec<_>, _>>()?;
    let layout = ShardLayout::from_vips(&vips)?;
    if file.fleet.route_tables.is_empty() {
        return Err(invalid(
            "fleet.route_tables is empty: VIP routes must go somewhere".into(),
        ));
    }
    let mut route_tables = Vec::new();
    for id in &file.fleet.route_tables {
        if !id.starts_with("rtb-") || id.len() < 5 {
            return Err(invalid(format!(
                "fleet.route_tables: {id:?} is not a route table id (rtb-…)"
            )));
        }
        let id = RouteTableId(id.clone());
        if route_tables.contains(&id) {
            return Err(invalid(format!("fleet.route_tables: {id} is listed twice")));
        }
        route_tables.push(id);
    }

    let mut lease = match file.lease.profile.as_deref().unwrap_or("default") {
        "default" => LeaseConfig::DEFAULT,
        "cheap" => LeaseConfig::CHEAP,
        "hot" => LeaseConfig::HOT,
        "fast" => LeaseConfig::FAST,
        other => {
            return Err(invalid(format!(
                "lease.profile {other:?} is not \"cheap\" (the default), \"hot\" or \"fast\""
            )))
        }
    };
    lease.heartbeat_interval = millis(file.lease.heartbeat_interval_ms, lease.heartbeat_interval);
    lease.lease_ttl = millis(file.lease.lease_ttl_ms, lease.lease_ttl);
    lease.scan_interval = millis(file.lease.scan_interval_ms, lease.scan_interval);
    lease.watch_interval = millis(file.lease.watch_interval_ms, lease.watch_interval);
    lease.cold_refresh_interval = millis(file.lease.cold_refresh_interval_ms, lease.cold_refresh_interval);
    lease.reconcile_interval = millis(file.lease.reconcile_interval_ms, lease.reconcile_interval);
    lease.shard_refresh_interval = lease.shard_refresh_interval.min(lease.reconcile_interval);
    if let Some(n) = file.lease.max_handoffs_in_flight {
        lease.max_handoffs_in_flight = n;
    }
    lease.validate()?;

    let private_ip = match &file.node.private_ip {
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| invalid(format!("node.private_ip {ip:?} is not an IPv4 address")))?,
        ),
        None => None,
    };
    let identity = IdentityOverrides {
        instance_id: file.node.instance_id,
        eni: file.node.eni,
        private_ip,
        az: file.node.az,
        region: file.aws.region.clone(),
    };
    let weight = file.node.weight.unwrap_or(1);
    if weight == 0 {
        return Err(invalid(
            "node.weight must be at least 1 (drain the node instead)".into(),
        ));
    }

    let disabled = file.health.disabled.unwrap_or(false);
    let health = match (file.health.url, file.health.stats_socket, disabled) {
        (Some(_), Some(_), _) => return Err(invalid("health: set url or stats_socket, not both".into())),
        (Some(_), _, true) | (_, Some(_), true) => {
            return Err(invalid(
                "health: disabled = true and a health source are set; choose one".into(),
            ))
        }
        // A node with a dead haproxy would keep its VIPs: no health
        // source is an error unless asked for.
        (None, None, false) => {
            return Err(invalid(
                "health: set health.url (haproxy's monitor URI) or health.stats_socket; \
                 without a health source a node whose haproxy died keeps its VIPs. \
                 Set health.disabled = true to run without one on purpose"
                    .into(),
            ))
        }
        (None, None, true) => None,
        (url, socket, false) => {
            let target = match (url, socket) {
                (Some(url), _) => HealthTarget::http(&url)?,
                (_, Some(socket)) => HealthTarget::StatsSocket(PathBuf::from(socket)),
                (None, None) => unreachable!("matched above"),
            };
            let mut check = HealthCheck::new(target);
            check.interval = millis(file.health.interval_ms, check.interval);
            check.timeout = millis(file.health.timeout_ms, check.timeout.min(check.interval));
            check.fall = file.health.fall.unwrap_or(check.fall);
            check.rise = file.health.rise.unwrap_or(check.rise);
            check.validate()?;
            Some(check)
        }
    };

    let vip_interface = match file.vip_binding.enabled.unwrap_or(true) {
        true => Some(
            file.vip_binding
                .interface
                .unwrap_or_else(|| DEFAULT_VIP_INTERFACE.to_string()),
        ),
        false => None,
    };
    if let Some(name) = &vip_interface {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(invalid(format!(
                "vip_binding.interface {name:?} is not a Linux interface name"
            )));
        }
    }

    let vip_link_kind = match file.vip_binding.kind.as_deref().unwrap_or("dummy") {
        "dummy" => LinkKind::Dummy,
        "ifb" => LinkKind::Ifb,
        other => {
            return Err(invalid(format!(
                "vip_binding.kind {other:?} is neither \"dummy\" nor \"ifb\""
            )))
        }
    };

    let pacing = Pacing {
        calls_per_second: file
            .ec2
            .mutating_calls_per_second
            .unwrap_or(Pacing::default().calls_per_second),
        burst: file.ec2.burst.unwrap_or(Pacing::default().burst),
    };
    pacing.validate()?;

    let listen = file
        .dashboard
        .listen
        .unwrap_or_else(|| vec![DEFAULT_DASHBOARD_LISTEN.to_string()]);
    let dashboard_listen = listen
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|_| invalid(format!("dashboard.listen {a:?} is not an address:port")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let lifecycle = LifecycleConfig {
        asg_name: file.lifecycle.asg_name.filter(|n| !n.is_empty()),
        hook_name: file.lifecycle.hook_name.unwrap_or_else(|| "vipfleet-drain".into()),
        drain_timeout: millis(file.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT),
        poll_interval: millis(file.lifecycle.poll_interval_ms, Duration::from_secs(5)),
        launch_hook_name: file
            .lifecycle
            .launch_hook_name
            .unwrap_or_else(|| DEFAULT_LAUNCH_HOOK_NAME.into()),
        launch_timeout: millis(file.lifecycle.launch_timeout_ms, DEFAULT_LAUNCH_TIMEOUT),
    };

    let peers = peers_config(file.peers)?;

    Ok(AgentConfig {
        table,
        region: file.aws.region,
        vips,
        layout,
        route_tables,
        vpc_id: file.fleet.vpc_id,
        lease,
        identity,
        weight,
        health,
        vip_interface,
        vip_link_kind,
        pacing,
        disable_source_dest_check: file.ec2.disable_source_dest_check.unwrap_or(true),
        dashboard_listen,
        dashboard_token_file: file.dashboard.token_file.map(PathBuf::from),
        lifecycle,
        peers,
    })
}

fn peers_config(section: PeersSection) -> Result<Option<PeersConfig>, ConfigError> {
    if !section.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let port = section.port.unwrap_or(DEFAULT_PEER_PORT);
    if port == 0 {
        return Err(ConfigError::Invalid(
            "peers.port must not be 0: every node probes the others on the same, known port".into(),
        ));
    }
    let bind = match &section.bind {
        Some(bind) => bind
            .parse::<IpAddr>()
            .map_err(|_| ConfigError::Invalid(format!("peers.bind {bind:?} is not an IP address")))?,
        None => DEFAULT_PEER_BIND,
    };
    let defaults = PeerConfig::default();
    let detector = PeerConfig {
        probe_interval: millis(section.probe_interval_ms, defaults.probe_interval),
        ack_timeout: millis(section.ack_timeout_ms, defaults.ack_timeout),
        indirect_timeout: millis(section.indirect_timeout_ms, defaults.indirect_timeout),
        confirm_rounds: section.confirm_rounds.unwrap_or(defaults.confirm_rounds),
    };
    detector.validate()?;
    let auth = peer_auth(&section)?;
    Ok(Some(PeersConfig {
        port,
        bind,
        detector,
        auth,
    }))
}

/// A forged datagram can make a node evict a live peer, so probes run
/// without a key only when asked to in so many words.
fn peer_auth(section: &PeersSection) -> Result<PeerAuthConfig, ConfigError> {
    let path = |p: &Option<String>| p.as_deref().filter(|p| !p.is_empty()).map(PathBuf::from);
    let (key_file, previous_key_file) = (path(&section.key_file), path(&section.previous_key_file));
    match (key_file, previous_key_file, section.insecure.unwrap_or(false)) {
        (Some(key_file), previous_key_file, false) => Ok(PeerAuthConfig::Keys {
            key_file,
            previous_key_file,
        }),
        (None, None, true) => Ok(PeerAuthConfig::Insecure),
        (Some(_), _, true) | (None, Some(_), true) => Err(ConfigError::Invalid(
            "peers: insecure = true and a key file are set; choose one".into(),
        )),
        (None, Some(_), false) => Err(ConfigError::Invalid(
            "peers.previous_key_file is set without peers.key_file: the current key signs, the previous one is only accepted"
                .into(),
        )),
        (None, None, false) => Err(ConfigError::Invalid(
            "peers: set peers.key_file (a file holding the fleet's shared key, at least 32 bytes, \
             e.g. from `openssl rand -hex 32`): without one, anyone who can reach the peer port can \
             make a node evict a live peer. Set peers.insecure = true to run without one on purpose, \
             or peers.enabled = false"
                .into(),
        )),
    }
}

impl AgentConfig {
    /// VIPs that fall inside any of `cidrs` (the VPC's): routes to them
    /// could never win over the VPC's local route.
    pub fn vips_inside(&self, cidrs: &[Vip]) -> Vec<(Vip, Vip)> {
        self.vips
            .iter()
            .flat_map(|v| cidrs.iter().filter(|c| c.overlaps(v)).map(move |c| (*v, *c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [aws]
        table = "leases"
        [fleet]
        vips = ["10.200.0.1/32", "10.200.0.2"]
        route_tables = ["rtb-1", "rtb-2"]
        [health]
        url = "http://127.0.0.1:8404/healthz"
        [peers]
        key_file = "/etc/vipfleet/peer.key"
    "#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c = load(GOOD, &BTreeMap::new(), &[]).unwrap();
        assert_eq!(c.table, "leases");
        assert_eq!(c.layout.len(), 2);
        assert_eq!(c.lease, LeaseConfig::CHEAP);
        assert_eq!(c.vip_interface.as_deref(), Some(DEFAULT_VIP_INTERFACE));
        assert_eq!(
            c.dashboard_listen,
            vec!["127.0.0.1:9180".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.health.is_some());
        assert_eq!(c.lifecycle.launch_hook_name, DEFAULT_LAUNCH_HOOK_NAME);
        assert_eq!(c.lifecycle.launch_timeout, DEFAULT_LAUNCH_TIMEOUT);
        assert_eq!(c.lifecycle.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        let peers = c.peers.expect("peers are on by default");
        assert_eq!(peers.bind_addr(), "0.0.0.0:7946".parse::<SocketAddr>().unwrap());
        assert_eq!(peers.detector, PeerConfig::default());
        assert_eq!(
            peers.auth,
            PeerAuthConfig::Keys {
                key_file: "/etc/vipfleet/peer.key".into(),
                previous_key_file: None
            }
        );
    }

    #[test]
    fn peers_need_a_key_unless_insecure_on_purpose() {
        let keyless = GOOD.replace("key_file = \"/etc/vipfleet/peer.key\"", "");
        let err = load(&keyless, &BTreeMap::new(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("peers.key_file") && err.contains("peers.insecure = true"),
            "{err}"
        );
        let insecure = load(&keyless, &BTreeMap::new(), &["peers.insecure=true".into()]).unwrap();
        assert_eq!(insecure.peers.unwrap().auth, PeerAuthConfig::Insecure);
        let off = load(&keyless, &env(&[("VIPFLEET_PEERS_ENABLED", "false")]), &[]).unwrap();
        assert_eq!(off.peers, None);
        let rotating = load(
            GOOD,
            &env(&[("VIPFLEET_PEERS_PREVIOUS_KEY_FILE", "/etc/vipfleet/peer.key.old")]),
            &[],
        )
        .unwrap();
        assert_eq!(
            rotating.peers.unwrap().auth,
            PeerAuthConfig::Keys {
                key_file: "/etc/vipfleet/peer.key".into(),
                previous_key_file: Some("/etc/vipfleet/peer.key.old".into()),
            }
        );
        let both = load(GOOD, &BTreeMap::new(), &["peers.insecure=true".into()]).unwrap_err();
        assert!(both.to_string().contains("choose one"), "{both}");
        let previous_only = load(
            &keyless,
            &BTreeMap::new(),
            &["peers.previous_key_file=/etc/vipfleet/old.key".into()],
        )
        .unwrap_err();
        assert!(
            previous_only.to_string().contains("without peers.key_file"),
            "{previous_only}"
        );
        // An empty value (an unset variable in a template) is no key.
        let empty = load(&keyless, &env(&[("VIPFLEET_PEERS_KEY_FILE", "")]), &[]).unwrap_err();
        assert!(empty.to_string().contains("peers.key_file"), "{empty}");
    }

    #[test]
    fn the_peers_section_is_read_and_can_turn_probes_off() {
        let text = format!(
            "{GOOD}\nport = 8000\nbind = \"10.0.0.5\"\nprobe_interval_ms = 200\n\
             ack_timeout_ms = 40\nindirect_timeout_ms = 80\nconfirm_rounds = 3\n"
        );
        let peers = load(&text, &BTreeMap::new(), &[]).unwrap().peers.unwrap();
        assert_eq!(peers.bind_addr(), "10.0.0.5:8000".parse::<SocketAddr>().unwrap());
        assert_eq!(peers.detector.probe_interval, Duration::from_millis(200));
        assert_eq!(peers.detector.ack_timeout, Duration::from_millis(40));
        assert_eq!(peers.detector.indirect_timeout, Duration::from_millis(80));
        assert_eq!(peers.detector.confirm_rounds, 3);
        let off = load(GOOD, &env(&[("VIPFLEET_PEERS_ENABLED", "false")]), &[]).unwrap();
        assert_eq!(off.peers, None);
    }

    #[test]
    fn a_health_source_is_required_unless_disabled_on_purpose() {
        let without = GOOD.replace("[health]\n        url = \"http://127.0.0.1:8404/healthz\"", "");
        let err = load(&without, &BTreeMap::new(), &[]).unwrap_err().to_string();
        assert!(err.contains("health.disabled = true"), "{err}");
        let c = load(&without, &BTreeMap::new(), &["health.disabled=true".into()]).unwrap();
        assert!(c.health.is_none());
        let both = load(GOOD, &BTreeMap::new(), &["health.disabled=true".into()]).unwrap_err();
        assert!(both.to_string().contains("choose one"), "{both}");
    }

    #[test]
    fn the_launch_hook_keys_are_read() {
        let sets = [
            "lifecycle.launch_hook_name=fleet-launch".to_string(),
            "lifecycle.launch_timeout_ms=90000".to_string(),
        ];
        let c = load(GOOD, &BTreeMap::new(), &sets).unwrap();
        assert_eq!(c.lifecycle.launch_hook_name, "fleet-launch");
        assert_eq!(c.lifecycle.launch_timeout, Duration::from_secs(90));
    }

    #[test]
    fn environment_then_flags_override_the_file() {
        let e = env(&[
            ("VIPFLEET_AWS_TABLE", "from-env"),
            ("VIPFLEET_LEASE_PROFILE", "fast"),
            ("VIPFLEET_VIP_BINDING_ENABLED", "false"),
            ("VIPFLEET_FLEET_ROUTE_TABLES", "rtb-a, rtb-b,rtb-c"),
            ("VIPFLEET_TEST_AWS_ENDPOINT", "ignored: not a config section"),
        ]);
        let c = load(
            GOOD,
            &e,
            &["aws.table=from-flag".into(), "lease.lease_ttl_ms=1500".into()],
        )
        .unwrap();
        assert_eq!(c.table, "from-flag");
        assert_eq!(c.lease.heartbeat_interval, LeaseConfig::FAST.heartbeat_interval);
        assert_eq!(c.lease.lease_ttl, Duration::from_millis(1500));
        assert_eq!(c.vip_interface, None);
        assert_eq!(c.route_tables.len(), 3);
    }

    #[test]
    fn the_cold_read_timings_are_read() {
        let sets = [
            "lease.watch_interval_ms=500".to_string(),
            "lease.cold_refresh_interval_ms=20000".to_string(),
        ];
        let c = load(GOOD, &BTreeMap::new(), &sets).unwrap();
        assert_eq!(c.lease.watch_interval, Duration::from_millis(500));
        assert_eq!(c.lease.cold_refresh_interval, Duration::from_secs(20));
        let c = load(GOOD, &BTreeMap::new(), &["lease.profile=fast".into()]).unwrap();
        assert_eq!(c.lease.watch_interval, LeaseConfig::FAST.watch_interval);
        assert_eq!(c.lease.cold_refresh_interval, LeaseConfig::FAST.cold_refresh_interval);
        let c = load(GOOD, &BTreeMap::new(), &["lease.profile=cheap".into()]).unwrap();
        assert_eq!(c.lease, LeaseConfig::CHEAP);
        assert!(c.lease.cold_reads);
        let c = load(GOOD, &BTreeMap::new(), &["lease.profile=hot".into()]).unwrap();
        assert_eq!(c.lease, LeaseConfig::HOT);
        assert!(!c.lease.cold_reads);
        let c = load(GOOD, &BTreeMap::new(), &["lease.profile=default".into()]).unwrap();
        assert_eq!(c.lease, LeaseConfig::DEFAULT);
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("", &[], "aws.table is required"),
            (GOOD, &["fleet.vips=10.200.0.300"], "10.200.0.300"),
            (GOOD, &["fleet.vips=10.200.0.1,10.200.0.1/32"], "listed twice"),
            (GOOD, &["fleet.vips=10.200.0.0/24,10.200.0.9"], "overlap"),
            (GOOD, &["fleet.route_tables=vpc-1"], "\"vpc-1\""),
            (GOOD, &["lease.lease_ttl_ms=1000"], "must fit in the own lease"),
            (GOOD, &["lease.profile=turbo"], "turbo"),
            (
                GOOD,
                &["lease.watch_interval_ms=0"],
                "watch_interval must be above zero",
            ),
            (
                GOOD,
                &["lease.cold_refresh_interval_ms=0"],
                "cold_refresh_interval must be above zero",
            ),
            (GOOD, &["node.private_ip=10.0.0"], "10.0.0"),
            (GOOD, &["health.url=ftp://x/"], "ftp://x/"),
            (GOOD, &["dashboard.listen=localhost"], "localhost"),
            (GOOD, &["bogus.key=1"], "bogus"),
            (GOOD, &["aws.tabel=x"], "tabel"),
            (GOOD, &["peers.port=0"], "peers.port must not be 0"),
            (GOOD, &["peers.port=70000"], "peers"),
            (GOOD, &["peers.bind=everywhere"], "peers.bind \"everywhere\""),
            (
                GOOD,
                &["peers.ack_timeout_ms=0"],
                "peers: ack_timeout must be above zero",
            ),
            (
                GOOD,
                &["peers.ack_timeout_ms=100"],
                "peers: ack_timeout (100ms) must be below",
            ),
            (GOOD, &["peers.confirm_rounds=0"], "peers: confirm_rounds"),
            (GOOD, &["peers.probe_interval=5"], "probe_interval"),
            ("not toml [", &[], "TOML"),
        ];
        for (text, sets, needle) in cases {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let err = load(text, &BTreeMap::new(), &sets).expect_err(needle).to_string();
            assert!(err.contains(needle), "{sets:?}: {err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn syntax_errors_say_where_but_never_echo_the_line() {
        let secret = "0123456789abcdef0123456789abcdef";
        let text = format!("[aws]\ntable = \"t\"\n[dashboard]\ntoken_file = {secret}\n");
        let err = load(&text, &BTreeMap::new(), &[]).unwrap_err().to_string();
        assert!(err.contains("line 4, column 14"), "{err}");
        assert!(!err.contains(secret), "{err}");
        let err = load("[aws]\ntable = \"\u{e9}t\u{e9}", &BTreeMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn vips_inside_the_vpc_are_found() {
        let c = load(GOOD, &BTreeMap::new(), &[]).unwrap();
        let vpc: Vip = "10.200.0.0/16".parse().unwrap();
        assert_eq!(c.vips_inside(&[vpc]).len(), 2);
        assert!(c.vips_inside(&["10.0.0.0/16".parse().unwrap()]).is_empty());
    }
}
