//! The simulation's peer network: a [`Detector`] per node, datagrams that
//! take a VPC's sub-millisecond latency, and the faults of a network
//! between nodes (links cut both ways, a node cut off from every peer,
//! packet loss for everyone).
//!
//! The world asks it what to do with each datagram and timer; verdicts come
//! back to the world, which steps the node's machine with them.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::{SimConfig, What, World};
use crate::machine::{Input, Machine};
use crate::peers::{Detector, Message, Output, PeerConfig, Verdict};
use crate::time::Instant;
use crate::types::{Incarnation, NodeId};

/// One way, node to node, in one VPC.
const DATAGRAM_LATENCY_MIN: Duration = Duration::from_micros(200);
const DATAGRAM_LATENCY_MAX: Duration = Duration::from_millis(2);

#[derive(Default)]
pub(crate) struct PeerNet {
    config: Option<PeerConfig>,
    /// By node index; `None` while the node's agent is not running.
    detectors: Vec<Option<Detector>>,
    index: BTreeMap<NodeId, usize>,
    /// The member list each detector was last given...
    members: Vec<Vec<(NodeId, Incarnation)>>,
    /// ...and the version of its machine's list it came from.
    members_version: Vec<Option<u64>>,
    /// Links cut (both ways), until when.
    cuts: Vec<(usize, usize, Instant)>,
    /// Nodes cut off from every peer, until when.
    isolated: Vec<(usize, Instant)>,
    /// A share of every datagram is lost: (percent, until).
    loss: Option<(u8, Instant)>,
    /// Datagrams sent and lost, for the report.
    pub(crate) sent: u64,
    pub(crate) lost: u64,
}

impl PeerNet {
    pub(crate) fn new(config: Option<PeerConfig>) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// A new agent process on node `index`: a fresh detector.
    pub(crate) fn start(&mut self, index: usize, id: &NodeId, inc: Incarnation, seed: u64) {
        let Some(config) = self.config else {
            return;
        };
        if self.detectors.len() <= index {
            self.detectors.resize_with(index + 1, || None);
            self.members.resize_with(index + 1, Vec::new);
            self.members_version.resize(index + 1, None);
        }
        self.index.insert(id.clone(), index);
        self.detectors[index] = Some(Detector::new(id.clone(), inc, config, seed));
        self.members[index].clear();
        self.members_version[index] = None;
    }

    pub(crate) fn detector(&mut self, index: usize) -> Option<&mut Detector> {
        self.detectors.get_mut(index)?.as_mut()
    }

    /// Gives node `index`'s detector the members its machine knows, if they
    /// changed.
    pub(crate) fn set_members(&mut self, index: usize, machine: &Machine, now: Instant) {
        let Some(Some(detector)) = self.detectors.get_mut(index) else {
            return;
        };
        // Called after every step of every node: the list is looked at only
        // when the machine says it may have changed, and compared before it
        // is copied.
        let version = machine.peer_members_version();
        if self.members_version[index] == Some(version) {
            return;
        }
        self.members_version[index] = Some(version);
        let members: Vec<(&NodeId, Incarnation)> = machine.peer_members().collect();
        let known = self.members[index].iter().map(|(id, inc)| (id, *inc));
        if members.iter().copied().eq(known) {
            return;
        }
        let members: Vec<(NodeId, Incarnation)> = members.into_iter().map(|(id, inc)| (id.clone(), inc)).collect();
        detector.set_members(members.iter().cloned(), now);
        self.members[index] = members;
    }

    pub(crate) fn cut(&mut self, a: usize, b: usize, until: Instant) {
        self.cuts.push((a, b, until));
    }

    pub(crate) fn isolate(&mut self, node: usize, until: Instant) {
        self.isolated.push((node, until));
    }

    pub(crate) fn set_loss(&mut self, percent: u8, until: Instant) {
        self.loss = Some((percent, until));
    }

