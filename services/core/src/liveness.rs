//! Liveness without synchronized clocks.
//!
//! - [`Observer`]: what this node has seen of every node's heartbeat counter,
//!   and when (on its own monotonic clock) the counter last moved. A node is
//!   expired once its counter has stood still for `lease_ttl`.
//! - [`OwnLease`]: this node's own right to write routes, which ends
//!   `lease_ttl - safety_margin` after the *send* time of its last successful
//!   heartbeat.
//!
//! Why this is safe: an observer stamps a change no earlier than the moment
//! its read returned, which is after the heartbeat was sent. So its expiry,
//! `stamp + lease_ttl`, always falls after the node's own deadline; a node has
//! stopped writing before anyone may take its shards.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;
use crate::types::{Heartbeat, Incarnation, NodeId, NodeRecord};

/// One node as this observer has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sighting {
    hb: Heartbeat,
    inc: Incarnation,
    /// When this observer first saw the current `(hb, inc)`.
    changed_at: Instant,
}

#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: BTreeMap<NodeId, Sighting>,
    /// When the last successful read of the node items returned.
    last_read_at: Option<Instant>,
}

impl Observer {
    /// Records a read of the node items that returned at `now`.
    ///
    /// If this observer was blind for more than half a lease (its own reads
    /// failed), it cannot tell who heartbeated meanwhile: every node's clock
    /// restarts, so an outage of the store never looks like the death of
    /// everyone else.
    pub fn observe(&mut self, nodes: &[NodeRecord], now: Instant, lease_ttl: Duration) {
        let blind = self
            .last_read_at
            .is_some_and(|last| now.saturating_since(last) > lease_ttl / 2);
        self.last_read_at = Some(now);
        let mut next = BTreeMap::new();
        for node in nodes {
            let changed_at = match self.seen.get(&node.info.id) {
                Some(s) if s.hb == node.hb && s.inc == node.inc && !blind => s.changed_at,
                _ => now,
            };
            next.insert(
                node.info.id.clone(),
                Sighting {
                    hb: node.hb,
                    inc: node.inc,
                    changed_at,
                },
            );
        }
        self.seen = next;
    }

    /// Whether `node`'s counter has been *seen* standing still for
    /// `lease_ttl`: judged at our last successful read, not at `now`, since
    /// we know nothing of what happened after it. Unknown nodes are not
    /// expired: we have no evidence either way.
    pub fn is_expired(&self, node: &NodeId, lease_ttl: Duration) -> bool {
        match (self.seen.get(node), self.last_read_at) {
            (Some(s), Some(read_at)) => read_at.saturating_since(s.changed_at) >= lease_ttl,
            _ => false,
        }
    }

    /// The counter value the expiry judgement is based on: a takeover is
    /// conditional on it still being there.
    pub fn observed_hb(&self, node: &NodeId) -> Option<Heartbeat> {
        self.seen.get(node).map(|s| s.hb)
    }

    /// How long `node`'s counter has stood still, as this observer sees it.
    pub fn heartbeat_age(&self, node: &NodeId, now: Instant) -> Option<Duration> {
        self.seen.get(node).map(|s| now.saturating_since(s.changed_at))
    }
}

/// This node's own lease, from its successful heartbeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnLease {
    /// Route writes must stop at this instant unless a heartbeat lands.
    deadline: Option<Instant>,
    /// When the current unbroken run of validity began (the completion of
    /// the first successful heartbeat after a lapse). Ownership confirmed
    /// before it proves nothing: others may have taken over meanwhile.
    valid_since: Option<Instant>,
}

