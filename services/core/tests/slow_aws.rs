//! The protocol under slow and failing AWS: a store slower than the
//! heartbeat, store calls that fail or apply with the answer lost, EC2
//! calls that fail and are retried, a route table that is gone. Each rule
//! that makes the fleet survive one of these is also broken on purpose
//! ([`Sabotage`]) to show the checks would have found its absence.

use std::time::Duration;

use vipfleet_core::machine::Pacing;
use vipfleet_core::sim::{self, Fault, Mix, Report, Sabotage, ScheduledFault, SimConfig};
use vipfleet_core::LeaseConfig;

fn at(millis: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Duration::from_millis(millis),
        fault,
    }
}

fn crash_recovery(report: &Report) -> Duration {
    let recovery = report.crash_recoveries.first().expect("a crash");
    recovery
        .took
        .unwrap_or_else(|| panic!("seed {}: {recovery:?} never recovered", report.seed))
}

/// Node 1 crashes 5 s into a stretch where every store call of everyone
/// takes `latency` more each way.
fn crash_under_slow_store(seed: u64, latency: Duration) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.faults = vec![
        at(
            20_000,
            Fault::SlowStore {
                node: None,
                latency,
                length: Duration::from_secs(30),
            },
        ),
        at(25_000, Fault::Crash { node: 1 }),
    ];
    config
}

#[test]
fn a_crash_under_a_slow_store_is_still_failed_over_in_time() {
    let mut took = Vec::new();
    let latency = Duration::from_millis(600);
    // A lease, a slow round trip to see the counter stand still and one to
    // take over, a second for the rest.
    let bound = LeaseConfig::HOT.lease_ttl + latency * 2 + Duration::from_secs(1);
    for seed in 0..10 {
        let report = sim::run(&crash_under_slow_store(seed, latency));
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
        took.push(crash_recovery(&report));
    }
    assert!(took.iter().all(|t| *t <= bound), "recoveries {took:?}, bound {bound:?}");
}

#[test]
fn a_short_store_blackout_of_one_node_moves_nothing() {
    for seed in 0..10 {
        let mut config = SimConfig::small(seed);
        config.faults = vec![at(
            20_000,
            Fault::Partition {
                node: 2,
                length: Duration::from_millis(1500),
            },
        )];
        let report = sim::run(&config);
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
        assert_eq!(report.moves, 0, "seed {seed}");
    }
}

/// A store that loses the answer to a fifth of the calls (they time out)
/// for half a minute, and a crash in the middle of it.
fn crash_under_flaky_store(seed: u64, sabotage: Option<Sabotage>) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.sabotage = sabotage;
    // The crash is found by its lease: that is what blindness would hide.
    config.peers = None;
    config.faults = vec![
        at(
            20_000,
            Fault::FlakyStore {
                percent: 20,
                length: Duration::from_secs(30),
            },
        ),
        at(25_000, Fault::Crash { node: 1 }),
    ];
    config
}

#[test]
fn the_checks_catch_blindness_judged_by_return_times() {
    // Lost answers cost retries and, now and then, a lapsed lease: the
    // honest fleet is slower than on a healthy store, but not blind.
    let bound = Duration::from_secs(12);
    let honest: Vec<Duration> = (0..8)
        .map(|seed| crash_recovery(&sim::run(&crash_under_flaky_store(seed, None))))
        .collect();
    assert!(honest.iter().all(|t| *t <= bound), "{honest:?}");
    let sabotaged: Vec<Option<Duration>> = (0..8)
        .map(|seed| {
            let report = sim::run(&crash_under_flaky_store(seed, Some(Sabotage::BlindByReturnTimes)));
            report.crash_recoveries.first().and_then(|r| r.took)
        })
        .collect();
    let late = sabotaged.iter().filter(|t| t.is_none_or(|t| t > bound)).count();
    assert!(
        late >= 4,
        "blind observers should miss the crash for long: {sabotaged:?}"
    );
}

