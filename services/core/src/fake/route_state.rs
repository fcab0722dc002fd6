//! In-memory VPC route tables with EC2's semantics for the calls vipfleet
//! makes: `ReplaceRoute` fails on a missing route, `CreateRoute` fails on an
//! existing one, `DeleteRoute` fails on a missing one, a route to a deleted
//! ENI turns `blackhole`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::routes::{RouteChange, RouteEntry, RouteError};
use crate::types::{EniId, RouteTableId, Vip};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounters {
    pub mutating_calls: u64,
    pub describe_calls: u64,
    /// Calls that changed where a route points (created, re-pointed or
    /// deleted it): what clients would notice.
    pub target_changes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RouteTables {
    tables: BTreeMap<RouteTableId, BTreeMap<Vip, EniId>>,
    deleted_enis: BTreeSet<EniId>,
    counters: RouteCounters,
    /// Each table as [`Self::describe_shared`] last showed it, until it
    /// changes: in a simulation every node reads back every table, and the
    /// routes change far less often than they are read.
    described: BTreeMap<RouteTableId, Arc<[RouteEntry]>>,
}

impl RouteTables {
    pub fn new(tables: impl IntoIterator<Item = RouteTableId>) -> Self {
        Self {
            tables: tables.into_iter().map(|t| (t, BTreeMap::new())).collect(),
            ..Self::default()
        }
    }

    pub fn counters(&self) -> RouteCounters {
        self.counters
    }

    pub fn table_ids(&self) -> Vec<RouteTableId> {
        self.tables.keys().cloned().collect()
    }

    /// [`Self::describe`], shared with every other read-back of the table
    /// since it last changed.
    pub fn describe_shared(&mut self, table: &RouteTableId) -> Result<Arc<[RouteEntry]>, RouteError> {
        if let Some(routes) = self.described.get(table) {
            self.counters.describe_calls += 1;
            return Ok(routes.clone());
        }
        let routes: Arc<[RouteEntry]> = self.describe(table)?.into();
        self.described.insert(table.clone(), routes.clone());
        Ok(routes)
    }

    pub fn describe(&mut self, table: &RouteTableId) -> Result<Vec<RouteEntry>, RouteError> {
        self.counters.describe_calls += 1;
        let routes = self
            .tables
            .get(table)
            .ok_or_else(|| RouteError::UnknownTable(table.clone()))?;
        Ok(routes
            .iter()
            .map(|(vip, eni)| RouteEntry {
                table: table.clone(),
                destination: *vip,
                target: Some(eni.clone()),
                blackhole: self.deleted_enis.contains(eni),
            })
            .collect())
    }

    pub fn apply(&mut self, change: &RouteChange) -> Result<(), RouteError> {
        match change {
            RouteChange::Create { table, vip, eni } => self.create(table, *vip, eni),
            RouteChange::Replace { table, vip, eni } => self.replace(table, *vip, eni),
            RouteChange::Delete { table, vip } => self.delete(table, *vip),
        }
    }

    pub fn replace(&mut self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.counters.mutating_calls += 1;
        let routes = self
            .tables
            .get_mut(table)
            .ok_or_else(|| RouteError::UnknownTable(table.clone()))?;
        match routes.get_mut(&vip) {
            Some(target) => {
                if target != eni {
                    *target = eni.clone();
                    self.counters.target_changes += 1;
                    self.described.remove(table);
                }
                Ok(())
            }
            None => Err(RouteError::NoRoute {
                table: table.clone(),
                vip,
            }),
        }
    }

    pub fn create(&mut self, table: &RouteTableId, vip: Vip, eni: &EniId) -> Result<(), RouteError> {
        self.counters.mutating_calls += 1;
        let routes = self
            .tables
            .get_mut(table)
            .ok_or_else(|| RouteError::UnknownTable(table.clone()))?;
        if routes.contains_key(&vip) {
            return Err(RouteError::AlreadyExists {
                table: table.clone(),
                vip,
            });
        }
        routes.insert(vip, eni.clone());
        self.counters.target_changes += 1;
        self.described.remove(table);
        Ok(())
    }

    pub fn delete(&mut self, table: &RouteTableId, vip: Vip) -> Result<(), RouteError> {
        self.counters.mutating_calls += 1;
        let routes = self
            .tables
            .get_mut(table)
            .ok_or_else(|| RouteError::UnknownTable(table.clone()))?;
        match routes.remove(&vip) {
            Some(_) => {
                self.counters.target_changes += 1;
                self.described.remove(table);
                Ok(())
            }
            None => Err(RouteError::NoRoute {
                table: table.clone(),
                vip,
            }),
        }
    }

    /// Every route of every table (for checks; not counted).
    pub fn all(&self) -> impl Iterator<Item = (&RouteTableId, &Vip, &EniId)> {
        self.tables
            .iter()
            .flat_map(|(t, routes)| routes.iter().map(move |(v, e)| (t, v, e)))
    }

    /// Where `vip` points in `table` now (for checks; not counted).
    pub fn target(&self, table: &RouteTableId, vip: Vip) -> Option<&EniId> {
        self.tables.get(table)?.get(&vip)
    }

    /// An operator's hand edit: points a route anywhere, creating it if need be.
    pub fn set_by_hand(&mut self, table: &RouteTableId, vip: Vip, eni: &EniId) {
        if let Some(routes) = self.tables.get_mut(table) {
            if routes.insert(vip, eni.clone()).as_ref() != Some(eni) {
                self.counters.target_changes += 1;
                self.described.remove(table);
            }
        }
    }

    /// The ENI is gone: routes to it turn `blackhole`.
    pub fn delete_eni(&mut self, eni: &EniId) {
        self.deleted_enis.insert(eni.clone());
        // Routes to it show as blackholes from now on, in any table.
        self.described.clear();
    }
}
