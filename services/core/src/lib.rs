//! # vipfleet-core: the lease protocol as a pure state machine
//!
//! Nothing in this crate sleeps, reads a clock, or touches the network. The
//! agent (and the simulation) hand it `now` and the results of store and
//! route calls; it answers with effects to perform.
//!
//! ## Layout, in the order data flows
//!
//! - [`types`]: node, shard, VIP and record types; the shard layout.
//! - [`time`]: the monotonic [`time::Instant`] every step is given.
//! - [`config`]: lease timings (default and fast profiles) and their rules.
//! - [`liveness`]: what this node has seen of every other node's heartbeat,
//!   and its own deadline for writing routes.
//! - [`assign`]: the target owner of every shard (sticky, weighted quotas,
//!   rendezvous hashing for orphans), a pure function of one snapshot.
//! - [`machine`]: the step function `(state, input, now) -> effects`.
//! - [`store`], [`routes`]: the `LeaseStore` and `RouteTable` traits the
//!   effects are performed against.
//! - [`fake`] (feature `fakes`): in-memory implementations of both, with
//!   DynamoDB's and EC2's conditional semantics and injectable faults.
//! - [`sim`] (feature `fakes`): a deterministic multi-node simulation on
//!   virtual time that checks the protocol's invariants on every step.

#![forbid(unsafe_code)]

pub mod assign;
pub mod config;
#[cfg(feature = "fakes")]
pub mod contract;
#[cfg(feature = "fakes")]
pub mod fake;
pub mod liveness;
pub mod machine;
pub mod routes;
#[cfg(feature = "fakes")]
pub mod sim;
pub mod store;
pub mod time;
pub mod types;

pub use config::LeaseConfig;
pub use time::Instant;
pub use types::*;
