//! The two cheaper pieces of model that scale runs opt into
//! (`SimConfig::bucket_from`, `SimConfig::prompt_datagrams`): each keeps
//! what the simulation checks and measures, and costs less.

use std::time::Duration;

use vipfleet_core::sim::{self, Fault, Mix, Report, ScheduledFault, SimConfig};
use vipfleet_core::LeaseConfig;

/// Node 2 of 5 crashes here: the start-up's writes are through by then.
const CRASH_AT: Duration = Duration::from_secs(45);
/// The formed phase of the start-up test ends here.
const FORMED_UNTIL: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_secs(1);

fn assert_clean(report: &Report) {
    assert!(
        report.violations.is_empty(),
        "seed {}: {}",
        report.seed,
        report.violations.join("\n")
    );
}

fn throttled_before(report: &Report, until: Duration) -> u64 {
    report
        .probes
        .iter()
        .filter(|p| p.at < until)
        .map(|p| p.ec2_throttled)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_formed_start_lets_the_start_up_writes_through_and_limits_from_then_on() {
    // 1,000 routes: twenty times the bucket's burst.
    let mut config = SimConfig::small(7);
    config.shards = 500;
    config.probe_every = Some(PROBE_EVERY);
    let cold = sim::run(&config);
    assert!(
        throttled_before(&cold, FORMED_UNTIL) > 0,
        "the bucket holds a cold start back"
    );

    config.bucket_from = FORMED_UNTIL;
    config.faults = vec![ScheduledFault {
        at: FORMED_UNTIL + Duration::from_secs(15),
        fault: Fault::Crash { node: 2 },
    }];
    config.bucket_allowance = Duration::from_secs(60);
    let formed = sim::run(&config);
    assert_clean(&formed);
    assert_eq!(throttled_before(&formed, FORMED_UNTIL), 0);
    // From then on the bucket is the account's: the crash's 200 writes
    // overflow its burst of 50.
    let throttled = formed.probes.last().map_or(0, |p| p.ec2_throttled);
    assert!(throttled > 0, "the bucket limits after the formed phase");
    assert!(formed.crash_recoveries[0].took.is_some());
}

/// A crash of node 2 at [`CRASH_AT`]: how long until its shards were
/// restored, and the run.
fn crash(lease: LeaseConfig, prompt_datagrams: bool) -> (Duration, Report) {
    let mut config = SimConfig::small(7);
    config.lease = lease;
    config.prompt_datagrams = prompt_datagrams;
    config.faults = vec![ScheduledFault {
        at: CRASH_AT,
        fault: Fault::Crash { node: 2 },
    }];
    let report = sim::run(&config);
    assert_clean(&report);
    assert!(report.event_moves[0].clean);
    let took = report.crash_recoveries[0].took.expect("restored");
    (took, report)
}

#[test]
fn prompt_datagrams_detect_a_crash_within_the_same_bound_with_fewer_events() {
    for lease in [LeaseConfig::HOT, LeaseConfig::CHEAP, LeaseConfig::FAST] {
        let config = SimConfig::small(7);
        let peers = config.peers.expect("peer probes are on by default");
        let bound = peers.detection_bound() + peers.probe_interval + config.latency_max * 4;
        let (slow_took, slow) = crash(lease.clone(), false);
        let (took, prompt) = crash(lease, true);
        assert!(
            took <= bound,
            "{took:?} above {bound:?} (as datagram events: {slow_took:?})"
        );
        let moves = &prompt.event_moves[0];
        assert!(moves.clean && moves.actual == moves.minimum, "{moves:?}");
        // At 5 nodes the machines' own events weigh more than at 1,000:
        // a quarter fewer at least.
        assert!(
            prompt.events_processed * 4 < slow.events_processed * 3,
            "{} events, {} as datagram events",
            prompt.events_processed,
            slow.events_processed
        );
    }
}

/// Links cut, nodes isolated, packets lost, with everything else: those
/// datagrams still go as events of their own, and nothing breaks.
#[test]
fn chaos_schedules_with_prompt_datagrams_break_no_invariant() {
    let mut failures = Vec::new();
    for seed in 0..20 {
        let mut config = SimConfig::small(seed);
        if seed % 2 == 1 {
            config.lease = LeaseConfig::FAST;
        }
        config.prompt_datagrams = true;
        let config = config.with_random_faults_of(Duration::from_secs(60), 10, Mix::Chaos);
        let report = sim::run(&config);
        if !report.violations.is_empty() {
            failures.push(format!("seed {seed}: {}", report.violations.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
