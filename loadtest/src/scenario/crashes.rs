//! The crash scenario as a series of crashes. One `kill -9` gives one
//! outage sample per VIP the victim held (4 on the CI's lab of 3 nodes and
//! 12 VIPs), and the acceptance is a percentile over at least
//! [`MIN_CRASH_SAMPLES`]: so the victim is crashed, its VIPs left to fail
//! over, then it is restarted and the fleet left to re-balance, as many
//! times as the samples need. Each crash is measured on its own: its moves
//! from just before it to when its VIPs were served elsewhere, its flips
//! and outages from its own event to the restart (the re-balancing that
//! follows a restart is no crash's doing).
//!
//! And an AZ's loss ([`az_loss`]): a third of the nodes killed at once, so
//! that every survivor reaches several verdicts together.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::checks::{MIN_CRASH_SAMPLES, PEER_CRASH_P99_MS};
use super::faults::Fault;
use super::fleet;
use crate::lab::procs;
use crate::report::{Moves, Report};

/// Crashes in one run at the most, however few VIPs the victim holds.
const MAX_CRASHES: usize = 8;
/// What the restart and the re-balancing after it take at the most on the
/// CI's lab (about a second measured), beyond the two heartbeats a new
/// incarnation waits (its registration, then a read of the others sent a
/// heartbeat later). The load is sized by it; a series that runs late stops
/// early and falls short of its samples, which is a violation.
const CONVERGE_ESTIMATE: Duration = Duration::from_secs(2);
const OWNERSHIP_POLL: Duration = Duration::from_millis(100);
/// The event the harness stamps when it restarts the victim: not a fault,
/// and the outages after it are no crash samples (see `run_one`).
pub const RESTART_EVENT: &str = "restarted";

/// Crashes the series needs for its samples, when the victim holds
/// `victim_vips` each time.
pub fn rounds(victim_vips: usize) -> usize {
    MIN_CRASH_SAMPLES.div_ceil(victim_vips.max(1)).min(MAX_CRASHES)
}

/// How long the survivors' EC2 token buckets take to fill up again from
/// empty: each crash is then met with full buckets, as the crash bound
/// assumes (a crash every few seconds would pace the takeover's writes
/// behind the last re-balancing's, which no real fleet sees).
fn refill() -> Duration {
    use vipfleet_core::machine::{DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND};
    Duration::from_secs_f64(f64::from(DEFAULT_BURST) / DEFAULT_CALLS_PER_SECOND)
}

/// One crash: the wait for its VIPs to answer again (twice the bound, so
/// an outage beyond the bound is still measured), the restart and
/// re-balancing, and the refill before the next.
fn round(crash_bound: Duration, heartbeat: Duration) -> Duration {
    crash_bound * 2 + heartbeat * 2 + CONVERGE_ESTIMATE + refill()
}

/// The load the series needs.
pub fn duration(warmup: Duration, victim_vips: usize, crash_bound: Duration, heartbeat: Duration) -> Duration {
    warmup + round(crash_bound, heartbeat) * rounds(victim_vips) as u32
}

