//! The protocol under what operators, upgrades and AWS do to a fleet: junk
//! and deleted items, a lost and re-created table, agent restarts, VIP lists
//! and route tables rolled out node by node, nodes on different lease
//! settings, haproxy flapping, a node marked dead by hand. Each rule that
//! makes the fleet survive one of these is also broken on purpose
//! ([`Sabotage`]) to show the checks would have found its absence.

use std::collections::BTreeMap;
use std::time::Duration;

use vipfleet_core::sim::{self, rollout, shard_of, Fault, Mix, Report, Sabotage, ScheduledFault, SimConfig, Variant};
use vipfleet_core::LeaseConfig;

fn at(secs: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Duration::from_secs(secs),
        fault,
    }
}

fn assert_clean(report: &Report) {
    assert!(
        report.violations.is_empty(),
        "seed {}: {} violations:\n{}",
        report.seed,
        report.violations.len(),
        report.violations.join("\n")
    );
}

fn window<'a>(report: &'a Report, kind: &str) -> &'a sim::EventMoves {
    report
        .event_moves
        .iter()
        .find(|w| w.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} window in {:?}", report.event_moves))
}

fn run(config: &SimConfig) -> Report {
    let report = sim::run(config);
    assert_clean(&report);
    report
}

#[test]
fn a_re_created_table_re_forms_around_the_routes_as_they_stand() {
    let mut config = SimConfig::small(21);
    config.faults = vec![at(
        30,
        Fault::TableLoss {
            length: Duration::from_secs(8),
        },
    )];
    let report = run(&config);
    let loss = window(&report, "table-loss");
    assert!(loss.clean, "{loss:?}");
    assert_eq!((loss.actual, report.moves), (0, 0), "{loss:?}");
    assert!(report.exits.is_empty(), "no agent exits: {:?}", report.exits);
}

fn restarts(seed: u64, graceful: bool) -> SimConfig {
    let mut config = SimConfig::small(seed);
    config.faults = vec![
        at(
            30,
            Fault::Restart {
                node: 1,
                down: Duration::from_millis(500),
                graceful,
            },
        ),
        at(
            50,
            Fault::Restart {
                node: 3,
                down: Duration::from_millis(1500),
                graceful,
            },
        ),
    ];
    config
}

#[test]
fn agent_restarts_move_nothing_and_write_no_route() {
    // SIGTERM: the agent tells its peers it is leaving, and its lease
    // outlives the restart. `kill -9` with peer probes off: the lease alone.
    for graceful in [true, false] {
        let mut config = restarts(22, graceful);
        if !graceful {
            config.peers = None;
        }
        let report = run(&config);
        let restarts: Vec<_> = report.event_moves.iter().filter(|w| w.kind == "restart").collect();
        assert_eq!(restarts.len(), 2);
        assert!(restarts.iter().all(|w| w.clean && w.actual == 0), "{restarts:?}");
        assert_eq!(report.moves, 0, "graceful {graceful}");
        let stopped = report.exits.get("stopped").copied().unwrap_or(0);
        assert_eq!(stopped, if graceful { 2 } else { 0 }, "{:?}", report.exits);
    }
}

#[test]
fn a_kill_9_restart_past_the_detection_time_moves_only_the_nodes_shards() {
    // Peers cannot tell `kill -9` from a crash: the node's shards move, and
    // the new process is given its share again; nothing else moves.
    let report = run(&restarts(22, false));
    let kills: Vec<_> = report.event_moves.iter().filter(|w| w.kind == "kill-restart").collect();
    assert_eq!(kills.len(), 2);
    assert!(kills.iter().all(|w| w.clean), "{kills:?}");
    assert!(kills.iter().any(|w| w.actual > 0), "{kills:?}");
}

