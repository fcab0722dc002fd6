//! [`ShardBook`]: this node's best knowledge of every shard item, from its
//! reads and its own writes.
//!
//! Each entry carries the instant it is *as of*: the send time of the read
//! that showed it, or the completion of our own write. A record replaces an
//! entry when its epoch is higher (epochs only grow, so it is newer
//! whenever it was read), or when its read was sent at or after the entry's
//! instant (a strongly consistent read sent later sees everything that
//! completed before). So a read that was in flight during our own write
//! never undoes it, while an item that vanished and came back with a lower
//! epoch (a table re-created) is still learned.
//!
//! Free shards (no item, or an item without owner) remember since when they
//! have been seen free, and every shard remembers the highest epoch seen, so
//! that a claim never hands out an epoch lower than one a node remembers.

use std::collections::{BTreeMap, BTreeSet};

use super::walk::MapWalk;
use crate::time::Instant;
use crate::types::{Epoch, Incarnation, NodeId, ShardId, ShardRecord};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `None`: the item does not exist.
    record: Option<ShardRecord>,
    as_of: Instant,
    /// Since when the shard has been seen without an owner.
    free_since: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ShardBook {
    entries: BTreeMap<ShardId, Entry>,
    highest_epoch: BTreeMap<ShardId, Epoch>,
    /// The highest of them all: the floor this node announces.
    floor: Epoch,
    /// Items that exist but could not be read: nobody may treat them as free.
    unreadable: BTreeSet<ShardId>,
    /// Send time of the last successful full read.
    read_at: Option<Instant>,
    /// Bumped whenever a shard's owner or existence changes, or free
    /// shards' waits start over: the targets depend on all of them.
    version: u64,
    /// How many shards each owner holds, kept as entries change: every read
    /// of the node items asks for the owners, and the shards far outnumber
    /// them.
    owner_counts: BTreeMap<NodeId, usize>,
    /// The simulation's sabotage: a wait that starts over plans nothing
    /// again.
    quiet_restarts: bool,
    /// What changed since the targets were last planned (see
    /// [`Self::take_changes`]).
    changes: Changes,
}

/// The shards whose owner (or epoch) changed since the last
/// [`ShardBook::take_changes`], each with its owner before; or `Other` once
/// anything else bumped the version (a shard forgotten, free shards' waits
/// started over, unreadable items), or the list grew past
/// [`MAX_LISTED_CHANGES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Changes {
    Owners(Vec<(ShardId, Option<NodeId>)>),
    Other,
}

impl Default for Changes {
    fn default() -> Self {
        Changes::Owners(Vec::new())
    }
}

/// Past this many owner changes between two plans, planning afresh costs
/// no more than checking them one by one.
const MAX_LISTED_CHANGES: usize = 4096;

/// What learning a record meant for its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Older than what we know: ignored.
    Stale,
    Accepted,
}

impl ShardBook {
    fn accepts(&self, shard: ShardId, epoch: Option<Epoch>, sent_at: Instant) -> bool {
        match self.entries.get(&shard) {
            None => true,
            Some(entry) => {
                let known = entry.record.as_ref().map(|r| r.epoch);
                matches!((epoch, known), (Some(e), Some(k)) if e > k)
                    || matches!((epoch, known), (Some(_), None))
                    || sent_at >= entry.as_of
            }
        }
    }

