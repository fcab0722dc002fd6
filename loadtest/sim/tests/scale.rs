//! The scale scenarios, CI-sized: every promise that does not depend on the
//! machine's speed (moves against the minimum, nothing moving at rest or in
//! steady state, write units at rest equal to heartbeats, restoration
//! within its bound in simulated time, the checker's invariants). The
//! 1,000-node runs are the same code with bigger numbers.

use std::time::Duration;

use vipfleet_core::sim::StoreThroughput;
use vipfleet_core::LeaseConfig;
use vipfleet_sim::scale::{ScaleReport, ScaleRun, System};

fn run(scenario: &str, nodes: usize, shards: usize, lease: LeaseConfig, profile: &'static str) -> ScaleReport {
    scale_run(scenario, 7, nodes, shards, lease, profile).run()
}

fn scale_run(
    scenario: &str,
    seed: u64,
    nodes: usize,
    shards: usize,
    lease: LeaseConfig,
    profile: &'static str,
) -> ScaleRun {
    ScaleRun {
        system: System::Vipfleet,
        scenario: scenario.into(),
        seed,
        nodes,
        shards,
        route_tables: 1,
        profile,
        lease,
        rest_window: Duration::from_secs(60),
        throughput: StoreThroughput::NEW_ON_DEMAND_TABLE,
    }
}

fn cheap(scenario: &str, nodes: usize, shards: usize) -> ScaleReport {
    run(scenario, nodes, shards, LeaseConfig::CHEAP, "cheap")
}

fn assert_kept(report: &ScaleReport) {
    let broken = report.broken_promises();
    assert!(
        broken.is_empty(),
        "{} on {} nodes: {broken:#?}\n{}",
        report.scenario,
        report.nodes,
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

#[test]
fn steady_moves_nothing_and_writes_one_heartbeat_per_node_per_interval() {
    let report = cheap("steady", 30, 300);
    assert_kept(&report);
    assert_eq!(report.moves.during_event + report.moves.at_rest, 0);
    assert!(report.timeline.end_s - report.timeline.event_at_s >= 600.0);
}

#[test]
fn a_crash_moves_exactly_the_dead_nodes_shards() {
    let report = cheap("crash", 30, 300);
    assert_kept(&report);
    let restoration = report.restoration.as_ref().expect("a crash is restored");
    assert_eq!(restoration.shards, report.moves.minimum);
    assert!(restoration.shards > 0);
    // The run ends once the fleet has been settled for 30 s (probed every
    // 5 s), not at the crash's worst-case bound plus its cooldown.
    let settled_for = report.timeline.end_s - report.timeline.event_at_s - restoration.max_ms as f64 / 1000.0;
    assert!(
        (30.0..=40.0).contains(&settled_for),
        "ended {settled_for} s after the last shard's return"
    );
}

/// The ten deaths are found one by one over some 200 ms, so survivors plan
/// again while their first claims are in flight. Seeds 2 and 3 took one
/// shard too many when those claims did not count toward the quota.
#[test]
fn losing_an_az_moves_exactly_its_shards_within_the_bucket_bound() {
    for seed in 1..=8 {
        let report = scale_run("az-loss", seed, 30, 300, LeaseConfig::CHEAP, "cheap").run();
        assert_kept(&report);
        assert_eq!(report.moves.minimum, 100, "a third of 300 shards");
        assert!(
            report.ec2.throttled_attempts_event > 0,
            "100 route writes overflow the bucket of 50"
        );
    }
}

#[test]
fn scaling_out_moves_only_the_new_nodes_share() {
    let report = cheap("scale-out", 30, 300);
    assert_kept(&report);
    // 3 new nodes of 33 take about 300 * 3 / 33 shards.
    assert!((27..=28).contains(&report.moves.minimum), "{}", report.moves.minimum);
}

#[test]
fn a_rolling_replacement_moves_each_shard_at_most_twice() {
    let report = cheap("rolling", 9, 90);
    assert_kept(&report);
    assert!(report.moves.minimum >= 80, "every node held its share when replaced");
}

#[test]
fn the_hot_profile_keeps_the_same_promises() {
    let report = run("crash", 12, 120, LeaseConfig::HOT, "hot");
    assert_kept(&report);
}

/// A crash in a fleet that reads more than its table serves: 30 nodes on a
/// table of 300 read units a second meet the limit as 300 nodes meet a new
/// table's 12,000. When every survivor evicted the dead node, heated and
/// read the shards, retrying throttled reads at the scan pace, the takers'
/// reads were refused with the rest: one shard came back 6 s after the
/// others at seed 7, and at 300 nodes one never did. Only the takers evict
/// and read now, and throttled reads back off.
#[test]
fn a_crash_is_restored_at_once_when_the_fleet_reads_more_than_the_table_serves() {
    for seed in 7..=10 {
        let mut run = scale_run("crash", seed, 30, 300, LeaseConfig::CHEAP, "cheap");
        run.throughput = StoreThroughput::NEW_ON_DEMAND_TABLE.with_table_reads(300.0);
        let report = run.run();
        assert_kept(&report);
        assert!(
            report.dynamodb.throttled_calls_event > 0,
            "seed {seed}: the table's limit must bite, or this tests nothing"
        );
        let restoration = report.restoration.as_ref().expect("a crash is restored");
        assert_eq!(restoration.shards, report.moves.minimum);
    }
}

/// An AZ's loss on a table that serves the hot fleet's scans but not the
/// survivors' reads of the shards on top: 60 nodes, 600 shards, 450 read
/// units a second. Every survivor is a taker, and each needs the node items
/// (who is gone) and then the shards. A survivor's read of the shards left
/// the table's tokens spent, its read of the node items right after was
/// refused, and it held its node reads while the next read of the shards
/// was throttled: it saw the others' evictions late. At seeds 7 to 14 the
/// last shard came back 51 to 122 s after the loss, four seeds past twice
/// the bound (47.5 s, which counts no store throttling), and the checker
/// found shards without a live owner when the faults were long over at
/// three. While the table throttles the shards' reads, the two reads now
/// take turns (`machine/reads.rs`): 37 to 82 s, no violation.
#[test]
fn an_az_loss_is_restored_in_time_when_the_survivors_read_more_than_the_table_serves() {
    for seed in 7..=14 {
        let mut run = scale_run("az-loss", seed, 60, 600, LeaseConfig::CHEAP, "cheap");
        run.throughput = StoreThroughput::NEW_ON_DEMAND_TABLE.with_table_reads(450.0);
        let report = run.run();
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        assert!(report.violations.is_empty(), "seed {seed}: {:#?}", report.violations);
        assert!(
            report.dynamodb.throttled_calls_event > 0,
            "seed {seed}: the table's limit must bite, or this tests nothing"
        );
        let restoration = report.restoration.as_ref().expect("an AZ's loss is restored");
        assert_eq!(restoration.unrestored, 0, "seed {seed}\n{json}");
        assert_eq!(report.moves.during_event, report.moves.minimum, "seed {seed}\n{json}");
        assert!(
            restoration.max_ms <= 2 * restoration.bound_ms,
            "seed {seed}: the last shard came back {} ms after the loss\n{json}",
            restoration.max_ms
        );
    }
}
