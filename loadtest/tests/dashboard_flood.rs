//! Issue 14's acceptance test: the dashboard cannot take its node out of the
//! fleet. Before its connections were bounded, 1,143 idle connections to one
//! node's dashboard port, with the agent under the usual 1,024 file limit,
//! made its heartbeats fail with "Too many open files" and its VIPs moved.
//!
//! Here a lab node's agent runs under the systemd unit's own `LimitNOFILE`
//! (applied with `prlimit`), and the test holds 2,000 idle connections plus
//! slow-header requests against its dashboard for 30 s, from the lab's host
//! leg, reopening whatever the agent closes. Meanwhile it polls a peer's
//! view of the fleet at a steady pace: the node's heartbeat counter (the
//! lease table's) keeps moving, the node never expires, and no shard's epoch
//! changes. Afterwards the node's own metrics show no failed heartbeat and
//! no lease lapse, and that the flood really hit the connection limit.
//!
//! Needs root, `ip netns`, `prlimit` and `curl` (and what `lab up` needs);
//! skips loudly without them, fails instead with `CI` set.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vipfleet_agent::dashboard::server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

mod common;
use common::{assert_agent_built, get_json, get_text, is_root, lab, netns_works, status_json, text, Teardown};

const TEST: &str = "the_dashboard_cannot_exhaust_the_agents_files";
/// The unit whose file limit the agent runs under.
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/systemd/vipfleet-agent.service");
/// systemd's default soft `LimitNOFILE` when a unit sets none.
const SYSTEMD_DEFAULT_NOFILE: u64 = 1024;
const IDLE_CONNECTIONS: usize = 2000;
const SLOW_HEADER_CONNECTIONS: usize = 50;
const FLOOD: Duration = Duration::from_secs(30);
/// How often the test looks at the fleet through a peer.
const POLL: Duration = Duration::from_millis(250);
/// A connection the agent closed is opened again after this (an eager
/// client, without turning the test into a SYN flood).
const RECONNECT_DELAY: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A slow-header client sends one more header line this often, never the
/// blank line that would end the header.
const SLOW_HEADER_LINE_INTERVAL: Duration = Duration::from_secs(1);
/// Descriptors the test process itself needs besides its connections.
const OWN_SPARE_FILES: u64 = 512;
/// Descriptors the agent may open beyond its idle count plus the
/// dashboard's limit (a new connection to DynamoDB or haproxy meanwhile).
const AGENT_SPARE_FILES: usize = 32;
/// Share of the polls that must reach the peer.
const MIN_POLLS_ANSWERED: f64 = 0.8;
/// Share of the heartbeats the node must land during the flood.
const MIN_HEARTBEATS_LANDED: f64 = 0.8;
/// Problems quoted when the test fails (one per poll would bury the first).
const PROBLEMS_SHOWN: usize = 10;
/// How long a peer's view may take to show every shard's owner after `lab up`.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the node's dashboard may take to answer once the flood stops
/// (its held connections time out within the header timeout).
const AFTER_FLOOD_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `LimitNOFILE` of the unit (its soft value), or systemd's default.
fn unit_nofile() -> u64 {
    let unit = std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("{UNIT}: {e}"));
    let Some(value) = unit
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("LimitNOFILE="))
        .next_back()
    else {
        return SYSTEMD_DEFAULT_NOFILE;
    };
    let soft = value.split(':').next().unwrap_or(value).trim();
    soft.parse()
        .unwrap_or_else(|_| panic!("LimitNOFILE={value} in {UNIT} is not a number of files"))
}

/// (soft, hard) "Max open files" of a process.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok().or((w == "unlimited").then_some(u64::MAX)))
        .collect();
    (numbers[0], numbers[1])
}

fn set_nofile(pid: u32, n: u64) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:{n}")])
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "prlimit on {pid}: {}", text(&out.stderr));
    assert_eq!(nofile_of(pid), (n, n), "the limit of {pid} did not take");
}