#[test]
fn items_deleted_broken_or_marked_dead_by_hand_move_nothing() {
    let mut config = SimConfig::small(23);
    config.faults = vec![
        at(30, Fault::DeleteShardItem { shard: 5 }),
        at(50, Fault::DeleteNodeItem { node: 2 }),
        at(70, Fault::MarkDeadByHand { node: 3 }),
        at(
            90,
            Fault::JunkItem {
                over_node: None,
                length: Duration::from_secs(10),
            },
        ),
        at(
            110,
            Fault::JunkItem {
                over_node: Some(4),
                length: Duration::from_secs(10),
            },
        ),
    ];
    let report = run(&config);
    for kind in [
        "delete-shard-item",
        "delete-node-item",
        "mark-dead-by-hand",
        "junk-item",
    ] {
        let w = window(&report, kind);
        assert!(w.clean && w.actual == 0, "{w:?}");
    }
    assert_eq!(report.moves, 0);
}

/// A crash while a junk item sits in the table is failed over within the
/// crash bound.
fn crash_during_junk(sabotage: Option<Sabotage>) -> Report {
    let mut config = SimConfig::small(24);
    config.sabotage = sabotage;
    // Reads are what this is about: the crash must be found by its lease.
    config.peers = None;
    config.faults = vec![
        at(
            20,
            Fault::JunkItem {
                over_node: None,
                length: Duration::from_secs(30),
            },
        ),
        at(25, Fault::Crash { node: 2 }),
    ];
    sim::run(&config)
}

/// Node 2 crashes; before its lease runs out its item is overwritten with
/// junk, which a few seconds later is deleted (found by chaos seed 589):
/// the node must not be forgotten while its item is unreadable, or nobody
/// ever finds it gone and its shards stay on a dead node.
#[test]
fn a_dead_node_whose_item_turns_to_junk_and_vanishes_is_still_failed_over() {
    let mut config = SimConfig::small(24);
    config.faults = vec![
        at(45, Fault::Crash { node: 2 }),
        at(
            46,
            Fault::JunkItem {
                over_node: Some(2),
                length: Duration::from_secs(3),
            },
        ),
    ];
    let report = sim::run(&config);
    assert_clean(&report);
    report.crash_recoveries[0]
        .took
        .expect("the crashed node's shards were taken over");
}

fn crash_bound(lease: &LeaseConfig) -> Duration {
    lease.lease_ttl + lease.scan_interval * 3
}

#[test]
fn a_junk_item_never_blinds_the_fleet() {
    let report = crash_during_junk(None);
    assert_clean(&report);
    let took = report.crash_recoveries[0]
        .took
        .expect("the crashed node's shards came back");
    assert!(took <= crash_bound(&LeaseConfig::HOT), "{took:?}");
}

#[test]
fn the_checks_catch_reads_that_fail_on_one_bad_item() {
    let report = crash_during_junk(Some(Sabotage::StrictReads));
    let took = report.crash_recoveries[0].took;
    assert!(
        took.is_none_or(|t| t > crash_bound(&LeaseConfig::HOT)),
        "strict reads should blind the fleet until the junk is gone: {took:?}"
    );
}

#[test]
fn the_checks_catch_an_exit_on_a_vanished_item() {
    let mut config = SimConfig::small(25);
    config.sabotage = Some(Sabotage::MissingItemIsSuperseded);
    config.faults = vec![at(
        20,
        Fault::TableLoss {
            length: Duration::from_secs(4),
        },
    )];
    let report = sim::run(&config);
    assert!(
        report.exits.get("superseded").copied().unwrap_or(0) > 0
            && report.violations.iter().any(|v| v.starts_with("(b)")),
        "{:?} {:?}",
        report.exits,
        report.violations
    );
}

/// A crash first, so that owners are no longer what a fresh assignment
/// would make of the shards; then the table is lost.
fn crash_then_table_loss(sabotage: Sabotage) -> SimConfig {
    let mut config = SimConfig::small(26);
    config.sabotage = Some(sabotage);
    config.faults = vec![
        at(20, Fault::Crash { node: 4 }),
        at(
            40,
            Fault::TableLoss {
                length: Duration::from_secs(4),
            },
        ),
    ];
    config
}

