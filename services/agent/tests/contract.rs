//! The contract suites of `vipfleet_core::contract`, run against the
//! in-memory fakes always, and against DynamoDB and EC2 (moto) through the
//! agent's real adapters when `VIPFLEET_TEST_AWS_ENDPOINT` names a moto
//! server (the test runner starts one; CI always sets it).
//!
//! Against moto each test makes its own table or VPC with unique names, so
//! the tests run in parallel and on a moto that has served other runs.
//! Start moto with `tests/setup/moto_server.py`, not plain
//! `moto_server`: the latter lets racing conditional writes both succeed.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use vipfleet_agent::aws::dynamo::{init_table, Billing, DynamoLeaseStore, TableInit};
use vipfleet_agent::aws::ec2::{Ec2ErrorKind, Ec2RouteTable};
use vipfleet_agent::aws::local_endpoint_config;
use vipfleet_core::contract::{lease_store_contract, route_table_contract, route_table_contract_with, RouteDeviations};
use vipfleet_core::fake::{FakeLeaseStore, FakeRouteTable};
use vipfleet_core::store::{
    AcquireOutcome, AcquireRequest, BeatKind, Expect, HeartbeatOutcome, HeartbeatRequest, LeaseStore, MarkDeadRequest,
    StoreErrorKind,
};
use vipfleet_core::{
    EniId, Incarnation, LayoutId, NodeConfig, NodeId, NodeInfo, NodeState, RouteTableId, ShardId, Vip,
};

const ENDPOINT_VAR: &str = "VIPFLEET_TEST_AWS_ENDPOINT";
/// The test VPC; the contract's VIPs (10.200.0.0/24) lie outside it.
const VPC_CIDR: &str = "10.0.0.0/16";
const SUBNET_CIDR: &str = "10.0.1.0/24";

/// The moto endpoint, or `None` after saying loudly that the test skips.
fn moto(test: &str) -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the stderr stream: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (no moto): set {ENDPOINT_VAR} (e.g. http://127.0.0.1:5055) to run {test}"
            );
            None
        }
    }
}

/// A name no other test or run uses.
fn unique(kind: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("vipfleet-{kind}-{}-{nanos}", std::process::id())
}

fn tables(ids: &[&str]) -> Vec<RouteTableId> {
    ids.iter().map(|id| RouteTableId(id.to_string())).collect()
}

fn enis(ids: &[&str]) -> Vec<EniId> {
    ids.iter().map(|id| EniId(id.to_string())).collect()
}

#[tokio::test]
async fn lease_store_contract_on_the_fake() {
    let store = FakeLeaseStore::new();
    // Twice on one table: the suite only sees its own ids.
    lease_store_contract(&store, "fake-run-1").await;
    lease_store_contract(&store, "fake-run-2").await;
}

#[tokio::test]
async fn route_table_contract_on_the_fake() {
    let ids = tables(&["rtb-1", "rtb-2"]);
    let fake = FakeRouteTable::new(ids.clone());
    route_table_contract(&fake, &ids, &enis(&["eni-1", "eni-2"])).await;
}

async fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&local_endpoint_config(endpoint).await)
}

async fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&local_endpoint_config(endpoint).await)
}

#[tokio::test]
async fn lease_store_contract_on_moto() {
    let Some(endpoint) = moto("lease_store_contract_on_moto") else {
        return;
    };
    let client = dynamo_client(&endpoint).await;
    let table = unique("contract");
    let first = init_table(&client, &table, Billing::OnDemand)
        .await
        .expect("init_table");
    assert_eq!(
        first,
        TableInit {
            created: true,
            ttl_enabled: true
        }
    );
    let again = init_table(&client, &table, Billing::OnDemand)
        .await
        .expect("init_table again");
    assert_eq!(
        again,
        TableInit {
            created: false,
            ttl_enabled: false
        },
        "init_table must be idempotent"
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("expires_at"));

    let store = DynamoLeaseStore::new(client, &table);
    lease_store_contract(&store, "moto-run-1").await;
    lease_store_contract(&store, "moto-run-2").await;
}

