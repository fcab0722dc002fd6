//! Domain types: who the nodes are, what they announce, and the records the
//! lease store returns.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::layout::LayoutId;
pub use crate::vip::{Vip, VipError};

/// A node's identity: its EC2 instance id (`i-0abc…`), or any stable name in
/// the lab and the simulation. Ordered, compared and hashed as its text.
///
/// Node ids are map keys everywhere (every node tracks every other) and are
/// copied into every record that names a node: so the text is shared, not
/// copied, and its first bytes are kept as a number that decides most
/// comparisons without reading the text.
#[derive(Clone)]
pub struct NodeId {
    /// The first 8 bytes of the text, big-endian, zero-padded: when two
    /// differ, they order as the texts do.
    prefix: u64,
    text: Arc<str>,
}

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        let text: Arc<str> = Arc::from(id.into());
        let mut head = [0u8; 8];
        let n = text.len().min(8);
        head[..n].copy_from_slice(&text.as_bytes()[..n]);
        Self {
            prefix: u64::from_be_bytes(head),
            text,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the prefix holds the whole text (an id of at most 8 bytes):
    /// then two ids with equal prefixes differ at most in their lengths,
    /// which are known without reading the texts.
    fn fits_prefix(&self) -> bool {
        self.text.len() <= 8
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
            && if self.fits_prefix() && other.fits_prefix() {
                self.text.len() == other.text.len()
            } else {
                Arc::ptr_eq(&self.text, &other.text) || self.text == other.text
            }
    }
}

impl Eq for NodeId {}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> Ordering {
        // Zero padding orders a text before any longer one it starts, as
        // the texts do; equal prefixes leave it to the texts.
        // Both within their prefixes: the shorter is the other with zeros
        // cut off, and comes first.
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.fits_prefix() && other.fits_prefix() {
                self.text.len().cmp(&other.text.len())
            } else {
                self.text.as_ref().cmp(other.text.as_ref())
            }
        })
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for NodeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodeId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(NodeId::new)
    }
}

/// A random id chosen by each agent process at start. The heartbeat is
/// conditional on it, so a second process with the same node id is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A shard: the unit of ownership, one CIDR block (a VIP, or a prefix of
/// VIPs that one route serves). Identified by the block itself, never by a
/// position in a list, so nodes whose configurations list the VIPs in
/// different orders (or list different VIPs) still mean the same thing by
/// the same shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(Vip);

impl ShardId {
    pub const fn of(vip: Vip) -> Self {
        Self(vip)
    }

    /// The block whose route this shard's owner maintains.
    pub fn vip(&self) -> Vip {
        self.0
    }

    /// A stable number for hashing (rendezvous ranks): address and prefix.
    pub fn key(&self) -> u64 {
        (u64::from(u32::from(self.0.addr())) << 8) | u64::from(self.0.prefix())
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ShardId {
    type Err = VipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ShardId)
    }
}

/// Fencing token of a shard: bumped on every change of owner.
pub type Epoch = u64;

/// A node's heartbeat counter.
pub type Heartbeat = u64;

/// An elastic network interface id (`eni-…`): the target of VIP routes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EniId(pub String);

impl fmt::Display for EniId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A VPC route table id (`rtb-…`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteTableId(pub String);

impl fmt::Display for RouteTableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node says about itself in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving, and takes its share of shards.
    Active,
    /// Not ready yet (haproxy's health not known, source/destination check
    /// not confirmed off): keeps what it holds, takes nothing new.
    Starting,
    /// Leaving (termination, an operator's drain): hands every shard away.
    Draining,
    /// Local haproxy fails its checks: hands its shards away until it recovers.
    Unhealthy,
    /// Declared dead by an observer after its lease expired.
    Dead,
    /// A state this version does not know (a newer agent wrote it): the node
    /// keeps what it holds and is given nothing, and nothing else changes.
    Unrecognized,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Starting => "starting",
            NodeState::Draining => "draining",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Dead => "dead",
            NodeState::Unrecognized => "unrecognized",
        }
    }

    /// Reads what a node wrote; any text this version does not know is
    /// [`NodeState::Unrecognized`], never an error.
    pub fn parse_lenient(s: &str) -> NodeState {
        match s {
            "active" => NodeState::Active,
            "starting" => NodeState::Starting,
            "draining" => NodeState::Draining,
            "unhealthy" => NodeState::Unhealthy,
            "dead" => NodeState::Dead,
            _ => NodeState::Unrecognized,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The static facts a node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub eni: EniId,
    pub az: String,
    /// The node's private address (for the dashboard and peer probes).
    pub addr: String,
    /// Relative share of shards; 0 takes none.
    pub weight: u32,
    pub version: String,
}

/// The fleet configuration a node runs with, announced in its node item so
/// that peers can tell where they disagree: the shards it serves (by the
/// fingerprint of its layout, whose VIPs are in a layout item of their
/// own), the route tables it maintains, and its lease timings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub layout: LayoutId,
    pub route_tables: Vec<RouteTableId>,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// The UDP port the node answers peer probes on; `None`: it does not
    /// (an older agent, or probing turned off), so peers never judge it by
    /// probes, only by its lease.
    pub peer_port: Option<u16>,
}

