//! The detector: members, their rounds, the relays run for others, and the
//! timers that drive them.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::config::{PeerConfig, INDIRECT_FANOUT, PROBES_PER_INTERVAL};
use super::message::{Message, Output, Verdict};
use super::probe::{DueTimers, Failure, Phase, Relay, Round, Timer};
use super::schedule::Schedule;
use crate::time::Instant;
use crate::types::{Incarnation, NodeId};

/// What this detector believes of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    Alive,
    Suspect,
    Dead,
    /// It said it is stopping: not probed, never condemned, until the
    /// member list shows another incarnation.
    Left,
}

impl PeerStatus {
    /// Whether rounds go to it (as target or intermediary).
    fn probed(self) -> bool {
        matches!(self, PeerStatus::Alive | PeerStatus::Suspect)
    }
}

/// A node that has heard no member for this many probe intervals is cut
/// off: with every member probing a few others each interval, a node in
/// touch hears someone several times an interval.
pub const CUT_OFF_AFTER_INTERVALS: u32 = 20;

/// Copies of a `Leave` sent to each member: one lost datagram must not
/// cost a restarting node its shards.
const LEAVE_COPIES: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub status: PeerStatus,
    /// The incarnation the member list holds.
    pub inc: Incarnation,
    /// Its haproxy health in its last ack; `None` before any ack.
    pub healthy: Option<bool>,
    pub last_ack_at: Option<Instant>,
    /// The other incarnation it last answered from, if it restarted.
    pub restarted_as: Option<Incarnation>,
    /// Failed rounds in a row.
    pub failed_rounds: u32,
}

#[derive(Clone, Debug)]
struct Member {
    state: PeerState,
    round: Option<Round>,
    /// Its rounds since it was last alive were started by another member's
    /// `Suspect`: a suspicion they confirm is not passed on again, or one
    /// death would cost every member a message to every other.
    hinted: bool,
}

impl Member {
    fn new(inc: Incarnation) -> Self {
        Self {
            hinted: false,
            state: PeerState {
                status: PeerStatus::Alive,
                inc,
                healthy: None,
                last_ack_at: None,
                restarted_as: None,
                failed_rounds: 0,
            },
            round: None,
        }
    }
}

/// A SWIM-style failure detector for one node; see the module header.
#[derive(Clone, Debug)]
pub struct Detector {
    me: NodeId,
    inc: Incarnation,
    config: PeerConfig,
    healthy: bool,
    members: BTreeMap<NodeId, Member>,
    schedule: Schedule,
    /// Round seq -> the member probed.
    rounds: BTreeMap<u64, NodeId>,
    /// Own seq -> the round of another member this node pings for.
    relays: BTreeMap<u64, Relay>,
    /// When each of `rounds` and `relays` is next due.
    due: DueTimers,
    next_seq: u64,
    next_probe_at: Option<Instant>,
    heard_at: Option<Instant>,
    rng: SmallRng,
}