#[tokio::test]
async fn provisioned_table_on_moto() {
    let Some(endpoint) = moto("provisioned_table_on_moto") else {
        return;
    };
    let client = dynamo_client(&endpoint).await;
    let table = unique("provisioned");
    let billing: Billing = "provisioned".parse().expect("billing");
    init_table(&client, &table, billing).await.expect("init_table");
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe");
    let throughput = described
        .table()
        .and_then(|t| t.provisioned_throughput())
        .expect("throughput");
    assert!(throughput.read_capacity_units().unwrap_or(0) > 0);
    assert!(throughput.write_capacity_units().unwrap_or(0) > 0);
}

/// What the suite cannot see through the trait: the TTL bookkeeping on the
/// item, and the retry safety of claims (which the fake does not model).
#[tokio::test]
async fn dynamo_item_bookkeeping_on_moto() {
    let Some(endpoint) = moto("dynamo_item_bookkeeping_on_moto") else {
        return;
    };
    let client = dynamo_client(&endpoint).await;
    let table = unique("bookkeeping");
    init_table(&client, &table, Billing::OnDemand)
        .await
        .expect("init_table");
    let store = DynamoLeaseStore::new(client.clone(), &table).with_consistent_node_reads(true);
    let info = NodeInfo {
        id: NodeId::new("i-book"),
        eni: EniId("eni-book".into()),
        az: "us-east-1a".into(),
        addr: "10.0.1.5".into(),
        weight: 1,
        version: "test".into(),
    };
    let inc = Incarnation(0xabc);
    let beat = HeartbeatRequest {
        info: info.clone(),
        config: config(),
        inc,
        state: NodeState::Active,
        kind: BeatKind::Register,
        epoch_floor: 0,
        register_hb: 1,
    };
    store.heartbeat(&beat).await.expect("register");
    let dead = MarkDeadRequest {
        node: info.id.clone(),
        inc,
        observed_hb: 1,
    };
    store.mark_dead(&dead).await.expect("mark_dead");
    let raw = |client: aws_sdk_dynamodb::Client, table: String| async move {
        client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S("node#i-book".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item")
            .item()
            .cloned()
            .expect("node item")
    };
    let item = raw(client.clone(), table.clone()).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let expires: u64 = match item.get("expires_at") {
        Some(AttributeValue::N(n)) => n.parse().expect("expires_at"),
        other => panic!("expires_at after mark_dead: {other:?}"),
    };
    assert!(
        expires > now + 3600 && expires <= now + 2 * 86_400,
        "expires_at {expires}, now {now}"
    );
    assert_eq!(item.get("inc"), Some(&AttributeValue::S(inc.to_string())));
    assert!(matches!(item.get("updated_at"), Some(AttributeValue::N(_))));

    let beat = HeartbeatRequest {
        kind: BeatKind::Renew,
        ..beat
    };
    store.heartbeat(&beat).await.expect("beat");
    let item = raw(client.clone(), table.clone()).await;
    assert_eq!(item.get("expires_at"), None, "a beat clears the TTL");
    assert_eq!(item.get("state"), Some(&AttributeValue::S("active".into())));

    // A claim retried after its first attempt landed reports the shard as
    // ours (the second call stands in for the SDK's retry).
    let claim = AcquireRequest {
        shard: shard("10.200.0.1/32"),
        me: info.id.clone(),
        inc,
        expect: Expect::Free { next_epoch: 1 },
    };
    assert_eq!(store.acquire(&claim).await, Ok(AcquireOutcome::Acquired { epoch: 1 }));
    assert_eq!(store.acquire(&claim).await, Ok(AcquireOutcome::Acquired { epoch: 1 }));
    let other = AcquireRequest {
        inc: Incarnation(0xdef),
        ..claim
    };
    assert_eq!(store.acquire(&other).await, Ok(AcquireOutcome::LostRace));
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("shard#10.200.0.1/32".into()))
        .send()
        .await
        .expect("get shard")
        .item()
        .cloned()
        .expect("shard item");
    assert!(matches!(item.get("moved_at"), Some(AttributeValue::N(_))));
}

