//! The agent's command line as an operator meets it: every configuration
//! that cannot work makes `check-config` and `run` exit with 78
//! (`EX_CONFIG`) and a message naming the bad value, and `init-table` can
//! be run again safely.
//!
//! The file-only cases need no AWS: the agent is pointed at a dead loopback
//! port, so a `run` that got past validation would fail differently (and a
//! hang is cut off). The cases only AWS can judge (a VIP inside the VPC; a
//! route table that does not exist, which is reported but does not stop
//! the agent) and `init-table` run against moto.

use std::time::Duration;

use vipfleet_tests::moto::{self, Lab};
use vipfleet_tests::{agent_command, moto_endpoint, run_to_end, toml_list, unique, Outcome, Workdir, EXIT_CONFIG};

/// A `run` that should stop at its configuration does so in well under a
/// second; this only bounds a broken agent that would run on.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agent with a missing route table is left running to show
/// it does not stop.
const MISSING_TABLE_RUN: Duration = Duration::from_secs(6);

/// A configuration that passes every file-level check; each bad case
/// changes one thing in it.
fn good_config(table: &str, route_tables: &[String], vips: &[&str], vpc: Option<&str>) -> String {
    let vpc = vpc.map(|v| format!("vpc_id = {v:?}\n")).unwrap_or_default();
    format!(
        r#"
[aws]
table = {table:?}
region = "us-east-1"

[fleet]
vips = {vips}
route_tables = {tables}
{vpc}
[lease]
profile = "default"

[node]
instance_id = "i-0cli0000000000001"
eni = "eni-0cli000000000001"
private_ip = "10.0.1.10"
az = "us-east-1a"

[health]
url = "http://127.0.0.1:8404/healthz"

[vip_binding]
enabled = false

[dashboard]
listen = ["127.0.0.1:0"]

[peers]
# No fleet key file in the base: the cases that need one put it in.
insecure = true
"#,
        vips = toml_list(vips),
        tables = toml_list(route_tables),
    )
}

fn default_config() -> String {
    good_config(
        "vipfleet-leases",
        &["rtb-0123".to_string(), "rtb-4567".to_string()],
        &["10.200.0.1/32", "10.200.0.2/32"],
        None,
    )
}

/// Runs `vipfleet-agent <subcommand> --config FILE` (no AWS reachable).
fn agent(subcommand: &str, config: &std::path::Path, endpoint: Option<&str>) -> Outcome {
    let mut cmd = agent_command(endpoint);
    cmd.arg(subcommand).arg("--config").arg(config);
    run_to_end(cmd, COMMAND_TIMEOUT)
}

fn assert_refused(what: &str, outcome: &Outcome, needles: &[&str]) {
    assert_eq!(
        outcome.code,
        Some(EXIT_CONFIG),
        "{what}: expected exit {EXIT_CONFIG}\n{}",
        outcome.describe()
    );
    for needle in needles {
        assert!(
            outcome.stderr.contains(needle),
            "{what}: the message should name {needle:?}\n{}",
            outcome.describe()
        );
    }
}

#[test]
fn a_good_config_passes_check_config() {
    // The control for the cases below: their 78s come from the one change
    // each makes, not from a base that never passed.
    let work = Workdir::new("cli-good");
    let file = work.write("good.toml", &default_config());
    let outcome = agent("check-config", &file, None);
    assert_eq!(outcome.code, Some(0), "{}", outcome.describe());
    assert!(outcome.stdout.contains("config ok"), "{}", outcome.describe());
}

/// The example an operator copies (`infra/agent.example.toml`) passes the
/// agent's own check as it stands; the same file without its table does not,
/// so the pass is the file's doing. Its keys are checked against the code in
/// services/agent/tests/example_config.rs.
#[test]
fn the_example_config_passes_check_config() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/agent.example.toml");
    let outcome = agent("check-config", &example, None);
    assert_eq!(outcome.code, Some(0), "{}\n{}", example.display(), outcome.describe());
    assert!(outcome.stdout.contains("config ok"), "{}", outcome.describe());

    let text = std::fs::read_to_string(&example).expect("reading the example");
    let table_line = text
        .lines()
        .find(|l| l.starts_with("table = "))
        .expect("the example sets aws.table");
    let work = Workdir::new("cli-example");
    let file = work.write("no-table.toml", &text.replacen(table_line, "", 1));
    assert_refused(
        "the example without aws.table",
        &agent("check-config", &file, None),
        &["aws.table"],
    );
}

