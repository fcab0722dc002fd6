//! [`Ec2RouteTable`]: the core's `RouteTable` over the EC2 API, plus the
//! calls the agent makes once at start (source/destination check, the VPC's
//! CIDR blocks, whether the configured route tables exist).
//!
//! Routes always target the node's ENI (`NetworkInterfaceId`). The adapter
//! does no pacing of its own: wrap it in [`super::pacing::PacedRoutes`].
//!
//! EC2's answers mapped to the core's errors (verified against moto 5.2.5,
//! which copies EC2's codes and messages here):
//! - `ReplaceRoute` on a destination without a route: `InvalidParameterValue`
//!   "There is no route defined for '…' in the route table. Use CreateRoute
//!   instead." (older answers: `InvalidRoute.NotFound`) -> `NoRoute`;
//! - `CreateRoute` on an existing destination: `RouteAlreadyExists` ->
//!   `AlreadyExists` (moto instead replaces the route silently);
//! - `DeleteRoute` on a destination without a route: `InvalidRoute.NotFound`
//!   -> `NoRoute`;
//! - `InvalidRouteTableID.NotFound` / `.Malformed` -> `UnknownTable`;
//! - `RequestLimitExceeded` -> `Throttled` (after the SDK's adaptive retries).
//!
//! `DescribeRouteTables` filters by `route-table-id` only (moto lacks the
//! `route.*` filters) and returns every route with an IPv4 destination;
//! callers pick the VIPs they care about. A filter, unlike `RouteTableIds`,
//! answers an unknown id with nothing rather than an error, so unknown
//! tables are found by comparing what came back with what was asked.

use std::collections::BTreeSet;

use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesError;
use aws_sdk_ec2::types::RouteTable as SdkRouteTable;
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, RouteState, VpcCidrBlockStateCode};
use aws_sdk_ec2::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use thiserror::Error;
use vipfleet_core::routes::{RouteEntry, RouteError, RouteOp, RouteTable};
use vipfleet_core::{EniId, RouteTableId, Vip};

use super::{classify, error_code, error_detail, ErrorClass};

type DescribeError = SdkError<DescribeRouteTablesError, HttpResponse>;

const UNKNOWN_TABLE_CODES: &[&str] = &["InvalidRouteTableID.NotFound", "InvalidRouteTableId.Malformed"];

/// A failure of the start-up calls (not route writes).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("EC2 {op}: {kind:?}: {detail}")]
pub struct Ec2Error {
    pub op: &'static str,
    pub kind: Ec2ErrorKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ec2ErrorKind {
    /// The VPC or ENI named does not exist (a configuration error).
    NotFound,
    Throttled,
    Unavailable,
    Other,
}

fn ec2_error<E>(op: &'static str, context: &str, err: &SdkError<E, HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = if error_code(err).is_some_and(|c| c.ends_with(".NotFound") || c.ends_with(".Malformed")) {
        Ec2ErrorKind::NotFound
    } else {
        match classify(err) {
            ErrorClass::Throttled => Ec2ErrorKind::Throttled,
            ErrorClass::Unavailable => Ec2ErrorKind::Unavailable,
            ErrorClass::Other => Ec2ErrorKind::Other,
        }
    };
    Ec2Error {
        op,
        kind,
        detail: error_detail(context, err),
    }
}

/// A route error for `op`, for errors that are not a modeled outcome.
fn route_error<E>(
    op: RouteOp,
    table: Option<&RouteTableId>,
    context: &str,
    err: &SdkError<E, HttpResponse>,
) -> RouteError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let (Some(table), Some(code)) = (table, error_code(err)) {
        if UNKNOWN_TABLE_CODES.contains(&code) {
            return RouteError::UnknownTable(table.clone());
        }
    }
    let detail = error_detail(context, err);
    match classify(err) {
        ErrorClass::Throttled => RouteError::Throttled { op, detail },
        ErrorClass::Unavailable => RouteError::Unavailable { op, detail },
        ErrorClass::Other => RouteError::Other { op, detail },
    }
}

/// Whether a `ReplaceRoute` failure means "there is no such route".
fn is_no_route<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let Some(service) = err.as_service_error() else {
        return false;
    };
    match service.code() {
        Some("InvalidRoute.NotFound") => true,
        Some("InvalidParameterValue") => service
            .message()
            .is_some_and(|m| m.to_ascii_lowercase().contains("no route")),
        _ => false,
    }
}

/// VPC route tables through the EC2 API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ec2RouteTable {
    client: Client,
}

