//! The KCL-style baseline in the scale harness, CI-sized (30 nodes, 300
//! shards): it moves the minimum, it cannot restore a crash before the
//! lease expired, and it writes once per lease per renew interval where
//! vipfleet writes once per node per heartbeat. Simulated time only.

use std::time::Duration;

use vipfleet_core::sim::StoreThroughput;
use vipfleet_core::LeaseConfig;
use vipfleet_sim::kcl;
use vipfleet_sim::scale::{ScaleReport, ScaleRun, System};

const NODES: usize = 30;
const SHARDS: usize = 300;

fn scale_run(system: System, scenario: &str, nodes: usize, shards: usize) -> ScaleRun {
    ScaleRun {
        system,
        scenario: scenario.into(),
        seed: 7,
        nodes,
        shards,
        route_tables: 1,
        profile: match system {
            System::Vipfleet => "cheap",
            System::Kcl => kcl::PROFILE,
        },
        lease: LeaseConfig::CHEAP,
        rest_window: Duration::from_secs(60),
        throughput: StoreThroughput::NEW_ON_DEMAND_TABLE,
    }
}

fn assert_kept(report: &ScaleReport) {
    let broken = report.broken_promises();
    assert!(
        broken.is_empty(),
        "{} {}: {broken:#?}\n{}",
        report.system,
        report.scenario,
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

/// Runs the baseline, and checks that no lost shard came back before its
/// lease could expire.
fn kcl_failover(scenario: &str) -> ScaleReport {
    let run = scale_run(System::Kcl, scenario, NODES, SHARDS);
    let report = run.run();
    assert_kept(&report);
    let raw = kcl::run(&run.config());
    let fastest = raw
        .crash_recoveries
        .iter()
        .flat_map(|c| c.per_shard.iter().copied())
        .min()
        .expect("shards were lost and restored");
    assert!(
        fastest >= kcl::FAILOVER_TIME,
        "a shard was restored {fastest:?} after the event, before its lease expired"
    );
    report
}

#[test]
fn a_crash_moves_exactly_the_dead_workers_leases_after_they_expire() {
    let report = kcl_failover("crash");
    let r = report.restoration.as_ref().expect("a crash is restored");
    assert_eq!(r.shards, SHARDS / NODES);
    assert_eq!(report.moves.during_event, r.shards);
    assert_eq!(report.moves.minimum, r.shards);
    assert_eq!(r.unrestored, 0);
}

#[test]
fn losing_an_az_moves_exactly_its_leases() {
    let report = kcl_failover("az-loss");
    assert_eq!(report.moves.minimum, SHARDS / 3);
    assert_eq!(report.moves.during_event, SHARDS / 3);
    assert_eq!(report.restoration.as_ref().map(|r| r.unrestored), Some(0));
}

#[test]
fn at_rest_kcl_writes_every_lease_per_renew_interval_and_vipfleet_every_node_per_heartbeat() {
    let kcl = scale_run(System::Kcl, "crash", NODES, SHARDS).run();
    let vipfleet = scale_run(System::Vipfleet, "crash", NODES, SHARDS).run();
    assert_kept(&vipfleet);
    let kcl_writes = kcl.dynamodb.at_rest.write_units_per_s;
    let renewals = SHARDS as f64 / kcl::RENEW_INTERVAL.as_secs_f64();
    assert!(
        (kcl_writes - renewals).abs() < 0.05 * renewals,
        "{kcl_writes} vs {renewals}"
    );
    let vf_writes = vipfleet.dynamodb.at_rest.write_units_per_s;
    let heartbeats = NODES as f64 / LeaseConfig::CHEAP.heartbeat_interval.as_secs_f64();
    assert!(
        (vf_writes - heartbeats).abs() < 0.05 * heartbeats,
        "{vf_writes} vs {heartbeats}"
    );
    assert_eq!(kcl.system, "kcl");
    assert_eq!(vipfleet.system, "vipfleet");
}

#[test]
fn a_newcomer_steals_one_lease_per_taker_run() {
    let report = scale_run(System::Kcl, "scale-out", 9, 90).run();
    assert_kept(&report);
    // One newcomer: target ceil(90 / 10) = 9, taken one steal at a time.
    assert_eq!(report.moves.minimum, 9);
    assert_eq!(report.moves.during_event, 9);
    let span = Duration::from_secs_f64(report.ec2.calls_span_s);
    assert!(span >= kcl::TAKER_INTERVAL * 8, "9 steals in {span:?}");
}

#[test]
fn the_baseline_is_deterministic_per_seed() {
    let run = scale_run(System::Kcl, "az-loss", 12, 120);
    let (a, b) = (kcl::run(&run.config()), kcl::run(&run.config()));
    assert_eq!(a.store, b.store);
    assert_eq!(a.move_times, b.move_times);
    assert_eq!(a.crash_recoveries, b.crash_recoveries);
    assert_eq!(a.probes, b.probes);
}
