//! The dashboard against a real fleet in miniature: three drivers share the
//! in-memory lease store and route tables on paused tokio time, and the
//! router of one of them is asked every question an operator (or Prometheus,
//! or a load balancer's readiness probe) would ask, with `oneshot`.
//!
//! JSON answers are checked against `openapi.yaml`'s schemas; every
//! documented operation must answer with a documented status code.

#[path = "../support/openapi.rs"]
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use serde_json::Value;
use vipfleet_agent::dashboard::build_info;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::dashboard::{self, DashboardState};
use vipfleet_agent::driver::{self, Control};
use vipfleet_agent::status::StatusBoard;
use vipfleet_core::fake::Faults;
use vipfleet_core::machine::Health;
use vipfleet_core::{EniId, LeaseConfig, ShardId};

mod control;
mod fleet;
mod monitoring;

use control::control_router;
use fleet::*;

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
