//! The agent's published view of itself and the fleet: what readiness
//! checks and the dashboard read. The driver records after every step; the
//! readers only ever see a consistent [`Status`] through a `watch` channel,
//! and never call AWS themselves.
//!
//! Recording stays cheap (copies of what the machine already holds, plus a
//! diff of shard epochs to notice moves); anything derived, such as quotas
//! or per-route verdicts, is computed by the reader when it is asked for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;
use vipfleet_core::machine::{Event, ExitReason, Machine, Mode, NodeSetup, Readiness, RouteCheck, TableHealth};
use vipfleet_core::membership::Membership;
use vipfleet_core::peers::PeerState;
use vipfleet_core::routes::RouteError;
use vipfleet_core::store::Skipped;
use vipfleet_core::{Epoch, Instant, NodeId, NodeRecord, RouteTableId, ShardId, ShardRecord};

/// Recent events kept for the dashboard.
pub const RECENT_EVENTS: usize = 200;
/// How far back shard moves are counted ("moves in the last hour").
pub const MOVES_WINDOW: Duration = Duration::from_secs(3600);
/// Moves remembered at most, so a flapping fleet cannot grow the status
/// without bound within the window.
pub const MOVES_KEPT: usize = 10_000;

/// Something worth showing an operator, with the machine instant it was
/// recorded at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recent {
    pub at: Instant,
    pub what: Happening,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happening {
    /// An event of the lease machine.
    Machine(Event),
    /// This node's mode changed (drain, undrain, health).
    Mode { from: Option<Mode>, to: Mode },
}

#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The machine clock at the last step.
    pub now: Instant,
    /// The runtime clock at the last step: how old this snapshot is, and
    /// the bridge from machine instants to "seconds ago". `None` until the
    /// driver's first step.
    pub recorded_at: Option<TokioInstant>,
    /// Who this node is and the fleet's static configuration, shared rather
    /// than copied on every step.
    pub setup: Option<Arc<NodeSetup>>,
    pub mode: Option<Mode>,
    /// What the mode is derived from: drain, health, source/dest check.
    pub readiness: Readiness,
    /// The machine stopped, and why.
    pub exited: Option<ExitReason>,
    pub lease_valid: bool,
    pub lease_deadline: Option<Instant>,
    /// The fleet is settled and this node only watches the change counter
    /// and one peer (`Machine::reads_cold`): what it shows of the others is
    /// as old as its last full read.
    pub reads_cold: bool,
    pub held: Vec<(ShardId, Epoch)>,
    /// The node items as last read, ourselves included.
    pub nodes: Vec<NodeRecord>,
    /// How long each node's counter has stood still, as this observer saw
    /// it at `now`.
    pub heartbeat_ages: BTreeMap<NodeId, Duration>,
    /// Nodes this observer judges gone (counter still, or item missing,
    /// for a lease).
    pub gone: BTreeSet<NodeId>,
    /// Nodes whose item exists but cannot be read.
    pub unreadable: BTreeSet<NodeId>,
    /// Nodes whose item has vanished from the table (shown from their last
    /// record until they are gone).
    pub missing: BTreeSet<NodeId>,
    /// Lease table items the last reads skipped.
    pub skipped: Vec<Skipped>,
    /// Who is in the fleet, what they agree on, the tables they maintain:
    /// the machine's own view, as of its last plan.
    pub membership: Membership,
    /// Where the machine's last plan wanted every shard, and the quotas.
    pub target: BTreeMap<ShardId, NodeId>,
    pub quota: BTreeMap<NodeId, usize>,
    /// Every shard item this node knows exists.
    pub shards: Vec<ShardRecord>,
    /// When this observer last saw each shard change owner (its epoch rise).
    pub shard_changed_at: BTreeMap<ShardId, Instant>,
    /// Owner changes this observer saw within [`MOVES_WINDOW`], oldest first.
    pub moves: VecDeque<(Instant, ShardId)>,
    /// The route read-back's verdict for the shards we hold, per table, and
    /// when it was made.
    pub route_checks: BTreeMap<(ShardId, RouteTableId), (RouteCheck, Instant)>,
    /// What the calls against each route table say about it.
    pub table_health: BTreeMap<RouteTableId, TableHealth>,
    /// Newest last.
    pub events: VecDeque<Recent>,
    /// What this node's peer detector believes of each member (empty with
    /// peer probes off).
    pub peers: Vec<(NodeId, PeerState)>,
}

