//! The scenarios, what each promises, and the classic faults (a node
//! crashing, pausing, cut off, leaving or joining; the store stopping; a
//! route edited by hand). Faults of the lease table's items and of the
//! table itself are in [`super::store_faults`], rolling changes and
//! restarts in [`super::rollout`], faults of AWS through the fault proxy
//! in [`super::aws_faults`], drains of most of the fleet in
//! [`super::drain_storm`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use clap::ValueEnum;
use tokio::time::sleep;
use vipfleet_core::Vip;

use super::aws_proxy::AwsProxy;
use super::fleet::{self, Ownership};
use super::trace::Trace;
use super::{aws_faults, crashes, drain_storm, peer_faults, rollout, store_faults};
use crate::lab::state::LabState;
use crate::lab::{imds, netns, procs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Steady,
    /// The DynamoDB bill of a settled fleet against the cost model
    /// ([`super::at_rest`]).
    AtRest,
    Crash,
    Zombie,
    /// A zombie whose evicted item is deleted while it sleeps
    /// ([`store_faults::zombie_deleted`]).
    ZombieDeleted,
    Partition,
    StoreOutage,
    ScaleIn,
    ScaleOut,
    RouteDrift,
    BadItems,
    LostItems,
    TableRecreate,
    AgentRestart,
    VipChange,
    SlowStore,
    /// The fleet's Scans held to a rate a crash's takers exceed
    /// ([`aws_faults::store_throttle`]).
    StoreThrottle,
    Ec2Partial,
    DrainStorm,
    /// Two nodes cut apart, then loss between all nodes
    /// ([`super::peer_faults`]): only the peer probes suffer.
    PeerPartition,
    /// A third of the nodes (two at least) killed at the same instant, as
    /// an AZ's loss ([`crashes::az_loss`]); needs four nodes or more, so
    /// not part of `all` (the CI lab has three).
    AzLoss,
    /// A random fault every 20–40 s for the whole duration ([`super::soak`]);
    /// not part of `all`.
    Soak,
    All,
}

