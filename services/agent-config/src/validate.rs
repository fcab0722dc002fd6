//! From the file as written ([`crate::written`]) to an [`AgentConfig`]:
//! defaults filled in, every value checked, each problem a [`ConfigError`]
//! that names the key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use vipfleet_core::machine::Pacing;
use vipfleet_core::peers::PeerConfig;
use vipfleet_core::{LeaseConfig, RouteTableId, ShardLayout, Vip};

use crate::binding::LinkKind;
use crate::health::{HealthCheck, HealthTarget};
use crate::identity::IdentityOverrides;
use crate::written::{File, PeersSection};
use crate::{
    AgentConfig, ConfigError, LifecycleConfig, PeerAuthConfig, PeersConfig, DEFAULT_DASHBOARD_LISTEN,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LAUNCH_HOOK_NAME, DEFAULT_LAUNCH_TIMEOUT, DEFAULT_PEER_BIND, DEFAULT_PEER_PORT,
    DEFAULT_VIP_INTERFACE,
};

fn millis(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

pub(crate) fn validate(file: File) -> Result<AgentConfig, ConfigError> {
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