    /// The node a datagram from `from` to `to` reaches at once
    /// ([`SimConfig::prompt_datagrams`]): `None` if their link is cut, an
    /// end is isolated, or datagrams are being lost.
    pub(crate) fn prompt_route(&self, from: usize, to: &NodeId, now: Instant) -> Option<usize> {
        let to = *self.index.get(to)?;
        let lossy = self.loss.is_some_and(|(_, until)| now < until);
        if lossy || self.severed(from, to, now) {
            return None;
        }
        Some(to)
    }

    /// Whether the link between `from` and `to` is cut, or an end isolated.
    fn severed(&self, from: usize, to: usize, now: Instant) -> bool {
        let cut = self
            .cuts
            .iter()
            .any(|&(a, b, until)| now < until && ((a, b) == (from, to) || (b, a) == (from, to)));
        let isolated = self
            .isolated
            .iter()
            .any(|&(n, until)| now < until && (n == from || n == to));
        cut || isolated
    }

    /// Where a datagram from `from` goes and when it arrives; `None` if it
    /// is lost on the way.
    pub(crate) fn route(
        &mut self,
        from: usize,
        to: &NodeId,
        now: Instant,
        rng: &mut SmallRng,
    ) -> Option<(usize, Instant)> {
        let to = *self.index.get(to)?;
        self.sent += 1;
        let cut = self.severed(from, to, now);
        let lost = self
            .loss
            .is_some_and(|(percent, until)| now < until && rng.random_range(0..100) < percent);
        if cut || lost {
            self.lost += 1;
            return None;
        }
        let (lo, hi) = (
            DATAGRAM_LATENCY_MIN.as_micros() as u64,
            DATAGRAM_LATENCY_MAX.as_micros() as u64,
        );
        Some((to, now + Duration::from_micros(rng.random_range(lo..hi))))
    }

    pub(crate) fn receive(&mut self, index: usize, message: Message, now: Instant) -> Output {
        self.detector(index)
            .map(|d| d.receive(message, now))
            .unwrap_or_default()
    }

    pub(crate) fn tick(&mut self, index: usize, now: Instant) -> Output {
        self.detector(index).map(|d| d.tick(now)).unwrap_or_default()
    }

    pub(crate) fn next_wake(&self, index: usize) -> Option<Instant> {
        self.detectors.get(index)?.as_ref()?.next_wake()
    }
}

impl World {
    /// Sends what a detector wants sent, hands its verdicts to its machine,
    /// and queues its next timer.
    pub(super) fn peer_output(&mut self, config: &SimConfig, node: usize, out: Output) {
        let now = self.now;
        for outgoing in out.send {
            if config.prompt_datagrams {
                let prompt = self.peers.prompt_route(node, &outgoing.to, now);
                if let Some(to) = prompt.filter(|&to| self.nodes[to].is_live()) {
                    self.peers.sent += 1;
                    let out = self.peers.receive(to, outgoing.message, now);
                    self.peer_output(config, to, out);
                    continue;
                }
            }
            if let Some((to, at)) = self.peers.route(node, &outgoing.to, now, &mut self.rng) {
                let message = outgoing.message;
                self.schedule(at, What::Datagram { to, message });
            }
        }
        for verdict in out.verdicts {
            if let Some(trace) = &mut self.trace {
                trace.push(format!("{now} {} peers: {verdict:?}", self.nodes[node].id()));
            }
            if let Verdict::Dead { node: dead, inc } = verdict {
                self.step(config, node, Input::PeerDead { node: dead, inc });
            }
        }
        let cut_off = self.peers.detector(node).is_some_and(|d| d.cut_off(now));
        if cut_off != self.nodes[node].cut_off && self.nodes[node].is_live() {
            self.nodes[node].cut_off = cut_off;
            self.step(config, node, Input::PeersCutOff(cut_off));
        }
        self.schedule_peer_wake(node);
    }

    pub(super) fn schedule_peer_wake(&mut self, node: usize) {
        let Some(wake) = self.peers.next_wake(node) else {
            return;
        };
        let wake = wake.max(self.now + Duration::from_micros(100));
        if self.nodes[node].peer_wake_at.is_none_or(|w| wake < w || w <= self.now) {
            self.nodes[node].peer_wake_at = Some(wake);
            self.schedule(wake, What::PeerWake(node));
        }
    }
}
