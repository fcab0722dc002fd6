//! Every name and address of one lab, derived from its prefix and its
//! network octet, so that `up`, `down`, `status` and a crashed harness's
//! clean-up all agree on them without any state.
//!
//! With prefix `p` and octet `o` (default 77):
//!
//! | what | namespace | address |
//! |---|---|---|
//! | the "VPC" (a Linux bridge `br0`) | `p-vpc` | - |
//! | the host's leg on the bridge (root namespace link `p-host`) | root | `10.o.0.254/24` |
//! | node `i` (haproxy + agent, link `eth0`) | `p-n<i>` | `10.o.0.(10+i)/24` |
//! | backend HTTP servers | `p-be` | `10.o.0.250/24`, ports 8080.. |
//! | router of route table `j` (bridge leg `eth0`, client leg `cli`) | `p-r<j>` | `10.o.0.(200+j)/24`, `10.(o+1).j.1/24` |
//! | client behind router `j` | `p-c<j>` | `10.(o+1).j.2/24`, default via the router |
//!
//! The VPC in moto is `10.o.0.0/16` with one subnet `10.o.0.0/24`; VIPs are
//! `10.200.0.1` and up, outside it as every VIP must be. The host's link is
//! the only interface the lab puts in the root namespace; every other one
//! lives and dies with a lab namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use vipfleet_core::Vip;

/// `<prefix>-host` must fit Linux's 15-byte interface names.
pub const MAX_PREFIX_LEN: usize = 6;
pub const DEFAULT_PREFIX: &str = "vf";
pub const DEFAULT_OCTET: u8 = 77;
/// The client networks use `octet + 1`, and both stay below the VIPs' 10.200/16.
pub const MAX_OCTET: u8 = 198;
/// Node addresses run from .10 up to the routers at .200.
pub const NODE_HOST_BASE: u8 = 10;
pub const MAX_NODES: usize = 190;
pub const ROUTER_HOST_BASE: u8 = 200;
pub const MAX_ROUTE_TABLES: usize = 40;
pub const BACKEND_HOST: u8 = 250;
pub const HOST_HOST: u8 = 254;
/// VIPs use the last octet 1..=250 of 10.200.x.0/24 blocks.
const VIPS_PER_BLOCK: usize = 250;
pub const MAX_VIPS: usize = VIPS_PER_BLOCK * 200;
pub const BACKEND_BASE_PORT: u16 = 8080;
pub const MAX_BACKENDS: usize = 16;
pub const DASHBOARD_PORT: u16 = 9180;
pub const HAPROXY_HEALTH_PORT: u16 = 8404;
/// Where every lab keeps its directory (`<root>-<prefix>`).
pub const LAB_DIR_BASE: &str = "/var/tmp/vipfleet-lab";
/// The bridge inside `<prefix>-vpc`.
pub const BRIDGE: &str = "br0";

/// The names and addresses of the lab with this prefix and octet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub prefix: String,
    pub octet: u8,
}

/// Checks a prefix: a lowercase letter, then letters or digits, short
/// enough for interface names, and never something `down` could confuse
/// with another lab's names.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let mut chars = prefix.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) || prefix.len() > MAX_PREFIX_LEN {
        bail!(
            "prefix {prefix:?} must be 1 to {MAX_PREFIX_LEN} characters: a lowercase letter, then lowercase letters \
             or digits"
        );
    }
    Ok(())
}

/// The lab directory of `prefix`: state.json, pidfiles, logs, configs.
pub fn lab_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("{LAB_DIR_BASE}-{prefix}"))
}

/// Whether `name` is a namespace a lab with `prefix` creates: exact
/// patterns, so prefix `vf` never matches `vf2-n0` or `vf-other`.
pub fn is_lab_netns(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    if rest == "vpc" || rest == "be" {
        return true;
    }
    let mut chars = rest.chars();
    matches!(chars.next(), Some('n' | 'r' | 'c'))
        && !chars.as_str().is_empty()
        && chars.as_str().chars().all(|c| c.is_ascii_digit())
}

impl Layout {
    pub fn new(prefix: &str, octet: u8) -> Result<Self> {
        check_prefix(prefix)?;
        if octet == 0 || octet > MAX_OCTET {
            bail!("network octet {octet} must be 1..={MAX_OCTET} (the lab uses 10.octet/16 and 10.(octet+1)/16)");
        }
        Ok(Self {
            prefix: prefix.to_string(),
            octet,
        })
    }

    fn ns(&self, rest: &str) -> String {
        format!("{}-{rest}", self.prefix)
    }

    pub fn vpc_ns(&self) -> String {
        self.ns("vpc")
    }
    pub fn backend_ns(&self) -> String {
        self.ns("be")
    }
    pub fn node_ns(&self, i: usize) -> String {
        self.ns(&format!("n{i}"))
    }
    pub fn router_ns(&self, j: usize) -> String {
        self.ns(&format!("r{j}"))
    }
    pub fn client_ns(&self, j: usize) -> String {
        self.ns(&format!("c{j}"))
    }
    /// The root-namespace end of the host's veth.
    pub fn host_link(&self) -> String {
        self.ns("host")
    }

