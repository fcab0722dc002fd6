//! Where each member's detector listens: the node's private address and
//! the peer port its node item announces, rebuilt from the lease machine's
//! node records after every step.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use vipfleet_core::{NodeId, NodeRecord};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook {
    addrs: BTreeMap<NodeId, SocketAddr>,
}

impl AddressBook {
    /// Every node that announces a peer port at an address that parses;
    /// the rest cannot be reached (the detector is not given them either:
    /// `Machine::peer_members` leaves out nodes without a port).
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Self {
        let addrs = nodes
            .into_iter()
            .filter_map(|n| {
                let port = n.config.as_ref()?.peer_port?;
                let ip = n.info.addr.parse::<IpAddr>().ok()?;
                Some((n.info.id.clone(), SocketAddr::new(ip, port)))
            })
            .collect();
        Self { addrs }
    }

    pub fn insert(&mut self, node: NodeId, addr: SocketAddr) {
        self.addrs.insert(node, addr);
    }

    pub fn get(&self, node: &NodeId) -> Option<SocketAddr> {
        self.addrs.get(node).copied()
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}
