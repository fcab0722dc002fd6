//! The cost model (`vipfleet_core::cost`) against what the simulation
//! bills: a fleet at rest, 10 nodes and 64 shards, at the default (hot)
//! and the cheap (cold) profile, must consume the request units the
//! formula says, within 10%; and cold, each node's reads stay the same
//! from 10 to 100 nodes.
//!
//! The rate at rest is the difference between two runs of one seed that
//! differ only in how long they stay quiet: the simulation is
//! deterministic, so the shorter run is a prefix of the longer, and start-up
//! (claims, route writes, their confirmations) cancels out.

use std::sync::Arc;
use std::time::Duration;

use vipfleet_core::cost::{self, Fleet, ItemSizes};
use vipfleet_core::sim::{self, SimConfig};
use vipfleet_core::{
    EniId, Incarnation, LayoutId, LeaseConfig, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId,
    ShardLayout, ShardRecord,
};

const NODES: usize = 10;
const SHARDS: usize = 64;
const ROUTE_TABLES: usize = 2;
/// Long enough after the warmup for every route to be written.
const SHORT_COOLDOWN: Duration = Duration::from_secs(60);
const LONG_COOLDOWN: Duration = Duration::from_secs(180);
const TOLERANCE: f64 = 0.10;

/// The cheap profile settles (a lease after the last change) and reads a
/// full table once a minute: its window is longer.
const CHEAP_SHORT_COOLDOWN: Duration = Duration::from_secs(120);
const CHEAP_LONG_COOLDOWN: Duration = Duration::from_secs(420);

fn run_with(nodes: usize, lease: &LeaseConfig, cooldown: Duration) -> sim::Report {
    let mut config = SimConfig::small(3);
    config.nodes = nodes;
    config.shards = SHARDS;
    config.route_tables = ROUTE_TABLES;
    config.lease = lease.clone();
    config.cooldown = cooldown;
    let report = sim::run(&config);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report
}

fn run(cooldown: Duration) -> sim::Report {
    run_with(NODES, &LeaseConfig::HOT, cooldown)
}

/// Units per second between the ends of two runs of one seed.
fn rate_between(short: &sim::Report, long: &sim::Report) -> (f64, f64) {
    assert_eq!(long.moves, 0, "the fleet was meant to be at rest");
    let seconds = (long.virtual_time - short.virtual_time).as_secs_f64();
    let reads = (long.store.read_units() - short.store.read_units()) / seconds;
    let writes = (long.store.write_units - short.store.write_units) as f64 / seconds;
    (reads, writes)
}

/// Items shaped as the simulation's (`n03`, `eni-n03`, `rtb-1`, no
/// address): its ids are shorter than AWS's.
fn sim_sizes(lease: &LeaseConfig) -> ItemSizes {
    let id = NodeId::new("n03");
    let node = NodeRecord {
        info: Arc::new(NodeInfo {
            id: id.clone(),
            eni: EniId("eni-n03".into()),
            az: "az-0".into(),
            addr: String::new(),
            weight: 1,
            version: "sim".into(),
        }),
        hb: 123,
        inc: Incarnation(u64::MAX),
        state: NodeState::Active,
        config: Some(Arc::new(NodeConfig {
            layout: LayoutId("0123456789abcdef".into()),
            route_tables: (0..ROUTE_TABLES).map(|i| RouteTableId(format!("rtb-{i}"))).collect(),
            lease_ttl: lease.lease_ttl,
            heartbeat_interval: lease.heartbeat_interval,
            peer_port: None,
        })),
        epoch_floor: 1,
        evicted_by: None,
    };
    let shard = ShardRecord {
        id: sim::shard_of(SHARDS - 1),
        owner: Some(id),
        owner_inc: Some(Incarnation(u64::MAX)),
        epoch: 1,
        moves: 0,
    };
    let layout = ShardLayout::from_shards((0..SHARDS).map(sim::shard_of));
    ItemSizes::of(&node, &shard, &layout)
}

fn close(counted: f64, model: f64) -> bool {
    (counted - model).abs() <= TOLERANCE * model
}

#[test]
fn the_simulation_at_rest_bills_what_the_cost_model_says() {
    let short = run(SHORT_COOLDOWN);
    let long = run(LONG_COOLDOWN);
    let (reads, writes) = rate_between(&short, &long);
    let seconds = (long.virtual_time - short.virtual_time).as_secs_f64();

    let fleet = Fleet {
        nodes: NODES as u64,
        vips: SHARDS as u64,
        route_tables: ROUTE_TABLES as u64,
    };
    let sizes = sim_sizes(&LeaseConfig::HOT);
    // The sample items stand for the simulation's table.
    let modelled_table = cost::table_bytes(&fleet, &sizes) as f64;
    assert!(
        close(long.table_bytes as f64, modelled_table),
        "table: {} bytes in the simulation, {modelled_table} modelled",
        long.table_bytes
    );
    let model = cost::at_rest(&fleet, &sizes, &LeaseConfig::HOT);
    eprintln!(
        "at rest over {seconds:.0} s: {reads:.2} read and {writes:.2} write units/s counted, \
         {:.2} and {:.2} modelled; table {} bytes",
        model.read, model.write, long.table_bytes
    );
    assert!(
        close(reads, model.read),
        "reads: {reads:.2} units/s counted, {:.2} modelled",
        model.read
    );
    assert!(
        close(writes, model.write),
        "writes: {writes:.2} units/s counted, {:.2} modelled",
        model.write
    );
}

fn fleet(nodes: usize) -> Fleet {
    Fleet {
        nodes: nodes as u64,
        vips: SHARDS as u64,
        route_tables: ROUTE_TABLES as u64,
    }
}

#[test]
fn the_cheap_profile_at_rest_bills_what_the_cost_model_says() {
    let lease = LeaseConfig::CHEAP;
    let short = run_with(NODES, &lease, CHEAP_SHORT_COOLDOWN);
    let long = run_with(NODES, &lease, CHEAP_LONG_COOLDOWN);
    let (reads, writes) = rate_between(&short, &long);
    let model = cost::at_rest(&fleet(NODES), &sim_sizes(&lease), &lease);
    eprintln!(
        "cheap, at rest: {reads:.3} read and {writes:.3} write units/s counted, {:.3} and {:.3} modelled",
        model.read, model.write
    );
    assert!(
        close(reads, model.read),
        "reads: {reads:.3} counted, {:.3} modelled",
        model.read
    );
    assert!(
        close(writes, model.write),
        "writes: {writes:.3} counted, {:.3} modelled",
        model.write
    );
}

#[test]
fn cold_reads_per_node_do_not_grow_with_the_fleet() {
    let lease = LeaseConfig::CHEAP;
    let per_node = |nodes: usize| {
        let short = run_with(nodes, &lease, CHEAP_SHORT_COOLDOWN);
        let long = run_with(nodes, &lease, CHEAP_LONG_COOLDOWN);
        rate_between(&short, &long).0 / nodes as f64
    };
    let (ten, hundred) = (per_node(10), per_node(100));
    eprintln!("cold reads a node: {ten:.4} units/s at 10 nodes, {hundred:.4} at 100");
    assert!(
        (hundred - ten).abs() <= TOLERANCE * ten,
        "{ten:.4} units/s a node at 10 nodes, {hundred:.4} at 100"
    );
}
