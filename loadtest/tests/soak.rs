//! Issue 11's soak, shortened for CI: 120 s of load on a small lab with a
//! random fault every 20–40 s (seed 1), asserted on the report: no
//! violation (so no failed request on a VIP the fault at hand did not
//! concern), the faults struck, and the agents' memory was measured at
//! the start and the end. `run --scenario soak --duration 600` is the
//! full one.
//!
//! Its own test binary: cargo runs test binaries one after another, so it
//! never shares the machine with the other lab tests.
//!
//! Needs root and `ip netns`; skips loudly without them.

mod common;
use common::{is_root, netns_works, run_scenarios};

/// CI's soak length, seconds.
const SOAK_SECONDS: &str = "120";

#[test]
fn a_short_soak_keeps_the_promises() {
    if !is_root() || !netns_works() {
        eprintln!("\n*** SKIPPED a_short_soak_keeps_the_promises: needs root and `ip netns` ***\n");
        return;
    }
    let prefix = format!("vk{}", std::process::id() % 10_000);
    let args = ["--scenario", "soak", "--duration", SOAK_SECONDS, "--seed", "1"];
    let run = run_scenarios("soak", &prefix, &args);
    let r = &run.report;
    assert_eq!(r["scenario"], "soak");
    assert_eq!(r["violations"].as_array().map(Vec::len), Some(0), "{}", r["violations"]);
    assert!(
        r["duration_s"].as_f64().is_some_and(|d| d >= 115.0),
        "{}",
        r["duration_s"]
    );
    assert!(
        r["requests"]["sent"].as_u64().is_some_and(|n| n > 10_000),
        "{}",
        r["requests"]
    );
    // At least two faults in 120 s (gaps of at most 40 s), each its events.
    let events = r["events"].as_array().expect("events");
    assert!(events.len() >= 2, "{events:?}");
    let footprint = &r["agent_footprint"];
    for key in ["rss_start_mib", "rss_end_mib"] {
        assert!(
            footprint[key]["min"].as_f64().is_some_and(|m| m > 1.0),
            "{key}: {footprint}"
        );
    }
    assert!(run.stdout.contains("soak: agent RSS: start"), "{}", run.stdout);
    assert!(run.status.success(), "status {}\n{}", run.status, run.stderr);
    let _ = std::fs::remove_dir_all(&run.dir);
}
