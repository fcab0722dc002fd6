//! Each crash followed until its shards are owned and routed again: the
//! restoration times the reports give, and (g), a crash's shards taken
//! over together.

use std::collections::BTreeSet;
use std::time::Duration;

use super::live::LiveView;
use super::{served_inputs, Checker};
use crate::sim::World;
use crate::time::Instant;
use crate::types::{NodeId, ShardId};

/// A crash whose shards are not all owned and routed again yet.
pub(super) struct Recovery {
    pub(super) node: NodeId,
    pub(super) at: Instant,
    pub(super) shards: BTreeSet<ShardId>,
    /// Shards not seen owned and routed again yet.
    pub(super) pending: BTreeSet<ShardId>,
    pub(super) per_shard: Vec<Duration>,
    pub(super) took: Option<Duration>,
    /// Shards not seen with a live owner again yet...
    pub(super) unowned: BTreeSet<ShardId>,
    /// ...and when each of the others was, in that order.
    pub(super) owned_at: Vec<(ShardId, Instant)>,
    /// Struck in a quiet fleet, and no other fault since until all were
    /// owned again: (g) applies.
    pub(super) clean: bool,
}

impl Checker {
    /// Only looks again when an owner, a route or the set of running nodes
    /// changed: the answer cannot have changed otherwise.
    pub(super) fn track_recoveries(&mut self, world: &World) {
        if self.recoveries.iter().all(|r| r.took.is_some()) {
            return;
        }
        let inputs = served_inputs(world);
        if self.recoveries_checked == Some(inputs) {
            return;
        }
        self.recoveries_checked = Some(inputs);
        let now = world.now;
        let live = LiveView::of(world);
        for recovery in self.recoveries.iter_mut().filter(|r| r.took.is_none()) {
            let since = now.saturating_since(recovery.at);
            let (per_shard, owned_at) = (&mut recovery.per_shard, &mut recovery.owned_at);
            recovery.pending.retain(|s| {
                let restored = !live.serves(*s) || live.served_by_owner(world, *s);
                if restored {
                    per_shard.push(since);
                }
                !restored
            });
            recovery.unowned.retain(|s| {
                let owned = !live.serves(*s) || live.owned(world, *s);
                if owned {
                    owned_at.push((*s, now));
                }
                !owned
            });
            // Restored when every shard is at once (one may have been, and
            // moved on again since).
            let all = || {
                recovery
                    .shards
                    .iter()
                    .all(|s| !live.serves(*s) || live.served_by_owner(world, *s))
            };
            if recovery.pending.is_empty() && all() {
                recovery.took = Some(now.saturating_since(recovery.at));
            }
        }
    }

    /// (g) for one crash, once the run is over.
    pub(super) fn check_takeover_spread(&mut self, recovery: &Recovery) {
        if !recovery.clean || !recovery.unowned.is_empty() {
            return;
        }
        let (Some((first, first_at)), Some((last, last_at))) = (recovery.owned_at.first(), recovery.owned_at.last())
        else {
            return;
        };
        let spread = last_at.saturating_since(*first_at);
        if spread > self.takeover_spread {
            self.violation(format!(
                "(g) crash of {} at {}: shard {first:?} had a live owner again at {first_at}, shard {last:?} only at \
                 {last_at}, {spread:?} later (at most {:?})",
                recovery.node, recovery.at, self.takeover_spread
            ));
        }
    }
}