/// A VPC with two route tables and two ENIs in moto.
struct Lab {
    vpc: String,
    tables: Vec<RouteTableId>,
    enis: Vec<EniId>,
}

async fn make_lab(ec2: &aws_sdk_ec2::Client) -> Lab {
    let vpc = ec2.create_vpc().cidr_block(VPC_CIDR).send().await.expect("create_vpc");
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block(SUBNET_CIDR)
        .send()
        .await
        .expect("create_subnet");
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string();
    let mut tables = Vec::new();
    let mut enis = Vec::new();
    for _ in 0..2 {
        let table = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .expect("create_route_table");
        let table = table.route_table().and_then(|t| t.route_table_id()).expect("rtb id");
        tables.push(RouteTableId(table.to_string()));
        let eni = ec2
            .create_network_interface()
            .subnet_id(&subnet)
            .send()
            .await
            .expect("create_network_interface");
        let eni = eni
            .network_interface()
            .and_then(|e| e.network_interface_id())
            .expect("eni id");
        enis.push(EniId(eni.to_string()));
    }
    Lab { vpc, tables, enis }
}

#[tokio::test]
async fn route_table_contract_on_moto() {
    let Some(endpoint) = moto("route_table_contract_on_moto") else {
        return;
    };
    let ec2 = ec2_client(&endpoint).await;
    let lab = make_lab(&ec2).await;
    // moto 5 answers a CreateRoute on an existing destination by replacing
    // the route; EC2 answers RouteAlreadyExists (covered by the mocks).
    let moto_deviations = RouteDeviations {
        create_replaces_existing: true,
    };
    route_table_contract_with(&Ec2RouteTable::new(ec2), &lab.tables, &lab.enis, moto_deviations).await;
}

#[tokio::test]
async fn ec2_start_up_calls_on_moto() {
    let Some(endpoint) = moto("ec2_start_up_calls_on_moto") else {
        return;
    };
    let ec2 = ec2_client(&endpoint).await;
    let lab = make_lab(&ec2).await;
    let routes = Ec2RouteTable::new(ec2.clone());

    let eni = &lab.enis[0];
    routes.disable_source_dest_check(eni).await.expect("source/dest check");
    let check = ec2
        .describe_network_interface_attribute()
        .network_interface_id(&eni.0)
        .attribute(aws_sdk_ec2::types::NetworkInterfaceAttribute::SourceDestCheck)
        .send()
        .await
        .expect("describe attribute");
    assert_eq!(check.source_dest_check().and_then(|v| v.value()), Some(false));
    let missing_eni = routes
        .disable_source_dest_check(&EniId("eni-0000000000000dead".into()))
        .await;
    assert_eq!(missing_eni.map_err(|e| e.kind), Err(Ec2ErrorKind::NotFound));

    ec2.associate_vpc_cidr_block()
        .vpc_id(&lab.vpc)
        .cidr_block("10.1.0.0/16")
        .send()
        .await
        .expect("secondary CIDR");
    let cidrs = routes.vpc_cidrs(&lab.vpc).await.expect("vpc_cidrs");
    let expected: Vec<Vip> = ["10.0.0.0/16", "10.1.0.0/16"]
        .iter()
        .map(|c| c.parse().expect("cidr"))
        .collect();
    assert_eq!(cidrs, expected);
    let missing_vpc = routes.vpc_cidrs("vpc-0000000000000dead").await;
    assert_eq!(missing_vpc.map_err(|e| e.kind), Err(Ec2ErrorKind::NotFound));

    let unknown = RouteTableId("rtb-0000000000000dead".into());
    assert_eq!(routes.missing_route_tables(&lab.tables).await, Ok(vec![]));
    let asked = [lab.tables[0].clone(), unknown.clone(), lab.tables[1].clone()];
    assert_eq!(routes.missing_route_tables(&asked).await, Ok(vec![unknown]));
}