#[test]
fn bad_configs_exit_78_naming_the_bad_value() {
    let base = default_config();
    let with = |from: &str, to: &str| -> String {
        assert!(base.contains(from), "the base config has no {from:?}");
        base.replacen(from, to, 1)
    };
    let vips_line = r#"vips = ["10.200.0.1/32", "10.200.0.2/32"]"#;
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed CIDR",
            with(vips_line, r#"vips = ["10.200.0.1/32", "10.200.0.300/32"]"#),
            vec!["10.200.0.300/32"],
        ),
        (
            "prefix over 32",
            with(vips_line, r#"vips = ["10.200.0.1/33"]"#),
            vec!["10.200.0.1/33"],
        ),
        (
            "duplicate VIP",
            with(vips_line, r#"vips = ["10.200.0.1/32", "10.200.0.2/32", "10.200.0.1"]"#),
            vec!["10.200.0.1/32", "twice"],
        ),
        (
            "overlapping VIPs",
            with(vips_line, r#"vips = ["10.200.0.0/24", "10.200.0.9/32"]"#),
            vec!["10.200.0.0/24", "10.200.0.9/32", "overlap"],
        ),
        (
            "route table id of another kind",
            with(r#""rtb-0123""#, r#""vpc-0123""#),
            vec!["vpc-0123"],
        ),
        (
            "lease_ttl equal to the heartbeat",
            with(
                r#"profile = "default""#,
                "heartbeat_interval_ms = 1000\nlease_ttl_ms = 1000",
            ),
            vec!["lease_ttl", "heartbeat_interval"],
        ),
        (
            "scan too slow for the lease",
            with(
                r#"profile = "default""#,
                "heartbeat_interval_ms = 1000\nlease_ttl_ms = 3000\nscan_interval_ms = 2000",
            ),
            vec!["scan_interval"],
        ),
        (
            "unknown key",
            with(r#"region = "us-east-1""#, "region = \"us-east-1\"\ntabel = \"typo\""),
            vec!["tabel"],
        ),
        ("unknown section", format!("{base}\n[flet]\nvips = []\n"), vec!["flet"]),
        (
            "missing table",
            with(r#"table = "vipfleet-leases""#, ""),
            vec!["aws.table"],
        ),
        (
            "no health source",
            with(r#"url = "http://127.0.0.1:8404/healthz""#, ""),
            vec!["health.url", "health.disabled"],
        ),
        (
            "peer probes without a key",
            with("insecure = true", ""),
            vec!["peers.key_file", "peers.insecure = true"],
        ),
    ];
    let work = Workdir::new("cli-bad");
    for (i, (what, text, needles)) in cases.iter().enumerate() {
        let file = work.write(&format!("bad-{i}.toml"), text);
        for subcommand in ["check-config", "run"] {
            let outcome = agent(subcommand, &file, None);
            assert_refused(&format!("{what} ({subcommand})"), &outcome, needles);
        }
    }
}

/// A fleet key file that cannot be used stops `run` with 78 before it
/// touches AWS, naming the file but never its content (`check-config`
/// reads no secret files, as for the dashboard token).
#[test]
fn run_refuses_a_peer_key_file_it_cannot_use() {
    const SHORT_KEY: &str = "vipfleet-short-peer-key";
    let work = Workdir::new("cli-peer-key");
    let short = work.write("short.key", &format!("{SHORT_KEY}\n"));
    let missing = work.path().join("absent.key");
    for (what, path, needles) in [
        ("a short key", &short, vec!["short.key", "at least 32"]),
        ("a missing key file", &missing, vec!["absent.key"]),
    ] {
        let key_file = format!("key_file = {:?}", path.display().to_string());
        let file = work.write(
            "peer-key.toml",
            &default_config().replacen("insecure = true", &key_file, 1),
        );
        let outcome = agent("run", &file, None);
        assert_refused(what, &outcome, &needles);
        assert!(!outcome.stderr.contains(SHORT_KEY), "{what}: {}", outcome.describe());
    }
}

#[tokio::test]
async fn run_refuses_what_only_aws_can_judge() {
    let Some(endpoint) = moto_endpoint("run_refuses_what_only_aws_can_judge") else {
        return;
    };
    let sdk = moto::sdk_config(&endpoint).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let lab = Lab::create(&ec2, 2, 0).await;
    let work = Workdir::new("cli-aws");
    let table = unique("cli");

    // 10.0.5.5 is inside the lab VPC's 10.0.0.0/16: its route could never
    // beat the VPC's local route.
    let inside = good_config(
        &table,
        &lab.route_tables,
        &["10.200.0.1/32", "10.0.5.5/32"],
        Some(&lab.vpc),
    );
    let file = work.write("inside.toml", &inside);
    let outcome = agent("run", &file, Some(&endpoint));
    assert_refused("VIP inside the VPC", &outcome, &["10.0.5.5/32", &lab.vpc]);

    // A route table that does not exist (yet, or any more) is not a reason
    // to stop: under systemd that would be a crash loop on every node. The
    // agent names it and runs on with the tables it can use.
    let missing = "rtb-0000000000000dead".to_string();
    let tables = vec![lab.route_tables[0].clone(), missing.clone()];
    let unknown = good_config(&table, &tables, &["10.200.0.1/32"], Some(&lab.vpc));
    let file = work.write("unknown-rtb.toml", &unknown);
    let mut cmd = agent_command(Some(&endpoint));
    cmd.arg("run").arg("--config").arg(&file);
    let outcome = run_to_end(cmd, MISSING_TABLE_RUN);
    assert!(outcome.timed_out, "the agent should run on\n{}", outcome.describe());
    let warning = outcome
        .stderr
        .lines()
        .find(|l| l.contains("fleet.route_tables") && l.contains("not found"))
        .unwrap_or_else(|| panic!("no warning about the missing table\n{}", outcome.describe()));
    assert!(warning.contains(&missing), "{warning}");
    assert!(
        !warning.contains(&lab.route_tables[0]),
        "only the missing table should be named: {warning}"
    );
}

#[tokio::test]
async fn init_table_twice_succeeds() {
    let Some(endpoint) = moto_endpoint("init_table_twice_succeeds") else {
        return;
    };
    let table = unique("init");
    for attempt in ["first", "second"] {
        let mut cmd = agent_command(Some(&endpoint));
        cmd.args(["init-table", "--table", &table]);
        let outcome = run_to_end(cmd, COMMAND_TIMEOUT);
        assert_eq!(outcome.code, Some(0), "{attempt} init-table\n{}", outcome.describe());
    }
    let sdk = moto::sdk_config(&endpoint).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let described = dynamo
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("the table exists after init-table");
    let keys = described.table().map(|t| t.key_schema().to_vec()).unwrap_or_default();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].attribute_name(), "pk");
    let ttl = dynamo
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .expect("DescribeTimeToLive");
    let attribute = ttl.time_to_live_description().and_then(|d| d.attribute_name());
    assert_eq!(attribute, Some("expires_at"), "init-table enables TTL on expires_at");
}

/// Neither `check-config` nor a `run` that gets as far as AWS (here a dead
/// endpoint, at trace level, where the SDK logs each request's identity)
/// prints the AWS credentials or the dashboard token, whatever it logs on
/// the way (the access key id did, before the agent held those SDK targets
/// at info); nor does a refused config that names the token in a key the
/// agent does not know, or holds it pasted in unquoted (TOML syntax errors
/// used to quote the line). (The lab test checks the same of a whole fleet's logs.)
#[test]
fn no_secret_is_printed_by_check_config_or_run() {
    const ACCESS_KEY_ID: &str = "AKIAVIPFLEETCLI5K3QW";
    const SECRET_ACCESS_KEY: &str = "vipfleet-cli-secret-key-0c9d1e7a-never-printed";
    const SESSION_TOKEN: &str = "vipfleet-cli-session-token-5e2b8f31-never-printed";
    const DASHBOARD_TOKEN: &str = "vipfleet-cli-dashboard-token-93a4c6d2-never-printed";
    const PEER_KEY: &str = "vipfleet-cli-peer-key-7f1e0b9c4d2a-never-printed";
    let secrets = [
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        DASHBOARD_TOKEN,
        PEER_KEY,
    ];
    let work = Workdir::new("cli-secrets");
    let token_file = work.write("dashboard.token", &format!("{DASHBOARD_TOKEN}\n"));
    let key_file = work.write("peer.key", &format!("{PEER_KEY}\n"));
    let config = default_config()
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!(
                "listen = [\"127.0.0.1:0\"]\ntoken_file = {:?}",
                token_file.display().to_string()
            ),
        )
        .replace(
            "insecure = true",
            &format!("key_file = {:?}", key_file.display().to_string()),
        );
    let file = work.write("with-token.toml", &config);
    let with_secrets = |subcommand: &str, log: &str, extra: &[(&str, &str)]| {
        let mut cmd = agent_command(None);
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("VIPFLEET_LOG", log)
            .envs(extra.iter().copied())
            .arg(subcommand)
            .arg("--config")
            .arg(&file);
        run_to_end(cmd, COMMAND_TIMEOUT)
    };
    let checked = with_secrets("check-config", "debug", &[]);
    assert_eq!(checked.code, Some(0), "{}", checked.describe());
    let ran = with_secrets("run", "trace", &[]);
    assert_eq!(ran.code, Some(1), "AWS is unreachable: {}", ran.describe());
    assert!(
        ran.stderr.contains("TRACE aws_"),
        "the SDK logged at trace level: {}",
        ran.describe()
    );
    let misplaced = with_secrets("check-config", "info", &[("VIPFLEET_DASHBOARD_TOKEN", DASHBOARD_TOKEN)]);
    assert_eq!(misplaced.code, Some(EXIT_CONFIG), "{}", misplaced.describe());
    // Pasted into the file unquoted: a syntax error, named by line, not quoted.
    let pasted = work.write(
        "pasted.toml",
        &config.replace("token_file = ", &format!("token = {DASHBOARD_TOKEN}\ntoken_file = ")),
    );
    let mut cmd = agent_command(None);
    cmd.arg("check-config").arg("--config").arg(&pasted);
    let syntax = run_to_end(cmd, COMMAND_TIMEOUT);
    assert_eq!(syntax.code, Some(EXIT_CONFIG), "{}", syntax.describe());
    assert!(syntax.stderr.contains("line "), "{}", syntax.describe());
    for (what, outcome) in [
        ("check-config", &checked),
        ("run", &ran),
        ("a misplaced token", &misplaced),
        ("a pasted token", &syntax),
    ] {
        for secret in secrets {
            assert!(
                !outcome.stdout.contains(secret) && !outcome.stderr.contains(secret),
                "{what} printed {secret:?}\n{}",
                outcome.describe()
            );
        }
    }
}
