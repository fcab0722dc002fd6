//! `Ec2RouteTable` against `aws-smithy-mocks`: EC2's answers that moto
//! does not give (`RouteAlreadyExists`, throttling, blackhole routes), sent
//! in EC2's XML wire format so the SDK's deserialization is tested too.

use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput;
use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsOutput;
use aws_sdk_ec2::types::{
    Route, RouteState, RouteTable as SdkRouteTable, Vpc, VpcCidrBlockAssociation, VpcCidrBlockState,
    VpcCidrBlockStateCode,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, Rule};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use vipfleet_core::routes::{Gate, RouteChange, RouteEntry, RouteError, RouteOp, RouteTable};
use vipfleet_core::{EniId, RouteTableId, Vip};

use super::ec2::{Ec2ErrorKind, Ec2RouteTable};
use super::mocked_client;

/// An error answer in EC2's query protocol.
fn wire_error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>req-1</RequestID></Response>"#
    );
    HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body))
}

fn routes(rules: &[&Rule]) -> Ec2RouteTable {
    let client: Client = match rules {
        [a] => mocked_client!(aws_sdk_ec2, [*a]),
        [a, b] => mocked_client!(aws_sdk_ec2, [*a, *b]),
        _ => panic!("one or two rules"),
    };
    Ec2RouteTable::new(client)
}

fn rtb(id: &str) -> RouteTableId {
    RouteTableId(id.into())
}

fn vip(text: &str) -> Vip {
    text.parse().expect("vip")
}

fn eni() -> EniId {
    EniId("eni-1".into())
}

fn replace(table: &str) -> RouteChange {
    RouteChange::Replace {
        table: rtb(table),
        vip: vip("10.200.0.1/32"),
        eni: eni(),
    }
}

fn create(table: &str) -> RouteChange {
    RouteChange::Create {
        table: rtb(table),
        vip: vip("10.200.0.1/32"),
        eni: eni(),
    }
}

const NO_ROUTE: &str = "There is no route defined for '10.200.0.1/32' in the route table. Use CreateRoute instead.";

#[tokio::test]
async fn replace_without_a_route_is_no_route() {
    for (code, message) in [
        ("InvalidParameterValue", NO_ROUTE),
        ("InvalidRoute.NotFound", "no such route"),
    ] {
        let rule = mock!(Client::replace_route)
            .match_requests(|r| {
                r.network_interface_id() == Some("eni-1") && r.destination_cidr_block() == Some("10.200.0.1/32")
            })
            .then_http_response(move || wire_error(400, code, message));
        let got = routes(&[&rule]).change(&replace("rtb-1"), &Gate::open()).await;
        let expected = Err(RouteError::NoRoute {
            table: rtb("rtb-1"),
            vip: vip("10.200.0.1/32"),
        });
        assert_eq!(got, expected, "{code}");
    }
    // Another bad parameter is not a missing route.
    let rule = mock!(Client::replace_route)
        .then_http_response(|| wire_error(400, "InvalidParameterValue", "Value (x) for parameter cidr is invalid"));
    let got = routes(&[&rule]).change(&replace("rtb-1"), &Gate::open()).await;
    assert!(
        matches!(got, Err(RouteError::Other { op: RouteOp::Replace, ref detail }) if detail.contains("cidr")),
        "{got:?}"
    );
}

#[tokio::test]
async fn create_of_an_existing_route_is_already_exists() {
    let rule = mock!(Client::create_route).then_http_response(|| {
        wire_error(
            400,
            "RouteAlreadyExists",
            "The route identified by 10.200.0.1/32 already exists.",
        )
    });
    let got = routes(&[&rule]).change(&create("rtb-1"), &Gate::open()).await;
    assert_eq!(
        got,
        Err(RouteError::AlreadyExists {
            table: rtb("rtb-1"),
            vip: vip("10.200.0.1/32")
        })
    );
}

