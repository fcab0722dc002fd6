//! `vipfleet-agent run`: from a checked configuration to a running node.
//!
//! Start-up, in order: identity (IMDS, or the `[node]` overrides), the AWS
//! clients, the checks only AWS can answer (route tables exist, VIPs lie
//! outside the VPC), source/destination check off, VIPs bound locally, then
//! the lease machine's driver with its inputs: signals, the haproxy health
//! monitor, the Auto Scaling lifecycle state, and the dashboard (bound
//! before the driver starts, so a taken port fails start-up). It returns
//! when the node has drained (or was superseded by another process).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{error, info, warn};
use vipfleet_core::machine::{ExitReason, Machine, NodeSetup};
use vipfleet_core::{Incarnation, Instant, NodeInfo};

use crate::aws::dynamo::DynamoLeaseStore;
use crate::aws::ec2::Ec2RouteTable;
use crate::aws::pacing::Pacer;
use crate::config::AgentConfig;
use crate::dashboard::build_info::{announced_version, config_fingerprint};
use crate::dashboard::metrics::Metrics;
use crate::dashboard::{self, auth::Token, DashboardState};
use crate::driver::{Control, Driver};
use crate::health::{self, Health, HealthMonitor};
use crate::identity::{self, Imds, NodeIdentity};
use crate::lifecycle;
use crate::status::StatusBoard;
use crate::vip_binding::{check_sysctls, VipBinding};

/// How the agent ended, for the exit code.
#[derive(Debug, Error)]
pub enum RunError {
    /// The configuration cannot work in this account (exit 64).
    #[error("{0}")]
    Config(String),
    /// Something at start-up failed (exit 1).
    #[error("{0}")]
    Startup(String),
    #[error("drain did not finish within {0:?}; routes left as they are")]
    DrainTimeout(std::time::Duration),
    #[error("another process registered this node id; stopping")]
    Superseded,
}

pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    let imds = (!config.identity.is_complete()).then(Imds::from_env);
    let me = identity::resolve(&config.identity, imds.as_ref())
        .await
        .map_err(|e| RunError::Startup(format!("cannot tell who this node is: {e}")))?;
    info!(instance = %me.instance_id, eni = %me.eni, ip = %me.private_ip, az = %me.az, "identity");

    let sdk = crate::aws::sdk_config(Some(me.region.clone())).await;
    let ec2 = Ec2RouteTable::new(aws_sdk_ec2::Client::new(&sdk));
    check_against_aws(&config, &me, &ec2).await?;
    if config.disable_source_dest_check {
        if let Err(e) = ec2.disable_source_dest_check(&me.eni).await {
            warn!("could not turn off source/destination check on {}: {e}", me.eni);
        }
    }
    bind_vips(&config).await?;

    let store = Arc::new(DynamoLeaseStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config.table.clone(),
    ));
    let pacer = Arc::new(Pacer::new(config.pacer).map_err(|e| RunError::Config(e.to_string()))?);
    let origin = TokioInstant::now();
    let mut setup = NodeSetup {
        info: NodeInfo {
            id: me.instance_id.clone(),
            eni: me.eni.clone(),
            az: me.az.clone(),
            addr: me.private_ip.to_string(),
            weight: config.weight,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        inc: Incarnation(SmallRng::from_os_rng().random()),
        lease: config.lease.clone(),
        layout: config.layout.clone(),
        route_tables: config.route_tables.clone(),
    };
    // Peers' dashboards compare this to their own to flag a node running
    // another fleet configuration.
    setup.info.version = announced_version(&setup.info.version, &config_fingerprint(&setup));
    let machine = Machine::new(setup, Instant::ZERO);
    let (board, status) = StatusBoard::new();
    let (controls_tx, controls) = crate::driver::controls();
    let metrics = Arc::new(Metrics::new());
    let driver = Driver::new(machine, store, Arc::new(ec2), pacer, origin, board, metrics.clone());
    start_dashboard(
        &config,
        DashboardState::new(status.clone(), metrics, controls_tx.clone(), None),
    )
    .await?;

    spawn_signal_handler(controls_tx.clone());
    if let Some(check) = &config.health {
        let monitor = HealthMonitor::new(check).map_err(|e| RunError::Config(e.to_string()))?;
        let (tx, rx) = health::channel();
        tokio::spawn(monitor.run(tx, std::future::pending()));
        tokio::spawn(forward_health(rx, controls_tx.clone()));
    }
    let lifecycle = lifecycle::Watcher::start(&config, &me, imds.unwrap_or_else(Imds::from_env), &sdk, controls_tx);
    lifecycle::spawn_launch_gate(&config, &me, &sdk, status.clone());
    crate::notify::ready();
    tokio::spawn(crate::notify::watchdog(status.clone()));

    let drain_timeout = config.lifecycle.drain_timeout;
    let reason = tokio::select! {
        reason = driver.run(controls) => reason,
        () = drain_deadline(status.clone(), drain_timeout) => {
            lifecycle.gave_up().await;
            return Err(RunError::DrainTimeout(drain_timeout));
        }
    };
    match reason {
        ExitReason::Drained => {
            info!("drained: every shard handed off");
            lifecycle.drained().await;
            Ok(())
        }
        ExitReason::Superseded => Err(RunError::Superseded),
    }
}

