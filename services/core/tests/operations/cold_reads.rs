//! A fleet that reads cold: a node back from a partition, a node that holds
//! nothing but waits on routes, and an evicted node whose item is deleted.

use super::*;

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
