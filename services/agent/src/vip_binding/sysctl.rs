//! The kernel settings a node's data plane depends on, read from /proc/sys
//! and reported as findings for the agent to log. The agent does not change
//! them: the bootstrap owns the host's sysctls.
//!
//! What a node needs, and why (traffic for a VIP reaches the node because a
//! VPC route `VIP/32 -> ENI` points at its ENI; it arrives on that interface
//! with the client's address as source and the VIP as destination):
//! - The VIP must be a local address, which the VIP binding makes it. Linux
//!   accepts packets for a local address on any interface (weak host model),
//!   so the stub interface never sees traffic itself.
//! - `net.ipv4.ip_nonlocal_bind = 1`: haproxy's `bind <VIP>:<port>` then works
//!   even before the agent has bound the VIPs (boot order, agent restart).
//!   Not needed when haproxy binds the wildcard address.
//! - `rp_filter` checks the *source* of an incoming packet against the route
//!   back to it, never the VIP destination. Strict mode (1) drops client
//!   traffic when the route back leaves by another interface, as on a node
//!   with several ENIs; loose (2) or off (0) allows these asymmetric paths.
//!   On a single-interface node strict mode is harmless. The kernel uses the
//!   larger of `conf.all` and the interface's own value.
//! - `net.ipv4.ip_forward = 0`: a node terminates connections and never
//!   routes. With forwarding on, a packet for a VIP not bound here goes back
//!   to the VPC, whose route points at this node again: a loop until the TTL
//!   runs out instead of a clean drop.
//! - ARP settings (`arp_ignore`/`arp_announce`) do not matter in a VPC, which
//!   answers ARP itself, nor in the lab, whose routers ARP for node addresses.

use std::fs;
use std::path::Path;

/// Where the kernel exposes sysctls.
const PROC_SYS: &str = "/proc/sys";

/// One checked setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlFinding {
    /// The sysctl's dotted name (`net.ipv4.conf.eth0.rp_filter`).
    pub name: String,
    /// The value read; `None` when it could not be read.
    pub value: Option<String>,
    pub expected: String,
    /// Whether the value suits the data plane; the agent warns when not.
    pub ok: bool,
    pub why: String,
}

/// Checks the live kernel's settings (of this network namespace).
/// `vip_interface` is the VIP stub, which is left out of per-interface checks.
pub fn check_sysctls(vip_interface: &str) -> Vec<SysctlFinding> {
    check_sysctls_at(Path::new(PROC_SYS), vip_interface)
}

/// As [`check_sysctls`], reading from `root` instead of `/proc/sys`.
pub fn check_sysctls_at(root: &Path, vip_interface: &str) -> Vec<SysctlFinding> {
    let read = |name: &str| -> Result<String, String> {
        let path = root.join(name.replace('.', "/"));
        fs::read_to_string(&path)
            .map(|v| v.trim().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut findings = Vec::new();

    findings.push(finding(
        "net.ipv4.ip_nonlocal_bind",
        read("net.ipv4.ip_nonlocal_bind"),
        "1",
        |v| v == "1",
        "lets haproxy bind VIP listeners before the agent has bound the VIPs (boot order, agent \
         restart); with 0 `bind <VIP>:port` fails with EADDRNOTAVAIL unless haproxy binds 0.0.0.0",
    ));
    findings.push(finding(
        "net.ipv4.ip_forward",
        read("net.ipv4.ip_forward"),
        "0",
        |v| v == "0",
        "a node terminates connections and never routes; with forwarding on, a packet for a VIP \
         not bound here is sent back to the VPC, whose route points at this node again",
    ));

    let interfaces = match fs::read_dir(root.join("net/ipv4/conf")) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !matches!(n.as_str(), "all" | "default" | "lo") && n != vip_interface)
                .collect();
            names.sort();
            names
        }
        Err(e) => {
            findings.push(SysctlFinding {
                name: "net.ipv4.conf".to_string(),
                value: None,
                expected: "a readable directory".to_string(),
                ok: false,
                why: format!("cannot list interfaces to check rp_filter: {e}"),
            });
            return findings;
        }
    };
    let all = read("net.ipv4.conf.all.rp_filter");
    let multi_homed = interfaces.len() > 1;
    for interface in &interfaces {
        let name = format!("net.ipv4.conf.{interface}.rp_filter");
        let effective = match (&all, read(&name)) {
            (Ok(all), Ok(own)) => Ok(effective_rp_filter(all, &own)),
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e),
        };
        let why = if multi_homed {
            "several interfaces: client traffic for a VIP may arrive on one ENI while the route back \
             leaves by another, which strict reverse-path filtering (1) drops; the effective value \
             is the larger of conf.all and the interface's own"
        } else {
            "strict reverse-path filtering (1) is harmless on a single-interface node, but drops \
             asymmetric client traffic once a second ENI is attached; the effective value is the \
             larger of conf.all and the interface's own"
        };
        findings.push(finding(
            &format!("{name} (effective)"),
            effective,
            "0 or 2 (1 only on a single-interface node)",
            |v| v == "0" || v == "2" || (v == "1" && !multi_homed),
            why,
        ));
    }
    findings
}

