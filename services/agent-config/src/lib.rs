//! The agent's configuration: a TOML file, overridden by `VIPFLEET_*`
//! environment variables, overridden by `--set section.key=value` flags,
//! then validated into an [`AgentConfig`].
//!
//! Loading is a pure function over its sources ([`load`] takes the file's
//! text and the environment as a map), so tests never touch the process
//! environment. Every problem is a [`ConfigError`] naming the bad value; the
//! binary exits with code 78 (`EX_CONFIG`) on any of them.
//!
//! The text flows through three stages: [`load`] parses it and lays the
//! overrides over it, `written` types it section by section (unknown keys
//! refused), and `validate` fills in defaults and checks every value.
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

use thiserror::Error;
use vipfleet_core::layout::LayoutError;
use vipfleet_core::machine::{Pacing, PacingError};
use vipfleet_core::peers::{PeerConfig, PeerConfigError};
use vipfleet_core::types::VipError;
use vipfleet_core::{config::LeaseConfigError, LeaseConfig, RouteTableId, ShardLayout, Vip};

pub mod binding;
pub mod health;
pub mod identity;
mod validate;
mod written;

use crate::binding::LinkKind;
use crate::health::{HealthCheck, HealthConfigError};
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
    let file: written::File = toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
    let mut config = validate::validate(file)?;
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
mod tests;