fn open_files(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

/// Sum of the samples of `name` whose labels contain every one of `with`
/// and none of `without`.
fn sample_sum(metrics: &str, name: &str, with: &[&str], without: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| with.iter().all(|w| l.contains(w)) && !without.iter().any(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Default)]
struct FloodStats {
    connected: AtomicU64,
    connect_failed: AtomicU64,
    closed_by_agent: AtomicU64,
}

/// Holds one idle connection until the end, opening it again whenever the
/// agent closes it.
async fn hold_idle(addr: std::net::SocketAddr, end: tokio::time::Instant, stats: Arc<FloodStats>) {
    while tokio::time::Instant::now() < end {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(mut stream)) => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 256];
                match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
                    Err(_) => return,
                    Ok(_) => stats.closed_by_agent.fetch_add(1, Ordering::Relaxed),
                };
            }
            _ => {
                stats.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep_until(end.min(tokio::time::Instant::now() + RECONNECT_DELAY)).await;
    }
}

/// Sends a request header one line per interval, never finishing it.
async fn hold_slow_header(addr: std::net::SocketAddr, end: tokio::time::Instant, stats: Arc<FloodStats>) {
    while tokio::time::Instant::now() < end {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
                let (mut reader, mut writer) = stream.into_split();
                let trickle = async {
                    if writer
                        .write_all(b"GET /metrics HTTP/1.1\r\nHost: flood\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        tokio::time::sleep(SLOW_HEADER_LINE_INTERVAL).await;
                        if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            return;
                        }
                    }
                };
                let mut buf = [0u8; 256];
                tokio::select! {
                    () = tokio::time::sleep_until(end) => return,
                    _ = reader.read(&mut buf) => {}
                    () = trickle => {}
                }
                stats.closed_by_agent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep_until(end.min(tokio::time::Instant::now() + RECONNECT_DELAY)).await;
    }
}

/// Floods `addr` for [`FLOOD`] on a runtime of its own.
fn flood(addr: std::net::SocketAddr, stats: Arc<FloodStats>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let end = tokio::time::Instant::now() + FLOOD;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..IDLE_CONNECTIONS {
                tasks.spawn(hold_idle(addr, end, stats.clone()));
            }
            for _ in 0..SLOW_HEADER_CONNECTIONS {
                tasks.spawn(hold_slow_header(addr, end, stats.clone()));
            }
            while tasks.join_next().await.is_some() {}
        });
    })
}

