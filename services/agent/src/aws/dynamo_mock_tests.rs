//! `DynamoLeaseStore` against `aws-smithy-mocks`: the answers moto cannot
//! give (throttling, server errors, cancellation reasons of every kind,
//! paginated scans). Errors are sent as DynamoDB sends them on the wire, so
//! the SDK's own deserialization is part of what is tested.

use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_smithy_mocks::{mock, Rule};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use vipfleet_core::liveness::NodeCheck;
use vipfleet_core::store::{
    AcquireOutcome, AcquireRequest, BeatKind, Expect, HandoffOutcome, HandoffRequest, HeartbeatOutcome,
    HeartbeatRequest, LeaseStore, MarkDeadOutcome, MarkDeadRequest, Scan, StoreErrorKind, StoreOp, WatchRequest,
    Watched,
};
use vipfleet_core::{
    EniId, Incarnation, LayoutId, NodeConfig, NodeId, NodeInfo, NodeState, RouteTableId, ShardId, ShardRecord,
};

use super::dynamo::DynamoLeaseStore;
use super::dynamo_items::{shard_item, Item};
use super::mocked_client;

const TABLE: &str = "leases";

/// An error answer in DynamoDB's JSON protocol.
fn wire_error(status: u16, code: &str, extra: &str) -> HttpResponse {
    let body = format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"mocked {code}"{extra}}}"#);
    HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body))
}

