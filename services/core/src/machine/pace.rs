//! How often the node reads the table: *hot* while the fleet is unsettled,
//! *cold* once it is.
//!
//! Hot, a node reads the node items every `scan_interval` and the shard
//! items when they may be stale, as the lease protocol always did: its
//! [`crate::liveness::Observer`] sees every counter move and expires a
//! silent node after its TTL.
//!
//! Cold (nothing to take, give or retire anywhere, every shard with its
//! target owner, the own lease valid, for a lease past the last change), a
//! node only *watches*: every `watch_interval` it reads two small items, the
//! fleet's change counter and the node item of its successor in id order.
//! It turns hot again when
//! - the counter moved: some node announced a change it made (a
//!   registration, a new state, a claim, a hand-off, an eviction,
//!   a retirement), or the table was re-created or restored;
//! - the watched node's counter stood still for two of its heartbeats, or
//!   its item is gone, unreadable, evicted or no longer active;
//! - the peer detector found a node dead, or anything else unsettles the
//!   node's own plan.
//!
//! So a fleet at rest reads one block per node per watch, whatever its
//! size, plus a full read of the table every `cold_refresh_interval`
//! (longer for a table of many blocks, so that a node's share of the bill
//! does not grow with the fleet), which catches hand edits nobody
//! announced. Announcements are hints: a lost one delays what a cold node
//! learns, never what is safe, since every write is conditional and every
//! route write is fenced by a fresh read of its shard.

use std::time::Duration;

use super::{Effect, Machine, Mode, Step};
use crate::config::LeaseConfig;
use crate::store::{FleetVersion, StoreResult, Watch, WatchRequest, Watched};
use crate::time::Instant;
use crate::types::{Heartbeat, Incarnation, NodeId, NodeState, ShardRecord};
use crate::units;

/// A cold full read costs a node at most one 4 KB block of the table per
/// this long: a table of many blocks is read in full less often.
pub const COLD_REFRESH_PER_BLOCK: Duration = Duration::from_secs(20);
/// How often a cold node reads the whole table of `table_bytes`: the
/// configured interval, or [`COLD_REFRESH_PER_BLOCK`] per 4 KB block if
/// that is longer.
pub fn cold_refresh(lease: &LeaseConfig, table_bytes: u64) -> Duration {
    lease
        .cold_refresh_interval
        .max(per_block(COLD_REFRESH_PER_BLOCK, table_bytes))
}

/// `interval` once per 4 KB block of `bytes` (one at least): how long a
/// read of them must wait to cost a block per `interval`.
fn per_block(interval: Duration, bytes: u64) -> Duration {
    let blocks = bytes.div_ceil(units::READ_UNIT_BYTES).max(1);
    interval.saturating_mul(u32::try_from(blocks).unwrap_or(u32::MAX))
}

/// A hot read of the node items costs a node at most one 4 KB block of
/// them per this long: in a large fleet every node reading every node at
/// the scan pace would read more than the table serves. (300 nodes scanning
/// their 75 KB of node items 4 times a second ask 22,800 read units a
/// second of a new table's 12,000; throttled, the takers' reads of the
/// shards were refused with the rest, and a dead node's shard waited for
/// good.) A fleet of up to 32 nodes fits in two blocks and scans at its
/// configured pace.
pub const HOT_SCAN_PER_BLOCK: Duration = Duration::from_millis(100);
/// However large the fleet, a hot node reads the node items at least four
/// times a lease: an observer that saw nothing for half a lease restarts
/// its clocks, and would never expire a silent node.
const HOT_SCANS_PER_LEASE: u32 = 4;

/// How often a hot node reads the node items, `node_bytes` of them: the
/// configured scan interval, or [`HOT_SCAN_PER_BLOCK`] per 4 KB block if
/// that is longer, but never less than four times a lease.
pub fn hot_scan(lease: &LeaseConfig, node_bytes: u64) -> Duration {
    let by_size = per_block(HOT_SCAN_PER_BLOCK, node_bytes);
    lease
        .scan_interval
        .max(by_size.min(lease.lease_ttl / HOT_SCANS_PER_LEASE))
}

