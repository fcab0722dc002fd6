//! `peer-partition`: faults between the nodes only, where the peer probes
//! travel. First a cut between two nodes (every packet between their
//! namespaces dropped, both ways, while both keep the store and their
//! clients), then 10 % loss of the UDP between every pair of nodes, then
//! the heal. Probes route around the cut through a third node (indirect
//! pings) and ride out the loss (a verdict needs `confirm_rounds` failed
//! rounds in a row, each confirmed by another node), so neither may evict
//! anyone, move a shard twice or fail a request.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::sleep;

use super::faults::Fault;
use super::fleet::Scrape;
use super::trace::Trace;
use crate::lab::netns;
use crate::report::Report;

/// Share of the datagrams between nodes dropped in the loss phase.
const LOSS_PROBABILITY: f64 = 0.1;
/// The shortest the cut and the loss each hold.
const PHASE_MIN: Duration = Duration::from_secs(6);
/// The heal comes this long before the load ends, so requests after it
/// are measured too.
const HEAL_BEFORE_END: Duration = Duration::from_secs(2);

/// The load the scenario needs at the least.
pub fn duration(warmup: Duration) -> Duration {
    warmup + PHASE_MIN * 2 + HEAL_BEFORE_END
}

/// `iptables -I` (or `-D`) rules that drop what `peer` sends to or gets
/// from the namespace they are added in.
fn cut_rules(peer: Ipv4Addr) -> [Vec<String>; 2] {
    let p = peer.to_string();
    [
        ["INPUT", "-s", &p, "-j", "DROP"].map(String::from).to_vec(),
        ["OUTPUT", "-d", &p, "-j", "DROP"].map(String::from).to_vec(),
    ]
}

/// One rule per other node: a share of the UDP it sends in is dropped
/// (on the way in only, so each datagram is at risk once).
fn loss_rules(others: &[Ipv4Addr]) -> Vec<Vec<String>> {
    others
        .iter()
        .map(|o| {
            let mut rule: Vec<String> = ["INPUT", "-p", "udp", "-s"].map(String::from).to_vec();
            rule.push(o.to_string());
            rule.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
            rule.push(LOSS_PROBABILITY.to_string());
            rule.extend(["-j", "DROP"].map(String::from));
            rule
        })
        .collect()
}

fn apply(ns: &str, op: &str, rules: &[Vec<String>]) -> Result<()> {
    for rule in rules {
        let mut args = vec![op];
        args.extend(rule.iter().map(String::as_str));
        netns::iptables_in(ns, &args)?;
    }
    Ok(())
}

/// Cut, loss, heal; the rules are removed even when adding some failed.
pub async fn peer_partition(f: &mut Fault<'_>) -> Result<()> {
    let nodes = f.state.nodes.clone();
    let a = &nodes[f.victim];
    let b = &nodes[(f.victim + 1) % nodes.len()];
    let end_ms = f.load_end_ms - HEAL_BEFORE_END.as_millis() as u64;
    let loss_from_ms = crate::load::unix_ms() + (end_ms.saturating_sub(crate::load::unix_ms())) / 2;

    let cut = [(a.ns.as_str(), cut_rules(b.ip)), (b.ns.as_str(), cut_rules(a.ip))];
    let added = cut.iter().try_for_each(|(ns, rules)| apply(ns, "-I", rules));
    f.trace
        .event("peer-cut", &format!("{}|{}", a.instance_id, b.instance_id));
    if added.is_ok() {
        sleep_until_ms(loss_from_ms).await;
    }
    let cut_dropped: u64 = cut.iter().map(|(ns, _)| dropped(ns)).sum();
    for (ns, rules) in &cut {
        let _ = apply(ns, "-D", rules);
    }
    added.context("cutting two nodes apart")?;

    let loss: Vec<(&str, Vec<Vec<String>>)> = nodes
        .iter()
        .map(|n| {
            let others: Vec<Ipv4Addr> = nodes.iter().filter(|o| o.ip != n.ip).map(|o| o.ip).collect();
            (n.ns.as_str(), loss_rules(&others))
        })
        .collect();
    let added = loss.iter().try_for_each(|(ns, rules)| apply(ns, "-I", rules));
    f.trace.event("peer-loss", &format!("{}%", LOSS_PROBABILITY * 100.0));
    if added.is_ok() {
        sleep_until_ms(end_ms).await;
    }
    let loss_dropped: u64 = loss.iter().map(|(ns, _)| dropped(ns)).sum();
    for (ns, rules) in &loss {
        let _ = apply(ns, "-D", rules);
    }
    added.context("adding loss between the nodes")?;
    // A fault that dropped nothing tested nothing (probes off, or rules
    // that match no packet).
    for (what, n) in [("cut", cut_dropped), ("loss", loss_dropped)] {
        if n == 0 && f.state.peer_port.is_some() {
            f.trace.violations.push(format!(
                "the {what} dropped no packet: the peers did not probe across it"
            ));
        }
    }
    f.trace.event(
        "peer-heal",
        &format!("cut dropped {cut_dropped} packets, loss {loss_dropped}"),
    );
    Ok(())
}

/// Packets the DROP rules in namespace `ns` dropped so far (`iptables -L
/// -v -x`: the first column is the rule's packet count).
fn dropped(ns: &str) -> u64 {
    let Ok(text) = netns::iptables_in(ns, &["-L", "-n", "-v", "-x"]) else {
        return 0;
    };
    text.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

async fn sleep_until_ms(t_ms: u64) {
    sleep(Duration::from_millis(t_ms.saturating_sub(crate::load::unix_ms()))).await;
}

/// Evictions the agents counted between the first and the last reading.
pub fn evictions(trace: &Trace) -> u64 {
    let (Some(first), Some(last)) = (trace.readings.first(), trace.readings.last()) else {
        return 0;
    };
    let count = |s: &Scrape, agent| s.get(agent).map_or(0, |m| m.evictions);
    last.scrape
        .iter()
        .map(|(agent, m)| m.evictions - count(&first.scrape, agent).min(m.evictions))
        .sum()
}

/// No eviction, and no shard moved more than once (failed requests and
/// flips are the general checks').
pub fn check_peer_partition(
    report: &mut Report,
    trace: &Trace,
    moved: &std::collections::BTreeMap<vipfleet_core::Vip, u64>,
) {
    let evicted = evictions(trace);
    if evicted > 0 {
        report
            .violations
            .push(format!("{evicted} evictions, where every node stayed up"));
    }
    for (vip, n) in moved.iter().filter(|(_, n)| **n > 1) {
        report.violations.push(format!(
            "{vip}'s shard moved {n} times while only the peers' network was faulty"
        ));
    }
}
