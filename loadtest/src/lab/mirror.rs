//! The route mirror: plays the VPC's part of carrying moto's route tables
//! into the data plane. It polls `DescribeRouteTables` (every `--poll-ms`,
//! default 100: a route write reaches the data plane 50 ms later on
//! average, a fair stand-in for VPC propagation, and small beside the
//! sub-second failover the peer probes give) and programs each router namespace's kernel routes to match
//! its table: `VIP/32 via <node ip>` for a route to an ENI (the ENI's
//! private IP, looked up once with `DescribeNetworkInterfaces`), a
//! `blackhole` route when the ENI does not exist, and no route once the
//! table has none. Other targets (the `local` route) are not mirrored.
//!
//! A change is applied `--propagation-ms` after the mirror first saw it
//! (default 0), to model the VPC's propagation delay; a target that changes
//! again before then restarts the wait for the newest one.
//!
//! Kernel routes carry `proto 177` ([`MIRROR_ROUTE_PROTO`]) so the mirror
//! knows its own routes after a restart. When moto does not answer, nothing
//! changes: traffic keeps flowing on the last routes, as in a VPC.
//!
//! Every kernel route change is appended to `--changes-log` as one JSON
//! object ([`Change`]); the harness reads it to time route propagation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{info, warn};
use vipfleet_agent::aws::ec2::Ec2RouteTable;
use vipfleet_core::{RouteTableId, Vip};

use super::aws::display_error;
use super::netns::{KernelRoute, MIRROR_ROUTE_PROTO};
use super::state::unix_ms_now;

/// How often the mirror reads the route tables (see the module header).
pub const DEFAULT_POLL_MS: u64 = 100;

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// moto's endpoint URL.
    #[arg(long)]
    pub endpoint: String,
    /// `rtb-id=namespace`: mirror this route table into this router namespace.
    #[arg(long = "route-table", required = true, value_name = "RTB=NS")]
    pub tables: Vec<String>,
    #[arg(long, default_value_t = DEFAULT_POLL_MS)]
    pub poll_ms: u64,
    /// Delay between seeing a change in moto and applying it.
    #[arg(long, default_value_t = 0)]
    pub propagation_ms: u64,
    /// JSON lines, one per kernel route change.
    #[arg(long)]
    pub changes_log: PathBuf,
}

/// What a kernel route should do with a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Via(Ipv4Addr),
    /// The route names an ENI that does not exist: packets are dropped.
    Blackhole,
}

/// (route table index, destination).
type Key = (usize, Vip);

/// A change seen in moto, waiting for its propagation delay.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    want: Option<Target>,
    eni: Option<String>,
    seen_unix_ms: u64,
    due: Instant,
}

/// One line of the changes log.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// When the kernel route was changed (wall clock, ms since the epoch).
    pub t_unix_ms: u64,
    /// When the mirror first saw the change in moto.
    pub seen_unix_ms: u64,
    pub route_table: String,
    pub router_ns: String,
    pub dst: String,
    /// `add`, `replace` or `remove`.
    pub action: &'static str,
    pub via: Option<Ipv4Addr>,
    pub eni: Option<String>,
    pub blackhole: bool,
    /// Whether the kernel holds the wanted route afterwards.
    pub ok: bool,
}

/// The mirror's memory between polls.
#[derive(Debug, Default)]
struct Mirror {
    applied: BTreeMap<Key, Target>,
    pending: BTreeMap<Key, Pending>,
}

impl Mirror {
    /// Records what moto says now; returns nothing, changes become due later.
    fn observe(
        &mut self,
        desired: &BTreeMap<Key, (Target, Option<String>)>,
        now: Instant,
        now_unix_ms: u64,
        delay: Duration,
    ) {
        let keys: BTreeSet<Key> = desired.keys().chain(self.applied.keys()).copied().collect();
        for key in keys {
            let want = desired.get(&key).map(|(t, _)| *t);
            if want == self.applied.get(&key).copied() {
                self.pending.remove(&key);
                continue;
            }
            if self.pending.get(&key).map(|p| p.want) != Some(want) {
                self.pending.insert(
                    key,
                    Pending {
                        want,
                        eni: desired.get(&key).and_then(|(_, eni)| eni.clone()),
                        seen_unix_ms: now_unix_ms,
                        due: now + delay,
                    },
                );
            }
        }
    }

