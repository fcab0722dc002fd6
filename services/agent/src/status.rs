//! The agent's published view of itself and the fleet: what readiness
//! checks and the dashboard read. The driver records after every step; the
//! readers only ever see a consistent [`Status`] through a `watch` channel,
//! and never call AWS themselves.

use std::collections::VecDeque;

use tokio::sync::watch;
use vipfleet_core::machine::{Event, Machine, Mode};
use vipfleet_core::{Epoch, Instant, NodeRecord, ShardId, ShardRecord};

/// Recent events kept for the dashboard.
pub const RECENT_EVENTS: usize = 200;

#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The machine clock at the last step.
    pub now: Instant,
    pub mode: Option<Mode>,
    pub lease_valid: bool,
    pub lease_deadline: Option<Instant>,
    pub held: Vec<(ShardId, Epoch)>,
    pub nodes: Vec<NodeRecord>,
    pub shards: Vec<ShardRecord>,
    /// `(when, what)`, newest last.
    pub events: VecDeque<(Instant, Event)>,
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

    pub fn record(&self, machine: &Machine, events: &[Event], now: Instant) {
        self.tx.send_modify(|s| {
            s.now = now;
            s.mode = Some(machine.mode());
            s.lease_valid = machine.lease_valid(now);
            s.lease_deadline = machine.lease_deadline();
            s.held = machine.held().collect();
            s.nodes = machine.nodes().values().cloned().collect();
            s.shards = machine.shards().values().cloned().collect();
            for event in events {
                if matches!(event, Event::StoreError { .. } | Event::RoutesWritten { .. }) {
                    continue;
                }
                if s.events.len() == RECENT_EVENTS {
                    s.events.pop_front();
                }
                s.events.push_back((now, event.clone()));
            }
        });
    }
}
