//! `drain-storm`: every node but one told to terminate at once (the Auto
//! Scaling lifecycle, as scale-in does it for one), so the drains hand
//! every shard to the one survivor while each other is leaving too.
//!
//! The promise: once a node's agent has logged its drain done, no route
//! points at it, in moto at that moment or in the routers later; at the
//! end every shard is the survivor's and every route, in moto and in the
//! routers, points at it.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tokio::time::sleep;

use super::faults::Fault;
use super::fleet::{self, Ownership};
use super::route_log::RouteChange;
use super::trace::EXIT_DRAINED;
use crate::lab::imds;
use crate::lab::state::LabState;
use crate::report::Report;

/// EC2 as issue 11 asks for the storm: mutating calls paced to 0.5 per
/// second, and a burst of 2, so a drained node's pushes beyond the first
/// two wait for tokens (with the default burst of 10 a small lab's drain
/// would never wait).
pub const PACED: [&str; 2] = ["ec2.mutating_calls_per_second=0.5", "ec2.burst=2"];

/// The node that is not drained.
pub const SURVIVOR: usize = 0;
/// Every drain must be logged done within this long (the agents' pushes
/// are paced: a drained node's routes beyond the burst wait for tokens).
const DRAIN_DEADLINE: Duration = Duration::from_secs(40);
/// How often the harness looks for the drains' last log lines.
const POLL: Duration = Duration::from_millis(20);
/// Load after the drains: the survivor must keep every route this long.
const AFTER_DRAINS: Duration = Duration::from_secs(8);
/// The paced drains: each drained node pushes its routes, all but two of
/// them at 0.5 per second (12 s for the 8 routes of a small lab's node).
const DRAINING: Duration = Duration::from_secs(14);
/// Beyond the mirror's poll and propagation delay, for the routers to show
/// what moto held when a drain was logged done.
const MIRROR_SLACK: Duration = Duration::from_millis(200);

pub fn duration(warmup: Duration) -> Duration {
    warmup + DRAINING + AFTER_DRAINS
}

/// A drained node and when the harness saw its agent log the drain done.
#[derive(Clone, Debug)]
pub struct DrainDone {
    pub instance_id: String,
    /// The node's address: the next hop of a route to it in the routers.
    pub ip: String,
    pub done_ms: u64,
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Whether the log has the drain's last line after byte `from`.
fn drained_logged(log: &Path, from: u64) -> bool {
    std::fs::read(log).ok().is_some_and(|text| {
        let tail = text
            .get(usize::try_from(from).unwrap_or(usize::MAX)..)
            .unwrap_or_default();
        String::from_utf8_lossy(tail).contains(EXIT_DRAINED)
    })
}

pub async fn drain_storm(f: &mut Fault<'_>) -> Result<()> {
    let nodes: Vec<_> = f
        .state
        .nodes
        .iter()
        .filter(|n| n.index != f.state.nodes[SURVIVOR].index)
        .cloned()
        .collect();
    f.trace.read("drain-storm", f.state).await;
    let mut pending = Vec::new();
    // Back to back: a few milliseconds apart, well within issue 11's 100 ms.
    for node in &nodes {
        f.trace.ending(&node.name, &node.agent, "drained");
        pending.push((node.clone(), log_len(&node.agent.log)));
        imds::set_lifecycle(
            &f.state.imds.endpoint,
            &f.state.imds.control_token,
            &node.instance_id,
            Some(imds::TERMINATED),
        )
        .await?;
        f.trace.event("scale-in", &node.instance_id);
    }
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    while !pending.is_empty() {
        let (done, waiting): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(node, from)| drained_logged(&node.agent.log, *from));
        pending = waiting;
        for (node, _) in done {
            let done_ms = crate::load::unix_ms();
            f.trace.event("drained", &node.instance_id);
            // moto holds what the drain's pushes wrote: nothing may be left
            // pointing at the node.
            let routes = fleet::routes(f.state, f.sdk).await?;
            for ((table, vip), eni) in &routes {
                if *eni == node.eni {
                    f.trace.violations.push(format!(
                        "{}'s drain was done, yet route {vip} in {table} still pointed at it",
                        node.instance_id
                    ));
                }
            }
            f.trace.drains.push(DrainDone {
                instance_id: node.instance_id.clone(),
                ip: node.ip.to_string(),
                done_ms,
            });
        }
        if tokio::time::Instant::now() > deadline {
            for (node, _) in &pending {
                f.trace.violations.push(format!(
                    "{} did not log its drain done within {DRAIN_DEADLINE:?}",
                    node.instance_id
                ));
            }
            break;
        }
        sleep(POLL).await;
    }
    Ok(())
}

