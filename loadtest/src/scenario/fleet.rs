//! What the harness reads of the fleet while a scenario runs: shard owners
//! and epochs from the lease table, routes from EC2 (moto), and what the
//! agents count in their `/metrics` ([`scrape`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use vipfleet_agent::aws::dynamo::DynamoLeaseStore;
use vipfleet_agent::aws::ec2::Ec2RouteTable;
use vipfleet_core::routes::RouteOp;
use vipfleet_core::store::{LeaseStore, StoreOp};
use vipfleet_core::{RouteTableId, Vip};

use crate::lab::http;
use crate::lab::state::LabState;
use crate::report::{Ddb, Ec2};

/// Owner and epoch of every VIP's shard.
pub type Ownership = BTreeMap<Vip, (Option<String>, u64)>;

pub async fn ownership(state: &LabState, sdk: &SdkConfig) -> Result<Ownership> {
    let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk), state.aws.table.clone());
    let shards = store.read_shards().await.context("reading the lease table")?;
    let mut owners = BTreeMap::new();
    for shard in shards.records {
        owners.insert(
            shard.id.vip(),
            (shard.owner.as_ref().map(|o| o.to_string()), shard.epoch),
        );
    }
    Ok(owners)
}

/// How many times each VIP's shard changed owner between two readings,
/// for the VIPs in both. An epoch counts every change, even one that went
/// there and back; but a shard item deleted in between (`recreated`) starts
/// again from whatever epoch its claimant chose, so for those only a change
/// of owner counts (once). An owner's re-claim also steps the epoch: the
/// totals subtract the agents' count of those ([`reclaims_over`]).
pub fn moved(before: &Ownership, after: &Ownership, recreated: &BTreeSet<Vip>) -> BTreeMap<Vip, u64> {
    after
        .iter()
        .filter_map(|(vip, (owner, epoch))| {
            let (owner_before, epoch_before) = before.get(vip)?;
            let n = if recreated.contains(vip) {
                u64::from(owner != owner_before)
            } else {
                epoch.saturating_sub(*epoch_before)
            };
            (n > 0).then_some((*vip, n))
        })
        .collect()
}

/// Changes of owner between two readings (see [`moved`]).
pub fn moves(before: &Ownership, after: &Ownership, recreated: &BTreeSet<Vip>) -> u64 {
    moved(before, after, recreated).values().sum()
}

/// VIPs whose shard `instance` owns.
pub fn vips_of(owners: &Ownership, instance: &str) -> Vec<Vip> {
    owners
        .iter()
        .filter(|(_, (o, _))| o.as_deref() == Some(instance))
        .map(|(v, _)| *v)
        .collect()
}

/// Every route of the lab's tables in moto: (table, VIP) → ENI.
pub async fn routes(state: &LabState, sdk: &SdkConfig) -> Result<BTreeMap<(String, Vip), String>> {
    let ec2 = Ec2RouteTable::new(aws_sdk_ec2::Client::new(sdk));
    let tables: Vec<RouteTableId> = state.route_tables.iter().map(|t| RouteTableId(t.id.clone())).collect();
    let entries = ec2.describe_tables(&tables).await.context("describing route tables")?;
    Ok(entries
        .into_iter()
        .filter_map(|e| e.target.map(|t| ((e.table.0, e.destination), t.0)))
        .collect())
}

/// One agent process: its instance id and pid. A restarted agent is
/// another process whose counters start from zero again.
pub type Agent = (String, u32);

/// Counter totals of one agent's store and EC2 calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub ddb_writes: u64,
    pub ddb_reads: u64,
    pub ec2_mutating: u64,
    pub ec2_describe: u64,
}

impl Calls {
    pub fn ddb(&self) -> Ddb {
        Ddb {
            writes: self.ddb_writes,
            reads: self.ddb_reads,
        }
    }

    pub fn ec2(&self) -> Ec2 {
        Ec2 {
            mutating: self.ec2_mutating,
            describe: self.ec2_describe,
        }
    }
}

impl std::ops::Sub for Calls {
    type Output = Calls;
    fn sub(self, o: Calls) -> Calls {
        Calls {
            ddb_writes: self.ddb_writes.saturating_sub(o.ddb_writes),
            ddb_reads: self.ddb_reads.saturating_sub(o.ddb_reads),
            ec2_mutating: self.ec2_mutating.saturating_sub(o.ec2_mutating),
            ec2_describe: self.ec2_describe.saturating_sub(o.ec2_describe),
        }
    }
}

impl std::ops::Add for Calls {
    type Output = Calls;
    fn add(self, o: Calls) -> Calls {
        Calls {
            ddb_writes: self.ddb_writes + o.ddb_writes,
            ddb_reads: self.ddb_reads + o.ddb_reads,
            ec2_mutating: self.ec2_mutating + o.ec2_mutating,
            ec2_describe: self.ec2_describe + o.ec2_describe,
        }
    }
}

