//! What detectors say to each other, and what a step hands back to the
//! driver: messages to send and verdicts about members.

use serde::{Deserialize, Serialize};

use crate::types::{Incarnation, NodeId};

/// A detector's wire messages. `seq` always names the round (or relay) of
/// the detector that will read the answer, so answers need no other state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "Are you there?" `to_inc` is the incarnation the prober's member list
    /// holds; the target answers whatever its own is.
    Ping {
        seq: u64,
        from: NodeId,
        from_inc: Incarnation,
        to: NodeId,
        to_inc: Incarnation,
    },
    /// The answer to a `Ping`. `healthy` is the sender's haproxy health: an
    /// unhealthy node is still alive.
    Ack {
        seq: u64,
        from: NodeId,
        from_inc: Incarnation,
        healthy: bool,
    },
    /// "I cannot reach `target`; please ping it for me."
    PingReq {
        seq: u64,
        from: NodeId,
        target: NodeId,
        target_inc: Incarnation,
    },
    /// An intermediary got `target`'s ack for the requester's round `seq`.
    /// It passes on the incarnation and health the target answered with, so
    /// an indirect ack can also reveal a restart.
    IndirectAck {
        seq: u64,
        from: NodeId,
        target: NodeId,
        target_inc: Incarnation,
        healthy: bool,
    },
    /// An intermediary could not reach `target` either: proof that the
    /// requester's network works and that it is not alone in missing acks.
    Nack { seq: u64, from: NodeId, target: NodeId },
    /// "This process is stopping (a restart, an upgrade): do not condemn
    /// it." Its lease, not the probes, decides whether it is gone.
    Leave { from: NodeId, from_inc: Incarnation },
    /// "My round against `node` at `inc` failed, and someone else could not
    /// reach it either: probe it yourself now." Sent to every member by a
    /// detector whose own schedule found the suspect, so that in a large
    /// fleet the members that will take its shards start their rounds
    /// within a round trip, not when their schedules come round to it. A
    /// hint, never evidence: the receiver condemns only on its own rounds.
    Suspect {
        from: NodeId,
        node: NodeId,
        inc: Incarnation,
    },
}

impl Message {
    /// Who sent it.
    pub fn from(&self) -> &NodeId {
        match self {
            Message::Ping { from, .. }
            | Message::Ack { from, .. }
            | Message::PingReq { from, .. }
            | Message::IndirectAck { from, .. }
            | Message::Nack { from, .. }
            | Message::Leave { from, .. }
            | Message::Suspect { from, .. } => from,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub message: Message,
}

/// What the detector concluded about a member. Each is reported once, when
/// it becomes true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A round failed and someone else could not reach it either.
    Suspect { node: NodeId, inc: Incarnation },
    /// `confirm_rounds` rounds in a row failed: to be checked against the
    /// lease store, which is the arbiter.
    Dead { node: NodeId, inc: Incarnation },
    /// A suspect answered: suspicion cleared.
    Alive { node: NodeId, inc: Incarnation },
    /// The member answered from another incarnation than the member list
    /// says (`inc` is the one it answered with): its old process is gone,
    /// but the node is not.
    Restarted { node: NodeId, inc: Incarnation },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub send: Vec<Outgoing>,
    pub verdicts: Vec<Verdict>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.verdicts.is_empty()
    }

    pub(super) fn send(&mut self, to: &NodeId, message: Message) {
        self.send.push(Outgoing {
            to: to.clone(),
            message,
        });
    }
}
