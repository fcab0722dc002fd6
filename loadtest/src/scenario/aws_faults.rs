//! Faults of AWS itself, through the fault proxy ([`super::aws_proxy`]):
//! a slow and a blacked-out lease table (`slow-store`), a table that
//! serves fewer reads than the fleet asks (`store-throttle`), one route
//! table that EC2 refuses (`ec2-partial`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::sleep;

use super::aws_proxy::{AwsProxy, Ec2Refusal};
use super::faults::Fault;
use super::fleet;
use crate::report::Report;

/// Added to every agent's store calls before the crash in `slow-store`
/// (issue 11's figure: past a third of the heartbeat, under ttl/2).
pub const STORE_LATENCY: Duration = Duration::from_millis(600);
/// How long one node's store traffic is held in `slow-store`.
pub const STORE_BLACKOUT: Duration = Duration::from_millis(1500);
/// After the blackout, a lease and a second for any move it caused to show.
const AFTER_BLACKOUT: Duration = Duration::from_secs(1);
/// The fleet runs this many heartbeats on the slow store before the crash:
/// latency alone must move nothing.
const SLOW_HEARTBEATS_BEFORE_CRASH: u32 = 3;
/// Load left after the crash bound: the last VIP's first good answer must
/// fall inside the run.
const CRASH_MARGIN: Duration = Duration::from_millis(1500);

/// The acceptance bound of a crash on the slow store: the lease, the
/// latency of the victim's last heartbeat and of the read that sees it
/// stop, and a second for the takeover and the route writes.
pub fn slow_store_bound(lease_ttl: Duration) -> Duration {
    lease_ttl + STORE_LATENCY * 2 + Duration::from_secs(1)
}

pub fn slow_store_duration(warmup: Duration, lease_ttl: Duration, heartbeat: Duration) -> Duration {
    warmup
        + STORE_BLACKOUT
        + lease_ttl
        + AFTER_BLACKOUT
        + heartbeat * SLOW_HEARTBEATS_BEFORE_CRASH
        + slow_store_bound(lease_ttl)
        + CRASH_MARGIN
}

fn proxy<'a>(f: &Fault<'a>) -> Result<&'a AwsProxy> {
    f.proxy.context("this scenario needs the fault proxy")
}

/// The node blacked out in `slow-store`: not the victim, so the blackout
/// and the crash are each their own story.
fn blackout_node(f: &Fault<'_>) -> usize {
    (f.victim + 1) % f.state.nodes.len()
}

/// One node's store traffic held for [`STORE_BLACKOUT`] (nothing may
/// move), then every node's store calls [`STORE_LATENCY`] slower, then a
/// crash (failed over within [`slow_store_bound`]). The latency stays on
/// until the load ends.
pub async fn slow_store(f: &mut Fault<'_>) -> Result<()> {
    let proxy = proxy(f)?;
    let node = f.state.nodes[blackout_node(f)].clone();
    f.trace.read("store-blackout", f.state).await;
    proxy.set_blackout(IpAddr::V4(node.ip), true);
    f.trace.event("store-blackout", &node.instance_id);
    sleep(STORE_BLACKOUT).await;
    proxy.set_blackout(IpAddr::V4(node.ip), false);
    f.trace.event("store-back", &node.instance_id);
    sleep(f.ttl() + AFTER_BLACKOUT).await;
    let after_blackout = fleet::ownership(f.state, f.sdk).await?;
    let moved = fleet::moves(f.before, &after_blackout, &f.trace.recreated);
    if moved > 0 {
        f.trace.violations.push(format!(
            "a {STORE_BLACKOUT:?} store blackout of {} moved {moved} shards",
            node.instance_id
        ));
    }

    f.trace.read("store-slow", f.state).await;
    proxy.set_store_latency(STORE_LATENCY);
    f.trace
        .event("store-slow", &format!("+{} ms", STORE_LATENCY.as_millis()));
    sleep(f.heartbeat() * SLOW_HEARTBEATS_BEFORE_CRASH).await;
    f.crash().await;
    Ok(())
}