/// Racing claims of one free shard: DynamoDB's conditional write lets
/// exactly one through, whatever the interleaving.
async fn one_winner<S: LeaseStore + Clone + 'static>(store: S, shard: ShardId) {
    let mut racers = Vec::new();
    for i in 0..5u64 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            let claim = AcquireRequest {
                shard,
                me: NodeId::new(format!("racer-{i}")),
                inc: Incarnation(i),
                expect: Expect::Free { next_epoch: 1 },
            };
            store.acquire(&claim).await.expect("acquire")
        }));
    }
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("racer"));
    }
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, AcquireOutcome::Acquired { epoch: 1 }))
        .count();
    let losers = outcomes.iter().filter(|o| **o == AcquireOutcome::LostRace).count();
    assert_eq!(
        (winners, losers),
        (1, 4),
        "racing conditional writes: {outcomes:?}. Against moto, this fails when moto serves requests in \
         parallel (its conditional writes are not atomic): start it with tests/setup/moto_server.py"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_have_one_winner() {
    one_winner(FakeLeaseStore::new(), shard("10.200.0.9/32")).await;
    let Some(endpoint) = moto("racing_claims_have_one_winner (moto half)") else {
        return;
    };
    let client = dynamo_client(&endpoint).await;
    let table = unique("race");
    init_table(&client, &table, Billing::OnDemand)
        .await
        .expect("init_table");
    one_winner(DynamoLeaseStore::new(client, &table), shard("10.200.0.9/32")).await;
}

fn shard(vip: &str) -> ShardId {
    vip.parse().expect("shard")
}

fn config() -> NodeConfig {
    NodeConfig {
        layout: LayoutId("0011223344556677".into()),
        route_tables: vec![RouteTableId("rtb-1".into())],
        lease_ttl: std::time::Duration::from_millis(3000),
        heartbeat_interval: std::time::Duration::from_millis(1000),
        peer_port: Some(7946),
    }
}

/// What operators do to a table by hand, against the real adapter: items
/// it cannot read are skipped and named, never a failed read; a vanished
/// node item is reported missing (the agent writes it again); a deleted
/// table is its own error.
#[tokio::test]
async fn hand_edits_of_the_table_on_moto() {
    let Some(endpoint) = moto("hand_edits_of_the_table_on_moto") else {
        return;
    };
    let client = dynamo_client(&endpoint).await;
    let table = unique("hand-edits");
    init_table(&client, &table, Billing::OnDemand)
        .await
        .expect("init_table");
    let store = DynamoLeaseStore::new(client.clone(), &table).with_consistent_node_reads(true);
    let info = NodeInfo {
        id: NodeId::new("i-real"),
        eni: EniId("eni-real".into()),
        az: "us-east-1a".into(),
        addr: "10.0.1.5".into(),
        weight: 1,
        version: "test".into(),
    };
    let inc = Incarnation(0x5eed);
    let mut beat = HeartbeatRequest {
        info: info.clone(),
        config: config(),
        inc,
        state: NodeState::Active,
        kind: BeatKind::Register,
        epoch_floor: 0,
        register_hb: 1,
    };
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::Beat(1)));
    let put = |item: Vec<(&'static str, AttributeValue)>| {
        let client = client.clone();
        let table = table.clone();
        async move {
            client
                .put_item()
                .table_name(table)
                .set_item(Some(item.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
                .send()
                .await
                .expect("put_item by hand");
        }
    };
    let text = |v: &str| AttributeValue::S(v.into());
    // `aws dynamodb put-item --item '{"pk":{"S":"node#test"}}'`, a node
    // item with `hb` as a string, and a shard item with a bad epoch.
    put(vec![("pk", text("node#test"))]).await;
    put(vec![
        ("pk", text("node#stringy")),
        ("hb", text("7")),
        ("inc", text("01")),
        ("eni", text("eni-x")),
    ])
    .await;
    put(vec![("pk", text("shard#10.200.0.7/32")), ("epoch", text("seven"))]).await;
    put(vec![("pk", text("shard#10.200.0.8/32"))]).await;

    let nodes = store.read_nodes().await.expect("a junk item never fails the read");
    assert_eq!(nodes.records.len(), 1, "{nodes:?}");
    assert_eq!(nodes.records[0].info.id, info.id);
    assert_eq!(
        nodes.records[0].config.as_deref(),
        Some(&config()),
        "the item announces the configuration"
    );
    let mut skipped: Vec<(&str, Option<&str>)> = nodes
        .skipped
        .iter()
        .map(|s| (s.key.as_str(), s.node.as_ref().map(NodeId::as_str)))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [("node#stringy", Some("stringy")), ("node#test", Some("test"))]
    );
    let shards = store.read_shards().await.expect("shards");
    assert_eq!(shards.records.len(), 1, "a bare shard item is a free shard: {shards:?}");
    assert_eq!((shards.records[0].owner.clone(), shards.records[0].epoch), (None, 0));
    assert_eq!(shards.skipped.len(), 1);
    assert_eq!(shards.skipped[0].shard, Some(shard("10.200.0.7/32")));
    assert!(shards.skipped[0].reason.contains("epoch"), "{:?}", shards.skipped[0]);
    // The bare item can be claimed; the broken one cannot be read.
    let claim = AcquireRequest {
        shard: shard("10.200.0.8/32"),
        me: info.id.clone(),
        inc,
        expect: Expect::Free { next_epoch: 3 },
    };
    assert_eq!(store.acquire(&claim).await, Ok(AcquireOutcome::Acquired { epoch: 3 }));
    let broken = store.read_shard(shard("10.200.0.7/32")).await;
    assert_eq!(broken.map_err(|e| e.kind), Err(StoreErrorKind::Corrupt));

    // Our own item broken by hand (`hb` a string): the beat says missing, and
    // a re-registration writes it anew.
    put(vec![
        ("pk", text("node#i-real")),
        ("hb", text("x")),
        ("inc", text(&inc.to_string())),
        ("eni", text("eni-real")),
    ])
    .await;
    beat.kind = BeatKind::Renew;
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::Missing));
    beat.kind = BeatKind::Reregister;
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::Beat(1)));
    // Deleted by hand: missing, then back.
    client
        .delete_item()
        .table_name(&table)
        .key("pk", text("node#i-real"))
        .send()
        .await
        .expect("delete_item");
    beat.kind = BeatKind::Renew;
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::Missing));
    // Another process's item is not ours to write over.
    let mut other = beat.clone();
    other.inc = Incarnation(0x07e4);
    other.kind = BeatKind::Register;
    assert_eq!(store.heartbeat(&other).await, Ok(HeartbeatOutcome::Beat(1)));
    beat.kind = BeatKind::Reregister;
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::NotMine));
    beat.kind = BeatKind::Renew;
    assert_eq!(store.heartbeat(&beat).await, Ok(HeartbeatOutcome::NotMine));

    // The table deleted: every call says so.
    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("delete_table");
    let gone = store.read_nodes().await.map(|_| ());
    assert_eq!(gone.map_err(|e| e.kind), Err(StoreErrorKind::TableMissing));
    let gone = store.heartbeat(&beat).await.map(|_| ());
    assert_eq!(gone.map_err(|e| e.kind), Err(StoreErrorKind::TableMissing));
}
