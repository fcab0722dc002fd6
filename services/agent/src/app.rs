//! `vipfleet-agent run`: from a checked configuration to a running node.
//!
//! Start-up, in order: identity (IMDS, or the `[node]` overrides), the AWS
//! clients, the checks only AWS can answer (VIPs lie outside the VPC; a
//! route table that does not exist is reported, and the node starts with
//! the tables it can use), VIPs bound locally, then the lease machine's driver
//! with its inputs: signals, the haproxy health monitor, the source/dest
//! check of the ENI (turned off, retried until it is), the Auto Scaling
//! lifecycle state, and the dashboard (bound before the driver starts, so a
//! taken port fails start-up). The machine decides what each input means;
//! `run` returns its exit reason.
//!
//! Peer probes (`[peers]`): the fleet key files are read first (a missing
//! or short key exits 78, before anything touches the network); the UDP
//! socket is bound at start (a taken port fails start-up) and handed to
//! the driver with a detector for this incarnation. If peers find this process dead and a node evicts it (a
//! long pause, a cut-off network), the incarnation can never heartbeat
//! again: the agent starts over in-process as a new incarnation (a new
//! machine and detector; the same socket, VIP bindings, dashboard, status
//! and inputs), told the last health, source/destination check and drain
//! controls again.
//!
//! Signals: SIGTERM and SIGINT stop the agent without draining (a restart
//! or an upgrade: the node keeps its shards, and the next start adopts them
//! again; if it does not come back, its lease runs out and the survivors
//! take over, as after a crash). A second one exits at once. Draining is
//! for termination (the lifecycle hook) and for an operator's drain.
//! SIGHUP changes nothing: the configuration is read at start.

use std::sync::Arc;

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{error, info, warn};
use vipfleet_core::machine::{ExitReason, Health, Machine, NodeSetup};
use vipfleet_core::{EniId, Incarnation, Instant, NodeInfo};

use crate::aws::dynamo::DynamoLeaseStore;
use crate::aws::ec2::{Ec2ErrorKind, Ec2RouteTable};
use crate::config::AgentConfig;
use crate::dashboard::metrics::Metrics;
use crate::dashboard::{self, auth::Token, DashboardState};
use crate::driver::incarnations::run_incarnations;
use crate::driver::peers::PeerLink;
use crate::driver::{Control, Driver};
use crate::health::{self, HealthMonitor};
use crate::identity::{self, Imds, NodeIdentity};
use crate::lifecycle;
use crate::peers::{PeerAuth, Transport};
use crate::status::StatusBoard;
use crate::vip_binding::{check_sysctls, VipBinding};

/// How often a failed attempt to turn off the ENI's source/destination
/// check is retried; the node claims no VIP until it succeeds.
const SOURCE_DEST_CHECK_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// How the agent ended badly, for the exit code (see `main.rs`).
#[derive(Debug, Error)]
pub enum RunError {
    /// The configuration cannot work in this account.
    #[error("{0}")]
    Config(String),
    /// Something at start-up failed.
    #[error("{0}")]
    Startup(String),
    #[error("the drain did not finish within {0:?}: what this node still holds moves when its lease runs out")]
    DrainTimeout(Duration),
    #[error("another process registered this node id; stopping")]
    Superseded,
    #[error("peers found this process dead and evicted it while it was stopping")]
    Evicted,
}