    fn subnet_host(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, host)
    }
    pub fn host_ip(&self) -> Ipv4Addr {
        self.subnet_host(HOST_HOST)
    }
    pub fn backend_ip(&self) -> Ipv4Addr {
        self.subnet_host(BACKEND_HOST)
    }
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.subnet_host(NODE_HOST_BASE.saturating_add(u8::try_from(i).unwrap_or(u8::MAX)))
    }
    pub fn router_ip(&self, j: usize) -> Ipv4Addr {
        self.subnet_host(ROUTER_HOST_BASE.saturating_add(u8::try_from(j).unwrap_or(u8::MAX)))
    }
    /// `10.(o+1).j.0/24`: the client network behind router `j`.
    pub fn client_net(&self, j: usize) -> String {
        format!("10.{}.{j}.0/24", self.octet + 1)
    }
    pub fn router_client_ip(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet + 1, u8::try_from(j).unwrap_or(u8::MAX), 1)
    }
    pub fn client_ip(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet + 1, u8::try_from(j).unwrap_or(u8::MAX), 2)
    }
    pub fn vpc_cidr(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }
    pub fn subnet_cidr(&self) -> String {
        format!("10.{}.0.0/24", self.octet)
    }
    /// The two /16 blocks this lab's addresses live in.
    pub fn claimed_blocks(&self) -> [Vip; 2] {
        [
            Vip::new(Ipv4Addr::new(10, self.octet, 0, 0), 16).unwrap_or_else(|_| unreachable!("a /16 network")),
            Vip::new(Ipv4Addr::new(10, self.octet + 1, 0, 0), 16).unwrap_or_else(|_| unreachable!("a /16 network")),
        ]
    }
    pub fn table_name(&self) -> String {
        self.ns("leases")
    }
    pub fn asg_name(&self) -> String {
        self.ns("asg")
    }
    pub fn launch_template_name(&self) -> String {
        self.ns("lt")
    }
}

/// The `k`-th VIP (from 0): 10.200.0.1, …, 10.200.0.250, 10.200.1.1, …
pub fn vip(k: usize) -> Vip {
    let block = u8::try_from(k / VIPS_PER_BLOCK).unwrap_or(u8::MAX);
    let host = u8::try_from(k % VIPS_PER_BLOCK + 1).unwrap_or(u8::MAX);
    Vip::new(Ipv4Addr::new(10, 200, block, host), 32).unwrap_or_else(|_| unreachable!("a /32 has no host bits"))
}

/// Checks the counts `up` is asked for against the address plan.
pub fn check_counts(nodes: usize, vips: usize, route_tables: usize) -> Result<()> {
    if nodes == 0 || nodes > MAX_NODES {
        bail!("--nodes {nodes}: the lab holds 1..={MAX_NODES} nodes");
    }
    if vips == 0 || vips > MAX_VIPS {
        bail!("--vips {vips}: the lab holds 1..={MAX_VIPS} VIPs");
    }
    if route_tables == 0 || route_tables > MAX_ROUTE_TABLES {
        bail!("--route-tables {route_tables}: the lab holds 1..={MAX_ROUTE_TABLES} route tables");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_follow_the_plan() {
        let l = Layout::new("vf", 77).unwrap();
        assert_eq!(l.node_ns(3), "vf-n3");
        assert_eq!(l.node_ip(3), Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(l.router_ip(1), Ipv4Addr::new(10, 77, 0, 201));
        assert_eq!(l.client_ip(1), Ipv4Addr::new(10, 78, 1, 2));
        assert_eq!(l.client_net(1), "10.78.1.0/24");
        assert_eq!(l.host_link(), "vf-host");
        assert!(Layout::new("abcdef", 77).unwrap().host_link().len() <= 15);
        let last_node = l.node_ip(MAX_NODES - 1).octets()[3];
        assert!(last_node < ROUTER_HOST_BASE, "nodes run into the routers");
        let last_router = l.router_ip(MAX_ROUTE_TABLES - 1).octets()[3];
        assert!(last_router < BACKEND_HOST, "routers run into the backend");
    }

    #[test]
    fn vips_are_distinct_and_outside_every_lab_network() {
        let vips: Vec<Vip> = (0..600).map(vip).collect();
        assert_eq!(vips[0].to_string(), "10.200.0.1/32");
        assert_eq!(vips[250].to_string(), "10.200.1.1/32");
        let mut sorted = vips.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), vips.len());
        let l = Layout::new("vf", MAX_OCTET).unwrap();
        for block in l.claimed_blocks() {
            assert!(vips.iter().all(|v| !v.overlaps(&block)));
        }
    }

    #[test]
    fn prefixes_are_checked() {
        for good in ["vf", "a", "lab01", "abcdef"] {
            check_prefix(good).unwrap();
        }
        for bad in ["", "1a", "Vf", "v-f", "abcdefg", "v f", "vf/x"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(Layout::new("vf", 0).is_err());
        assert!(Layout::new("vf", MAX_OCTET + 1).is_err());
    }

    #[test]
    fn only_this_labs_namespaces_match() {
        for ours in ["vf-vpc", "vf-be", "vf-n0", "vf-n12", "vf-r1", "vf-c0"] {
            assert!(is_lab_netns("vf", ours), "{ours}");
        }
        for theirs in [
            "vf2-n0", "vf-", "vf-n", "vf-nx", "vf-other", "vfn0", "x-vf-n0", "vf-n0a",
        ] {
            assert!(!is_lab_netns("vf", theirs), "{theirs}");
        }
    }
}
