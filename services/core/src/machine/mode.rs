//! What this node should be, from what it is told: the drain request, the
//! haproxy health, the source/destination check, a stop. The machine derives
//! its [`Mode`] here, so the policy runs in the simulation like every other
//! rule.
//!
//! | drain asked | health    | src/dst check off | mode        |
//! |-------------|-----------|-------------------|-------------|
//! | yes         | any       | any               | `Draining`  |
//! | no          | unhealthy | any               | `Unhealthy` |
//! | no          | unknown   | any               | `Starting`  |
//! | no          | any       | not confirmed     | `Starting`  |
//! | no          | healthy   | confirmed         | `Active`    |
//!
//! and a node cut off from every peer it should hear (their probes stopped
//! reaching it) is `Starting` too, whatever else holds.
//!
//! `Starting` keeps what the node holds and takes nothing: a restarted
//! agent re-adopts its shards without moving them, but a node whose haproxy
//! was never seen healthy, or whose VIP traffic the VPC would drop, claims
//! no VIP. Nor does a node its peers cannot reach: they would find it dead
//! and evict it again, and its shards would move back and forth.

use crate::types::NodeState;

/// What the haproxy checks say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Health {
    /// No verdict yet.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

/// What the operator, the health check and the ENI make of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Starting,
    Active,
    Draining,
    Unhealthy,
}

impl Mode {
    pub fn state(self) -> NodeState {
        match self {
            Mode::Starting => NodeState::Starting,
            Mode::Active => NodeState::Active,
            Mode::Draining => NodeState::Draining,
            Mode::Unhealthy => NodeState::Unhealthy,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.state().as_str()
    }
}

/// The inputs the mode is derived from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub drain: bool,
    pub health: Health,
    pub source_dest_check_off: bool,
    pub cut_off_from_peers: bool,
}

impl Readiness {
    pub fn mode(&self) -> Mode {
        if self.drain {
            Mode::Draining
        } else if self.health == Health::Unhealthy {
            Mode::Unhealthy
        } else if self.health == Health::Unknown || !self.source_dest_check_off || self.cut_off_from_peers {
            Mode::Starting
        } else {
            Mode::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_table() {
        let r = |drain, health, sdc| {
            Readiness {
                drain,
                health,
                source_dest_check_off: sdc,
                cut_off_from_peers: false,
            }
            .mode()
        };
        assert_eq!(Readiness::default().mode(), Mode::Starting);
        assert_eq!(r(true, Health::Healthy, true), Mode::Draining);
        assert_eq!(r(true, Health::Unknown, false), Mode::Draining);
        assert_eq!(r(false, Health::Unhealthy, true), Mode::Unhealthy);
        assert_eq!(r(false, Health::Unhealthy, false), Mode::Unhealthy);
        assert_eq!(r(false, Health::Unknown, true), Mode::Starting);
        assert_eq!(r(false, Health::Healthy, false), Mode::Starting);
        assert_eq!(r(false, Health::Healthy, true), Mode::Active);
        let cut_off = Readiness {
            health: Health::Healthy,
            source_dest_check_off: true,
            cut_off_from_peers: true,
            drain: false,
        };
        assert_eq!(cut_off.mode(), Mode::Starting);
        assert_eq!(Readiness { drain: true, ..cut_off }.mode(), Mode::Draining);
    }
}