/// What the harness reads from one agent's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub calls: Calls,
    /// Lease table items the agent's last reads could not use, every kind.
    pub items_skipped: u64,
    /// The agent finds the lease table missing.
    pub table_missing: bool,
    /// Times the agent found its own node item gone and wrote it again.
    pub reregistrations: u64,
    /// Nodes this agent evicted on the peer probes' word.
    pub evictions: u64,
    /// Shards this agent claimed again as their owner (after a restart or a
    /// re-registration): an epoch step that moves nothing.
    pub reclaims: u64,
}

/// One reading of every agent that answers.
pub type Scrape = BTreeMap<Agent, Metrics>;

const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// The `/metrics` of every agent that answers, by process. An agent that is
/// down (crashed on purpose) is left out.
pub async fn scrape(state: &LabState) -> Scrape {
    scrape_with(state, parse_metrics).await
}

/// Every answering agent's `/metrics`, read by `parse`, by process.
pub async fn scrape_with<T>(state: &LabState, parse: impl Fn(&str) -> T) -> BTreeMap<Agent, T> {
    let mut by_agent = BTreeMap::new();
    for node in &state.nodes {
        let Ok(addr) = http::endpoint_addr(&node.dashboard_url) else {
            continue;
        };
        let Ok(answer) = http::request(addr, "GET", "/metrics", &[], "", METRICS_TIMEOUT).await else {
            continue;
        };
        by_agent.insert((node.instance_id.clone(), node.agent.pid), parse(&answer.body));
    }
    by_agent
}

/// The calls made between two [`scrape`]s, by the processes that answered
/// the second: one that died in between is not subtracted from the
/// survivors (its own calls since the first reading are lost with it), and
/// one that started in between (a new node, a restarted agent) counts from
/// zero.
pub fn calls_between(before: &Scrape, after: &Scrape) -> Calls {
    after.iter().fold(Calls::default(), |total, (agent, now)| {
        total + (now.calls - before.get(agent).map(|m| m.calls).unwrap_or_default())
    })
}

/// The calls over a series of readings: taking one just before killing or
/// restarting an agent keeps that process's calls in the total.
pub fn calls_over(readings: &[&Scrape]) -> Calls {
    readings
        .windows(2)
        .fold(Calls::default(), |total, pair| total + calls_between(pair[0], pair[1]))
}

/// Re-claims over a series of readings, counted as [`calls_between`]
/// counts calls.
pub fn reclaims_over(readings: &[&Scrape]) -> u64 {
    readings
        .windows(2)
        .flat_map(|pair| {
            pair[1].iter().map(|(agent, now)| {
                now.reclaims
                    .saturating_sub(pair[0].get(agent).map_or(0, |m| m.reclaims))
            })
        })
        .sum()
}

