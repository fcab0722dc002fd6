//! The lab end to end, through the `vipfleet-loadtest` binary: `lab up`
//! brings up 3 nodes, 6 VIPs and 2 route tables; every VIP answers HTTP 200
//! from every client namespace, through its router and the node that owns
//! it; `lab status --json` describes it; the dashboard's drain endpoints
//! want the token, and no log of the lab holds the token, a wrong one tried,
//! or the agents' AWS credentials; `lab down` leaves no namespace,
//! interface or process behind, also when the state file and pidfiles are
//! gone (a crashed harness).
//!
//! Needs root and `ip netns`; skips loudly without them. It builds the
//! agent binary first (the lab runs the one next to `vipfleet-loadtest`),
//! installs haproxy and the moto venv on first use, and only touches the
//! lab's own namespaces and the host's lab link.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{assert_agent_built, get_json, is_root, lab, netns_works, status_json, text, Teardown, BIN};

/// How long the lab's routers may trail moto's routes (the mirror polls).
const ROUTER_MIRROR_LAG: std::time::Duration = std::time::Duration::from_secs(5);
/// The lab's process marker (see `lab::procs::MARKER_VAR`).
const MARKER_VAR: &str = "VIPFLEET_LAB_MEMBER";

/// Pids whose environment carries this lab's marker.
fn marked_pids(prefix: &str) -> Vec<u32> {
    let wanted = format!("{MARKER_VAR}={prefix}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == wanted.as_bytes()))
        })
        .collect()
}

/// Everything of lab `prefix` that still exists, by every means of looking.
fn leftovers(prefix: &str, dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let dash = format!("{prefix}-");
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    found.extend(
        text(&ns.stdout)
            .lines()
            .filter(|l| l.starts_with(&dash))
            .map(|l| format!("namespace {l}")),
    );
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    found.extend(
        text(&links.stdout)
            .lines()
            .filter_map(|l| {
                l.split(':')
                    .nth(1)
                    .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            })
            .filter(|n| n.starts_with(&dash))
            .map(|n| format!("link {n}")),
    );
    found.extend(marked_pids(prefix).into_iter().map(|p| format!("marked process {p}")));
    let pgrep = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    found.extend(
        text(&pgrep.stdout)
            .lines()
            .map(|p| format!("process {p} naming {}", dir.display())),
    );
    if let Ok(pids) = std::fs::read_dir(dir.join("pids")) {
        found.extend(pids.flatten().map(|p| format!("pidfile {}", p.path().display())));
    }
    found
}

/// `GET http://<vip>/` from a client namespace: (status, the answering node, the VIP haproxy saw).
fn get_from(client_ns: &str, vip: &str) -> (String, String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "curl",
            "-sS",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-D",
            "-",
        ])
        .args(["-w", "%{http_code}", &format!("http://{vip}/")])
        .output()
        .expect("curl");
    let all = text(&out.stdout);
    let header = |name: &str| {
        all.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let status = all.lines().last().unwrap_or_default().trim().to_string();
    (status, header("x-vipfleet-node"), header("x-vipfleet-vip"))
}

/// `POST url` with `Authorization: Bearer <token>` from the host namespace:
/// the status code.
fn post_with_token(url: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .expect("curl");
    text(&out.stdout)
}

/// Files under the lab directory `dir` that contain any of `secrets`, each
/// with the index of the secret: every log and record of the lab but
/// `conf/` (the configs and token files, where secrets belong) and
/// `state.json` (the lab's record of what it started, environments
/// included).
fn files_holding(dir: &Path, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if path == dir.join("conf") || path == dir.join("state.json") {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                scanned += 1;
                for (i, secret) in secrets.iter().enumerate() {
                    if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                        found.push(format!("{} holds secret #{i}", path.display()));
                    }
                }
            }
        }
    }
    assert!(scanned >= 5, "only {scanned} files under {} to look at", dir.display());
    found
}

