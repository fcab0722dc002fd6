//! The promises every scenario is held to, each broken one a violation in
//! the report. What only one scenario promises is checked where it is
//! injected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use vipfleet_core::Vip;

use super::faults::Scenario;
use super::fleet::{self, Ownership};
use super::route_log::{self, RouteChange};
use super::trace::Trace;
use crate::lab::state::LabState;
use crate::load::Record;
use crate::report::Report;
use crate::timeline::{self, Outage};

/// What the harness saw of one run.
pub struct Seen<'a> {
    pub before: &'a Ownership,
    pub after: &'a Ownership,
    /// Every route in moto at the end: (table, VIP) → ENI.
    pub routes: &'a BTreeMap<(String, Vip), String>,
    pub route_log: &'a [RouteChange],
    pub records: &'a [Record],
    pub outages: &'a [Outage],
    pub trace: &'a Trace,
    pub started_ms: u64,
    /// The first fault event.
    pub fault_ms: u64,
    pub end_ms: u64,
}

/// With peer probes, the time from the peers' verdict (the node evicted in
/// the store) to the survivors' route writes sent: the eviction, the read
/// of the shards, the claims and the first route writes, four calls in a
/// row to the lab's motos, which serve one request at a time each. On a
/// quiet 2-core machine a crash series measures p99 0.7 to 0.8 s in all;
/// the lab allows 1 s here so that a loaded CI machine's tail passes.
pub const PEER_TAKEOVER_MS: u64 = 1000;
/// The lab's crash acceptance with peer probes: a crashed node's VIPs
/// answer again within this long, at the 99th percentile: the detection
/// bound, [`PEER_TAKEOVER_MS`] and the mirror's poll. Issue 12 asks 1 s,
/// which quiet runs meet (`docs/design.md`, "Known gaps"); CI holds 1.5 s...
pub const PEER_CRASH_P99_MS: u64 = 1500;
/// ...over at least this many affected VIPs in one run.
pub const MIN_CRASH_SAMPLES: usize = 20;

/// The longest a crashed node's VIPs may stay dark. With peer probes: the
/// detector's bound (a probe interval and `confirm_rounds` failed rounds,
/// 400 ms by default), the takeover ([`PEER_TAKEOVER_MS`]) and the mirror's
/// poll (the lab's VPC propagation). Without them, the lease's bound:
/// the lease (the survivors' verdict), a heartbeat (the last one the victim
/// sent may be that old when it dies, and an observer stamps it a read
/// later), 2 s for the takeover, the route writes and the mirror's poll.
/// Both plus the wait for EC2 tokens of the route writes beyond the
/// agents' burst.
pub fn crash_outage_bound(state: &LabState, victim_vips: usize) -> Duration {
    use vipfleet_core::machine::{DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND};
    let writes = (victim_vips * state.route_tables.len()) as f64;
    let paced = Duration::from_secs_f64((writes - f64::from(DEFAULT_BURST)).max(0.0) / DEFAULT_CALLS_PER_SECOND);
    let verdict_to_routes = match state.peer_port {
        Some(_) => {
            vipfleet_core::peers::PeerConfig::default().detection_bound()
                + Duration::from_millis(PEER_TAKEOVER_MS + state.mirror.poll_ms)
        }
        None => Duration::from_millis(state.lease.lease_ttl_ms + state.lease.heartbeat_ms + 2000),
    };
    verdict_to_routes + paced
}

pub fn general(scenario: Scenario, state: &LabState, seen: &Seen<'_>, report: &mut Report) {
    let moved = fleet::moved(seen.before, seen.after, &seen.trace.recreated);
    failures(scenario, seen, &moved, report);
    if scenario.moves_exactly_the_minimum() && report.moves.actual != report.moves.minimum {
        report.violations.push(format!(
            "{} shards moved where {} had to",
            report.moves.actual, report.moves.minimum
        ));
    }
    routes_point_at_owners(state, seen, report);
    // A route changes because its shard moved, or because the harness
    // changed it (or the VIP list): anything else is a write nobody needed.
    let rerouted = route_log::per_vip(seen.route_log, seen.started_ms, seen.end_ms);
    for (vip, n) in rerouted {
        if !moved.contains_key(&vip) && !seen.trace.may_reroute.contains(&vip) {
            report
                .violations
                .push(format!("{n} route changes for {vip}, whose shard did not move"));
        }
    }
    if scenario.forbids_flips() && report.flips > 0 {
        report.violations.push(format!(
            "{} routes were sent back where they pointed before",
            report.flips
        ));
    }
    if scenario.writes_no_route() && report.ec2.mutating > 0 {
        report.violations.push(format!(
            "{} EC2 route writes where none was needed",
            report.ec2.mutating
        ));
    }
    for exit in report.agent_exits.iter().filter(|e| e.cause == "unexpected") {
        report.violations.push(format!(
            "{}'s agent (pid {}) exited on its own: {}",
            exit.node,
            exit.pid,
            exit.exit_line.as_deref().unwrap_or("no exit line in its log")
        ));
    }
    if let Some(bound) = report.outage_bound_ms {
        for o in seen.outages {
            let late = seen.trace.missing_at_crash.contains(&o.vip);
            let allowed = bound + if late { report.lease_ttl_ms } else { 0 };
            if o.outage_ms.is_some_and(|ms| ms > allowed) {
                report.violations.push(format!(
                    "{} stayed dark {} ms, beyond the crash bound of {allowed} ms",
                    o.vip,
                    o.outage_ms.unwrap_or_default()
                ));
            }
        }
    }
}