/// Resolves `timeout` after the node started draining (whoever asked:
/// signal, lifecycle hook, dashboard); never if it does not drain. An
/// undrain in between starts the clock again next time.
async fn drain_deadline(mut status: watch::Receiver<crate::status::Status>, timeout: std::time::Duration) {
    loop {
        let draining = |s: &crate::status::Status| s.mode == Some(vipfleet_core::machine::Mode::Draining);
        if status.wait_for(draining).await.is_err() {
            return std::future::pending().await;
        }
        let undrained = status.wait_for(|s| !draining(s));
        if tokio::time::timeout(timeout, undrained).await.is_err() {
            return;
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

/// The checks that need AWS: unknown route tables, and VIPs inside the VPC
/// (a VIP route can never beat the VPC's local route).
async fn check_against_aws(config: &AgentConfig, me: &NodeIdentity, ec2: &Ec2RouteTable) -> Result<(), RunError> {
    let missing = ec2
        .missing_route_tables(&config.route_tables)
        .await
        .map_err(|e| RunError::Startup(format!("cannot list route tables: {e}")))?;
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(RunError::Config(format!(
            "fleet.route_tables: {} not found in this account and region",
            ids.join(", ")
        )));
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

/// SIGTERM or SIGINT drains; a second one exits at once, leaving routes as
/// they are (fail static).
fn spawn_signal_handler(controls: mpsc::Sender<Control>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("signal: draining (send it again to exit at once)");
        let _ = controls.send(Control::Drain).await;
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!("second signal: exiting without finishing the drain");
        std::process::exit(1);
    });
}

async fn forward_health(mut rx: watch::Receiver<Health>, controls: mpsc::Sender<Control>) {
    while rx.changed().await.is_ok() {
        let health = *rx.borrow_and_update();
        let healthy = !matches!(health, Health::Unhealthy);
        if controls.send(Control::Healthy(healthy)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;
    use vipfleet_core::machine::Mode;

    use super::drain_deadline;
    use crate::status::Status;

    fn set(tx: &watch::Sender<Status>, mode: Mode) {
        tx.send_modify(|s| s.mode = Some(mode));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_clock_starts_when_draining_and_resets_on_undrain() {
        const TIMEOUT: Duration = Duration::from_secs(60);
        let (tx, rx) = watch::channel(Status::default());
        set(&tx, Mode::Active);
        let started = tokio::time::Instant::now();
        let deadline = tokio::spawn(drain_deadline(rx, TIMEOUT));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!deadline.is_finished(), "no drain, no deadline");
        set(&tx, Mode::Draining);
        tokio::time::sleep(Duration::from_secs(30)).await;
        set(&tx, Mode::Active);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!deadline.is_finished(), "an undrain stops the clock");
        set(&tx, Mode::Draining);
        deadline.await.expect("deadline task");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(230) + TIMEOUT, "{elapsed:?}");
    }
}
