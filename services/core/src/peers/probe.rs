//! The state of one probe round against a member, and of one relay this
//! node runs for another's round.
//!
//! A round has two phases: a direct ping waits `ack_timeout`; then the
//! indirect phase (ping requests to others, and a second direct ping, since
//! a lost packet is likelier than a dead node) waits `indirect_timeout`.
//! Sending each ping twice is cheap and is what keeps a lossy network from
//! looking like a crash: a round fails only when every path lost a packet.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::time::Instant;
use crate::types::{Incarnation, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Direct,
    Indirect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Round {
    pub seq: u64,
    /// The incarnation the member list held when the round started: only an
    /// ack from it clears suspicion.
    pub target_inc: Incarnation,
    pub phase: Phase,
    /// When the current phase ends.
    pub deadline: Instant,
    /// Intermediaries that could not reach the target either.
    pub nacks: u32,
}

impl Round {
    pub fn start(seq: u64, target_inc: Incarnation, now: Instant, ack_timeout: Duration) -> Self {
        Self {
            seq,
            target_inc,
            phase: Phase::Direct,
            deadline: now.saturating_add(ack_timeout),
            nacks: 0,
        }
    }

    pub fn go_indirect(&mut self, now: Instant, indirect_timeout: Duration) {
        self.phase = Phase::Indirect;
        self.deadline = now.saturating_add(indirect_timeout);
    }
}

/// How a round ended without an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Someone else could not reach the target either: counts.
    Confirmed,
    /// Nobody answered at all, not even with a nack: perhaps it is us who
    /// are cut off, so this proves nothing about the target.
    Inconclusive,
}

impl Round {
    pub fn failure(&self) -> Failure {
        if self.nacks > 0 {
            Failure::Confirmed
        } else {
            Failure::Inconclusive
        }
    }
}

/// A ping this node sends on behalf of another member's round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Relay {
    pub requester: NodeId,
    pub requester_seq: u64,
    pub target: NodeId,
    pub target_inc: Incarnation,
    /// When to ping the target a second time if it has not answered.
    pub repeat_at: Option<Instant>,
    /// When to give up and nack.
    pub deadline: Instant,
}

impl Relay {
    pub fn next_wake(&self) -> Instant {
        self.repeat_at.map_or(self.deadline, |at| at.min(self.deadline))
    }
}

/// A timer of the detector's: a round's phase end, or a relay's repeat or
/// deadline, by seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Round(u64),
    Relay(u64),
}

/// The due times of every open round and relay, in order. In an AZ's loss
/// a detector has hundreds of rounds open and a datagram arrives every few
/// microseconds; each asks for the next wake, and this answers without
/// visiting every round.
#[derive(Clone, Debug, Default)]
pub(super) struct DueTimers {
    at: BTreeSet<(Instant, Timer)>,
}

impl DueTimers {
    pub fn insert(&mut self, timer: Timer, at: Instant) {
        self.at.insert((at, timer));
    }

    pub fn remove(&mut self, timer: Timer, at: Instant) {
        self.at.remove(&(at, timer));
    }

    pub fn reschedule(&mut self, timer: Timer, from: Instant, to: Instant) {
        self.remove(timer, from);
        self.insert(timer, to);
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn first(&self) -> Option<Instant> {
        self.at.first().map(|(at, _)| *at)
    }

    /// The timers due by `now`, earliest first.
    pub fn due(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        self.at.iter().take_while(move |(at, _)| *at <= now).map(|(_, t)| *t)
    }

    pub fn clear(&mut self) {
        self.at.clear();
    }
}
