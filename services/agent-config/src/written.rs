//! The configuration file as written: one struct per TOML section, every
//! key optional, unknown keys refused. [`crate::validate`] turns it into an
//! [`crate::AgentConfig`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub(crate) aws: AwsSection,
    #[serde(default)]
    pub(crate) fleet: FleetSection,
    #[serde(default)]
    pub(crate) lease: LeaseSection,
    #[serde(default)]
    pub(crate) node: NodeSection,
    #[serde(default)]
    pub(crate) health: HealthSection,
    #[serde(default)]
    pub(crate) vip_binding: VipBindingSection,
    #[serde(default)]
    pub(crate) ec2: Ec2Section,
    #[serde(default)]
    pub(crate) dashboard: DashboardSection,
    #[serde(default)]
    pub(crate) lifecycle: LifecycleSection,
    #[serde(default)]
    pub(crate) peers: PeersSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AwsSection {
    pub(crate) table: Option<String>,
    pub(crate) region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetSection {
    #[serde(default)]
    pub(crate) vips: Vec<String>,
    #[serde(default)]
    pub(crate) route_tables: Vec<String>,
    pub(crate) vpc_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseSection {
    pub(crate) profile: Option<String>,
    pub(crate) heartbeat_interval_ms: Option<u64>,
    pub(crate) lease_ttl_ms: Option<u64>,
    pub(crate) scan_interval_ms: Option<u64>,
    pub(crate) watch_interval_ms: Option<u64>,
    pub(crate) cold_refresh_interval_ms: Option<u64>,
    pub(crate) reconcile_interval_ms: Option<u64>,
    pub(crate) max_handoffs_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSection {
    pub(crate) instance_id: Option<String>,
    pub(crate) eni: Option<String>,
    pub(crate) private_ip: Option<String>,
    pub(crate) az: Option<String>,
    pub(crate) weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthSection {
    pub(crate) url: Option<String>,
    pub(crate) stats_socket: Option<String>,
    /// Run without any health source, on purpose (tests, or haproxy
    /// watched by something else).
    pub(crate) disabled: Option<bool>,
    pub(crate) interval_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) fall: Option<u32>,
    pub(crate) rise: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VipBindingSection {
    pub(crate) enabled: Option<bool>,
    pub(crate) interface: Option<String>,
    pub(crate) kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ec2Section {
    pub(crate) mutating_calls_per_second: Option<f64>,
    pub(crate) burst: Option<u32>,
    pub(crate) disable_source_dest_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DashboardSection {
    pub(crate) listen: Option<Vec<String>>,
    pub(crate) token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LifecycleSection {
    pub(crate) asg_name: Option<String>,
    pub(crate) hook_name: Option<String>,
    pub(crate) drain_timeout_ms: Option<u64>,
    pub(crate) poll_interval_ms: Option<u64>,
    pub(crate) launch_hook_name: Option<String>,
    pub(crate) launch_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeersSection {
    pub(crate) enabled: Option<bool>,
    pub(crate) port: Option<u16>,
    pub(crate) bind: Option<String>,
    pub(crate) probe_interval_ms: Option<u64>,
    pub(crate) ack_timeout_ms: Option<u64>,
    pub(crate) indirect_timeout_ms: Option<u64>,
    pub(crate) confirm_rounds: Option<u32>,
    pub(crate) key_file: Option<String>,
    pub(crate) previous_key_file: Option<String>,
    pub(crate) insecure: Option<bool>,
}
