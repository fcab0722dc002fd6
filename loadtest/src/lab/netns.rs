//! The lab's network: namespaces, the bridge that plays the VPC subnet,
//! veth pairs, addresses, routes and sysctls, made with the `ip` and
//! `sysctl` commands (the agent itself uses netlink; the lab is a test rig
//! and shelling out keeps it short and easy to reproduce by hand).
//!
//! Every veth is created inside the bridge namespace with its peer moved
//! straight into the target namespace, so no transient name ever appears in
//! the root namespace; the host's own leg (`<prefix>-host`) is the one
//! exception, created in the root namespace with its peer in the bridge
//! namespace.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use vipfleet_core::Vip;

use super::layout::{Layout, BRIDGE};

/// `proto` number the route mirror tags its kernel routes with, so it can
/// tell them from the connected routes after a restart.
pub const MIRROR_ROUTE_PROTO: u8 = 177;
/// The interface name of a namespace's leg on the bridge (or on its router).
pub const LEG: &str = "eth0";

/// Runs `ip <args>` and returns its stdout; the error carries stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Runs `iptables -w <args>` inside namespace `ns` (its own tables).
pub fn iptables_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, "iptables", "-w"];
    all.extend_from_slice(args);
    ip(&all)
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets a sysctl inside namespace `ns` (`None`: the root namespace).
pub fn sysctl(ns: Option<&str>, key: &str, value: &str) -> Result<()> {
    let setting = format!("{key}={value}");
    match ns {
        Some(ns) => run("ip", &["netns", "exec", ns, "sysctl", "-qw", &setting]).map(|_| ()),
        None => run("sysctl", &["-qw", &setting]).map(|_| ()),
    }
}

/// Whether `ip netns` works here (iproute2 present, /run/netns usable).
pub fn netns_available() -> Result<()> {
    ip(&["netns", "list"]).map(|_| ())
}

pub fn list_netns() -> Result<Vec<String>> {
    // Lines look like `vf-n0 (id: 3)` or just `vf-n0`.
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

pub fn add_netns(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip_in(name, &["link", "set", "lo", "up"])?;
    // Link-local IPv6 chatter (DAD, router solicitations) is noise here.
    let _ = sysctl(Some(name), "net.ipv6.conf.all.disable_ipv6", "1");
    let _ = sysctl(Some(name), "net.ipv6.conf.default.disable_ipv6", "1");
    Ok(())
}

pub fn del_netns(name: &str) -> Result<()> {
    ip(&["netns", "del", name]).map(|_| ())
}

/// Link names in the root namespace.
pub fn root_links() -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Link {
        ifname: String,
    }
    let links: Vec<Link> = serde_json::from_str(&ip(&["-j", "link", "show"])?).context("parsing `ip -j link`")?;
    Ok(links.into_iter().map(|l| l.ifname).collect())
}

pub fn del_root_link(name: &str) -> Result<()> {
    ip(&["link", "del", name]).map(|_| ())
}

/// IPv4 blocks the root namespace already uses (its addresses and routes),
/// so a lab never takes a network the host has.
pub fn root_ipv4_blocks() -> Result<Vec<Vip>> {
    #[derive(Deserialize)]
    struct AddrInfo {
        local: Option<String>,
        prefixlen: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Iface {
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(Deserialize)]
    struct Route {
        dst: String,
    }
    let mut blocks = Vec::new();
    let ifaces: Vec<Iface> =
        serde_json::from_str(&ip(&["-j", "-4", "addr", "show"])?).context("parsing `ip -j addr`")?;
    for a in ifaces.iter().flat_map(|i| &i.addr_info) {
        if let (Some(local), Some(len)) = (&a.local, a.prefixlen) {
            if let Ok(addr) = local.parse::<Ipv4Addr>() {
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len.min(32)))
                };
                blocks.extend(Vip::new(Ipv4Addr::from(u32::from(addr) & mask), len).ok());
            }
        }
    }
    let routes: Vec<Route> =
        serde_json::from_str(&ip(&["-j", "-4", "route", "show", "table", "all"])?).context("parsing `ip -j route`")?;
    // The default route covers everything and says nothing about what is taken.
    blocks.extend(
        routes
            .iter()
            .filter(|r| r.dst != "default")
            .filter_map(|r| r.dst.parse::<Vip>().ok()),
    );
    Ok(blocks)
}

/// The bridge namespace, the bridge, and the host's leg with the host address.
pub fn create_vpc(layout: &Layout) -> Result<()> {
    let vpc = layout.vpc_ns();
    add_netns(&vpc)?;
    ip_in(&vpc, &["link", "add", BRIDGE, "type", "bridge"])?;
    ip_in(&vpc, &["link", "set", BRIDGE, "up"])?;
    let host = layout.host_link();
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &vpc,
    ])?;
    ip_in(&vpc, &["link", "set", "host", "master", BRIDGE, "up"])?;
    let _ = sysctl(None, &format!("net.ipv6.conf.{host}.disable_ipv6"), "1");
    ip(&["addr", "add", &format!("{}/24", layout.host_ip()), "dev", &host])?;
    ip(&["link", "set", &host, "up"])?;
    Ok(())
}

