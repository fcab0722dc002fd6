//! Contract suites for [`LeaseStore`] and [`RouteTable`]: one set of
//! assertions that the in-memory fakes and the real adapters (DynamoDB and
//! EC2, exercised against moto) must all pass, so that the fakes the
//! simulation trusts are proven to behave like the services.
//!
//! Plain async functions that panic on a broken promise; the caller brings
//! the runtime (the core has none). Each suite only looks at the ids it
//! made, so it can share a table with other runs: the lease suite derives
//! every node and shard id from `prefix`; the route suite needs tables with
//! no routes to its VIPs (fresh tables).
//!
//! - `lease` — [`lease_store_contract`];
//! - `routes` — [`route_table_contract`] and [`route_table_contract_with`],
//!   with the [`RouteDeviations`] an emulator may have.

mod lease;
mod routes;

pub use lease::lease_store_contract;
pub use routes::{route_table_contract, route_table_contract_with, RouteDeviations};