impl Scenario {
    /// `all`, in order. The VIP change goes last: it leaves the lab with
    /// another VIP list.
    pub const EACH: [Scenario; 20] = [
        Scenario::Steady,
        Scenario::AtRest,
        Scenario::Crash,
        Scenario::Zombie,
        Scenario::ZombieDeleted,
        Scenario::Partition,
        Scenario::StoreOutage,
        Scenario::ScaleIn,
        Scenario::ScaleOut,
        Scenario::RouteDrift,
        Scenario::BadItems,
        Scenario::LostItems,
        Scenario::TableRecreate,
        Scenario::AgentRestart,
        Scenario::SlowStore,
        Scenario::StoreThrottle,
        Scenario::Ec2Partial,
        Scenario::DrainStorm,
        Scenario::PeerPartition,
        Scenario::VipChange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::AtRest => "at-rest",
            Scenario::Crash => "crash",
            Scenario::Zombie => "zombie",
            Scenario::ZombieDeleted => "zombie-deleted",
            Scenario::Partition => "partition",
            Scenario::StoreOutage => "store-outage",
            Scenario::ScaleIn => "scale-in",
            Scenario::ScaleOut => "scale-out",
            Scenario::RouteDrift => "route-drift",
            Scenario::BadItems => "bad-items",
            Scenario::LostItems => "lost-items",
            Scenario::TableRecreate => "table-recreate",
            Scenario::AgentRestart => "agent-restart",
            Scenario::VipChange => "vip-change",
            Scenario::SlowStore => "slow-store",
            Scenario::StoreThrottle => "store-throttle",
            Scenario::Ec2Partial => "ec2-partial",
            Scenario::DrainStorm => "drain-storm",
            Scenario::PeerPartition => "peer-partition",
            Scenario::AzLoss => "az-loss",
            Scenario::Soak => "soak",
            Scenario::All => "all",
        }
    }

    /// Whether requests to VIPs that moved may fail: a connection caught
    /// mid-handshake by a route change is lost, and counted. Not so where
    /// nothing should move.
    pub fn moves_may_fail(self) -> bool {
        !matches!(
            self,
            Scenario::Steady
                | Scenario::AtRest
                | Scenario::StoreOutage
                | Scenario::RouteDrift
                | Scenario::AgentRestart
                | Scenario::VipChange
                | Scenario::PeerPartition
                // The crash's VIPs may fail from the crash, and only they
                // move; nothing may fail during the blackout before it.
                | Scenario::SlowStore
        )
    }

    /// Whether exactly the minimum must move (elsewhere a node that comes
    /// back takes a share by rank, which may be more; in a drain storm a
    /// node may hand a shard to another that is leaving too but does not
    /// know it yet, and that one hands it on).
    pub fn moves_exactly_the_minimum(self) -> bool {
        !matches!(
            self,
            Scenario::Zombie
                | Scenario::ZombieDeleted
                | Scenario::Partition
                | Scenario::ScaleOut
                | Scenario::DrainStorm
                | Scenario::Soak
                // Nothing should move, but a shard moved once is tolerated
                // ([`super::peer_faults::check_peer_partition`]).
                | Scenario::PeerPartition
                // One re-balancing move is ([`super::rollout::check_vip_change`]).
                | Scenario::VipChange
                // One re-balancing move is: the survivor whose item was
                // deleted may not count as a taker yet when the crash's
                // shards are shared ([`super::store_faults::check_lost_items`]).
                | Scenario::LostItems
        )
    }

    /// Whether no route may be sent back where it pointed before (see
    /// [`super::route_log::flips`]). A node that comes back (zombie,
    /// partition) may take its old shards back, and a drifted route is
    /// repaired back.
    pub fn forbids_flips(self) -> bool {
        !matches!(
            self,
            Scenario::Zombie
                | Scenario::ZombieDeleted
                | Scenario::Partition
                | Scenario::RouteDrift
                | Scenario::Ec2Partial
                | Scenario::Soak
        )
    }

    /// Whether no EC2 route write may be made at all during the run.
    pub fn writes_no_route(self) -> bool {
        matches!(
            self,
            Scenario::Steady | Scenario::AtRest | Scenario::StoreOutage | Scenario::AgentRestart
        )
    }

    /// Whether a node crashes: its VIPs must be back within the crash bound.
    pub fn crashes(self) -> bool {
        matches!(
            self,
            Scenario::Crash
                | Scenario::AzLoss
                | Scenario::BadItems
                | Scenario::LostItems
                | Scenario::TableRecreate
                | Scenario::SlowStore
                | Scenario::StoreThrottle
                | Scenario::Ec2Partial
        )
    }

    /// `--set`s the agents are restarted with for the scenario.
    pub fn agent_sets(self) -> &'static [&'static str] {
        match self {
            Scenario::DrainStorm => &drain_storm::PACED,
            _ => &[],
        }
    }

    /// Whether the agents run through the fault proxy ([`AwsProxy`]).
    pub fn needs_proxy(self) -> bool {
        matches!(
            self,
            Scenario::SlowStore | Scenario::StoreThrottle | Scenario::Ec2Partial
        )
    }

    /// Seconds of load the scenario needs at the least, when more than the
    /// configured duration.
    pub fn min_duration(
        self,
        warmup: Duration,
        lease_ttl: Duration,
        heartbeat: Duration,
        store_outage: Duration,
        crash_bound: Duration,
    ) -> Duration {
        match self {
            Scenario::StoreOutage => warmup + store_outage + Duration::from_secs(6),
            Scenario::TableRecreate => store_faults::table_recreate_duration(warmup, lease_ttl, crash_bound),
            Scenario::SlowStore => aws_faults::slow_store_duration(warmup, lease_ttl, heartbeat),
            Scenario::StoreThrottle => aws_faults::store_throttle_duration(warmup, heartbeat, crash_bound),
            Scenario::Ec2Partial => aws_faults::ec2_partial_duration(warmup, heartbeat, crash_bound),
            Scenario::DrainStorm => drain_storm::duration(warmup),
            Scenario::PeerPartition => peer_faults::duration(warmup),
            _ => Duration::ZERO,
        }
    }
}

/// What a fault works on.
pub struct Fault<'a> {
    pub state: &'a mut LabState,
    pub sdk: &'a SdkConfig,
    pub victim: usize,
    /// Shard owners when the load started.
    pub before: &'a Ownership,
    pub store_outage: Duration,
    /// When the load generators stop.
    pub load_end_ms: u64,
    /// The longest a crashed node's VIPs may stay dark.
    pub crash_bound: Duration,
    pub trace: &'a mut Trace,
    /// Between the agents and moto, where the scenario needs it.
    pub proxy: Option<&'a AwsProxy>,
    /// The soak's choices.
    pub seed: u64,
    /// `--duration`, seconds: at-rest's quiet window is this long at least.
    pub duration_s: f64,
}

