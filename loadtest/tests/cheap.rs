//! Issue 12's cheap steady state on real processes: a small lab on the
//! cheap lease profile (heartbeat 5 s, lease 15 s, cold reads) must read
//! cold at rest at the DynamoDB cost the model gives (within 10 %, as the
//! `at-rest` scenario checks).
//!
//! Its crash series is not held here: on this machine it measured outage
//! p99s of 790, 919 and 1,424 ms in three runs, around the 1 s promise
//! rather than safely within it (`run --profile cheap --scenario crash`
//! measures it).
//!
//! Its own test binary: cargo runs test binaries one after another, so it
//! never shares the machine with the other lab tests. Needs root and
//! `ip netns`; skips loudly without them.

use serde_json::Value;

mod common;
use common::{is_root, netns_works, run_scenarios, Teardown};

const CHEAP: [&str; 2] = ["--profile", "cheap"];

fn no_violations(r: &Value) {
    assert_eq!(
        r["violations"].as_array().map(Vec::len),
        Some(0),
        "{}: {}",
        r["scenario"],
        r["violations"]
    );
}

#[test]
fn the_cheap_profile_reads_cold_at_the_modelled_cost() {
    if !is_root() || !netns_works() {
        eprintln!("\n*** SKIPPED the_cheap_profile_reads_cold_at_the_modelled_cost: needs root and `ip netns` ***\n");
        return;
    }
    let prefix = format!("vc{}", std::process::id() % 10_000);
    let _teardown = Teardown(prefix.clone());

    let at_rest: Vec<&str> = ["--scenario", "at-rest", "--duration", "60"]
        .into_iter()
        .chain(CHEAP)
        .collect();
    let run = run_scenarios("cheap-at-rest", &prefix, &at_rest);
    let r = &run.report;
    assert_eq!(r["scenario"], "at-rest");
    no_violations(r);
    let cost = &r["at_rest"];
    let field = |name: &str| cost[name].as_f64().unwrap_or_else(|| panic!("at_rest.{name}: {cost}"));
    assert!(field("window_s") >= 59.0, "{cost}");
    // Three nodes: 3 heartbeats every 5 s, and reads of a few small items.
    assert!(field("counted_write_units_per_s") > 0.5, "{cost}");
    assert!(field("counted_read_units_per_s") < 1.5, "{cost}");
    assert_eq!(r["moves"]["actual"], 0, "{}", r["moves"]);
}