#[test]
fn the_checks_catch_a_fleet_that_ignores_the_routes_of_free_shards() {
    let config = crash_then_table_loss(Sabotage::RoutesUnseen);
    let report = sim::run(&config);
    assert!(
        report
            .violations
            .iter()
            .any(|v| (v.starts_with("(c)") || v.starts_with("(b)")) && v.contains("routes")),
        "{:?}",
        report.violations
    );
}

#[test]
fn the_checks_catch_epochs_that_restart() {
    let config = crash_then_table_loss(Sabotage::EpochsRestart);
    let report = sim::run(&config);
    assert!(
        report.violations.iter().any(|v| v.starts_with("(e)")),
        "{:?}",
        report.violations
    );
}

/// Node 0 runs a long lease (a heartbeat every 4 s, a 12 s TTL); the
/// others the default (3 s TTL): they must judge it by its own, longer TTL.
fn lease_skew(sabotage: Option<Sabotage>) -> Report {
    let mut config = SimConfig::small(28);
    // Judged by leases, as a fleet without peer probes is.
    config.peers = None;
    let slow = LeaseConfig {
        heartbeat_interval: Duration::from_secs(4),
        lease_ttl: Duration::from_secs(12),
        scan_interval: Duration::from_millis(500),
        ..LeaseConfig::HOT
    };
    assert_eq!(slow.validate(), Ok(()));
    config.variants = BTreeMap::from([(
        0,
        Variant {
            lease: slow,
            ..config.base_variant()
        },
    )]);
    config.sabotage = sabotage;
    config.faults = vec![at(40, Fault::Crash { node: 0 })];
    sim::run(&config)
}

#[test]
fn peers_are_judged_by_the_longer_lease() {
    let report = lease_skew(None);
    assert_clean(&report);
    let crash = window(&report, "crash");
    assert_eq!(crash.actual, crash.minimum, "{crash:?}");
    let took = report.crash_recoveries[0].took.expect("restored");
    assert!(
        took >= Duration::from_secs(8),
        "taken over before its 12 s lease could end: {took:?}"
    );
}

#[test]
fn the_checks_catch_peers_judged_by_the_observers_own_lease() {
    let report = lease_skew(Some(Sabotage::OwnTtlOnly));
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("(a)") || v.starts_with("(d)")),
        "{:?}",
        report.violations
    );
}

#[test]
fn a_vip_list_rolled_out_node_by_node_serves_the_new_vip_and_retires_the_old() {
    let mut config = SimConfig::small(29);
    let next = Variant {
        layout_version: 1,
        ..config.base_variant()
    };
    config.faults = rollout(config.nodes, &next, Duration::from_secs(20), Duration::from_secs(6));
    // A crash while the fleet runs two lists at once.
    config.faults.push(at(31, Fault::Crash { node: 4 }));
    config.faults.sort_by_key(|f| f.at);
    let report = run(&config);
    let crash = window(&report, "crash");
    assert_eq!(
        crash.actual, crash.minimum,
        "only the dead node's shards move: {crash:?}"
    );
    assert!(report.crash_recoveries[0].took.is_some());
    // The end state is checked by the simulation itself: shard 0 (the
    // removed VIP) has neither item nor routes, shard 64 (the new one) an
    // owner that serves it and routes to it.
    assert_ne!(shard_of(0), shard_of(64));
}

#[test]
fn nodes_with_fewer_route_tables_still_get_every_table_maintained() {
    let mut config = SimConfig::small(30);
    config.route_tables = 3;
    let fewer = Variant {
        route_tables: 1,
        ..config.base_variant()
    };
    config.variants = BTreeMap::from([(0, fewer.clone()), (1, fewer)]);
    config.faults = vec![at(25, Fault::Crash { node: 2 }), at(45, Fault::Drain { node: 3 })];
    let report = run(&config);
    assert!(report.crash_recoveries[0].took.is_some());
}

