//! Injecting each fault into a running lab, and healing the lab afterwards
//! so the next scenario starts from a converged fleet.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use clap::ValueEnum;
use tokio::time::sleep;

use crate::lab::state::{LabState, Node};
use crate::lab::{imds, netns, procs};
use crate::timeline::FaultEvent;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Steady,
    Crash,
    Zombie,
    Partition,
    StoreOutage,
    ScaleIn,
    ScaleOut,
    RouteDrift,
    All,
}

impl Scenario {
    pub const EACH: [Scenario; 8] = [
        Scenario::Steady,
        Scenario::Crash,
        Scenario::Zombie,
        Scenario::Partition,
        Scenario::StoreOutage,
        Scenario::ScaleIn,
        Scenario::ScaleOut,
        Scenario::RouteDrift,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Crash => "crash",
            Scenario::Zombie => "zombie",
            Scenario::Partition => "partition",
            Scenario::StoreOutage => "store-outage",
            Scenario::ScaleIn => "scale-in",
            Scenario::ScaleOut => "scale-out",
            Scenario::RouteDrift => "route-drift",
            Scenario::All => "all",
        }
    }

    /// Whether requests to the victim's VIPs may fail (it went dark).
    pub fn victim_may_fail(self) -> bool {
        matches!(self, Scenario::Crash | Scenario::Zombie | Scenario::Partition)
    }

    /// Whether requests to VIPs that moved may fail: a connection caught
    /// mid-handshake by a route change is lost, and counted. Not so where
    /// nothing should move (steady, store outage, a drifted route).
    pub fn moves_may_fail(self) -> bool {
        !matches!(self, Scenario::Steady | Scenario::StoreOutage | Scenario::RouteDrift)
    }
}

/// Timestamps the harness records as it acts.
pub struct Events(pub Vec<FaultEvent>);

impl Events {
    fn push(&mut self, kind: &str, node: &str) {
        self.0.push(FaultEvent {
            t_ms: crate::load::unix_ms(),
            kind: kind.to_string(),
            node: node.to_string(),
        });
    }
}

/// Prepares the fleet before load starts (scale-out needs a node to be
/// gone first).
pub async fn prepare(scenario: Scenario, state: &LabState, victim: &Node) -> Result<()> {
    if scenario == Scenario::ScaleOut {
        procs::signal(&[victim.agent.pid], "TERM");
        let left = procs::wait_gone(&[victim.agent.pid], Duration::from_secs(60));
        if !left.is_empty() {
            bail!("{} did not drain within 60 s before scale-out", victim.instance_id);
        }
        let _ = state;
    }
    Ok(())
}

/// Injects the fault; returns once its active part is over (a pause or a
/// partition has been lifted, the store is back).
pub async fn inject(
    scenario: Scenario,
    state: &mut LabState,
    victim_index: usize,
    sdk: &SdkConfig,
    store_outage: Duration,
    events: &mut Events,
) -> Result<()> {
    let ttl = Duration::from_millis(state.lease.lease_ttl_ms);
    let victim = state.nodes[victim_index].clone();
    let id = victim.instance_id.as_str();
    match scenario {
        Scenario::Steady | Scenario::All => {}
        Scenario::Crash => {
            procs::signal(&[victim.agent.pid, victim.haproxy.pid], "KILL");
            events.push("crash", id);
        }
        Scenario::Zombie => {
            procs::signal(&[victim.agent.pid], "STOP");
            events.push("pause", id);
            sleep(ttl * 2).await;
            procs::signal(&[victim.agent.pid], "CONT");
            events.push("resume", id);
        }
        Scenario::Partition => {
            let host = format!("{}/32", state.network.host_ip);
            netns::ip_in(&victim.ns, &["route", "add", "blackhole", &host])?;
            events.push("partition", id);
            sleep(ttl * 2).await;
            netns::ip_in(&victim.ns, &["route", "del", "blackhole", &host])?;
            events.push("heal", id);
        }
        Scenario::StoreOutage => {
            procs::signal(&[state.moto.proc.pid], "STOP");
            events.push("store-down", "moto");
            sleep(store_outage).await;
            procs::signal(&[state.moto.proc.pid], "CONT");
            events.push("store-up", "moto");
        }
        Scenario::ScaleIn => {
            imds::set_lifecycle(&state.imds.endpoint, &state.imds.control_token, id, Some("Terminated")).await?;
            events.push("scale-in", id);
        }
        Scenario::ScaleOut => {
            let agent = procs::respawn(&state.dir, &state.prefix, &victim.agent)?;
            state.nodes[victim_index].agent = agent;
            state.save()?;
            events.push("scale-out", id);
        }
        Scenario::RouteDrift => {
            let owners = super::fleet::ownership(state, sdk).await?;
            let vip = *owners
                .iter()
                .find(|(_, (o, _))| o.as_deref() == Some(id))
                .map(|(v, _)| v)
                .context("the victim owns no VIP to drift")?;
            let wrong = state
                .nodes
                .iter()
                .find(|n| n.instance_id != id)
                .context("no other node to drift to")?;
            let table = &state.route_tables[0].id;
            aws_sdk_ec2::Client::new(sdk)
                .replace_route()
                .route_table_id(table)
                .destination_cidr_block(vip.to_string())
                .network_interface_id(&wrong.eni)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("drifting {vip} in {table}: {}", crate::lab::aws::display_error(&e)))?;
            events.push("route-drift", &format!("{vip}->{}", wrong.instance_id));
        }
    }
    Ok(())
}

/// Brings back whatever the scenario took away: dead processes restarted,
/// lifecycle state back to in-service.
pub async fn heal(scenario: Scenario, state: &mut LabState, victim_index: usize) -> Result<()> {
    let victim = state.nodes[victim_index].clone();
    if scenario == Scenario::ScaleIn {
        imds::set_lifecycle(
            &state.imds.endpoint,
            &state.imds.control_token,
            &victim.instance_id,
            Some("InService"),
        )
        .await?;
    }
    if !procs::is_alive(victim.haproxy.pid, &state.prefix) {
        state.nodes[victim_index].haproxy = procs::respawn(&state.dir, &state.prefix, &victim.haproxy)?;
    }
    if !procs::is_alive(victim.agent.pid, &state.prefix) {
        state.nodes[victim_index].agent = procs::respawn(&state.dir, &state.prefix, &victim.agent)?;
    }
    state.save()
}
