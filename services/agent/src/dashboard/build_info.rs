//! What an agent announces about itself in its node item's `version`:
//! the crate version, plus a fingerprint of the fleet-wide configuration as
//! semver build metadata (`0.1.0+cfg.1a2b3c4d5e6f`).
//!
//! Nodes must agree on the shard layout, the route tables and the lease
//! timings, or they compute different targets and fight over shards. The
//! fingerprint lets every dashboard show, for every node, whether it runs
//! the same configuration as the observer, without adding an attribute to
//! the lease table. Per-node settings (weight, address) are left out.

use vipfleet_core::machine::NodeSetup;

/// Separates the version from the fingerprint; `+` starts semver build
/// metadata, which carries no precedence.
const TAG: &str = "+cfg.";
/// Hex digits kept of the 64-bit hash: plenty to tell configs apart at a
/// glance.
const FINGERPRINT_DIGITS: usize = 12;

/// A stable hash of the settings all nodes must share. FNV-1a over their
/// JSON form: the same on every build and platform, unlike std's hasher.
pub fn config_fingerprint(setup: &NodeSetup) -> String {
    let canonical = serde_json::json!({
        "layout": setup.layout,
        "route_tables": setup.route_tables,
        "lease": setup.lease,
    })
    .to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")[..FINGERPRINT_DIGITS].to_string()
}

/// The `version` to announce: `version+cfg.<fingerprint>`.
pub fn announced_version(version: &str, fingerprint: &str) -> String {
    format!("{version}{TAG}{fingerprint}")
}

/// Splits an announced version into the version and the fingerprint (none
/// for agents that announce a bare version).
pub fn split_version(announced: &str) -> (&str, Option<&str>) {
    match announced.split_once(TAG) {
        Some((version, fingerprint)) => (version, Some(fingerprint)),
        None => (announced, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipfleet_core::{EniId, Incarnation, LeaseConfig, NodeId, NodeInfo, RouteTableId, ShardLayout, Vip};

    fn setup(name: &str, weight: u32, lease: LeaseConfig) -> NodeSetup {
        let vips: Vec<Vip> = ["10.200.0.1", "10.200.0.2"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        NodeSetup {
            info: NodeInfo {
                id: NodeId::new(name),
                eni: EniId(format!("eni-{name}")),
                az: "az-1".into(),
                addr: "10.0.0.1".into(),
                weight,
                version: "0.1.0".into(),
            },
            inc: Incarnation(name.len() as u64),
            lease,
            layout: ShardLayout::one_per_vip(&vips).unwrap(),
            route_tables: vec![RouteTableId("rtb-1".into())],
        }
    }

    #[test]
    fn the_fingerprint_ignores_per_node_settings_but_not_fleet_ones() {
        let a = config_fingerprint(&setup("a", 1, LeaseConfig::DEFAULT));
        assert_eq!(a.len(), FINGERPRINT_DIGITS);
        assert_eq!(a, config_fingerprint(&setup("b", 3, LeaseConfig::DEFAULT)));
        assert_ne!(a, config_fingerprint(&setup("a", 1, LeaseConfig::FAST)));
        let mut other_tables = setup("a", 1, LeaseConfig::DEFAULT);
        other_tables.route_tables.push(RouteTableId("rtb-2".into()));
        assert_ne!(a, config_fingerprint(&other_tables));
    }

    #[test]
    fn announced_versions_split_back() {
        let v = announced_version("0.1.0", "1a2b3c4d5e6f");
        assert_eq!(v, "0.1.0+cfg.1a2b3c4d5e6f");
        assert_eq!(split_version(&v), ("0.1.0", Some("1a2b3c4d5e6f")));
        assert_eq!(split_version("0.0.9"), ("0.0.9", None));
    }
}
