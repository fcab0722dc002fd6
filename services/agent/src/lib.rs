//! # vipfleet-agent: the node daemon
//!
//! `main.rs` parses the command line and calls into this library.
//!
//! ## Layout, in the order a node starts
//!
//! - [`config`]: the TOML file, `VIPFLEET_*` variables and `--set` flags,
//!   validated into an `AgentConfig` (errors exit 78); the crate
//!   `vipfleet-agent-config`, re-exported.
//! - [`identity`]: who this node is (IMDSv2, or config overrides); also the
//!   IMDS emulator the lab uses.
//! - [`aws`]: SDK configuration, `LeaseStore` over DynamoDB, `RouteTable`
//!   over EC2, and the token bucket that paces route writes.
//! - [`vip_binding`]: every VIP on a local stub interface, over netlink.
//! - [`health`]: haproxy checks with hysteresis.
//! - [`lifecycle`]: the Auto Scaling termination hook: drain, then CONTINUE.
//! - [`peers`]: the UDP side of the peer probes (wire format, sealing with
//!   the fleet key, addresses, socket); the core's detector decides.
//! - [`secret`]: secrets read from files (the dashboard token, peer keys).
//! - [`driver`]: performs the lease machine's effects and feeds it results,
//!   and runs the peer detector beside it.
//! - [`status`]: the agent's published view, for readiness and the dashboard.
//! - [`dashboard`]: the HTTP dashboard, JSON API, metrics, health and the
//!   drain/undrain endpoints, served from the published status.
//! - [`notify`]: systemd readiness and watchdog.
//! - [`app`]: wires the above together for `vipfleet-agent run`.
//! - [`build`]: the version and the commit this binary was built from.

#![forbid(unsafe_code)]

pub mod app;
pub mod aws;
pub mod build;
pub use vipfleet_agent_config as config;
pub mod dashboard;
pub mod driver;
pub mod health;
pub mod identity;
pub mod lifecycle;
pub mod notify;
pub mod peers;
pub mod secret;
pub mod status;
pub mod vip_binding;
