//! Issue 5's acceptance tests of the dashboard from outside: a small fleet
//! of real `vipfleet-agent` processes against moto, each serving its
//! dashboard on a loopback port the kernel picked.
//!
//! - The browser test loads one agent's `/` in headless Chromium and checks
//!   the rendered DOM against the lease table read from moto: one node row
//!   per agent, one shard row per shard, each with the owner moto has. It
//!   saves a screenshot in the test's work directory.
//! - The schemathesis test runs the property-based HTTP tester against
//!   `services/agent/openapi.yaml` and two live agents, one with a token
//!   (drain and undrain answer 401 without it) and one without (they answer
//!   404): no 5xx, no response outside the schema. It never has the token,
//!   so it cannot drain anything; it has a fleet of its own all the same.
//!
//! Chromium and schemathesis are external programs that can hang: every run
//! has a timeout and is killed with its helpers when it passes. Without
//! moto the tests skip; without Chromium or schemathesis they skip too,
//! except in CI (`CI` set), where `tests/run` installs both, so a missing
//! one is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vipfleet_tests::fleet::{counts, Fleet, Snapshot};
use vipfleet_tests::{moto_endpoint, run_group_to_end, say, Agent, Outcome, Workdir};

const AGENTS: usize = 3;
const VIPS: u32 = 12;
const ROUTE_TABLES: usize = 2;
/// Claims, rebalancing as the later agents join, and 24 route writes.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent binds its dashboard once its start-up checks against moto
/// (route tables, VPC) have passed.
const DASHBOARD_BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// The observed agent's page trails moto by a node scan or two; this is
/// how long the test waits for the page and moto to agree.
const PAGE_AGREES_TIMEOUT: Duration = Duration::from_secs(15);
const PAGE_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// One Chromium run takes about a second here; a hung one is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);
const SCREENSHOT_WIDTH: u32 = 1280;
const SCREENSHOT_HEIGHT: u32 = 1600;
/// A blank page at 1280x1600 is about 10 KB of PNG; the dashboard's
/// tables make it several times that.
const SCREENSHOT_MIN_BYTES: u64 = 30_000;
/// The schemathesis test's own fleet: a token agent and a tokenless one.
const SCHEMATHESIS_AGENTS: usize = 2;
const SCHEMATHESIS_VIPS: u32 = 4;
const SCHEMATHESIS_ROUTE_TABLES: usize = 1;
/// The venv `tests/setup/venv.sh` makes when `VIPFLEET_VENV` is not set.
const DEFAULT_VENV: &str = "/var/tmp/vipfleet-venv";
/// Test cases per operation and phase: enough to try every status code
/// the spec lists, bad headers and other methods, in a few seconds.
const SCHEMATHESIS_MAX_EXAMPLES: &str = "40";
/// Per request; the dashboard answers from memory in milliseconds.
const SCHEMATHESIS_REQUEST_TIMEOUT_SECONDS: &str = "5";
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(120);
/// The length of the schemathesis fleet's dashboard token, as the infra
/// bootstrap makes them.
const TOKEN_HEX_DIGITS: usize = 64;

/// Whether a missing tool fails the test instead of skipping it.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `Some(path)`, or `None` after saying loudly that `test` skips; panics
/// in CI, where `tests/run` has installed the tool.
fn tool(test: &str, what: &str, found: Option<PathBuf>, how: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    assert!(!in_ci(), "{test}: {what} is missing in CI; {how}");
    say(&format!("SKIPPED (no {what}): {test}; {how}"));
    None
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the repository")
        .to_path_buf()
}