/// Acceptance of slow-store beyond the general checks: the blackout's
/// stretch (until the latency starts) wrote no route and changed none.
pub fn check_slow_store(report: &mut Report) {
    match report.phases.iter().find(|p| p.name == "store-blackout") {
        Some(p) if p.route_changes > 0 || p.ec2.mutating > 0 => report.violations.push(format!(
            "during and after the store blackout: {} route changes, {} EC2 route writes",
            p.route_changes, p.ec2.mutating
        )),
        Some(_) => {}
        None => report
            .violations
            .push("the store blackout's stretch was not measured".to_string()),
    }
}

/// The share of a hot fleet's Scans the table serves in `store-throttle`:
/// every hot node reads the node items every scan interval, and the table
/// serves half of that, as a large fleet after a death asks more of a new
/// table than it serves. (A fixed 2 a second held a hot lab fleet six
/// times over its limit for the whole run: its survivors' reads of the
/// shards then waited for tokens as long as chance had them wait.)
const SERVED_SHARE_OF_HOT_SCANS: f64 = 0.5;

/// The Scans a second the fleet of `nodes` gets in `store-throttle`.
pub fn scans_per_second(nodes: usize) -> f64 {
    let hot_scans = nodes as f64 / vipfleet_core::LeaseConfig::HOT.scan_interval.as_secs_f64();
    hot_scans * SERVED_SHARE_OF_HOT_SCANS
}
/// The fleet runs this many heartbeats under the limit before the crash.
const THROTTLED_HEARTBEATS_BEFORE_CRASH: u32 = 2;
/// Beyond a crash's usual bound: a taker's read of the shards may be
/// throttled, retried by the SDK, then backed off by the agent.
const THROTTLED_TAKEOVER_ALLOWANCE: Duration = Duration::from_secs(8);

pub fn store_throttle_bound(crash_bound: Duration) -> Duration {
    crash_bound + THROTTLED_TAKEOVER_ALLOWANCE
}

pub fn store_throttle_duration(warmup: Duration, heartbeat: Duration, crash_bound: Duration) -> Duration {
    warmup + heartbeat * THROTTLED_HEARTBEATS_BEFORE_CRASH + crash_bound + CRASH_MARGIN
}

/// The fleet's Scans held to [`scans_per_second`] (the rest answered as
/// DynamoDB answers a table over its throughput), then a crash: the
/// takers heat and read, meet the limit, and must still fail the crash
/// over within [`store_throttle_bound`] and move only its shards. The
/// limit stays on until the load ends; a run in which it never throttled
/// anything shows nothing, and says so.
pub async fn store_throttle(f: &mut Fault<'_>) -> Result<()> {
    let proxy = proxy(f)?;
    f.trace.read("store-throttled", f.state).await;
    let limit = scans_per_second(f.state.nodes.len());
    proxy.limit_scans(Some(limit));
    f.trace.event("store-throttled", &format!("{limit} Scans/s"));
    sleep(f.heartbeat() * THROTTLED_HEARTBEATS_BEFORE_CRASH).await;
    let before_crash = proxy.scan_counts();
    f.crash().await;
    f.until_load_ends().await;
    let after = proxy.scan_counts();
    let (forwarded, throttled) = (
        after.forwarded - before_crash.forwarded,
        after.throttled - before_crash.throttled,
    );
    f.trace.event(
        "scans-after-crash",
        &format!("{forwarded} forwarded, {throttled} throttled"),
    );
    if throttled == 0 {
        f.trace.violations.push(format!(
            "no Scan was throttled after the crash ({forwarded} forwarded): the limit never bit"
        ));
    }
    Ok(())
}

/// How `ec2-partial`'s failing table answers: as a deleted table, which
/// the SDK does not retry, so the proxy counts the agents' own calls.
pub const EC2_REFUSAL: Ec2Refusal = Ec2Refusal::NotFound;
/// After the crash, the agents have this long to back off from the
/// failing table...
const BACKOFF_SETTLE: Duration = Duration::from_secs(15);
/// ...and are then held to fewer mutating calls for it than one per
/// [`BACKOFF_PERIOD`] over this window, per agent.
const BACKOFF_WINDOW: Duration = Duration::from_secs(30);
const BACKOFF_PERIOD: Duration = Duration::from_secs(10);
/// Before the crash, the agents run this many heartbeats with the table
/// failing: its routes are all in place, so nothing may change.
const FAILING_HEARTBEATS_BEFORE_CRASH: u32 = 2;

