//! An AZ's loss on a lab of five nodes: two killed at the same instant.
//! Both survivors reach two verdicts together; the dead nodes' VIPs must
//! answer again within the crash bound, exactly their shards must move,
//! and nothing else may fail.
//!
//! Its own test binary: cargo runs test binaries one after another, so its
//! lab never shares the machine with another.
//!
//! Needs root and `ip netns`; skips loudly without them.

mod common;
use common::{is_root, netns_works, run_scenarios_on};

const LAB: [&str; 6] = ["--nodes", "5", "--vips", "15", "--route-tables", "2"];

#[test]
fn an_az_loss_moves_exactly_the_dead_nodes_shards_in_time() {
    if !is_root() || !netns_works() {
        eprintln!(
            "\n*** SKIPPED an_az_loss_moves_exactly_the_dead_nodes_shards_in_time: needs root and `ip netns` ***\n"
        );
        return;
    }
    let prefix = format!("va{}", std::process::id() % 10_000);
    let run = run_scenarios_on(&LAB, "az-loss", &prefix, &["--scenario", "az-loss", "--duration", "15"]);
    let r = &run.report;
    assert_eq!(r["scenario"], "az-loss");
    assert_eq!(r["violations"].as_array().map(Vec::len), Some(0), "{}", r["violations"]);
    let crashes = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "crash")
        .count();
    assert_eq!(crashes, 2, "{}", r["events"]);
    let moves = &r["moves"];
    assert!(moves["minimum"].as_u64().is_some_and(|m| m >= 2), "{moves}");
    assert_eq!(moves["actual"], moves["minimum"], "{moves}");
    assert_eq!(r["vips_restored"], r["vips_affected"], "a VIP stayed dark");
    assert!(
        r["vips_affected"].as_u64().is_some_and(|n| n >= 2),
        "{}",
        r["vips_affected"]
    );
    assert!(
        r["requests"]["sent"].as_u64().is_some_and(|n| n > 1000),
        "{}",
        r["requests"]
    );
    assert!(run.status.success(), "status {}\n{}", run.status, run.stderr);
    let _ = std::fs::remove_dir_all(&run.dir);
}