impl OwnLease {
    /// A heartbeat sent at `sent_at` succeeded; we learn it at `now`.
    /// Returns true if this ends a lapse (or is the first success).
    pub fn heartbeat_succeeded(&mut self, sent_at: Instant, now: Instant, own_lease: Duration) -> bool {
        let was_valid = self.is_valid(now);
        let deadline = sent_at + own_lease;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.max(deadline)));
        if !was_valid && self.is_valid(now) {
            self.valid_since = Some(now);
            return true;
        }
        false
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now < d)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether a confirmation of ownership made at `confirmed_at` (the send
    /// time of the confirming read or write) still holds at `now`.
    pub fn vouches_for(&self, confirmed_at: Instant, now: Instant) -> bool {
        self.is_valid(now) && self.valid_since.is_some_and(|since| confirmed_at >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EniId, NodeInfo, NodeState};

    const TTL: Duration = Duration::from_millis(3000);

    fn record(id: &str, hb: Heartbeat) -> NodeRecord {
        NodeRecord {
            info: NodeInfo {
                id: NodeId::new(id),
                eni: EniId(format!("eni-{id}")),
                az: "a".into(),
                addr: String::new(),
                weight: 1,
                version: String::new(),
            },
            hb,
            inc: Incarnation(1),
            state: NodeState::Active,
        }
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn expiry_is_judged_from_when_the_counter_last_moved() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let steps = [
            // (now, hb read, expired?)
            (0, 1, false),
            (1000, 2, false),
            (2000, 2, false),
            (3000, 2, false),
            (3900, 2, false),
            (4000, 2, true),
            (4100, 3, false),
        ];
        for (now, hb, expired) in steps {
            o.observe(&[record("a", hb)], ms(now), TTL);
            assert_eq!(o.is_expired(&a, TTL), expired, "at {now} ms");
        }
        assert_eq!(o.observed_hb(&a), Some(3));
    }

    #[test]
    fn a_blind_observer_restarts_every_clock() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        o.observe(&[record("a", 5)], ms(0), TTL);
        // Our own reads failed for 5 s; the counter looks still, but we
        // could not see it, so the node gets a fresh lease_ttl.
        o.observe(&[record("a", 5)], ms(5000), TTL);
        assert!(!o.is_expired(&a, TTL));
        o.observe(&[record("a", 5)], ms(6000), TTL);
        o.observe(&[record("a", 5)], ms(7000), TTL);
        o.observe(&[record("a", 5)], ms(8000), TTL);
        assert!(o.is_expired(&a, TTL));
    }

    #[test]
    fn expiry_needs_a_read_that_shows_it() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        o.observe(&[record("a", 5)], ms(0), TTL);
        // No read since: time alone proves nothing.
        assert!(!o.is_expired(&a, TTL));
    }

    #[test]
    fn unknown_nodes_are_not_expired() {
        let o = Observer::default();
        assert!(!o.is_expired(&NodeId::new("x"), TTL));
    }

    #[test]
    fn own_lease_runs_from_the_send_time() {
        let own = Duration::from_millis(2700);
        let mut lease = OwnLease::default();
        assert!(!lease.is_valid(ms(0)));
        assert!(lease.heartbeat_succeeded(ms(0), ms(400), own));
        assert!(lease.is_valid(ms(2699)));
        assert!(!lease.is_valid(ms(2700)));
        // Confirmations made before validity began prove nothing.
        assert!(!lease.vouches_for(ms(300), ms(500)));
        assert!(lease.vouches_for(ms(400), ms(500)));
    }

    #[test]
    fn a_late_success_after_a_lapse_restarts_validity() {
        let own = Duration::from_millis(2700);
        let mut lease = OwnLease::default();
        lease.heartbeat_succeeded(ms(0), ms(10), own);
        // Paused past the deadline; a heartbeat sent before the pause comes
        // back after it: still lapsed, nothing vouched for.
        assert!(!lease.heartbeat_succeeded(ms(1000), ms(9000), own));
        assert!(!lease.is_valid(ms(9000)));
        // A fresh heartbeat ends the lapse; old confirmations stay void.
        assert!(lease.heartbeat_succeeded(ms(9000), ms(9050), own));
        assert!(!lease.vouches_for(ms(20), ms(9100)));
        assert!(lease.vouches_for(ms(9060), ms(9100)));
    }
}
