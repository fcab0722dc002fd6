//! The peer probes' network side: the core's `Detector` decides, this
//! module carries its messages over UDP.
//!
//! ```text
//!   Detector ─ Output.send ─> Transport::send ─ book: NodeId -> ip:port ─> UDP
//!   UDP ─> Transport::recv ─ wire::decode (version, size) ─> Detector::receive
//! ```
//!
//! - [`wire`]: the datagram format, `{"v": 1, "m": <Message>}` as JSON, and
//!   the checks a received datagram passes before the detector sees it.
//! - [`book`]: where each member listens, from the node items the lease
//!   machine read (`info.addr` and the announced `peer_port`).
//! - [`transport`]: the socket; sends are fire-and-forget, anything that
//!   fails or does not decode is counted (`vipfleet_peer_datagrams_total`)
//!   and dropped, never fatal: the detector treats a lost datagram like any
//!   other.
//!
//! The driver owns a transport and a detector together (`driver::peers`).

pub mod book;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

pub use book::AddressBook;
pub use transport::Transport;
