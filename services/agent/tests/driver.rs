//! Three drivers against the in-memory store and route tables, on paused
//! tokio time: the agent's loop (timers, tasks, fencing, drain) end to end
//! without AWS. Crash = abort the driver's task; drain = `Control::Drain`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::driver::{self, Control, Driver};
use vipfleet_agent::status::StatusBoard;
use vipfleet_core::fake::{FakeLeaseStore, FakeRouteTable};
use vipfleet_core::machine::{ExitReason, Health, Machine, NodeSetup, Pacing};
use vipfleet_core::{
    EniId, Incarnation, Instant, LeaseConfig, NodeId, NodeInfo, RouteTableId, ShardId, ShardLayout, Vip,
};

const SHARDS: usize = 24;

/// The timings these tests are sized for: the default profile's (1 s
/// heartbeat, 3 s lease), reading cold as the cheap profile does, with a
/// watch as quick as a scan, since no peer probes run here and only a
/// crashed node's watcher notices it.
const LEASE: LeaseConfig = LeaseConfig {
    cold_reads: true,
    watch_interval: Duration::from_millis(250),
    ..LeaseConfig::HOT
};

fn tables() -> Vec<RouteTableId> {
    vec![RouteTableId("rtb-a".into()), RouteTableId("rtb-b".into())]
}

fn layout() -> ShardLayout {
    let vips: Vec<Vip> = (1..=SHARDS).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
    ShardLayout::from_vips(&vips).unwrap()
}

struct Node {
    id: NodeId,
    controls: mpsc::Sender<Control>,
    task: JoinHandle<ExitReason>,
}

/// Route writes as fast as the fakes answer.
const FAST_EC2: Pacing = Pacing {
    calls_per_second: 1000.0,
    burst: 1000,
};

fn start(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable) -> Node {
    start_paced(name, store, routes, FAST_EC2)
}

fn start_paced(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable, ec2: Pacing) -> Node {
    let id = NodeId::new(name);
    let setup = NodeSetup {
        info: NodeInfo {
            id: id.clone(),
            eni: EniId(format!("eni-{name}")),
            az: "az-1".into(),
            addr: String::new(),
            weight: 1,
            version: "test".into(),
        },
        inc: Incarnation(name.len() as u64 * 7919 + name.as_bytes()[name.len() - 1] as u64),
        lease: LEASE,
        layout: Arc::new(layout()),
        route_tables: tables(),
        drain_timeout: Duration::from_secs(120),
        pacing: ec2,
        peer_port: None,
    };
    let (board, _status) = StatusBoard::new();
    let (controls, rx) = driver::controls();
    controls.try_send(Control::Health(Health::Healthy)).unwrap();
    controls.try_send(Control::SourceDestCheckOff(true)).unwrap();
    let driver = Driver::new(
        Machine::new(setup, Instant::ZERO),
        Arc::new(store.clone()),
        Arc::new(routes.clone()),
        tokio::time::Instant::now(),
        board,
        Arc::new(Metrics::new()),
    );
    Node {
        id,
        controls,
        task: tokio::spawn(driver.run(rx)),
    }
}

/// Owner of every shard, and whether every route points at its owner.
fn ownership(store: &FakeLeaseStore, routes: &FakeRouteTable) -> (BTreeMap<ShardId, NodeId>, bool) {
    let table = store.table();
    let rt = routes.tables();
    let mut owners = BTreeMap::new();
    let mut routed = true;
    for shard in layout().ids() {
        let Some(owner) = table.peek_shard(shard).and_then(|r| r.owner.clone()) else {
            routed = false;
            continue;
        };
        let eni = EniId(format!("eni-{owner}"));
        routed &= tables().iter().all(|t| rt.target(t, shard.vip()) == Some(&eni));
        owners.insert(shard, owner);
    }
    (owners, routed)
}

fn counts(owners: &BTreeMap<ShardId, NodeId>) -> BTreeMap<NodeId, usize> {
    let mut c = BTreeMap::new();
    for o in owners.values() {
        *c.entry(o.clone()).or_insert(0) += 1;
    }
    c
}

#[tokio::test(start_paused = true)]
async fn three_drivers_share_shards_survive_a_crash_and_drain_cleanly() {
    let store = FakeLeaseStore::new();
    let routes = FakeRouteTable::new(tables());
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| start(n, &store, &routes)).collect();

    tokio::time::sleep(Duration::from_secs(10)).await;
    let (owners, routed) = ownership(&store, &routes);
    assert_eq!(owners.len(), SHARDS, "every shard owned");
    assert!(routed, "every route points at its owner");
    assert!(
        counts(&owners).values().all(|n| *n == SHARDS / 3),
        "{:?}",
        counts(&owners)
    );

    // Crash a: only its shards move, within the lease and a few scans.
    let [a, b, c]: [Node; 3] = nodes.try_into().ok().unwrap();
    a.task.abort();
    let before = owners.clone();
    // Settled, a crash is noticed by the crashed node's watcher: its
    // counter stands still for two beats, then the lease runs out.
    let noticed = 2 * LEASE.heartbeat_interval + LEASE.watch_interval;
    tokio::time::sleep(noticed + LEASE.lease_ttl + Duration::from_secs(1)).await;
    let (owners, routed) = ownership(&store, &routes);
    assert!(routed, "routes follow the new owners");
    for (shard, old) in &before {
        if *old == a.id {
            assert_ne!(owners[shard], a.id, "shard {shard} still on the crashed node");
        } else {
            assert_eq!(&owners[shard], old, "shard {shard} of a survivor moved");
        }
    }

    // Drain b: it hands everything to c and exits.
    b.controls.send(Control::Drain).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), b.task).await;
    assert!(matches!(reason, Ok(Ok(ExitReason::Drained))), "{reason:?}");
    let (owners, routed) = ownership(&store, &routes);
    assert!(owners.values().all(|o| *o == c.id), "{:?}", counts(&owners));
    assert!(routed);
    c.task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_drained_node_exits_only_once_its_route_pushes_went_out() {
    // b hands its shards to c and pushes their routes at 2 calls a second:
    // many seconds of pushes, longer than the hand-offs themselves take.
    let store = FakeLeaseStore::new();
    let routes = FakeRouteTable::new(tables());
    let slow_ec2 = Pacing {
        calls_per_second: 2.0,
        burst: 2,
    };
    let b = start_paced("b", &store, &routes, slow_ec2);
    let c = start("c", &store, &routes);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (owners, routed) = ownership(&store, &routes);
    assert!(routed && owners.len() == SHARDS, "{:?}", counts(&owners));
    assert!(counts(&owners).get(&b.id).is_some_and(|n| *n > 0), "b holds shards");

    b.controls.send(Control::Drain).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(60), b.task).await;
    assert!(matches!(reason, Ok(Ok(ExitReason::Drained))), "{reason:?}");
    // At the moment b is done, every route already points at c: a node
    // told it may terminate must not leave routes pointing at itself.
    let (owners, routed) = ownership(&store, &routes);
    assert!(owners.values().all(|o| *o == c.id), "{:?}", counts(&owners));
    if !routed {
        let rt = routes.tables();
        for shard in layout().ids() {
            for t in tables() {
                eprintln!("{shard} {t}: {:?}", rt.target(&t, shard.vip()));
            }
        }
    }
    assert!(routed, "b exited with route pushes still queued");
    c.task.abort();
}