/// Starts every node of `fleet`, waits until they share the VIPs with
/// routes, and returns the agents, their dashboards and moto's view.
async fn start_fleet(fleet: &Fleet, work: &Workdir) -> (Vec<Agent>, Vec<SocketAddr>, Snapshot) {
    let started = Instant::now();
    let mut agents: Vec<Agent> = fleet.nodes.iter().map(|n| fleet.start(n, work)).collect();
    let dashboards: Vec<SocketAddr> = agents
        .iter_mut()
        .map(|a| a.dashboard_addr(DASHBOARD_BIND_TIMEOUT))
        .collect();
    let snap = fleet.wait_converged(&mut agents, CONVERGE_TIMEOUT).await;
    say(&format!(
        "MEASURED start: converged in {:?} ({:?}); dashboards {dashboards:?}",
        started.elapsed(),
        counts(&snap)
    ));
    (agents, dashboards, snap)
}

/// Headless Chromium with a profile of its own under `work`: no sandbox
/// (tests run as root in CI), no GPU, no calls home.
fn chromium_command(chromium: &Path, work: &Workdir, run: &str) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        // The machine has no network: without these Chromium keeps
        // trying to reach its update and sync hosts.
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!(
        "--user-data-dir={}",
        work.path().join(format!("chromium-{run}")).display()
    ));
    cmd
}

fn chromium_run(cmd: Command, what: &str) -> Outcome {
    let outcome = run_group_to_end(cmd, CHROMIUM_TIMEOUT);
    assert!(
        outcome.code == Some(0) && !outcome.timed_out,
        "chromium {what} failed\n{}",
        outcome.describe()
    );
    outcome
}

/// One `<tr>` of the rendered page.
struct Row {
    /// Its attributes, as Chromium serializes them (double-quoted,
    /// `&quot;` `&amp;` `&lt;` `&gt;` escaped).
    attrs: BTreeMap<String, String>,
    /// The text of each cell, markup stripped.
    cells: Vec<String>,
}

impl Row {
    fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map_or("", String::as_str)
    }
}

/// Every `<tr>` in `dom` that has the attribute `attr`.
fn rows_with(dom: &str, attr: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<tr") {
        rest = &rest[at + 3..];
        let Some(end) = rest.find('>') else { break };
        let attrs = attributes(&rest[..end]);
        rest = &rest[end + 1..];
        let inner = &rest[..rest.find("</tr>").unwrap_or(rest.len())];
        if attrs.contains_key(attr) {
            let cells = inner.split("<td").skip(1).map(cell_text).collect();
            rows.push(Row { attrs, cells });
        }
    }
    rows
}

/// The text of a cell from just after its `<td`: tags dropped.
fn cell_text(cell: &str) -> String {
    let cell = cell.split("</td>").next().unwrap_or("");
    let mut text = String::new();
    let mut in_tag = true; // the rest of the `<td …>` tag
    for c in cell.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    unescape(&text)
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(char::is_whitespace).next().unwrap_or("").to_string();
        let value_start = &rest[eq + 2..];
        let Some(close) = value_start.find('"') else { break };
        let value = unescape(&value_start[..close]);
        attrs.insert(name, value);
        rest = &value_start[close + 1..];
    }
    attrs
}