/// Acceptance of drain-storm beyond the general checks (which hold every
/// route in moto to its shard's owner at the end): every shard is the
/// survivor's; no router sent a VIP to a drained node after its drain was
/// done (the mirror's lag allowed), nor anywhere but the survivor after
/// the last one.
pub fn check_drain_storm(
    report: &mut Report,
    state: &LabState,
    drains: &[DrainDone],
    log: &[RouteChange],
    after: &Ownership,
) {
    let survivor = &state.nodes[SURVIVOR];
    let not_survivors = after
        .values()
        .filter(|(o, _)| o.as_deref() != Some(survivor.instance_id.as_str()))
        .count();
    if not_survivors > 0 {
        report
            .violations
            .push(format!("{not_survivors} shards are not the survivor's at the end"));
    }
    let lag = Duration::from_millis(state.mirror.poll_ms + state.mirror.propagation_ms) + MIRROR_SLACK;
    let lag_ms = lag.as_millis() as u64;
    for d in drains {
        for c in log
            .iter()
            .filter(|c| c.t_ms > d.done_ms + lag_ms && c.target.as_deref() == Some(d.ip.as_str()))
        {
            report.violations.push(format!(
                "{} in {} sent to {} {} ms after its drain was done",
                c.vip,
                c.table,
                d.instance_id,
                c.t_ms - d.done_ms
            ));
        }
    }
    let Some(last_done) = drains.iter().map(|d| d.done_ms).max() else {
        report.violations.push("no drain was seen done".to_string());
        return;
    };
    let survivor_ip = survivor.ip.to_string();
    // Where the routers send each VIP at the end, from the whole log.
    let mut last: std::collections::BTreeMap<(&str, vipfleet_core::Vip), Option<&str>> = Default::default();
    for c in log.iter().filter(|c| state.vips.contains(&c.vip)) {
        last.insert((c.table.as_str(), c.vip), c.target.as_deref());
    }
    for ((table, vip), target) in last {
        if target != Some(survivor_ip.as_str()) {
            report.violations.push(format!(
                "the router of {table} sends {vip} to {target:?} at the end, not to the survivor"
            ));
        }
    }
    let strays = log
        .iter()
        .filter(|c| c.t_ms > last_done + lag_ms && c.target.as_deref() != Some(survivor_ip.as_str()))
        .count();
    if strays > 0 {
        report.violations.push(format!(
            "{strays} route changes away from the survivor after the last drain"
        ));
    }
}

/// Heal: the drained nodes are in service again (their agents are started
/// by the general heal).
pub async fn heal(state: &LabState) -> Result<()> {
    for node in state.nodes.iter().filter(|n| n.index != state.nodes[SURVIVOR].index) {
        imds::set_lifecycle(
            &state.imds.endpoint,
            &state.imds.control_token,
            &node.instance_id,
            Some(imds::IN_SERVICE),
        )
        .await?;
    }
    Ok(())
}

/// Shards the drained nodes held when the run began: all of them move.
pub fn minimum_moves(state: &LabState, before: &Ownership) -> u64 {
    let survivor = &state.nodes[SURVIVOR].instance_id;
    (before.len() - fleet::vips_of(before, survivor).len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_drain_line_after_the_mark_counts() {
        let dir = std::env::temp_dir().join(format!("vipfleet-drain-storm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("n1-agent.log");
        let first = format!("2026-01-01T00:00:00Z  INFO vipfleet_agent::app: {EXIT_DRAINED}\n");
        std::fs::write(&log, format!("{first}2026-01-01T00:00:01Z  INFO x: event=Registered\n")).unwrap();
        assert!(drained_logged(&log, 0));
        assert!(!drained_logged(&log, first.len() as u64), "an earlier run's drain");
        assert!(!drained_logged(&dir.join("missing.log"), 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
