//! Issue 4's and issue 10's acceptance: every fault scenario on a small lab
//! (3 nodes, 12 VIPs, 2 route tables, 20-second runs), asserted on the
//! report the harness writes. One lab serves all scenarios (`--scenario
//! all`); the harness heals and re-balances it between them.
//!
//! Needs root and `ip netns`; skips loudly without them.

use std::process::Command;

use serde_json::Value;

mod common;
use common::{is_root, netns_works};

const BIN: &str = env!("CARGO_BIN_EXE_vipfleet-loadtest");

fn num(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{} has no number at {path:?}", report["scenario"]))
}

/// The report's agent exits as (cause, whether its log shows a clean
/// stop), sorted.
fn exits(report: &Value) -> Vec<(&str, bool)> {
    let mut exits: Vec<(&str, bool)> = report["agent_exits"]
        .as_array()
        .expect("agent_exits")
        .iter()
        .map(|e| {
            let clean = e["exit_line"]
                .as_str()
                .is_some_and(|l| l.contains("stopped without draining"));
            (e["cause"].as_str().unwrap_or("?"), clean)
        })
        .collect();
    exits.sort();
    exits
}

fn events(report: &Value) -> Vec<&str> {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect()
}

#[test]
fn every_fault_scenario_keeps_the_promises() {
    if !is_root() || !netns_works() {
        eprintln!("\n*** SKIPPED every_fault_scenario_keeps_the_promises: needs root and `ip netns` ***\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vipfleet-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let prefix = format!("vs{}", std::process::id() % 10_000);
    let output = Command::new(BIN)
        .args([
            "run",
            "--scenario",
            "all",
            "--nodes",
            "3",
            "--vips",
            "12",
            "--route-tables",
            "2",
        ])
        .args(["--duration", "20", "--store-outage", "10", "--prefix", &prefix])
        .arg("--report")
        .arg(&report_path)
        .output()
        .expect("running vipfleet-loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    let text = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("no report ({e}); status {}\n{stderr}", output.status));
    let reports: Vec<Value> = serde_json::from_str(&text).expect("the report is a JSON array");
    let names: Vec<&str> = reports.iter().filter_map(|r| r["scenario"].as_str()).collect();
    for wanted in [
        "crash",
        "zombie",
        "partition",
        "store-outage",
        "scale-in",
        "scale-out",
        "route-drift",
        "bad-items",
        "lost-items",
        "table-recreate",
        "agent-restart",
        "vip-change",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for r in &reports {
        let name = r["scenario"].as_str().unwrap_or("?");
        assert_eq!(
            r["violations"].as_array().map(Vec::len),
            Some(0),
            "{name}: {}",
            r["violations"]
        );
        assert_eq!(
            num(r, &["vips_restored"]),
            num(r, &["vips_affected"]),
            "{name}: a VIP stayed dark"
        );
        assert!(num(r, &["requests", "sent"]) > 1000, "{name}: the load did not run");
        match name {
            "crash" | "scale-in" | "bad-items" | "lost-items" | "table-recreate" => {
                assert_eq!(num(r, &["moves", "actual"]), num(r, &["moves", "minimum"]), "{name}");
                assert!(num(r, &["moves", "minimum"]) > 0, "{name}: the victim held no shard");
            }
            "steady" => {
                // Every agent ran through the load and was measured.
                assert_eq!(num(r, &["agent_footprint", "agents"]), 3, "{}", r["agent_footprint"]);
                assert!(
                    r["agent_footprint"]["rss_mib"]["min"].as_f64().is_some_and(|m| m > 1.0),
                    "{}",
                    r["agent_footprint"]
                );
            }
            "store-outage" => {
                assert_eq!(num(r, &["requests", "failed"]), 0, "fail static: no request fails");
                assert_eq!(num(r, &["route_changes"]), 0, "fail static: no route changes");
                assert_eq!(num(r, &["moves", "actual"]), 0);
            }
            "agent-restart" => {
                assert_eq!(num(r, &["moves", "actual"]), 0, "a restart adopts what the node held");
                assert_eq!(num(r, &["ec2", "mutating"]), 0, "a restart writes no route");
                assert_eq!(num(r, &["route_changes"]), 0);
                assert_eq!(num(r, &["requests", "failed"]), 0);
                assert_eq!(
                    exits(r),
                    vec![("killed", false), ("stopped", true)],
                    "{}",
                    r["agent_exits"]
                );
            }
            "vip-change" => {
                assert_eq!(num(r, &["flips"]), 0, "no route sent back and forth");
                assert_eq!(num(r, &["moves", "actual"]), 0, "retained VIPs stay put");
                // The removed VIP handed on at most twice and removed, the new one added.
                let tables = num(r, &["route_tables"]);
                assert!(
                    (2 * tables..=4 * tables).contains(&num(r, &["route_changes"])),
                    "{name}: {} route changes",
                    r["route_changes"]
                );
                assert_eq!(exits(r), vec![("stopped", true); 3], "{}", r["agent_exits"]);
                assert!(events(r).contains(&"new-list-served"), "{}", r["events"]);
            }
            _ => {}
        }
        if matches!(name, "crash" | "bad-items" | "lost-items" | "table-recreate") {
            assert!(
                num(r, &["vips_affected"]) > 0,
                "{name}: a crash darkens the victim's VIPs for a while"
            );
            assert!(num(r, &["outage_bound_ms"]) > 0, "{name}: no crash bound");
            assert_eq!(exits(r), vec![("killed", false)], "{name}: {}", r["agent_exits"]);
        }
        if name == "bad-items" {
            let skipped = r["items_skipped"].as_object().expect("items_skipped");
            assert_eq!(skipped.len(), 2, "the survivors answered: {skipped:?}");
            assert!(skipped.values().all(|n| n.as_u64() == Some(4)), "{skipped:?}");
        }
        if name == "table-recreate" {
            assert!(events(r).contains(&"re-formed"), "{}", r["events"]);
            let phases = r["phases"].as_array().expect("phases");
            let quiet: Vec<&Value> = phases
                .iter()
                .filter(|p| matches!(p["name"].as_str(), Some("table-deleted" | "table-created")))
                .collect();
            assert_eq!(quiet.len(), 2, "{phases:?}");
            for p in quiet {
                assert_eq!(num(p, &["route_changes"]), 0, "{p}");
                assert_eq!(num(p, &["ec2", "mutating"]), 0, "{p}");
            }
        }
    }
    assert!(output.status.success(), "status {}\n{stderr}", output.status);
    let _ = std::fs::remove_dir_all(&dir);
}
