//! The miniature fleet the dashboard tests ask their questions of: three
//! drivers on one in-memory lease store and route tables, on paused tokio
//! time, and the helpers that call a router and read its answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use vipfleet_agent::dashboard::auth::Token;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::dashboard::{self, DashboardState};
use vipfleet_agent::driver::{self, Control, Driver};
use vipfleet_agent::status::{Status, StatusBoard};
use vipfleet_core::fake::{FakeLeaseStore, FakeRouteTable};
use vipfleet_core::machine::{ExitReason, Health, Machine, NodeSetup, Pacing};
use vipfleet_core::{EniId, Incarnation, Instant, LeaseConfig, NodeId, NodeInfo, RouteTableId, ShardLayout, Vip};

use super::openapi;

pub const SHARDS: usize = 24;
pub const TOKEN: &str = "test-token-0123456789abcdef";
/// Long enough for three nodes to register, split the shards, write their
/// routes and read them back once (the first reconcile is at 10 s).
pub const SETTLE: Duration = Duration::from_secs(15);
pub const POLL: Duration = Duration::from_millis(250);

/// The timings these tests are sized for: the default profile's (1 s
/// heartbeat, 3 s lease), reading cold as the cheap profile does, with a
/// watch as quick as a scan, since no peer probes run here and only a
/// crashed node's watcher notices it.
pub const LEASE: LeaseConfig = LeaseConfig {
    cold_reads: true,
    watch_interval: Duration::from_millis(250),
    ..LeaseConfig::HOT
};
/// How long each failing store call takes during an injected outage.
pub const OUTAGE_CALL_LATENCY: Duration = Duration::from_millis(50);

pub fn tables() -> Vec<RouteTableId> {
    vec![RouteTableId("rtb-a".into()), RouteTableId("rtb-b".into())]
}

pub fn layout() -> ShardLayout {
    let vips: Vec<Vip> = (1..=SHARDS).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
    ShardLayout::from_vips(&vips).unwrap()
}

pub struct Node {
    pub controls: mpsc::Sender<Control>,
    pub task: JoinHandle<ExitReason>,
    pub status: watch::Receiver<Status>,
    pub metrics: Arc<Metrics>,
}

pub struct Fleet {
    pub store: FakeLeaseStore,
    pub routes: FakeRouteTable,
    pub nodes: Vec<Node>,
}

pub fn start_node(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable) -> Node {
    start_node_with(name, store, routes, LEASE)
}

pub fn start_node_with(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable, lease: LeaseConfig) -> Node {
    let setup = NodeSetup {
        info: NodeInfo {
            id: NodeId::new(name),
            eni: EniId(format!("eni-{name}")),
            az: format!("az-{}", name.len() % 2 + 1),
            addr: format!("10.0.0.{}", name.as_bytes()[name.len() - 1]),
            weight: 1,
            version: "0.1.0".into(),
        },
        inc: Incarnation(u64::from(name.as_bytes()[name.len() - 1]) * 7919),
        lease,
        layout: Arc::new(layout()),
        route_tables: tables(),
        drain_timeout: Duration::from_secs(120),
        pacing: Pacing {
            calls_per_second: 1000.0,
            burst: 1000,
        },
        peer_port: None,
    };
    let (board, status) = StatusBoard::new();
    let (controls, rx) = driver::controls();
    // What the agent's start-up reports once haproxy answers and the ENI
    // is set up.
    controls.try_send(Control::Health(Health::Healthy)).unwrap();
    controls.try_send(Control::SourceDestCheckOff(true)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let driver = Driver::new(
        Machine::new(setup, Instant::ZERO),
        Arc::new(store.clone()),
        Arc::new(routes.clone()),
        tokio::time::Instant::now(),
        board,
        metrics.clone(),
    );
    Node {
        controls,
        task: tokio::spawn(driver.run(rx)),
        status,
        metrics,
    }
}

impl Fleet {
    /// Nodes `a`, `b`, `c`, settled.
    pub async fn start() -> Fleet {
        // Latency only when a test injects it: failing calls must take time,
        // or a driver retrying at once never lets paused time advance.
        let store = FakeLeaseStore::new().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
        let routes = FakeRouteTable::new(tables()).with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
        let nodes = ["a", "b", "c"].iter().map(|n| start_node(n, &store, &routes)).collect();
        tokio::time::sleep(SETTLE).await;
        Fleet { store, routes, nodes }
    }

    pub fn router(&self, i: usize, token: Option<&str>) -> Router {
        let node = &self.nodes[i];
        let state = DashboardState::new(
            node.status.clone(),
            node.metrics.clone(),
            node.controls.clone(),
            token.map(|t| Token::parse(t).unwrap()),
        );
        dashboard::router(state)
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn call(router: &Router, method: Method, path: &str, bearer: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(router: &Router, path: &str) -> Answer {
    call(router, Method::GET, path, None).await
}

pub async fn fleet_json(router: &Router) -> Value {
    let answer = get(router, "/api/v1/fleet").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let view = answer.json();
    let spec = openapi::Spec::load();
    let errors = spec.validate(&spec.schema("Fleet"), &view);
    assert!(
        errors.is_empty(),
        "the fleet JSON breaks openapi.yaml:\n{}",
        errors.join("\n")
    );
    view
}

pub fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"))
}

pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
        .parse()
        .unwrap()
}