fn cancelled(reasons: &[&str]) -> HttpResponse {
    let reasons: Vec<String> = reasons.iter().map(|r| format!(r#"{{"Code":"{r}"}}"#)).collect();
    wire_error(
        400,
        "TransactionCanceledException",
        &format!(r#","CancellationReasons":[{}]"#, reasons.join(",")),
    )
}

fn store(rules: &[&Rule]) -> DynamoLeaseStore {
    let client: Client = match rules {
        [a] => mocked_client!(aws_sdk_dynamodb, [*a]),
        [a, b] => mocked_client!(aws_sdk_dynamodb, [*a, *b]),
        _ => panic!("one or two rules"),
    };
    DynamoLeaseStore::new(client, TABLE)
}

fn info() -> NodeInfo {
    NodeInfo {
        id: NodeId::new("i-1"),
        eni: EniId("eni-1".into()),
        az: "us-east-1a".into(),
        addr: "10.0.1.10".into(),
        weight: 1,
        version: "test".into(),
    }
}

fn beat(kind: BeatKind) -> HeartbeatRequest {
    HeartbeatRequest {
        info: info(),
        config: NodeConfig {
            layout: LayoutId("0123456789abcdef".into()),
            route_tables: vec![RouteTableId("rtb-1".into())],
            lease_ttl: std::time::Duration::from_millis(3000),
            heartbeat_interval: std::time::Duration::from_millis(1000),
            peer_port: None,
        },
        inc: Incarnation(7),
        state: NodeState::Active,
        kind,
        epoch_floor: 3,
        register_hb: 1,
    }
}

fn shard() -> ShardId {
    "10.200.0.3/32".parse().expect("shard")
}

fn claim(expect: Expect) -> AcquireRequest {
    AcquireRequest {
        shard: shard(),
        me: NodeId::new("i-1"),
        inc: Incarnation(7),
        expect,
    }
}

fn expired() -> Expect {
    Expect::GoneOwner {
        owner: NodeId::new("i-2"),
        epoch: 4,
        check: NodeCheck::Unchanged {
            hb: 41,
            inc: Incarnation(9),
        },
    }
}

#[tokio::test]
async fn throttling_answers_are_throttled_errors_with_context() {
    for code in [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    ] {
        let rule = mock!(Client::update_item).then_http_response(move || wire_error(400, code, ""));
        let err = store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await.unwrap_err();
        assert_eq!(
            (err.op, err.kind),
            (StoreOp::Heartbeat, StoreErrorKind::Throttled),
            "{code}"
        );
        assert!(err.detail.contains(code) && err.detail.contains("node#i-1"), "{err}");
    }
    let rule = mock!(Client::scan).then_http_response(|| wire_error(400, "ThrottlingException", ""));
    let err = store(&[&rule]).read_nodes().await.unwrap_err();
    assert_eq!((err.op, err.kind), (StoreOp::ReadNodes, StoreErrorKind::Throttled));
}

#[tokio::test]
async fn server_errors_are_unavailable_and_client_errors_other() {
    let rule = mock!(Client::get_item).then_http_response(|| wire_error(500, "InternalServerError", ""));
    let err = store(&[&rule]).read_shard(shard()).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Unavailable, "{err}");
    let rule = mock!(Client::update_item).then_http_response(|| wire_error(400, "ValidationException", ""));
    let err = store(&[&rule]).mark_dead(&dead()).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Other, "{err}");
    assert!(
        err.detail.contains("ValidationException") && err.detail.contains(TABLE),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_table_is_its_own_error_for_every_call() {
    let missing = || wire_error(400, "ResourceNotFoundException", "");
    let update = mock!(Client::update_item).then_http_response(missing);
    let scan = mock!(Client::scan).then_http_response(missing);
    let store = store(&[&update, &scan]);
    let kind = |e: vipfleet_core::store::StoreError| e.kind;
    assert_eq!(
        store.mark_dead(&dead()).await.map_err(kind),
        Err(StoreErrorKind::TableMissing)
    );
    assert_eq!(
        store.heartbeat(&beat(BeatKind::Renew)).await.map_err(kind),
        Err(StoreErrorKind::TableMissing)
    );
    assert_eq!(
        store.read_nodes().await.map(|_| ()).map_err(kind),
        Err(StoreErrorKind::TableMissing)
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("t", "t", None, None, "t"))
        .endpoint_url("http://127.0.0.1:1")
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let store = DynamoLeaseStore::new(Client::from_conf(config), TABLE);
    let err = store.heartbeat(&beat(BeatKind::Renew)).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn heartbeats_tell_a_vanished_item_from_another_process() {
    let renewal = |r: &aws_sdk_dynamodb::operation::update_item::UpdateItemInput| {
        r.condition_expression() == Some("#inc = :inc AND attribute_not_exists(#evicted_by)")
            && r.return_values_on_condition_check_failure().map(|v| v.as_str()) == Some("ALL_OLD")
            && r.expression_attribute_names()
                .and_then(|n| n.get("#state"))
                .map(String::as_str)
                == Some("state")
            && r.expression_attribute_values().and_then(|v| v.get(":inc"))
                == Some(&AttributeValue::S("0000000000000007".into()))
    };
    // Another incarnation's readable item: superseded.
    let other = item_json(&node_item("i-1", 40));
    let rule = mock!(Client::update_item)
        .match_requests(renewal)
        .then_http_response(move || wire_error(400, "ConditionalCheckFailedException", &format!(r#","Item":{other}"#)));
    assert_eq!(
        store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await,
        Ok(HeartbeatOutcome::NotMine)
    );
    // Our own incarnation, evicted by peers: we start over.
    let mut evicted = node_item("i-1", 40);
    evicted.insert("inc".into(), AttributeValue::S("0000000000000007".into()));
    evicted.insert("evicted_by".into(), AttributeValue::S("i-2".into()));
    let evicted = item_json(&evicted);
    let rule = mock!(Client::update_item)
        .match_requests(renewal)
        .then_http_response(move || {
            wire_error(400, "ConditionalCheckFailedException", &format!(r#","Item":{evicted}"#))
        });
    assert_eq!(
        store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await,
        Ok(HeartbeatOutcome::Evicted)
    );
    // No item at all: missing.
    let rule = mock!(Client::update_item)
        .match_requests(renewal)
        .then_http_response(|| wire_error(400, "ConditionalCheckFailedException", ""));
    assert_eq!(
        store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await,
        Ok(HeartbeatOutcome::Missing)
    );
    // An item broken by hand (`hb` a string): missing, to be written anew.
    let rule = mock!(Client::update_item).then_http_response(|| wire_error(400, "ValidationException", ""));
    assert_eq!(
        store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await,
        Ok(HeartbeatOutcome::Missing)
    );

    let rule = mock!(Client::update_item).match_requests(renewal).then_output(|| {
        UpdateItemOutput::builder()
            .attributes("hb", AttributeValue::N("12".into()))
            .build()
    });
    assert_eq!(
        store(&[&rule]).heartbeat(&beat(BeatKind::Renew)).await,
        Ok(HeartbeatOutcome::Beat(12))
    );

    // Registration is a put of the whole item; re-registration is the same
    // put, unless another process holds the id.
    let register = mock!(Client::put_item)
        .match_requests(|r| {
            r.condition_expression().is_none()
                && r.item().and_then(|i| i.get("layout")) == Some(&AttributeValue::S("0123456789abcdef".into()))
                && r.item().and_then(|i| i.get("hb")) == Some(&AttributeValue::N("1".into()))
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    assert_eq!(
        store(&[&register]).heartbeat(&beat(BeatKind::Register)).await,
        Ok(HeartbeatOutcome::Beat(1))
    );
    let taken = mock!(Client::put_item)
        .match_requests(|r| {
            r.condition_expression()
                .is_some_and(|c| c.contains("attribute_not_exists(#pk)"))
        })
        .then_http_response(|| wire_error(400, "ConditionalCheckFailedException", ""));
    assert_eq!(
        store(&[&taken]).heartbeat(&beat(BeatKind::Reregister)).await,
        Ok(HeartbeatOutcome::NotMine)
    );
}

#[tokio::test]
async fn a_failed_claim_is_a_lost_race_unless_the_item_shows_our_own_claim() {
    let record = |owner: &str, inc: u64| ShardRecord {
        id: shard(),
        owner: Some(NodeId::new(owner)),
        owner_inc: Some(Incarnation(inc)),
        epoch: 5,
        moves: 1,
    };
    let free = || Expect::Free { next_epoch: 5 };
    let with_item = |record: ShardRecord| {
        let item = item_json(&shard_item(&record));
        move || wire_error(400, "ConditionalCheckFailedException", &format!(r#","Item":{item}"#))
    };
    let cases = [
        (free(), Some(record("i-2", 7)), AcquireOutcome::LostRace),
        (free(), Some(record("i-1", 8)), AcquireOutcome::LostRace),
        (free(), None, AcquireOutcome::LostRace),
        (
            Expect::Free { next_epoch: 6 },
            Some(record("i-1", 7)),
            AcquireOutcome::LostRace,
        ),
        // Our own earlier attempt landed (a retry after a lost answer).
        (free(), Some(record("i-1", 7)), AcquireOutcome::Acquired { epoch: 5 }),
    ];
    for (expect, item, outcome) in cases {
        let rule = match item {
            Some(record) => mock!(Client::update_item)
                .match_requests(|r| r.return_values_on_condition_check_failure().map(|v| v.as_str()) == Some("ALL_OLD"))
                .then_http_response(with_item(record)),
            None => {
                mock!(Client::update_item).then_http_response(|| wire_error(400, "ConditionalCheckFailedException", ""))
            }
        };
        assert_eq!(
            store(&[&rule]).acquire(&claim(expect.clone())).await,
            Ok(outcome),
            "{expect:?}"
        );
    }
}

/// An item in DynamoDB's JSON wire format (strings, numbers and lists).
fn item_json(item: &Item) -> String {
    fn value(v: &AttributeValue) -> String {
        match v {
            AttributeValue::S(s) => format!(r#"{{"S":"{s}"}}"#),
            AttributeValue::N(n) => format!(r#"{{"N":"{n}"}}"#),
            AttributeValue::L(l) => format!(r#"{{"L":[{}]}}"#, l.iter().map(value).collect::<Vec<_>>().join(",")),
            other => panic!("not used in items: {other:?}"),
        }
    }
    let fields: Vec<String> = item.iter().map(|(k, v)| format!(r#""{k}":{}"#, value(v))).collect();
    format!("{{{}}}", fields.join(","))
}

#[tokio::test]
async fn cancelled_takeovers_map_their_reasons() {
    let cases = [
        (vec!["ConditionalCheckFailed", "None"], Ok(AcquireOutcome::OwnerAlive)),
        (vec!["None", "ConditionalCheckFailed"], Ok(AcquireOutcome::LostRace)),
        (
            vec!["ConditionalCheckFailed", "ConditionalCheckFailed"],
            Ok(AcquireOutcome::LostRace),
        ),
        (vec!["None", "ThrottlingError"], Err(StoreErrorKind::Throttled)),
        (vec!["None", "ValidationError"], Err(StoreErrorKind::Other)),
    ];
    for (reasons, expected) in cases {
        let answer = reasons.clone();
        let rule = mock!(Client::transact_write_items).then_http_response(move || cancelled(&answer));
        let got = store(&[&rule]).acquire(&claim(expired())).await.map_err(|e| e.kind);
        assert_eq!(got, expected, "{reasons:?}");
    }
}

#[tokio::test]
async fn a_takeover_checks_the_node_then_updates_the_shard() {
    let rule = mock!(Client::transact_write_items)
        .match_requests(|r| {
            let items = r.transact_items();
            let check = items.first().and_then(|i| i.condition_check());
            let update = items.get(1).and_then(|i| i.update());
            check.is_some_and(|c| {
                c.key().get("pk") == Some(&AttributeValue::S("node#i-2".into()))
                    && c.expression_attribute_values().and_then(|v| v.get(":hb"))
                        == Some(&AttributeValue::N("41".into()))
                    && c.expression_attribute_values().and_then(|v| v.get(":prev_inc"))
                        == Some(&AttributeValue::S("0000000000000009".into()))
            }) && update.is_some_and(|u| {
                u.key().get("pk") == Some(&AttributeValue::S("shard#10.200.0.3/32".into()))
                    && u.expression_attribute_values().and_then(|v| v.get(":epoch"))
                        == Some(&AttributeValue::N("4".into()))
            })
        })
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    assert_eq!(
        store(&[&rule]).acquire(&claim(expired())).await,
        Ok(AcquireOutcome::Acquired { epoch: 5 })
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn a_missing_owners_shard_is_taken_only_while_its_item_stays_missing() {
    let missing_owner = || Expect::GoneOwner {
        owner: NodeId::new("i-2"),
        epoch: 4,
        check: NodeCheck::Missing,
    };
    let rule = mock!(Client::transact_write_items)
        .match_requests(|r| {
            let check = r.transact_items().first().and_then(|i| i.condition_check());
            check.is_some_and(|c| {
                c.key().get("pk") == Some(&AttributeValue::S("node#i-2".into()))
                    && c.condition_expression() == "attribute_not_exists(#pk)"
                    && c.expression_attribute_values().is_none()
            })
        })
        .then_output(|| aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build());
    assert_eq!(
        store(&[&rule]).acquire(&claim(missing_owner())).await,
        Ok(AcquireOutcome::Acquired { epoch: 5 })
    );
    assert_eq!(rule.num_calls(), 1);
    // It re-registered meanwhile: the node check fails.
    let back =
        mock!(Client::transact_write_items).then_http_response(|| cancelled(&["ConditionalCheckFailed", "None"]));
    assert_eq!(
        store(&[&back]).acquire(&claim(missing_owner())).await,
        Ok(AcquireOutcome::OwnerAlive)
    );
}

fn dead() -> MarkDeadRequest {
    MarkDeadRequest {
        node: NodeId::new("i-2"),
        inc: Incarnation(9),
        observed_hb: 41,
    }
}

#[tokio::test]
async fn failed_hand_offs_and_mark_deads_are_outcomes() {
    let rule = mock!(Client::update_item).then_http_response(|| wire_error(400, "ConditionalCheckFailedException", ""));
    let handoff = HandoffRequest {
        shard: shard(),
        me: NodeId::new("i-1"),
        epoch: 5,
        to: NodeId::new("i-2"),
        to_inc: Incarnation(9),
    };
    let store = store(&[&rule]);
    assert_eq!(store.hand_off(&handoff).await, Ok(HandoffOutcome::NotOwner));
    assert_eq!(store.mark_dead(&dead()).await, Ok(MarkDeadOutcome::Alive));
}

fn node_item(id: &str, hb: u64) -> Item {
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: u64| AttributeValue::N(v.to_string());
    Item::from([
        ("pk".to_string(), s(&format!("node#{id}"))),
        ("hb".to_string(), n(hb)),
        ("inc".to_string(), s("00000000000000ff")),
        ("state".to_string(), s("active")),
        ("eni".to_string(), s("eni-1")),
        ("az".to_string(), s("us-east-1a")),
        ("addr".to_string(), s("10.0.1.10")),
        ("weight".to_string(), n(2)),
        ("version".to_string(), s("1.0")),
    ])
}

#[tokio::test]
async fn scans_follow_every_page_and_skip_items_they_cannot_use() {
    let first = mock!(Client::scan)
        .match_requests(|r| r.exclusive_start_key().is_none())
        .then_output(|| {
            ScanOutput::builder()
                .items(node_item("i-1", 3))
                .set_last_evaluated_key(Some(Item::from([("pk".into(), AttributeValue::S("node#i-1".into()))])))
                .build()
        });
    let second = mock!(Client::scan)
        .match_requests(|r| r.exclusive_start_key().is_some() && r.consistent_read() == Some(false))
        .then_output(|| ScanOutput::builder().items(node_item("i-2", 8)).build());
    let nodes = store(&[&first, &second]).read_nodes().await.expect("read_nodes");
    let got: Vec<_> = nodes
        .records
        .iter()
        .map(|n| (n.info.id.as_str().to_string(), n.hb, n.inc, n.info.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("i-1".into(), 3, Incarnation(255), 2),
            ("i-2".into(), 8, Incarnation(255), 2)
        ]
    );

    // An item the agent cannot use is skipped and named; the rest stands.
    let mut bad = node_item("i-3", 1);
    bad.insert("hb".into(), AttributeValue::S("one".into()));
    let mut newer = node_item("i-4", 1);
    newer.insert("state".into(), AttributeValue::S("hibernating".into()));
    let rule =
        mock!(Client::scan).then_output(move || ScanOutput::builder().items(bad.clone()).items(newer.clone()).build());
    let nodes = store(&[&rule])
        .read_nodes()
        .await
        .expect("a bad item never fails the read");
    assert_eq!(nodes.records.len(), 1);
    assert_eq!(
        nodes.records[0].state,
        NodeState::Unrecognized,
        "a newer version's state"
    );
    assert_eq!(nodes.skipped.len(), 1);
    assert_eq!(nodes.skipped[0].key, "node#i-3");
    assert_eq!(nodes.skipped[0].node, Some(NodeId::new("i-3")));
    assert!(nodes.skipped[0].reason.contains("hb"), "{:?}", nodes.skipped[0]);
}

#[tokio::test]
async fn shard_reads_are_consistent() {
    let record = ShardRecord {
        id: shard(),
        owner: None,
        owner_inc: None,
        epoch: 0,
        moves: 0,
    };
    let item = shard_item(&record);
    let get = mock!(Client::get_item)
        .match_requests(|r| r.consistent_read() == Some(true))
        .then_output(move || GetItemOutput::builder().set_item(Some(item.clone())).build());
    let scan = mock!(Client::scan)
        .match_requests(|r| r.consistent_read() == Some(true))
        .then_output(|| ScanOutput::builder().build());
    let store = store(&[&get, &scan]);
    assert_eq!(store.read_shard(shard()).await, Ok(Some(record)));
    assert_eq!(store.read_shards().await, Ok(Scan::clean(vec![])));
}

/// The value of `vipfleet_dynamodb_<kind>_units_total{op="<op>"}`, 0 when
/// absent.
fn units_counted(metrics: &crate::dashboard::metrics::Metrics, kind: &str, op: &str) -> f64 {
    let prefix = format!(r#"vipfleet_dynamodb_{kind}_units_total{{op="{op}"}} "#);
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

#[tokio::test]
async fn consumed_units_are_counted_as_reported_else_estimated() {
    use std::sync::Arc;

    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};

    let metrics = Arc::new(crate::dashboard::metrics::Metrics::new());
    let counted = |store: DynamoLeaseStore| store.with_units_sink(metrics.clone(), false);
    let asks = |r: Option<&ReturnConsumedCapacity>| r == Some(&ReturnConsumedCapacity::Total);

    // DynamoDB's own figure wins: a Scan bills the whole table.
    let scan = mock!(Client::scan)
        .match_requests(move |r| asks(r.return_consumed_capacity()))
        .then_output(|| {
            ScanOutput::builder()
                .items(node_item("i-1", 3))
                .consumed_capacity(ConsumedCapacity::builder().capacity_units(1.5).build())
                .build()
        });
    counted(store(&[&scan])).read_nodes().await.expect("read_nodes");
    assert_eq!(units_counted(&metrics, "read", "read_nodes"), 1.5);

    // An answer without capacity (moto's UpdateItem): the item's size, one
    // unit for a node item under 1 KB.
    let renew = mock!(Client::update_item)
        .match_requests(move |r| asks(r.return_consumed_capacity()))
        .then_output(|| {
            UpdateItemOutput::builder()
                .attributes("hb", AttributeValue::N("12".into()))
                .build()
        });
    let renewed = counted(store(&[&renew])).heartbeat(&beat(BeatKind::Renew)).await;
    assert_eq!(renewed, Ok(HeartbeatOutcome::Beat(12)));
    assert_eq!(units_counted(&metrics, "write", "heartbeat"), 1.0);

    // A failed condition is billed though the error says nothing.
    let lost = mock!(Client::update_item).then_http_response(|| wire_error(400, "ConditionalCheckFailedException", ""));
    let renewed = counted(store(&[&lost])).heartbeat(&beat(BeatKind::Renew)).await;
    assert_eq!(renewed, Ok(HeartbeatOutcome::Missing));
    assert_eq!(units_counted(&metrics, "write", "heartbeat"), 2.0);

    // A takeover is a transaction of two items: twice a unit each, landed
    // or cancelled.
    let take = mock!(Client::transact_write_items)
        .match_requests(move |r| asks(r.return_consumed_capacity()))
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let outcome = counted(store(&[&take])).acquire(&claim(expired())).await;
    assert!(matches!(outcome, Ok(AcquireOutcome::Acquired { .. })), "{outcome:?}");
    assert_eq!(units_counted(&metrics, "write", "acquire"), 4.0);
    let cancel =
        mock!(Client::transact_write_items).then_http_response(|| cancelled(&["None", "ConditionalCheckFailed"]));
    let outcome = counted(store(&[&cancel])).acquire(&claim(expired())).await;
    assert_eq!(outcome, Ok(AcquireOutcome::LostRace));
    assert_eq!(units_counted(&metrics, "write", "acquire"), 8.0);

    // Errors that are not outcomes are not billed.
    let throttled =
        mock!(Client::scan).then_http_response(|| wire_error(400, "ProvisionedThroughputExceededException", ""));
    let failed = counted(store(&[&throttled])).read_nodes().await;
    assert!(failed.is_err());
    assert_eq!(units_counted(&metrics, "read", "read_nodes"), 1.5);

    // Against another endpoint (moto's constants) the estimate is counted:
    // a scan of one small node item, eventually consistent.
    let scan = mock!(Client::scan).then_output(|| {
        ScanOutput::builder()
            .items(node_item("i-1", 3))
            .scanned_count(1)
            .count(1)
            .consumed_capacity(ConsumedCapacity::builder().capacity_units(1.0).build())
            .build()
    });
    let estimating = store(&[&scan]).with_units_sink(metrics.clone(), true);
    estimating.read_nodes().await.expect("read_nodes");
    assert_eq!(units_counted(&metrics, "read", "read_nodes"), 2.0);
}

fn fleet_item(version: AttributeValue) -> Item {
    Item::from([
        ("pk".to_string(), AttributeValue::S("fleet".into())),
        ("version".to_string(), version),
    ])
}

/// A `GetItem` rule for the item under `pk`, answering `item`; only
/// eventually consistent reads match.
fn get_rule(pk: &'static str, item: Option<Item>) -> Rule {
    mock!(Client::get_item)
        .match_requests(move |r| {
            r.key().and_then(|k| k.get("pk")) == Some(&AttributeValue::S(pk.into()))
                && r.consistent_read() == Some(false)
        })
        .then_output(move || GetItemOutput::builder().set_item(item.clone()).build())
}

#[tokio::test]
async fn a_watch_reads_the_counter_and_the_watched_node() {
    use std::sync::Arc;

    let watch = |node: Option<&str>| WatchRequest {
        node: node.map(NodeId::new),
    };
    let fleet = get_rule("fleet", Some(fleet_item(AttributeValue::N("42".into()))));
    let node = get_rule("node#i-2", Some(node_item("i-2", 7)));
    let metrics = Arc::new(crate::dashboard::metrics::Metrics::new());
    let watcher = store(&[&fleet, &node]).with_units_sink(metrics.clone(), true);
    let seen = watcher.watch(&watch(Some("i-2"))).await.expect("watch");
    assert_eq!(seen.version, Some(42));
    match seen.node {
        Some(Watched::Record(r)) => assert_eq!((r.info.id.as_str(), r.hb), ("i-2", 7)),
        other => panic!("{other:?}"),
    }
    // Two eventually consistent reads of small items: half a unit each.
    assert_eq!(units_counted(&metrics, "read", "watch"), 1.0);
    // Watching nobody reads the counter alone.
    let seen = watcher.watch(&watch(None)).await.expect("watch");
    assert_eq!((seen.version, seen.node), (Some(42), None));
    assert_eq!(units_counted(&metrics, "read", "watch"), 1.5);

    // No fleet item yet (a new table), the node gone: still billed.
    let fleet = get_rule("fleet", None);
    let node = get_rule("node#i-2", None);
    let watcher = store(&[&fleet, &node]).with_units_sink(metrics.clone(), true);
    let seen = watcher.watch(&watch(Some("i-2"))).await.expect("watch");
    assert_eq!((seen.version, seen.node), (None, Some(Watched::Missing)));
    assert_eq!(units_counted(&metrics, "read", "watch"), 2.5);
}

#[tokio::test]
async fn a_watch_names_a_node_item_it_cannot_read_and_refuses_a_broken_counter() {
    let mut bad = node_item("i-2", 7);
    bad.insert("hb".into(), AttributeValue::S("seven".into()));
    let fleet = get_rule("fleet", Some(fleet_item(AttributeValue::N("3".into()))));
    let node = get_rule("node#i-2", Some(bad));
    let seen = store(&[&fleet, &node])
        .watch(&WatchRequest {
            node: Some(NodeId::new("i-2")),
        })
        .await
        .expect("an unreadable node item is an answer");
    match seen.node {
        Some(Watched::Unreadable(skipped)) => {
            assert_eq!(
                (skipped.key.as_str(), skipped.node.clone(), skipped.shard),
                ("node#i-2", Some(NodeId::new("i-2")), None)
            );
            assert!(skipped.reason.contains("hb"), "{skipped:?}");
        }
        other => panic!("{other:?}"),
    }

    let fleet = get_rule("fleet", Some(fleet_item(AttributeValue::S("three".into()))));
    let err = store(&[&fleet]).watch(&WatchRequest { node: None }).await.unwrap_err();
    assert_eq!((err.op, err.kind), (StoreOp::Watch, StoreErrorKind::Corrupt), "{err}");
    assert!(err.detail.contains("fleet"), "{err}");

    let missing = mock!(Client::get_item).then_http_response(|| wire_error(400, "ResourceNotFoundException", ""));
    let err = store(&[&missing])
        .watch(&WatchRequest { node: None })
        .await
        .unwrap_err();
    assert_eq!((err.op, err.kind), (StoreOp::Watch, StoreErrorKind::TableMissing));
}

#[tokio::test]
async fn an_announcement_adds_one_to_the_counter_unconditionally() {
    use std::sync::Arc;

    use aws_sdk_dynamodb::types::ReturnValue;

    let add = mock!(Client::update_item)
        .match_requests(|r| {
            r.key().and_then(|k| k.get("pk")) == Some(&AttributeValue::S("fleet".into()))
                && r.update_expression() == Some("ADD #version :one")
                && r.condition_expression().is_none()
                && r.return_values() == Some(&ReturnValue::UpdatedNew)
                && r.expression_attribute_values().and_then(|v| v.get(":one")) == Some(&AttributeValue::N("1".into()))
        })
        .then_output(|| {
            UpdateItemOutput::builder()
                .attributes("version", AttributeValue::N("43".into()))
                .build()
        });
    let metrics = Arc::new(crate::dashboard::metrics::Metrics::new());
    let announcer = store(&[&add]).with_units_sink(metrics.clone(), true);
    assert_eq!(announcer.announce_change().await, Ok(43));
    assert_eq!(units_counted(&metrics, "write", "announce_change"), 1.0);

    let throttled = mock!(Client::update_item).then_http_response(|| wire_error(400, "ThrottlingException", ""));
    let err = store(&[&throttled]).announce_change().await.unwrap_err();
    assert_eq!((err.op, err.kind), (StoreOp::AnnounceChange, StoreErrorKind::Throttled));
}
