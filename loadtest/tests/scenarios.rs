//! Issue 4's acceptance: every fault scenario on a small lab (3 nodes, 12
//! VIPs, 2 route tables, 20-second runs), asserted on the report the
//! harness writes. One lab serves all scenarios (`--scenario all`); the
//! harness heals and re-balances it between them.
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
            "crash" | "scale-in" => {
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
            _ => {}
        }
        if name == "crash" {
            assert!(
                num(r, &["vips_affected"]) > 0,
                "a crash darkens the victim's VIPs for a while"
            );
        }
    }
    assert!(output.status.success(), "status {}\n{stderr}", output.status);
    let _ = std::fs::remove_dir_all(&dir);
}