    /// Takes the changes whose delay has passed.
    fn take_due(&mut self, now: Instant) -> Vec<(Key, Pending)> {
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| *k)
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|p| (k, p)))
            .collect()
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }
}

/// The `ip -batch` line that makes the kernel hold `want` for `dst`.
fn batch_line(dst: &Vip, want: Option<Target>) -> String {
    let proto = MIRROR_ROUTE_PROTO;
    match want {
        Some(Target::Via(ip)) => format!("route replace {dst} via {ip} proto {proto}"),
        Some(Target::Blackhole) => format!("route replace blackhole {dst} proto {proto}"),
        None => format!("route del {dst} proto {proto}"),
    }
}

fn kernel_target(route: &KernelRoute) -> Option<Target> {
    if route.kind.as_deref() == Some("blackhole") {
        return Some(Target::Blackhole);
    }
    route.gateway.as_deref()?.parse().ok().map(Target::Via)
}

async fn kernel_routes(ns: &str) -> Result<BTreeMap<Vip, Target>> {
    let out = tokio::process::Command::new("ip")
        .args([
            "-n",
            ns,
            "-j",
            "route",
            "show",
            "proto",
            &MIRROR_ROUTE_PROTO.to_string(),
        ])
        .output()
        .await?;
    if !out.status.success() {
        return Err(anyhow!(
            "ip route show in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let routes: Vec<KernelRoute> = serde_json::from_str(&text).context("parsing `ip -j route`")?;
    Ok(routes
        .iter()
        .filter_map(|r| Some((r.cidr()?, kernel_target(r)?)))
        .collect())
}

async fn run_batch(ns: &str, lines: &[String]) -> Result<()> {
    let mut child = tokio::process::Command::new("ip")
        .args(["-n", ns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all((lines.join("\n") + "\n").as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(anyhow!(
            "ip -batch in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// ENI id → private IP, from moto, cached (an ENI's address never changes).
struct EniResolver {
    client: aws_sdk_ec2::Client,
    known: HashMap<String, Ipv4Addr>,
}

impl EniResolver {
    async fn resolve(&mut self, enis: &BTreeSet<String>) -> Result<()> {
        let unknown: Vec<String> = enis.iter().filter(|e| !self.known.contains_key(*e)).cloned().collect();
        if unknown.is_empty() {
            return Ok(());
        }
        match self.describe(&unknown).await {
            Ok(found) => self.known.extend(found),
            // One unknown id fails the whole call: ask one by one, so the
            // ones that exist still resolve and the rest become blackholes.
            Err(_) => {
                for eni in unknown {
                    if let Ok(found) = self.describe(std::slice::from_ref(&eni)).await {
                        self.known.extend(found);
                    }
                }
            }
        }
        Ok(())
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<(String, Ipv4Addr)>> {
        let out = self
            .client
            .describe_network_interfaces()
            .set_network_interface_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| anyhow!("DescribeNetworkInterfaces {ids:?}: {}", display_error(&e)))?;
        Ok(out
            .network_interfaces()
            .iter()
            .filter_map(|n| {
                let id = n.network_interface_id()?.to_string();
                let ip = n.private_ip_address()?.parse().ok()?;
                Some((id, ip))
            })
            .collect())
    }
}

struct Table {
    id: RouteTableId,
    ns: String,
}

fn parse_tables(specs: &[String]) -> Result<Vec<Table>> {
    specs
        .iter()
        .map(|s| {
            let (id, ns) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--route-table {s:?}: expected rtb-id=namespace"))?;
            Ok(Table {
                id: RouteTableId(id.to_string()),
                ns: ns.to_string(),
            })
        })
        .collect()
}

/// Runs the mirror until SIGTERM or SIGINT.
pub async fn run(args: MirrorArgs) -> Result<()> {
    let tables = parse_tables(&args.tables)?;
    let sdk = vipfleet_agent::aws::local_endpoint_config(&args.endpoint).await;
    let routes = Ec2RouteTable::new(aws_sdk_ec2::Client::new(&sdk));
    let mut resolver = EniResolver {
        client: aws_sdk_ec2::Client::new(&sdk),
        known: HashMap::new(),
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.changes_log)
        .with_context(|| format!("opening {}", args.changes_log.display()))?;
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let delay = Duration::from_millis(args.propagation_ms);
    let ids: Vec<RouteTableId> = tables.iter().map(|t| t.id.clone()).collect();

    let mut mirror = Mirror::default();
    for (j, table) in tables.iter().enumerate() {
        for (dst, target) in kernel_routes(&table.ns).await? {
            mirror.applied.insert((j, dst), target);
        }
    }
    info!(
        tables = tables.len(),
        routes = mirror.applied.len(),
        ?poll,
        ?delay,
        "route mirror started"
    );

    let shutdown = super::imds::shutdown_signal();
    tokio::pin!(shutdown);
    let mut next_poll = Instant::now();
    let mut failing = false;
    loop {
        let wake = mirror.next_due().map_or(next_poll, |d| d.min(next_poll));
        tokio::select! {
            _ = &mut shutdown => {
                info!("route mirror stopping");
                return Ok(());
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= next_poll {
            next_poll = now + poll;
            match routes.describe_tables(&ids).await {
                Ok(entries) => {
                    if failing {
                        info!("moto answers again");
                        failing = false;
                    }
                    let enis: BTreeSet<String> = entries
                        .iter()
                        .filter_map(|e| e.target.as_ref().map(|t| t.0.clone()))
                        .collect();
                    resolver.resolve(&enis).await?;
                    let mut desired = BTreeMap::new();
                    for entry in entries {
                        let (Some(j), Some(eni)) = (ids.iter().position(|id| *id == entry.table), entry.target) else {
                            continue;
                        };
                        let target = match resolver.known.get(&eni.0) {
                            Some(ip) if !entry.blackhole => Target::Via(*ip),
                            _ => Target::Blackhole,
                        };
                        desired.insert((j, entry.destination), (target, Some(eni.0)));
                    }
                    mirror.observe(&desired, Instant::now(), unix_ms_now(), delay);
                }
                Err(e) => {
                    // Fail static, like a VPC whose control plane is down.
                    if !failing {
                        warn!("DescribeRouteTables failed, keeping the routes as they are: {e}");
                        failing = true;
                    }
                }
            }
        }
        apply_due(&mut mirror, &tables, &mut log).await;
    }
}

async fn apply_due(mirror: &mut Mirror, tables: &[Table], log: &mut std::fs::File) {
    let due = mirror.take_due(Instant::now());
    if due.is_empty() {
        return;
    }
    let mut by_table: BTreeMap<usize, Vec<(Vip, Pending)>> = BTreeMap::new();
    for ((j, dst), p) in due {
        by_table.entry(j).or_default().push((dst, p));
    }
    for (j, changes) in by_table {
        let table = &tables[j];
        let lines: Vec<String> = changes.iter().map(|(dst, p)| batch_line(dst, p.want)).collect();
        if let Err(e) = run_batch(&table.ns, &lines).await {
            warn!("{}: {e}", table.ns);
        }
        let t_unix_ms = unix_ms_now();
        // What the kernel holds now is the truth, whatever the batch said.
        let kernel = match kernel_routes(&table.ns).await {
            Ok(k) => k,
            Err(e) => {
                warn!("{}: cannot read routes back: {e}", table.ns);
                continue;
            }
        };
        for (dst, p) in changes {
            let before = mirror.applied.get(&(j, dst)).copied();
            let now = kernel.get(&dst).copied();
            match now {
                Some(t) => mirror.applied.insert((j, dst), t),
                None => mirror.applied.remove(&(j, dst)),
            };
            let change = Change {
                t_unix_ms,
                seen_unix_ms: p.seen_unix_ms,
                route_table: table.id.0.clone(),
                router_ns: table.ns.clone(),
                dst: dst.to_string(),
                action: match (before, p.want) {
                    (_, None) => "remove",
                    (None, Some(_)) => "add",
                    (Some(_), Some(_)) => "replace",
                },
                via: match p.want {
                    Some(Target::Via(ip)) => Some(ip),
                    _ => None,
                },
                eni: p.eni.clone(),
                blackhole: p.want == Some(Target::Blackhole),
                ok: now == p.want,
            };
            info!(
                table = %change.route_table, ns = %change.router_ns, dst = %change.dst, action = change.action,
                via = ?change.via, ok = change.ok, "route"
            );
            if let Ok(line) = serde_json::to_string(&change) {
                if let Err(e) = writeln!(log, "{line}") {
                    warn!("writing the changes log: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str) -> Vip {
        s.parse().unwrap()
    }

    fn via(last: u8) -> Target {
        Target::Via(Ipv4Addr::new(10, 77, 0, last))
    }

    fn desired(items: &[(usize, &str, Target)]) -> BTreeMap<Key, (Target, Option<String>)> {
        items
            .iter()
            .map(|(j, d, t)| ((*j, vip(d)), (*t, Some("eni-x".to_string()))))
            .collect()
    }

    #[test]
    fn changes_wait_for_the_propagation_delay_and_the_newest_wins() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(500);
        let mut m = Mirror::default();
        m.observe(&desired(&[(0, "10.200.0.1", via(10))]), t0, 1, delay);
        assert!(m.take_due(t0).is_empty());
        // Seen again unchanged: the wait is not restarted.
        m.observe(
            &desired(&[(0, "10.200.0.1", via(10))]),
            t0 + Duration::from_millis(300),
            2,
            delay,
        );
        assert_eq!(m.next_due(), Some(t0 + delay));
        // Changed before it propagated: the newest target waits afresh.
        m.observe(
            &desired(&[(0, "10.200.0.1", via(11))]),
            t0 + Duration::from_millis(400),
            3,
            delay,
        );
        assert!(m.take_due(t0 + delay).is_empty());
        let due = m.take_due(t0 + Duration::from_millis(900));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.want, Some(via(11)));
        assert_eq!(due[0].1.seen_unix_ms, 3);
    }

    #[test]
    fn applied_routes_are_left_alone_and_vanished_ones_removed() {
        let t0 = Instant::now();
        let mut m = Mirror::default();
        m.applied.insert((0, vip("10.200.0.1")), via(10));
        m.applied.insert((1, vip("10.200.0.2")), via(10));
        m.observe(&desired(&[(0, "10.200.0.1", via(10))]), t0, 1, Duration::ZERO);
        let due = m.take_due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, (1, vip("10.200.0.2")));
        assert_eq!(due[0].1.want, None);
        m.applied.remove(&due[0].0);
        // Back to what is applied before it propagated: nothing to do.
        m.observe(&desired(&[(0, "10.200.0.1", via(11))]), t0, 1, Duration::from_secs(1));
        m.observe(&desired(&[(0, "10.200.0.1", via(10))]), t0, 1, Duration::from_secs(1));
        assert!(m.pending.is_empty());
    }

    #[test]
    fn batch_lines_carry_the_mirror_protocol() {
        assert_eq!(
            batch_line(&vip("10.200.0.1"), Some(via(10))),
            "route replace 10.200.0.1/32 via 10.77.0.10 proto 177"
        );
        assert_eq!(
            batch_line(&vip("10.200.0.1"), Some(Target::Blackhole)),
            "route replace blackhole 10.200.0.1/32 proto 177"
        );
        assert_eq!(
            batch_line(&vip("10.200.0.1"), None),
            "route del 10.200.0.1/32 proto 177"
        );
    }
}