/// The VIPs the fault concerns may fail from when it struck them; VIPs
/// that moved may lose a connection caught mid-handshake by the route
/// change. Anything else failing breaks the promise.
fn failures(scenario: Scenario, seen: &Seen<'_>, moved: &BTreeMap<Vip, u64>, report: &mut Report) {
    let mut may_fail: BTreeMap<Ipv4Addr, u64> = seen.trace.may_fail.clone();
    if scenario.moves_may_fail() {
        // From the first fault on, even where a later fault (the next
        // crash of a series) made it a victim's VIP too.
        for vip in moved.keys() {
            let from = may_fail.entry(vip.addr()).or_insert(seen.fault_ms);
            *from = (*from).min(seen.fault_ms);
        }
    }
    let in_window = |r: &Record| {
        seen.trace
            .windows
            .iter()
            .any(|w| w.vips.contains(&r.vip) && (w.from_ms..=w.to_ms).contains(&r.done_ms()))
    };
    let unexpected: Vec<Record> = seen
        .records
        .iter()
        .filter(|r| match scenario {
            Scenario::Soak => !in_window(r),
            _ => may_fail.get(&r.vip).is_none_or(|from| r.done_ms() < *from),
        })
        .cloned()
        .collect();
    for (vip, n) in timeline::unexpected_failures(&unexpected, &BTreeSet::new(), seen.fault_ms) {
        report.violations.push(format!(
            "{n} requests failed on {vip}, which the fault should not touch"
        ));
    }
}

/// Every route in moto points at its shard's owner; a VIP with no shard
/// (one taken out of the list) has no route left.
fn routes_point_at_owners(state: &LabState, seen: &Seen<'_>, report: &mut Report) {
    for ((table, vip), eni) in seen.routes {
        if seen.trace.frozen_tables.contains(table) {
            continue;
        }
        let owner = seen.after.get(vip).and_then(|(o, _)| o.clone());
        let target = state.nodes.iter().find(|n| &n.eni == eni);
        let owner_eni = owner
            .as_ref()
            .and_then(|o| state.node_by_instance(o))
            .map(|n| n.eni.as_str());
        if owner_eni != Some(eni.as_str()) {
            report.violations.push(format!(
                "route {vip} in {table} points at {eni} ({}), not at its owner {owner:?}",
                target.map_or("unknown", |n| n.instance_id.as_str())
            ));
        }
    }
}

/// A zombie with peer probes on: its peers evicted it while it was paused,
/// so each of its shards moved, and — where the evicted process exited
/// rather than start over in-process — none moved twice (it took nothing
/// back before the end of the run). Its exit, if any, names the eviction.
pub fn check_evicted_zombie(report: &mut Report, victim_vips: &[Vip], moved: &BTreeMap<Vip, u64>) {
    for vip in victim_vips.iter().filter(|v| !moved.contains_key(v)) {
        report
            .violations
            .push(format!("{vip} stayed with the paused node: nobody evicted it"));
    }
    let exited: Vec<&crate::report::AgentExit> = report.agent_exits.iter().filter(|e| e.cause == "evicted").collect();
    let mut found = Vec::new();
    for exit in &exited {
        if !exit.exit_line.as_deref().is_some_and(|l| l.contains("evict")) {
            found.push(format!(
                "{}'s agent (pid {}) exited, but not for its eviction: {}",
                exit.node,
                exit.pid,
                exit.exit_line.as_deref().unwrap_or("no exit line in its log")
            ));
        }
    }
    if !exited.is_empty() {
        for (vip, n) in moved.iter().filter(|(_, n)| **n > 1) {
            found.push(format!("{vip}'s shard moved {n} times after a pause"));
        }
    }
    report.violations.extend(found);
}
