//! Liveness without synchronized clocks.
//!
//! - [`Observer`]: what this node has seen of every node's heartbeat counter,
//!   and when (on its own monotonic clock) the counter last moved; and since
//!   when a node's item has been missing from the table. A node is *gone*
//!   once its counter has stood still, or its item has been missing, for the
//!   longer of the two nodes' `lease_ttl`s.
//! - Evictions: an incarnation that peers found dead and a node evicted
//!   in the store (`evicted_by`) is gone at once. It can never heartbeat
//!   again, so its own lease ends at most a lease after the eviction: the
//!   observer keeps that bound ([`Observer::eviction_lease_end`]), after
//!   which whoever took its shards reads their routes back once more. One
//!   way back: someone deletes the evicted item, and the node, finding its
//!   item gone, registers again. Its new item carries no mark, so from a
//!   read sent after we learned of the eviction that shows it, the node is
//!   judged by its counter like any other. While the evicted item is
//!   missing, it is judged as any missing item (gone after a TTL of
//!   absence): a takeover that checked the evicted counter would fail
//!   against an absent item for good.
//! - [`OwnLease`]: this node's own right to write routes, which ends
//!   `lease_ttl - safety_margin` after the *send* time of its last successful
//!   heartbeat.
//!
//! Why this is safe: an observer stamps a change no earlier than the moment
//! its read returned, which is after the heartbeat was sent. So its expiry,
//! `stamp + lease_ttl`, always falls after the node's own deadline; a node has
//! stopped writing before anyone may take its shards. Judging with the
//! larger TTL keeps that true while nodes with different lease settings
//! share a fleet (a lease-profile rollout).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::MAX_LEASE_TTL;
use crate::time::Instant;
use crate::types::{Heartbeat, Incarnation, NodeId, NodeRecord};

/// One node as this observer has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sighting {
    hb: Heartbeat,
    inc: Incarnation,
    /// When this observer first saw the current `(hb, inc)`.
    changed_at: Instant,
    /// The TTL the node announced (zero when it announced none).
    ttl: Duration,
    /// The send time of the last read that still showed the value before
    /// `(hb, inc)`: the current value was written after it. `None` while we
    /// have seen only one value.
    heard_after: Option<Instant>,
}

/// How a takeover must check that the old owner is still gone, in the same
/// transaction as the shard update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCheck {
    /// Its item still shows the counter and incarnation we saw stand still.
    Unchanged { hb: Heartbeat, inc: Incarnation },
    /// Its item is still missing.
    Missing,
}

/// An evicted incarnation: its counter stands at `hb` for good, and its own
/// lease has run out by `lease_end` (on this observer's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Eviction {
    inc: Incarnation,
    hb: Heartbeat,
    lease_end: Instant,
    /// When we learned of it: only reads sent after this show the item as
    /// the eviction left it.
    learned_at: Instant,
    /// The last such read found no item at all.
    item_missing: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: BTreeMap<NodeId, Sighting>,
    evicted: BTreeMap<NodeId, Eviction>,
    /// Nodes whose item we saw before (or that own a shard) but that are
    /// missing from the table: since when.
    missing_since: BTreeMap<NodeId, Instant>,
    /// Nodes whose claim on a shard we saw change (a claim, or a re-claim
    /// after re-registering): when that read returned. They were alive
    /// after whatever deletion we counted them missing from, so only a read
    /// of the node items sent after this instant can start their missing
    /// clock (their item may have been deleted again since).
    claimed_at: BTreeMap<NodeId, Instant>,
    /// When the last successful read of the node items returned...
    last_read_at: Option<Instant>,
    /// ...and when it was sent.
    last_read_sent_at: Option<Instant>,
    /// Judge blindness by when reads returned, as the rule once was (only
    /// for the simulation's sabotage: a slow store then restarts every
    /// clock, and nobody is ever expired).
    blind_by_return_times: bool,
    /// Bumped by every call that may change what this observer says: a
    /// caller holding on to an earlier answer knows when to ask again.
    changes: u64,
}

