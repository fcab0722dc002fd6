//! What a node does with a peer verdict: the takers of the dead node's
//! shards evict it, the others wait to read that they did.
//!
//! Every survivor reaches its own verdict on a crash within two of its
//! probe rounds. If each of them evicted the node, and read the shards to
//! claim, one death would cost every survivor a conditional write and a
//! read of the whole table: at 300 nodes and 3,000 shards some 300 writes
//! and 17,000 read units at once, throttled with everything else the
//! fleet read, so the takers' own reads were refused and a shard waited
//! for good. Only a node that the targets *without* the dead node make a
//! taker of one of its shards gains by evicting: it evicts, and reads the
//! shards with the eviction, as before. The others hold their verdict and
//! watch their reads of the node items for the eviction; one that has not
//! seen it in a read sent [`DEFERRED_EVICTION_WAIT`] after its verdict
//! evicts after all (its view of who takes may differ from the takers'
//! own, or they may be cut off from the store).
//!
//! Weighing the held verdicts plans the fleet's targets without their
//! nodes. In an AZ's loss a node reaches hundreds of verdicts within a
//! second, and at a thousand nodes and ten thousand shards one such plan
//! ranks thousands of orphans against hundreds of members: a verdict that
//! comes within [`VERDICT_WEIGH_INTERVAL`] of a weighing waits for the
//! next, with the others (the interval doubles while verdicts keep coming,
//! up to [`VERDICT_WEIGH_INTERVAL_MAX`]), and a node whose quota the plan
//! would not raise is no taker and ranks nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Event, Machine, Step};
use crate::assign::{has_spare_quota, Member, Role};
use crate::time::Instant;
use crate::types::{Incarnation, NodeId, ShardId};

/// How long after its verdict a node that takes none of the dead node's
/// shards waits for the takers' eviction before it evicts itself: the
/// takers reach theirs within two probe rounds (200 ms) and evict within
/// a write.
pub const DEFERRED_EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Verdicts that come this soon after the held ones were weighed wait to
/// be weighed together: a twentieth of the others' wait for the takers.
pub const VERDICT_WEIGH_INTERVAL: Duration = Duration::from_millis(50);
/// While verdicts keep coming, each weighing waits twice as long as the
/// last, up to this: well within the others' wait, so the takers have
/// evicted before anyone evicts in their place.
pub const VERDICT_WEIGH_INTERVAL_MAX: Duration = Duration::from_millis(400);

/// When the held verdicts were last weighed, how long verdicts wait after
/// that, and when they are next weighed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Weighing {
    last: Option<Instant>,
    interval: Duration,
    pub(super) next: Option<Instant>,
}

impl Default for Weighing {
    fn default() -> Self {
        Self {
            last: None,
            interval: VERDICT_WEIGH_INTERVAL,
            next: None,
        }
    }
}

/// A verdict held while the takers evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Deferred {
    inc: Incarnation,
    since: Instant,
}

/// Verdicts held, by node.
pub(super) type DeferredVerdicts = BTreeMap<NodeId, Deferred>;

impl Machine {
    /// The peer detector found incarnation `inc` of `node` dead.
    pub(super) fn peer_verdict(&mut self, node: NodeId, inc: Incarnation, now: Instant, out: &mut Step) {
        let holds = self.book.records().any(|r| r.owner.as_ref() == Some(&node));
        if !holds {
            // Our map may predate its claims: a read decides (see
            // `evict_dead`), hot, as any verdict was before.
            self.heat(now);
            return self.evict_dead(node, inc, now, out);
        }
        self.deferred_verdicts
            .entry(node)
            .or_insert(Deferred { inc, since: now });
        match self.weighing.last {
            Some(last) if now < last + self.weighing.interval => {
                self.weighing.next = Some(last + self.weighing.interval);
            }
            _ => self.weigh_verdicts(now, out),
        }
        if !self.deferred_verdicts.is_empty() {
            // Nothing to do but look, once, whether the takers evicted it;
            // a cold node stays cold (the takers' claims are announced).
            self.timers.scan = self.timers.scan.min(now + DEFERRED_EVICTION_WAIT);
        }
    }