#[test]
fn haproxy_failing_hands_shards_away_and_back() {
    let mut config = SimConfig::small(31);
    config.faults = vec![at(
        20,
        Fault::HealthDown {
            node: 1,
            length: Duration::from_secs(10),
        },
    )];
    let report = run(&config);
    assert!(
        report.moves >= 12,
        "node 1's shards went away and a share came back: {}",
        report.moves
    );
}

/// Every fault operators and AWS throw, mixed, over many seeds.
#[test]
fn two_hundred_schedules_of_operational_faults_break_no_invariant() {
    let mut failures = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..200 {
        let mut config = SimConfig::small(1000 + seed);
        if seed % 2 == 1 {
            config.lease = LeaseConfig::FAST;
        }
        let config = config.with_random_faults_of(Duration::from_secs(60), 10, Mix::Operations);
        for f in &config.faults {
            *kinds.entry(f.fault.name()).or_default() += 1;
        }
        let report = sim::run(&config);
        if !report.violations.is_empty() {
            failures.push(format!("seed {}: {}", 1000 + seed, report.violations.join("; ")));
        }
    }
    for kind in [
        "restart",
        "table-loss",
        "junk-item",
        "delete-shard-item",
        "mark-dead-by-hand",
        "health-down",
    ] {
        assert!(kinds.get(kind).is_some_and(|n| *n >= 20), "too few {kind}: {kinds:?}");
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn ms(at: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Duration::from_millis(at),
        fault,
    }
}

/// Chaos seed 1695 (fast profile): a hand-off, then route table 1 refuses
/// every call, then the lease table is lost. Route table 1's last answer
/// (from before the hand-off) must not decide where the re-created table's
/// shards go: that moved shards a table loss must not move.
#[test]
fn a_route_table_that_keeps_refusing_does_not_decide_who_gets_a_free_shard() {
    let mut config = SimConfig::small(1695);
    config.lease = LeaseConfig::FAST;
    config.faults = vec![
        ms(
            10_366,
            Fault::TableFails {
                table: 0,
                length: Duration::from_millis(3060),
            },
        ),
        ms(
            13_733,
            Fault::StoreOutage {
                length: Duration::from_millis(2370),
            },
        ),
        ms(
            38_598,
            Fault::HealthDown {
                node: 0,
                length: Duration::from_millis(2534),
            },
        ),
        ms(
            41_832,
            Fault::TableFails {
                table: 1,
                length: Duration::from_millis(6732),
            },
        ),
        ms(
            48_177,
            Fault::TableLoss {
                length: Duration::from_millis(1358),
            },
        ),
        ms(
            56_480,
            Fault::FlakyStore {
                percent: 24,
                length: Duration::from_millis(4256),
            },
        ),
        ms(69_277, Fault::Drain { node: 1 }),
        ms(69_401, Fault::Join),
    ];
    run(&config);
}

/// Chaos seed 1024: a node paused through a table loss wakes up, renews its
/// lease and, from what it knew before the pause, claims shards that were
/// claimed (at a higher epoch) and lost again while it slept. After a lapse
/// a node plans no change of owner from what it knew before.
#[test]
fn a_node_whose_lease_lapsed_claims_nothing_from_what_it_knew_before() {
    let mut config = SimConfig::small(1024);
    config.faults = vec![
        ms(
            15_355,
            Fault::TableLoss {
                length: Duration::from_millis(2077),
            },
        ),
        ms(
            18_706,
            Fault::StoreOutage {
                length: Duration::from_millis(7863),
            },
        ),
        ms(
            18_863,
            Fault::FlakyEc2 {
                percent: 23,
                length: Duration::from_millis(14_994),
            },
        ),
        ms(
            20_528,
            Fault::JunkItem {
                over_node: Some(1),
                length: Duration::from_millis(4682),
            },
        ),
        ms(
            26_845,
            Fault::Pause {
                node: 4,
                length: Duration::from_millis(6074),
            },
        ),
        ms(
            31_847,
            Fault::TableLoss {
                length: Duration::from_millis(4746),
            },
        ),
        ms(
            38_201,
            Fault::FlakyStore {
                percent: 24,
                length: Duration::from_millis(9122),
            },
        ),
        ms(
            53_445,
            Fault::PeerLoss {
                percent: 12,
                length: Duration::from_millis(12_909),
            },
        ),
    ];
    run(&config);
}

/// Chaos seed 63 (cheap profile): route table 1 answers "does not exist"
/// for 54 s while node 4 drains (after a graceful restart, with its probes
/// to node 0 cut). The drain ended on a read-back of table 0 alone and
/// reported the node drained while table 1 still routed 18 VIPs to it. A
/// table that refuses now holds a drain's end back until it answers again
/// (or the drain times out).
#[test]
fn a_drain_does_not_end_while_a_route_table_refuses() {
    let mut config = SimConfig::small(63);
    config.lease = LeaseConfig::CHEAP;
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(
            28_793,
            Fault::Pause {
                node: 0,
                length: secs(23_781),
            },
        ),
        ms(
            32_595,
            Fault::Pause {
                node: 2,
                length: secs(4_945),
            },
        ),
        ms(34_406, Fault::RouteDrift { shard: 33, to_node: 3 }),
        ms(
            38_434,
            Fault::TableFails {
                table: 1,
                length: secs(54_102),
            },
        ),
        ms(
            38_442,
            Fault::Pause {
                node: 2,
                length: secs(30_199),
            },
        ),
        ms(
            40_209,
            Fault::PeerCut {
                a: 4,
                b: 0,
                length: secs(118_689),
            },
        ),
        ms(
            51_384,
            Fault::Restart {
                node: 4,
                down: secs(7_312),
                graceful: true,
            },
        ),
        ms(67_105, Fault::Drain { node: 4 }),
    ];
    config.cooldown = Duration::from_secs(60);
    let report = run(&config);
    assert_eq!(
        report.exits.get("drained"),
        Some(&1),
        "the drain still ends once the table answers: {:?}",
        report.exits
    );
}

