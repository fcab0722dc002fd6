//! Issue 4's, issue 10's and issue 11's acceptance (and zombie-deleted's): every fault scenario on a small lab
//! (3 nodes, 12 VIPs, 2 route tables, 20-second runs, longer where a
//! scenario needs it: ec2-partial about 60 s, crash a series of crashes
//! until 20 outage samples, about 64 s), asserted on the
//! report the harness writes. One lab serves all scenarios (`--scenario
//! all`); the harness heals and re-balances it between them.
//!
//! Needs root and `ip netns`; skips loudly without them.

use serde_json::Value;

mod common;
use common::{is_root, netns_works, run_scenarios};

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
    let prefix = format!("vs{}", std::process::id() % 10_000);
    let args = ["--scenario", "all", "--duration", "20", "--store-outage", "10"];
    let run = run_scenarios("scenarios", &prefix, &args);
    let reports: &Vec<Value> = run.report.as_array().expect("the report is a JSON array");
    let names: Vec<&str> = reports.iter().filter_map(|r| r["scenario"].as_str()).collect();
    for wanted in [
        "crash",
        "zombie",
        "zombie-deleted",
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
        "slow-store",
        "store-throttle",
        "ec2-partial",
        "drain-storm",
        "peer-partition",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for r in reports {
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
            "lost-items" => {
                // One re-balancing move is allowed (store_faults::check_lost_items).
                assert!(
                    num(r, &["moves", "actual"]) <= num(r, &["moves", "minimum"]) + 1,
                    "{name}"
                );
                assert!(num(r, &["moves", "minimum"]) > 0, "{name}: the victim held no shard");
            }
            "crash" | "scale-in" | "bad-items" | "table-recreate" | "slow-store" | "store-throttle" | "ec2-partial" => {
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
                // Retained VIPs stay put, but for one re-balancing move when
                // the new VIP lands on another node than the removed one's.
                let moves = num(r, &["moves", "actual"]);
                assert!(moves <= 1, "{name}: {moves} moves");
                // The removed VIP handed on at most twice and removed, the
                // new one added, and the re-balancing move.
                let tables = num(r, &["route_tables"]);
                assert!(
                    (2 * tables..=(4 + moves) * tables).contains(&num(r, &["route_changes"])),
                    "{name}: {} route changes",
                    r["route_changes"]
                );
                assert_eq!(exits(r), vec![("stopped", true); 3], "{}", r["agent_exits"]);
                assert!(events(r).contains(&"new-list-served"), "{}", r["events"]);
            }
            _ => {}
        }
        if matches!(
            name,
            "crash" | "bad-items" | "lost-items" | "table-recreate" | "slow-store" | "ec2-partial"
        ) {
            assert!(
                num(r, &["vips_affected"]) > 0,
                "{name}: a crash darkens the victim's VIPs for a while"
            );
            assert!(num(r, &["outage_bound_ms"]) > 0, "{name}: no crash bound");
            if name == "crash" {
                // A series of crashes, each agent killed and restarted.
                let all = exits(r);
                assert!(
                    !all.is_empty() && all.iter().all(|e| *e == ("killed", false)),
                    "{all:?}"
                );
            } else {
                assert_eq!(exits(r), vec![("killed", false)], "{name}: {}", r["agent_exits"]);
            }
        }
        if name == "crash" {
            // The lab's crash acceptance with peer probes: p99 within its
            // bound over at least 20 samples (one per VIP per crash). The
            // bound is 1.5 s, not issue 12's 1 s: a loaded CI machine's
            // tail (see PEER_TAKEOVER_MS).
            assert!(
                num(r, &["vips_affected"]) >= 20,
                "{name}: {} samples",
                r["vips_affected"]
            );
            assert!(
                num(r, &["outage_ms", "p99"]) <= num(r, &["outage_bound_ms"]),
                "{}",
                r["outage_ms"]
            );
        }
        if name == "zombie-deleted" {
            // Its shards away and a share back; the agent itself stays up.
            assert!(num(r, &["moves", "actual"]) >= num(r, &["moves", "minimum"]), "{name}");
            assert_eq!(exits(r), vec![], "{name}: {}", r["agent_exits"]);
            assert!(events(r).contains(&"item-deleted"), "{}", r["events"]);
        }
        if name == "peer-partition" {
            assert_eq!(num(r, &["requests", "failed"]), 0, "a cut between peers fails nothing");
            let kinds = events(r);
            for kind in ["peer-cut", "peer-loss", "peer-heal"] {
                assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
            }
        }
        if name == "bad-items" {
            let skipped = r["items_skipped"].as_object().expect("items_skipped");
            assert_eq!(skipped.len(), 2, "the survivors answered: {skipped:?}");
            assert!(skipped.values().all(|n| n.as_u64() == Some(4)), "{skipped:?}");
        }
        if name == "slow-store" {
            // Issue 11: lease_ttl + 2 × 600 ms + 1 s, and the crash's VIPs within it.
            assert_eq!(num(r, &["outage_bound_ms"]), 3000 + 2 * 600 + 1000);
            assert!(num(r, &["outage_ms", "max"]) <= 5200, "{}", r["outage_ms"]);
            let kinds = events(r);
            for kind in ["store-blackout", "store-back", "store-slow", "crash"] {
                assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
            }
            let blackout = r["phases"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "store-blackout"))
                .expect("the blackout's phase");
            assert_eq!(num(blackout, &["route_changes"]), 0, "the blackout moved a route");
            assert_eq!(num(blackout, &["ec2", "mutating"]), 0, "{blackout}");
        }
        if name == "ec2-partial" {
            let calls = &r["failing_table_calls"];
            let window = calls["window_s"].as_f64().expect("the backoff window");
            assert!(window >= 20.0, "{calls}");
            for (agent, n) in calls["per_agent"].as_object().expect("per_agent") {
                let n = n.as_u64().unwrap_or(u64::MAX) as f64;
                assert!(
                    n < window / 10.0,
                    "{agent}: {n} calls for the failing table in {window} s"
                );
            }
            assert!(
                events(r).contains(&"repaired"),
                "the drift in the healthy table: {}",
                r["events"]
            );
        }
        if name == "drain-storm" {
            // Every shard of the drained nodes moves, some twice: one
            // leaving node may hand a shard to the other before it sees
            // that one leave too.
            let (actual, minimum) = (num(r, &["moves", "actual"]), num(r, &["moves", "minimum"]));
            assert!(
                minimum > 0 && (minimum..=2 * minimum).contains(&actual),
                "{}",
                r["moves"]
            );
            assert_eq!(exits(r), vec![("drained", false); 2], "{}", r["agent_exits"]);
            let drained = events(r).iter().filter(|k| **k == "drained").count();
            assert_eq!(drained, 2, "{}", r["events"]);
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
    assert!(run.status.success(), "status {}\n{}", run.status, run.stderr);
    let _ = std::fs::remove_dir_all(&run.dir);
}
