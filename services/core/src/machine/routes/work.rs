//! Route work: every route change this node wants made, one item per shard
//! and table with its own retry state, and the health of every route table
//! from the calls made against it.
//!
//! Retries go by the class of the error ([`RouteErrorClass`]): a throttled
//! account pauses every call of this node, a transient error backs off that
//! one item, a permanent one (no such table, access denied, the route
//! limit) backs off the whole table, slowly. A retried item has lost its
//! failover priority: it queues behind first attempts.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::machine::Priority;
use crate::routes::{RouteChange, RouteErrorClass};
use crate::time::Instant;
use crate::types::{EniId, Epoch, NodeId, RouteTableId, ShardId};

const TRANSIENT_BASE: Duration = Duration::from_millis(500);
const TRANSIENT_CAP: Duration = Duration::from_secs(10);
/// A table that refuses our calls for a reason that will not pass soon is
/// asked again at most this often, at first...
const PERMANENT_BASE: Duration = Duration::from_secs(10);
/// ...and at least this often, so a table created or permitted again is
/// back in use within half a minute.
pub const PERMANENT_CAP: Duration = Duration::from_secs(30);
pub(super) const THROTTLED_BASE: Duration = Duration::from_secs(1);
pub(super) const THROTTLED_CAP: Duration = Duration::from_secs(20);

/// Why a route change is wanted, and what it must still satisfy when it
/// goes out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A route of a shard we hold, to our ENI: fenced by our lease and a
    /// fresh confirmation.
    Own,
    /// After a hand-off, the shard's route to the recipient: only while the
    /// recipient still owns it at the hand-off's epoch, and before `until`.
    Push { to: NodeId, until: Instant },
    /// The route of a retired shard, deleted: only before `until`.
    Retire { until: Instant },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Work {
    pub(crate) epoch: Epoch,
    /// Where the route should point; `None`: it should go.
    pub(crate) target: Option<EniId>,
    pub(crate) purpose: Purpose,
    pub(crate) priority: Priority,
    /// Whether the table has the route, as far as we know: picks
    /// `CreateRoute` or `ReplaceRoute`.
    pub(crate) exists: bool,
    pub(crate) backoff: Backoff,
    pub(crate) not_before: Instant,
    pub(crate) in_flight: bool,
    /// A repair of drift (a route found elsewhere) goes out only with a
    /// confirmation sent after the drift was seen: the route may be
    /// elsewhere because the shard is, and an older confirmation could
    /// predate that.
    pub(crate) confirm_after: Option<Instant>,
}

impl Work {
    pub(crate) fn new(epoch: Epoch, target: Option<EniId>, purpose: Purpose, priority: Priority, exists: bool) -> Self {
        Self {
            epoch,
            target,
            purpose,
            priority,
            exists,
            backoff: Backoff::new(TRANSIENT_BASE, TRANSIENT_CAP),
            not_before: Instant::ZERO,
            in_flight: false,
            confirm_after: None,
        }
    }

    pub(crate) fn change(&self, shard: ShardId, table: &RouteTableId) -> RouteChange {
        let (table, vip) = (table.clone(), shard.vip());
        match &self.target {
            None => RouteChange::Delete { table, vip },
            Some(eni) if self.exists => RouteChange::Replace {
                table,
                vip,
                eni: eni.clone(),
            },
            Some(eni) => RouteChange::Create {
                table,
                vip,
                eni: eni.clone(),
            },
        }
    }

    /// Whether a finished call was this item's (and not an older one's that
    /// the item has since replaced).
    pub(crate) fn made(&self, epoch: Epoch, change: &RouteChange) -> bool {
        self.epoch == epoch && self.target.as_ref() == change.eni()
    }
}

/// What the calls made against one route table say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableHealth {
    /// The last call against it failed: how, and what EC2 said.
    pub failing: Option<(RouteErrorClass, String)>,
    /// Send time of the last successful read-back.
    pub described_at: Option<Instant>,
    pub(crate) backoff: Backoff,
    pub(crate) not_before: Instant,
    pub(crate) describing: bool,
}

impl Default for TableHealth {
    fn default() -> Self {
        Self {
            failing: None,
            described_at: None,
            backoff: Backoff::new(PERMANENT_BASE, PERMANENT_CAP),
            not_before: Instant::ZERO,
            describing: false,
        }
    }
}

impl TableHealth {
    /// Consecutive failures of calls against it.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    pub(crate) fn ready(&self, now: Instant) -> bool {
        now >= self.not_before
    }

    pub(crate) fn succeeded(&mut self) {
        self.failing = None;
        self.backoff.succeeded();
        self.not_before = Instant::ZERO;
    }

    /// Records a failure; a permanent one backs the table off. Calls that
    /// were already under way when the backoff began fail too: they do not
    /// make it longer.
    pub(crate) fn failed(&mut self, class: RouteErrorClass, detail: String, now: Instant, seed: u64) {
        // A table that is down stays down until a call succeeds: a probe
        // that times out (cut off at its deadline) says nothing new, and
        // must not let every queued call through.
        if self.is_down() && class != RouteErrorClass::Permanent {
            return;
        }
        self.failing = Some((class, detail));
        if class == RouteErrorClass::Permanent && now >= self.not_before {
            self.backoff.failed();
            self.not_before = now + self.backoff.delay(seed);
        }
    }

    /// Whether its calls fail for a reason retrying soon will not fix.
    pub fn is_down(&self) -> bool {
        matches!(self.failing, Some((RouteErrorClass::Permanent, _)))
    }
}
