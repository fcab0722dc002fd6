//! What the lab tests need to know about the machine before they start, and
//! how they drive a lab through the `vipfleet-loadtest lab` command. Each
//! test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_vipfleet-loadtest");

/// Effective uid 0, read from /proc (no libc call needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub fn netns_works() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `vipfleet-loadtest lab --prefix PREFIX ARGS…`, its stderr echoed.
pub fn lab(prefix: &str, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(["lab", "--prefix", prefix])
        .args(args)
        .output()
        .expect("running vipfleet-loadtest");
    eprintln!(
        "$ vipfleet-loadtest lab --prefix {prefix} {} -> {}\n{}",
        args.join(" "),
        out.status,
        text(&out.stderr)
    );
    out
}

/// The lab runs the `vipfleet-agent` next to `vipfleet-loadtest`; tests/run
/// builds both (`cargo build --workspace --bins`) before the tests. Building
/// from inside a test resolved other features and compiled the AWS SDK
/// again, so this only checks.
pub fn assert_agent_built() {
    let exe_dir = Path::new(BIN).parent().expect("binary directory");
    assert!(
        exe_dir.join("vipfleet-agent").is_file(),
        "no vipfleet-agent in {}: run `cargo build --workspace --bins` first (tests/run does)",
        exe_dir.display()
    );
}

/// A scenario run's outcome: the report, what the command printed, and
/// the folder the report is in (the caller removes it once it passed).
pub struct Run {
    pub report: Value,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub dir: std::path::PathBuf,
}

/// The lab every scenario test runs on: small, so a run takes minutes.
const SMALL_LAB: [&str; 6] = ["--nodes", "3", "--vips", "12", "--route-tables", "2"];

/// `vipfleet-loadtest run ARGS… --prefix PREFIX --report …` on a small lab
/// of its own ([`SMALL_LAB`]), its summary echoed; panics without a report.
pub fn run_scenarios(tag: &str, prefix: &str, args: &[&str]) -> Run {
    run_scenarios_on(&SMALL_LAB, tag, prefix, args)
}

/// [`run_scenarios`] on a lab of the given `--nodes`, `--vips` and
/// `--route-tables`.
pub fn run_scenarios_on(lab: &[&str], tag: &str, prefix: &str, args: &[&str]) -> Run {
    let dir = std::env::temp_dir().join(format!("vipfleet-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let output = Command::new(BIN)
        .arg("run")
        .args(lab)
        .args(args)
        .args(["--prefix", prefix])
        .arg("--report")
        .arg(&report_path)
        .output()
        .expect("running vipfleet-loadtest");
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    eprintln!("{stdout}");
    let json = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("no report ({e}); status {}\n{stderr}", output.status));
    Run {
        report: serde_json::from_str(&json).expect("the report is JSON"),
        status: output.status,
        stdout,
        stderr,
        dir,
    }
}

/// Removes the lab even when an assertion fails halfway (keeping its logs).
pub struct Teardown(pub String);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = Command::new(BIN).args(["lab", "--prefix", &self.0, "down"]).output();
    }
}

pub fn status_json(prefix: &str) -> Value {
    let out = lab(prefix, &["status", "--json"]);
    assert!(out.status.success(), "lab status --json failed");
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// `GET url` from the host namespace (a node's dashboard), as JSON.
pub fn get_json(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "3", "--fail", url])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// `GET url` from the host namespace, the body as text.
pub fn get_text(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "3", "--fail", url])
        .output()
        .ok()?;
    out.status.success().then(|| text(&out.stdout))
}