impl Detector {
    pub fn new(me: NodeId, inc: Incarnation, config: PeerConfig, seed: u64) -> Self {
        Self {
            me,
            inc,
            config,
            healthy: true,
            members: BTreeMap::new(),
            schedule: Schedule::default(),
            rounds: BTreeMap::new(),
            relays: BTreeMap::new(),
            due: DueTimers::default(),
            next_seq: 1,
            next_probe_at: None,
            heard_at: None,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn incarnation(&self) -> Incarnation {
        self.inc
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The members and what this detector believes of each.
    pub fn members(&self) -> impl Iterator<Item = (&NodeId, &PeerState)> {
        self.members.iter().map(|(id, m)| (id, &m.state))
    }

    pub fn set_members(&mut self, members: impl IntoIterator<Item = (NodeId, Incarnation)>, now: Instant) {
        let new: BTreeMap<NodeId, Incarnation> = members.into_iter().filter(|(id, _)| *id != self.me).collect();
        let gone: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| new.get(*id) != Some(&m.state.inc))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(round) = self.members.remove(&id).and_then(|m| m.round) {
                self.rounds.remove(&round.seq);
                self.due.remove(Timer::Round(round.seq), round.deadline);
            }
            self.schedule.remove(&id);
        }
        for (id, inc) in new {
            if !self.members.contains_key(&id) {
                self.members.insert(id.clone(), Member::new(inc));
                self.schedule.add(id, &mut self.rng);
            }
        }
        if self.next_probe_at.is_none() && !self.members.is_empty() {
            // A random phase, so that detectors started together do not
            // probe in lockstep.
            let phase = self.config.probe_interval.mul_f64(self.rng.random::<f64>());
            self.next_probe_at = Some(now.saturating_add(phase));
        }
    }

    /// This process is stopping without draining (a restart): tells every
    /// member not to condemn it. Its lease still runs out if it never
    /// comes back.
    pub fn leave(&mut self) -> Output {
        let mut out = Output::default();
        let leave = Message::Leave {
            from: self.me.clone(),
            from_inc: self.inc,
        };
        for member in self.members.keys() {
            for _ in 0..LEAVE_COPIES {
                out.send(member, leave.clone());
            }
        }
        self.members.clear();
        self.rounds.clear();
        self.relays.clear();
        self.due.clear();
        self.next_probe_at = None;
        out
    }

    /// This node's haproxy health, told to whoever pings it.
    pub fn set_healthy(&mut self, healthy: bool) {
        self.healthy = healthy;
    }

    pub fn state_of(&self, node: &NodeId) -> Option<PeerState> {
        self.members.get(node).map(|m| m.state)
    }

    /// The last time a message from a member reached us: if that is long
    /// ago, it is this node that is cut off.
    pub fn heard_from_peers_since(&self) -> Option<Instant> {
        self.heard_at
    }

    /// Whether this node is cut off from its peers: it has two members or
    /// more, and no message from any of them has reached it yet, or none
    /// for [`CUT_OFF_AFTER_INTERVALS`] probe intervals (members probe one
    /// another several times an interval). A process that has heard nobody
    /// yet counts as cut off: it must not take shards its peers would
    /// evict it for again. With a single member, silence may as well be
    /// that member's crash.
    pub fn cut_off(&self, now: Instant) -> bool {
        if self.members.len() < 2 {
            return false;
        }
        self.heard_at
            .is_none_or(|heard| now.saturating_since(heard) > self.config.probe_interval * CUT_OFF_AFTER_INTERVALS)
    }

    /// The earliest time `tick` has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        debug_assert_eq!(
            self.due.len(),
            self.rounds.len() + self.relays.len(),
            "a round or relay without its timer, or a timer left behind"
        );
        self.next_probe_at.into_iter().chain(self.due.first()).min()
    }

    pub fn receive(&mut self, message: Message, now: Instant) -> Output {
        let mut out = Output::default();
        if self.members.contains_key(message.from()) {
            self.heard_at = Some(now);
        }
        match message {
            Message::Ping {
                seq,
                from,
                from_inc,
                to,
                ..
            } => {
                if to != self.me {
                    return out;
                }
                // Answered whatever `to_inc` says: a prober with a stale
                // list learns from our incarnation that we restarted.
                let ack = Message::Ack {
                    seq,
                    from: self.me.clone(),
                    from_inc: self.inc,
                    healthy: self.healthy,
                };
                out.send(&from, ack);
                // A ping is proof of life as good as an ack.
                if self.members.get(&from).is_some_and(|m| m.state.inc == from_inc) {
                    self.alive(&from, from_inc, None, now, false, &mut out);
                }
            }
            Message::Ack {
                seq,
                from,
                from_inc,
                healthy,
            } => {
                if self.relays.get(&seq).is_some_and(|r| r.target == from) {
                    if let Some(relay) = self.relays.remove(&seq) {
                        self.due.remove(Timer::Relay(seq), relay.next_wake());
                        let answer = Message::IndirectAck {
                            seq: relay.requester_seq,
                            from: self.me.clone(),
                            target: from.clone(),
                            target_inc: from_inc,
                            healthy,
                        };
                        out.send(&relay.requester, answer);
                    }
                }
                self.answered(seq, &from, from_inc, healthy, now, &mut out);
            }
            Message::PingReq {
                seq,
                from,
                target,
                target_inc,
            } => {
                if !self.members.contains_key(&from) {
                    return out;
                }
                if target == self.me {
                    let answer = Message::IndirectAck {
                        seq,
                        from: self.me.clone(),
                        target,
                        target_inc: self.inc,
                        healthy: self.healthy,
                    };
                    out.send(&from, answer);
                    return out;
                }
                let own_seq = self.seq();
                out.send(&target, self.ping(own_seq, &target, target_inc));
                let relay = Relay {
                    requester: from,
                    requester_seq: seq,
                    target,
                    target_inc,
                    repeat_at: Some(now.saturating_add(self.config.ack_timeout / 2)),
                    deadline: now.saturating_add(self.config.ack_timeout),
                };
                self.due.insert(Timer::Relay(own_seq), relay.next_wake());
                self.relays.insert(own_seq, relay);
            }
            Message::IndirectAck {
                seq,
                from,
                target,
                target_inc,
                healthy,
            } => {
                if self.members.contains_key(&from) {
                    self.answered(seq, &target, target_inc, healthy, now, &mut out);
                }
            }
            Message::Leave { from, from_inc } => {
                if let Some(member) = self.members.get_mut(&from).filter(|m| m.state.inc == from_inc) {
                    member.state.status = PeerStatus::Left;
                    if let Some(round) = member.round.take() {
                        self.rounds.remove(&round.seq);
                        self.due.remove(Timer::Round(round.seq), round.deadline);
                    }
                }
            }
            Message::Suspect { from, node, inc } => {
                if !self.members.contains_key(&from) {
                    return out;
                }
                let Some(member) = self.members.get_mut(&node).filter(|m| m.state.inc == inc) else {
                    return out;
                };
                // Everyone has been told: a round of ours already open
                // need not tell them again.
                member.hinted = true;
                if member.state.status == PeerStatus::Alive && member.round.is_none() {
                    self.start_round(&node, now, &mut out);
                }
            }
            Message::Nack { seq, from, target } => {
                if !self.members.contains_key(&from) {
                    return out;
                }
                if self.rounds.get(&seq) == Some(&target) {
                    if let Some(round) = self.members.get_mut(&target).and_then(|m| m.round.as_mut()) {
                        if round.phase == Phase::Indirect {
                            round.nacks += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// Fires every timer due at `now`: relays' repeats and nacks, rounds'
    /// phase ends, and the interval's new rounds.
    pub fn tick(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        self.tick_relays(now, &mut out);
        self.tick_rounds(now, &mut out);
        if let Some(at) = self.next_probe_at.filter(|at| *at <= now) {
            let next = at.saturating_add(self.config.probe_interval);
            // After a stall (a driver that slept), resume the rhythm rather
            // than fire every missed interval at once.
            self.next_probe_at = Some(if next <= now {
                now.saturating_add(self.config.probe_interval)
            } else {
                next
            });
            let count = self.members.len().min(PROBES_PER_INTERVAL);
            let members = &self.members;
            let targets = self.schedule.take(count, &mut self.rng, |id| {
                members
                    .get(id)
                    .is_some_and(|m| m.round.is_none() && m.state.status.probed())
            });
            for target in targets {
                self.start_round(&target, now, &mut out);
            }
        }
        out
    }

    fn tick_relays(&mut self, now: Instant, out: &mut Output) {
        let mut due: Vec<u64> = self
            .due
            .due(now)
            .filter_map(|t| match t {
                Timer::Relay(seq) => Some(seq),
                Timer::Round(_) => None,
            })
            .collect();
        // In seq order, as they always were handled.
        due.sort_unstable();
        for seq in due {
            let Some(relay) = self.relays.get_mut(&seq) else {
                continue;
            };
            if relay.deadline <= now {
                let Some(relay) = self.relays.remove(&seq) else {
                    continue;
                };
                self.due.remove(Timer::Relay(seq), relay.next_wake());
                let nack = Message::Nack {
                    seq: relay.requester_seq,
                    from: self.me.clone(),
                    target: relay.target,
                };
                out.send(&relay.requester, nack);
            } else {
                let was_due = relay.next_wake();
                relay.repeat_at = None;
                self.due.reschedule(Timer::Relay(seq), was_due, relay.next_wake());
                let (target, target_inc) = (relay.target.clone(), relay.target_inc);
                out.send(&target, self.ping(seq, &target, target_inc));
            }
        }
    }

    fn tick_rounds(&mut self, now: Instant, out: &mut Output) {
        let mut due: Vec<NodeId> = self
            .due
            .due(now)
            .filter_map(|t| match t {
                Timer::Round(seq) => self.rounds.get(&seq).cloned(),
                Timer::Relay(_) => None,
            })
            .collect();
        // In member order, as they always were handled.
        due.sort();
        for target in due {
            let Some(member) = self.members.get_mut(&target) else {
                continue;
            };
            let Some(round) = member.round.as_mut() else {
                continue;
            };
            match round.phase {
                Phase::Direct => {
                    let was_due = round.deadline;
                    round.go_indirect(now, self.config.indirect_timeout);
                    self.due.reschedule(Timer::Round(round.seq), was_due, round.deadline);
                    let (seq, target_inc) = (round.seq, round.target_inc);
                    self.ask_others(seq, &target, target_inc, out);
                }
                Phase::Indirect => {
                    let Some(round) = member.round.take() else {
                        continue;
                    };
                    self.rounds.remove(&round.seq);
                    self.due.remove(Timer::Round(round.seq), round.deadline);
                    self.failed(&target, round.failure(), now, out);
                }
            }
        }
    }

    /// The indirect phase: others ping the target for us, and we ping it
    /// once more ourselves.
    fn ask_others(&mut self, seq: u64, target: &NodeId, target_inc: Incarnation, out: &mut Output) {
        // Borrowed, and only the chosen copied: a large fleet's detector
        // has a thousand members.
        let helpers: Vec<&NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| *id != target && m.state.status.probed())
            .map(|(id, _)| id)
            .collect();
        let chosen: Vec<NodeId> = helpers
            .choose_multiple(&mut self.rng, INDIRECT_FANOUT)
            .map(|id| (*id).clone())
            .collect();
        for helper in &chosen {
            let request = Message::PingReq {
                seq,
                from: self.me.clone(),
                target: target.clone(),
                target_inc,
            };
            out.send(helper, request);
        }
        out.send(target, self.ping(seq, target, target_inc));
    }

    fn start_round(&mut self, target: &NodeId, now: Instant, out: &mut Output) {
        let seq = self.seq();
        let Some(member) = self.members.get_mut(target) else {
            return;
        };
        let round = Round::start(seq, member.state.inc, now, self.config.ack_timeout);
        let ping = Message::Ping {
            seq,
            from: self.me.clone(),
            from_inc: self.inc,
            to: target.clone(),
            to_inc: round.target_inc,
        };
        self.due.insert(Timer::Round(seq), round.deadline);
        member.round = Some(round);
        self.rounds.insert(seq, target.clone());
        out.send(target, ping);
    }

    /// An ack (direct or relayed) from `from` at `inc` for round `seq`.
    fn answered(&mut self, seq: u64, from: &NodeId, inc: Incarnation, healthy: bool, now: Instant, out: &mut Output) {
        if self.rounds.get(&seq) != Some(from) {
            return; // stale: a round already over, or not ours
        }
        self.rounds.remove(&seq);
        let Some(member) = self.members.get_mut(from) else {
            return;
        };
        if let Some(round) = member.round.take() {
            self.due.remove(Timer::Round(round.seq), round.deadline);
        }
        self.alive(from, inc, Some(healthy), now, true, out);
    }

    /// Evidence that `node` runs at `inc`: clears suspicion if `inc` is the
    /// member's, reports a restart if not. A dead member stays reported
    /// dead until the member list changes it.
    fn alive(
        &mut self,
        node: &NodeId,
        inc: Incarnation,
        healthy: Option<bool>,
        now: Instant,
        ack: bool,
        out: &mut Output,
    ) {
        let Some(member) = self.members.get_mut(node) else {
            return;
        };
        let state = &mut member.state;
        if ack {
            state.last_ack_at = Some(now);
            state.healthy = healthy.or(state.healthy);
        }
        if matches!(state.status, PeerStatus::Dead | PeerStatus::Left) {
            return;
        }
        let was_suspect = state.status == PeerStatus::Suspect;
        member.hinted = false;
        state.status = PeerStatus::Alive;
        state.failed_rounds = 0;
        if inc != state.inc {
            // Never condemn the old process from this: the node is up, and
            // the lease store will tell which incarnation holds what.
            if state.restarted_as != Some(inc) {
                state.restarted_as = Some(inc);
                out.verdicts.push(Verdict::Restarted {
                    node: node.clone(),
                    inc,
                });
            }
        } else if was_suspect {
            out.verdicts.push(Verdict::Alive {
                node: node.clone(),
                inc,
            });
        }
    }

    fn failed(&mut self, target: &NodeId, failure: Failure, now: Instant, out: &mut Output) {
        let confirm_rounds = self.config.confirm_rounds;
        let Some(member) = self.members.get_mut(target) else {
            return;
        };
        let state = &mut member.state;
        let inc = state.inc;
        let mut tell_others = false;
        if failure == Failure::Confirmed {
            state.failed_rounds += 1;
            if state.failed_rounds >= confirm_rounds {
                state.status = PeerStatus::Dead;
                out.verdicts.push(Verdict::Dead {
                    node: target.clone(),
                    inc,
                });
                return;
            }
            if state.status == PeerStatus::Alive {
                state.status = PeerStatus::Suspect;
                out.verdicts.push(Verdict::Suspect {
                    node: target.clone(),
                    inc,
                });
                if !member.hinted {
                    tell_others = true;
                }
            }
        }
        // A suspect is probed again at once, not when the schedule comes
        // round to it: confirmation should take rounds, not intervals.
        if state.status == PeerStatus::Suspect {
            self.start_round(target, now, out);
        }
        if tell_others {
            self.tell_others(target, inc, out);
        }
    }

    /// Passes a suspicion our own schedule found to every other member
    /// (see [`Message::Suspect`]).
    fn tell_others(&self, suspect: &NodeId, inc: Incarnation, out: &mut Output) {
        let hint = Message::Suspect {
            from: self.me.clone(),
            node: suspect.clone(),
            inc,
        };
        for (id, member) in &self.members {
            if id != suspect && member.state.status.probed() {
                out.send(id, hint.clone());
            }
        }
    }

    fn ping(&self, seq: u64, to: &NodeId, to_inc: Incarnation) -> Message {
        Message::Ping {
            seq,
            from: self.me.clone(),
            from_inc: self.inc,
            to: to.clone(),
            to_inc,
        }
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}