    fn put(&mut self, shard: ShardId, record: Option<ShardRecord>, as_of: Instant, now: Instant) {
        // Most reads show a shard as it was: only the instant moves (every
        // node reads every shard, so this is most of the book's work).
        // Owner, epoch and freedom are unchanged, so are the counts, the
        // version, the highest epoch and `free_since`.
        if let Some(entry) = self.entries.get_mut(&shard) {
            if entry.record == record {
                entry.as_of = as_of;
                return;
            }
        }
        let free = record.as_ref().is_none_or(|r| r.owner.is_none());
        let before = self.entries.get(&shard);
        let was_free_since = before.and_then(|e| e.free_since);
        let owner = |r: Option<&ShardRecord>| r.map(|r| (r.owner.clone(), r.epoch));
        if before.is_none_or(|e| owner(e.record.as_ref()) != owner(record.as_ref())) {
            self.version += 1;
            let old_owner = before.and_then(|e| e.record.as_ref()).and_then(|r| r.owner.clone());
            match &mut self.changes {
                Changes::Owners(list) if list.len() < MAX_LISTED_CHANGES && before.is_some() => {
                    list.push((shard, old_owner));
                }
                // A shard new to the book may have waited, or been free
                // without a clock: plan afresh.
                changes => *changes = Changes::Other,
            }
        }
        if let Some(r) = &record {
            let highest = self.highest_epoch.entry(shard).or_default();
            *highest = (*highest).max(r.epoch);
            self.floor = self.floor.max(r.epoch);
        }
        let old_owner = before.and_then(|e| e.record.as_ref()).and_then(|r| r.owner.as_ref());
        let new_owner = record.as_ref().and_then(|r| r.owner.as_ref());
        if old_owner != new_owner {
            let (old_owner, new_owner) = (old_owner.cloned(), new_owner.cloned());
            self.owner_left(old_owner);
            if let Some(owner) = new_owner {
                *self.owner_counts.entry(owner).or_default() += 1;
            }
        }
        self.entries.insert(
            shard,
            Entry {
                record,
                as_of,
                free_since: free.then(|| was_free_since.unwrap_or(now)),
            },
        );
    }

    /// A record read by a call sent at `sent_at`.
    pub(crate) fn learn(&mut self, record: ShardRecord, sent_at: Instant, now: Instant) -> Learned {
        let shard = record.id;
        if !self.accepts(shard, Some(record.epoch), sent_at) {
            return Learned::Stale;
        }
        self.put(shard, Some(record), sent_at, now);
        Learned::Accepted
    }

    /// [`Self::learn`] of a record that shows the shard as the book knows
    /// it (what most reads show of most shards), without taking it apart:
    /// only the instant may move. `None` when the book knows it otherwise.
    pub(crate) fn refresh(&mut self, record: &ShardRecord, sent_at: Instant) -> Option<Learned> {
        refresh_entry(self.entries.get_mut(&record.id)?, record, sent_at)
    }

    /// [`Self::refresh`] of each of a read's records, walking the book once
    /// beside them rather than searching it per record (a read returns
    /// every shard, and every node reads them all). `None` unless the
    /// records come in shard order, each once, as the fake store returns
    /// them.
    pub(crate) fn refresh_in_order(
        &mut self,
        records: &[ShardRecord],
        sent_at: Instant,
    ) -> Option<Vec<Option<Learned>>> {
        if !records.windows(2).all(|pair| pair[0].id < pair[1].id) {
            return None;
        }
        let mut entries = self.entries.range_mut(..).peekable();
        let refreshed = records
            .iter()
            .map(|record| {
                while entries.next_if(|(shard, _)| **shard < record.id).is_some() {}
                let (_, entry) = entries.peek_mut().filter(|(shard, _)| **shard == record.id)?;
                refresh_entry(entry, record, sent_at)
            })
            .collect();
        Some(refreshed)
    }

    /// A full read sent at `sent_at` did not return `shard`'s item.
    pub(crate) fn learn_absent(&mut self, shard: ShardId, sent_at: Instant, now: Instant) -> Learned {
        if !self.accepts(shard, None, sent_at) {
            return Learned::Stale;
        }
        self.put(shard, None, sent_at, now);
        Learned::Accepted
    }

