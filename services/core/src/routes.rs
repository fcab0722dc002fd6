//! `RouteTable`: the EC2 route calls vipfleet makes, one table and one
//! change at a time, each behind a [`Gate`] that the caller can close
//! while the call waits or retries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::types::{EniId, RouteTableId, Vip};

/// Longest one route call may take, the SDK's own retries included; a
/// route change is also cut short when its gate's deadline comes first.
pub const ROUTE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

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

    pub fn as_str(&self) -> &'static str {
        match self {
            RouteOp::Describe => "describe_route_tables",
            RouteOp::Replace => "replace_route",
            RouteOp::Create => "create_route",
            RouteOp::Delete => "delete_route",
        }
    }

    /// Whether the call changes a route (and spends EC2's mutating budget).
    pub fn mutates(&self) -> bool {
        !matches!(self, RouteOp::Describe)
    }
}

/// One change to one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// `CreateRoute`: fails with `AlreadyExists` if there is a route.
    Create { table: RouteTableId, vip: Vip, eni: EniId },
    /// `ReplaceRoute`: fails with `NoRoute` if there is none.
    Replace { table: RouteTableId, vip: Vip, eni: EniId },
    /// `DeleteRoute`: fails with `NoRoute` if there is none.
    Delete { table: RouteTableId, vip: Vip },
}

impl RouteChange {
    pub fn op(&self) -> RouteOp {
        match self {
            RouteChange::Create { .. } => RouteOp::Create,
            RouteChange::Replace { .. } => RouteOp::Replace,
            RouteChange::Delete { .. } => RouteOp::Delete,
        }
    }

    pub fn table(&self) -> &RouteTableId {
        match self {
            RouteChange::Create { table, .. }
            | RouteChange::Replace { table, .. }
            | RouteChange::Delete { table, .. } => table,
        }
    }

    pub fn vip(&self) -> Vip {
        match self {
            RouteChange::Create { vip, .. } | RouteChange::Replace { vip, .. } | RouteChange::Delete { vip, .. } => {
                *vip
            }
        }
    }

    /// Where the route points once the change is made; `None` for a delete.
    pub fn eni(&self) -> Option<&EniId> {
        match self {
            RouteChange::Create { eni, .. } | RouteChange::Replace { eni, .. } => Some(eni),
            RouteChange::Delete { .. } => None,
        }
    }
}

/// Asked right before every attempt of a route change goes out, the SDK's
/// retries included: may it still? A write by a node whose lease lapsed
/// while the call waited or retried must never be sent.
#[derive(Clone)]
pub struct Gate(Arc<dyn Fn() -> bool + Send + Sync>);

impl Gate {
    pub fn new(allows: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(allows))
    }

    /// A gate that never closes (tests, tools).
    pub fn open() -> Self {
        Self::new(|| true)
    }

    pub fn allows(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
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
    /// Not sent: by the time an attempt could go out, its gate had closed
    /// (the shard moved, or the lease lapsed).
    #[error("not sent: the write is no longer allowed")]
    Fenced,
}

/// How a failed route call should be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteErrorClass {
    /// EC2 asked the account to slow down: everyone's calls back off.
    Throttled,
    /// A server error or a timeout: this call backs off.
    Transient,
    /// Will not heal by retrying soon (no such table, access denied, the
    /// route limit): the whole table backs off, slowly.
    Permanent,
}

impl RouteErrorClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteErrorClass::Throttled => "throttled",
            RouteErrorClass::Transient => "transient",
            RouteErrorClass::Permanent => "permanent",
        }
    }
}

impl RouteError {
    /// How to retry after this error; `None` for the modelled outcomes
    /// (`NoRoute`, `AlreadyExists`, `Fenced`), which are not failures of EC2.
    pub fn class(&self) -> Option<RouteErrorClass> {
        match self {
            RouteError::NoRoute { .. } | RouteError::AlreadyExists { .. } | RouteError::Fenced => None,
            RouteError::Throttled { .. } => Some(RouteErrorClass::Throttled),
            RouteError::Unavailable { .. } => Some(RouteErrorClass::Transient),
            RouteError::UnknownTable(_) | RouteError::Other { .. } => Some(RouteErrorClass::Permanent),
        }
    }
}

/// The VPC route tables, as far as VIP routes go.
pub trait RouteTable: Send + Sync {
    /// The routes of one table (all of them; callers pick theirs);
    /// `UnknownTable` if there is no such table.
    fn describe(&self, table: &RouteTableId) -> impl Future<Output = Result<Vec<RouteEntry>, RouteError>> + Send;
    /// Makes one change. Every attempt (the SDK's retries included) asks
    /// `gate` first and is not sent if it says no: `Fenced`.
    fn change(&self, change: &RouteChange, gate: &Gate) -> impl Future<Output = Result<(), RouteError>> + Send;
}
