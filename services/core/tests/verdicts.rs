//! What survivors do with their peer verdicts on a crash: only the dead
//! node's takers evict it, a verdict held by the others evicts after all
//! when the takers cannot, and only a node whose quota would grow ranks the
//! orphans to find out, once per burst of verdicts.

use std::collections::BTreeSet;
use std::time::Duration;

use vipfleet_core::machine::VERDICT_WEIGH_INTERVAL;
use vipfleet_core::sim::{self, Fault, ScheduledFault, SimConfig};
use vipfleet_core::LeaseConfig;

const CRASH_AT: Duration = Duration::from_secs(45);
const VICTIM: usize = 2;

/// Twelve nodes and 48 shards: the victim holds about four, so most of
/// the eleven survivors take none of them.
fn crash(seed: u64, partitioned: &BTreeSet<usize>) -> sim::Report {
    crash_all(seed, &[VICTIM], partitioned)
}

fn crash_all(seed: u64, victims: &[usize], partitioned: &BTreeSet<usize>) -> sim::Report {
    let mut config = SimConfig::small(seed);
    config.nodes = 12;
    config.shards = 48;
    config.lease = LeaseConfig::CHEAP;
    config.trace = true;
    config.faults = victims
        .iter()
        .map(|&node| ScheduledFault {
            at: CRASH_AT,
            fault: Fault::Crash { node },
        })
        .collect();
    for &node in partitioned {
        config.faults.push(ScheduledFault {
            at: CRASH_AT - Duration::from_millis(100),
            fault: Fault::Partition {
                node,
                length: Duration::from_secs(5),
            },
        });
    }
    let report = sim::run(&config);
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {}",
        report.violations.join("\n")
    );
    report
}

fn node_index(name: &str) -> usize {
    name.trim_start_matches('n').parse().unwrap_or(usize::MAX)
}

/// When a trace line happened, and at which node.
fn when_and_where(line: &str) -> Option<(f64, usize)> {
    let mut words = line.split_whitespace();
    let at = words
        .next()?
        .trim_start_matches("t+")
        .trim_end_matches('s')
        .parse()
        .ok()?;
    Some((at, node_index(words.next()?)))
}

/// Every weighing of held verdicts: when, where, how many were held and
/// whether the orphans were ranked.
fn weighings(report: &sim::Report) -> Vec<(f64, usize, usize, bool)> {
    report
        .trace
        .iter()
        .filter(|l| l.contains(" VerdictsWeighed {"))
        .filter_map(|l| {
            let (at, node) = when_and_where(l)?;
            let held = l.split("held: ").nth(1)?.split(',').next()?.parse().ok()?;
            Some((at, node, held, l.contains("ranked: true")))
        })
        .collect()
}

/// The nodes that sent an eviction of the victim, with when they sent it.
fn evictions(report: &sim::Report) -> Vec<(f64, usize)> {
    let victim = format!("node: NodeId(\"n{VICTIM:02}\")");
    report
        .trace
        .iter()
        .filter(|l| l.contains("-> Evict(") && l.contains(&victim))
        .filter_map(|l| when_and_where(l))
        .collect()
}

/// The nodes that took one of the victim's shards.
fn takers(report: &sim::Report) -> BTreeSet<usize> {
    let from = format!("from: Some(NodeId(\"n{VICTIM:02}\"))");
    report
        .trace
        .iter()
        .filter(|l| l.contains(" Acquired {") && l.contains(&from))
        .filter_map(|l| l.split_whitespace().nth(1).map(node_index))
        .collect()
}

#[test]
fn only_the_dead_nodes_takers_evict_it() {
    for seed in [7, 8, 9] {
        let report = crash(seed, &BTreeSet::new());
        let evictors: BTreeSet<usize> = evictions(&report).into_iter().map(|(_, n)| n).collect();
        let takers = takers(&report);
        assert!(!evictors.is_empty(), "seed {seed}: nobody evicted the victim");
        assert!(
            evictors.is_subset(&takers),
            "seed {seed}: evicted by {evictors:?}, taken by {takers:?}"
        );
        assert!(
            takers.len() < 11,
            "seed {seed}: every survivor took a shard, so this shows nothing"
        );
        assert!(report.crash_recoveries[0].took.is_some(), "seed {seed}: not restored");
    }
}

#[test]
fn a_held_verdict_evicts_when_the_takers_cannot() {
    let seed = 7;
    let takers_evicting: BTreeSet<usize> = evictions(&crash(seed, &BTreeSet::new()))
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    // The same crash, with the nodes that evicted it cut off from the
    // store: their evictions fail, and the others' held verdicts act.
    let report = crash(seed, &takers_evicting);
    let by_others: Vec<(f64, usize)> = evictions(&report)
        .into_iter()
        .filter(|(_, n)| !takers_evicting.contains(n))
        .collect();
    let crash_at = CRASH_AT.as_secs_f64();
    assert!(
        !by_others.is_empty(),
        "nobody but the cut-off takers {takers_evicting:?} evicted the victim"
    );
    assert!(
        by_others.iter().all(|(at, _)| *at >= crash_at + 1.0),
        "a held verdict waits a second for the takers: {by_others:?}"
    );
    assert!(report.crash_recoveries[0].took.is_some(), "not restored");
}

#[test]
fn only_a_node_whose_quota_would_grow_ranks_the_orphans() {
    for seed in [7, 8, 9] {
        let report = crash(seed, &BTreeSet::new());
        let weighed = weighings(&report);
        let ranked: BTreeSet<usize> = weighed.iter().filter(|w| w.3).map(|w| w.1).collect();
        let takers = takers(&report);
        assert!(!ranked.is_empty(), "seed {seed}: nobody ranked the orphans");
        assert!(
            ranked.is_subset(&takers),
            "seed {seed}: ranked by {ranked:?}, taken by {takers:?}"
        );
        assert!(
            weighed.iter().any(|w| !w.3),
            "seed {seed}: every weighing ranked the orphans: {weighed:?}"
        );
    }
}

#[test]
fn verdicts_of_an_az_loss_are_weighed_together() {
    let victims = [1, 4, 7, 10];
    for seed in [7, 8, 9] {
        let report = crash_all(seed, &victims, &BTreeSet::new());
        let weighed = weighings(&report);
        let gap = VERDICT_WEIGH_INTERVAL.as_secs_f64() - 1e-6;
        for node in 0..12 {
            let times: Vec<f64> = weighed.iter().filter(|w| w.1 == node).map(|w| w.0).collect();
            assert!(
                times.windows(2).all(|t| t[1] - t[0] >= gap),
                "seed {seed}: n{node:02} weighed verdicts closer than {VERDICT_WEIGH_INTERVAL:?}: {times:?}"
            );
        }
        assert!(
            weighed.iter().any(|w| w.2 > 1),
            "seed {seed}: no weighing held more than one verdict: {weighed:?}"
        );
        assert!(
            report.crash_recoveries.iter().all(|c| c.took.is_some()),
            "seed {seed}: not restored: {:?}",
            report.crash_recoveries
        );
    }
}