/// (shard id, owner, epoch) of every shard in a fleet view.
fn shard_epochs(fleet: &Value) -> BTreeMap<String, (String, u64)> {
    fleet["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            (
                s["id"].to_string(),
                (
                    s["owner"].as_str().unwrap_or("-").to_string(),
                    s["epoch"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn node_in<'a>(fleet: &'a Value, instance: &str) -> &'a Value {
    fleet["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == instance)
        .unwrap_or_else(|| panic!("{instance} is not in the fleet view"))
}

#[test]
fn the_dashboard_cannot_exhaust_the_agents_files() {
    let tools_ok = is_root()
        && netns_works()
        && ["prlimit", "curl"].iter().all(|tool| {
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !tools_ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{TEST} needs root, `ip netns`, prlimit and curl, and CI is set"
        );
        eprintln!("\n*** SKIPPED {TEST}: needs root, `ip netns`, prlimit and curl ***\n");
        return;
    }
    assert_agent_built();
    let limit = unit_nofile();
    // The test holds every connection itself.
    let own_need = (IDLE_CONNECTIONS + SLOW_HEADER_CONNECTIONS) as u64 + OWN_SPARE_FILES;
    if nofile_of(std::process::id()).0 < own_need {
        set_nofile(std::process::id(), own_need);
    }

    let prefix = format!("f{}", std::process::id() % 100_000);
    let _teardown = Teardown(prefix.clone());
    let up = lab(&prefix, &["up", "--nodes", "3", "--vips", "6", "--route-tables", "1"]);
    assert!(up.status.success(), "lab up failed");
    let state = status_json(&prefix);
    let nodes = state["nodes"].as_array().expect("nodes");
    let (target, peer) = (&nodes[0], &nodes[1]);
    let instance = target["instance_id"].as_str().unwrap().to_string();
    let agent_pid = u32::try_from(target["agent"]["pid"].as_u64().unwrap()).unwrap();
    let agent_log = target["agent"]["log"].as_str().unwrap().to_string();
    let target_url = target["dashboard_url"].as_str().unwrap().to_string();
    let peer_fleet_url = format!("{}api/v1/fleet", peer["dashboard_url"].as_str().unwrap());
    let dashboard = target_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the dashboard URL names an address and port");

    set_nofile(agent_pid, limit);
    let files_before = open_files(agent_pid).expect("the agent's descriptors");
    let metrics_before = get_text(&format!("{target_url}metrics")).expect("the node's metrics before the flood");
    // The peer re-reads shards held by others now and then: wait until its
    // view has every shard owned and settled.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let fleet_before = loop {
        let fleet = get_json(&peer_fleet_url);
        let settled = fleet.as_ref().is_some_and(|f| {
            let t = &f["totals"];
            t["shards_owned"] == t["shards"] && t["shards_moving"] == 0 && t["nodes_by_state"]["active"] == 3
        });
        if settled {
            break fleet.unwrap();
        }
        assert!(Instant::now() < deadline, "the peer's view did not settle: {fleet:?}");
        std::thread::sleep(POLL);
    };
    let epochs_before = shard_epochs(&fleet_before);
    let hb_before = node_in(&fleet_before, &instance)["heartbeat"].as_u64().unwrap();
    let ttl_ms = fleet_before["lease"]["lease_ttl_ms"].as_u64().unwrap();
    let heartbeat_ms = fleet_before["lease"]["heartbeat_interval_ms"].as_u64().unwrap();
    assert!(
        epochs_before.values().filter(|(owner, _)| *owner == instance).count() >= 1,
        "the flooded node holds shards: {epochs_before:?}"
    );

    let stats = Arc::new(FloodStats::default());
    let started = Instant::now();
    let flooding = flood(dashboard, stats.clone());
    let mut polls = 0u32;
    let mut answered = 0u32;
    let mut most_files = files_before;
    let mut problems = Vec::new();
    let mut hb_last = hb_before;
    while !flooding.is_finished() {
        let next = Instant::now() + POLL;
        polls += 1;
        most_files = most_files.max(open_files(agent_pid).unwrap_or(0));
        let at = started.elapsed().as_secs_f64();
        if let Some(fleet) = get_json(&peer_fleet_url) {
            answered += 1;
            let node = node_in(&fleet, &instance);
            let age = node["heartbeat_age_ms"].as_u64().unwrap_or(u64::MAX);
            if node["gone"] != false || node["state"] != "active" || age >= ttl_ms {
                problems.push(format!("{at:.1} s: the peer sees the node as {node}"));
            }
            let hb = node["heartbeat"].as_u64().unwrap();
            if hb < hb_last {
                problems.push(format!("{at:.1} s: heartbeat counter went back from {hb_last} to {hb}"));
            }
            hb_last = hb_last.max(hb);
            let epochs = shard_epochs(&fleet);
            if epochs != epochs_before {
                problems.push(format!("{at:.1} s: shards moved: {epochs:?}"));
            }
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    flooding.join().expect("the flood thread");
    let flood_secs = started.elapsed().as_secs_f64();

    // The flood's connections are closed: the dashboard answers again.
    let deadline = Instant::now() + AFTER_FLOOD_ANSWER_TIMEOUT;
    let metrics_after = loop {
        if let Some(text) = get_text(&format!("{target_url}metrics")) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the node's dashboard does not answer after the flood"
        );
        std::thread::sleep(POLL);
    };
    let fleet_after = get_json(&peer_fleet_url).expect("the peer's fleet view after the flood");
    let own_view_after = get_json(&format!("{target_url}api/v1/fleet")).expect("the node's own view");
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    let delta = |name: &str, with: &[&str], without: &[&str]| {
        sample_sum(&metrics_after, name, with, without) - sample_sum(&metrics_before, name, with, without)
    };
    let rejected = delta("vipfleet_dashboard_connections_rejected_total", &[], &[]);
    let timed_out = delta("vipfleet_dashboard_connections_timed_out_total", &[], &[]);
    let heartbeats_failed = delta(
        "vipfleet_store_calls_total",
        &[r#"op="heartbeat""#],
        &[r#"outcome="ok""#],
    );
    let lapses = delta("vipfleet_own_lease_lapses_total", &[], &[]);
    let hb_landed = hb_last - hb_before;
    let hb_expected = FLOOD.as_millis() as f64 / heartbeat_ms as f64;
    let connected = stats.connected.load(Ordering::Relaxed);
    // Past the harness's capture, so a passing run reports it too.
    let _ = writeln!(
        std::io::stderr(),
        "{TEST}: agent under LimitNOFILE={limit}; {connected} connections opened over {flood_secs:.1} s \
         ({} failed to connect, {} closed by the agent); agent files {files_before} before, at most {most_files} \
         during; dashboard rejected {rejected}, timed out {timed_out}; {answered}/{polls} polls answered; \
         heartbeat counter +{hb_landed} (expected about {hb_expected:.0}); failed heartbeats {heartbeats_failed}; \
         lease lapses {lapses}",
        stats.connect_failed.load(Ordering::Relaxed),
        stats.closed_by_agent.load(Ordering::Relaxed),
    );

    // The agent kept its lease and its shards.
    assert!(
        problems.is_empty(),
        "{} problems during the flood, the first {PROBLEMS_SHOWN}:\n{}",
        problems.len(),
        problems[..problems.len().min(PROBLEMS_SHOWN)].join("\n")
    );
    assert!(
        f64::from(answered) >= MIN_POLLS_ANSWERED * f64::from(polls)
            && polls as f64 >= 0.5 * FLOOD.as_secs_f64() / POLL.as_secs_f64(),
        "the fleet was not watched at a steady pace: {answered} of {polls} polls answered"
    );
    assert!(
        hb_landed as f64 >= MIN_HEARTBEATS_LANDED * hb_expected,
        "only {hb_landed} heartbeats landed in {flood_secs:.1} s (about {hb_expected:.0} expected)"
    );
    assert_eq!(heartbeats_failed, 0.0, "heartbeats failed during the flood");
    assert_eq!(lapses, 0.0, "the node's own lease lapsed");
    assert_eq!(sample_sum(&metrics_after, "vipfleet_lease_valid", &[], &[]), 1.0);
    assert_eq!(shard_epochs(&fleet_after), epochs_before, "shards moved (peer's view)");
    assert_eq!(
        shard_epochs(&own_view_after),
        epochs_before,
        "shards moved (node's own view)"
    );
    let out_of_files = log.lines().filter(|l| l.contains("Too many open files")).count();
    assert_eq!(out_of_files, 0, "the agent ran out of files ({agent_log})");
    assert!(
        std::path::Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the agent died"
    );

    // And the flood was real: it filled the dashboard, which stayed bounded.
    assert!(
        connected >= IDLE_CONNECTIONS as u64,
        "only {connected} connections opened"
    );
    assert!(rejected > 0.0, "the connection limit was never reached");
    assert!(
        timed_out > 0.0,
        "no slow or idle connection was timed out (header timeout {HEADER_READ_TIMEOUT:?})"
    );
    assert!(
        most_files >= files_before + MAX_CONNECTIONS - AGENT_SPARE_FILES,
        "the agent never held the dashboard's {MAX_CONNECTIONS} connections: at most {most_files} files"
    );
    assert!(
        most_files <= files_before + MAX_CONNECTIONS + AGENT_SPARE_FILES,
        "the agent held {most_files} files ({files_before} before the flood, limit {MAX_CONNECTIONS} connections)"
    );
    assert!(lab(&prefix, &["down"]).status.success(), "lab down failed");
}