impl Fault<'_> {
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.state.lease.lease_ttl_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.state.lease.heartbeat_ms)
    }

    /// Waits until the load generators stop.
    pub async fn until_load_ends(&self) {
        let left_ms = self.load_end_ms.saturating_sub(crate::load::unix_ms());
        sleep(Duration::from_millis(left_ms)).await;
    }

    pub fn victim_id(&self) -> String {
        self.state.nodes[self.victim].instance_id.clone()
    }

    /// From now on the victim's VIPs (as the run began) may fail.
    pub fn victim_goes_dark(&mut self) {
        let vips = fleet::vips_of(self.before, &self.victim_id());
        self.may_fail_from_now(&vips);
    }

    pub fn may_fail_from_now(&mut self, vips: &[Vip]) {
        let now = crate::load::unix_ms();
        for vip in vips {
            self.trace.may_fail.entry(vip.addr()).or_insert(now);
        }
    }

    /// `kill -9` of the victim's agent and haproxy, after a reading that
    /// keeps the victim's calls until then in the totals.
    pub async fn crash(&mut self) {
        let vips = fleet::vips_of(self.before, &self.victim_id());
        self.crash_holding(&vips).await;
    }

    /// [`Self::crash`] of a victim that holds `vips` now.
    pub async fn crash_holding(&mut self, vips: &[Vip]) {
        self.trace.read("crash", self.state).await;
        let node = self.state.nodes[self.victim].clone();
        self.trace.ending(&node.name, &node.agent, "killed");
        self.may_fail_from_now(vips);
        // Stamped before the kill: whatever fails because of it ends after.
        self.trace.event("crash", &node.instance_id);
        procs::signal(&[node.agent.pid, node.haproxy.pid], "KILL");
    }
}

/// Prepares the fleet before load starts (scale-out needs a node to be
/// gone first).
pub async fn prepare(scenario: Scenario, state: &LabState, victim: usize) -> Result<()> {
    if scenario == Scenario::ScaleOut {
        let victim = &state.nodes[victim];
        procs::signal(&[victim.agent.pid], "TERM");
        let left = procs::wait_gone(&[victim.agent.pid], Duration::from_secs(60));
        if !left.is_empty() {
            bail!("{} did not stop within 60 s before scale-out", victim.instance_id);
        }
    }
    Ok(())
}