impl Status {
    /// Owner changes seen within [`MOVES_WINDOW`] before `now`.
    pub fn recent_moves(&self, now: Instant) -> usize {
        self.moves
            .iter()
            .filter(|(at, _)| now.saturating_since(*at) < MOVES_WINDOW)
            .count()
    }
}

/// The writing side, owned by the driver.
pub struct StatusBoard {
    tx: watch::Sender<Status>,
}

impl StatusBoard {
    pub fn new() -> (Self, watch::Receiver<Status>) {
        let (tx, rx) = watch::channel(Status::default());
        (Self { tx }, rx)
    }

    /// The peer detector's members, published beside the machine's state
    /// (the detector changes between machine steps, with every ack).
    pub fn record_peers(&self, peers: impl Iterator<Item = (NodeId, PeerState)>) {
        let peers: Vec<_> = peers.collect();
        self.tx.send_if_modified(|s| {
            let changed = s.peers != peers;
            if changed {
                s.peers = peers;
            }
            changed
        });
    }

    pub fn record(&self, machine: &Machine, events: &[Event], now: Instant) {
        let recorded_at = TokioInstant::now();
        self.tx.send_modify(|s| {
            s.now = now;
            s.recorded_at = Some(recorded_at);
            if s.setup.is_none() {
                s.setup = Some(Arc::new(machine.setup().clone()));
            }
            let mode = machine.mode();
            if s.mode != Some(mode) {
                let from = s.mode;
                push_event(s, now, Happening::Mode { from, to: mode });
                s.mode = Some(mode);
            }
            s.readiness = machine.readiness();
            s.exited = machine.exited();
            s.lease_valid = machine.lease_valid(now);
            s.lease_deadline = machine.lease_deadline();
            s.reads_cold = machine.reads_cold();
            s.held = machine.held().collect();
            // A node whose item cannot be read shows as unreadable, not as
            // the last record the machine keeps of it.
            s.nodes = machine
                .nodes()
                .values()
                .filter(|n| !machine.unreadable_nodes().contains(&n.info.id))
                .cloned()
                .collect();
            s.heartbeat_ages = machine
                .nodes()
                .keys()
                .filter_map(|id| machine.observer().heartbeat_age(id, now).map(|age| (id.clone(), age)))
                .collect();
            s.gone = machine.membership().gone.keys().cloned().collect();
            s.unreadable = machine.unreadable_nodes().clone();
            s.missing = machine
                .nodes()
                .keys()
                .filter(|id| machine.observer().is_missing(id))
                .cloned()
                .collect();
            s.skipped = machine.skipped().cloned().collect();
            if s.membership != *machine.membership() {
                s.membership = machine.membership().clone();
            }
            if s.target != *machine.target() {
                s.target = machine.target().clone();
                s.quota = machine.quota().clone();
            }
            note_moves(s, machine, now);
            s.shards = machine.shard_records().cloned().collect();
            s.route_checks = machine.route_checks().clone();
            if s.table_health != *machine.table_health() {
                s.table_health = machine.table_health().clone();
            }
            for event in events {
                // Errors repeat at every retry: the dashboard shows them as
                // state (store and table health), not as a stream. A route
                // change that was made or never sent is routine.
                let routine = matches!(
                    event,
                    Event::StoreError { .. }
                        | Event::RouteError { .. }
                        | Event::RouteChanged {
                            error: None | Some(RouteError::Fenced),
                            ..
                        }
                );
                if routine {
                    continue;
                }
                push_event(s, now, Happening::Machine(event.clone()));
            }
        });
    }
}

fn push_event(s: &mut Status, at: Instant, what: Happening) {
    if s.events.len() == RECENT_EVENTS {
        s.events.pop_front();
    }
    s.events.push_back(Recent { at, what });
}

/// Compares the shards of the previous record with the machine's: a higher
/// epoch is a change of owner. A shard seen for the first time is not a
/// move (we just learned of it).
fn note_moves(s: &mut Status, machine: &Machine, now: Instant) {
    let before: BTreeMap<ShardId, Epoch> = s.shards.iter().map(|r| (r.id, r.epoch)).collect();
    for record in machine.shard_records() {
        if before.get(&record.id).is_some_and(|e| record.epoch > *e) {
            s.shard_changed_at.insert(record.id, now);
            s.moves.push_back((now, record.id));
        }
    }
    while s
        .moves
        .front()
        .is_some_and(|(at, _)| now.saturating_since(*at) >= MOVES_WINDOW)
        || s.moves.len() > MOVES_KEPT
    {
        s.moves.pop_front();
    }
}
