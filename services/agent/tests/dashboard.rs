//! The dashboard against a real fleet in miniature: three drivers share the
//! in-memory lease store and route tables on paused tokio time, and the
//! router of one of them is asked every question an operator (or Prometheus,
//! or a load balancer's readiness probe) would ask, with `oneshot`.
//!
//! JSON answers are checked against `openapi.yaml`'s schemas; every
//! documented operation must answer with a documented status code.

#[path = "support/openapi.rs"]
mod openapi;

use std::collections::BTreeMap;
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
use vipfleet_agent::dashboard::build_info;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::dashboard::{self, DashboardState};
use vipfleet_agent::driver::{self, Control, Driver};
use vipfleet_agent::status::{Status, StatusBoard};
use vipfleet_core::fake::{FakeLeaseStore, FakeRouteTable, Faults};
use vipfleet_core::machine::{ExitReason, Health, Machine, NodeSetup, Pacing};
use vipfleet_core::{
    EniId, Incarnation, Instant, LeaseConfig, NodeId, NodeInfo, RouteTableId, ShardId, ShardLayout, Vip,
};

const SHARDS: usize = 24;
const TOKEN: &str = "test-token-0123456789abcdef";
/// Long enough for three nodes to register, split the shards, write their
/// routes and read them back once (the first reconcile is at 10 s).
const SETTLE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);

/// The timings these tests are sized for: the default profile's (1 s
/// heartbeat, 3 s lease), reading cold as the cheap profile does, with a
/// watch as quick as a scan, since no peer probes run here and only a
/// crashed node's watcher notices it.
const LEASE: LeaseConfig = LeaseConfig {
    cold_reads: true,
    watch_interval: Duration::from_millis(250),
    ..LeaseConfig::HOT
};
/// How long each failing store call takes during an injected outage.
const OUTAGE_CALL_LATENCY: Duration = Duration::from_millis(50);

fn tables() -> Vec<RouteTableId> {
    vec![RouteTableId("rtb-a".into()), RouteTableId("rtb-b".into())]
}

fn layout() -> ShardLayout {
    let vips: Vec<Vip> = (1..=SHARDS).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
    ShardLayout::from_vips(&vips).unwrap()
}

struct Node {
    controls: mpsc::Sender<Control>,
    task: JoinHandle<ExitReason>,
    status: watch::Receiver<Status>,
    metrics: Arc<Metrics>,
}

struct Fleet {
    store: FakeLeaseStore,
    routes: FakeRouteTable,
    nodes: Vec<Node>,
}

fn start_node(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable) -> Node {
    start_node_with(name, store, routes, LEASE)
}

