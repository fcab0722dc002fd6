//! Restarts of agents, as an upgrade or an instance refresh does them: one
//! agent stopped and started again (`agent-restart`), and a new VIP list
//! rolled through the fleet node by node (`vip-change`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::sleep;
use vipfleet_core::Vip;

use super::faults::Fault;
use super::fleet;
use super::trace::EXIT_STOPPED;
use crate::lab::state::LabState;
use crate::lab::{http, layout, netns, node, procs};
use crate::load;
use crate::report::Report;

/// A stopped agent exits within this long (it does not drain).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A started agent holds a lease and a fresh snapshot within this long.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until node `index`'s agent answers `/readyz` with 200: it holds a
/// lease and has read the fleet.
pub(super) async fn wait_ready(state: &LabState, index: usize) -> Result<()> {
    let node = &state.nodes[index];
    let addr = http::endpoint_addr(&node.dashboard_url)?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http::request(addr, "GET", "/readyz", &[], "", Duration::from_secs(1)).await;
        if answer.is_ok_and(|a| a.status == 200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{}'s agent was not ready {READY_TIMEOUT:?} after its start", node.name);
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Stops node `index`'s agent with `signal` (`TERM` or `KILL`), waits for
/// it to exit and starts it again at once, as systemd would; waits until
/// the new process is ready. Checks that a SIGTERM ends in a clean exit.
async fn restart(f: &mut Fault<'_>, index: usize, signal: &str) -> Result<()> {
    let node = f.state.nodes[index].clone();
    let (cause, kind) = if signal == "KILL" {
        ("killed", "agent-kill")
    } else {
        ("stopped", "agent-stop")
    };
    f.trace.read(&format!("{kind} {}", node.name), f.state).await;
    f.trace.ending(&node.name, &node.agent, cause);
    procs::signal(&[node.agent.pid], signal);
    f.trace.event(kind, &node.instance_id);
    if !procs::wait_gone(&[node.agent.pid], STOP_TIMEOUT).is_empty() {
        bail!("{}'s agent still runs {STOP_TIMEOUT:?} after SIG{signal}", node.name);
    }
    if signal == "TERM" {
        let exit = f.trace.exits(&f.state.prefix);
        let line = exit
            .iter()
            .find(|e| e.pid == node.agent.pid)
            .and_then(|e| e.exit_line.clone());
        if !line.as_deref().is_some_and(|l| l.contains(EXIT_STOPPED)) {
            f.trace.violations.push(format!(
                "{}'s agent did not exit cleanly on SIGTERM; its last exit line: {line:?}",
                node.name
            ));
        }
    }
    f.trace.respawn_agent(f.state, index)?;
    f.trace.event("agent-start", &node.instance_id);
    wait_ready(f.state, index).await
}

/// SIGTERM and start, then `kill -9` and start, of the victim's agent;
/// haproxy keeps serving throughout. Neither may move a shard or write a
/// route: the new process adopts what its node held.
pub async fn agent_restart(f: &mut Fault<'_>) -> Result<()> {
    restart(f, f.victim, "TERM").await?;
    sleep(f.heartbeat() * 3).await;
    restart(f, f.victim, "KILL").await
}

/// The list an instance refresh would roll out: one VIP removed (one the
/// first node to switch holds), one added, the rest in another order.
///
/// Why the first node's: the first node switched hands the removed VIP to a
/// node that still serves it and claims the new one, so every node keeps
/// its count and no retained VIP has to move. Removing a VIP of a node
/// switched later would leave that node one short and the first one one
/// over once all agree, and rebalancing would rightly move one retained
/// VIP: correct, but it would hide the property checked here, that
/// retained VIPs never change route during a rollout.
fn new_list(old: &[Vip], removed: Vip) -> (Vec<Vip>, Vip) {
    let added = (0..)
        .map(layout::vip)
        .find(|v| !old.contains(v))
        .unwrap_or_else(|| unreachable!("the VIP space is larger than any lab"));
    let mut new: Vec<Vip> = old.iter().rev().copied().filter(|v| *v != removed).collect();
    new.insert(new.len() / 2, added);
    (new, added)
}

pub async fn vip_change(f: &mut Fault<'_>) -> Result<()> {
    let first = f.state.nodes[0].instance_id.clone();
    let removed = *fleet::vips_of(f.before, &first)
        .first()
        .context("the first node holds no VIP to remove")?;
    let (new, added) = new_list(&f.state.vips, removed);
    f.trace.removed.insert(removed.addr());
    f.trace.may_fail.insert(removed.addr(), load::unix_ms());
    f.trace.may_reroute.extend([removed, added]);
    let mut next = f.state.clone();
    next.vips = new.clone();
    for index in 0..f.state.nodes.len() {
        let node = f.state.nodes[index].clone();
        std::fs::write(&node.agent_config, node::agent_config(&next, node.ip))
            .with_context(|| format!("writing {}", node.agent_config.display()))?;
        restart(f, index, "TERM").await?;
        sleep(f.heartbeat() * 2).await;
    }
    f.trace.event("rolled-out", &format!("-{removed} +{added}"));
    // Later scenarios, heal and convergence checks work on the new list.
    f.state.vips = new;
    f.state.save()?;
    wait_rolled_out(f, removed, added).await;
    Ok(())
}

/// A swap of one VIP moves no shard, but one re-balancing move: the new
/// VIP may be claimed by another node than the one whose VIP was removed
/// (before that node has retired it), which then hands one on.
pub fn check_vip_change(report: &mut Report) {
    if report.moves.actual > 1 {
        report.violations.push(format!(
            "{} shards moved on a swap of one VIP, more than one re-balancing move",
            report.moves.actual
        ));
    }
}

/// Waits for what the new list promises: the removed VIP's routes gone
/// from moto and from every router, the new VIP routed to its owner in
/// every table and answering from every client; a violation for what is
/// still missing at the deadline.
async fn wait_rolled_out(f: &mut Fault<'_>, removed: Vip, added: Vip) {
    let deadline = tokio::time::Instant::now() + f.ttl() * 3 + Duration::from_secs(5);
    loop {
        let problems = match rollout_problems(f.state, f.sdk, removed, added).await {
            Ok(p) => p,
            Err(e) => vec![format!("{e:#}")],
        };
        if problems.is_empty() {
            f.trace.event("new-list-served", &added.to_string());
            return;
        }
        if tokio::time::Instant::now() > deadline {
            f.trace.violations.extend(problems);
            return;
        }
        sleep(Duration::from_millis(250)).await;
    }
}

async fn rollout_problems(
    state: &LabState,
    sdk: &aws_config::SdkConfig,
    removed: Vip,
    added: Vip,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let owners = fleet::ownership(state, sdk).await?;
    let owner = owners
        .get(&added)
        .and_then(|(o, _)| o.as_deref())
        .and_then(|o| state.node_by_instance(o));
    if owners.contains_key(&removed) {
        problems.push(format!("the removed VIP {removed} still has a shard item"));
    }
    let routes = fleet::routes(state, sdk).await?;
    let served: BTreeSet<String> = routes
        .iter()
        .filter(|((_, vip), eni)| *vip == added && owner.is_some_and(|o| o.eni == **eni))
        .map(|((table, _), _)| table.clone())
        .collect();
    for table in &state.route_tables {
        if routes.contains_key(&(table.id.clone(), removed)) {
            problems.push(format!("{}: a route for the removed VIP {removed} in moto", table.id));
        }
        if !served.contains(&table.id) {
            problems.push(format!("{}: no route for the new VIP {added} to its owner", table.id));
        }
        for route in netns::mirror_routes(&table.router_ns)? {
            if route.cidr() == Some(removed) {
                problems.push(format!(
                    "{}: a kernel route for the removed VIP {removed}",
                    table.router_ns
                ));
            }
        }
    }
    if problems.is_empty() {
        for table in &state.route_tables {
            if let Err(e) = probe(state, &table.client_ns, added).await {
                problems.push(format!("{added} from {}: {e:#}", table.client_ns));
            }
        }
    }
    Ok(problems)
}

/// One second of real requests to `vip` from a client namespace; every
/// one must succeed.
async fn probe(state: &LabState, client_ns: &str, vip: Vip) -> Result<()> {
    let out = state.dir.join(format!("probe-{client_ns}.jsonl"));
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", client_ns])
        .arg(std::env::current_exe()?)
        .args([
            "load",
            "--vips",
            &vip.addr().to_string(),
            "--rate",
            "20",
            "--duration",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .context("running a probe")?;
    if !status.success() {
        bail!("the probe failed ({status})");
    }
    let records = load::read_records(&out)?;
    let ok = records.iter().filter(|r| r.ok).count();
    if records.is_empty() || ok < records.len() {
        bail!("{ok} of {} requests answered", records.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_list_swaps_one_vip_and_reorders_the_rest() {
        let old: Vec<Vip> = (0..4).map(layout::vip).collect();
        let (new, added) = new_list(&old, old[1]);
        assert_eq!(added, layout::vip(4));
        assert_eq!(new, vec![old[3], added, old[2], old[0]]);
    }
}
