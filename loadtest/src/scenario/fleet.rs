//! What the harness reads of the fleet while a scenario runs: shard owners
//! and epochs from the lease table, routes from EC2 (moto), and the agents'
//! call counters from their `/metrics` endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use vipfleet_agent::aws::dynamo::DynamoLeaseStore;
use vipfleet_agent::aws::ec2::Ec2RouteTable;
use vipfleet_core::routes::RouteTable;
use vipfleet_core::store::LeaseStore;
use vipfleet_core::{RouteTableId, Vip};

use crate::lab::http;
use crate::lab::state::LabState;

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

/// Changes of owner between two readings (sum of epoch increases).
pub fn moves(before: &Ownership, after: &Ownership) -> u64 {
    after
        .iter()
        .map(|(vip, (_, epoch))| epoch.saturating_sub(before.get(vip).map_or(0, |(_, e)| *e)))
        .sum()
}

/// VIPs whose shard `instance` owns.
pub fn vips_of(owners: &Ownership, instance: &str) -> Vec<Vip> {
    owners
        .iter()
        .filter(|(_, (o, _))| o.as_deref() == Some(instance))
        .map(|(v, _)| *v)
        .collect()
}

/// Kernel route changes the route mirror made between `from_ms` and
/// `to_ms`: what the VPC would have done to traffic.
pub fn route_changes(state: &LabState, from_ms: u64, to_ms: u64) -> u64 {
    let Ok(text) = std::fs::read_to_string(&state.mirror.changes_log) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|c| c.get("t_unix_ms").and_then(serde_json::Value::as_u64))
        .filter(|t| (from_ms..to_ms).contains(t))
        .count() as u64
}

/// Every route of the lab's tables in moto: (table, VIP) → ENI.
pub async fn routes(state: &LabState, sdk: &SdkConfig) -> Result<BTreeMap<(String, Vip), String>> {
    let ec2 = Ec2RouteTable::new(aws_sdk_ec2::Client::new(sdk));
    let tables: Vec<RouteTableId> = state.route_tables.iter().map(|t| RouteTableId(t.id.clone())).collect();
    let entries = ec2.describe(&tables).await.context("describing route tables")?;
    Ok(entries
        .into_iter()
        .filter_map(|e| e.target.map(|t| ((e.table.0, e.destination), t.0)))
        .collect())
}

/// Counter totals scraped from one agent's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub ddb_writes: u64,
    pub ddb_reads: u64,
    pub ec2_mutating: u64,
    pub ec2_describe: u64,
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

/// Store operations that write, by the `op` label the agent uses.
const WRITE_OPS: [&str; 4] = ["heartbeat", "acquire", "handoff", "mark_dead"];
const READ_OPS: [&str; 3] = ["read_nodes", "read_shards", "read_shard"];
const MUTATING_EC2_OPS: [&str; 2] = ["replace_route", "create_route"];
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// The store and EC2 call counters of every agent that answers, by
/// instance id. An agent that is down (crashed on purpose) is left out.
pub async fn calls(state: &LabState) -> BTreeMap<String, Calls> {
    let mut by_agent = BTreeMap::new();
    for node in &state.nodes {
        let Ok(addr) = http::endpoint_addr(&node.dashboard_url) else {
            continue;
        };
        let Ok(answer) = http::request(addr, "GET", "/metrics", &[], "", METRICS_TIMEOUT).await else {
            continue;
        };
        by_agent.insert(node.instance_id.clone(), parse_calls(&answer.body));
    }
    by_agent
}

/// The calls made between two [`calls`] readings, by the agents that
/// answered the second: a victim that died in between is not subtracted
/// from the survivors (its own calls before it died are lost with it), and
/// an agent that joined counts from zero.
pub fn calls_between(before: &BTreeMap<String, Calls>, after: &BTreeMap<String, Calls>) -> Calls {
    after.iter().fold(Calls::default(), |total, (agent, now)| {
        total + (*now - before.get(agent).copied().unwrap_or_default())
    })
}

/// Reads `vipfleet_store_calls_total{op="…",…} N` and
/// `vipfleet_ec2_calls_total{op="…",…} N` samples.
pub fn parse_calls(text: &str) -> Calls {
    let mut calls = Calls::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let value = value as u64;
        let op = series
            .split_once("op=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(op, _)| op)
            .unwrap_or("");
        if series.starts_with("vipfleet_store_calls_total") {
            if WRITE_OPS.contains(&op) {
                calls.ddb_writes += value;
            } else if READ_OPS.contains(&op) {
                calls.ddb_reads += value;
            }
        } else if series.starts_with("vipfleet_ec2_calls_total") {
            if MUTATING_EC2_OPS.contains(&op) {
                calls.ec2_mutating += value;
            } else if op == "describe_route_tables" {
                calls.ec2_describe += value;
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_count_epoch_increases() {
        let v = |s: &str| s.parse::<Vip>().unwrap();
        let before = Ownership::from([(v("10.200.0.1"), (Some("a".into()), 1)), (v("10.200.0.2"), (None, 0))]);
        let after = Ownership::from([
            (v("10.200.0.1"), (Some("b".into()), 3)),
            (v("10.200.0.2"), (Some("a".into()), 1)),
        ]);
        assert_eq!(moves(&before, &after), 3);
        assert_eq!(vips_of(&after, "a"), vec![v("10.200.0.2")]);
    }

    #[test]
    fn a_dead_agent_is_not_subtracted_and_a_new_one_counts_from_zero() {
        let calls = |writes| Calls {
            ddb_writes: writes,
            ..Calls::default()
        };
        let before = BTreeMap::from([("a".to_string(), calls(100)), ("victim".to_string(), calls(500))]);
        let after = BTreeMap::from([("a".to_string(), calls(130)), ("joined".to_string(), calls(7))]);
        assert_eq!(calls_between(&before, &after), calls(37));
    }

    #[test]
    fn call_counters_are_summed_by_kind() {
        let text = "# HELP x\n\
            vipfleet_store_calls_total{op=\"heartbeat\",outcome=\"ok\"} 10\n\
            vipfleet_store_calls_total{op=\"heartbeat\",outcome=\"error\"} 2\n\
            vipfleet_store_calls_total{op=\"read_nodes\",outcome=\"ok\"} 40\n\
            vipfleet_ec2_calls_total{op=\"replace_route\",outcome=\"ok\"} 3\n\
            vipfleet_ec2_calls_total{op=\"describe_route_tables\",outcome=\"ok\"} 1\n\
            other_total{op=\"heartbeat\"} 99\n";
        assert_eq!(
            parse_calls(text),
            Calls {
                ddb_writes: 12,
                ddb_reads: 40,
                ec2_mutating: 3,
                ec2_describe: 1
            }
        );
    }
}