impl Observer {
    /// Grows whenever what the observer says may have changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Records a read of the node items sent at `sent_at` that returned at
    /// `now`; returns false (and learns nothing) if a read sent later has
    /// already been recorded: reads overlap when the store is slow, and
    /// may return out of order. `present` names items that exist but could
    /// not be read (they are not missing); `referenced` names nodes that own
    /// shards (a node that owns a shard but has no item is missing, even if
    /// we never saw it).
    ///
    /// If this observer was blind for more than half a lease (no read it
    /// *sent* in that time succeeded), it cannot tell who heartbeated
    /// meanwhile: every clock restarts, so an outage of the store never
    /// looks like the death of everyone else. Slow answers are not
    /// blindness: overlapping reads sent every scan still see everything,
    /// only later, and a crashed node must still be expired behind them.
    pub fn observe<'a>(
        &mut self,
        nodes: &[NodeRecord],
        present: &BTreeSet<NodeId>,
        referenced: impl IntoIterator<Item = &'a NodeId>,
        sent_at: Instant,
        now: Instant,
        lease_ttl: Duration,
    ) -> bool {
        self.changes += 1;
        if self.last_read_sent_at.is_some_and(|last| sent_at < last) {
            return false;
        }
        let previous_read = self.last_read_sent_at;
        let blind = if self.blind_by_return_times {
            self.last_read_at
                .is_some_and(|last| now.saturating_since(last) > lease_ttl / 2)
        } else {
            previous_read.is_some_and(|last| sent_at.saturating_since(last) > lease_ttl / 2)
        };
        self.last_read_sent_at = Some(sent_at);
        self.last_read_at = Some(now);
        // Evictions the read shows, judged by the TTLs seen before it.
        for node in nodes.iter().filter(|n| n.evicted_by.is_some()) {
            self.evicted(&node.info.id, node.inc, node.hb, now, lease_ttl);
        }
        // Every node reads every node item, and a read mostly shows the
        // nodes the last one did: then the sightings are updated where they
        // are (rebuilding the map, 1,000 nodes on every read of every node,
        // was most of an observer's cost). Otherwise they are listed and
        // made a map at once, walking what we saw before beside the read
        // while it comes in id order (as the fake store returns it).
        let same_nodes = nodes.len() == self.seen.len()
            && nodes.windows(2).all(|pair| pair[0].info.id < pair[1].info.id)
            && nodes.iter().zip(self.seen.keys()).all(|(node, id)| node.info.id == *id);
        let sighting = |node: &NodeRecord, before: Option<&Sighting>, reappeared: bool| {
            let unchanged = before.is_some_and(|s| s.hb == node.hb && s.inc == node.inc);
            let changed_at = match before {
                Some(s) if unchanged && !blind && !reappeared => s.changed_at,
                _ => now,
            };
            let heard_after = match before {
                Some(s) if unchanged => s.heard_after,
                Some(_) => previous_read,
                None => None,
            };
            let ttl = node
                .config
                .as_ref()
                .map_or(Duration::ZERO, |c| c.lease_ttl.min(MAX_LEASE_TTL));
            Sighting {
                hb: node.hb,
                inc: node.inc,
                changed_at,
                ttl,
                heard_after,
            }
        };
        // The read showed every node we saw before, so only the nodes
        // that own shards can be missing from it: and `referenced` then
        // needs no set, as all of them are.
        let (mut next, referenced, candidates) = if same_nodes {
            for (node, (id, seen)) in nodes.iter().zip(self.seen.iter_mut()) {
                *seen = sighting(node, Some(seen), self.missing_since.contains_key(id));
            }
            let seen = &self.seen;
            let candidates: BTreeSet<NodeId> = referenced
                .into_iter()
                .filter(|id| !seen.contains_key(*id) && !present.contains(*id))
                .cloned()
                .collect();
            (std::mem::take(&mut self.seen), None, candidates)
        } else {
            let mut sightings = Vec::with_capacity(nodes.len());
            let mut seen_walk = self.seen.iter().peekable();
            let mut walked_to: Option<&NodeId> = None;
            for node in nodes {
                let id = &node.info.id;
                let before = if walked_to.is_none_or(|to| id > to) {
                    walked_to = Some(id);
                    while seen_walk.next_if(|(known, _)| *known < id).is_some() {}
                    seen_walk.peek().filter(|(known, _)| *known == id).map(|(_, s)| *s)
                } else {
                    self.seen.get(id)
                };
                sightings.push((id.clone(), sighting(node, before, self.missing_since.contains_key(id))));
            }
            let next: BTreeMap<NodeId, Sighting> = sightings.into_iter().collect();
            let referenced: BTreeSet<&NodeId> = referenced.into_iter().collect();
            // Nodes we knew, or that own shards, that this read did not
            // show (a few, among the many it did).
            let candidates: BTreeSet<NodeId> = self
                .seen
                .keys()
                .chain(referenced.iter().copied())
                .filter(|id| !next.contains_key(*id) && !present.contains(*id))
                .cloned()
                .collect();
            (next, Some(referenced), candidates)
        };
        let mut missing = BTreeMap::new();
        for id in candidates {
            let claimed_since_sent = self.claimed_at.get(&id).is_some_and(|t| *t > sent_at);
            let since = match self.missing_since.get(&id) {
                Some(t) if !blind && !self.claimed_at.contains_key(&id) => *t,
                _ => now,
            };
            if !claimed_since_sent {
                self.claimed_at.remove(&id);
            }
            // A vanished node that owns nothing matters only until it is
            // gone; forget it then, or the map would only ever grow.
            let ttl = self.seen.get(&id).map_or(lease_ttl, |s| s.ttl.max(lease_ttl));
            let is_referenced = referenced.as_ref().is_none_or(|r| r.contains(&id));
            if !is_referenced && now.saturating_since(since) >= ttl {
                continue;
            }
            missing.insert(id.clone(), since);
            // Keep what we knew (its TTL) for the judgement.
            if let Some(s) = self.seen.get(&id) {
                next.entry(id).or_insert(Sighting {
                    changed_at: since,
                    ..*s
                });
            }
        }
        // Eviction is for good, for that incarnation: a read sent before
        // the eviction, answered after it, does not undo it. It is kept
        // while that incarnation is what we see, and until its lease is over
        // in any case: whoever takes its shards after the node came back as
        // a new incarnation must still read their routes back after that
        // lease.
        self.seen = next;
        self.missing_since = missing;
        self.revisit_evictions(nodes, present, sent_at, now);
        let missing = &self.missing_since;
        self.claimed_at.retain(|id, _| missing.contains_key(id));
        let seen = &self.seen;
        self.evicted
            .retain(|id, e| e.lease_end > now || seen.get(id).is_some_and(|s| s.inc == e.inc));
        true
    }

    /// Learns (at `now`: from our own eviction's answer, or a read that
    /// returned then) that incarnation `inc` of `node` is evicted with its
    /// counter at `hb`. The eviction happened before `now`, and the node's
    /// last renewal was sent before that, so its own lease ends before
    /// `now` plus its TTL.
    pub fn evicted(&mut self, node: &NodeId, inc: Incarnation, hb: Heartbeat, now: Instant, my_ttl: Duration) {
        self.changes += 1;
        if self.evicted.get(node).is_some_and(|e| e.inc == inc) {
            return;
        }
        let lease_end = now + self.ttl_for(node, my_ttl);
        self.evicted.insert(
            node.clone(),
            Eviction {
                inc,
                hb,
                lease_end,
                learned_at: now,
                item_missing: false,
            },
        );
    }

    /// What a read sent at `sent_at` shows of the evicted incarnations: an
    /// item of that incarnation without the mark was deleted and written
    /// again by the node registering anew (an evicted item takes no
    /// heartbeat), so the node is alive and the eviction over; no item at
    /// all hands the judgement to the missing clock.
    fn revisit_evictions(&mut self, nodes: &[NodeRecord], present: &BTreeSet<NodeId>, sent_at: Instant, now: Instant) {
        if self.evicted.is_empty() {
            return; // the usual case: no read to index
        }
        let read: BTreeMap<&NodeId, &NodeRecord> = nodes.iter().map(|n| (&n.info.id, n)).collect();
        let seen = &mut self.seen;
        self.evicted.retain(|id, e| {
            if sent_at < e.learned_at {
                return true;
            }
            match read.get(id) {
                Some(n) if n.inc == e.inc && n.evicted_by.is_none() => {
                    // Registered again: its lease runs from now, as far as
                    // we can tell.
                    if let Some(s) = seen.get_mut(id) {
                        s.changed_at = now;
                    }
                    false
                }
                Some(_) => {
                    e.item_missing = false;
                    true
                }
                None => {
                    e.item_missing = !present.contains(id);
                    true
                }
            }
        });
    }

    /// A read of the shards that returned at `now` showed `node` claiming a
    /// shard anew (a claim or a re-claim we had not seen): whatever we
    /// counted it missing from, it was alive after that.
    pub fn saw_claim(&mut self, node: &NodeId, now: Instant) {
        self.changes += 1;
        self.claimed_at.insert(node.clone(), now);
    }

    /// When an evicted node's own lease has run out for sure; `None` if it
    /// is not evicted.
    pub fn eviction_lease_end(&self, node: &NodeId) -> Option<Instant> {
        self.evicted.get(node).map(|e| e.lease_end)
    }

    /// Whether incarnation `inc` of `node` is known evicted.
    pub fn is_evicted(&self, node: &NodeId, inc: Incarnation) -> bool {
        self.evicted.get(node).is_some_and(|e| e.inc == inc)
    }

    fn ttl_for(&self, node: &NodeId, my_ttl: Duration) -> Duration {
        judged_ttl(self.seen.get(node), my_ttl)
    }

    /// Whether `node` is gone: its counter *seen* standing still, or its
    /// item seen missing, for the longer of the two TTLs; judged at our last
    /// successful read, not at `now`, since we know nothing of what happened
    /// after it. Unknown nodes are not gone: we have no evidence either way.
    pub fn is_gone(&self, node: &NodeId, my_ttl: Duration) -> bool {
        self.gone_check(node, my_ttl).is_some()
    }

    /// The condition a takeover of a gone node's shard must carry; `None`
    /// while the node is not gone.
    pub fn gone_check(&self, node: &NodeId, my_ttl: Duration) -> Option<NodeCheck> {
        // Looked up once: this is asked of every node on every plan.
        let seen = self.seen.get(node);
        if let Some(e) = self.evicted.get(node) {
            // An evicted item gone missing is judged as any missing item:
            // we may have missed a new incarnation registering in between,
            // whose lease only a TTL of absence ends.
            if !e.item_missing && seen.is_none_or(|s| s.inc == e.inc) {
                return Some(NodeCheck::Unchanged { hb: e.hb, inc: e.inc });
            }
        }
        let read_at = self.last_read_at?;
        let ttl = judged_ttl(seen, my_ttl);
        if let Some(since) = self.missing_since.get(node) {
            let counting = !self.claimed_at.contains_key(node);
            return (counting && read_at.saturating_since(*since) >= ttl).then_some(NodeCheck::Missing);
        }
        let s = seen?;
        (read_at.saturating_since(s.changed_at) >= ttl).then_some(NodeCheck::Unchanged { hb: s.hb, inc: s.inc })
    }

    pub fn is_missing(&self, node: &NodeId) -> bool {
        self.missing_since.contains_key(node)
    }

    /// When the last read of the node items we learned from was sent.
    pub fn read_sent_at(&self) -> Option<Instant> {
        self.last_read_sent_at
    }

    /// The counter value the expiry judgement is based on.
    pub fn observed_hb(&self, node: &NodeId) -> Option<Heartbeat> {
        self.seen.get(node).map(|s| s.hb)
    }

    #[cfg(feature = "fakes")]
    pub(crate) fn sabotage_blindness_by_return_times(&mut self) {
        self.blind_by_return_times = true;
    }

    /// A lower bound on when `node` last heartbeated, as far as we have
    /// seen: after this instant. Nobody can judge it gone before a lease
    /// after that.
    pub fn heard_after(&self, node: &NodeId) -> Option<Instant> {
        self.seen.get(node)?.heard_after
    }

    /// How long `node`'s counter has stood still (or its item been
    /// missing), as this observer sees it.
    pub fn heartbeat_age(&self, node: &NodeId, now: Instant) -> Option<Duration> {
        self.seen.get(node).map(|s| now.saturating_since(s.changed_at))
    }

    /// How long until this observer would call `node` gone, if nothing
    /// moves; zero once it is.
    pub fn gone_in(&self, node: &NodeId, my_ttl: Duration, now: Instant) -> Option<Duration> {
        let ttl = self.ttl_for(node, my_ttl);
        let since = self
            .missing_since
            .get(node)
            .copied()
            .or_else(|| self.seen.get(node).map(|s| s.changed_at))?;
        Some((since + ttl).saturating_since(now))
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
        self.is_valid(now) && self.covers(confirmed_at)
    }

    /// Whether a confirmation made at `confirmed_at` falls in the current
    /// unbroken run of validity.
    pub fn covers(&self, confirmed_at: Instant) -> bool {
        self.valid_since.is_some_and(|since| confirmed_at >= since)
    }
}

