//! IPv4 CIDR blocks: what clients reach through the fleet. A shard is one
//! such block, so a VIP's text is also its shard's name everywhere (the
//! lease table, logs, the dashboard).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    /// A single address (`/32`): always valid.
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self { addr, prefix: 32 }
    }

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
}
