//! The `[vip_binding]` section's link kind; binding the VIPs over netlink is
//! the agent's (`vipfleet_agent::vip_binding`).

use serde::{Deserialize, Serialize};

/// Which kind of stub link carries the VIPs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    #[default]
    Dummy,
    /// For kernels without `CONFIG_DUMMY`; behaves the same for local delivery.
    Ifb,
}

impl LinkKind {
    /// The word in the config file, which is also the kernel's name for the
    /// link kind (`ip link add … type dummy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dummy => "dummy",
            Self::Ifb => "ifb",
        }
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_kind_reads_from_config_words() {
        #[derive(Deserialize)]
        struct Cfg {
            kind: LinkKind,
        }
        let cfg: Cfg = toml::from_str("kind = \"ifb\"").unwrap();
        assert_eq!(cfg.kind, LinkKind::Ifb);
        assert_eq!(LinkKind::Dummy.to_string(), "dummy");
    }
}