/// Injects the fault; returns once its active part is over (a pause or a
/// partition has been lifted, the store is back, the rollout is done).
pub async fn inject(scenario: Scenario, f: &mut Fault<'_>) -> Result<()> {
    let ttl = f.ttl();
    let victim = f.state.nodes[f.victim].clone();
    let id = victim.instance_id.as_str();
    match scenario {
        Scenario::Steady | Scenario::All => {}
        Scenario::AtRest => super::at_rest::at_rest(f, super::at_rest::window(f.duration_s)).await?,
        Scenario::Soak => super::soak::soak(f, f.seed).await?,
        Scenario::Crash => crashes::crash_series(f).await?,
        Scenario::Zombie => {
            f.victim_goes_dark();
            if f.state.peer_port.is_some() {
                // Its peers find it dead within the detection bound and
                // evict it; resumed, it finds its renewal refused and exits
                // (a new process starts over), or starts over in-process.
                f.trace.ending(&victim.name, &victim.agent, "evicted");
            }
            procs::signal(&[victim.agent.pid], "STOP");
            f.trace.event("pause", id);
            sleep(ttl * 2).await;
            procs::signal(&[victim.agent.pid], "CONT");
            f.trace.event("resume", id);
        }
        Scenario::ZombieDeleted => store_faults::zombie_deleted(f).await?,
        Scenario::Partition => {
            f.victim_goes_dark();
            let host = format!("{}/32", f.state.network.host_ip);
            netns::ip_in(&victim.ns, &["route", "add", "blackhole", &host])?;
            f.trace.event("partition", id);
            sleep(ttl * 2).await;
            netns::ip_in(&victim.ns, &["route", "del", "blackhole", &host])?;
            f.trace.event("heal", id);
        }
        Scenario::StoreOutage => {
            // DynamoDB's moto alone: EC2 answers on, as it would in AWS.
            let store = f.state.dynamodb_moto();
            procs::signal(&[store.proc.pid], "STOP");
            f.trace.event("store-down", &store.proc.name);
            sleep(f.store_outage).await;
            procs::signal(&[store.proc.pid], "CONT");
            f.trace.event("store-up", &store.proc.name);
        }
        Scenario::ScaleIn => {
            f.trace.ending(&victim.name, &victim.agent, "drained");
            imds::set_lifecycle(
                &f.state.imds.endpoint,
                &f.state.imds.control_token,
                id,
                Some("Terminated"),
            )
            .await?;
            f.trace.event("scale-in", id);
        }
        Scenario::ScaleOut => {
            f.trace.respawn_agent(f.state, f.victim)?;
            f.trace.event("scale-out", id);
        }
        Scenario::RouteDrift => route_drift(f).await?,
        Scenario::BadItems => store_faults::bad_items(f).await?,
        Scenario::LostItems => store_faults::lost_items(f).await?,
        Scenario::TableRecreate => store_faults::table_recreate(f).await?,
        Scenario::AgentRestart => rollout::agent_restart(f).await?,
        Scenario::VipChange => rollout::vip_change(f).await?,
        Scenario::SlowStore => aws_faults::slow_store(f).await?,
        Scenario::StoreThrottle => aws_faults::store_throttle(f).await?,
        Scenario::Ec2Partial => aws_faults::ec2_partial(f).await?,
        Scenario::DrainStorm => drain_storm::drain_storm(f).await?,
        Scenario::PeerPartition => peer_faults::peer_partition(f).await?,
        Scenario::AzLoss => crashes::az_loss(f).await?,
    }
    Ok(())
}

async fn route_drift(f: &mut Fault<'_>) -> Result<()> {
    let table = f.state.route_tables[0].id.clone();
    let victim = f.victim_id();
    drift_route(f, &table, &victim, &[]).await
}

/// Points the route in `table` of one of `owner`'s VIPs (as the run began)
/// at another node, not one in `avoid`, by hand, as an operator's mistake
/// would.
pub async fn drift_route(f: &mut Fault<'_>, table: &str, owner: &str, avoid: &[&str]) -> Result<()> {
    let id = owner;
    let vip = *fleet::vips_of(f.before, id)
        .first()
        .context("the node owns no VIP to drift")?;
    let wrong = f
        .state
        .nodes
        .iter()
        .find(|n| n.instance_id != id && !avoid.contains(&n.instance_id.as_str()))
        .context("no other node to drift to")?;
    aws_sdk_ec2::Client::new(f.sdk)
        .replace_route()
        .route_table_id(table)
        .destination_cidr_block(vip.to_string())
        .network_interface_id(&wrong.eni)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("drifting {vip} in {table}: {}", crate::lab::aws::display_error(&e)))?;
    f.trace.may_reroute.insert(vip);
    let what = format!("{vip}->{}", wrong.instance_id);
    f.trace.event("route-drift", &what);
    Ok(())
}

/// Brings back whatever the scenario took away: items it put, dead
/// processes restarted (on every node: an agent that exited on its own is
/// a violation already, and must not spoil the next scenario), lifecycle
/// state back to in-service.
pub async fn heal(scenario: Scenario, state: &mut LabState, victim: usize, sdk: &SdkConfig) -> Result<()> {
    match scenario {
        Scenario::ScaleIn => {
            imds::set_lifecycle(
                &state.imds.endpoint,
                &state.imds.control_token,
                &state.nodes[victim].instance_id,
                Some("InService"),
            )
            .await?
        }
        Scenario::BadItems => store_faults::remove_junk(state, sdk).await?,
        Scenario::DrainStorm => drain_storm::heal(state).await?,
        _ => {}
    }
    for i in 0..state.nodes.len() {
        let node = state.nodes[i].clone();
        if !procs::is_alive(node.haproxy.pid, &state.prefix) {
            state.nodes[i].haproxy = procs::respawn(&state.dir, &state.prefix, &node.haproxy)?;
        }
        if !procs::is_alive(node.agent.pid, &state.prefix) {
            state.nodes[i].agent = procs::respawn(&state.dir, &state.prefix, &node.agent)?;
        }
    }
    state.save()
}
