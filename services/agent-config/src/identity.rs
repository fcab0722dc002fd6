//! The `[node]` section's identity overrides and the configured region;
//! reading the rest from IMDS is the agent's (`vipfleet_agent::identity`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The SDK's region variables, in the order its region chain reads them.
pub const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Values from the `[node]` config section; each one that is set wins over
/// IMDS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityOverrides {
    pub instance_id: Option<String>,
    pub eni: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
    pub az: Option<String>,
    /// `aws.region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`
    /// ([`configured_region`]).
    pub region: Option<String>,
}

impl IdentityOverrides {
    /// Whether every value the agent needs is given, so IMDS is not needed.
    pub fn is_complete(&self) -> bool {
        self.instance_id.is_some()
            && self.eni.is_some()
            && self.private_ip.is_some()
            && self.az.is_some()
            && self.region.is_some()
    }
}

/// The region named before IMDS is asked: `config` (`aws.region`) first,
/// then the first of [`REGION_VARS`] set in `env`. `None` leaves it to IMDS
/// (`placement/region`). Empty values count as unset, as a blank
/// `Environment=AWS_REGION=` in a unit would be meant.
///
/// Without this, `AWS_REGION` was ignored by `run`: IMDS (or the lab's
/// emulator) answered first, and against a local endpoint with `[node]`
/// overrides IMDS was asked for the region alone.
pub fn configured_region(config: Option<&str>, env: &BTreeMap<String, String>) -> Option<String> {
    let named = |value: Option<&str>| value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    named(config).or_else(|| {
        REGION_VARS
            .iter()
            .find_map(|var| named(env.get(*var).map(String::as_str)))
    })
}
