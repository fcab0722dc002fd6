//! Drivers with peer probes over real UDP on loopback, against the
//! in-memory store and route tables, in real time (probes need real
//! datagrams): a crashed node is found by its peers and evicted well within
//! its lease; one that stops in order says so and is not evicted. The
//! fleet JSON lists the peers, as `openapi.yaml` says, and so does the page.

// Shared with the dashboard tests, which use all of it; only validation here.
#[allow(dead_code)]
#[path = "support/openapi.rs"]
mod openapi;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::dashboard::view::FleetView;
use vipfleet_agent::driver::incarnations::run_incarnations;
use vipfleet_agent::driver::peers::PeerLink;
use vipfleet_agent::driver::{self, Control, Driver};
use vipfleet_agent::peers::seal::MIN_KEY_BYTES;
use vipfleet_agent::peers::{KeyRing, PeerAuth, PeerKey, Transport};
use vipfleet_agent::secret::Secret;
use vipfleet_agent::status::{Status, StatusBoard};
use vipfleet_core::fake::{FakeLeaseStore, FakeRouteTable};
use vipfleet_core::machine::{ExitReason, Health, Machine, NodeSetup, Pacing};
use vipfleet_core::peers::PeerConfig;
use vipfleet_core::store::{EvictRequest, LeaseStore};
use vipfleet_core::{EniId, Incarnation, Instant, LeaseConfig, NodeId, NodeInfo, RouteTableId, ShardLayout, Vip};

const SHARDS: usize = 12;
/// Start-up: registration, a few scans, claims.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// Probes find a crash in about 400 ms; the lease would take 3 s.
const EVICTED_WITHIN: Duration = Duration::from_millis(2000);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Every node's datagrams sealed with one fleet key, as in production.
fn fleet_auth() -> PeerAuth {
    let secret = Secret::parse("driver-peers-fleet-key-0123456789abcdef0123", MIN_KEY_BYTES).unwrap();
    PeerAuth::sealed(KeyRing {
        current: PeerKey::new(&secret).unwrap(),
        previous: None,
    })
}

fn tables() -> Vec<RouteTableId> {
    vec![RouteTableId("rtb-a".into())]
}

fn layout() -> ShardLayout {
    let vips: Vec<Vip> = (1..=SHARDS).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
    ShardLayout::from_vips(&vips).unwrap()
}

struct Node {
    id: NodeId,
    controls: mpsc::Sender<Control>,
    task: JoinHandle<ExitReason>,
    status: watch::Receiver<Status>,
}

/// A driver for node `name` at incarnation `inc`, probing through
/// `transport`.
fn make_driver(
    name: &str,
    inc: u64,
    store: &FakeLeaseStore,
    routes: &FakeRouteTable,
    board: StatusBoard,
    transport: Transport,
) -> Driver<FakeLeaseStore, FakeRouteTable> {
    let id = NodeId::new(name);
    let metrics = Arc::new(Metrics::new());
    let port = transport.local_addr().unwrap().port();
    let setup = NodeSetup {
        info: NodeInfo {
            id: id.clone(),
            eni: EniId(format!("eni-{name}")),
            az: "az-1".into(),
            addr: "127.0.0.1".into(),
            weight: 1,
            version: "test".into(),
        },
        inc: Incarnation(inc),
        lease: LeaseConfig::HOT,
        layout: Arc::new(layout()),
        route_tables: tables(),
        drain_timeout: Duration::from_secs(30),
        pacing: Pacing {
            calls_per_second: 1000.0,
            burst: 1000,
        },
        peer_port: Some(port),
    };
    let detector = PeerLink::detector(id, Incarnation(inc), PeerConfig::default());
    Driver::new(
        Machine::new(setup, Instant::ZERO),
        Arc::new(store.clone()),
        Arc::new(routes.clone()),
        TokioInstant::now(),
        board,
        metrics.clone(),
    )
    .with_peers(PeerLink::new(transport, detector, metrics))
}

