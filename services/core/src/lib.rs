//! # vipfleet-core: the lease protocol as a pure state machine
//!
//! Nothing in this crate sleeps, reads a clock, or touches the network. The
//! agent (and the simulation) hand it `now` and the results of store and
//! route calls; it answers with effects to perform.
//!
//! ## Layout, in the order data flows
//!
//! - [`vip`], [`types`]: VIPs, nodes, shards (one per VIP block, named by
//!   it), what nodes announce, the records the store returns.
//! - [`layout`]: the shards a node serves and the layout's fingerprint.
//! - [`time`]: the monotonic [`time::Instant`] every step is given.
//! - [`config`]: lease timings (default and fast profiles) and their rules;
//!   [`backoff`]: jittered exponential backoff for calls that keep failing.
//! - [`liveness`]: what this node has seen of every other node's heartbeat
//!   (or missing item), and its own deadline for writing routes.
//! - [`peers`]: a SWIM-style detector of crashed peers (direct and
//!   indirect probes, nacks against false positives), sans I/O; its verdicts
//!   are checked against the store, which stays the arbiter.
//! - [`membership`]: who is in the fleet and with what role, who is gone,
//!   which shards every member serves and which are disputed: the one rule
//!   the machine and the dashboard share.
//! - [`assign`]: the target owner of every agreed shard (sticky, weighted
//!   quotas, rendezvous hashing for orphans), a pure function of one
//!   snapshot; `assign::memo` reuses the last one while owners only move
//!   where it sent them.
//! - [`machine`]: the step function `(state, input, now) -> effects`.
//! - [`store`], [`routes`]: the `LeaseStore` and `RouteTable` traits the
//!   effects are performed against.
//! - [`units`]: DynamoDB request units by the item-size rules, for the
//!   lease table's items; [`cost`]: the fleet's units and dollars at rest.
//! - [`fake`] (feature `fakes`): in-memory implementations of both, with
//!   DynamoDB's and EC2's conditional semantics and injectable faults.
//! - [`sim`] (feature `fakes`): a deterministic multi-node simulation on
//!   virtual time that checks the protocol's invariants on every step.

#![forbid(unsafe_code)]

pub mod assign;
pub mod backoff;
pub mod config;
#[cfg(feature = "fakes")]
pub mod contract;
pub mod cost;
#[cfg(feature = "fakes")]
pub mod fake;
pub mod layout;
pub mod liveness;
pub mod machine;
pub mod membership;
pub mod peers;
pub mod routes;
#[cfg(feature = "fakes")]
pub mod sim;
pub mod store;
pub mod time;
pub mod types;
pub mod units;
pub mod vip;

pub use config::LeaseConfig;
pub use layout::{LayoutId, ShardLayout};
pub use time::Instant;
pub use types::*;