#[tokio::test]
async fn request_limit_exceeded_is_throttled_for_every_call() {
    let limit = || wire_error(503, "RequestLimitExceeded", "Request limit exceeded.");
    let replace_rule = mock!(Client::replace_route).then_http_response(limit);
    let create_rule = mock!(Client::create_route).then_http_response(limit);
    let routes_rw = routes(&[&replace_rule, &create_rule]);
    let table = rtb("rtb-1");
    let got = routes_rw.change(&replace("rtb-1"), &Gate::open()).await;
    assert!(
        matches!(got, Err(RouteError::Throttled { op: RouteOp::Replace, ref detail }) if detail.contains("RequestLimitExceeded")),
        "{got:?}"
    );
    let got = routes_rw.change(&create("rtb-1"), &Gate::open()).await;
    assert!(
        matches!(
            got,
            Err(RouteError::Throttled {
                op: RouteOp::Create,
                ..
            })
        ),
        "{got:?}"
    );
    let describe = mock!(Client::describe_route_tables).then_http_response(limit);
    let got = routes(&[&describe]).describe(&table).await;
    assert!(
        matches!(
            got,
            Err(RouteError::Throttled {
                op: RouteOp::Describe,
                ..
            })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn unknown_tables_and_server_errors() {
    let rule = mock!(Client::create_route).then_http_response(|| {
        wire_error(
            400,
            "InvalidRouteTableID.NotFound",
            "The routeTable ID 'rtb-9' does not exist",
        )
    });
    let got = routes(&[&rule]).change(&create("rtb-9"), &Gate::open()).await;
    assert_eq!(got, Err(RouteError::UnknownTable(rtb("rtb-9"))));
    let rule = mock!(Client::replace_route).then_http_response(|| wire_error(500, "InternalError", "oops"));
    let got = routes(&[&rule]).change(&replace("rtb-1"), &Gate::open()).await;
    assert!(
        matches!(
            got,
            Err(RouteError::Unavailable {
                op: RouteOp::Replace,
                ..
            })
        ),
        "{got:?}"
    );
}

fn route(destination: &str, eni: Option<&str>, state: RouteState) -> Route {
    let mut route = Route::builder().destination_cidr_block(destination).state(state);
    route = match eni {
        Some(eni) => route.network_interface_id(eni),
        None => route.gateway_id("local"),
    };
    route.build()
}

#[tokio::test]
async fn describe_maps_targets_and_blackholes_across_pages() {
    let first = mock!(Client::describe_route_tables)
        .match_requests(|r| {
            r.next_token().is_none()
                && r.filters().first().and_then(|f| f.name()) == Some("route-table-id")
                && r.filters().first().map(|f| f.values()) == Some(&["rtb-1".to_string()][..])
        })
        .then_output(|| {
            // EC2 may answer a page with no table and a token for the next.
            DescribeRouteTablesOutput::builder().next_token("page-2").build()
        });
    let second = mock!(Client::describe_route_tables)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            let table = SdkRouteTable::builder()
                .route_table_id("rtb-1")
                .routes(route("10.0.0.0/16", None, RouteState::Active))
                .routes(route("10.200.0.1/32", Some("eni-1"), RouteState::Active))
                .routes(route("10.200.0.2/32", Some("eni-gone"), RouteState::Blackhole))
                .routes(
                    Route::builder()
                        .destination_ipv6_cidr_block("fd00::/64")
                        .gateway_id("local")
                        .build(),
                )
                .build();
            DescribeRouteTablesOutput::builder().route_tables(table).build()
        });
    let routes = routes(&[&first, &second]);
    let entry = |table: &str, destination: &str, target: Option<&str>, blackhole| RouteEntry {
        table: rtb(table),
        destination: vip(destination),
        target: target.map(|e| EniId(e.into())),
        blackhole,
    };
    let got = routes.describe(&rtb("rtb-1")).await;
    assert_eq!(
        got,
        Ok(vec![
            entry("rtb-1", "10.0.0.0/16", None, false),
            entry("rtb-1", "10.200.0.1/32", Some("eni-1"), false),
            entry("rtb-1", "10.200.0.2/32", Some("eni-gone"), true),
        ])
    );
}

#[tokio::test]
async fn describe_names_a_table_the_answer_lacks() {
    let rule = mock!(Client::describe_route_tables).then_output(|| DescribeRouteTablesOutput::builder().build());
    let got = routes(&[&rule]).describe(&rtb("rtb-404")).await;
    assert_eq!(got, Err(RouteError::UnknownTable(rtb("rtb-404"))));
}

#[tokio::test]
async fn a_closed_gate_stops_the_first_attempt() {
    // A wire answer rather than `then_output`: the mock would hand an
    // output back without a transmit for the gate to stop.
    let rule = mock!(Client::replace_route).then_http_response(|| {
        let body = r#"<ReplaceRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-1</requestId><return>true</return></ReplaceRouteResponse>"#;
        HttpResponse::new(StatusCode::try_from(200).expect("status"), SdkBody::from(body))
    });
    let routes = routes(&[&rule]);
    let got = routes.change(&replace("rtb-1"), &Gate::new(|| false)).await;
    assert_eq!(got, Err(RouteError::Fenced));
    let got = routes.change(&replace("rtb-1"), &Gate::open()).await;
    assert_eq!(got, Ok(()));
}

/// The SDK retries a server error; the gate is asked again before the
/// retry, and a gate that closed in between stops it.
#[tokio::test]
async fn the_gate_is_asked_before_every_retry() {
    let rule = mock!(Client::replace_route)
        .sequence()
        .http_response(|| wire_error(500, "InternalError", "try again"))
        .times(2)
        .output(|| aws_sdk_ec2::operation::replace_route::ReplaceRouteOutput::builder().build())
        .build();
    let interceptor = aws_smithy_mocks::MockResponseInterceptor::new().with_rule(&rule);
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(std::time::Duration::from_millis(1));
    let config = aws_sdk_ec2::config::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "mock",
        ))
        .retry_config(retry)
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .interceptor(interceptor)
        .build();
    let routes = Ec2RouteTable::new(Client::from_conf(config));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Gate::new({
        let asked = asked.clone();
        // Open for the first attempt only.
        move || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
    });
    let got = routes.change(&replace("rtb-1"), &gate).await;
    assert_eq!(got, Err(RouteError::Fenced));
    // Had the second attempt gone out, it would have met the second 500
    // and a third attempt would have asked again.
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "asked before each of two attempts"
    );
}

