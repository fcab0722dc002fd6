//! What survivors do with their peer verdicts on a crash: only the dead
//! node's takers evict it, and a verdict held by the others evicts after
//! all when the takers cannot.

use std::collections::BTreeSet;
use std::time::Duration;

use vipfleet_core::sim::{self, Fault, ScheduledFault, SimConfig};
use vipfleet_core::LeaseConfig;

const CRASH_AT: Duration = Duration::from_secs(45);
const VICTIM: usize = 2;

/// Twelve nodes and 48 shards: the victim holds about four, so most of
/// the eleven survivors take none of them.
fn crash(seed: u64, partitioned: &BTreeSet<usize>) -> sim::Report {
    let mut config = SimConfig::small(seed);
    config.nodes = 12;
    config.shards = 48;
    config.lease = LeaseConfig::CHEAP;
    config.trace = true;
    config.faults = vec![ScheduledFault {
        at: CRASH_AT,
        fault: Fault::Crash { node: VICTIM },
    }];
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

/// The nodes that sent an eviction of the victim, with when they sent it.
fn evictions(report: &sim::Report) -> Vec<(f64, usize)> {
    let victim = format!("node: NodeId(\"n{VICTIM:02}\")");
    report
        .trace
        .iter()
        .filter(|l| l.contains("-> Evict(") && l.contains(&victim))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let at = words
                .next()?
                .trim_start_matches("t+")
                .trim_end_matches('s')
                .parse()
                .ok()?;
            Some((at, node_index(words.next()?)))
        })
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
