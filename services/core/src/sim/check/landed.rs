//! (a) on the writes that land in EC2: no node's write for a shard lands
//! after another node's under a newer epoch, except a late write of a node
//! evicted on the peers' word, which the new owner's read-back must repair.

use std::time::Duration;

use super::live::live_node;
use super::Checker;
use crate::sim::{Landed, World};
use crate::time::Instant;

/// After the read-back that follows an evicted node's lease, the repair of
/// a late write it made has landed within this long (a confirmation, and
/// an EC2 call through the pacing, retried if the account is throttled).
pub(super) const LATE_WRITE_REPAIR: Duration = Duration::from_secs(5);

/// A write of an evicted incarnation that landed after the new owner's.
pub(super) struct LateWrite {
    /// Its index in the landed log.
    pub(super) landed: usize,
    /// The node whose write it overrode: it took the shard from the evicted
    /// node, and reads back after that node's lease.
    pub(super) taker: usize,
    /// It must not stand any more by then...
    pub(super) due: Instant,
    /// ...or, if the taker has handed the shard on since, by the new
    /// owner's next reconcile.
    pub(super) extended: bool,
}

impl Checker {
    pub(super) fn check_landed_writes(&mut self, world: &World) {
        let landed = &world.ec2.landed;
        for (index, write) in landed.iter().enumerate().skip(self.landed_checked) {
            if let Some((gone, at)) = write.target.as_ref().and_then(|target| {
                world
                    .drained
                    .iter()
                    .find(|(n, at)| world.nodes[*n].eni() == target && *at < write.at)
            }) {
                let (writer, gone) = (world.nodes[write.node].id().clone(), world.nodes[*gone].id().clone());
                self.violation(format!(
                    "(f) at {} a write of {writer} pointed {} in {} at {gone}, drained at {at}",
                    write.at,
                    write.shard.vip(),
                    write.table
                ));
            }
            let newer = self
                .landed_epochs
                .get(&write.shard)
                .into_iter()
                .flatten()
                .find(|(node, epoch)| **node != write.node && **epoch > write.epoch)
                .map(|(node, epoch)| (*node, *epoch));
            // A late write by an evicted incarnation, or pointing at one (a
            // push to a recipient evicted meanwhile), may land while the
            // evicted node's lease runs: the new owner's read-back after it
            // must repair it.
            let writer_evicted = world.evictions.get(&(world.nodes[write.node].id().clone(), write.inc));
            let target_evicted = write.target.as_ref().and_then(|eni| {
                world
                    .evictions
                    .iter()
                    .filter(|((id, _), at)| {
                        **at <= write.at && world.nodes.iter().any(|n| n.id() == id && n.eni() == eni)
                    })
                    .map(|(_, at)| at)
                    .max()
            });
            if let (Some((taker, _)), Some(evicted_at)) = (newer, writer_evicted.or(target_evicted)) {
                self.late_writes_seen += 1;
                self.late_writes.push(LateWrite {
                    landed: index,
                    taker,
                    due: *evicted_at + self.late_write_bound,
                    extended: false,
                });
            } else if let Some((node, epoch)) = newer.filter(|_| !echoes_newer(&landed[..index], write)) {
                let (writer, other) = (world.nodes[write.node].id().clone(), world.nodes[node].id().clone());
                let text = format!(
                    "(a) at {} a write of {writer} for shard {} at epoch {} landed in {} after {other}'s at epoch {epoch}",
                    write.at, write.shard, write.epoch, write.table
                );
                self.violation(text);
            }
            let mine = self
                .landed_epochs
                .entry(write.shard)
                .or_default()
                .entry(write.node)
                .or_default();
            *mine = (*mine).max(write.epoch);
        }
        self.landed_checked = landed.len();
        self.check_late_writes(world);
    }

    /// A late write of an evicted node that still stands when it is due,
    /// with no write for its shard in its table since, and pointing
    /// elsewhere than the shard's owner: the new owner never repaired it.
    pub(super) fn check_late_writes(&mut self, world: &World) {
        let now = world.now;
        let landed = &world.ec2.landed;
        // A late write that points where the shard's owner is (handed back
        // to the node, as a new process) is right from then on: what its
        // route does after the next move is the hand-off's business.
        let owner_eni = |shard| {
            world
                .table
                .peek_shard(shard)
                .and_then(|r| r.owner.as_ref())
                .and_then(|o| live_node(world, o))
                .map(|i| world.nodes[i].eni().clone())
        };
        // Checked after every event: kept in place, and split only when
        // one is due (an AZ's loss leaves thousands waiting).
        self.late_writes.retain(|w| {
            landed[w.landed].target.is_none() || landed[w.landed].target != owner_eni(landed[w.landed].shard)
        });
        if !self.late_writes.iter().any(|w| w.due <= now) {
            return;
        }
        let (due, waiting): (Vec<LateWrite>, Vec<LateWrite>) = std::mem::take(&mut self.late_writes)
            .into_iter()
            .partition(|w| w.due <= now);
        self.late_writes = waiting;
        for mut late in due {
            let write = &landed[late.landed];
            let owner = world.table.peek_shard(write.shard).and_then(|r| r.owner.as_ref());
            if !late.extended && owner != Some(world.nodes[late.taker].id()) {
                late.extended = true;
                late.due = late.due + self.late_write_extension;
                self.late_writes.push(late);
                continue;
            }
            let overwritten = landed[late.landed + 1..]
                .iter()
                .any(|w| w.shard == write.shard && w.table == write.table);
            if !overwritten && write.target.is_some() && write.target != owner_eni(write.shard) {
                let writer = world.nodes[write.node].id().clone();
                self.violation(format!(
                    "(a) a late write of evicted {writer} for shard {} in {} at {} still stood at {}",
                    write.shard, write.table, write.at, late.due
                ));
            }
        }
    }
}

/// Whether `write` points its table's route where the newest epoch that
/// landed there before it did: an old owner's hand-off push that lands
/// after the new owner re-claimed the shard (an epoch step, no move) and
/// wrote the same route changes nothing, and is no second writer.
fn echoes_newer(before: &[Landed], write: &Landed) -> bool {
    before
        .iter()
        .filter(|w| w.shard == write.shard && w.table == write.table && w.epoch > write.epoch)
        .max_by_key(|w| (w.epoch, w.at))
        .is_some_and(|newest| newest.target == write.target)
}