/// How often a hot node reads the shard items, `shard_bytes` of them, when
/// nothing makes them stale: the configured refresh interval, or
/// [`HOT_SCAN_PER_BLOCK`] per 4 KB block if that is longer. (No observer
/// needs these reads, so there is no floor: at 10,000 shards every
/// survivor of an AZ's loss refreshing them every 5 s would ask some
/// 20,000 read units a second of a new table's 12,000.)
pub fn hot_shard_refresh(lease: &LeaseConfig, shard_bytes: u64) -> Duration {
    lease
        .shard_refresh_interval
        .max(per_block(HOT_SCAN_PER_BLOCK, shard_bytes))
}

/// The watched node counts as stalled once its counter stood still this
/// many of its heartbeat intervals.
const STALLED_AFTER_BEATS: u32 = 2;

/// The watched node's counter as last seen, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sighting {
    node: NodeId,
    inc: Incarnation,
    hb: Heartbeat,
    since: Instant,
}

#[derive(Clone, Debug)]
pub(super) struct Pace {
    cold: bool,
    /// Reads stay hot at least until then.
    hot_until: Instant,
    /// The change counter as the last watch read it; `None` before the
    /// first.
    known_version: Option<FleetVersion>,
    watched: Option<Sighting>,
    watch_at: Instant,
    watching: bool,
    announce_pending: bool,
    announcing: bool,
    announce_not_before: Instant,
    /// The state the last announced heartbeat carried.
    announced_state: Option<NodeState>,
    /// Bytes of the node and shard items as last read.
    node_bytes: u64,
    shard_bytes: u64,
    /// Bumped whenever the targets are computed again.
    targets_generation: u64,
    /// Whether every target owned its shard, for (targets generation, shard
    /// book version): it changes with neither alone, and checking costs a
    /// look-up per shard on every step.
    targets_owned: Option<(u64, u64, bool)>,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            cold: false,
            hot_until: now,
            known_version: None,
            watched: None,
            watch_at: now,
            watching: false,
            announce_pending: false,
            announcing: false,
            announce_not_before: now,
            announced_state: None,
            node_bytes: 0,
            shard_bytes: 0,
            targets_generation: 0,
            targets_owned: None,
        }
    }

    /// The targets were just computed again.
    pub(super) fn targets_replaced(&mut self) {
        self.targets_generation += 1;
    }

    pub(super) fn is_cold(&self) -> bool {
        self.cold
    }

    pub(super) fn wake_at(&self) -> impl Iterator<Item = Instant> {
        let announce = self.announce_pending.then_some(self.announce_not_before);
        [Some(self.watch_at), Some(self.hot_until), announce]
            .into_iter()
            .flatten()
    }

    /// Something changed that others should read.
    pub(super) fn announce(&mut self) {
        self.announce_pending = true;
    }

    /// Whether a successful heartbeat of `state` tells others something new.
    pub(super) fn beat_landed(&mut self, state: NodeState, registration: bool) {
        if registration || self.announced_state != Some(state) {
            self.announced_state = Some(state);
            self.announce_pending = true;
        }
    }

    /// Sizes the table by what reads returned (a Scan bills every item):
    /// the node items' bytes, as the machine sized them.
    pub(super) fn nodes_read(&mut self, node_bytes: u64) {
        self.node_bytes = node_bytes;
    }

    pub(super) fn shards_read<'a>(&mut self, shards: impl Iterator<Item = &'a ShardRecord>) {
        self.shard_bytes = shards.map(units::shard_item_bytes).sum();
    }

    pub(super) fn shard_bytes(&self) -> u64 {
        self.shard_bytes
    }

    fn table_bytes(&self) -> u64 {
        self.node_bytes + self.shard_bytes
    }
}