#[test]
fn lab_serves_every_vip_and_down_leaves_nothing() {
    if !is_root() || !netns_works() {
        eprintln!("\n*** SKIPPED lab_serves_every_vip_and_down_leaves_nothing: needs root and `ip netns` ***\n");
        return;
    }
    assert_agent_built();
    let prefix = format!("t{}", std::process::id() % 100_000);
    let dir = PathBuf::from(format!("/var/tmp/vipfleet-lab-{prefix}"));
    let _teardown = Teardown(prefix.clone());

    let started = Instant::now();
    let up = lab(&prefix, &["up", "--nodes", "3", "--vips", "6", "--route-tables", "2"]);
    let up_secs = started.elapsed().as_secs_f64();
    assert!(up.status.success(), "lab up failed:\n{}", text(&up.stderr));

    // A second lab with the same prefix is refused, and says why.
    let again = lab(&prefix, &["up", "--nodes", "1", "--vips", "1", "--route-tables", "1"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("exists"), "{}", text(&again.stderr));

    let state = status_json(&prefix);
    assert_eq!(state["phase"], "up");
    let nodes = state["nodes"].as_array().expect("nodes");
    let vips = state["vips"].as_array().expect("vips");
    let tables = state["route_tables"].as_array().expect("route_tables");
    assert_eq!((nodes.len(), vips.len(), tables.len()), (3, 6, 2));
    for node in nodes {
        assert!(node["instance_id"].as_str().unwrap().starts_with("i-"), "{node}");
        assert!(node["eni"].as_str().unwrap().starts_with("eni-"), "{node}");
        assert!(node["dashboard_url"]
            .as_str()
            .unwrap()
            .contains(node["ip"].as_str().unwrap()));
        assert_eq!(node["agent"]["alive"], true, "{}", node["name"]);
        assert_eq!(node["haproxy"]["alive"], true, "{}", node["name"]);
    }
    assert_ne!(
        state["moto"]["endpoint"], state["moto_dynamodb"]["endpoint"],
        "DynamoDB has a moto of its own"
    );
    for proc in [
        &state["moto"]["proc"],
        &state["moto_dynamodb"]["proc"],
        &state["imds"]["proc"],
        &state["mirror"]["proc"],
    ] {
        assert_eq!(proc["alive"], true, "{}", proc["name"]);
    }
    assert!(state["imds"]["control_token"].as_str().is_some_and(|t| t.len() >= 32));
    let node_names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();

    // Every VIP from every client: through the router, to a node's haproxy,
    // to a backend, and back the same way.
    for table in tables {
        let client = table["client_ns"].as_str().unwrap();
        for vip in vips {
            let vip = vip.as_str().unwrap().trim_end_matches("/32");
            let (status, node, seen_vip) = get_from(client, vip);
            assert_eq!(status, "200", "GET http://{vip}/ from {client}");
            assert!(node_names.contains(&node.as_str()), "answered by {node:?}");
            assert_eq!(seen_vip, vip, "haproxy saw another destination");
        }
    }

    // The dashboard's mutating endpoints refuse a near miss of the token and
    // take the token itself (undrain: a no-op on an active node).
    let token = std::fs::read_to_string(dir.join("conf/dashboard.token"))
        .expect("the lab's dashboard token")
        .trim()
        .to_string();
    let near_miss = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { '1' } else { '0' }
    );
    let undrain = format!("{}api/v1/undrain", nodes[0]["dashboard_url"].as_str().unwrap());
    assert_eq!(post_with_token(&undrain, &near_miss), "401", "a wrong token");
    assert_eq!(post_with_token(&undrain, &token), "202", "the token");
    // The fleet's peer key (written by every `lab up`, peers on or off).
    let peer_key = std::fs::read_to_string(dir.join("conf/peer.key"))
        .expect("the lab's peer key")
        .trim()
        .to_string();
    assert_eq!(peer_key.len(), 64, "256 bits, hex");
    let mut secrets = vec![token, near_miss, peer_key];
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        let value = nodes[0]["agent"]["env"][var].as_str().unwrap_or_default();
        assert!(value.len() >= 16, "the agents' {var} is a distinctive fake: {value:?}");
        secrets.push(value.to_string());
    }

    let started = Instant::now();
    let down = lab(&prefix, &["down"]);
    let down_secs = started.elapsed().as_secs_f64();
    assert!(down.status.success(), "lab down failed");
    assert_eq!(leftovers(&prefix, &dir), Vec::<String>::new(), "after lab down");
    // Every process has exited and flushed: no log of the lab holds a secret.
    let agent_log = std::fs::read_to_string(dir.join("logs/n0-agent.log")).expect("n0's agent log");
    for logged in [
        "refused a request without the right bearer token",
        "dashboard: accepted",
    ] {
        assert!(agent_log.contains(logged), "n0's agent log lacks {logged:?}");
    }
    assert_eq!(
        files_holding(&dir, &secrets),
        Vec::<String>::new(),
        "logs that hold a secret"
    );
    assert!(!lab(&prefix, &["status"]).status.success(), "status of a removed lab");

    // A crashed harness: the state file and pidfiles are gone, the lab runs.
    let small = lab(&prefix, &["up", "--nodes", "2", "--vips", "2", "--route-tables", "1"]);
    assert!(small.status.success(), "second lab up failed");
    std::fs::remove_file(dir.join("state.json")).expect("state.json");
    std::fs::remove_dir_all(dir.join("pids")).expect("pids");
    assert!(!marked_pids(&prefix).is_empty(), "the second lab's processes run");
    let down = lab(&prefix, &["down"]);
    assert!(down.status.success(), "lab down without state failed");
    assert_eq!(
        leftovers(&prefix, &dir),
        Vec::<String>::new(),
        "after lab down without state"
    );
    assert!(
        lab(&prefix, &["down", "--purge"]).status.success(),
        "down is idempotent"
    );
    assert!(!dir.exists(), "--purge removes the lab directory");

    eprintln!("lab up (3 nodes, 6 VIPs, 2 route tables): {up_secs:.1} s; lab down: {down_secs:.1} s");
}