/// The kernel applies `max(conf.all, conf.<interface>)`.
fn effective_rp_filter(all: &str, own: &str) -> String {
    match (all.parse::<u8>(), own.parse::<u8>()) {
        (Ok(a), Ok(b)) => a.max(b).to_string(),
        _ => format!("{all}/{own}"),
    }
}

fn finding(
    name: &str,
    value: Result<String, String>,
    expected: &str,
    accept: impl Fn(&str) -> bool,
    why: &str,
) -> SysctlFinding {
    match value {
        Ok(value) => SysctlFinding {
            name: name.to_string(),
            ok: accept(&value),
            value: Some(value),
            expected: expected.to_string(),
            why: why.to_string(),
        },
        Err(e) => SysctlFinding {
            name: name.to_string(),
            value: None,
            expected: expected.to_string(),
            ok: false,
            why: format!("{why} (could not read it: {e})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeProc(std::path::PathBuf);

    impl FakeProc {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("vipfleet-sysctl-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }
        fn set(&self, name: &str, value: &str) -> &Self {
            let path = self.0.join(name.replace('.', "/"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, format!("{value}\n")).unwrap();
            self
        }
        fn check(&self) -> Vec<SysctlFinding> {
            check_sysctls_at(&self.0, "vipfleet0")
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn get<'a>(findings: &'a [SysctlFinding], name: &str) -> &'a SysctlFinding {
        findings
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no finding {name} in {findings:#?}"))
    }

    #[test]
    fn good_single_interface_node() {
        let proc = FakeProc::new("good");
        proc.set("net.ipv4.ip_nonlocal_bind", "1")
            .set("net.ipv4.ip_forward", "0")
            .set("net.ipv4.conf.all.rp_filter", "0")
            .set("net.ipv4.conf.lo.rp_filter", "1")
            .set("net.ipv4.conf.vipfleet0.rp_filter", "1")
            .set("net.ipv4.conf.eth0.rp_filter", "1");
        let findings = proc.check();
        assert!(findings.iter().all(|f| f.ok), "{findings:#?}");
        // lo and the VIP stub are not checked.
        assert_eq!(findings.len(), 3, "{findings:#?}");
        assert_eq!(
            get(&findings, "net.ipv4.conf.eth0.rp_filter (effective)")
                .value
                .as_deref(),
            Some("1")
        );
    }

    #[test]
    fn strict_rp_filter_on_a_multi_homed_node_is_flagged() {
        let proc = FakeProc::new("multi");
        proc.set("net.ipv4.ip_nonlocal_bind", "0")
            .set("net.ipv4.ip_forward", "1")
            .set("net.ipv4.conf.all.rp_filter", "1")
            .set("net.ipv4.conf.eth0.rp_filter", "0")
            .set("net.ipv4.conf.eth1.rp_filter", "2");
        let findings = proc.check();
        assert!(!get(&findings, "net.ipv4.ip_nonlocal_bind").ok);
        assert!(!get(&findings, "net.ipv4.ip_forward").ok);
        // conf.all = 1 makes eth0 strict despite its own 0; eth1's 2 wins over 1.
        let eth0 = get(&findings, "net.ipv4.conf.eth0.rp_filter (effective)");
        assert_eq!((eth0.value.as_deref(), eth0.ok), (Some("1"), false));
        let eth1 = get(&findings, "net.ipv4.conf.eth1.rp_filter (effective)");
        assert_eq!((eth1.value.as_deref(), eth1.ok), (Some("2"), true));
    }

    #[test]
    fn unreadable_values_are_findings_not_panics() {
        let proc = FakeProc::new("missing");
        let findings = proc.check();
        let bind = get(&findings, "net.ipv4.ip_nonlocal_bind");
        assert_eq!((bind.value.as_deref(), bind.ok), (None, false));
        assert!(findings.iter().any(|f| f.name == "net.ipv4.conf" && !f.ok));
    }
}
