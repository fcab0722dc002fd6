//! # vipfleet-agent
//!
//! (layout header is written as the modules land)

#![forbid(unsafe_code)]

pub mod aws;
pub mod health;
pub mod identity;
pub mod vip_binding;