/// `name{op="…",…} value` → (name, the `op` label or "", value).
fn sample(line: &str) -> Option<(&str, &str, u64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()? as u64;
    let name = series.split('{').next().unwrap_or(series);
    let op = series
        .split_once("op=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("", |(op, _)| op);
    Some((name, op, value))
}

/// Reads the call counters (`vipfleet_store_calls_total`,
/// `vipfleet_ec2_calls_total`, classified by the core's own operation
/// lists) and the store's health out of a `/metrics` text.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for (name, op, value) in text.lines().filter(|l| !l.starts_with('#')).filter_map(sample) {
        match name {
            "vipfleet_store_calls_total" => match StoreOp::ALL.iter().find(|o| o.as_str() == op) {
                Some(o) if o.writes() => m.calls.ddb_writes += value,
                Some(_) => m.calls.ddb_reads += value,
                None => {}
            },
            "vipfleet_ec2_calls_total" => match RouteOp::ALL.iter().find(|o| o.as_str() == op) {
                Some(o) if o.mutates() => m.calls.ec2_mutating += value,
                Some(_) => m.calls.ec2_describe += value,
                None => {}
            },
            "vipfleet_items_skipped" => m.items_skipped += value,
            "vipfleet_store_table_missing" => m.table_missing = value > 0,
            "vipfleet_reregistrations_total" => m.reregistrations += value,
            "vipfleet_nodes_evicted_total" => m.evictions += value,
            "vipfleet_reclaims_total" => m.reclaims += value,
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vip {
        s.parse().unwrap()
    }

    #[test]
    fn moves_count_epoch_increases_and_recreated_items_by_owner() {
        let before = Ownership::from([
            (v("10.200.0.1"), (Some("a".into()), 1)),
            (v("10.200.0.2"), (Some("a".into()), 1)),
            (v("10.200.0.3"), (Some("b".into()), 4)),
            (v("10.200.0.4"), (Some("b".into()), 2)),
        ]);
        let after = Ownership::from([
            (v("10.200.0.1"), (Some("b".into()), 3)),
            (v("10.200.0.2"), (Some("a".into()), 1)),
            // Deleted and claimed again by its owner at a higher epoch: no move.
            (v("10.200.0.3"), (Some("b".into()), 9)),
            (v("10.200.0.4"), (Some("a".into()), 7)),
            // A new VIP's first claim is no move either.
            (v("10.200.0.5"), (Some("a".into()), 1)),
        ]);
        let recreated = BTreeSet::from([v("10.200.0.3"), v("10.200.0.4")]);
        assert_eq!(
            moved(&before, &after, &recreated),
            BTreeMap::from([(v("10.200.0.1"), 2), (v("10.200.0.4"), 1)])
        );
        assert_eq!(moves(&before, &after, &BTreeSet::new()), 2 + 5 + 5);
        assert_eq!(
            vips_of(&after, "a"),
            vec![v("10.200.0.2"), v("10.200.0.4"), v("10.200.0.5")]
        );
    }

    fn agent(name: &str, pid: u32) -> Agent {
        (name.to_string(), pid)
    }

    fn writes(n: u64) -> Metrics {
        Metrics {
            calls: Calls {
                ddb_writes: n,
                ..Calls::default()
            },
            ..Metrics::default()
        }
    }

    #[test]
    fn a_dead_agent_is_not_subtracted_and_a_new_one_counts_from_zero() {
        let before = Scrape::from([(agent("a", 1), writes(100)), (agent("victim", 2), writes(500))]);
        let after = Scrape::from([(agent("a", 1), writes(130)), (agent("joined", 3), writes(7))]);
        assert_eq!(calls_between(&before, &after).ddb_writes, 37);
    }

    #[test]
    fn a_restarted_agent_counts_from_zero_and_its_last_reading_is_kept() {
        let before = Scrape::from([(agent("a", 1), writes(100)), (agent("b", 2), writes(500))]);
        // Read just before b restarts: b's 20 writes since are kept.
        let before_restart = Scrape::from([(agent("a", 1), writes(110)), (agent("b", 2), writes(520))]);
        // b's new process (pid 9) has made 4 writes; fewer than its old
        // total, which must not hide them.
        let after = Scrape::from([(agent("a", 1), writes(130)), (agent("b", 9), writes(4))]);
        assert_eq!(calls_between(&before, &after).ddb_writes, 30 + 4);
        assert_eq!(calls_over(&[&before, &before_restart, &after]).ddb_writes, 30 + 20 + 4);
    }

    fn reclaimed(n: u64) -> Metrics {
        Metrics {
            reclaims: n,
            ..Metrics::default()
        }
    }

    #[test]
    fn a_restarted_agents_reclaims_count_from_zero() {
        let before = Scrape::from([(agent("a", 1), reclaimed(2)), (agent("b", 2), reclaimed(5))]);
        let before_restart = Scrape::from([(agent("a", 1), reclaimed(2)), (agent("b", 2), reclaimed(6))]);
        let after = Scrape::from([(agent("a", 1), reclaimed(3)), (agent("b", 9), reclaimed(4))]);
        assert_eq!(reclaims_over(&[&before, &before_restart, &after]), 1 + 1 + 4);
    }

    #[test]
    fn metrics_are_classified_by_the_cores_operation_lists() {
        let text = "# HELP x\n\
            vipfleet_store_calls_total{op=\"heartbeat\",outcome=\"ok\"} 10\n\
            vipfleet_store_calls_total{op=\"heartbeat\",outcome=\"error\"} 2\n\
            vipfleet_store_calls_total{op=\"retire\",outcome=\"ok\"} 1\n\
            vipfleet_store_calls_total{op=\"read_nodes\",outcome=\"ok\"} 40\n\
            vipfleet_store_calls_total{op=\"read_layout\",outcome=\"ok\"} 3\n\
            vipfleet_ec2_calls_total{op=\"replace_route\",outcome=\"ok\"} 3\n\
            vipfleet_ec2_calls_total{op=\"delete_route\",outcome=\"ok\"} 2\n\
            vipfleet_ec2_calls_total{op=\"describe_route_tables\",outcome=\"ok\"} 1\n\
            vipfleet_items_skipped{kind=\"node\"} 2\n\
            vipfleet_items_skipped{kind=\"other\"} 1\n\
            vipfleet_store_table_missing 1\n\
            vipfleet_reregistrations_total 1\n\
            vipfleet_nodes_evicted_total 2\n\
            vipfleet_reclaims_total 4\n\
            other_total{op=\"heartbeat\"} 99\n";
        assert_eq!(
            parse_metrics(text),
            Metrics {
                calls: Calls {
                    ddb_writes: 13,
                    ddb_reads: 43,
                    ec2_mutating: 5,
                    ec2_describe: 1
                },
                items_skipped: 3,
                table_missing: true,
                reregistrations: 1,
                evictions: 2,
                reclaims: 4,
            }
        );
    }
}