#[test]
fn lab_refuses_without_root() {
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("\n*** SKIPPED lab_refuses_without_root: no setpriv to drop privileges ***\n");
        return;
    };
    if !is_root() {
        let out = Command::new(BIN)
            .args(["lab", "--prefix", "tnr", "up"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("root"), "{}", text(&out.stderr));
        return;
    }
    let out = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "lab",
            "--prefix",
            "tnr",
            "up",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("needs root"), "{}", text(&out.stderr));
}

/// Size and mtime of every file under `dir`: what a run that "changes
/// nothing" must leave as it was.
fn file_stamps(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut stamps = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                stamps.insert(entry.path(), (meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    stamps
}

/// Issue 6: the node bootstrap, run for real as user data would run it (in a
/// chroot in a new node's namespace, installing the release tarball that
/// `infra/release/build.sh --profile dev` made of the build's agent), leaves
/// a node that joins the fleet and serves its share of the VIPs; running it
/// again changes no file and restarts nothing.
#[test]
fn a_bootstrapped_node_joins_the_fleet_and_a_second_run_changes_nothing() {
    let test = "a_bootstrapped_node_joins_the_fleet_and_a_second_run_changes_nothing";
    if !is_root() || !netns_works() {
        eprintln!("\n*** SKIPPED {test}: needs root and `ip netns` ***\n");
        return;
    }
    assert_agent_built();
    let prefix = format!("b{}", std::process::id() % 100_000);
    let dir = PathBuf::from(format!("/var/tmp/vipfleet-lab-{prefix}"));
    let _teardown = Teardown(prefix.clone());
    let up = lab(&prefix, &["up", "--nodes", "2", "--vips", "6", "--route-tables", "2"]);
    assert!(up.status.success(), "lab up failed");

    let started = Instant::now();
    let added = lab(&prefix, &["add-node", "--bootstrap"]);
    let bootstrap_secs = started.elapsed().as_secs_f64();
    assert!(added.status.success(), "add-node --bootstrap failed");
    let first_run = text(&added.stderr);
    for step in [
        "step 3/7: agent (tarball)",
        "fetching file:///srv/vipfleet/release/vipfleet-agent-",
        "started haproxy",
        "started vipfleet-agent",
        "done: ",
    ] {
        assert!(first_run.contains(step), "the first bootstrap did not say {step:?}");
    }

    let state = status_json(&prefix);
    let node = state["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "n2"))
        .expect("node n2 in the state")
        .clone();
    assert_eq!(node["agent"]["alive"], true, "the bootstrapped agent runs");
    assert_eq!(node["haproxy"]["alive"], true, "the bootstrapped haproxy runs");
    let instance = node["instance_id"].as_str().unwrap().to_string();
    let ip = node["ip"].as_str().unwrap().to_string();

    // Its own dashboard shows the whole fleet converged, with its share.
    let fleet_url = format!("{}api/v1/fleet", node["dashboard_url"].as_str().unwrap());
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let fleet = loop {
        let fleet = get_json(&fleet_url);
        let converged = fleet.as_ref().is_some_and(|f| {
            let t = &f["totals"];
            t["nodes_by_state"]["active"] == 3
                && t["shards_owned"] == 6
                && t["shards_moving"] == 0
                && t["route_problems"] == 0
                && f["observer"]["shards_held"] == 2
                // Its routes read back and found pointing at it: a shard
                // handed to it is checked, not rewritten blindly.
                && f["shards"].as_array().is_some_and(|shards| {
                    shards
                        .iter()
                        .filter(|s| s["held_here"] == true)
                        .all(|s| s["routes"].as_array().is_some_and(|r| r.iter().all(|r| r["status"] == "ok")))
                })
        });
        if converged {
            break fleet.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the fleet did not converge with the bootstrapped node: {fleet:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let joined_secs = started.elapsed().as_secs_f64();

    // Its VIPs answer from every client, routed to it.
    let own_vips: Vec<String> = fleet["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["owner"] == instance.as_str())
        .map(|s| s["id"].as_str().unwrap().trim_end_matches("/32").to_string())
        .collect();
    assert_eq!(own_vips.len(), 2, "{fleet}");
    for table in state["route_tables"].as_array().unwrap() {
        let (router, client) = (
            table["router_ns"].as_str().unwrap(),
            table["client_ns"].as_str().unwrap(),
        );
        for vip in &own_vips {
            // The router mirrors moto's routes on a poll: give it a moment.
            let mirrored_by = Instant::now() + ROUTER_MIRROR_LAG;
            loop {
                let route = Command::new("ip")
                    .args(["-n", router, "route", "get", vip])
                    .output()
                    .expect("ip route get");
                if text(&route.stdout).contains(&format!("via {ip} ")) {
                    break;
                }
                assert!(
                    Instant::now() < mirrored_by,
                    "{router} routes {vip} elsewhere: {}",
                    text(&route.stdout)
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let (status, _, _) = get_from(client, vip);
            assert_eq!(status, "200", "GET http://{vip}/ from {client}");
        }
    }

    // The second run: same inputs, nothing written, nothing restarted.
    let node_dir = dir.join("nodes/n2");
    let watched = [node_dir.join("root/etc"), node_dir.join("root-usr-local")];
    let before: Vec<_> = watched.iter().map(|d| file_stamps(d)).collect();
    assert!(
        before[1].keys().any(|p| p.ends_with("bin/vipfleet-agent")),
        "agent installed"
    );
    // The release holds the build's own agent, and the bootstrap installed it.
    let release = node_dir.join("srv/release");
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).expect("the release's SHA256SUMS");
    assert!(sums.contains("-dev-") && sums.contains(".tar.gz"), "{sums}");
    let built = std::fs::read(Path::new(BIN).with_file_name("vipfleet-agent")).expect("the built agent");
    let installed = std::fs::read(node_dir.join("root-usr-local/bin/vipfleet-agent")).expect("the installed agent");
    assert!(built == installed, "the node runs another agent than the build's");
    let again = lab(&prefix, &["bootstrap", "n2"]);
    assert!(again.status.success(), "the second bootstrap failed");
    let second_run = text(&again.stdout);
    eprintln!("{second_run}");
    assert!(
        second_run.contains("done: no changes"),
        "the second run changed something"
    );
    assert!(!second_run.contains("wrote:"), "the second run wrote a file");
    let after: Vec<_> = watched.iter().map(|d| file_stamps(d)).collect();
    assert_eq!(before, after, "files changed under {}", node_dir.display());
    let state = status_json(&prefix);
    let node_after = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n2")
        .unwrap();
    for proc in ["agent", "haproxy"] {
        assert_eq!(node_after[proc]["pid"], node[proc]["pid"], "{proc} was restarted");
        assert_eq!(node_after[proc]["alive"], true, "{proc} runs");
    }

    assert!(lab(&prefix, &["down"]).status.success(), "lab down failed");
    assert_eq!(leftovers(&prefix, &dir), Vec::<String>::new(), "after lab down");
    // Past the harness's capture, so a passing run reports it too.
    let _ = writeln!(
        std::io::stderr(),
        "bootstrap: first run {bootstrap_secs:.1} s, fleet converged with the new node after {joined_secs:.1} s"
    );
}
