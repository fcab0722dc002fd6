//! Binds every VIP of the fleet on a local stub interface, so haproxy on this
//! node can accept traffic for any VIP the moment a route points at it.
//!
//! The route table alone decides who receives traffic, so every node binds
//! every VIP and the binding is never in the failover path: it is installed
//! at start, kept in sync with the config, and removed only by
//! [`VipBinding::uninstall`]. It talks netlink (rtnetlink) instead of running
//! `ip`, so errors are typed and nothing depends on the distribution's tools.
//!
//! The interface is a `dummy` link, or an `ifb` link on kernels built without
//! `CONFIG_DUMMY` (such as the lab's): both are ARP-less stubs that carry no
//! traffic, and local addresses on them are accepted on any interface
//! (Linux's weak host model). Only IPv4 addresses on our own interface are
//! managed; a link of the same name but another kind is never touched.
//!
//! [`check_sysctls`] reports the kernel settings the data plane depends on.

mod sysctl;

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkDummy, LinkIfb, LinkUnspec};

use thiserror::Error;
use tracing::{debug, info};
use vipfleet_core::types::Vip;

pub use sysctl::{check_sysctls, check_sysctls_at, SysctlFinding};

/// The interface name the config uses unless told otherwise.
pub const DEFAULT_INTERFACE: &str = "vipfleet0";
/// Linux interface names are at most `IFNAMSIZ - 1` bytes.
const INTERFACE_NAME_MAX_BYTES: usize = 15;

// Kernel errno values that netlink reports (negated) and we act on.
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const EOPNOTSUPP: i32 = 95;

pub use vipfleet_agent_config::binding::LinkKind;

/// The kernel's name for a link of `kind`.
fn info_kind(kind: LinkKind) -> InfoKind {
    match kind {
        LinkKind::Dummy => InfoKind::Dummy,
        LinkKind::Ifb => InfoKind::Ifb,
    }
}

/// An address as the kernel holds it; existing ones may not be valid VIPs
/// (a hand-added `10.1.2.3/24` has host bits set), so this is not a [`Vip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundAddr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl From<&Vip> for BoundAddr {
    fn from(vip: &Vip) -> Self {
        Self {
            addr: vip.addr(),
            prefix: vip.prefix(),
        }
    }
}