/// Nodes 0 and 1 take over node 2's shards while EC2 fails half the calls
/// (the SDK retries them); node 0 is stopped (SIGSTOP) for longer than its
/// lease in the middle of it, and node 1 takes its shards too: no retry of
/// node 0's may go out when it wakes.
fn stall_while_retrying(seed: u64, sabotage: Option<Sabotage>) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.nodes = 3;
    config.sabotage = sabotage;
    // A zombie whose lease ran out: peers would have evicted it, and its
    // late writes are then judged by the eviction's rule.
    config.peers = None;
    config.pacing = Pacing {
        calls_per_second: 10.0,
        burst: 20,
    };
    config.faults = vec![
        at(
            18_000,
            Fault::FlakyEc2 {
                percent: 50,
                length: Duration::from_secs(20),
            },
        ),
        at(20_000, Fault::Crash { node: 2 }),
        // Node 0's calls crawl to EC2: a retry sent when it wakes lands
        // well after node 1's writes.
        at(
            18_000,
            Fault::SlowEc2 {
                node: 0,
                latency: Duration::from_millis(1000),
                length: Duration::from_secs(10),
            },
        ),
        at(
            22_300 + (seed % 8) * 100,
            Fault::Pause {
                node: 0,
                length: Duration::from_millis(4500),
            },
        ),
    ];
    config
}

#[test]
fn the_checks_catch_a_fence_checked_once_per_call() {
    for seed in 0..12 {
        let report = sim::run(&stall_while_retrying(seed, None));
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
    }
    let caught: Vec<Vec<String>> = (0..12)
        .map(|seed| sim::run(&stall_while_retrying(seed, Some(Sabotage::FenceOncePerCall))).violations)
        .filter(|v| !v.is_empty())
        .collect();
    assert!(!caught.is_empty(), "no seed caught the late retries");
    // What lands is what matters: the nodes' beliefs alone (one may write
    // at a time) never show it; the landed writes do (a write under an old
    // epoch landing after a newer one, or routes left pointing at the
    // zombie when the faults are over).
    for violations in &caught {
        let landed = |v: &String| v.contains("landed") || v.contains("do not all point to its owner");
        assert!(violations.iter().any(landed), "{violations:?}");
        assert!(!violations.iter().any(|v| v.contains("has writers")), "{violations:?}");
    }
}

/// Node 1 drains while the account's EC2 bucket lets its pushes out at
/// 2 calls a second: most of them run out of time, and the recipients'
/// repairs move the routes.
fn slow_drain(seed: u64, sabotage: Option<Sabotage>) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.nodes = 3;
    config.sabotage = sabotage;
    config.faults = vec![at(45_000, Fault::Drain { node: 1 })];
    config
}

#[test]
fn the_checks_catch_a_drain_that_leaves_routes_behind() {
    for seed in 0..6 {
        let report = sim::run(&slow_drain(seed, None));
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
        assert_eq!(report.exits.get("drained"), Some(&1), "seed {seed}: {:?}", report.exits);
    }
    let caught = (0..6)
        .map(|seed| sim::run(&slow_drain(seed, Some(Sabotage::DrainIgnoresRoutes))).violations)
        .filter(|v| {
            v.iter()
                .any(|v| v.contains("reported drained with routes pointing at it"))
        })
        .count();
    assert!(caught > 0, "no seed caught the drain that left routes behind");
}

/// Table 1 refuses every call for a minute; node 2 crashes 5 s into it.
fn failing_table(seed: u64) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.nodes = 3;
    config.faults = vec![
        at(
            40_000,
            Fault::TableFails {
                table: 1,
                length: Duration::from_secs(60),
            },
        ),
        at(45_000, Fault::Crash { node: 2 }),
    ];
    config
}

#[test]
fn a_failing_table_is_asked_less_than_once_in_ten_seconds() {
    // From 10 s after the crash (the first retries are quick) to the end
    // of the failure: 45 s, so fewer than 5 mutating calls per node.
    let (from, to) = (Duration::from_secs(55), Duration::from_secs(100));
    for seed in 0..6 {
        let report = sim::run(&failing_table(seed));
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
        for node in 0..2 {
            let calls = report
                .refused_by_failing_table
                .iter()
                .filter(|(at, n)| *n == node && *at >= from && *at < to)
                .count();
            assert!(
                calls < 5,
                "seed {seed}: node {node} made {calls} calls to the failing table in 45 s"
            );
        }
    }
}

/// Every fault at once, over many seeds: the CI's share of the chaos runs
/// (`vipfleet-sim --scenario chaos --seeds N` runs more).
#[test]
fn chaos_schedules_break_no_invariant() {
    let mut failures = Vec::new();
    for seed in 0..40 {
        let mut config = SimConfig::small(seed);
        if seed % 2 == 1 {
            config.lease = LeaseConfig::FAST;
        }
        let config = config.with_random_faults_of(Duration::from_secs(60), 10, Mix::Chaos);
        let report = sim::run(&config);
        if !report.violations.is_empty() {
            failures.push(format!("seed {seed}: {}", report.violations.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