/// What differs between the rendered page and moto's lease table, if
/// anything: the node rows must be exactly the fleet's agents (all
/// active), the shard rows exactly moto's shards with moto's owners.
fn page_disagrees(dom: &str, fleet: &Fleet, observer: &str, snap: &Snapshot) -> Option<String> {
    let mut problems = Vec::new();
    if !dom.contains(&format!("<span id=\"observer\">{observer}</span>")) {
        problems.push(format!("the page does not name {observer} as its observer"));
    }
    let node_rows = rows_with(dom, "data-node");
    let shown: Vec<&str> = node_rows.iter().map(|r| r.attr("data-node")).collect();
    let expected: BTreeSet<&str> = fleet.nodes.iter().map(|n| n.instance_id.as_str()).collect();
    if shown.len() != expected.len() || shown.iter().copied().collect::<BTreeSet<_>>() != expected {
        problems.push(format!("node rows {shown:?}, agents {expected:?}"));
    }
    for row in &node_rows {
        let node = row.attr("data-node");
        // What a person reads: the id in the first cell, the state third.
        let (first, state) = (row.cells.first(), row.cells.get(2));
        if first.map(String::as_str) != Some(node) || state.map(String::as_str) != Some("active") {
            problems.push(format!(
                "node row {node} (data-state {:?}) reads {:?}",
                row.attr("data-state"),
                row.cells
            ));
        }
    }
    let shard_rows = rows_with(dom, "data-shard");
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for row in &shard_rows {
        let id = row.attr("data-shard").to_string();
        if id.is_empty() {
            problems.push(format!("shard row without data-shard: {:?}", row.cells));
            continue;
        }
        let owner = row.attr("data-owner").to_string();
        // The shard's VIP first, the owner's name in the second cell.
        if row.cells.first() != Some(&id) || row.cells.get(1) != Some(&owner) {
            problems.push(format!("shard row {id} (data-owner {owner:?}) reads {:?}", row.cells));
        }
        if shown.insert(id.clone(), owner).is_some() {
            problems.push(format!("shard {id} has two rows"));
        }
    }
    let in_moto: BTreeMap<String, String> = snap
        .shards
        .iter()
        .map(|(id, s)| (id.clone(), s.owner.clone().unwrap_or_default()))
        .collect();
    if shown != in_moto {
        let differing: Vec<String> = in_moto
            .iter()
            .filter(|(id, owner)| shown.get(id.as_str()) != Some(owner))
            .map(|(id, owner)| format!("shard {id}: page {:?}, moto {owner:?}", shown.get(id)))
            .chain(
                shown
                    .keys()
                    .filter(|id| !in_moto.contains_key(id.as_str()))
                    .map(|id| format!("shard {id} is on the page, not in moto")),
            )
            .collect();
        problems.push(format!(
            "{} shard rows for {} shards in moto: {}",
            shard_rows.len(),
            in_moto.len(),
            differing.join("; ")
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn owners(snap: &Snapshot) -> BTreeMap<String, Option<String>> {
    snap.shards
        .iter()
        .map(|(id, s)| (id.clone(), s.owner.clone()))
        .collect()
}

/// PNG signature, then the IHDR chunk: width and height, big-endian.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((be(16), be(20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_fleet_as_the_lease_table_has_it() {
    const TEST: &str = "chromium_renders_the_fleet_as_the_lease_table_has_it";
    let Some(endpoint) = moto_endpoint(TEST) else {
        return;
    };
    let Some(chromium) = tool(
        TEST,
        "chromium",
        on_path("chromium"),
        "install the Debian package chromium (tests/setup/packages.sh does)",
    ) else {
        return;
    };
    let began = Instant::now();
    let work = Workdir::new("dashboard-browser");
    let fleet = Fleet::create(&endpoint, "dashboard-browser", &work, AGENTS, VIPS, ROUTE_TABLES).await;
    let (mut agents, dashboards, _) = start_fleet(&fleet, &work).await;
    let observer = &fleet.nodes[0].instance_id;
    let url = format!("http://{}/", dashboards[0]);

    // The page must agree with moto read just before and just after it,
    // with no move in between: then it shows the table as it is.
    let deadline = Instant::now() + PAGE_AGREES_TIMEOUT;
    let (dom, snap) = loop {
        for agent in &mut agents {
            if let Some(status) = agent.exit_status() {
                panic!("agent {} exited with {status}", agent.name);
            }
        }
        let before = fleet.snapshot().await.expect("read moto");
        let mut cmd = chromium_command(&chromium, &work, "dom");
        cmd.arg("--dump-dom").arg(&url);
        let dom = chromium_run(cmd, "--dump-dom").stdout;
        let after = fleet.snapshot().await.expect("read moto");
        let why = if owners(&before) != owners(&after) {
            "shards moved while Chromium loaded the page".to_string()
        } else {
            match page_disagrees(&dom, &fleet, observer, &after) {
                None => break (dom, after),
                Some(why) => why,
            }
        };
        assert!(
            Instant::now() < deadline,
            "the page at {url} did not agree with moto within {PAGE_AGREES_TIMEOUT:?}: {why}\n--- DOM ---\n{dom}"
        );
        tokio::time::sleep(PAGE_RETRY_INTERVAL).await;
    };
    let dom_file = work.write("dashboard.dom.html", &dom);
    say(&format!(
        "browser: {url} shows {} node rows and {} shard rows matching moto ({:?}); DOM in {}",
        rows_with(&dom, "data-node").len(),
        rows_with(&dom, "data-shard").len(),
        counts(&snap),
        dom_file.display()
    ));

    let screenshot = work.path().join("dashboard.png");
    let mut cmd = chromium_command(&chromium, &work, "screenshot");
    cmd.arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("--window-size={SCREENSHOT_WIDTH},{SCREENSHOT_HEIGHT}"))
        .arg(&url);
    let outcome = chromium_run(cmd, "--screenshot");
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{}", screenshot.display(), outcome.describe()));
    assert_eq!(
        png_size(&png),
        Some((SCREENSHOT_WIDTH, SCREENSHOT_HEIGHT)),
        "{} is not a {SCREENSHOT_WIDTH}x{SCREENSHOT_HEIGHT} PNG",
        screenshot.display()
    );
    assert!(
        png.len() as u64 >= SCREENSHOT_MIN_BYTES,
        "{} is {} bytes: a blank page, not the dashboard?",
        screenshot.display(),
        png.len()
    );
    say(&format!(
        "browser: screenshot {} ({} bytes; VIPFLEET_TEST_KEEP_FILES=1 keeps it after a pass); \
         test took {:?}",
        screenshot.display(),
        png.len(),
        began.elapsed()
    ));
}

/// 64 hex digits from the kernel's random source.
fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_HEX_DIGITS / 2];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One schemathesis run against the dashboard at `addr`, every check on
/// unless `extra` says otherwise; its JUnit report goes to `work`.
fn schemathesis_run(schemathesis: &Path, work: &Workdir, addr: SocketAddr, name: &str, extra: &[String]) -> Outcome {
    let spec = repo_root().join("services/agent/openapi.yaml");
    let mut cmd = Command::new(schemathesis);
    cmd.arg("run")
        .arg(&spec)
        .args(["--url", &format!("http://{addr}")])
        .args(["--checks", "all"])
        .args(["--max-examples", SCHEMATHESIS_MAX_EXAMPLES])
        .args(["--request-timeout", SCHEMATHESIS_REQUEST_TIMEOUT_SECONDS])
        .args(["--workers", "1", "--generation-database", "none", "--no-color"])
        // /readyz answers 503 while the node's lease has lapsed (a slow
        // moto on a busy machine): an answer the spec documents, which the
        // server-error check would count as a crash. Its answers are
        // tested in services/agent/tests/dashboard/.
        .args(["--exclude-operation-id", "readyz"])
        .arg("--report=junit")
        .arg(format!(
            "--report-dir={}",
            work.path().join(format!("schemathesis-{name}")).display()
        ))
        .args(extra)
        // Hypothesis keeps its example database and caches in the working
        // directory: the work directory, not the repository.
        .current_dir(work.path())
        .env("NO_COLOR", "1");
    run_group_to_end(cmd, SCHEMATHESIS_TIMEOUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_or_schema_mismatch() {
    const TEST: &str = "schemathesis_finds_no_server_error_or_schema_mismatch";
    let Some(endpoint) = moto_endpoint(TEST) else {
        return;
    };
    let venv = std::env::var_os("VIPFLEET_VENV").map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    let binary = venv.join("bin/schemathesis");
    let Some(schemathesis) = tool(
        TEST,
        "schemathesis",
        binary.is_file().then_some(binary.clone()),
        &format!(
            "{} is missing: run tests/setup/venv.sh (tests/run does)",
            binary.display()
        ),
    ) else {
        return;
    };
    let began = Instant::now();
    let work = Workdir::new("dashboard-schemathesis");
    let mut fleet = Fleet::create(
        &endpoint,
        "dashboard-schemathesis",
        &work,
        SCHEMATHESIS_AGENTS,
        SCHEMATHESIS_VIPS,
        SCHEMATHESIS_ROUTE_TABLES,
    )
    .await;
    let token_file = work.write("dashboard.token", &format!("{}\n", random_token()));
    fleet.nodes[0].dashboard_token_file = Some(token_file.clone());
    let (mut agents, dashboards, before) = start_fleet(&fleet, &work).await;

    let token = std::fs::read_to_string(token_file).expect("read the token back");
    let runs: [(usize, &str, Vec<String>); 3] = [
        // Every operation without the token: drain and undrain must say
        // 401 with a challenge, whatever headers come.
        (0, "token-agent", vec![]),
        // The right token on undrain alone (an active node stays active):
        // the 202 answer and its body. Drain is left out: it would empty
        // the node and end its agent.
        (
            0,
            "token-agent-undrain",
            vec![
                "--include-operation-id".into(),
                "undrain".into(),
                "--header".into(),
                format!("Authorization: Bearer {}", token.trim()),
            ],
        ),
        // An agent without a token: drain and undrain are absent (404, as
        // the spec says). schemathesis' missing_required_header check
        // wants 401 for any request without the security header; here
        // that would tell a prober the endpoints exist, so it is off for
        // this run only (the token agent's run keeps it).
        (
            1,
            "tokenless-agent",
            vec!["--exclude-checks".into(), "missing_required_header".into()],
        ),
    ];
    for (i, what, extra) in &runs {
        let outcome = schemathesis_run(&schemathesis, &work, dashboards[*i], what, extra);
        let report = work.write(&format!("schemathesis-{what}.txt"), &outcome.describe());
        assert!(
            outcome.code == Some(0) && !outcome.timed_out,
            "schemathesis against {} ({what}) found problems (output in {})\n{}",
            fleet.nodes[*i].name,
            report.display(),
            outcome.describe()
        );
        let summary: Vec<&str> = outcome
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(" generated, "))
            .collect();
        say(&format!(
            "schemathesis against {} ({what}, {}): exit 0; {}",
            fleet.nodes[*i].name,
            dashboards[*i],
            summary.join(" | ")
        ));
        if let Some(status) = agents[*i].exit_status() {
            panic!("agent {} exited with {status} under schemathesis", agents[*i].name);
        }
    }
    // Nothing it sent moved a shard: the undrains were no-ops and no drain
    // got through.
    let after = fleet.snapshot().await.expect("read moto");
    assert_eq!(owners(&after), owners(&before), "shards moved while schemathesis ran");
    say(&format!("schemathesis: test took {:?}", began.elapsed()));
}

#[test]
fn rows_are_read_as_chromium_serializes_them() {
    let dom = r#"<table><tbody><tr class="shard trouble" data-shard="10.200.0.8/32" data-owner="i-a&amp;b"><td>10.200.0.8/32</td>
        <td><span class="bad">i-a&amp;b (gone)</span></td></tr>
        <tr><td colspan="5">none yet</td></tr><tr data-node="i-x"><td>i-x</td></tr></tbody></table>"#;
    let shards = rows_with(dom, "data-shard");
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].attr("data-owner"), "i-a&b");
    assert_eq!(shards[0].attr("class"), "shard trouble");
    assert_eq!(shards[0].cells, ["10.200.0.8/32", "i-a&b (gone)"]);
    let nodes = rows_with(dom, "data-node");
    assert_eq!(
        (nodes.len(), nodes[0].cells.as_slice()),
        (1, ["i-x".to_string()].as_slice())
    );
}