impl Ec2RouteTable {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Turns the source/destination check off on `eni`: without that, the
    /// VPC drops packets addressed to a VIP rather than to the ENI's own IP.
    pub async fn disable_source_dest_check(&self, eni: &EniId) -> Result<(), Ec2Error> {
        self.client
            .modify_network_interface_attribute()
            .network_interface_id(&eni.0)
            .source_dest_check(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                ec2_error(
                    "ModifyNetworkInterfaceAttribute",
                    &format!("source/dest check on {eni}"),
                    &e,
                )
            })
    }

    /// Every IPv4 CIDR block of `vpc_id` (primary and secondary, except
    /// those being or already disassociated), to check VIPs lie outside.
    pub async fn vpc_cidrs(&self, vpc_id: &str) -> Result<Vec<Vip>, Ec2Error> {
        let op = "DescribeVpcs";
        let out = self
            .client
            .describe_vpcs()
            .vpc_ids(vpc_id)
            .send()
            .await
            .map_err(|e| ec2_error(op, &format!("VPC {vpc_id}"), &e))?;
        let vpc = out.vpcs().first().ok_or_else(|| Ec2Error {
            op,
            kind: Ec2ErrorKind::NotFound,
            detail: format!("VPC {vpc_id} not in the answer"),
        })?;
        let mut cidrs = BTreeSet::<Vip>::new();
        cidrs.extend(vpc.cidr_block().and_then(|c| c.parse::<Vip>().ok()));
        for assoc in vpc.cidr_block_association_set() {
            let state = assoc.cidr_block_state().and_then(|s| s.state());
            let gone = matches!(
                state,
                Some(VpcCidrBlockStateCode::Disassociated | VpcCidrBlockStateCode::Disassociating)
                    | Some(VpcCidrBlockStateCode::Failed | VpcCidrBlockStateCode::Failing)
            );
            if !gone {
                cidrs.extend(assoc.cidr_block().and_then(|c| c.parse::<Vip>().ok()));
            }
        }
        Ok(cidrs.into_iter().collect())
    }

    /// The ids among `ids` that name no route table, in the order given.
    pub async fn missing_route_tables(&self, ids: &[RouteTableId]) -> Result<Vec<RouteTableId>, Ec2Error> {
        if ids.is_empty() {
            // An empty filter would match every table of the account.
            return Ok(Vec::new());
        }
        let found = self
            .found_tables(ids)
            .await
            .map_err(|e| ec2_error("DescribeRouteTables", "route tables", &e))?;
        Ok(ids.iter().filter(|id| !found.contains(&id.0)).cloned().collect())
    }

    /// Whether every id in `ids` names a route table.
    pub async fn route_tables_exist(&self, ids: &[RouteTableId]) -> Result<bool, Ec2Error> {
        Ok(self.missing_route_tables(ids).await?.is_empty())
    }

    async fn found_tables(&self, ids: &[RouteTableId]) -> Result<BTreeSet<String>, DescribeError> {
        let tables = self.describe_raw(ids).await?;
        Ok(tables
            .iter()
            .filter_map(|t| t.route_table_id().map(str::to_string))
            .collect())
    }

    async fn describe_raw(&self, ids: &[RouteTableId]) -> Result<Vec<SdkRouteTable>, DescribeError> {
        let filter = Filter::builder()
            .name("route-table-id")
            .set_values(Some(ids.iter().map(|t| t.0.clone()).collect()))
            .build();
        let mut tables = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_route_tables()
                .filters(filter.clone())
                .set_next_token(token.take())
                .send()
                .await?;
            tables.extend(page.route_tables().iter().cloned());
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(tables),
            }
        }
    }
}

impl RouteTable for Ec2RouteTable {
    async fn describe(&self, tables: &[RouteTableId]) -> Result<Vec<RouteEntry>, RouteError> {
        let op = RouteOp::Describe;
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .describe_raw(tables)
            .await
            .map_err(|e| route_error(op, None, &format!("route tables {tables:?}"), &e))?;
        let mut entries = Vec::new();
        for wanted in tables {
            let table = found
                .iter()
                .find(|t| t.route_table_id() == Some(wanted.0.as_str()))
                .ok_or_else(|| RouteError::UnknownTable(wanted.clone()))?;
            // IPv6 and prefix-list routes have no IPv4 destination: not ours.
            entries.extend(table.routes().iter().filter_map(|route| {
                let destination: Vip = route.destination_cidr_block()?.parse().ok()?;
                Some(RouteEntry {
                    table: wanted.clone(),
                    destination,
                    target: route.network_interface_id().map(|id| EniId(id.to_string())),
                    blackhole: route.state() == Some(&RouteState::Blackhole),
                })
            }));
        }
        Ok(entries)
    }

    async fn replace(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        let result = self
            .client
            .replace_route()
            .route_table_id(&table.0)
            .destination_cidr_block(vip.to_string())
            .network_interface_id(&eni.0)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_no_route(&err) => Err(RouteError::NoRoute {
                table: table.clone(),
                vip,
            }),
            Err(err) => Err(route_error(
                RouteOp::Replace,
                Some(table),
                &format!("{table}: {vip} -> {eni}"),
                &err,
            )),
        }
    }

    async fn create(&self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        let result = self
            .client
            .create_route()
            .route_table_id(&table.0)
            .destination_cidr_block(vip.to_string())
            .network_interface_id(&eni.0)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if error_code(&err) == Some("RouteAlreadyExists") => Err(RouteError::AlreadyExists {
                table: table.clone(),
                vip,
            }),
            Err(err) => Err(route_error(
                RouteOp::Create,
                Some(table),
                &format!("{table}: {vip} -> {eni}"),
                &err,
            )),
        }
    }

    async fn delete(&self, table: &RouteTableId, vip: Vip) -> Result<(), RouteError> {
        let result = self
            .client
            .delete_route()
            .route_table_id(&table.0)
            .destination_cidr_block(vip.to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_no_route(&err) => Err(RouteError::NoRoute {
                table: table.clone(),
                vip,
            }),
            Err(err) => Err(route_error(
                RouteOp::Delete,
                Some(table),
                &format!("{table}: delete {vip}"),
                &err,
            )),
        }
    }
}
