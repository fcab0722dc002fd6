//! Peer failure detection: which members of the fleet have crashed, found
//! out in a few hundred milliseconds by probing them directly, without
//! condemning anyone for lost packets or a partial partition.
//!
//! Membership (who is in the fleet, at which incarnation) comes from the
//! lease store, which is also the arbiter: this is SWIM's failure detector
//! without its gossip, save one hint (below). A confirmed death is a
//! [`Verdict`] the lease machine then checks against the store.
//!
//! ## Layout, in the order data flows
//!
//! - [`config`]: the timings, their defaults and rules, and the worst-case
//!   detection time they imply.
//! - [`message`]: the wire [`Message`]s, and the [`Output`] of every step:
//!   messages to send and [`Verdict`]s.
//! - `schedule`: which members to probe next (round-robin through a seeded
//!   random permutation, reshuffled every pass).
//! - `probe`: one probe round (direct phase, then indirect phase), and one
//!   relay this node runs for another's round.
//! - [`detector`]: the [`Detector`] that ties them together; the driver
//!   feeds it received messages (`receive`) and timer firings (`tick` at
//!   `next_wake`), and sends what it returns.
//!
//! ## The protocol
//!
//! Every `probe_interval`, a detector starts rounds against up to
//! [`PROBES_PER_INTERVAL`] members. A round pings the member; without an
//! ack within `ack_timeout`, it asks up to [`INDIRECT_FANOUT`] others to
//! ping it (and pings it once more itself). Each of those pings the target
//! twice within its own `ack_timeout`, then relays the ack or sends a nack.
//! Without any ack by `indirect_timeout`, the round has failed.
//!
//! Only failures with a nack count (Lifeguard's insight): a nack proves that
//! our network works and that someone else cannot reach the target either.
//! A detector cut off from everyone gets no nacks and condemns nobody. A
//! counted failure makes the member a suspect and starts another round at
//! once; `confirm_rounds` in a row make it dead, reported once. An ack at
//! the probed incarnation clears suspicion; an ack from another incarnation
//! means the node restarted, never that it died.
//!
//! A suspicion found by a detector's own schedule is passed on: it sends
//! [`Message::Suspect`] to every member, and each starts a round against
//! the suspect at once. Receivers judge by their own rounds only, and do
//! not pass it on again, so one crash costs a few broadcasts.
//!
//! ## What the bound promises
//!
//! [`PeerConfig::detection_bound`] holds when some live member probes the
//! crashed one within the first interval after the crash: always in fleets
//! of up to `PROBES_PER_INTERVAL + 1` nodes (everyone probes everyone every
//! interval). In larger fleets each detector reaches a given member once per
//! pass of `members / PROBES_PER_INTERVAL` intervals, at a place in its pass
//! its own seed chose; with n − 1 probers, the chance that none does so in
//! the first interval is about (1 − 3/(n − 1))^(n − 1), e.g. 3 % at ten
//! nodes, and each later interval shrinks it again by as much. Once one
//! detector suspects it, the hint brings every other within two of its
//! own rounds.

pub mod config;
pub mod detector;
pub mod message;
mod probe;
mod schedule;

#[cfg(test)]
mod tests;

pub use config::{PeerConfig, PeerConfigError, INDIRECT_FANOUT, PROBES_PER_INTERVAL};
pub use detector::{Detector, PeerState, PeerStatus};
pub use message::{Message, Outgoing, Output, Verdict};
