//! Refusing replayed datagrams: a sealed datagram is accepted only within
//! [`FRESHNESS_WINDOW_MS`] of its send time, and only once.
//!
//! ## Why the detector's own matching is not enough
//!
//! The tag proves who sent a datagram, not when. The detector matches an
//! `Ack` to a live round by `seq`, and within one detector a seq is used
//! once, so an old `Ack` finds no round. But:
//!
//! - `seq` starts again at 1 with every detector (each restart, each new
//!   incarnation after an eviction), so an `Ack` recorded before the
//!   prober restarted can match a round of its new detector;
//! - a `Ping` is taken as proof of life with no round at all: replaying a
//!   crashed node's old ping clears its suspicion and resets its failed
//!   rounds, so it is never found dead;
//! - a `Leave` marks its sender Left (never condemned): replayed after a
//!   crash, it hides the crash until the lease runs out;
//! - incarnations do not help: a crashed node keeps the one it died with.
//!
//! So freshness is bound into the tag: the sender's clock at sending and a
//! nonce. A datagram further than the window from the receiver's clock (in
//! either direction) is `Stale`, and one whose tag was already accepted
//! within the window is `Replayed`. A replay that gets through therefore
//! says only what was true at most a window ago, and only to a receiver
//! that restarted in between (its memory of tags went with it).
//!
//! The cost is that nodes' clocks must agree to well within the window:
//! Amazon Time Sync keeps EC2 instances within a millisecond or so. A node
//! whose clock is off by more than the window hears no one, and is treated
//! as cut off (it takes no shards) until its clock is back.

use std::collections::{BTreeSet, HashSet};

use super::seal::{Opened, Rejection};

/// How far a datagram's send time may be from the receiver's clock: clock
/// skew between nodes plus transit (well under a millisecond in a VPC),
/// with room to spare, yet short next to a lease.
pub const FRESHNESS_WINDOW_MS: u64 = 2_000;
/// Bytes of each accepted tag kept to spot a repeat: 128 bits cannot
/// collide by chance.
const REMEMBERED_TAG_BYTES: usize = 16;
/// Tags remembered at most. Only datagrams that carry a valid tag get in,
/// so only holders of the key could fill it; a fleet sends a few hundred
/// datagrams a second at most. When full, the oldest are forgotten first.
const MAX_REMEMBERED: usize = 65_536;

type TagPrefix = [u8; REMEMBERED_TAG_BYTES];

/// The tags accepted within the window, oldest first.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    by_time: BTreeSet<(u64, TagPrefix)>,
    tags: HashSet<TagPrefix>,
}

impl ReplayGuard {
    /// Accepts `opened` at `now_ms` (unix ms) if it is fresh and new.
    pub fn admit(&mut self, opened: &Opened<'_>, now_ms: u64) -> Result<(), Rejection> {
        let age = i128::from(now_ms) - i128::from(opened.sent_at_ms);
        if age.unsigned_abs() > u128::from(FRESHNESS_WINDOW_MS) {
            return Err(Rejection::Stale(age));
        }
        self.forget_before(now_ms.saturating_sub(FRESHNESS_WINDOW_MS));
        let mut prefix = TagPrefix::default();
        let n = REMEMBERED_TAG_BYTES.min(opened.tag.len());
        prefix[..n].copy_from_slice(&opened.tag[..n]);
        if !self.tags.insert(prefix) {
            return Err(Rejection::Replayed);
        }
        // Kept until a window past its send time: then it is stale anyway.
        self.by_time.insert((opened.sent_at_ms, prefix));
        while self.by_time.len() > MAX_REMEMBERED {
            self.pop_oldest();
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        while self.by_time.first().is_some_and(|(at, _)| *at < cutoff_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, prefix)) = self.by_time.pop_first() {
            self.tags.remove(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn opened(sent_at_ms: u64, tag: &[u8; 32]) -> Opened<'_> {
        Opened {
            sent_at_ms,
            nonce: 0,
            tag,
            message: b"",
        }
    }

    #[test]
    fn a_fresh_datagram_is_accepted_once() {
        let mut guard = ReplayGuard::default();
        let tag = [7u8; 32];
        assert_eq!(guard.admit(&opened(NOW_MS - 5, &tag), NOW_MS), Ok(()));
        assert_eq!(
            guard.admit(&opened(NOW_MS - 5, &tag), NOW_MS + 10),
            Err(Rejection::Replayed)
        );
        assert_eq!(guard.admit(&opened(NOW_MS - 5, &[8u8; 32]), NOW_MS + 10), Ok(()));
    }

    #[test]
    fn datagrams_outside_the_window_are_stale_either_way() {
        let mut guard = ReplayGuard::default();
        let old = NOW_MS - FRESHNESS_WINDOW_MS - 1;
        let ahead = NOW_MS + FRESHNESS_WINDOW_MS + 1;
        let edge = NOW_MS - FRESHNESS_WINDOW_MS;
        assert!(matches!(
            guard.admit(&opened(old, &[1; 32]), NOW_MS),
            Err(Rejection::Stale(_))
        ));
        assert!(matches!(
            guard.admit(&opened(ahead, &[2; 32]), NOW_MS),
            Err(Rejection::Stale(_))
        ));
        assert_eq!(guard.admit(&opened(edge, &[3; 32]), NOW_MS), Ok(()));
        // Nothing stale was remembered.
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn tags_are_forgotten_once_they_would_be_stale_anyway() {
        let mut guard = ReplayGuard::default();
        let tag = [9u8; 32];
        guard.admit(&opened(NOW_MS, &tag), NOW_MS).unwrap();
        let later = NOW_MS + FRESHNESS_WINDOW_MS + 1;
        assert!(matches!(
            guard.admit(&opened(NOW_MS, &tag), later),
            Err(Rejection::Stale(_))
        ));
        guard.admit(&opened(later, &[10u8; 32]), later).unwrap();
        assert_eq!(guard.len(), 1, "the first tag should be forgotten");
    }

    #[test]
    fn memory_is_bounded() {
        let mut guard = ReplayGuard::default();
        for i in 0..(MAX_REMEMBERED + 10) as u32 {
            let mut tag = [0u8; 32];
            tag[..4].copy_from_slice(&i.to_be_bytes());
            guard.admit(&opened(NOW_MS, &tag), NOW_MS).unwrap();
        }
        assert_eq!(guard.len(), MAX_REMEMBERED);
    }
}