    /// Evicts the nodes of the held verdicts whose shards we take.
    pub(super) fn weigh_verdicts(&mut self, now: Instant, out: &mut Step) {
        // A burst: verdicts came within the wait after the last weighing.
        let burst = self
            .weighing
            .last
            .is_some_and(|last| now < last + self.weighing.interval * 2);
        let interval = if burst {
            (self.weighing.interval * 2).min(VERDICT_WEIGH_INTERVAL_MAX)
        } else {
            VERDICT_WEIGH_INTERVAL
        };
        self.weighing = Weighing {
            last: Some(now),
            interval,
            next: None,
        };
        let held = self.deferred_verdicts.len();
        if held == 0 {
            return;
        }
        // Planned without every node we hold dead: in an AZ's loss the
        // deaths reach us one by one, and a shard of the first may go to a
        // second that is dead too; found later, it makes us a taker then.
        let taken = self.verdicts_we_take_from();
        out.events.push(Event::VerdictsWeighed {
            held,
            ranked: taken.is_some(),
        });
        for (node, inc) in taken.into_iter().flatten() {
            self.deferred_verdicts.remove(&node);
            self.heat(now);
            self.evict_dead(node, inc, now, out);
        }
    }

    /// After a read of the node items sent at `sent_at`: verdicts the read
    /// settles are dropped (the node was evicted, restarted or is gone),
    /// and those it should have settled and did not are acted on.
    pub(super) fn review_deferred_verdicts(&mut self, sent_at: Instant, now: Instant, out: &mut Step) {
        if self.deferred_verdicts.is_empty() {
            return;
        }
        let ttl = self.cfg().lease_ttl;
        let mut overdue = Vec::new();
        self.deferred_verdicts.retain(|node, deferred| {
            let same_incarnation = self.nodes.get(node).is_some_and(|n| n.inc == deferred.inc);
            let settled =
                !same_incarnation || self.observer.is_evicted(node, deferred.inc) || self.observer.is_gone(node, ttl);
            if !settled && sent_at >= deferred.since + DEFERRED_EVICTION_WAIT {
                overdue.push((node.clone(), deferred.inc));
                return false;
            }
            !settled
        });
        for (node, inc) in overdue {
            self.evict_dead(node, inc, now, out);
        }
    }

    /// The held verdicts whose node's shards the targets, planned from what
    /// we know now but without every node we hold dead, give us. The
    /// prediction is the assignment we will make once they are gone (the
    /// same inputs, so a shared memo computes it once); a map that is out
    /// of date may get it wrong, and a held verdict then evicts late.
    /// `None` if our quota would not grow: no orphan was ranked.
    fn verdicts_we_take_from(&self) -> Option<Vec<(NodeId, Incarnation)>> {
        let me = self.me();
        if self.membership.role_of(me) != Some(Role::Takes) {
            return None;
        }
        let dead = |id: &NodeId| self.deferred_verdicts.contains_key(id) || self.evicting.contains_key(id);
        let members: Vec<Member> = self
            .membership
            .members
            .iter()
            .filter(|m| !dead(&m.id))
            .cloned()
            .collect();
        let mut agreed = Vec::with_capacity(self.membership.agreed.len());
        let mut owners = BTreeMap::new();
        let mut theirs: Vec<(ShardId, &NodeId)> = Vec::new();
        let mut owner_of = self.book.owner_walk();
        let mut ours = Self::counts_as_held(&self.held, &self.ops);
        for &shard in self.membership.agreed.iter() {
            agreed.push(shard);
            if ours(shard) {
                owners.insert(shard, me.clone());
                continue;
            }
            match owner_of(shard) {
                Some(owner) if self.deferred_verdicts.contains_key(owner) => theirs.push((shard, owner)),
                Some(owner) if !dead(owner) && self.membership.role_of(owner).is_some() => {
                    owners.insert(shard, owner.clone());
                }
                _ => {}
            }
        }
        drop(owner_of);
        if !has_spare_quota(&agreed, &members, &owners, me) {
            return None;
        }
        let assignment = self.assign_memo.assign(&agreed, &members, owners);
        let mut taken_from: BTreeMap<NodeId, Incarnation> = BTreeMap::new();
        for (shard, owner) in theirs {
            if assignment.target.get(&shard) == Some(me) {
                if let Some(deferred) = self.deferred_verdicts.get(owner) {
                    taken_from.insert(owner.clone(), deferred.inc);
                }
            }
        }
        // A node that holds only disputed shards (they go by rank among
        // those that serve them, not by quota) is left to the fallback.
        Some(taken_from.into_iter().collect())
    }
}