#[tokio::test]
async fn vpc_cidrs_skip_disassociated_blocks() {
    let block = |cidr: &str, state: VpcCidrBlockStateCode| {
        VpcCidrBlockAssociation::builder()
            .cidr_block(cidr)
            .cidr_block_state(VpcCidrBlockState::builder().state(state).build())
            .build()
    };
    let rule = mock!(Client::describe_vpcs).then_output(move || {
        let vpc = Vpc::builder()
            .vpc_id("vpc-1")
            .cidr_block("10.0.0.0/16")
            .cidr_block_association_set(block("10.0.0.0/16", VpcCidrBlockStateCode::Associated))
            .cidr_block_association_set(block("10.1.0.0/16", VpcCidrBlockStateCode::Associating))
            .cidr_block_association_set(block("10.2.0.0/16", VpcCidrBlockStateCode::Disassociated))
            .build();
        DescribeVpcsOutput::builder().vpcs(vpc).build()
    });
    let got = routes(&[&rule]).vpc_cidrs("vpc-1").await;
    assert_eq!(got, Ok(vec![vip("10.0.0.0/16"), vip("10.1.0.0/16")]));

    let rule = mock!(Client::describe_vpcs)
        .then_http_response(|| wire_error(400, "InvalidVpcID.NotFound", "VpcID {'vpc-9'} does not exist."));
    let got = routes(&[&rule]).vpc_cidrs("vpc-9").await;
    assert_eq!(got.map_err(|e| e.kind), Err(Ec2ErrorKind::NotFound));
}