/// Puts namespace `ns` on the bridge: a veth `port` (in the bridge
/// namespace) to `eth0` (in `ns`) with `addr/24`, and optionally the MAC
/// the ENI has in moto.
pub fn join_bridge(layout: &Layout, ns: &str, port: &str, addr: Ipv4Addr, mac: Option<&str>) -> Result<()> {
    let vpc = layout.vpc_ns();
    ip_in(
        &vpc,
        &["link", "add", port, "type", "veth", "peer", "name", LEG, "netns", ns],
    )?;
    ip_in(&vpc, &["link", "set", port, "master", BRIDGE, "up"])?;
    if let Some(mac) = mac {
        ip_in(ns, &["link", "set", LEG, "address", mac])?;
    }
    ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", LEG])?;
    ip_in(ns, &["link", "set", LEG, "up"])?;
    Ok(())
}

/// Router `j` on the bridge, forwarding, with its client namespace behind it.
pub fn create_router_and_client(layout: &Layout, j: usize) -> Result<()> {
    let (router, client) = (layout.router_ns(j), layout.client_ns(j));
    add_netns(&router)?;
    add_netns(&client)?;
    join_bridge(layout, &router, &format!("r{j}"), layout.router_ip(j), None)?;
    ip_in(
        &router,
        &[
            "link", "add", "cli", "type", "veth", "peer", "name", LEG, "netns", &client,
        ],
    )?;
    ip_in(
        &router,
        &[
            "addr",
            "add",
            &format!("{}/24", layout.router_client_ip(j)),
            "dev",
            "cli",
        ],
    )?;
    ip_in(&router, &["link", "set", "cli", "up"])?;
    ip_in(
        &client,
        &["addr", "add", &format!("{}/24", layout.client_ip(j)), "dev", LEG],
    )?;
    ip_in(&client, &["link", "set", LEG, "up"])?;
    ip_in(
        &client,
        &[
            "route",
            "add",
            "default",
            "via",
            &layout.router_client_ip(j).to_string(),
        ],
    )?;
    sysctl(Some(&router), "net.ipv4.ip_forward", "1")?;
    // During a failover a VIP's reply may arrive from a node the router has
    // no route back to yet; a VPC does not drop that, so neither do we.
    sysctl(Some(&router), "net.ipv4.conf.all.rp_filter", "0")?;
    sysctl(Some(&router), "net.ipv4.conf.default.rp_filter", "0")?;
    Ok(())
}

/// Node `i`: on the bridge with its ENI's address and MAC, and a route to
/// every client network via that client's router (replies go back the way
/// requests came).
pub fn create_node(layout: &Layout, i: usize, mac: &str, route_tables: usize) -> Result<()> {
    let ns = layout.node_ns(i);
    add_netns(&ns)?;
    join_bridge(layout, &ns, &format!("n{i}"), layout.node_ip(i), Some(mac))?;
    for j in 0..route_tables {
        ip_in(
            &ns,
            &[
                "route",
                "add",
                &layout.client_net(j),
                "via",
                &layout.router_ip(j).to_string(),
            ],
        )?;
    }
    // haproxy binds the wildcard, but a config binding VIPs must not fail
    // before the agent has bound them (see the agent's sysctl findings).
    sysctl(Some(&ns), "net.ipv4.ip_nonlocal_bind", "1")?;
    Ok(())
}

pub fn create_backend_ns(layout: &Layout) -> Result<()> {
    let ns = layout.backend_ns();
    add_netns(&ns)?;
    join_bridge(layout, &ns, "be", layout.backend_ip(), None)
}

/// A kernel route the mirror manages, as `ip -j route show proto N` gives it.
#[derive(Clone, Debug, Deserialize)]
pub struct KernelRoute {
    /// `10.200.0.1` for a /32, `10.200.1.0/24` otherwise.
    pub dst: String,
    pub gateway: Option<String>,
    /// `blackhole`, `unicast`, … (absent for unicast in some versions).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl KernelRoute {
    /// The destination as a CIDR (`ip` drops the `/32`).
    pub fn cidr(&self) -> Option<Vip> {
        self.dst.parse().ok()
    }
}

/// The mirror's routes in router namespace `ns`.
pub fn mirror_routes(ns: &str) -> Result<Vec<KernelRoute>> {
    let proto = MIRROR_ROUTE_PROTO.to_string();
    let text = ip_in(ns, &["-j", "route", "show", "proto", &proto])?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).with_context(|| format!("parsing `ip -j route` of {ns}"))
}