pub fn ec2_partial_duration(warmup: Duration, heartbeat: Duration, crash_bound: Duration) -> Duration {
    warmup + heartbeat * FAILING_HEARTBEATS_BEFORE_CRASH + crash_bound + BACKOFF_SETTLE + BACKOFF_WINDOW
}

/// The failing table (the last) and the healthy one (the first).
fn ec2_tables(f: &Fault<'_>) -> Result<(String, String)> {
    let tables = &f.state.route_tables;
    anyhow::ensure!(tables.len() >= 2, "ec2-partial needs two route tables");
    Ok((tables[tables.len() - 1].id.clone(), tables[0].id.clone()))
}

/// One route table refused by EC2 (every call naming it answers
/// [`EC2_REFUSAL`]), then a crash: the healthy table must be failed over,
/// and a route drifted there by hand repaired; calls for the failing table
/// must back off; no agent exits.
pub async fn ec2_partial(f: &mut Fault<'_>) -> Result<()> {
    let proxy = proxy(f)?;
    let (failing, healthy) = ec2_tables(f)?;
    // The load generator labels its records with its route table's id.
    let failing_client = failing.clone();
    f.trace.read("table-failing", f.state).await;
    proxy.fail_table(Some((failing.clone(), EC2_REFUSAL)));
    f.trace.frozen_tables.insert(failing.clone());
    f.trace.event("table-failing", &failing);
    sleep(f.heartbeat() * FAILING_HEARTBEATS_BEFORE_CRASH).await;

    // Through the failing table, the VIPs routed to the victim stay so:
    // read where that table points just before the crash (the shards may
    // have moved since the run's first read, re-balancing after the
    // agents' restart).
    let victim = f.victim_id();
    let victim_eni = f.state.nodes[f.victim].eni.clone();
    let routes = fleet::routes(f.state, f.sdk).await?;
    for ((table, vip), eni) in &routes {
        if *table == failing && *eni == victim_eni {
            f.trace.unreachable.insert((failing_client.clone(), vip.addr()));
        }
    }
    f.crash().await;
    let crashed_ms = crate::load::unix_ms();
    sleep(f.crash_bound).await;
    // A survivor's VIP, pointed at the other survivor (the dead node
    // would darken it): the repair is what is checked, not an outage.
    let survivor = f
        .state
        .nodes
        .iter()
        .map(|n| n.instance_id.clone())
        .find(|id| *id != victim)
        .context("no survivor")?;
    super::faults::drift_route(f, &healthy, &survivor, &[&victim]).await?;
    wait_repaired(f, &healthy).await;
    f.until_load_ends().await;
    f.trace.ec2_window = Some((crashed_ms + BACKOFF_SETTLE.as_millis() as u64, f.load_end_ms));
    Ok(())
}