impl std::fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What one [`VipBinding::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingReport {
    pub created_link: bool,
    pub set_link_up: bool,
    pub added: Vec<BoundAddr>,
    pub removed: Vec<BoundAddr>,
    pub kept: Vec<BoundAddr>,
}

impl BindingReport {
    pub fn changed(&self) -> bool {
        self.created_link || self.set_link_up || !self.added.is_empty() || !self.removed.is_empty()
    }
}

#[derive(Debug, Error)]
pub enum BindingError {
    #[error("interface name {0:?} is not valid (1 to 15 bytes, no '/', ':' or whitespace)")]
    BadName(String),
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("interface {interface} exists but is a {found} link, not {expected}: refusing to touch it")]
    NotOurs {
        interface: String,
        found: String,
        expected: LinkKind,
    },
    #[error(
        "this kernel cannot create {kind} links for {interface} (built without it?); try vip_binding kind = \"ifb\""
    )]
    KindUnsupported { interface: String, kind: LinkKind },
    #[error("netlink {op} on {interface} failed: {source}")]
    Netlink {
        op: &'static str,
        interface: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// The VIP interface of this node.
#[derive(Clone, Debug)]
pub struct VipBinding {
    interface: String,
    kind: LinkKind,
}

/// The parts of a link we look at.
struct LinkView {
    index: u32,
    up: bool,
    kind: Option<InfoKind>,
}

impl VipBinding {
    pub fn new(interface: impl Into<String>, kind: LinkKind) -> Result<Self, BindingError> {
        let interface = interface.into();
        let valid = !interface.is_empty()
            && interface.len() <= INTERFACE_NAME_MAX_BYTES
            && interface != "."
            && interface != ".."
            && !interface.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            return Err(BindingError::BadName(interface));
        }
        Ok(Self { interface, kind })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Makes the interface exist, be up, and carry exactly `vips` (IPv4).
    /// Addresses already present are left alone, so repeating this is
    /// free and never interrupts a listener.
    pub async fn apply(&self, vips: &[Vip]) -> Result<BindingReport, BindingError> {
        let handle = connect()?;
        let mut report = BindingReport::default();

        let link = match self.find_link(&handle).await? {
            Some(link) => link,
            None => {
                self.create_link(&handle).await?;
                report.created_link = true;
                self.find_link(&handle).await?.ok_or_else(|| BindingError::Netlink {
                    op: "get link after create",
                    interface: self.interface.clone(),
                    source: rtnetlink::Error::RequestFailed,
                })?
            }
        };
        if !link.up {
            handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).up().build())
                .execute()
                .await
                .map_err(|e| self.netlink("set link up", e))?;
            report.set_link_up = true;
        }

        let mut wanted: Vec<BoundAddr> = vips.iter().map(BoundAddr::from).collect();
        wanted.sort();
        wanted.dedup();
        let present = self.addresses(&handle, link.index).await?;

        for want in &wanted {
            if present.iter().any(|(have, _)| have == want) {
                report.kept.push(*want);
                continue;
            }
            let added = handle
                .address()
                .add(link.index, IpAddr::V4(want.addr), want.prefix)
                .execute()
                .await;
            match added {
                Ok(()) => report.added.push(*want),
                // Someone added it between our read and our write: fine.
                Err(e) if errno(&e) == Some(EEXIST) => report.kept.push(*want),
                Err(e) => return Err(self.netlink("add address", e)),
            }
        }
        for (have, message) in present {
            if wanted.contains(&have) {
                continue;
            }
            match handle.address().del(message).execute().await {
                Ok(()) => report.removed.push(have),
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => return Err(self.netlink("delete address", e)),
            }
        }

        if report.changed() {
            info!(
                interface = %self.interface,
                created = report.created_link,
                added = ?report.added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                removed = ?report.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "VIP binding updated"
            );
        } else {
            debug!(interface = %self.interface, vips = report.kept.len(), "VIP binding already in place");
        }
        Ok(report)
    }

    /// The IPv4 addresses on our interface; `None` when it does not exist.
    pub async fn bound(&self) -> Result<Option<Vec<BoundAddr>>, BindingError> {
        let handle = connect()?;
        let Some(link) = self.find_link(&handle).await? else {
            return Ok(None);
        };
        let mut addrs: Vec<BoundAddr> = self
            .addresses(&handle, link.index)
            .await?
            .into_iter()
            .map(|(addr, _)| addr)
            .collect();
        addrs.sort();
        Ok(Some(addrs))
    }

    /// Removes the interface and with it every VIP. Returns whether there was
    /// one to remove.
    pub async fn uninstall(&self) -> Result<bool, BindingError> {
        let handle = connect()?;
        let Some(link) = self.find_link(&handle).await? else {
            return Ok(false);
        };
        match handle.link().del(link.index).execute().await {
            Ok(()) => {
                info!(interface = %self.interface, "VIP interface removed");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(self.netlink("delete link", e)),
        }
    }

    /// Our link, if it exists; a link of that name but another kind is an
    /// error, so no caller can modify someone else's interface.
    async fn find_link(&self, handle: &Handle) -> Result<Option<LinkView>, BindingError> {
        let found = handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute()
            .try_next()
            .await;
        let message = match found {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => return Ok(None),
            Err(e) => return Err(self.netlink("get link", e)),
        };
        let view = view_link(&message);
        if view.kind.as_ref() != Some(&info_kind(self.kind)) {
            return Err(BindingError::NotOurs {
                interface: self.interface.clone(),
                found: view
                    .kind
                    .map_or_else(|| "physical or unknown".to_string(), |k| k.to_string()),
                expected: self.kind,
            });
        }
        Ok(Some(view))
    }

    async fn create_link(&self, handle: &Handle) -> Result<(), BindingError> {
        let message = match self.kind {
            LinkKind::Dummy => LinkDummy::new(&self.interface).build(),
            LinkKind::Ifb => LinkIfb::new(&self.interface).build(),
        };
        match handle.link().add(message).execute().await {
            Ok(()) => {
                info!(interface = %self.interface, kind = %self.kind, "VIP interface created");
                Ok(())
            }
            // Created concurrently (a second agent start): find_link vets it.
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) if errno(&e) == Some(EOPNOTSUPP) => Err(BindingError::KindUnsupported {
                interface: self.interface.clone(),
                kind: self.kind,
            }),
            Err(e) => Err(self.netlink("create link", e)),
        }
    }

    async fn addresses(&self, handle: &Handle, index: u32) -> Result<Vec<(BoundAddr, AddressMessage)>, BindingError> {
        let mut stream = handle.address().get().set_link_index_filter(index).execute();
        let mut out = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(|e| self.netlink("list addresses", e))? {
            if message.header.family != AddressFamily::Inet || message.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs
            // from it only on point-to-point links.
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = local.or(address) {
                let bound = BoundAddr {
                    addr,
                    prefix: message.header.prefix_len,
                };
                out.push((bound, message));
            }
        }
        Ok(out)
    }

    fn netlink(&self, op: &'static str, source: rtnetlink::Error) -> BindingError {
        BindingError::Netlink {
            op,
            interface: self.interface.clone(),
            source,
        }
    }
}

fn connect() -> Result<Handle, BindingError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(BindingError::Socket)?;
    // The connection task ends when the last handle is dropped.
    tokio::spawn(connection);
    Ok(handle)
}

fn view_link(message: &LinkMessage) -> LinkView {
    let kind = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    LinkView {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        kind,
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_validated() {
        assert!(VipBinding::new("vipfleet0", LinkKind::Dummy).is_ok());
        assert!(VipBinding::new("a-name-of-16-chr", LinkKind::Dummy).is_err());
        assert!(VipBinding::new("", LinkKind::Dummy).is_err());
        assert!(VipBinding::new("bad name", LinkKind::Dummy).is_err());
        assert!(VipBinding::new("eth0:1", LinkKind::Dummy).is_err());
    }

    #[test]
    fn link_kinds_are_the_kernels_kinds() {
        for kind in [LinkKind::Dummy, LinkKind::Ifb] {
            assert_eq!(info_kind(kind).to_string(), kind.to_string());
        }
    }
}
