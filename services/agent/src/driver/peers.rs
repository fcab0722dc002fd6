//! The driver's peer probes: a core [`Detector`] and its UDP [`Transport`],
//! kept in step with the lease machine.
//!
//! ```text
//!   Machine::step ─> refresh: members (peer_members) + addresses (nodes)
//!   datagram ─> Detector::receive ─┐
//!   next_wake ─> Detector::tick ───┴─> Output: send ─> Transport
//!                                             verdicts ─> log, metrics, Dead ─> Input::PeerDead
//! ```
//!
//! The detector only accuses; the machine checks a `PeerDead` against the
//! lease store before it evicts anyone.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};
use vipfleet_core::machine::{Health, Input, Machine};
use vipfleet_core::peers::{Detector, Message, Output, PeerConfig, PeerState, Verdict};
use vipfleet_core::{Incarnation, Instant, NodeId};

use crate::dashboard::metrics::Metrics;
use crate::peers::{AddressBook, Transport};

/// How long an orderly exit waits for its `Leave` datagrams to go out.
pub const LEAVE_SEND_TIMEOUT: Duration = Duration::from_millis(200);

pub struct PeerLink {
    detector: Detector,
    transport: Transport,
    /// The member list the detector was last given, to skip no-op updates.
    members: Vec<(NodeId, Incarnation)>,
    /// What the machine was last told of whether the peers' probes reach
    /// us (`None`: nothing yet).
    cut_off: Option<bool>,
    metrics: Arc<Metrics>,
}

impl PeerLink {
    pub fn new(transport: Transport, detector: Detector, metrics: Arc<Metrics>) -> Self {
        Self {
            detector,
            transport,
            members: Vec::new(),
            cut_off: None,
            metrics,
        }
    }

    /// A detector for `me` at `inc`, seeded from the OS.
    pub fn detector(me: NodeId, inc: Incarnation, config: PeerConfig) -> Detector {
        use rand::{Rng, SeedableRng};
        let seed = rand::rngs::SmallRng::from_os_rng().random();
        Detector::new(me, inc, config, seed)
    }

    /// Gives the detector the members and addresses the machine knows now.
    pub fn refresh(&mut self, machine: &Machine, now: Instant) {
        let members = machine.peer_members().map(|(id, inc)| (id.clone(), inc)).collect();
        self.set_members(members, AddressBook::from_nodes(machine.nodes().values()), now);
    }

    pub fn set_members(&mut self, members: Vec<(NodeId, Incarnation)>, book: AddressBook, now: Instant) {
        self.transport.set_book(book);
        if members != self.members {
            self.detector.set_members(members.iter().cloned(), now);
            self.members = members;
            self.publish_members();
        }
    }

    pub fn set_health(&mut self, health: Health) {
        // Unknown counts as healthy: the ack says "alive", and nobody acts
        // on a peer's health before its own checks have spoken.
        self.detector.set_healthy(health != Health::Unhealthy);
    }

    /// The next datagram that decodes (cancel-safe).
    pub async fn recv(&mut self) -> Message {
        self.transport.recv().await
    }

    pub fn receive(&mut self, message: Message, now: Instant) -> Vec<Input> {
        let out = self.detector.receive(message, now);
        self.handle(out, now)
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Input> {
        let out = self.detector.tick(now);
        self.handle(out, now)
    }

    pub fn next_wake(&self) -> Option<Instant> {
        self.detector.next_wake()
    }

    /// Every member and what the detector believes of it, for the status.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, PeerState)> + '_ {
        self.detector.members().map(|(id, state)| (id.clone(), *state))
    }

    pub fn state(&self) -> &Detector {
        &self.detector
    }

    /// An orderly exit: tells every member not to condemn this incarnation,
    /// and waits (briefly) for the datagrams to go.
    pub async fn leave(&mut self) {
        let out = self.detector.leave();
        self.transport.send_within(&out.send, LEAVE_SEND_TIMEOUT).await;
        self.members.clear();
        self.publish_members();
    }

    /// The socket, for the next incarnation's link.
    pub fn into_transport(self) -> Transport {
        self.transport
    }

    fn handle(&mut self, out: Output, now: Instant) -> Vec<Input> {
        self.transport.send(&out.send);
        let mut inputs = Vec::new();
        for verdict in &out.verdicts {
            self.metrics.observe_peer_verdict(verdict);
            match verdict {
                Verdict::Suspect { node, inc } => {
                    info!(%node, inc = inc.0, "peers: suspect (a probe round failed, and another node could not reach it either)")
                }
                Verdict::Alive { node, inc } => info!(%node, inc = inc.0, "peers: suspect answered, alive"),
                Verdict::Restarted { node, inc } => {
                    debug!(%node, inc = inc.0, "peers: answered as another incarnation (restarted)")
                }
                Verdict::Dead { node, inc } => {
                    warn!(%node, inc = inc.0, "peers: dead (rounds in a row failed); checking the lease store");
                    inputs.push(Input::PeerDead {
                        node: node.clone(),
                        inc: *inc,
                    });
                }
            }
        }
        if !out.verdicts.is_empty() {
            self.publish_members();
        }
        let cut_off = self.detector.cut_off(now);
        if self.cut_off != Some(cut_off) {
            if cut_off {
                warn!("peers: no probe of any peer reaches this node; it takes no shards until they do");
            } else if self.cut_off.is_some() {
                info!("peers: probes reach this node again");
            }
            self.cut_off = Some(cut_off);
            inputs.push(Input::PeersCutOff(cut_off));
        }
        inputs
    }

    fn publish_members(&self) {
        self.metrics
            .set_peer_members(self.detector.members().map(|(_, state)| &state.status));
    }
}
