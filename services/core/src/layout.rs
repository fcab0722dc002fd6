//! What a node serves: its [`ShardLayout`] (one shard per configured CIDR
//! block) and the layout's fingerprint, [`LayoutId`].
//!
//! Nodes announce the fingerprint in their node item and publish the layout
//! itself once, in an item keyed by the fingerprint; peers read each layout
//! they have not seen and cache it for good (a fingerprint never changes
//! meaning). That keeps node items small however many VIPs the fleet has.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{ShardId, Vip};

/// The fingerprint of a layout: 16 hex digits of a stable hash of its
/// blocks in order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayoutId(pub String);

impl fmt::Display for LayoutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shards a node serves, sorted, no two overlapping. Cheap to clone
/// (the set is shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    shards: Arc<BTreeSet<ShardId>>,
    /// The fingerprint, computed once.
    id: LayoutId,
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

/// FNV-1a, 64 bits: the same on every build and platform, unlike std's
/// hasher, so every version of the agent computes the same fingerprint.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl ShardLayout {
    /// One shard per block. Rejects duplicates and overlapping blocks: two
    /// routes for one address would fight.
    pub fn from_vips(vips: &[Vip]) -> Result<Self, LayoutError> {
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
        // Sorted by address then prefix: a block that contains later ones
        // comes first, so each block only needs checking against the widest
        // block seen so far.
        let mut widest: Option<Vip> = None;
        for vip in &sorted {
            if let Some(w) = widest.filter(|w| w.overlaps(vip)) {
                return Err(LayoutError::Overlap(w, *vip));
            }
            let ends = |v: &Vip| u64::from(u32::from(v.addr())) + (1u64 << (32 - u32::from(v.prefix())));
            if widest.is_none_or(|w| ends(vip) > ends(&w)) {
                widest = Some(*vip);
            }
        }
        Ok(Self::from_shards(sorted.into_iter().map(ShardId::of)))
    }

    /// A layout of shards already known to be valid (read back from a
    /// layout item a peer published, or built by the simulation).
    pub fn from_shards(shards: impl IntoIterator<Item = ShardId>) -> Self {
        let shards: BTreeSet<ShardId> = shards.into_iter().collect();
        let text: Vec<String> = shards.iter().map(ToString::to_string).collect();
        let id = LayoutId(format!("{:016x}", fnv1a(text.join(",").into_bytes())));
        Self {
            shards: Arc::new(shards),
            id,
        }
    }

    pub fn id(&self) -> LayoutId {
        self.id.clone()
    }

    /// Whether `other` has the same fingerprint, compared in place: the
    /// membership asks it of every member's layout.
    pub fn same_as(&self, other: &ShardLayout) -> bool {
        self.id == other.id
    }

    pub fn contains(&self, shard: ShardId) -> bool {
        self.shards.contains(&shard)
    }

    pub fn ids(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.shards.iter().copied()
    }

    pub fn shards(&self) -> &Arc<BTreeSet<ShardId>> {
        &self.shards
    }

    pub fn vips(&self) -> impl Iterator<Item = Vip> + '_ {
        self.shards.iter().map(ShardId::vip)
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

    fn v(s: &str) -> Vip {
        s.parse().unwrap()
    }

    #[test]
    fn layout_rejects_duplicates_and_overlaps() {
        assert_eq!(ShardLayout::from_vips(&[]), Err(LayoutError::Empty));
        assert_eq!(
            ShardLayout::from_vips(&[v("10.0.0.1"), v("10.0.0.1")]),
            Err(LayoutError::Duplicate(v("10.0.0.1")))
        );
        assert_eq!(
            ShardLayout::from_vips(&[v("10.0.0.0/24"), v("10.0.0.7")]),
            Err(LayoutError::Overlap(v("10.0.0.0/24"), v("10.0.0.7")))
        );
        assert_eq!(
            ShardLayout::from_vips(&[v("10.0.0.0/16"), v("10.0.1.0/24"), v("10.0.9.9")]),
            Err(LayoutError::Overlap(v("10.0.0.0/16"), v("10.0.1.0/24")))
        );
        let ok = ShardLayout::from_vips(&[v("10.0.0.0/24"), v("10.0.1.0/24"), v("10.0.0.255/32")]);
        assert!(matches!(ok, Err(LayoutError::Overlap(_, _))), "{ok:?}");
        assert!(ShardLayout::from_vips(&[v("10.0.0.0/24"), v("10.0.1.0/24"), v("10.0.2.1")]).is_ok());
    }

    #[test]
    fn the_fingerprint_depends_on_the_blocks_not_their_order() {
        let a = ShardLayout::from_vips(&[v("10.0.0.9"), v("10.0.0.7")]).unwrap();
        let b = ShardLayout::from_vips(&[v("10.0.0.7"), v("10.0.0.9")]).unwrap();
        let c = ShardLayout::from_vips(&[v("10.0.0.7"), v("10.0.0.8")]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id().0.len(), 16);
        assert!(a.contains(ShardId::of(v("10.0.0.7"))));
        assert_eq!(a.vips().collect::<Vec<_>>(), vec![v("10.0.0.7"), v("10.0.0.9")]);
    }
}