/// Chaos seed 302 (cheap profile): the lease table is lost for 8 s, less
/// than the cheap profile's lease. Node 0 had seen some shards free at
/// start-up and read nothing since; others claimed them, and the table
/// took their items with it. Back, node 0 found them "free for long" and
/// claimed them while their holders' leases still ran. Having seen the
/// table missing, a node starts every free shard's wait over.
#[test]
fn a_lost_table_frees_no_shard_before_its_holders_leases_end() {
    let mut config = SimConfig::small(302);
    config.lease = LeaseConfig::CHEAP;
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(15_220, Fault::TableLoss { length: secs(8_321) }),
        ms(25_174, Fault::DeleteNodeItem { node: 3 }),
        ms(40_546, Fault::DeleteNodeItem { node: 0 }),
        ms(
            40_750,
            Fault::FlakyStore {
                percent: 37,
                length: secs(82_362),
            },
        ),
        ms(
            41_300,
            Fault::TableFails {
                table: 0,
                length: secs(80_298),
            },
        ),
        ms(
            42_944,
            Fault::FlakyStore {
                percent: 24,
                length: secs(80_606),
            },
        ),
        ms(
            44_506,
            Fault::SlowStore {
                node: None,
                latency: secs(1_954),
                length: secs(17_070),
            },
        ),
        ms(65_576, Fault::RouteDrift { shard: 14, to_node: 3 }),
    ];
    config.cooldown = Duration::from_secs(60);
    run(&config);
}