    /// [`Self::learn_absent`] of `shards` (in shard order, each once), the
    /// shards a full read did not return; the accepted ones, in order. The
    /// book is walked once for the shards it already knows free, the
    /// common case: only the instant moves.
    pub(crate) fn learn_all_absent(&mut self, shards: &[ShardId], sent_at: Instant, now: Instant) -> Vec<ShardId> {
        let mut accepted = vec![false; shards.len()];
        let mut changed = Vec::new();
        let mut entries = self.entries.range_mut(..).peekable();
        for (at, shard) in shards.iter().enumerate() {
            while entries.next_if(|(known, _)| *known < shard).is_some() {}
            match entries.peek_mut().filter(|(known, _)| *known == shard) {
                Some((_, entry)) if sent_at < entry.as_of => {}
                Some((_, entry)) if entry.record.is_none() => {
                    entry.as_of = sent_at;
                    accepted[at] = true;
                }
                _ => changed.push(at),
            }
        }
        for at in changed {
            accepted[at] = self.learn_absent(shards[at], sent_at, now) == Learned::Accepted;
        }
        shards
            .iter()
            .zip(accepted)
            .filter(|(_, ok)| *ok)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Our own conditional write made `owner` the owner at `epoch`; we
    /// learn it at `now`.
    pub(crate) fn wrote(
        &mut self,
        shard: ShardId,
        owner: NodeId,
        owner_inc: Option<Incarnation>,
        epoch: Epoch,
        now: Instant,
    ) {
        let moves = self.entries.get(&shard).and_then(|e| e.record.as_ref()).map_or(0, |r| {
            r.moves + u64::from(r.owner.as_ref().is_some_and(|o| *o != owner))
        });
        let record = ShardRecord {
            id: shard,
            owner: Some(owner),
            owner_inc,
            epoch,
            moves,
        };
        self.put(shard, Some(record), now, now);
    }

    /// Our own write to the shard may have applied, or not (its answer was
    /// lost): what reads sent before `at` show of it no longer counts,
    /// unless it carries a higher epoch. Else a read in flight across the
    /// write could hand back an ownership the write gave away.
    pub(crate) fn distrust_reads_before(&mut self, shard: ShardId, at: Instant) {
        if let Some(entry) = self.entries.get_mut(&shard) {
            entry.as_of = entry.as_of.max(at);
        }
    }

    /// A retired shard: its item is gone for good.
    /// We could not see for a while (our lease lapsed: paused, cut off from
    /// the store): a shard we saw free may have been claimed and lost again
    /// meanwhile, under an epoch we never saw. Its wait starts over, so a
    /// claim waits for reads (and epoch floors) from after now. The
    /// targets are planned again: ones planned before would claim the
    /// shards at once.
    pub(crate) fn restart_free_clocks(&mut self, now: Instant) {
        let mut restarted = false;
        for entry in self.entries.values_mut() {
            if entry.free_since.is_some_and(|since| since < now) {
                entry.free_since = Some(now);
                restarted = true;
            }
        }
        if restarted && !self.quiet_restarts {
            self.version += 1;
            self.changes = Changes::Other;
        }
    }

    #[cfg(feature = "fakes")]
    pub(crate) fn sabotage_quiet_restarts(&mut self) {
        self.quiet_restarts = true;
    }

    pub(crate) fn forget(&mut self, shard: ShardId) {
        if let Some(entry) = self.entries.remove(&shard) {
            self.version += 1;
            self.changes = Changes::Other;
            self.owner_left(entry.record.and_then(|r| r.owner));
        }
    }

    fn owner_left(&mut self, owner: Option<NodeId>) {
        let Some(owner) = owner else { return };
        if let Some(count) = self.owner_counts.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.owner_counts.remove(&owner);
            }
        }
    }

    /// Every node that owns some shard, each once.
    pub(crate) fn owners(&self) -> impl Iterator<Item = &NodeId> {
        self.owner_counts.keys()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// What changed since the last call: the planner's way to tell claims
    /// landing on their targets from anything else.
    pub(crate) fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub(crate) fn set_unreadable(&mut self, shards: BTreeSet<ShardId>) {
        if shards != self.unreadable {
            self.version += 1;
            self.changes = Changes::Other;
            self.unreadable = shards;
        }
    }

    pub(crate) fn is_unreadable(&self, shard: ShardId) -> bool {
        self.unreadable.contains(&shard)
    }

    pub(crate) fn finished_read(&mut self, sent_at: Instant) {
        self.read_at = Some(self.read_at.map_or(sent_at, |t| t.max(sent_at)));
    }

    pub(crate) fn read_at(&self) -> Option<Instant> {
        self.read_at
    }

    pub(crate) fn record(&self, shard: ShardId) -> Option<&ShardRecord> {
        self.entries.get(&shard)?.record.as_ref()
    }

    pub(crate) fn owner(&self, shard: ShardId) -> Option<&NodeId> {
        self.record(shard)?.owner.as_ref()
    }

    /// [`Self::owner`] of shards asked in ascending order, walking the book
    /// once (`super::walk`): planning asks it of every shard.
    pub(crate) fn owner_walk<'a>(&'a self) -> impl FnMut(ShardId) -> Option<&'a NodeId> + 'a {
        let mut walk = MapWalk::new(&self.entries);
        move |shard| walk.get(shard)?.record.as_ref()?.owner.as_ref()
    }

    /// [`Self::free_since`] of shards asked in ascending order, walking the
    /// book once.
    pub(crate) fn free_since_walk(&self) -> impl FnMut(ShardId) -> Option<Instant> + '_ {
        let mut walk = MapWalk::new(&self.entries);
        move |shard| walk.get(shard)?.free_since
    }

    pub(crate) fn epoch(&self, shard: ShardId) -> Epoch {
        self.record(shard).map_or(0, |r| r.epoch)
    }

    /// The epoch a claim of this (free) shard should set: above what we
    /// remember of it and above `fleet_floor`, the highest floor any node
    /// announces (a node that restarted remembers nothing; its peers do).
    pub(crate) fn next_epoch(&self, shard: ShardId, fleet_floor: Epoch) -> Epoch {
        self.remembered(shard).max(fleet_floor) + 1
    }

    /// The highest epoch this node has seen for `shard`.
    pub(crate) fn remembered(&self, shard: ShardId) -> Epoch {
        self.highest_epoch.get(&shard).copied().unwrap_or(0)
    }

    /// The highest epoch this node has seen for any shard.
    pub(crate) fn floor(&self) -> Epoch {
        self.floor
    }

    /// Since when the shard has been seen free; `None` if it has an owner
    /// or has never been read.
    pub(crate) fn free_since(&self, shard: ShardId) -> Option<Instant> {
        self.entries.get(&shard)?.free_since
    }

    /// Every shard item we know exists.
    pub(crate) fn records(&self) -> impl Iterator<Item = &ShardRecord> {
        self.entries.values().filter_map(|e| e.record.as_ref())
    }

    /// Shards whose items exist (or existed when last read), for checks.
    pub(crate) fn known(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.entries.keys().copied()
    }
}

