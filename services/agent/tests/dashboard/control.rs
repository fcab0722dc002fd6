//! The write endpoints (drain, undrain: only with the exact token), the
//! answers to everything else, the documented operations against
//! `openapi.yaml`, and serving on every listener.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;
use vipfleet_agent::dashboard::auth::Token;
use vipfleet_agent::dashboard::metrics::Metrics;
use vipfleet_agent::dashboard::{self, DashboardState};
use vipfleet_agent::driver::{self, Control};
use vipfleet_agent::status::StatusBoard;

use super::fleet::*;
use super::openapi;

/// A router with its own control channel, to see what the handlers send.
pub fn control_router(token: Option<&str>) -> (Router, mpsc::Receiver<Control>) {
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