impl Machine {
    /// Reads turn hot now and stay so for at least the longest lease
    /// anyone runs: long enough to see a silent node expire.
    pub(super) fn heat(&mut self, now: Instant) {
        self.pace.hot_until = self.pace.hot_until.max(now + self.longest_ttl());
        if self.pace.cold {
            self.pace.cold = false;
            self.pace.watched = None;
            self.timers.scan = now;
            self.shards_stale = true;
        }
    }

    /// How long between two reads of the node items (and, cold, of the
    /// shard items).
    pub(super) fn node_read_interval(&self) -> Duration {
        if self.pace.cold {
            self.cold_refresh_interval()
        } else {
            hot_scan(self.cfg(), self.pace.node_bytes)
        }
    }

    pub(super) fn shard_read_interval(&self) -> Duration {
        if self.pace.cold {
            self.cold_refresh_interval()
        } else {
            hot_shard_refresh(self.cfg(), self.pace.shard_bytes)
        }
    }

    fn cold_refresh_interval(&self) -> Duration {
        cold_refresh(self.cfg(), self.pace.table_bytes())
    }

    /// Nothing under way, here or (as far as we know) anywhere.
    fn settled(&mut self, now: Instant) -> bool {
        self.nodes_seen
            && self.shards_seen
            && !self.shards_stale
            && self.mode == Mode::Active
            && self.lease.is_valid(now)
            && self.ops.is_empty()
            && self.evicting.is_empty()
            && self.retiring.is_empty()
            && self.rechecks.is_empty()
            && self.orphans == 0
            && self.work_lists.take.is_empty()
            && self.work_lists.give.is_empty()
            && self.work_lists.retire.is_empty()
            && self.in_flight.layouts.is_empty()
            && self.layout_retry_at.is_empty()
            && !self.pace.announce_pending
            && !self.target.is_empty()
            && self.targets_owned()
    }

    fn targets_owned(&mut self) -> bool {
        let key = (self.pace.targets_generation, self.book.version());
        if let Some((generation, version, owned)) = self.pace.targets_owned {
            if (generation, version) == key {
                return owned;
            }
        }
        let mut owner_of = self.book.owner_walk();
        let owned = self.target.iter().all(|(shard, node)| owner_of(*shard) == Some(node));
        self.pace.targets_owned = Some((key.0, key.1, owned));
        owned
    }

    /// While hot, a member whose counter has not moved for two of its
    /// heartbeats is in question: stay hot to see it expire or move.
    fn someone_stalled(&self, now: Instant) -> bool {
        self.membership.members.iter().any(|m| {
            m.id != *self.me()
                && self.nodes.get(&m.id).is_some_and(|n| {
                    let beat = n
                        .config
                        .as_ref()
                        .map_or(self.cfg().heartbeat_interval, |c| c.heartbeat_interval);
                    self.observer
                        .heartbeat_age(&m.id, now)
                        .is_some_and(|age| age >= beat * STALLED_AFTER_BEATS)
                })
        })
    }

    /// The node we watch while cold: the next in id order after us.
    fn successor(&self) -> Option<NodeId> {
        let live = self
            .membership
            .members
            .iter()
            .map(|m| &m.id)
            .filter(|id| *id != self.me());
        let after = live.clone().filter(|id| *id > self.me()).min();
        after.or_else(|| live.min()).cloned()
    }

    pub(super) fn plan_pace(&mut self, now: Instant, out: &mut Step) {
        if !self.cfg().cold_reads {
            // Hot for good, and announcing nothing: a hot fleet reads every
            // change in its scans, and one call more per change would only
            // slow a failover down. (A cold node in a fleet rolling onto
            // the cheap profile sees a hot node's changes at its next cold
            // refresh, or when its watched node stalls.)
            self.pace.announce_pending = false;
            return;
        }
        let settled = self.settled(now);
        if self.pace.cold && !settled {
            self.heat(now);
        } else if !self.pace.cold && settled && now >= self.pace.hot_until && !self.someone_stalled(now) {
            self.pace.cold = true;
            self.timers.scan = now + self.node_read_interval();
            self.timers.shard_refresh = now + self.shard_read_interval();
        }
        if !self.pace.watching && now >= self.pace.watch_at {
            self.pace.watching = true;
            self.pace.watch_at = now + self.cfg().watch_interval;
            let node = if self.pace.cold { self.successor() } else { None };
            out.effects.push(Effect::Watch(WatchRequest { node }));
        }
        self.plan_announce(now, out);
    }