/// Chaos seed 16 (cheap profile): node 0 is cut off from the store (and
/// then paused) before the fleet's first claims, so it never reads a shard
/// item or an epoch floor above 0. The others claim its share at epoch 2
/// (one above the floors of their epoch-1 claims), then the table is lost
/// for 19 s. Node 0 re-registers first, 3 s before the others write their
/// floors again, and claimed its old share at epoch 1 five seconds later:
/// the restart of its shards' wait re-planned nothing, so it went by the
/// targets it had computed before the partition, with the floors of a read
/// of the node items 64 s old. Epochs went back below those the others
/// remembered, and its routes at epoch 1 landed after theirs at epoch 2.
/// A free shard's wait starting over now re-plans the targets, and a claim
/// waits for a read of the node items sent after the wait ended.
fn cut_off_through_a_lost_table(seed: u64, sabotage: Option<Sabotage>) -> Report {
    let mut config = SimConfig::small(seed);
    config.lease = LeaseConfig::CHEAP;
    config.sabotage = sabotage;
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(
            13_725,
            Fault::Partition {
                node: 0,
                length: secs(42_526),
            },
        ),
        ms(
            14_001,
            Fault::JunkItem {
                over_node: None,
                length: secs(35_994),
            },
        ),
        ms(16_987, Fault::StoreOutage { length: secs(15_133) }),
        ms(
            35_239,
            Fault::Pause {
                node: 0,
                length: secs(7_103),
            },
        ),
        ms(50_254, Fault::DeleteNodeItem { node: 2 }),
        ms(
            52_186,
            Fault::Partition {
                node: 2,
                length: secs(41_313),
            },
        ),
        ms(
            52_717,
            Fault::FlakyStore {
                percent: 33,
                length: secs(78_114),
            },
        ),
        ms(53_158, Fault::TableLoss { length: secs(19_192) }),
    ];
    sim::run(&config)
}

#[test]
fn a_node_cut_off_through_a_lost_table_claims_above_the_epochs_others_remember() {
    assert_clean(&cut_off_through_a_lost_table(16, None));
}

#[test]
fn the_checks_catch_claims_on_targets_and_floors_from_before_a_lost_table() {
    for invariant in ["(a)", "(e)"] {
        let caught = SEEDS_AROUND_16.into_iter().any(|seed| {
            cut_off_through_a_lost_table(seed, Some(Sabotage::ClaimsOnStaleView))
                .violations
                .iter()
                .any(|v| v.starts_with(invariant))
        });
        assert!(caught, "no seed showed an {invariant} violation: the checks are blind");
    }
}

/// Seed 16 and the schedules of its neighbours: seed 16 alone stopped
/// showing the sabotage once peers passed suspicions on (which changes
/// every call's timing).
const SEEDS_AROUND_16: std::ops::Range<u64> = 16..66;

/// Seed 55 of the same schedule: node 3's reads of the node items all
/// failed from before the table was lost until 48 s later, and what it had
/// last seen of node 0 was its counter standing at 5 (node 0 was cut off).
/// Node 0's item went with the table; it registered again putting 2 (one
/// more than its last put), renewed up to 5 by t+92 s and claimed free
/// shards. Node 3 then read them node 0's and took them over on its old
/// sighting: the condition `Unchanged { hb: 5 }` held against a node that
/// was alive and had just written their routes (two writers for nearly
/// 5 s). A put now writes a counter above every value the item has held.
#[test]
fn an_item_written_anew_never_shows_a_counter_an_observer_saw_before() {
    assert_clean(&cut_off_through_a_lost_table(55, None));
}

/// Whatever the timing, the checks see the counter come back: node 0
/// renewed past its first put before the table was lost, and the sabotaged
/// put after it restarts one above that put.
#[test]
fn the_checks_catch_a_re_registration_that_restarts_the_counter() {
    let report = cut_off_through_a_lost_table(55, Some(Sabotage::CountersRestart));
    assert!(
        report.violations.iter().any(|v| v.starts_with("(h)")),
        "no (h) violation: the checks are blind; {:?}",
        report.violations
    );
}