/// A node item as the store returns it.
///
/// Its static parts are shared, not copied: every node reads every node
/// item every scan while the fleet is unsettled, and a copy of their texts
/// per read was most of what a read cost at a thousand nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(with = "shared")]
    pub info: Arc<NodeInfo>,
    pub hb: Heartbeat,
    pub inc: Incarnation,
    pub state: NodeState,
    /// `None` when the item does not announce a configuration (an agent of
    /// an older version, or an item edited by hand).
    #[serde(default, with = "shared_option")]
    pub config: Option<Arc<NodeConfig>>,
    /// The highest shard epoch the node has seen: a claim of a shard whose
    /// item vanished starts above every floor it reads, so no node sees an
    /// epoch go back (0 when not announced).
    pub epoch_floor: Epoch,
    /// Set when peers found this incarnation dead and a node evicted it
    /// (`evicted_by` names that node): the incarnation can never heartbeat
    /// again, so its lease runs out at most a lease after the eviction,
    /// and its shards may be taken over at once.
    pub evicted_by: Option<NodeId>,
}

/// Serde for a shared value: written and read as the value itself (serde's
/// own `Arc` support needs its `rc` feature, for every crate that uses it).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(value, s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// [`shared`] for an optional value.
mod shared_option {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &Option<Arc<T>>, s: S) -> Result<S::Ok, S::Error> {
        value.as_deref().serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<T>>, D::Error> {
        Option::<T>::deserialize(d).map(|v| v.map(Arc::new))
    }
}

/// A shard item as the store returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub id: ShardId,
    pub owner: Option<NodeId>,
    pub owner_inc: Option<Incarnation>,
    pub epoch: Epoch,
    pub moves: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_are_their_blocks() {
        let shard: ShardId = "10.200.1.0/24".parse().unwrap();
        assert_eq!(shard.to_string(), "10.200.1.0/24");
        assert_eq!(shard.vip().prefix(), 24);
        let host: ShardId = "10.200.1.0/32".parse().unwrap();
        assert_ne!(shard.key(), host.key(), "the prefix is part of the key");
    }

    #[test]
    fn node_ids_order_compare_and_serialize_as_their_text() {
        let texts = [
            "",
            "a",
            "a\0",
            "a\0b",
            "a\0\0\0\0\0\0\0",
            "a\0\0\0\0\0\0\0\0",
            "ab",
            "abcdefgh",
            "n01",
            "n02",
            "n10",
            "n100",
            "i-0abcdef",
            "i-0abcdef0",
            "i-0abcdef01",
            "i-0abcdeg",
            "i-0abcdef\u{e9}",
            "zz",
        ];
        for a in texts {
            for b in texts {
                let (x, y) = (NodeId::new(a), NodeId::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(x == y, a == b, "{a:?} vs {b:?}");
            }
        }
        let id = NodeId::new("i-0abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"i-0abc\"");
        assert_eq!(serde_json::from_str::<NodeId>("\"i-0abc\"").unwrap(), id);
        assert_eq!(format!("{id:?}"), "NodeId(\"i-0abc\")");
    }

    #[test]
    fn unknown_states_are_unrecognized_not_errors() {
        for state in [
            NodeState::Active,
            NodeState::Starting,
            NodeState::Draining,
            NodeState::Unhealthy,
            NodeState::Dead,
        ] {
            assert_eq!(NodeState::parse_lenient(state.as_str()), state);
        }
        assert_eq!(NodeState::parse_lenient("hibernating"), NodeState::Unrecognized);
        assert_eq!(NodeState::parse_lenient(""), NodeState::Unrecognized);
    }
}