fn start_node_with(name: &str, store: &FakeLeaseStore, routes: &FakeRouteTable, lease: LeaseConfig) -> Node {
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
    async fn start() -> Fleet {
        // Latency only when a test injects it: failing calls must take time,
        // or a driver retrying at once never lets paused time advance.
        let store = FakeLeaseStore::new().with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
        let routes = FakeRouteTable::new(tables()).with_sleep(Arc::new(|d| Box::pin(tokio::time::sleep(d))));
        let nodes = ["a", "b", "c"].iter().map(|n| start_node(n, &store, &routes)).collect();
        tokio::time::sleep(SETTLE).await;
        Fleet { store, routes, nodes }
    }

    fn router(&self, i: usize, token: Option<&str>) -> Router {
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

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn call(router: &Router, method: Method, path: &str, bearer: Option<&str>) -> Answer {
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

async fn get(router: &Router, path: &str) -> Answer {
    call(router, Method::GET, path, None).await
}

async fn fleet_json(router: &Router) -> Value {
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

fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"))
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_fleet_json_shows_every_node_and_shard_and_matches_the_schema() {
    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    let view = fleet_json(&router).await;

    assert_eq!(view["observer"]["node_id"], "a");
    assert_eq!(view["observer"]["mode"], "active");
    assert_eq!(view["observer"]["lease_valid"], true);
    assert_eq!(view["observer"]["shards_held"], SHARDS / 3);
    let totals = &view["totals"];
    assert_eq!(totals["nodes"], 3);
    assert_eq!(totals["nodes_by_state"]["active"], 3);
    assert_eq!(totals["shards"], SHARDS);
    assert_eq!(totals["shards_owned"], SHARDS);
    assert_eq!(totals["shards_free"], 0);
    assert_eq!(totals["nodes_in_trouble"], 0, "{}", view["nodes"]);
    assert_eq!(totals["shards_in_trouble"], 0);
    assert_eq!(totals["route_problems"], 0);

    for id in ["a", "b", "c"] {
        let node = by_id(&view["nodes"], id);
        assert_eq!(node["is_self"], id == "a");
        assert_eq!(node["state"], "active");
        assert_eq!(node["shards"], SHARDS / 3, "{node}");
        assert_eq!(node["quota"], SHARDS / 3, "{node}");
        assert_eq!(node["config_matches"], true);
        assert_eq!(node["version"], "0.1.0");
        let age = node["heartbeat_age_ms"].as_u64().unwrap();
        if view["observer"]["reads_cold"] == true {
            // Settled: counters are read in full only every cold refresh.
            let refresh = u64::try_from(LEASE.cold_refresh_interval.as_millis()).unwrap();
            assert!(age <= refresh + 1_500, "{id}'s heartbeat is {age} ms old");
            assert_eq!(node["expires_in_ms"], Value::Null, "{node}");
        } else {
            assert!(age <= 1_500, "{id}'s heartbeat is {age} ms old");
            assert!(node["expires_in_ms"].as_u64().unwrap() > 1_000);
        }
    }

    let shards = view["shards"].as_array().unwrap();
    assert_eq!(shards.len(), SHARDS);
    let store = fleet.store.table();
    for shard in shards {
        let id: ShardId = shard["id"].as_str().unwrap().parse().unwrap();
        let record = store.peek_shard(id).unwrap();
        assert_eq!(shard["owner"], record.owner.as_ref().unwrap().as_str(), "{shard}");
        assert_eq!(shard["owner_status"], "live");
        assert_eq!(shard["epoch"], record.epoch);
        assert_eq!(shard["target"], shard["owner"], "a settled fleet moves nothing");
        let routes = shard["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        let expected = if shard["owner"] == "a" { "ok" } else { "elsewhere" };
        assert_eq!(shard["held_here"], shard["owner"] == "a");
        for route in routes {
            assert_eq!(route["status"], expected, "{shard}");
            assert_eq!(route["checked_ago_ms"].is_u64(), expected == "ok");
        }
    }
    let kinds: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"registered") && kinds.contains(&"claimed"), "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "mode_changed", "the oldest event is the start");
    assert_eq!(view["observer"]["health"], "healthy");
    assert_eq!(view["observer"]["source_dest_check_off"], true);
    assert_eq!(view["skipped"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(start_paused = true)]
async fn the_page_lists_nodes_shards_and_owners_and_refreshes_itself() {
    let fleet = Fleet::start().await;
    let answer = get(&fleet.router(1, None), "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = &answer.body;
    assert!(page.contains("<meta http-equiv=\"refresh\""));
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external assets"
    );
    assert!(page.contains("<span id=\"observer\">b</span>"));
    for id in ["a", "b", "c"] {
        assert!(page.contains(&format!("data-node=\"{id}\"")), "node row {id}");
    }
    assert_eq!(page.matches("<tr class=\"shard\"").count(), SHARDS);
    for owner in ["a", "b", "c"] {
        assert_eq!(page.matches(&format!("data-owner=\"{owner}\"")).count(), SHARDS / 3);
    }
    assert!(!page.contains("trouble\""), "nothing is in trouble");
    assert_eq!(page.matches("data-route=\"ok\"").count(), 2 * SHARDS / 3);
    // No peer probes in this fleet: the page says so rather than show an
    // empty table (driver_peers.rs checks the rows of a probing fleet).
    assert!(page.contains("<p id=\"peers\" class=\"muted\">"), "{page}");
}

#[tokio::test(start_paused = true)]
async fn a_crash_shows_as_an_expired_node_moved_shards_and_takeover_events() {
    let fleet = Fleet::start().await;
    fleet.nodes[2].task.abort();
    tokio::time::sleep(Duration::from_secs(8)).await;

    let router = fleet.router(0, None);
    let view = fleet_json(&router).await;
    let c = by_id(&view["nodes"], "c");
    assert!(c["gone"] == true || c["state"] == "dead", "{c}");
    assert_eq!(c["shards"], 0);
    assert!(!c["trouble"].as_array().unwrap().is_empty());
    for id in ["a", "b"] {
        assert_eq!(by_id(&view["nodes"], id)["shards"], SHARDS / 2);
        assert_eq!(by_id(&view["nodes"], id)["quota"], SHARDS / 2);
    }
    let totals = &view["totals"];
    assert_eq!(totals["shards_owned"], SHARDS);
    assert_eq!(totals["shards_orphaned"], 0);
    assert_eq!(totals["nodes_in_trouble"], 1);
    assert!(
        totals["moves_last_hour"].as_u64().unwrap() >= (SHARDS / 3) as u64,
        "{totals}"
    );
    let kinds: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"node_gone"), "{kinds:?}");
    let moved = view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["moved_ago_ms"].as_u64().is_some_and(|ms| ms < 8_000))
        .count();
    assert_eq!(moved, SHARDS / 3, "exactly c's shards moved");

    let page = get(&router, "/").await.body;
    let row_start = page.find("data-node=\"c\"").unwrap();
    let row = &page[page[..row_start].rfind("<tr").unwrap()..row_start];
    assert!(row.contains(" trouble"), "c stands out: {row}");

    let takeovers: f64 = fleet.nodes[..2]
        .iter()
        .map(|n| metric(&n.metrics.render(), "vipfleet_takeovers_total"))
        .sum();
    assert_eq!(takeovers, (SHARDS / 3) as f64);
    let a = get(&router, "/metrics").await;
    assert!(metric(&a.body, "vipfleet_lease_expiries_observed_total") >= 1.0);
    let gone = metric(&a.body, r#"vipfleet_fleet_nodes{state="gone"}"#)
        + metric(&a.body, r#"vipfleet_fleet_nodes{state="dead"}"#);
    assert_eq!(gone, 1.0, "c is gone or dead:\n{}", a.body);
    assert_eq!(metric(&a.body, r#"vipfleet_fleet_nodes{state="active"}"#), 2.0);
    assert_eq!(metric(&a.body, "vipfleet_fleet_nodes_in_trouble"), 1.0);
    assert_eq!(metric(&a.body, "vipfleet_fleet_shards_orphaned"), 0.0, "taken over");
    assert_eq!(
        metric(&a.body, "vipfleet_fleet_moves_last_hour"),
        totals["moves_last_hour"].as_f64().unwrap()
    );
}

/// Between a crash being noticed and its shards being taken over, they are
/// orphaned: the gauge an alert watches shows it, then goes back to 0.
#[tokio::test(start_paused = true)]
async fn orphaned_shards_show_in_the_metrics_until_they_are_taken_over() {
    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    let before = get(&router, "/metrics").await.body;
    assert_eq!(metric(&before, "vipfleet_fleet_shards_orphaned"), 0.0);
    fleet.nodes[2].task.abort();
    // Slow store calls hold the takeover open long enough to be seen.
    fleet.store.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    let mut most_orphaned = 0.0_f64;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = get(&router, "/metrics").await.body;
        let orphaned = metric(&text, "vipfleet_fleet_shards_orphaned");
        if orphaned > 0.0 {
            let gone = metric(&text, r#"vipfleet_fleet_nodes{state="gone"}"#)
                + metric(&text, r#"vipfleet_fleet_nodes{state="dead"}"#);
            assert_eq!(gone, 1.0, "orphans without a gone node:\n{text}");
            assert!(metric(&text, "vipfleet_fleet_shards_in_trouble") >= orphaned);
        }
        most_orphaned = most_orphaned.max(orphaned);
    }
    assert!(most_orphaned >= 1.0, "c's shards were never seen orphaned");
    assert!(most_orphaned <= (SHARDS / 3) as f64, "{most_orphaned}");
    let after = get(&router, "/metrics").await.body;
    assert_eq!(metric(&after, "vipfleet_fleet_shards_orphaned"), 0.0, "taken over");
    assert_eq!(metric(&after, "vipfleet_fleet_shards_owned"), SHARDS as f64);
    assert_eq!(
        metric(&after, "vipfleet_lease_valid"),
        1.0,
        "the observer kept its lease"
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_changed_by_hand_shows_as_wrong_then_repaired() {
    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    let (shard, _) = fleet.nodes[0].status.borrow().held[0];
    let vip = shard.vip();
    let table = &tables()[1];
    // Slow EC2: the repair takes a while, so the page can show the wrong
    // target between the read-back that finds it and the write that fixes
    // it (a write EC2 accepts counts as a check).
    fleet.routes.set_faults(Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    });
    fleet
        .routes
        .tables()
        .set_by_hand(table, vip, &EniId("eni-intruder".into()));

    let route_status = |view: &Value| {
        view["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == shard.to_string())
            .unwrap()["routes"][1]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut seen_wrong = None;
    for _ in 0..80 {
        tokio::time::sleep(POLL).await;
        let view = fleet_json(&router).await;
        if route_status(&view) == "wrong_target" {
            seen_wrong = Some(view);
            break;
        }
    }
    let view = seen_wrong.expect("the read-back reports the wrong target within a reconcile interval");
    assert_eq!(view["totals"]["route_problems"], 1);
    assert_eq!(view["totals"]["shards_in_trouble"], 1);
    let metrics = get(&router, "/metrics").await.body;
    assert_eq!(metric(&metrics, "vipfleet_fleet_route_problems"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "vipfleet_fleet_shards_in_trouble"), 1.0);
    let page = get(&router, "/").await.body;
    assert!(page.contains("data-route=\"wrong_target\""));
    assert!(page.contains(&format!("<tr class=\"shard trouble\" data-shard=\"{shard}\"")));

    let mut repaired = false;
    for _ in 0..80 {
        tokio::time::sleep(POLL).await;
        if route_status(&fleet_json(&router).await) == "ok" {
            repaired = true;
            break;
        }
    }
    assert!(repaired, "the next read-back finds the route repaired");
    assert_eq!(fleet.routes.tables().target(table, vip), Some(&EniId("eni-a".into())));
    let view = fleet_json(&router).await;
    assert!(view["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "route_repair"));
    let metrics = get(&router, "/metrics").await.body;
    assert!(metric(&metrics, "vipfleet_route_repairs_total") >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn metrics_are_prometheus_text_with_every_family() {
    let fleet = Fleet::start().await;
    let answer = get(&fleet.router(0, None), "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &answer.body;
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(metric(text, "vipfleet_shards_owned"), (SHARDS / 3) as f64);
    assert!(metric(text, "vipfleet_heartbeat_age_seconds") < 1.5);
    assert!(metric(text, "vipfleet_heartbeat_duration_seconds_count") >= 10.0);
    assert!(metric(text, r#"vipfleet_store_calls_total{op="heartbeat",outcome="ok"}"#) >= 10.0);
    assert!(metric(text, r#"vipfleet_store_calls_total{op="read_nodes",outcome="ok"}"#) >= 10.0);
    assert!(metric(text, r#"vipfleet_ec2_calls_total{op="create_route",outcome="ok"}"#) >= 1.0);
    assert!(
        metric(
            text,
            r#"vipfleet_ec2_calls_total{op="describe_route_tables",outcome="ok"}"#
        ) >= 1.0
    );
    assert!(metric(text, "vipfleet_claims_total") >= 1.0);
    let level = metric(text, "vipfleet_ec2_token_bucket_level");
    assert!((0.0..=1000.0).contains(&level));
    for family in [
        "vipfleet_takeovers_total",
        "vipfleet_handoffs_total",
        "vipfleet_route_repairs_total",
        "vipfleet_lease_expiries_observed_total",
        "vipfleet_ec2_failover_waiting",
    ] {
        metric(text, family);
    }
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let families = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), families, "a family is rendered twice:\n{text}");
}

#[tokio::test(start_paused = true)]
async fn metrics_show_build_lease_mode_and_the_fleet_totals_of_the_page() {
    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    let text = get(&router, "/metrics").await.body;
    let build = format!(
        r#"vipfleet_build_info{{version="{}",commit="{}"}}"#,
        build_info::VERSION,
        build_info::commit()
    );
    assert_eq!(metric(&text, &build), 1.0);
    assert_eq!(build_info::VERSION, env!("CARGO_PKG_VERSION"));

    assert_eq!(metric(&text, "vipfleet_lease_valid"), 1.0);
    let remaining = metric(&text, "vipfleet_lease_remaining_seconds");
    let ttl = LEASE.lease_ttl.as_secs_f64();
    assert!(remaining > 0.0 && remaining <= ttl, "{remaining}");
    for (mode, on) in [
        ("active", 1.0),
        ("draining", 0.0),
        ("unhealthy", 0.0),
        ("starting", 0.0),
    ] {
        assert_eq!(
            metric(&text, &format!(r#"vipfleet_mode{{mode="{mode}"}}"#)),
            on,
            "{mode}"
        );
    }
    assert!(metric(&text, "vipfleet_snapshot_age_seconds") < 1.0);

    // Every fleet gauge is the page's own total.
    let view = fleet_json(&router).await;
    let t = &view["totals"];
    for (gauge, total) in [
        ("vipfleet_fleet_nodes_in_trouble", "nodes_in_trouble"),
        ("vipfleet_fleet_nodes_config_mismatch", "nodes_config_mismatch"),
        ("vipfleet_fleet_shards", "shards"),
        ("vipfleet_fleet_shards_owned", "shards_owned"),
        ("vipfleet_fleet_shards_free", "shards_free"),
        ("vipfleet_fleet_shards_orphaned", "shards_orphaned"),
        ("vipfleet_fleet_shards_moving", "shards_moving"),
        ("vipfleet_fleet_shards_disputed", "shards_disputed"),
        ("vipfleet_fleet_shards_in_trouble", "shards_in_trouble"),
        ("vipfleet_fleet_route_problems", "route_problems"),
        ("vipfleet_fleet_moves_last_hour", "moves_last_hour"),
    ] {
        assert_eq!(metric(&text, gauge), t[total].as_f64().unwrap(), "{gauge}");
    }
    for (state, n) in t["nodes_by_state"].as_object().unwrap() {
        let gauge = format!(r#"vipfleet_fleet_nodes{{state="{state}"}}"#);
        assert_eq!(metric(&text, &gauge), n.as_f64().unwrap(), "{gauge}");
    }
    assert_eq!(metric(&text, r#"vipfleet_fleet_nodes{state="active"}"#), 3.0);
    assert_eq!(metric(&text, "vipfleet_fleet_shards"), SHARDS as f64);
    // Settled well before SETTLE: the gauge and the JSON say cold alike.
    assert_eq!(view["observer"]["reads_cold"], true);
    assert_eq!(metric(&text, "vipfleet_reads_cold"), 1.0);
    assert_eq!(metric(&text, "vipfleet_fleet_shards_owned"), SHARDS as f64);

    // A drain shows in the mode at the next scrape.
    let drained = fleet.router(1, Some(TOKEN));
    let answer = call(&drained, Method::POST, "/api/v1/drain", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = get(&drained, "/metrics").await.body;
    assert_eq!(metric(&text, r#"vipfleet_mode{mode="draining"}"#), 1.0);
    assert_eq!(metric(&text, r#"vipfleet_mode{mode="active"}"#), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_node_running_another_configuration_counts_as_a_mismatch() {
    let fleet = Fleet::start().await;
    // Same layout, another lease TTL: another fingerprint.
    let lease = LeaseConfig {
        lease_ttl: LEASE.lease_ttl + Duration::from_millis(500),
        ..LEASE
    };
    let other = start_node_with("d", &fleet.store, &fleet.routes, lease);
    tokio::time::sleep(SETTLE).await;
    let text = get(&fleet.router(0, None), "/metrics").await.body;
    assert_eq!(metric(&text, "vipfleet_fleet_nodes_config_mismatch"), 1.0, "{text}");
    // d sees the three others as the odd ones out.
    let theirs = dashboard::router(DashboardState::new(
        other.status.clone(),
        other.metrics.clone(),
        other.controls.clone(),
        None,
    ));
    let text = get(&theirs, "/metrics").await.body;
    assert_eq!(metric(&text, "vipfleet_fleet_nodes_config_mismatch"), 3.0, "{text}");
}

fn assert_haproxy_health(text: &str, on: &str, healthy: Option<f64>) {
    for state in ["healthy", "unhealthy", "unknown"] {
        let gauge = format!(r#"vipfleet_haproxy_health{{state="{state}"}}"#);
        assert_eq!(metric(text, &gauge), f64::from(u8::from(state == on)), "{gauge}");
    }
    let value = metric(text, "vipfleet_haproxy_healthy");
    match healthy {
        Some(v) => assert_eq!(value, v),
        None => assert!(value.is_nan(), "{value}"),
    }
}

#[tokio::test(start_paused = true)]
async fn haproxy_health_is_one_hot_and_nan_without_a_verdict() {
    let (starting, _rx) = control_router(None);
    assert_haproxy_health(&get(&starting, "/metrics").await.body, "unknown", None);

    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    assert_haproxy_health(&get(&router, "/metrics").await.body, "healthy", Some(1.0));
    fleet.nodes[0]
        .controls
        .send(Control::Health(Health::Unhealthy))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = get(&router, "/metrics").await.body;
    assert_haproxy_health(&text, "unhealthy", Some(0.0));
    assert_eq!(metric(&text, r#"vipfleet_mode{mode="unhealthy"}"#), 1.0);
}

#[tokio::test(start_paused = true)]
async fn throttled_store_calls_are_counted_by_outcome() {
    let fleet = Fleet::start().await;
    fleet.store.set_faults(Faults {
        throttle_next: 3,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let throttled: f64 = fleet
        .nodes
        .iter()
        .map(|n| {
            let text = n.metrics.render();
            text.lines()
                .filter(|l| l.starts_with("vipfleet_store_calls_total{") && l.contains(r#"outcome="throttled""#))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum::<f64>()
        })
        .sum();
    assert_eq!(throttled, 3.0);
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_the_lease_and_the_snapshot() {
    // Before the lease loop's first step.
    let (_board, status) = StatusBoard::new();
    let (controls, _rx) = driver::controls();
    let starting = dashboard::router(DashboardState::new(status, Arc::new(Metrics::new()), controls, None));
    assert_eq!(get(&starting, "/healthz").await.status, StatusCode::OK);
    let answer = get(&starting, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("starting"), "{}", answer.body);
    let answer = get(&starting, "/api/v1/fleet").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let spec = openapi::Spec::load();
    assert!(spec.validate(&spec.schema("Error"), &answer.json()).is_empty());
    assert_eq!(get(&starting, "/").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = get(&starting, "/metrics").await.body;
    assert_eq!(metric(&text, r#"vipfleet_mode{mode="starting"}"#), 1.0);
    assert_eq!(metric(&text, "vipfleet_lease_valid"), 0.0);
    assert!(
        !text.contains("vipfleet_fleet_"),
        "no fleet before the first step:\n{text}"
    );

    let fleet = Fleet::start().await;
    let router = fleet.router(0, None);
    let answer = get(&router, "/readyz").await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "ready\n"));

    // The store goes away: the own lease lapses, the loop goes on.
    fleet.store.set_faults(Faults {
        unavailable: true,
        latency: OUTAGE_CALL_LATENCY,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answer = get(&router, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("no valid own lease"), "{}", answer.body);
    let view = fleet_json(&router).await;
    assert_eq!(view["observer"]["lease_valid"], false);
    assert_eq!(view["observer"]["lease_remaining_ms"], Value::Null);
    let text = get(&router, "/metrics").await.body;
    assert_eq!(metric(&text, "vipfleet_lease_valid"), 0.0);
    assert_eq!(metric(&text, "vipfleet_lease_remaining_seconds"), 0.0);
    assert!(metric(&text, "vipfleet_own_lease_lapses_total") >= 1.0);
    assert!(
        metric(
            &text,
            r#"vipfleet_store_calls_total{op="heartbeat",outcome="unavailable"}"#
        ) >= 1.0
    );
    assert_eq!(get(&router, "/healthz").await.status, StatusCode::OK);

    fleet.store.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&router, "/readyz").await.status, StatusCode::OK);

    // The loop stops publishing: the snapshot goes stale.
    fleet.nodes[0].task.abort();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answer = get(&router, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("stuck"), "{}", answer.body);
}

/// A router with its own control channel, to see what the handlers send.
fn control_router(token: Option<&str>) -> (Router, mpsc::Receiver<Control>) {
    let (_board, status) = StatusBoard::new();
    let (controls, rx) = driver::controls();
    let state = DashboardState::new(
        status,
        Arc::new(Metrics::new()),
        controls,
        token.map(|t| Token::parse(t).unwrap()),
    );
    (dashboard::router(state), rx)
}

#[tokio::test]
async fn drain_and_undrain_need_the_exact_token() {
    let (router, mut rx) = control_router(Some(TOKEN));
    for path in ["/api/v1/drain", "/api/v1/undrain"] {
        let missing = call(&router, Method::POST, path, None).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"vipfleet\"");
        let wrong = call(&router, Method::POST, path, Some("test-token-0123456789abcdeX")).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        assert!(!wrong.body.contains(TOKEN));
        let short = call(&router, Method::POST, path, Some(&TOKEN[..TOKEN.len() - 1])).await;
        assert_eq!(short.status, StatusCode::UNAUTHORIZED);
        assert!(rx.try_recv().is_err(), "nothing reaches the driver without the token");
    }
    let answer = call(&router, Method::POST, "/api/v1/drain", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json()["accepted"], "drain");
    assert_eq!(rx.try_recv().unwrap(), Control::Drain);
    let answer = call(&router, Method::POST, "/api/v1/undrain", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(rx.try_recv().unwrap(), Control::Undrain);

    // The driver has gone away: say so, do not fail.
    drop(rx);
    let answer = call(&router, Method::POST, "/api/v1/drain", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"], "stopped");
}

#[tokio::test]
async fn without_a_token_the_write_endpoints_do_not_exist() {
    let (router, mut rx) = control_router(None);
    for path in ["/api/v1/drain", "/api/v1/undrain"] {
        for bearer in [None, Some(TOKEN)] {
            assert_eq!(
                call(&router, Method::POST, path, bearer).await.status,
                StatusCode::NOT_FOUND
            );
        }
    }
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_drain_through_the_dashboard_hands_every_shard_away() {
    let fleet = Fleet::start().await;
    let router = fleet.router(0, Some(TOKEN));
    // `a` started first and claimed everything, then rebalanced: count
    // only what the drain does.
    let handoffs_before = metric(&fleet.nodes[0].metrics.render(), "vipfleet_handoffs_total");
    let answer = call(&router, Method::POST, "/api/v1/drain", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let view = fleet_json(&router).await;
    assert_eq!(view["observer"]["mode"], "draining");
    assert_eq!(view["events"][0]["kind"], "mode_changed");
    assert_eq!(view["events"][0]["detail"], "active → draining");

    tokio::time::sleep(Duration::from_secs(10)).await;
    let view = fleet_json(&router).await;
    assert_eq!(view["observer"]["exited"], true, "drained and stopped");
    assert_eq!(view["observer"]["shards_held"], 0);
    let since_drain: Vec<&Value> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|e| e["kind"] != "mode_changed")
        .collect();
    let handed = since_drain.iter().filter(|e| e["kind"] == "handed_off").count();
    assert_eq!(handed, SHARDS / 3, "{since_drain:#?}");
    let handoffs = metric(&fleet.nodes[0].metrics.render(), "vipfleet_handoffs_total") - handoffs_before;
    assert_eq!(handoffs, (SHARDS / 3) as f64);
    let answer = get(&router, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("stopped"), "{}", answer.body);
    let owners: BTreeMap<String, usize> = fleet_json(&fleet.router(1, None)).await["shards"]
        .as_array()
        .unwrap()
        .iter()
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s["owner"].as_str().unwrap_or("-").to_string()).or_default() += 1;
            m
        });
    assert_eq!(
        owners,
        BTreeMap::from([("b".to_string(), SHARDS / 2), ("c".to_string(), SHARDS / 2)])
    );
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405_never_500() {
    let (router, _rx) = control_router(Some(TOKEN));
    for path in [
        "/nope",
        "/api/v1/fleet/",
        "/api/v2/fleet",
        "/metrics/x",
        "/%ff",
        "/api/v1/drain/now",
    ] {
        let answer = get(&router, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let wrong_methods = [
        (Method::POST, "/"),
        (Method::DELETE, "/api/v1/fleet"),
        (Method::PUT, "/metrics"),
        (Method::POST, "/healthz"),
        (Method::PATCH, "/readyz"),
        (Method::GET, "/api/v1/drain"),
        (Method::DELETE, "/api/v1/undrain"),
    ];
    for (method, path) in wrong_methods {
        let answer = call(&router, method.clone(), path, Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}

/// Every operation in openapi.yaml, asked with and without the token, by a
/// settled fleet and by one still starting: only documented status codes,
/// and JSON bodies that match their schemas. Undocumented methods on each
/// documented path answer 405.
#[tokio::test(start_paused = true)]
async fn every_documented_operation_answers_as_documented() {
    let spec = openapi::Spec::load();
    let fleet = Fleet::start().await;
    let (starting, _rx) = control_router(Some(TOKEN));
    let routers = [
        ("settled, with token", fleet.router(0, Some(TOKEN))),
        ("settled, no token", fleet.router(1, None)),
        ("starting", starting),
    ];
    let operations = spec.operations();
    assert_eq!(operations.len(), 7, "{operations:?}");
    for op in &operations {
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        for (name, router) in &routers {
            for bearer in [None, Some(TOKEN), Some("wrong-token-0123456789abcdef")] {
                let answer = call(router, method.clone(), &op.path, bearer).await;
                let code = answer.status.as_u16();
                if !op.secured {
                    assert_ne!(code, 401, "{} {} is not documented as secured", op.method, op.path);
                } else if *name == "settled, with token" && bearer != Some(TOKEN) {
                    assert_eq!(code, 401, "{} {} is documented as secured", op.method, op.path);
                }
                let documented = op.responses.get(&code).unwrap_or_else(|| {
                    panic!(
                        "{} {} ({name}, {bearer:?}) answered undocumented {code}: {}",
                        op.method, op.path, answer.body
                    )
                });
                let content_type = answer
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                if let Some(expected) = &documented.content_type {
                    assert!(
                        content_type.starts_with(expected.as_str()),
                        "{} {} answered {code} as {content_type:?}, documented {expected:?}",
                        op.method,
                        op.path
                    );
                }
                if let (Some(schema), true) = (&documented.schema, content_type.starts_with("application/json")) {
                    let errors = spec.validate(schema, &answer.json());
                    assert!(
                        errors.is_empty(),
                        "{} {} {code}: {}",
                        op.method,
                        op.path,
                        errors.join("\n")
                    );
                }
            }
        }
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if operations.iter().any(|o| o.path == op.path && o.method == other) {
                continue;
            }
            let method = Method::from_bytes(other.as_bytes()).unwrap();
            let answer = call(&routers[0].1, method, &op.path, Some(TOKEN)).await;
            assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{other} {}", op.path);
        }
    }
}

/// The schema check itself can fail: break a real answer three ways.
#[tokio::test(start_paused = true)]
async fn the_schema_check_catches_missing_mistyped_and_undocumented_fields() {
    let fleet = Fleet::start().await;
    let view = fleet_json(&fleet.router(0, None)).await;
    let spec = openapi::Spec::load();
    let schema = spec.schema("Fleet");

    let mut missing = view.clone();
    missing["observer"].as_object_mut().unwrap().remove("lease_valid");
    let errors = spec.validate(&schema, &missing);
    assert!(errors.iter().any(|e| e.contains("lease_valid")), "{errors:?}");

    let mut mistyped = view.clone();
    mistyped["shards"][3]["epoch"] = Value::String("7".into());
    mistyped["nodes"][0]["state"] = Value::String("sleepy".into());
    let errors = spec.validate(&schema, &mistyped);
    assert_eq!(errors.len(), 2, "{errors:?}");

    let mut extra = view;
    extra["totals"]["surprise"] = Value::Bool(true);
    extra["shards"][0]["routes"][0]["status"] = Value::Null;
    let errors = spec.validate(&schema, &extra);
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[tokio::test]
async fn serve_answers_on_every_listener_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listeners = vec![
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let (_board, status) = StatusBoard::new();
    let (controls, _rx) = driver::controls();
    let state = DashboardState::new(status, Arc::new(Metrics::new()), controls, None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard::serve(listeners, state, async {
        let _ = stopped.await;
    }));

    for addr in &addrs {
        for (path, expected) in [
            ("/healthz", "200 OK"),
            ("/readyz", "503 Service Unavailable"),
            ("/x", "404 Not Found"),
        ] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(
                response.starts_with(&format!("HTTP/1.1 {expected}")),
                "{addr}{path}: {response}"
            );
        }
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addrs[0]).await.is_err(),
        "the listener is closed"
    );
}

/// The names of the series a PromQL expression selects: what is left once
/// strings, label matchers, ranges, grouping clauses, function names,
/// keywords, numbers and Grafana variables are set aside.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    // (identifier, followed by an opening parenthesis)
    let mut idents: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    let closing = |open: char| match open {
        '{' => '}',
        '[' => ']',
        other => other,
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`' | '{' | '[') {
            let end = closing(c);
            i += 1;
            while i < chars.len() && chars[i] != end {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let rest: String = chars[j..].iter().take(8).collect::<String>().to_lowercase();
            // `sum by (x) (...)`: an aggregation with its clause first.
            let call = rest.starts_with('(') || rest.starts_with("by") || rest.starts_with("without");
            if GROUPING.contains(&word.to_lowercase().as_str()) && call {
                let mut depth = 0;
                i = j;
                while i < chars.len() {
                    depth += match chars[i] {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
            idents.push((word, call));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (5m, 1e3, 0x1f).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    idents
        .into_iter()
        .filter(|(word, call)| !call && !word.starts_with('$') && !KEYWORDS.contains(&word.to_lowercase().as_str()))
        .map(|(word, _)| word)
        .collect()
}

/// Series names in OpenMetrics text, as Prometheus stores them (a
/// histogram `x` is `x_bucket`, `x_sum` and `x_count`; a counter `x_total`).
fn exported_series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn repo_file(relative: &str) -> String {
    let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every query in the Grafana dashboard and every alert rule names only
/// series the agent really exports, so neither shows "no data" forever.
#[tokio::test(start_paused = true)]
async fn the_alert_rules_and_the_grafana_dashboard_query_only_exported_series() {
    // The extractor itself: names, not functions, labels or variables.
    assert_eq!(
        promql_metric_names(
            r#"sum by (job, instance) (rate(vipfleet_store_calls_total{job="$job",outcome="throttled"}[$__rate_interval])) > 0 and on(instance) up == 1"#
        ),
        vec!["vipfleet_store_calls_total", "up"]
    );
    assert_eq!(
        promql_metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / ignoring(op) y offset 1h"),
        vec!["x_bucket", "y"]
    );

    let fleet = Fleet::start().await;
    let text = get(&fleet.router(0, None), "/metrics").await.body;
    let mut exported = exported_series(&text);
    // Prometheus adds `up` for every scrape target.
    exported.insert("up".to_string());
    assert!(
        !exported.contains("vipfleet_claims"),
        "counters are stored with _total: a query without it finds nothing"
    );

    let rules: serde_json::Value = serde_norway::from_str(&repo_file("infra/monitoring/alerts.yml")).unwrap();
    let mut alert_queries = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a named rule");
            alert_queries.push((
                format!("alerts.yml {name}"),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }

    let dashboard: Value = serde_json::from_str(&repo_file("infra/monitoring/grafana-dashboard.json")).unwrap();
    let mut grafana_queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            grafana_queries.push((
                format!("panel {title:?}"),
                target["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"]["query"].as_str().or(variable["definition"].as_str());
        if let (Some("query"), Some(query)) = (variable["type"].as_str(), query) {
            // label_values(metric, label): only the first argument is a series.
            let series = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or(query);
            grafana_queries.push((format!("variable {}", variable["name"]), series.to_string()));
        }
    }

    for (what, queries) in [
        ("alerts.yml", &alert_queries),
        ("the Grafana dashboard", &grafana_queries),
    ] {
        let mut used = std::collections::BTreeSet::new();
        let mut unknown = Vec::new();
        for (place, expr) in queries.iter() {
            let names = promql_metric_names(expr);
            assert!(!names.is_empty(), "{place} queries no series: {expr}");
            for name in names {
                if !exported.contains(&name) {
                    unknown.push(format!("{place}: {name} in {expr}"));
                }
                used.insert(name);
            }
        }
        assert!(
            unknown.is_empty(),
            "{what} queries series the agent does not export:\n{}",
            unknown.join("\n")
        );
        assert!(used.len() >= 8, "{what} uses only {used:?}");
        eprintln!(
            "{what}: {} queries over {} series, all exported",
            queries.len(),
            used.len()
        );
    }
}