/// The TTL a node is judged by: the longer of the one its item announces
/// (`seen`) and ours.
fn judged_ttl(seen: Option<&Sighting>, my_ttl: Duration) -> Duration {
    seen.map_or(my_ttl, |s| s.ttl.max(my_ttl))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::LayoutId;
    use crate::types::{EniId, NodeConfig, NodeInfo, NodeState};

    const TTL: Duration = Duration::from_millis(3000);

    fn record_with_ttl(id: &str, hb: Heartbeat, ttl: Option<Duration>) -> NodeRecord {
        NodeRecord {
            info: Arc::new(NodeInfo {
                id: NodeId::new(id),
                eni: EniId(format!("eni-{id}")),
                az: "a".into(),
                addr: String::new(),
                weight: 1,
                version: String::new(),
            }),
            hb,
            inc: Incarnation(1),
            state: NodeState::Active,
            config: ttl.map(|lease_ttl| {
                Arc::new(NodeConfig {
                    layout: LayoutId("l".into()),
                    route_tables: vec![],
                    lease_ttl,
                    heartbeat_interval: lease_ttl / 3,
                    peer_port: None,
                })
            }),
            epoch_floor: 0,
            evicted_by: None,
        }
    }

    fn record(id: &str, hb: Heartbeat) -> NodeRecord {
        record_with_ttl(id, hb, None)
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    fn observe(o: &mut Observer, nodes: &[NodeRecord], at: u64) {
        o.observe(nodes, &BTreeSet::new(), [], ms(at), ms(at), TTL);
    }

    #[test]
    fn expiry_is_judged_from_when_the_counter_last_moved() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let steps = [
            // (now, hb read, gone?)
            (0, 1, false),
            (1000, 2, false),
            (2000, 2, false),
            (3000, 2, false),
            (3900, 2, false),
            (4000, 2, true),
            (4100, 3, false),
        ];
        for (now, hb, gone) in steps {
            observe(&mut o, &[record("a", hb)], now);
            assert_eq!(o.is_gone(&a, TTL), gone, "at {now} ms");
        }
        assert_eq!(o.observed_hb(&a), Some(3));
    }

    /// Observes `nodes` every 250 ms from `from` to `to` (inclusive): an
    /// observer that reads less often than half a lease is blind.
    fn observe_until(
        o: &mut Observer,
        nodes: &[NodeRecord],
        present: &[&str],
        referenced: &[&str],
        from: u64,
        to: u64,
    ) {
        let present: BTreeSet<NodeId> = present.iter().map(|p| NodeId::new(*p)).collect();
        let referenced: Vec<NodeId> = referenced.iter().map(|r| NodeId::new(*r)).collect();
        let mut at = from;
        while at <= to {
            o.observe(nodes, &present, referenced.iter(), ms(at), ms(at), TTL);
            at += 250;
        }
    }

    #[test]
    fn the_larger_of_the_two_ttls_decides() {
        let mut o = Observer::default();
        let slow = NodeId::new("slow");
        let long = Duration::from_secs(10);
        let record = [record_with_ttl("slow", 1, Some(long))];
        observe_until(&mut o, &record, &[], &[], 0, 9750);
        assert!(!o.is_gone(&slow, TTL), "its own 10 s lease still runs");
        observe_until(&mut o, &record, &[], &[], 10_000, 10_000);
        assert_eq!(
            o.gone_check(&slow, TTL),
            Some(NodeCheck::Unchanged {
                hb: 1,
                inc: Incarnation(1)
            })
        );
    }

    #[test]
    fn an_announced_ttl_past_the_limit_is_held_to_it() {
        let mut o = Observer::default();
        let huge = [record_with_ttl("huge", 1, Some(Duration::from_secs(86_400)))];
        observe_until(&mut o, &huge, &[], &[], 0, MAX_LEASE_TTL.as_millis() as u64);
        assert!(
            o.is_gone(&NodeId::new("huge"), TTL),
            "a day's lease is held to the limit"
        );
    }

    #[test]
    fn a_missing_item_is_gone_only_after_a_ttl_of_being_missing() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        observe(&mut o, &[record("a", 1)], 0);
        // It owns a shard: its absence matters.
        observe_until(&mut o, &[], &[], &["a"], 250, 3000);
        assert!(o.is_missing(&a));
        assert!(!o.is_gone(&a, TTL), "missing for 2.75 s only");
        observe_until(&mut o, &[], &[], &["a"], 3250, 3250);
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Missing));
        // It re-registers: back, and no longer missing.
        observe(&mut o, &[record("a", 1)], 3500);
        assert!(!o.is_missing(&a) && !o.is_gone(&a, TTL));
    }

    /// Chaos seed 137: a node's item is deleted, it re-registers, and the
    /// item is deleted again before we read it. Its re-claim of a shard is
    /// the only sign of life we see; the missing clock must start over from
    /// a read of the nodes sent after that sign, or we would take its
    /// shards while its second registration's lease still runs.
    #[test]
    fn a_claim_by_a_missing_node_restarts_its_missing_clock() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let none = BTreeSet::new();
        let a_owns = [a.clone()];
        observe(&mut o, &[record("a", 1)], 0);
        observe_until(&mut o, &[], &[], &["a"], 250, 2500);
        // A read of the shards returns at 2.6 s showing a's re-claim.
        o.saw_claim(&a, ms(2600));
        // A read of the nodes sent before that, answered after: no evidence.
        o.observe(&[], &none, a_owns.iter(), ms(2550), ms(3300), TTL);
        assert!(o.is_missing(&a));
        assert_eq!(
            o.gone_check(&a, TTL),
            None,
            "missing since 250 ms, but a claimed at 2.6 s"
        );
        // Reads sent after it start the clock again.
        observe_until(&mut o, &[], &[], &["a"], 3500, 6250);
        assert!(!o.is_gone(&a, TTL), "missing since 3.5 s only");
        observe_until(&mut o, &[], &[], &["a"], 6500, 6500);
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Missing));
    }

    #[test]
    fn an_unreadable_item_is_not_missing_and_an_owner_never_seen_is() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let b = NodeId::new("b");
        observe(&mut o, &[record("a", 1)], 0);
        observe_until(&mut o, &[], &["a"], &["b"], 250, 3000);
        assert!(!o.is_missing(&a), "its item is there, we just cannot read it");
        assert!(o.is_missing(&b), "b owns a shard and has no item");
        observe_until(&mut o, &[], &["a"], &["b"], 3250, 3250);
        assert!(!o.is_gone(&a, TTL));
        assert_eq!(o.gone_check(&b, TTL), Some(NodeCheck::Missing));
    }

    #[test]
    fn an_evicted_node_whose_item_was_deleted_is_alive_again_once_it_registers() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let inc = Incarnation(1);
        let none = BTreeSet::new();
        let read = |o: &mut Observer, nodes: &[NodeRecord], sent: u64, at: u64| {
            o.observe(nodes, &none, [&a], ms(sent), ms(at), TTL);
        };
        read(&mut o, &[record("a", 5)], 0, 10);
        o.evicted(&a, inc, 5, ms(100), TTL);
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Unchanged { hb: 5, inc }));
        // Sent before we learned of the eviction: it shows the old item.
        read(&mut o, &[record("a", 5)], 90, 120);
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Unchanged { hb: 5, inc }));
        // Deleted by hand: gone once missing for a TTL (a new incarnation
        // we did not see may have registered, and been deleted, meanwhile).
        read(&mut o, &[], 200, 210);
        assert_eq!(o.gone_check(&a, TTL), None);
        for sent in [1200, 2200, 3210] {
            read(&mut o, &[], sent, sent + 10);
        }
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Missing));
        // The node found its item gone and registered again, same
        // incarnation, no mark: alive, judged by its counter from now on.
        read(&mut o, &[record("a", 1)], 3400, 3410);
        assert!(!o.is_evicted(&a, inc));
        assert_eq!(o.gone_check(&a, TTL), None);
        read(&mut o, &[record("a", 2)], 4400, 4410);
        assert_eq!(o.gone_check(&a, TTL), None);
        // And expires as anyone does once its counter stops.
        for sent in [5400, 6400, 7410] {
            read(&mut o, &[record("a", 2)], sent, sent + 10);
        }
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Unchanged { hb: 2, inc }));
    }

    #[test]
    fn an_evicted_item_that_is_unreadable_is_not_missing() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        let inc = Incarnation(1);
        o.observe(&[record("a", 5)], &BTreeSet::new(), [&a], ms(0), ms(10), TTL);
        o.evicted(&a, inc, 5, ms(100), TTL);
        let present: BTreeSet<NodeId> = [a.clone()].into();
        o.observe(&[], &present, [&a], ms(200), ms(210), TTL);
        assert_eq!(o.gone_check(&a, TTL), Some(NodeCheck::Unchanged { hb: 5, inc }));
    }

    #[test]
    fn a_vanished_node_that_owns_nothing_is_forgotten_once_gone() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        observe(&mut o, &[record("a", 1)], 0);
        observe_until(&mut o, &[], &[], &[], 250, 3500);
        assert!(!o.is_missing(&a), "forgotten: nothing of it is left to take over");
    }

    #[test]
    fn a_blind_observer_restarts_every_clock() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        observe(&mut o, &[record("a", 5)], 0);
        // Our own reads failed for 5 s; the counter looks still, but we
        // could not see it, so the node gets a fresh lease_ttl.
        observe(&mut o, &[record("a", 5)], 5000);
        assert!(!o.is_gone(&a, TTL));
        observe(&mut o, &[record("a", 5)], 6000);
        observe(&mut o, &[record("a", 5)], 7000);
        observe(&mut o, &[record("a", 5)], 8000);
        assert!(o.is_gone(&a, TTL));
    }

    #[test]
    fn slow_answers_are_not_blindness_and_late_ones_are_ignored() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        // Reads sent every 250 ms each take 1.6 s (more than half a lease)
        // to answer: the counter stands still from the first, and the node
        // is expired a TTL after the first answer showed it.
        let mut sent = 0;
        while sent <= 6000 {
            let accepted = o.observe(&[record("a", 5)], &BTreeSet::new(), [], ms(sent), ms(sent + 1600), TTL);
            assert!(accepted);
            let returned = sent + 1600;
            assert_eq!(o.is_gone(&a, TTL), returned >= 1600 + 3000, "answer at {returned} ms");
            sent += 250;
        }
        // An answer to a read sent before the last one recorded: too late.
        assert!(!o.observe(&[record("a", 6)], &BTreeSet::new(), [], ms(5000), ms(8000), TTL));
        assert_eq!(o.observed_hb(&a), Some(5));
    }

    #[test]
    fn expiry_needs_a_read_that_shows_it() {
        let mut o = Observer::default();
        let a = NodeId::new("a");
        observe(&mut o, &[record("a", 5)], 0);
        // No read since: time alone proves nothing.
        assert!(!o.is_gone(&a, TTL));
        assert!(!o.is_gone(&NodeId::new("x"), TTL), "unknown nodes are not gone");
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