pub async fn run(config: AgentConfig) -> Result<ExitReason, RunError> {
    // The keys first: a missing or short key file is a configuration
    // error, found before anything touches the network.
    let peer_auth = match &config.peers {
        Some(peers) => Some(PeerAuth::load(&peers.auth).map_err(|e| RunError::Config(format!("peers: {e}")))?),
        None => None,
    };
    let imds = (!config.identity.is_complete()).then(Imds::from_env);
    let me = identity::resolve(&config.identity, imds.as_ref())
        .await
        .map_err(|e| RunError::Startup(format!("cannot tell who this node is: {e}")))?;
    info!(instance = %me.instance_id, eni = %me.eni, ip = %me.private_ip, az = %me.az, "identity");

    let sdk = crate::aws::sdk_config(Some(me.region.clone())).await;
    let ec2 = Ec2RouteTable::new(aws_sdk_ec2::Client::new(&sdk));
    check_against_aws(&config, &me, &ec2).await?;
    bind_vips(&config).await?;

    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(
        DynamoLeaseStore::new(crate::aws::dynamodb_client(&sdk), config.table.clone())
            // Another endpoint (moto) reports constants, not DynamoDB's bill.
            .with_units_sink(metrics.clone(), sdk.endpoint_url().is_some()),
    );
    let transport = match (&config.peers, peer_auth) {
        (Some(peers), Some(auth)) => {
            let addr = peers.bind_addr();
            let sealed = auth.is_sealed();
            let transport = Transport::bind(addr, auth, metrics.clone())
                .await
                .map_err(|e| RunError::Startup(format!("peers: cannot bind UDP {addr}: {e}")))?;
            if sealed {
                info!(%addr, "peer probes, sealed with the fleet key");
            } else {
                warn!(%addr, "peer probes without a key (peers.insecure = true): anyone who can reach this port can speak for any node");
            }
            Some(transport)
        }
        _ => {
            info!("peers.enabled = false: this node neither probes nor answers; peers judge it by its lease");
            None
        }
    };
    let (board, status) = StatusBoard::new();
    let (controls_tx, mut controls) = crate::driver::controls();
    let ec2 = Arc::new(ec2);
    start_dashboard(
        &config,
        DashboardState::new(status.clone(), metrics.clone(), controls_tx.clone(), None),
    )
    .await?;

    spawn_signal_handler(controls_tx.clone());
    match &config.health {
        Some(check) => {
            let monitor = HealthMonitor::new(check).map_err(|e| RunError::Config(e.to_string()))?;
            let (tx, rx) = health::channel();
            tokio::spawn(monitor.run(tx, std::future::pending()));
            tokio::spawn(forward_health(rx, controls_tx.clone()));
        }
        None => {
            warn!("health.disabled = true: this node counts as healthy whatever haproxy does");
            let _ = controls_tx.send(Control::Health(Health::Healthy)).await;
        }
    }
    if config.disable_source_dest_check {
        tokio::spawn(turn_off_source_dest_check(
            ec2.clone(),
            me.eni.clone(),
            controls_tx.clone(),
        ));
    } else {
        info!("ec2.disable_source_dest_check = false: the source/destination check is taken to be off already");
        let _ = controls_tx.send(Control::SourceDestCheckOff(true)).await;
    }
    let lifecycle = lifecycle::Watcher::start(&config, &me, imds.unwrap_or_else(Imds::from_env), &sdk, controls_tx);
    lifecycle::spawn_launch_gate(&config, &me, &sdk, status.clone());
    crate::notify::ready();
    tokio::spawn(crate::notify::watchdog(status.clone()));

    // One clock for every incarnation of this process: the status board
    // keeps its history across them.
    let origin = TokioInstant::now();
    let reason = run_incarnations(board, transport, &mut controls, |board, transport, replay| {
        let inc = Incarnation(SmallRng::from_os_rng().random());
        let started = Instant::from_offset(TokioInstant::now().saturating_duration_since(origin));
        let machine = Machine::new(node_setup(&config, &me, inc), started);
        info!(inc = inc.0, "lease machine starts");
        let driver = Driver::new(machine, store.clone(), ec2.clone(), origin, board, metrics.clone()).replay(replay);
        match (transport, &config.peers) {
            (Some(transport), Some(peers)) => {
                let detector = PeerLink::detector(me.instance_id.clone(), inc, peers.detector);
                driver.with_peers(PeerLink::new(transport, detector, metrics.clone()))
            }
            _ => driver,
        }
    })
    .await;
    match reason {
        ExitReason::Drained => {
            info!("drained: every shard handed off");
            lifecycle.drained().await;
        }
        ExitReason::DrainTimedOut => {
            // Let the termination go on: what is left fails over by lease
            // expiry, and a restart would only drain again.
            lifecycle.gave_up().await;
            return Err(RunError::DrainTimeout(config.lifecycle.drain_timeout));
        }
        ExitReason::Stopped => info!("stopped without draining: the next start adopts this node's shards"),
        ExitReason::Superseded => return Err(RunError::Superseded),
        // Only when evicted while stopping: `run_incarnations` starts over otherwise.
        ExitReason::Evicted => return Err(RunError::Evicted),
    }
    Ok(reason)
}