/// [`ShardBook::refresh`] of one entry.
fn refresh_entry(entry: &mut Entry, record: &ShardRecord, sent_at: Instant) -> Option<Learned> {
    if entry.record.as_ref() != Some(record) {
        return None;
    }
    // Same epoch: accepted only from a read sent at or after the entry.
    if sent_at < entry.as_of {
        return Some(Learned::Stale);
    }
    entry.as_of = sent_at;
    Some(Learned::Accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> ShardId {
        "10.200.0.1/32".parse().unwrap()
    }

    fn rec(owner: Option<&str>, epoch: Epoch) -> ShardRecord {
        ShardRecord {
            id: shard(),
            owner: owner.map(NodeId::new),
            owner_inc: None,
            epoch,
            moves: 0,
        }
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn owner_changes_are_listed_with_the_owner_before_and_anything_else_is_other() {
        let mut book = ShardBook::default();
        book.learn(rec(Some("a"), 1), ms(0), ms(0));
        assert_eq!(book.take_changes(), Changes::Other, "a shard new to the book");
        book.learn(rec(Some("a"), 1), ms(10), ms(10));
        assert_eq!(book.take_changes(), Changes::Owners(vec![]), "only the instant moved");
        book.learn(rec(Some("b"), 2), ms(20), ms(20));
        book.learn(rec(Some("c"), 3), ms(30), ms(30));
        let a = Some(NodeId::new("a"));
        let b = Some(NodeId::new("b"));
        assert_eq!(book.take_changes(), Changes::Owners(vec![(shard(), a), (shard(), b)]));
        book.forget(shard());
        assert_eq!(book.take_changes(), Changes::Other);
    }

    #[test]
    fn a_read_in_flight_during_our_write_does_not_undo_it() {
        let mut book = ShardBook::default();
        book.learn(rec(Some("a"), 4), ms(0), ms(10));
        book.wrote(shard(), NodeId::new("me"), None, 5, ms(100));
        assert_eq!(book.learn(rec(Some("a"), 4), ms(90), ms(110)), Learned::Stale);
        assert_eq!(book.learn_absent(shard(), ms(90), ms(110)), Learned::Stale);
        assert_eq!(book.owner(shard()), Some(&NodeId::new("me")));
        // A higher epoch is newer whenever it was read.
        assert_eq!(book.learn(rec(Some("b"), 6), ms(50), ms(120)), Learned::Accepted);
        assert_eq!(book.owner(shard()), Some(&NodeId::new("b")));
    }

    #[test]
    fn after_a_write_of_unknown_outcome_older_reads_do_not_count() {
        let mut book = ShardBook::default();
        book.learn(rec(Some("me"), 4), ms(0), ms(10));
        // Our hand-off was sent at 100 and timed out at 1600: it may have
        // applied. A read sent at 90 (before it) comes back at 1700.
        book.distrust_reads_before(shard(), ms(1600));
        assert_eq!(book.learn(rec(Some("me"), 4), ms(90), ms(1700)), Learned::Stale);
        // The recipient's epoch is news whenever it was read...
        assert_eq!(book.learn(rec(Some("b"), 5), ms(95), ms(1710)), Learned::Accepted);
        // ...and a read sent after the doubt settles it either way.
        assert_eq!(book.learn(rec(Some("b"), 5), ms(1650), ms(1720)), Learned::Accepted);
    }

    #[test]
    fn a_vanished_item_is_free_and_its_next_claim_keeps_the_epoch_rising() {
        let mut book = ShardBook::default();
        book.learn(rec(Some("a"), 7), ms(0), ms(10));
        assert_eq!(book.free_since(shard()), None);
        assert_eq!(book.learn_absent(shard(), ms(200), ms(210)), Learned::Accepted);
        assert_eq!(book.free_since(shard()), Some(ms(210)));
        assert_eq!(book.next_epoch(shard(), 0), 8, "one above the highest epoch seen");
        assert_eq!(book.next_epoch(shard(), 11), 12, "or above the fleet's floor");
        // Re-created with a lower epoch by a node that knew less: a read
        // sent later shows it, and we take it.
        assert_eq!(book.learn(rec(Some("b"), 1), ms(300), ms(310)), Learned::Accepted);
        assert_eq!(book.epoch(shard()), 1);
        assert_eq!(book.next_epoch(shard(), 0), 8);
        assert_eq!(book.free_since(shard()), None);
    }

    #[test]
    fn a_wait_that_starts_over_plans_the_targets_again() {
        let mut book = ShardBook::default();
        book.learn_absent(shard(), ms(0), ms(5));
        let before = book.version();
        book.restart_free_clocks(ms(20_000));
        assert_eq!(book.free_since(shard()), Some(ms(20_000)));
        assert!(book.version() > before, "targets planned before would claim at once");
        let after = book.version();
        book.restart_free_clocks(ms(20_000));
        assert_eq!(book.version(), after, "nothing started over");
    }

    #[test]
    fn free_since_survives_reads_that_show_it_free_again() {
        let mut book = ShardBook::default();
        book.learn_absent(shard(), ms(0), ms(5));
        book.learn_absent(shard(), ms(100), ms(105));
        book.learn(rec(None, 3), ms(200), ms(205));
        assert_eq!(book.free_since(shard()), Some(ms(5)));
        assert_eq!(book.next_epoch(shard(), 0), 4);
    }
}