/// Chaos seed 137 (cheap profile): node 2's item is deleted, node 2
/// re-registers 13 s later (a flaky store, a pause), and its item is deleted
/// again 2 s after that. Node 4 had counted node 2 missing since the first
/// deletion and read nothing in between that showed it back, so it took its
/// shards over while the re-registration's lease still ran. A node now
/// claims its shards again after re-registering, before it writes their
/// routes, and an observer that sees a missing node's claim move starts its
/// missing clock over.
fn item_deleted_twice(seed: u64, sabotage: Option<Sabotage>) -> Report {
    let mut config = SimConfig::small(seed);
    config.lease = LeaseConfig::CHEAP;
    config.sabotage = sabotage;
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(16_289, Fault::Crash { node: 0 }),
        ms(25_588, Fault::DeleteNodeItem { node: 2 }),
        ms(
            29_770,
            Fault::FlakyStore {
                percent: 16,
                length: secs(62_060),
            },
        ),
        ms(
            32_744,
            Fault::Pause {
                node: 2,
                length: secs(1_786),
            },
        ),
        ms(40_177, Fault::DeleteNodeItem { node: 2 }),
    ];
    config.cooldown = Duration::from_secs(60);
    sim::run(&config)
}

#[test]
fn a_node_item_deleted_twice_around_a_re_registration_has_one_writer() {
    for seed in SEEDS_AROUND_137 {
        assert_clean(&item_deleted_twice(seed, None));
    }
}

/// Seed 137 and the schedules of its neighbours: how calls interleave
/// decides whether the missing re-claim shows (in about one seed in 15).
const SEEDS_AROUND_137: std::ops::Range<u64> = 137..187;

/// Which seeds show the missing re-claim moves with any change of timing
/// (none of 137..187 did once claims of free shards waited for a fresh read
/// of the epoch floors; 187, 191, 198, 221 and 230 of 137..237 then did):
/// the sabotage looks through twice as many, up to the first it catches.
const SEEDS_FOR_THE_RECLAIM_SABOTAGE: std::ops::Range<u64> = 137..237;

#[test]
fn the_checks_catch_writing_routes_after_a_re_registration_without_a_re_claim() {
    let caught = SEEDS_FOR_THE_RECLAIM_SABOTAGE.into_iter().any(|seed| {
        item_deleted_twice(seed, Some(Sabotage::NoReclaim))
            .violations
            .iter()
            .any(|v| v.starts_with("(a)"))
    });
    assert!(caught, "no seed showed two writers: the checks are blind");
}

/// Chaos seed 251 (cheap profile): a node cut off from the store and its
/// peers for 41 s lost its shards; when it came back its peers read cold,
/// and it got its share back only at their next full refresh, a minute
/// later, long after the fleet should have settled. A node whose lease
/// comes back after a lapse now announces it.
#[test]
fn a_node_back_from_a_partition_gets_its_share_while_the_fleet_reads_cold() {
    let mut config = SimConfig::small(251);
    config.lease = LeaseConfig::CHEAP;
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(
            10_596,
            Fault::Pause {
                node: 4,
                length: secs(30_365),
            },
        ),
        ms(19_806, Fault::StoreOutage { length: secs(38_649) }),
        ms(42_160, Fault::MarkDeadByHand { node: 3 }),
        ms(
            44_042,
            Fault::Restart {
                node: 0,
                down: secs(1_293),
                graceful: false,
            },
        ),
        ms(48_560, Fault::TableLoss { length: secs(201) }),
        ms(56_432, Fault::Join),
        ms(
            60_486,
            Fault::Partition {
                node: 1,
                length: secs(41_369),
            },
        ),
        ms(
            68_702,
            Fault::FlakyEc2 {
                percent: 40,
                length: secs(17_788),
            },
        ),
    ];
    run(&config);
}