/// Starts node `name`; a `restartable` one starts over as incarnation
/// `inc + 1`, `inc + 2`, … when evicted, as the agent does.
async fn start(name: &str, inc: u64, store: &FakeLeaseStore, routes: &FakeRouteTable, restartable: bool) -> Node {
    let transport = Transport::bind("127.0.0.1:0".parse().unwrap(), fleet_auth(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    let (board, status) = StatusBoard::new();
    let (controls, mut rx) = driver::controls();
    controls.try_send(Control::Health(Health::Healthy)).unwrap();
    controls.try_send(Control::SourceDestCheckOff(true)).unwrap();
    let task = if restartable {
        let (name, store, routes) = (name.to_string(), store.clone(), routes.clone());
        let mut next_inc = inc;
        tokio::spawn(async move {
            run_incarnations(board, Some(transport), &mut rx, |board, transport, replay| {
                next_inc += 1;
                let transport = transport.expect("the socket outlives the incarnation");
                make_driver(&name, next_inc - 1, &store, &routes, board, transport).replay(replay)
            })
            .await
        })
    } else {
        tokio::spawn(make_driver(name, inc, store, routes, board, transport).run(rx))
    };
    Node {
        id: NodeId::new(name),
        controls,
        task,
        status,
    }
}

fn owners(store: &FakeLeaseStore) -> BTreeMap<vipfleet_core::ShardId, NodeId> {
    let table = store.table();
    layout()
        .ids()
        .filter_map(|shard| Some((shard, table.peek_shard(shard)?.owner.clone()?)))
        .collect()
}

fn evicted(store: &FakeLeaseStore, node: &NodeId) -> bool {
    store.table().peek_node(node).is_some_and(|n| n.evicted_by.is_some())
}

/// Polls `ok` until it holds or `within` passes; says whether it held.
async fn eventually(within: Duration, ok: impl Fn() -> bool) -> bool {
    let deadline = TokioInstant::now() + within;
    while TokioInstant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    ok()
}

/// a, b and c, every shard owned and each holding some; b starts over
/// when evicted.
async fn fleet(store: &FakeLeaseStore, routes: &FakeRouteTable) -> [Node; 3] {
    let a = start("a", 11, store, routes, false).await;
    let b = start("b", 22, store, routes, true).await;
    let c = start("c", 33, store, routes, false).await;
    let settled = eventually(SETTLE_WITHIN, || {
        let o = owners(store);
        o.len() == SHARDS && [&a.id, &b.id, &c.id].iter().all(|n| o.values().any(|v| v == *n))
    })
    .await;
    assert!(settled, "every shard owned, by all three: {:?}", owners(store));
    [a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_evicted_by_its_peers_before_its_lease_runs_out() {
    let store = FakeLeaseStore::new();
    let routes = FakeRouteTable::new(tables());
    let [a, b, c] = fleet(&store, &routes).await;

    // b's dashboard lists a and c, alive and acking, as the schema says.
    let view = FleetView::build(&b.status.borrow(), TokioInstant::now()).expect("b has stepped");
    let json = serde_json::to_value(&view).unwrap();
    let spec = openapi::Spec::load();
    let errors = spec.validate(&spec.schema("Fleet"), &json);
    assert!(
        errors.is_empty(),
        "the fleet JSON breaks openapi.yaml:\n{}",
        errors.join("\n")
    );
    let peers: Vec<(&str, &str)> = view.peers.iter().map(|p| (p.node.as_str(), p.status)).collect();
    assert_eq!(peers, [("a", "alive"), ("c", "alive")]);
    assert!(
        view.peers.iter().all(|p| p.last_ack_ms_ago.is_some_and(|ms| ms < 1000)),
        "{:?}",
        view.peers
    );
    // The page shows the same peers, each alive with its haproxy healthy.
    let page = vipfleet_agent::dashboard::html::render(&view);
    for peer in ["a", "c"] {
        let row = format!("data-peer=\"{peer}\" data-status=\"alive\">");
        let at = page.find(&row).unwrap_or_else(|| panic!("no row for {peer}: {page}"));
        let row_end = page[at..].find("</tr>").map_or(page.len(), |end| at + end);
        assert!(
            page[at..row_end].contains(" ago</td><td><span class=\"ok\">healthy</span>"),
            "{page}"
        );
    }

    let crashed_at = TokioInstant::now();
    a.task.abort();
    let found = eventually(EVICTED_WITHIN, || evicted(&store, &a.id)).await;
    assert!(found, "a not evicted within {EVICTED_WITHIN:?} of its crash");
    let moved = eventually(LeaseConfig::HOT.lease_ttl, || {
        owners(&store).values().all(|o| *o != a.id)
    })
    .await;
    assert!(moved, "a's shards did not move: {:?}", owners(&store));
    eprintln!(
        "a evicted and its shards moved {:?} after its crash",
        crashed_at.elapsed()
    );
    assert!(!evicted(&store, &b.id) && !evicted(&store, &c.id));
    b.task.abort();
    c.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_in_order_is_not_evicted() {
    let store = FakeLeaseStore::new();
    let routes = FakeRouteTable::new(tables());
    let [a, b, c] = fleet(&store, &routes).await;

    a.controls.send(Control::Stop).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), a.task).await;
    assert!(matches!(reason, Ok(Ok(ExitReason::Stopped))), "{reason:?}");
    // Several detection times: a said it was leaving, so nobody evicts it
    // (its lease decides; the store may mark it dead once that runs out).
    tokio::time::sleep(EVICTED_WITHIN).await;
    assert!(!evicted(&store, &a.id), "a was evicted although it left");
    b.task.abort();
    c.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_agent_starts_over_in_process_as_a_new_incarnation() {
    let store = FakeLeaseStore::new();
    let routes = FakeRouteTable::new(tables());
    let [a, b, c] = fleet(&store, &routes).await;

    // As if a had found b dead during a pause: b's next heartbeat is refused.
    store
        .evict(&EvictRequest {
            node: b.id.clone(),
            inc: Incarnation(22),
            by: a.id.clone(),
        })
        .await
        .unwrap();
    // b comes back as incarnation 23, told its health and ENI state again
    // (nobody sends those twice), and claims shards anew.
    let back = eventually(SETTLE_WITHIN, || {
        let record = store.table().peek_node(&b.id).cloned();
        record.is_some_and(|r| r.inc == Incarnation(23) && r.evicted_by.is_none())
            && owners(&store).values().any(|o| *o == b.id)
    })
    .await;
    assert!(back, "b did not start over: {:?}", store.table().peek_node(&b.id));
    assert!(!b.task.is_finished(), "the process must not exit");
    // Its socket went with it: a probes the new incarnation and finds it alive.
    let alive = eventually(SETTLE_WITHIN, || {
        let view = FleetView::build(&a.status.borrow(), TokioInstant::now());
        view.is_some_and(|v| {
            v.peers
                .iter()
                .any(|p| p.node == "b" && p.status == "alive" && p.last_ack_ms_ago.is_some_and(|ms| ms < 1000))
        })
    })
    .await;
    assert!(alive, "a does not see b's new incarnation alive");
    for node in [a, b, c] {
        node.task.abort();
    }
}