/// Waits until every route of the healthy table points at its shard's
/// owner (the drift repaired); a violation at the deadline.
async fn wait_repaired(f: &mut Fault<'_>, table: &str) {
    let deadline = tokio::time::Instant::now() + REPAIR_TIMEOUT;
    loop {
        let wrong = match misrouted(f, table).await {
            Ok(w) => w,
            Err(e) => vec![format!("{e:#}")],
        };
        if wrong.is_empty() {
            f.trace.event("repaired", table);
            return;
        }
        if tokio::time::Instant::now() > deadline {
            f.trace.violations.push(format!(
                "{table} not repaired within {REPAIR_TIMEOUT:?}: {}",
                wrong.join(", ")
            ));
            return;
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The agents' `reconcile_interval` (5 s by default) and the reads and a
/// write around it, with room.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(12);

async fn misrouted(f: &Fault<'_>, table: &str) -> Result<Vec<String>> {
    let owners = fleet::ownership(f.state, f.sdk).await?;
    let routes = fleet::routes(f.state, f.sdk).await?;
    let mut wrong = Vec::new();
    for (vip, (owner, _)) in &owners {
        let want = owner
            .as_deref()
            .and_then(|o| f.state.node_by_instance(o))
            .map(|n| n.eni.clone());
        let have = routes.get(&(table.to_string(), *vip));
        if want.as_ref() != have {
            wrong.push(format!("{vip} -> {have:?}"));
        }
    }
    Ok(wrong)
}

/// Calls closer than this to an agent's previous one for the same table
/// belong to the same retry round (one call per shard, sent together).
const ROUND_GAP_MS: u64 = 1000;

/// Mutating calls naming `table` per agent (by source address) in
/// `[from_ms, to_ms)`, and the rounds they came in.
fn calls_for_table(proxy: &AwsProxy, table: &str, from_ms: u64, to_ms: u64) -> BTreeMap<IpAddr, (u64, u64)> {
    let mut per_node: BTreeMap<IpAddr, (u64, u64, u64)> = BTreeMap::new();
    for c in proxy
        .ec2_calls()
        .iter()
        .filter(|c| (from_ms..to_ms).contains(&c.t_ms) && c.tables.iter().any(|t| t == table))
    {
        let (calls, rounds, last_ms) = per_node.entry(c.node).or_insert((0, 0, 0));
        if *calls == 0 || c.t_ms > *last_ms + ROUND_GAP_MS {
            *rounds += 1;
        }
        *calls += 1;
        *last_ms = c.t_ms;
    }
    per_node.into_iter().map(|(ip, (c, r, _))| (ip, (c, r))).collect()
}

/// Acceptance of ec2-partial beyond the general checks: after the settle
/// time, every agent calls for the failing table less than once per
/// [`BACKOFF_PERIOD`]. Fills `report.failing_table_calls`.
pub fn check_ec2_partial(report: &mut Report, proxy: Option<&AwsProxy>, failing: &str, window: Option<(u64, u64)>) {
    let (Some(proxy), Some((from_ms, to_ms))) = (proxy, window) else {
        report
            .violations
            .push("the failing table's calls were not counted".to_string());
        return;
    };
    let per_node = calls_for_table(proxy, failing, from_ms, to_ms);
    let seconds = to_ms.saturating_sub(from_ms) as f64 / 1000.0;
    let allowed = seconds / BACKOFF_PERIOD.as_secs_f64();
    for (node, (n, _)) in &per_node {
        if *n as f64 >= allowed {
            report.violations.push(format!(
                "the agent at {node} made {n} mutating calls for the failing {failing} in {seconds:.1} s \
                 (fewer than one per {BACKOFF_PERIOD:?} allowed)"
            ));
        }
    }
    report.failing_table_calls = Some(crate::report::TableCalls {
        table: failing.to_string(),
        window_s: seconds,
        per_agent: per_node.iter().map(|(ip, (n, _))| (ip.to_string(), *n)).collect(),
        rounds_per_agent: per_node.iter().map(|(ip, (_, r))| (ip.to_string(), *r)).collect(),
        total: calls_for_table(proxy, failing, 0, u64::MAX)
            .values()
            .map(|(n, _)| n)
            .sum(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_close_together_are_one_round() {
        let nowhere = "127.0.0.1:9".parse().unwrap();
        let upstreams = crate::scenario::aws_proxy::Upstreams {
            aws: nowhere,
            dynamodb: nowhere,
        };
        let proxy = AwsProxy::start("127.0.0.1".parse().unwrap(), upstreams).await.unwrap();
        let ip: IpAddr = "10.77.0.10".parse().unwrap();
        for (t_ms, table) in [
            (1000, "rtb-a"),
            (1200, "rtb-a"),
            (1300, "rtb-b"),
            (9000, "rtb-a"),
            (30000, "rtb-a"),
        ] {
            proxy.log_for_test(t_ms, ip, table);
        }
        assert_eq!(
            calls_for_table(&proxy, "rtb-a", 0, 20_000),
            BTreeMap::from([(ip, (3, 2))])
        );
        assert_eq!(calls_for_table(&proxy, "rtb-a", 0, u64::MAX)[&ip], (4, 3));
    }

    #[test]
    fn the_slow_store_bound_is_the_issues() {
        assert_eq!(slow_store_bound(Duration::from_secs(3)), Duration::from_millis(5200));
    }
}