    fn plan_announce(&mut self, now: Instant, out: &mut Step) {
        if self.pace.announce_pending && !self.pace.announcing && now >= self.pace.announce_not_before {
            self.pace.announce_pending = false;
            self.pace.announcing = true;
            out.effects.push(Effect::AnnounceChange);
        }
    }

    pub(super) fn watched(&mut self, result: StoreResult<Watch>, now: Instant, out: &mut Step) {
        self.pace.watching = false;
        let watch = match result {
            Ok(watch) => watch,
            Err(e) => return self.store_error(e, out),
        };
        if let Some(known) = self.pace.known_version {
            if known != watch.version {
                self.heat(now);
            }
            // The counter only grows: one that went back, or vanished,
            // belongs to a table restored or created anew.
            if watch.version < known {
                self.table_was_missing = true;
            }
        }
        self.pace.known_version = Some(watch.version);
        let Some(watched) = watch.node else {
            return;
        };
        if !self.pace.cold {
            return;
        }
        let record = match watched {
            Watched::Record(r) if r.state == NodeState::Active && r.evicted_by.is_none() => r,
            _ => return self.heat(now),
        };
        let beat = record
            .config
            .as_ref()
            .map_or(self.cfg().heartbeat_interval, |c| c.heartbeat_interval);
        match &self.pace.watched {
            Some(s) if s.node == record.info.id && s.inc == record.inc && s.hb == record.hb => {
                // The stamp is when an earlier read returned: the counter
                // has stood still at least since then.
                if now.saturating_since(s.since) >= beat * STALLED_AFTER_BEATS {
                    self.heat(now);
                }
            }
            _ => {
                self.pace.watched = Some(Sighting {
                    node: record.info.id.clone(),
                    inc: record.inc,
                    hb: record.hb,
                    since: now,
                });
            }
        }
    }

    pub(super) fn change_announced(&mut self, result: StoreResult<u64>, now: Instant, out: &mut Step) {
        self.pace.announcing = false;
        match result {
            Ok(version) => {
                // Ours was the only change since we last looked: no need to
                // read for it.
                if self.pace.known_version == Some(Some(version - 1)) {
                    self.pace.known_version = Some(Some(version));
                }
            }
            Err(e) => {
                self.pace.announce_pending = true;
                self.pace.announce_not_before = now + self.cfg().scan_interval * 4;
                self.store_error(e, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_scan_costs_a_block_per_interval_within_four_a_lease() {
        let cheap = LeaseConfig::CHEAP;
        let block = units::READ_UNIT_BYTES;
        assert_eq!(hot_scan(&cheap, 0), cheap.scan_interval);
        assert_eq!(
            hot_scan(&cheap, 2 * block),
            cheap.scan_interval,
            "32 nodes: as configured"
        );
        assert_eq!(hot_scan(&cheap, 19 * block), HOT_SCAN_PER_BLOCK * 19, "300 nodes");
        assert_eq!(
            hot_scan(&cheap, 62 * block),
            cheap.lease_ttl / 4,
            "1,000 nodes: four a lease"
        );
        let hot = LeaseConfig::HOT;
        assert_eq!(hot_scan(&hot, 19 * block), hot.lease_ttl / 4);
    }

    #[test]
    fn a_hot_refresh_of_the_shards_costs_a_block_per_interval_without_a_floor() {
        let cheap = LeaseConfig::CHEAP;
        let block = units::READ_UNIT_BYTES;
        assert_eq!(
            hot_shard_refresh(&cheap, 8 * block),
            cheap.shard_refresh_interval,
            "300 shards"
        );
        assert_eq!(
            hot_shard_refresh(&cheap, 250 * block),
            HOT_SCAN_PER_BLOCK * 250,
            "10,000 shards"
        );
    }
}
