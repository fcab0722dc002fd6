//! The test's own view of moto, through the plain AWS SDK (not the agent's
//! adapters, so a bug there cannot hide itself): building a VPC with route
//! tables and ENIs, and reading back the lease table and the VIP routes.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::REGION;

/// The test VPC; the fleet's VIPs (10.200.0.0/24) lie outside it.
pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const SUBNET_CIDR: &str = "10.0.1.0/24";
pub const AZ: &str = "us-east-1a";

/// A moto call that takes longer is stuck: fail the poll, not hang the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// SDK configuration for moto: fixed dummy credentials, so a test can never
/// reach a real account whatever the shell's environment holds.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let credentials = Credentials::new("testing", "testing", None, None, "vipfleet-tests");
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .timeout_config(TimeoutConfig::builder().operation_timeout(CALL_TIMEOUT).build())
        .load()
        .await
}

/// One ENI of the lab: what a node's `[node]` section names.
#[derive(Clone, Debug)]
pub struct Eni {
    pub id: String,
    pub private_ip: String,
}

/// A VPC with one subnet, some route tables and some ENIs, in moto.
#[derive(Clone, Debug)]
pub struct Lab {
    pub vpc: String,
    pub route_tables: Vec<String>,
    pub enis: Vec<Eni>,
}

impl Lab {
    pub async fn create(ec2: &aws_sdk_ec2::Client, route_tables: usize, enis: usize) -> Lab {
        let vpc = ec2.create_vpc().cidr_block(VPC_CIDR).send().await.expect("CreateVpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(SUBNET_CIDR)
            .availability_zone(AZ)
            .send()
            .await
            .expect("CreateSubnet");
        let subnet = subnet
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_string();
        let mut lab = Lab {
            vpc,
            route_tables: Vec::new(),
            enis: Vec::new(),
        };
        for _ in 0..route_tables {
            let table = ec2
                .create_route_table()
                .vpc_id(&lab.vpc)
                .send()
                .await
                .expect("CreateRouteTable");
            let id = table.route_table().and_then(|t| t.route_table_id()).expect("rtb id");
            lab.route_tables.push(id.to_string());
        }
        for _ in 0..enis {
            let eni = ec2
                .create_network_interface()
                .subnet_id(&subnet)
                .send()
                .await
                .expect("CreateNetworkInterface");
            let eni = eni.network_interface().expect("network interface");
            lab.enis.push(Eni {
                id: eni.network_interface_id().expect("eni id").to_string(),
                private_ip: eni.private_ip_address().expect("eni private ip").to_string(),
            });
        }
        lab
    }
}

/// A shard item of the lease table, as the test reads it. A shard is one
/// VIP, named by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub owner: Option<String>,
    pub epoch: u64,
    /// The shard's VIP (its key), as a one-element list.
    pub vips: Vec<String>,
}

/// A node item of the lease table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub state: String,
    pub hb: u64,
    pub eni: String,
}

/// Every item of `table`, with a consistent read.
async fn scan_all(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<std::collections::HashMap<String, AttributeValue>>, String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| format!("Scan {table}: {}", DisplayErrorContext(&e)))?;
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

fn s(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn n(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Result<u64, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| format!("{name} = {v} is not a u64")),
        other => Err(format!("{name} is not a number: {other:?}")),
    }
}

/// The lease table's shard items (by VIP) and node items (by instance id).
pub async fn lease_table(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(BTreeMap<String, Shard>, BTreeMap<String, Node>), String> {
    let mut shards = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for item in scan_all(dynamo, table).await? {
        let pk = s(&item, "pk").ok_or("item without pk")?;
        if let Some(vip) = pk.strip_prefix("shard#") {
            let shard = Shard {
                owner: s(&item, "owner"),
                epoch: n(&item, "epoch").map_err(|e| format!("{pk}: {e}"))?,
                vips: vec![vip.to_string()],
            };
            shards.insert(vip.to_string(), shard);
        } else if let Some(id) = pk.strip_prefix("node#") {
            let node = Node {
                state: s(&item, "state").unwrap_or_default(),
                hb: n(&item, "hb").map_err(|e| format!("{pk}: {e}"))?,
                eni: s(&item, "eni").unwrap_or_default(),
            };
            nodes.insert(id.to_string(), node);
        }
    }
    Ok((shards, nodes))
}

/// The ENI each route of `tables` points to, by (route table, destination
/// CIDR); `None` for a route with another kind of target.
pub async fn routes(
    ec2: &aws_sdk_ec2::Client,
    tables: &[String],
) -> Result<BTreeMap<(String, String), Option<String>>, String> {
    let answer = ec2
        .describe_route_tables()
        .set_route_table_ids(Some(tables.to_vec()))
        .send()
        .await
        .map_err(|e| format!("DescribeRouteTables: {}", DisplayErrorContext(&e)))?;
    let mut routes = BTreeMap::new();
    for table in answer.route_tables() {
        let id = table.route_table_id().unwrap_or_default().to_string();
        for route in table.routes() {
            if let Some(cidr) = route.destination_cidr_block() {
                routes.insert(
                    (id.clone(), cidr.to_string()),
                    route.network_interface_id().map(str::to_string),
                );
            }
        }
    }
    Ok(routes)
}
