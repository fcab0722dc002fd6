//! The backoff of the two reads that run on timers, the node items and the
//! shard items, and the turns they take while the table throttles us.
//!
//! A throttled table serves a fleet's reads in whatever order their tokens
//! allow, and each of our two reads can starve the other:
//! - our own scans of the node items, several a second, took the tokens a
//!   retried read of the shards needed (the lab's `store-throttle` once kept
//!   a taker from its two shards for 14 s, all nine of its reads of the
//!   shards refused);
//! - a read of the shards, a hundred times the size, leaves the table's
//!   tokens spent, and the read of the node items sent after it is refused
//!   (the simulation's 300-node AZ loss on a table of 1,100 read units a
//!   second: a survivor read the shards 38 times in 400 s and the node items
//!   never, so it never saw the others' evictions, and a quarter of the dead
//!   nodes' shards were never claimed).
//!
//! A taker needs both, in order: the node items to see who is gone, then a
//! read of the shards sent since. So while the table throttles us the two
//! take turns: a throttled read of the shards takes the turn and keeps it
//! until it gets through, then hands it to the node items if their last
//! read failed, and they hand it back likewise. With no read of the shards
//! in trouble, neither waits for the other.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::store::StoreErrorKind;

/// One of the reads that run on timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read {
    Nodes,
    Shards,
}

impl Read {
    fn other(self) -> Self {
        match self {
            Read::Nodes => Read::Shards,
            Read::Shards => Read::Nodes,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct ReadBackoff {
    nodes: Backoff,
    shards: Backoff,
    /// While throttled, the read whose turn it is: the other is not sent.
    turn: Option<Read>,
}

impl ReadBackoff {
    /// Waits from `base` (the scan interval), doubling up to `cap` (a
    /// lease), after `grace` failures that are not throttles.
    pub(super) fn new(base: Duration, cap: Duration, grace: u32) -> Self {
        Self {
            nodes: Backoff::with_grace(base, cap, grace),
            shards: Backoff::with_grace(base, cap, grace),
            turn: None,
        }
    }

    fn backoff(&mut self, read: Read) -> &mut Backoff {
        match read {
            Read::Nodes => &mut self.nodes,
            Read::Shards => &mut self.shards,
        }
    }

    /// Whether `read` may be sent now, as far as the turns go.
    pub(super) fn may_send(&self, read: Read) -> bool {
        self.turn != Some(read.other())
    }

    pub(super) fn succeeded(&mut self, read: Read) {
        self.backoff(read).succeeded();
        if self.turn == Some(read) {
            let other = read.other();
            self.turn = (self.backoff(other).failures() > 0).then_some(other);
        }
    }

    /// `read` failed with `kind`: how long to wait before sending it again
    /// (`jitter_seed` spreads the waits of a fleet). A throttled read backs
    /// off at once, since the whole fleet reads more than the table serves
    /// (after a death every node read the shards; retried at the scan pace,
    /// the reads kept 90% of each other throttled at 300 nodes); any other
    /// failure keeps the grace.
    pub(super) fn failed(&mut self, read: Read, kind: StoreErrorKind, jitter_seed: u64) -> Duration {
        let backoff = self.backoff(read);
        if kind == StoreErrorKind::Throttled {
            backoff.throttled();
        } else {
            backoff.failed();
        }
        let wait = backoff.delay(jitter_seed);
        // Only the big read takes the turn by being throttled: a refused
        // read of the node items alone is retried beside the shards', as a
        // store that throttles a call now and then would otherwise hold
        // both. It gets a turn when the shards' turn ends.
        if kind == StoreErrorKind::Throttled && read == Read::Shards && self.turn.is_none() {
            self.turn = Some(read);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCAN: Duration = Duration::from_millis(250);
    const LEASE: Duration = Duration::from_secs(3);

    fn reads() -> ReadBackoff {
        ReadBackoff::new(SCAN, LEASE, 2)
    }

    #[test]
    fn untroubled_reads_do_not_wait_for_each_other() {
        let mut r = reads();
        assert!(r.may_send(Read::Nodes) && r.may_send(Read::Shards));
        r.failed(Read::Nodes, StoreErrorKind::Unavailable, 1);
        assert!(r.may_send(Read::Shards), "only a throttle takes turns");
        r.succeeded(Read::Shards);
        assert!(r.may_send(Read::Nodes) && r.may_send(Read::Shards));
    }

    #[test]
    fn a_throttled_read_of_the_node_items_alone_holds_nothing() {
        let mut r = reads();
        r.failed(Read::Nodes, StoreErrorKind::Throttled, 1);
        assert!(r.may_send(Read::Shards) && r.may_send(Read::Nodes));
    }

    #[test]
    fn a_throttled_read_of_the_shards_holds_the_node_reads_until_it_gets_through() {
        let mut r = reads();
        r.failed(Read::Shards, StoreErrorKind::Throttled, 1);
        assert!(!r.may_send(Read::Nodes));
        r.failed(Read::Shards, StoreErrorKind::Throttled, 2);
        assert!(!r.may_send(Read::Nodes));
        r.succeeded(Read::Shards);
        assert!(
            r.may_send(Read::Nodes) && r.may_send(Read::Shards),
            "the node reads were fine"
        );
    }

    #[test]
    fn after_the_shards_get_through_a_refused_node_read_has_its_turn() {
        let mut r = reads();
        r.failed(Read::Nodes, StoreErrorKind::Throttled, 1);
        r.failed(Read::Shards, StoreErrorKind::Throttled, 2);
        assert!(!r.may_send(Read::Nodes));
        r.succeeded(Read::Shards);
        assert!(r.may_send(Read::Nodes));
        assert!(!r.may_send(Read::Shards), "the node items first: they say who is gone");
        r.failed(Read::Nodes, StoreErrorKind::Throttled, 3);
        assert!(!r.may_send(Read::Shards));
        r.succeeded(Read::Nodes);
        assert!(r.may_send(Read::Nodes) && r.may_send(Read::Shards));
    }

    #[test]
    fn a_throttled_read_backs_off_past_the_grace() {
        let mut r = reads();
        let waits: Vec<_> = (0..3)
            .map(|i| r.failed(Read::Shards, StoreErrorKind::Throttled, i))
            .collect();
        assert!(waits[2] >= SCAN * 2, "{waits:?}");
        let mut r = reads();
        let waits: Vec<_> = (0..2)
            .map(|i| r.failed(Read::Shards, StoreErrorKind::Unavailable, i))
            .collect();
        assert_eq!(waits, [SCAN, SCAN], "within the grace");
    }
}
