//! The network between nodes, as the peer probes see it: links cut, a node
//! cut off from every peer, packets lost. Partial partitions and loss must
//! move nothing; a node cut off from all its peers (but not from the store)
//! loses its shards once, and takes nothing back while it stays cut off.

use std::collections::BTreeMap;
use std::time::Duration;

use vipfleet_core::sim::{self, Fault, Report, ScheduledFault, SimConfig};

fn at(secs: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Duration::from_secs(secs),
        fault,
    }
}

fn run(config: &SimConfig) -> Report {
    let report = sim::run(config);
    assert!(
        report.violations.is_empty(),
        "seed {}: {}",
        report.seed,
        report.violations.join("\n")
    );
    report
}

const FAULT_LENGTH: Duration = Duration::from_secs(60);

#[test]
fn links_cut_between_nodes_move_nothing() {
    for seed in 0..6 {
        let mut config = SimConfig::small(seed);
        config.faults = vec![
            at(
                30,
                Fault::PeerCut {
                    a: 0,
                    b: 1,
                    length: FAULT_LENGTH,
                },
            ),
            at(
                40,
                Fault::PeerCut {
                    a: 2,
                    b: 3,
                    length: FAULT_LENGTH,
                },
            ),
        ];
        let report = run(&config);
        assert_eq!(report.moves, 0, "seed {seed}");
        assert!(!report.exits.contains_key("evicted"), "seed {seed}: {:?}", report.exits);
    }
}

#[test]
fn ten_percent_packet_loss_between_nodes_moves_nothing() {
    for seed in 0..6 {
        let mut config = SimConfig::small(seed);
        config.faults = vec![at(
            30,
            Fault::PeerLoss {
                percent: 10,
                length: FAULT_LENGTH,
            },
        )];
        let report = run(&config);
        assert_eq!(report.moves, 0, "seed {seed}");
        assert!(!report.exits.contains_key("evicted"), "seed {seed}: {:?}", report.exits);
    }
}

/// The shards node 2 held before it was cut off from its peers, and how
/// often each shard moved during the cut.
fn cut_off_node(seed: u64) -> (Report, SimConfig) {
    let mut config = SimConfig::small(seed);
    config.trace = true;
    config.faults = vec![at(
        30,
        Fault::PeerIsolation {
            node: 2,
            length: FAULT_LENGTH,
        },
    )];
    (run(&config), config)
}

#[test]
fn a_node_cut_off_from_its_peers_loses_its_shards_once_and_takes_none_back() {
    for seed in 0..4 {
        let (report, config) = cut_off_node(seed);
        let (from, to) = (30.0, 30.0 + FAULT_LENGTH.as_secs_f64());
        let mut moves: BTreeMap<String, usize> = BTreeMap::new();
        for line in &report.trace {
            let t: f64 = line
                .split_whitespace()
                .next()
                .and_then(|t| t.trim_start_matches("t+").trim_end_matches('s').parse().ok())
                .unwrap_or(0.0);
            if t < from || t > to || !line.contains(" Acquired {") && !line.contains(" HandedOff {") {
                continue;
            }
            let shard = line
                .split("addr: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("");
            *moves.entry(shard.to_string()).or_default() += 1;
        }
        let twice: Vec<_> = moves.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "seed {seed}: shards moved more than once while cut off: {twice:?}"
        );
        assert!(
            !moves.is_empty(),
            "seed {seed}: the cut-off node's shards should have moved"
        );
        assert!(
            report.exits.get("evicted").copied().unwrap_or(0) <= 1,
            "seed {seed}: evicted again and again: {:?} ({} nodes)",
            report.exits,
            config.nodes
        );
    }
}
