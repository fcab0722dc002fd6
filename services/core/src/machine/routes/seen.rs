//! What the route read-backs showed (and our own calls changed since),
//! table by table: a read-back replaces its table's routes whole, without
//! touching the other tables' or copying a table id per route (a fleet of
//! 10,000 VIPs reads back 10,000 routes per table).

use std::collections::BTreeMap;

use crate::routes::RouteEntry;
use crate::types::{EniId, RouteTableId, Vip};

/// Every route seen: its ENI target, `None` for a blackhole or a target
/// that is not an ENI.
#[derive(Clone, Debug, Default)]
pub(super) struct SeenRoutes {
    tables: BTreeMap<RouteTableId, BTreeMap<Vip, Option<EniId>>>,
}

impl SeenRoutes {
    pub(super) fn get(&self, table: &RouteTableId, vip: Vip) -> Option<&Option<EniId>> {
        self.tables.get(table)?.get(&vip)
    }

    pub(super) fn contains(&self, table: &RouteTableId, vip: Vip) -> bool {
        self.get(table, vip).is_some()
    }

    pub(super) fn set(&mut self, table: &RouteTableId, vip: Vip, target: Option<EniId>) {
        match self.tables.get_mut(table) {
            Some(routes) => {
                routes.insert(vip, target);
            }
            None => {
                self.tables.insert(table.clone(), BTreeMap::from([(vip, target)]));
            }
        }
    }

    pub(super) fn remove(&mut self, table: &RouteTableId, vip: Vip) {
        if let Some(routes) = self.tables.get_mut(table) {
            routes.remove(&vip);
        }
    }

    /// A read-back of `table`: what it showed replaces what we had of it
    /// (each entry goes under the table it names; the last entry for a
    /// destination wins).
    pub(super) fn replace(&mut self, table: &RouteTableId, entries: &[RouteEntry]) {
        let target = |e: &RouteEntry| e.target.clone().filter(|_| !e.blackhole);
        // Mostly the table shows the routes the last read-back did, most
        // of them pointing where they did: updated where they are, only
        // the targets that moved copied.
        if let Some(routes) = self.tables.get_mut(table) {
            let same_routes = routes.len() == entries.len()
                && entries.windows(2).all(|pair| pair[0].destination < pair[1].destination)
                && entries
                    .iter()
                    .zip(routes.keys())
                    .all(|(e, vip)| e.destination == *vip && e.table == *table);
            if same_routes {
                for (e, seen) in entries.iter().zip(routes.values_mut()) {
                    let shown = e.target.as_ref().filter(|_| !e.blackhole);
                    if seen.as_ref() != shown {
                        *seen = shown.cloned();
                    }
                }
                return;
            }
        }
        self.tables.remove(table);
        if entries.iter().all(|e| e.table == *table) {
            let routes = entries.iter().map(|e| (e.destination, target(e))).collect();
            self.tables.insert(table.clone(), routes);
            return;
        }
        for e in entries {
            self.tables
                .entry(e.table.clone())
                .or_default()
                .insert(e.destination, target(e));
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Vip, &Option<EniId>)> {
        self.tables.values().flatten()
    }
}
