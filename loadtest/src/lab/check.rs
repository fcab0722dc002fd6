//! Whether a lab has converged: every VIP's shard owned by a lab node (the
//! lease table in moto), every route table's route for the VIP pointing at
//! the owner's ENI (moto's EC2), and every router namespace's kernel route
//! pointing at the owner's address (the route mirror's work). `lab up`
//! waits for this; the harness can use it to tell when a fault has healed.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use aws_config::SdkConfig;
use vipfleet_agent::aws::dynamo::DynamoLeaseStore;
use vipfleet_agent::aws::ec2::Ec2RouteTable;
use vipfleet_core::store::LeaseStore;
use vipfleet_core::{RouteTableId, Vip};

use super::netns;
use super::state::LabState;

/// At most this many problems are listed (the counts say the rest).
const MAX_PROBLEMS: usize = 6;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Convergence {
    pub vips: usize,
    /// VIPs whose shard is owned by one of the lab's nodes.
    pub owned: usize,
    /// (route table, VIP) pairs expected: VIPs × route tables.
    pub routes: usize,
    /// Pairs whose moto route targets the owner's ENI.
    pub moto_ok: usize,
    /// Pairs whose router kernel route goes via the owner's address.
    pub kernel_ok: usize,
    /// Owner of each VIP (instance id), where owned.
    pub owners: BTreeMap<Vip, String>,
    /// The first few disagreements, for progress lines and errors.
    pub problems: Vec<String>,
}

impl Convergence {
    pub fn converged(&self) -> bool {
        self.owned == self.vips && self.moto_ok == self.routes && self.kernel_ok == self.routes
    }

    /// Whether `nodes` nodes each own a fair share of the owned VIPs (the
    /// floor or one more; a node that owns none holds a share of 0): a
    /// fleet that is still handing shards over to a late joiner is routed
    /// but not settled.
    pub fn balanced(&self, nodes: usize) -> bool {
        let counts = self.shares();
        let floor = self.owners.len() / nodes.max(1);
        let idle_nodes_fair = counts.len() == nodes || (counts.len() < nodes && floor == 0);
        idle_nodes_fair && counts.values().all(|n| *n == floor || *n == floor + 1)
    }

    /// How many VIPs each owner holds.
    fn shares(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.owners.values() {
            *counts.entry(owner.as_str()).or_default() += 1;
        }
        counts
    }

    pub fn summary(&self) -> String {
        let shares: Vec<String> = self.shares().values().map(ToString::to_string).collect();
        let shares = if shares.is_empty() {
            "none".to_string()
        } else {
            shares.join("/")
        };
        format!(
            "{}/{} VIPs owned (shares {}), {}/{} routes in moto, {}/{} kernel routes",
            self.owned, self.vips, shares, self.moto_ok, self.routes, self.kernel_ok, self.routes
        )
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// Reads the lease table, the route tables and the routers' kernel routes.
pub async fn check(state: &LabState, sdk: &SdkConfig) -> Result<Convergence> {
    let mut c = Convergence {
        vips: state.vips.len(),
        routes: state.vips.len() * state.route_tables.len(),
        ..Default::default()
    };
    let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk), state.aws.table.clone());
    let shards = store
        .read_shards()
        .await
        .map_err(|e| anyhow!("reading shards from {}: {e}", state.aws.table))?;
    for vip in &state.vips {
        let owner = shards
            .records
            .iter()
            .find(|s| s.id.vip() == *vip)
            .and_then(|s| s.owner.as_ref())
            .map(|o| o.to_string());
        match owner {
            Some(owner) if state.node_by_instance(&owner).is_some() => {
                c.owned += 1;
                c.owners.insert(*vip, owner);
            }
            Some(owner) => c.problem(format!("{vip} owned by {owner}, not a lab node")),
            None => c.problem(format!("{vip} has no owner")),
        }
    }

    let ids: Vec<RouteTableId> = state.route_tables.iter().map(|t| RouteTableId(t.id.clone())).collect();
    let entries = Ec2RouteTable::new(aws_sdk_ec2::Client::new(sdk))
        .describe_tables(&ids)
        .await
        .map_err(|e| anyhow!("reading route tables: {e}"))?;
    for table in &state.route_tables {
        let kernel = netns::mirror_routes(&table.router_ns)?;
        for vip in &state.vips {
            let Some(owner) = c.owners.get(vip).and_then(|o| state.node_by_instance(o)) else {
                continue;
            };
            let moto_target = entries
                .iter()
                .find(|e| e.table.0 == table.id && e.destination == *vip)
                .and_then(|e| e.target.as_ref().map(|t| t.0.clone()));
            if moto_target.as_deref() == Some(owner.eni.as_str()) {
                c.moto_ok += 1;
            } else {
                c.problem(format!(
                    "{}: {vip} -> {:?} in moto, owner {} has {}",
                    table.id, moto_target, owner.instance_id, owner.eni
                ));
            }
            let via = kernel
                .iter()
                .find(|r| r.cidr().as_ref() == Some(vip))
                .and_then(|r| r.gateway.clone());
            if via.as_deref() == Some(owner.ip.to_string().as_str()) {
                c.kernel_ok += 1;
            } else {
                c.problem(format!(
                    "{}: {vip} via {:?} in the kernel, owner is at {}",
                    table.router_ns, via, owner.ip
                ));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(owners: &[&str]) -> Convergence {
        let owners: BTreeMap<Vip, String> = owners
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    Vip::new([10, 200, 0, i as u8 + 1].into(), 32).expect("a /32"),
                    o.to_string(),
                )
            })
            .collect();
        Convergence {
            vips: owners.len(),
            owned: owners.len(),
            owners,
            ..Default::default()
        }
    }

    #[test]
    fn a_fleet_is_balanced_when_every_node_holds_its_fair_share() {
        assert!(owned_by(&["a", "a", "b", "b", "c", "c"]).balanced(3));
        assert!(owned_by(&["a", "a", "b", "b", "c"]).balanced(3));
        // A hand-off to the late joiner c is still to come.
        assert!(!owned_by(&["a", "a", "a", "b", "b", "c"]).balanced(3));
        // A node that holds nothing is not its share.
        assert!(!owned_by(&["a", "a", "a", "b", "b", "b"]).balanced(3));
        assert!(owned_by(&["a", "a", "a", "b", "b", "b"]).balanced(2));
        // Fewer VIPs than nodes: a node with none has its share.
        assert!(owned_by(&["a", "b"]).balanced(3));
        assert!(!owned_by(&["a", "a"]).balanced(3));
        assert_eq!(
            owned_by(&["a", "b", "b"]).summary(),
            "3/3 VIPs owned (shares 1/2), 0/0 routes in moto, 0/0 kernel routes"
        );
    }
}
