//! Domain types: who the nodes are, what a shard holds, and the records the
//! lease store returns.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A node's identity: its EC2 instance id (`i-0abc…`), or any stable name in
/// the lab and the simulation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// A shard of VIPs: the unit of ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
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

/// An IPv4 CIDR block that clients reach through the fleet (`10.200.0.1/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VipError {
    #[error("{0:?} is not an IPv4 CIDR block (expected a.b.c.d/len)")]
    Malformed(String),
    #[error("{0:?} has prefix length {1}, which is over 32")]
    PrefixTooLong(String, u32),
    #[error("{input:?} has host bits set; did you mean {network}?")]
    HostBitsSet { input: String, network: String },
}

impl Vip {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, VipError> {
        let text = format!("{addr}/{prefix}");
        if prefix > 32 {
            return Err(VipError::PrefixTooLong(text, u32::from(prefix)));
        }
        let vip = Self { addr, prefix };
        if vip.network() != addr {
            return Err(VipError::HostBitsSet {
                input: text,
                network: Self {
                    addr: vip.network(),
                    prefix,
                }
                .to_string(),
            });
        }
        Ok(vip)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `addr` lies inside this block.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(&self, other: &Vip) -> bool {
        let shorter = if self.prefix <= other.prefix { self } else { other };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.addr)
    }
}

impl FromStr for Vip {
    type Err = VipError;

    /// Accepts `a.b.c.d/len`, and a bare address as a `/32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || VipError::Malformed(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u32>().map_err(|_| malformed())?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| malformed())?;
        let prefix = u8::try_from(prefix)
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| VipError::PrefixTooLong(s.to_string(), prefix))?;
        Vip::new(addr, prefix)
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Vip {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Vip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a node says about itself in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving, and takes its share of shards.
    Active,
    /// Leaving (SIGTERM, scale-in): hands every shard away.
    Draining,
    /// Local haproxy fails its checks: hands its shards away until it recovers.
    Unhealthy,
    /// Declared dead by an observer after its lease expired.
    Dead,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Dead => "dead",
        }
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NodeState::Active),
            "draining" => Ok(NodeState::Draining),
            "unhealthy" => Ok(NodeState::Unhealthy),
            "dead" => Ok(NodeState::Dead),
            other => Err(format!("unknown node state {other:?}")),
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

/// A node item as the store returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub hb: Heartbeat,
    pub inc: Incarnation,
    pub state: NodeState,
}

/// A shard item as the store returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub id: ShardId,
    pub vips: Vec<Vip>,
    pub owner: Option<NodeId>,
    pub owner_inc: Option<Incarnation>,
    pub epoch: Epoch,
    pub moves: u64,
}

/// What the fleet serves: the shards and their VIPs. Configuration, the same
/// on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLayout {
    pub shards: Vec<(ShardId, Vec<Vip>)>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("no VIPs configured")]
    Empty,
    #[error("VIP {0} is listed twice")]
    Duplicate(Vip),
    #[error("VIPs {0} and {1} overlap")]
    Overlap(Vip, Vip),
}

impl ShardLayout {
    /// One shard per VIP, numbered in the order given. Rejects duplicates and
    /// overlapping blocks: two routes for one address would fight.
    pub fn one_per_vip(vips: &[Vip]) -> Result<Self, LayoutError> {
        if vips.is_empty() {
            return Err(LayoutError::Empty);
        }
        let mut sorted = vips.to_vec();
        sorted.sort();
        for pair in sorted.windows(2) {
            if pair[0] == pair[1] {
                return Err(LayoutError::Duplicate(pair[0]));
            }
        }
        for (i, a) in sorted.iter().enumerate() {
            for b in &sorted[i + 1..] {
                if a.overlaps(b) {
                    return Err(LayoutError::Overlap(*a, *b));
                }
            }
        }
        Ok(Self {
            shards: vips
                .iter()
                .enumerate()
                .map(|(i, vip)| (ShardId(i as u32), vec![*vip]))
                .collect(),
        })
    }

    pub fn vips_of(&self, shard: ShardId) -> &[Vip] {
        self.shards
            .iter()
            .find(|(id, _)| *id == shard)
            .map(|(_, vips)| vips.as_slice())
            .unwrap_or(&[])
    }

    pub fn ids(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.shards.iter().map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_parsing_accepts_hosts_and_blocks() {
        let cases = [
            ("10.200.0.1/32", "10.200.0.1/32"),
            ("10.200.0.1", "10.200.0.1/32"),
            ("10.200.0.0/24", "10.200.0.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ];
        for (input, shown) in cases {
            let vip: Vip = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(vip.to_string(), shown);
        }
    }

    #[test]
    fn vip_parsing_rejects_bad_input_with_typed_errors() {
        assert!(matches!("10.0.0.300/32".parse::<Vip>(), Err(VipError::Malformed(_))));
        assert!(matches!("fe80::1/128".parse::<Vip>(), Err(VipError::Malformed(_))));
        assert!(matches!("10.0.0.1/x".parse::<Vip>(), Err(VipError::Malformed(_))));
        assert!(matches!(
            "10.0.0.1/33".parse::<Vip>(),
            Err(VipError::PrefixTooLong(_, 33))
        ));
        assert_eq!(
            "10.0.0.1/24".parse::<Vip>(),
            Err(VipError::HostBitsSet {
                input: "10.0.0.1/24".into(),
                network: "10.0.0.0/24".into()
            })
        );
    }

    #[test]
    fn vip_overlap_and_containment() {
        let wide: Vip = "10.1.0.0/16".parse().unwrap();
        let host: Vip = "10.1.2.3/32".parse().unwrap();
        let other: Vip = "10.2.0.0/16".parse().unwrap();
        assert!(wide.overlaps(&host) && host.overlaps(&wide));
        assert!(!wide.overlaps(&other));
        assert!(wide.contains("10.1.255.255".parse().unwrap()));
        assert!(!wide.contains("10.2.0.0".parse().unwrap()));
    }

    #[test]
    fn layout_rejects_duplicates_and_overlaps() {
        let v = |s: &str| s.parse::<Vip>().unwrap();
        assert_eq!(ShardLayout::one_per_vip(&[]), Err(LayoutError::Empty));
        assert_eq!(
            ShardLayout::one_per_vip(&[v("10.0.0.1"), v("10.0.0.1")]),
            Err(LayoutError::Duplicate(v("10.0.0.1")))
        );
        assert_eq!(
            ShardLayout::one_per_vip(&[v("10.0.0.0/24"), v("10.0.0.7")]),
            Err(LayoutError::Overlap(v("10.0.0.0/24"), v("10.0.0.7")))
        );
        let layout = ShardLayout::one_per_vip(&[v("10.0.0.9"), v("10.0.0.7")]).unwrap();
        assert_eq!(layout.vips_of(ShardId(0)), &[v("10.0.0.9")]);
        assert_eq!(layout.len(), 2);
    }
}