/// What this node announces and runs with, at incarnation `inc`.
fn node_setup(config: &AgentConfig, me: &NodeIdentity, inc: Incarnation) -> NodeSetup {
    NodeSetup {
        info: NodeInfo {
            id: me.instance_id.clone(),
            eni: me.eni.clone(),
            az: me.az.clone(),
            addr: me.private_ip.to_string(),
            weight: config.weight,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        inc,
        lease: config.lease.clone(),
        layout: Arc::new(config.layout.clone()),
        route_tables: config.route_tables.clone(),
        drain_timeout: config.lifecycle.drain_timeout,
        pacing: config.pacing,
        peer_port: config.peers.as_ref().map(|p| p.port),
    }
}

/// Turns off the ENI's source/destination check (the VPC drops traffic for
/// a VIP routed to an ENI that has it on), retrying until it works; the
/// machine claims no VIP before.
async fn turn_off_source_dest_check(ec2: Arc<Ec2RouteTable>, eni: EniId, controls: mpsc::Sender<Control>) {
    let mut tick = tokio::time::interval(SOURCE_DEST_CHECK_RETRY_INTERVAL);
    loop {
        tick.tick().await;
        match ec2.disable_source_dest_check(&eni).await {
            Ok(()) => {
                info!(%eni, "source/destination check off");
                let _ = controls.send(Control::SourceDestCheckOff(true)).await;
                return;
            }
            Err(e) => warn!(
                %eni,
                retry_in = ?SOURCE_DEST_CHECK_RETRY_INTERVAL,
                "cannot turn off the source/destination check ({e}); this node claims no VIP until it is off"
            ),
        }
    }
}

/// Binds every `dashboard.listen` address and serves the dashboard until
/// the process exits. The token file is read here, once; the token itself
/// is never logged.
async fn start_dashboard(config: &AgentConfig, state: DashboardState) -> Result<(), RunError> {
    let token = match &config.dashboard_token_file {
        Some(path) => Some(Token::from_file(path).map_err(|e| RunError::Config(format!("dashboard: {e}")))?),
        None => None,
    };
    let state = state.with_token(token);
    let mut listeners = Vec::with_capacity(config.dashboard_listen.len());
    for addr in &config.dashboard_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Startup(format!("dashboard: cannot listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    // With port 0 (tests, several agents on one host) only the bound
    // address says where the dashboard is.
    let bound: Vec<std::net::SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    info!(
        listen = ?config.dashboard_listen,
        bound = ?bound,
        drain_endpoints = config.dashboard_token_file.is_some(),
        "dashboard"
    );
    tokio::spawn(async move {
        if let Err(e) = dashboard::serve(listeners, state, std::future::pending()).await {
            error!("dashboard stopped: {e}");
        }
    });
    Ok(())
}

/// The checks that need AWS: VIPs inside the VPC (a VIP route can never
/// beat the VPC's local route) refuse to start; route tables that do not
/// exist (yet) are only reported: the node serves the tables it can, and
/// the machine keeps asking for the others (metric, log, dashboard).
async fn check_against_aws(config: &AgentConfig, me: &NodeIdentity, ec2: &Ec2RouteTable) -> Result<(), RunError> {
    // EC2 unreachable at start is a start-up failure (systemd retries); a
    // table it says does not exist, or refuses to show, is not: the lease
    // machine backs it off and uses the others.
    let missing = match ec2.missing_route_tables(&config.route_tables).await {
        Ok(missing) => missing,
        Err(e) if matches!(e.kind, Ec2ErrorKind::Throttled | Ec2ErrorKind::Unavailable) => {
            return Err(RunError::Startup(format!("cannot list route tables: {e}")));
        }
        Err(e) => {
            warn!("cannot list route tables ({e}); starting anyway: each table is tried on its own");
            Vec::new()
        }
    };
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(ToString::to_string).collect();
        warn!(
            missing = %ids.join(", "),
            "fleet.route_tables: not found in this account and region; starting without them and retrying \
             every {:?} at most (vipfleet_fleet_route_tables_failing)",
            vipfleet_core::machine::TABLE_BACKOFF_CAP
        );
    }
    let Some(vpc) = config.vpc_id.clone().or_else(|| me.vpc_id.clone()) else {
        warn!("no VPC id (fleet.vpc_id or IMDS): cannot check that VIPs lie outside the VPC");
        return Ok(());
    };
    let cidrs = ec2
        .vpc_cidrs(&vpc)
        .await
        .map_err(|e| RunError::Startup(format!("cannot read the CIDR blocks of {vpc}: {e}")))?;
    if let Some((vip, cidr)) = config.vips_inside(&cidrs).first() {
        return Err(RunError::Config(format!(
            "fleet.vips: {vip} lies inside {cidr} of {vpc}; VIPs must be outside the VPC's CIDR"
        )));
    }
    Ok(())
}

async fn bind_vips(config: &AgentConfig) -> Result<(), RunError> {
    let Some(interface) = &config.vip_interface else {
        return Ok(());
    };
    let binding = VipBinding::new(interface.clone(), config.vip_link_kind)
        .map_err(|e| RunError::Config(format!("vip_binding: {e}")))?;
    let report = binding
        .apply(&config.vips)
        .await
        .map_err(|e| RunError::Startup(format!("cannot bind VIPs on {interface}: {e}")))?;
    info!(
        interface,
        added = report.added.len(),
        removed = report.removed.len(),
        "VIPs bound"
    );
    for finding in check_sysctls(interface).into_iter().filter(|f| !f.ok) {
        warn!(
            sysctl = %finding.name,
            value = ?finding.value,
            expected = %finding.expected,
            "{}",
            finding.why
        );
    }
    Ok(())
}

/// SIGTERM or SIGINT stops (the machine defers it during a drain); a
/// second one exits at once, leaving routes as they are (fail static).
/// SIGHUP is logged and ignored: the configuration is read only at start.
fn spawn_signal_handler(controls: mpsc::Sender<Control>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    info!("SIGHUP: nothing to reload (the configuration is read at start; a restart moves nothing)");
                    continue;
                }
            }
            stops += 1;
            if stops > 1 {
                warn!("second stop signal: exiting at once, routes left as they are");
                std::process::exit(0);
            }
            info!("stop signal: stopping without draining (send it again to exit at once)");
            let _ = controls.send(Control::Stop).await;
        }
    });
}

async fn forward_health(mut rx: watch::Receiver<Health>, controls: mpsc::Sender<Control>) {
    loop {
        let health = *rx.borrow_and_update();
        if controls.send(Control::Health(health)).await.is_err() || rx.changed().await.is_err() {
            return;
        }
    }
}
