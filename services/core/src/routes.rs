//! `RouteTable`: the EC2 route calls vipfleet makes, and [`point_route`],
//! which composes them (`ReplaceRoute` first, `CreateRoute` when there is
//! no route).

use std::future::Future;

use thiserror::Error;

use crate::types::{EniId, Epoch, RouteTableId, ShardId, Vip};

/// One route as `DescribeRouteTables` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub table: RouteTableId,
    pub destination: Vip,
    /// The ENI the route points at; `None` for other targets (gateway, …).
    pub target: Option<EniId>,
    /// The target no longer exists (state `blackhole`).
    pub blackhole: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteOp {
    Describe,
    Replace,
    Create,
    Delete,
}

impl RouteOp {
    pub const ALL: [RouteOp; 4] = [RouteOp::Describe, RouteOp::Replace, RouteOp::Create, RouteOp::Delete];

    /// Whether the call changes a route table (it counts against EC2's
    /// mutating-call rate, and the VPC applies it to traffic).
    pub fn mutates(&self) -> bool {
        !matches!(self, RouteOp::Describe)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RouteOp::Describe => "describe_route_tables",
            RouteOp::Replace => "replace_route",
            RouteOp::Create => "create_route",
            RouteOp::Delete => "delete_route",
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    /// `ReplaceRoute` on a destination with no route.
    #[error("{table}: no route for {vip}")]
    NoRoute { table: RouteTableId, vip: Vip },
    /// `CreateRoute` on a destination that has one.
    #[error("{table}: a route for {vip} already exists")]
    AlreadyExists { table: RouteTableId, vip: Vip },
    #[error("route table {0} does not exist")]
    UnknownTable(RouteTableId),
    #[error("EC2 {}: throttled: {detail}", op.as_str())]
    Throttled { op: RouteOp, detail: String },
    #[error("EC2 {}: unavailable: {detail}", op.as_str())]
    Unavailable { op: RouteOp, detail: String },
    #[error("EC2 {}: {detail}", op.as_str())]
    Other { op: RouteOp, detail: String },
    /// Not sent: by the time the call could go, this node no longer held
    /// the shard at this epoch, or its own lease had lapsed.
    #[error("fenced: no longer allowed to write shard {shard} at epoch {epoch}")]
    Fenced { shard: ShardId, epoch: Epoch },
}

/// The VPC route tables, as far as VIP routes go.
pub trait RouteTable: Send + Sync {
    /// The routes of these tables (all of them; callers pick theirs).
    fn describe(&self, tables: &[RouteTableId]) -> impl Future<Output = Result<Vec<RouteEntry>, RouteError>> + Send;
    fn replace(
        &self,
        table: &RouteTableId,
        vip: Vip,
        eni: &EniId,
    ) -> impl Future<Output = Result<(), RouteError>> + Send;
    fn create(
        &self,
        table: &RouteTableId,
        vip: Vip,
        eni: &EniId,
    ) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Removes the route for `vip`; `NoRoute` when there is none.
    fn delete(&self, table: &RouteTableId, vip: Vip) -> impl Future<Output = Result<(), RouteError>> + Send;
}

/// How [`point_route`] got the route in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteWrite {
    Replaced,
    Created,
}

/// Points `vip` in `table` at `eni`: `ReplaceRoute`, then `CreateRoute` if
/// there was no route, then `ReplaceRoute` again if someone created it in
/// between. Two calls at most in the common cases.
pub async fn point_route<R: RouteTable + ?Sized>(
    routes: &R,
    table: &RouteTableId,
    vip: Vip,
    eni: &EniId,
) -> Result<RouteWrite, RouteError> {
    match routes.replace(table, vip, eni).await {
        Ok(()) => Ok(RouteWrite::Replaced),
        Err(RouteError::NoRoute { .. }) => match routes.create(table, vip, eni).await {
            Ok(()) => Ok(RouteWrite::Created),
            Err(RouteError::AlreadyExists { .. }) => {
                routes.replace(table, vip, eni).await.map(|()| RouteWrite::Replaced)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}
