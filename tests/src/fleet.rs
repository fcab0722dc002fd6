//! A small fleet of real `vipfleet-agent` processes against moto, shared by
//! the black-box tests that need one (`agents.rs`, `dashboard_browser.rs`).
//!
//! [`Fleet::create`] makes the lease table (with the agent's own
//! `init-table`), a VPC with route tables and one ENI per node, and names
//! the nodes; [`Fleet::start`] writes a node's config and runs its agent
//! with its dashboard on a loopback port the kernel picks. The test then
//! judges the fleet by what it leaves in moto: [`Fleet::snapshot`] reads the
//! lease table and the routes, [`Fleet::converged`] says what is still
//! wrong, and [`Fleet::wait_converged`] polls until nothing is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::moto::{self, Lab, Shard};
use crate::{agent_command, run_to_end, say, toml_list, unique, Agent, Workdir};

/// moto serves about 80–180 calls a second; three agents at these timings
/// make about 20 (heartbeats, node scans, shard reads), a test's polling
/// about 12.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
pub const LEASE_TTL_MS: u64 = 2000;
pub const SCAN_INTERVAL_MS: u64 = 250;
/// As quick as a scan: with peer probes off, a settled fleet notices a
/// crashed node only through its watcher, and the failover bounds below
/// were set for a scan's pace.
pub const WATCH_INTERVAL_MS: u64 = SCAN_INTERVAL_MS;
/// moto does not throttle: the client-side bucket only needs to stay out of
/// the way of the measurements (a route write per VIP and table at start).
pub const EC2_CALLS_PER_SECOND: u32 = 20;
pub const EC2_BURST: u32 = 50;
const INIT_TABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Fleet::wait_converged`] reads moto.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Set (to anything) to print what is still wrong at every poll.
pub const TRACE_VAR: &str = "VIPFLEET_TEST_TRACE";
/// Problems listed in a failure message before "and N more".
const PROBLEMS_SHOWN: usize = 6;

/// One agent's identity, as its `[node]` section gives it.
#[derive(Clone, Debug)]
pub struct Node {
    /// `agent-a`, `agent-b`, …: names its config and log files.
    pub name: String,
    pub instance_id: String,
    pub eni: String,
    pub private_ip: String,
    /// `dashboard.token_file`: only a node with one serves drain/undrain.
    pub dashboard_token_file: Option<PathBuf>,
}

/// What a test reads from moto in one poll: the lease table, the routes,
/// and the lease table again. The two scans bracket the route read, so a
/// route seen here was written while one of the owners between the first
/// scan of one poll and the second of the next held the shard.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Shard items read before the routes.
    pub before: BTreeMap<String, Shard>,
    /// (route table, destination) -> ENI.
    pub routes: BTreeMap<(String, String), Option<String>>,
    /// Shard and node items read after the routes: the state the checks
    /// judge.
    pub shards: BTreeMap<String, Shard>,
    pub nodes: BTreeMap<String, moto::Node>,
}

/// The lab in moto and the nodes that run in it.
pub struct Fleet {
    pub endpoint: String,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub table: String,
    pub lab: Lab,
    /// `10.200.0.1/32` … `10.200.0.<vips>/32`, outside the VPC.
    pub vips: Vec<String>,
    pub nodes: Vec<Node>,
}

impl Fleet {
    /// A lease table named after `kind`, a VPC with `route_tables` route
    /// tables and one ENI per node, and `agents` nodes (`agent-a` …) that
    /// share `vips` VIPs. Nothing runs yet.
    pub async fn create(
        endpoint: &str,
        kind: &str,
        work: &Workdir,
        agents: usize,
        vips: u32,
        route_tables: usize,
    ) -> Fleet {
        let sdk = moto::sdk_config(endpoint).await;
        let table = unique(kind);
        let mut init = agent_command(Some(endpoint));
        init.args(["init-table", "--table", &table]);
        let outcome = run_to_end(init, INIT_TABLE_TIMEOUT);
        assert_eq!(outcome.code, Some(0), "init-table\n{}", outcome.describe());

        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let lab = Lab::create(&ec2, route_tables, agents).await;
        let run_id = std::process::id();
        let nodes = lab
            .enis
            .iter()
            .zip((b'a'..=b'z').map(char::from))
            .map(|(eni, name)| Node {
                name: format!("agent-{name}"),
                instance_id: format!("i-{name}{run_id:x}"),
                eni: eni.id.clone(),
                private_ip: eni.private_ip.clone(),
                dashboard_token_file: None,
            })
            .collect();
        let fleet = Fleet {
            endpoint: endpoint.to_string(),
            dynamo: aws_sdk_dynamodb::Client::new(&sdk),
            ec2,
            table,
            vips: (1..=vips).map(|i| format!("10.200.0.{i}/32")).collect(),
            lab,
            nodes,
        };
        say(&format!(
            "lab: table {}, vpc {}, route tables {:?}, files in {}",
            fleet.table,
            fleet.lab.vpc,
            fleet.lab.route_tables,
            work.path().display()
        ));
        fleet
    }

    pub fn config(&self, node: &Node) -> String {
        let token = node
            .dashboard_token_file
            .as_ref()
            .map(|path| format!("token_file = {:?}\n", path.display().to_string()))
            .unwrap_or_default();
        format!(
            r#"# {name}
[aws]
table = {table:?}
region = "us-east-1"

[fleet]
vips = {vips}
route_tables = {tables}
vpc_id = {vpc:?}

[lease]
profile = "hot"
heartbeat_interval_ms = {HEARTBEAT_INTERVAL_MS}
lease_ttl_ms = {LEASE_TTL_MS}
scan_interval_ms = {SCAN_INTERVAL_MS}
watch_interval_ms = {WATCH_INTERVAL_MS}

[node]
instance_id = {instance:?}
eni = {eni:?}
private_ip = {ip:?}
az = {az:?}

[health]
# No haproxy in these tests: the agents count as healthy.
disabled = true

[vip_binding]
enabled = false

[ec2]
mutating_calls_per_second = {EC2_CALLS_PER_SECOND}
burst = {EC2_BURST}

[dashboard]
listen = ["127.0.0.1:0"]
{token}
# The agents share this host's network (one UDP port for all): peer probes
# are the lab's to test, in its namespaces.
[peers]
enabled = false

[lifecycle]
poll_interval_ms = 60000
"#,
            name = node.name,
            table = self.table,
            vips = toml_list(&self.vips),
            tables = toml_list(&self.lab.route_tables),
            vpc = self.lab.vpc,
            instance = node.instance_id,
            eni = node.eni,
            ip = node.private_ip,
            az = moto::AZ,
        )
    }

    /// Writes `node`'s config into `work` and starts its agent.
    pub fn start(&self, node: &Node, work: &Workdir) -> Agent {
        let config = work.write(&format!("{}.toml", node.name), &self.config(node));
        let mut cmd = agent_command(Some(&self.endpoint));
        cmd.arg("run").arg("--config").arg(&config);
        let agent = Agent::spawn(&node.name, cmd, work.path().join(format!("{}.log", node.name)));
        say(&format!(
            "agent {} ({}, {}, pid {}): log {}",
            node.name,
            node.instance_id,
            node.eni,
            agent.pid(),
            agent.log_path().display()
        ));
        agent
    }

    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let (before, _) = moto::lease_table(&self.dynamo, &self.table).await?;
        let routes = moto::routes(&self.ec2, &self.lab.route_tables).await?;
        let (shards, nodes) = moto::lease_table(&self.dynamo, &self.table).await?;
        Ok(Snapshot {
            before,
            routes,
            shards,
            nodes,
        })
    }

    pub fn name_of_eni(&self, eni: &str) -> &str {
        self.nodes
            .iter()
            .find(|n| n.eni == eni)
            .map_or("<not an agent's ENI>", |n| n.name.as_str())
    }

    pub fn eni_of(&self, instance_id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.instance_id == instance_id)
            .map(|n| n.eni.as_str())
    }

    /// `Ok` when every VIP's shard is owned by one of `live`, the counts of
    /// `live` differ by at most one, and every VIP's route in every table
    /// points to its owner's ENI; otherwise what is still wrong.
    pub fn converged(&self, snap: &Snapshot, live: &[&Node]) -> Result<(), String> {
        let mut problems = Vec::new();
        let covered: BTreeSet<&String> = snap.shards.values().flat_map(|s| s.vips.iter()).collect();
        let missing: Vec<&String> = self.vips.iter().filter(|v| !covered.contains(v)).collect();
        if !missing.is_empty() {
            problems.push(format!("no shard item yet for {missing:?}"));
        }
        let mut counts: BTreeMap<&str, usize> = live.iter().map(|n| (n.instance_id.as_str(), 0)).collect();
        for (id, shard) in &snap.shards {
            let Some(owner) = shard.owner.as_deref() else {
                problems.push(format!("shard {id} has no owner"));
                continue;
            };
            match counts.get_mut(owner) {
                Some(count) => *count += 1,
                None => problems.push(format!("shard {id} is owned by {owner}, which is not live")),
            }
            let eni = self.eni_of(owner).unwrap_or("<unknown owner>");
            for vip in &shard.vips {
                for table in &self.lab.route_tables {
                    let route = snap.routes.get(&(table.clone(), vip.clone()));
                    if route != Some(&Some(eni.to_string())) {
                        problems.push(format!("{table} {vip}: route {route:?}, owner {owner} has {eni}"));
                    }
                }
            }
        }
        let (min, max) = (counts.values().min(), counts.values().max());
        if let (Some(min), Some(max)) = (min, max) {
            if max - min > 1 {
                problems.push(format!("unbalanced: {counts:?}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(summarize(&problems))
        }
    }

    /// Polls moto until every node in `agents` (all of them live) owns its
    /// share with routes ([`Fleet::converged`]), failing the test after
    /// `timeout` with what was still wrong, or at once if an agent exits.
    pub async fn wait_converged(&self, agents: &mut [Agent], timeout: Duration) -> Snapshot {
        let live: Vec<&Node> = agents
            .iter()
            .map(|a| {
                self.nodes
                    .iter()
                    .find(|n| n.name == a.name)
                    .unwrap_or_else(|| panic!("{} is not a node of this fleet", a.name))
            })
            .collect();
        let began = Instant::now();
        loop {
            for agent in agents.iter_mut() {
                if let Some(status) = agent.exit_status() {
                    panic!("start: agent {} exited with {status}", agent.name);
                }
            }
            let last = match self.snapshot().await {
                Ok(snap) => match self.converged(&snap, &live) {
                    Ok(()) => return snap,
                    Err(why) => why,
                },
                Err(e) => format!("cannot read moto: {e}"),
            };
            if std::env::var_os(TRACE_VAR).is_some() {
                say(&format!("start +{:?}: {last}", began.elapsed()));
            }
            assert!(
                began.elapsed() < timeout,
                "start: not converged within {timeout:?}: {last}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The first few of `problems`, joined, and how many more there are.
pub fn summarize(problems: &[String]) -> String {
    let mut text = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > PROBLEMS_SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - PROBLEMS_SHOWN));
    }
    text
}

/// How many shards each owner holds (`<free>` for none).
pub fn counts(snap: &Snapshot) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for shard in snap.shards.values() {
        *counts
            .entry(shard.owner.clone().unwrap_or_else(|| "<free>".into()))
            .or_default() += 1;
    }
    counts
}
