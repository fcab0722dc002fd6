//! Route tables that refuse, leases that lapse, and the lease table lost
//! and re-created under the fleet: who may claim what, at which epoch, with
//! which counter.

use super::*;

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
