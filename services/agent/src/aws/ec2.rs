//! [`Ec2RouteTable`]: the core's `RouteTable` over the EC2 API, plus the
//! calls the agent makes once at start (source/destination check, the VPC's
//! CIDR blocks, whether the configured route tables exist).
//!
//! Routes always target an ENI (`NetworkInterfaceId`). Pacing, retries by
//! error class and the per-table backoff are the lease machine's; this
//! adapter makes one change per call, and asks the call's [`Gate`] before
//! every attempt the SDK transmits (an interceptor), so that no retry of a
//! write goes out after the lease it relied on lapsed.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesError;
use aws_sdk_ec2::types::RouteTable as SdkRouteTable;
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, RouteState, VpcCidrBlockStateCode};
use aws_sdk_ec2::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use thiserror::Error;
use vipfleet_core::routes::{Gate, RouteChange, RouteEntry, RouteError, RouteOp, RouteTable};
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

    async fn found_tables(&self, ids: &[RouteTableId]) -> Result<BTreeSet<String>, DescribeError> {
        let tables = self.describe_raw(ids).await?;
        Ok(tables
            .iter()
            .filter_map(|t| t.route_table_id().map(str::to_string))
            .collect())
    }

    /// The routes of several tables in one call (tools and the lab; the
    /// agent reads each table on its own, so one bad table cannot hide the
    /// others); `UnknownTable` names the first one missing.
    pub async fn describe_tables(&self, tables: &[RouteTableId]) -> Result<Vec<RouteEntry>, RouteError> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let only = (tables.len() == 1).then(|| &tables[0]);
        let found = self
            .describe_raw(tables)
            .await
            .map_err(|e| route_error(RouteOp::Describe, only, &format!("route tables {tables:?}"), &e))?;
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
    async fn describe(&self, table: &RouteTableId) -> Result<Vec<RouteEntry>, RouteError> {
        self.describe_tables(std::slice::from_ref(table)).await
    }

    async fn change(&self, change: &RouteChange, gate: &Gate) -> Result<(), RouteError> {
        let interceptor = GateInterceptor::new(gate.clone());
        let refused = interceptor.refused.clone();
        let table = change.table();
        let vip = change.vip().to_string();
        let context = match change.eni() {
            Some(eni) => format!("{table}: {vip} -> {eni}"),
            None => format!("{table}: delete {vip}"),
        };
        let result = match change {
            RouteChange::Create { eni, .. } => self
                .client
                .create_route()
                .route_table_id(&table.0)
                .destination_cidr_block(vip)
                .network_interface_id(&eni.0)
                .customize()
                .interceptor(interceptor)
                .send()
                .await
                .map(drop)
                .map_err(|err| change_error(change, &context, &err, error_code(&err) == Some("RouteAlreadyExists"))),
            RouteChange::Replace { eni, .. } => self
                .client
                .replace_route()
                .route_table_id(&table.0)
                .destination_cidr_block(vip)
                .network_interface_id(&eni.0)
                .customize()
                .interceptor(interceptor)
                .send()
                .await
                .map(drop)
                .map_err(|err| change_error(change, &context, &err, is_no_route(&err))),
            RouteChange::Delete { .. } => self
                .client
                .delete_route()
                .route_table_id(&table.0)
                .destination_cidr_block(vip)
                .customize()
                .interceptor(interceptor)
                .send()
                .await
                .map(drop)
                .map_err(|err| change_error(change, &context, &err, is_no_route(&err))),
        };
        // Refused by the gate: this attempt was never sent, whatever error
        // the SDK wrapped the refusal in.
        match result {
            Err(_) if refused.load(Ordering::SeqCst) => Err(RouteError::Fenced),
            result => result,
        }
    }
}

/// The error of a failed route change; `modelled` says the service gave the
/// change's expected failure (`AlreadyExists` for a create, `NoRoute` for
/// a replace or delete).
fn change_error<E>(change: &RouteChange, context: &str, err: &SdkError<E, HttpResponse>, modelled: bool) -> RouteError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (table, vip) = (change.table().clone(), change.vip());
    match (change, modelled) {
        (RouteChange::Create { .. }, true) => RouteError::AlreadyExists { table, vip },
        (RouteChange::Replace { .. } | RouteChange::Delete { .. }, true) => RouteError::NoRoute { table, vip },
        (_, false) => route_error(change.op(), Some(&table), context, err),
    }
}

/// Asks the [`Gate`] before every attempt the SDK transmits, its retries
/// included, and remembers a refusal: a write must not go out once the
/// lease it relies on has lapsed, however long the SDK has been retrying.
#[derive(Debug)]
struct GateInterceptor {
    gate: Gate,
    refused: Arc<AtomicBool>,
}

impl GateInterceptor {
    fn new(gate: Gate) -> Self {
        Self {
            gate,
            refused: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Intercept for GateInterceptor {
    fn name(&self) -> &'static str {
        "vipfleet-route-gate"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.gate.allows() {
            Ok(())
        } else {
            self.refused.store(true, Ordering::SeqCst);
            Err("the route change is no longer allowed (the shard moved or the lease lapsed)".into())
        }
    }
}