/// Crash, fail over, restart, re-balance; until the samples are enough or
/// the load ends. The moves and the measured spans go into the trace.
pub async fn crash_series(f: &mut Fault<'_>) -> Result<()> {
    let id = f.victim_id();
    let mut samples = 0;
    let mut moves = Moves::default();
    for i in 0..MAX_CRASHES {
        if samples >= MIN_CRASH_SAMPLES {
            break;
        }
        if i > 0 {
            tokio::time::sleep(refill()).await;
        }
        let needed = f.crash_bound * 2;
        if crate::load::unix_ms() + needed.as_millis() as u64 > f.load_end_ms {
            eprintln!("==> crash series: the load ends before another crash could fail over");
            break;
        }
        let before = fleet::ownership(f.state, f.sdk).await?;
        let held = fleet::vips_of(&before, &id);
        let from_ms = crate::load::unix_ms();
        let crashed = tokio::time::Instant::now();
        f.crash_holding(&held).await;
        samples += held.len();
        wait_taken_over(f, &id).await?;
        // Its VIPs answer again within the bound; twice that still
        // measures one that is late.
        tokio::time::sleep_until(crashed + f.crash_bound * 2).await;
        let after = fleet::ownership(f.state, f.sdk).await?;
        moves.actual += fleet::moves(&before, &after, &f.trace.recreated);
        moves.minimum += held.len() as u64;
        f.trace.measured.push((from_ms, crate::load::unix_ms()));
        restart_victim(f)?;
        f.trace.event(RESTART_EVENT, &id);
        super::wait_converged(f.state, f.sdk, f.state.nodes.len()).await?;
    }
    f.trace.series_moves = Some(moves);
    Ok(())
}

/// Waits until no shard is the victim's and every one is owned; gives up
/// (the checks then find the VIPs dark) at three crash bounds.
async fn wait_taken_over(f: &Fault<'_>, victim: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + f.crash_bound * 3;
    loop {
        let now = fleet::ownership(f.state, f.sdk).await?;
        let done = now
            .values()
            .all(|(owner, _)| owner.as_deref().is_some_and(|o| o != victim));
        if done || tokio::time::Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(OWNERSHIP_POLL).await;
    }
}

/// The victim's haproxy and agent started again, as `heal` would.
fn restart_victim(f: &mut Fault<'_>) -> Result<()> {
    let node = f.state.nodes[f.victim].clone();
    f.state.nodes[f.victim].haproxy =
        procs::respawn(&f.state.dir, &f.state.prefix, &node.haproxy).context("restarting the victim's haproxy")?;
    f.trace.respawn_agent(f.state, f.victim)
}

/// The series' own promises: enough samples, and with peer probes the
/// acceptance percentile (every sample is also held to the crash bound by
/// the general checks).
pub fn check_crash(report: &mut Report, peers: bool) {
    if report.vips_affected < MIN_CRASH_SAMPLES {
        report.violations.push(format!(
            "{} outage samples, fewer than the {MIN_CRASH_SAMPLES} the crash acceptance needs",
            report.vips_affected
        ));
    }
    if peers && report.outage_ms.p99 > PEER_CRASH_P99_MS {
        report.violations.push(format!(
            "crash outage p99 {} ms, above the {PEER_CRASH_P99_MS} ms peer probes promise",
            report.outage_ms.p99
        ));
    }
}

/// The nodes an AZ's loss kills in a lab of `nodes`: a third of them, two
/// at least, from the usual victim (node 1) on. Two survivors at least must
/// remain: a lone survivor's rounds find no member to nack for it, so it
/// condemns nobody and waits for the leases instead.
pub fn az_victims(nodes: usize) -> Result<Vec<usize>> {
    let lost = (nodes / 3).max(2);
    if nodes < lost + 2 {
        bail!("az-loss needs at least 4 nodes (`--nodes 4` or more); the lab has {nodes}");
    }
    Ok((1..=lost).collect())
}

/// `kill -9` of every [`az_victims`] node's agent and haproxy in one
/// signal call, after a reading that keeps their calls in the totals.
pub async fn az_loss(f: &mut Fault<'_>) -> Result<()> {
    let victims = az_victims(f.state.nodes.len())?;
    f.trace.read("crash", f.state).await;
    let mut pids = Vec::new();
    for v in victims {
        let node = f.state.nodes[v].clone();
        f.may_fail_from_now(&fleet::vips_of(f.before, &node.instance_id));
        f.trace.ending(&node.name, &node.agent, "killed");
        // Stamped before the kill: whatever fails because of it ends after.
        f.trace.event("crash", &node.instance_id);
        pids.extend([node.agent.pid, node.haproxy.pid]);
    }
    procs::signal(&pids, "KILL");
    Ok(())
}