/// Chaos seed 722 (hot profile), its schedule as found (the bug needs the
/// earlier faults too): route table 1 refuses every call for 11 s, then
/// node 3, its haproxy down, hands off all it holds, then the
/// lease table is lost. One hand-off had moved a shard's route in table 0
/// but not yet in table 1. Node 3's own view still had table 1 down (in
/// backoff), so it saw the shard's routes all pointing at the node it was
/// handed to and left the shard to it, while every other node saw the
/// routes split and left it to node 3. Holding nothing, node 3 never read
/// the tables back, and the shard stayed without an owner. A node whose
/// free shards wait on where their routes point now reads the tables back
/// on schedule, held shards or not.
#[test]
fn a_node_that_holds_nothing_reads_the_routes_back_that_its_free_shards_wait_on() {
    let mut config = SimConfig::small(722);
    let secs = Duration::from_millis;
    config.faults = vec![
        ms(
            12_688,
            Fault::Pause {
                node: 2,
                length: secs(5_578),
            },
        ),
        ms(
            14_324,
            Fault::HealthDown {
                node: 0,
                length: secs(7_939),
            },
        ),
        ms(
            32_412,
            Fault::FlakyStore {
                percent: 25,
                length: secs(7_298),
            },
        ),
        ms(
            32_765,
            Fault::HealthDown {
                node: 2,
                length: secs(8_210),
            },
        ),
        ms(
            36_745,
            Fault::JunkItem {
                over_node: None,
                length: secs(5_309),
            },
        ),
        ms(
            47_167,
            Fault::TableFails {
                table: 1,
                length: secs(10_749),
            },
        ),
        ms(
            61_009,
            Fault::HealthDown {
                node: 3,
                length: secs(6_921),
            },
        ),
        ms(66_327, Fault::TableLoss { length: secs(2_223) }),
    ];
    run(&config);
}

/// Operations seed 246 (hot profile, 3 nodes, 12 shards): node 0 pauses,
/// its peers evict it, and its item is deleted while it sleeps. Awake, it
/// finds its item gone and registers again under the same incarnation. The
/// others kept the eviction for good: their takeovers checked the evicted
/// counter against an item that was missing, then against the new one,
/// and failed twice a second (a write unit each) until node 0's new
/// counter reached the old value a minute later, when a takeover from a
/// live node went through. An evicted item that goes missing is now judged
/// as any missing item, and one back without the mark ends the eviction.
fn evicted_then_deleted(seed: u64) -> Report {
    let mut config = SimConfig::small(seed);
    config.nodes = 3;
    config.shards = 12;
    config.trace = true;
    config.faults = vec![
        ms(
            30_000,
            Fault::Pause {
                node: 0,
                length: Duration::from_millis(2_160),
            },
        ),
        ms(30_380, Fault::DeleteNodeItem { node: 0 }),
    ];
    config.cooldown = Duration::from_secs(60);
    sim::run(&config)
}

/// Claims sent from `from_s` on, by the trace.
fn claims_after(report: &Report, from_s: f64) -> Vec<&String> {
    report
        .trace
        .iter()
        .filter(|line| line.contains("-> Acquire("))
        .filter(|line| {
            line.strip_prefix("t+")
                .and_then(|rest| rest.split_once('s'))
                .and_then(|(t, _)| t.parse::<f64>().ok())
                .is_some_and(|t| t >= from_s)
        })
        .collect()
}

#[test]
fn an_evicted_node_whose_item_is_deleted_is_taken_over_or_back_at_once() {
    for seed in 0..10 {
        let report = evicted_then_deleted(seed);
        assert_clean(&report);
        let late = claims_after(&report, 45.0);
        assert!(
            late.is_empty(),
            "seed {seed}: claims still sent 13 s after the node woke up:\n{}",
            late.iter().take(5).map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}
