//! The peer probes' network side: the core's `Detector` decides, this
//! module carries its messages over UDP.
//!
//! ```text
//!   Detector ─ Output.send ─> Transport::send ─ wire::encode ─ auth::wrap (seal) ─ book: NodeId -> ip:port ─> UDP
//!   UDP ─> Transport::recv ─ auth::unwrap (tag, freshness, once) ─ wire::decode (version, size) ─> Detector::receive
//! ```
//!
//! - [`wire`]: the message format, `{"v": 1, "m": <Message>}` as JSON, and
//!   the checks a received message passes before the detector sees it.
//! - [`seal`]: the fleet keys and the sealed frame (an HMAC-SHA256 tag,
//!   the key's id, the send time and a nonce), as pure functions.
//! - [`replay`]: freshness and once-only, and why the detector's own
//!   `seq` matching does not make them unnecessary.
//! - [`auth`]: sealed (`peers.key_file`) or not (`peers.insecure`).
//! - [`book`]: where each member listens, from the node items the lease
//!   machine read (`info.addr` and the announced `peer_port`).
//! - [`transport`]: the socket; sends are fire-and-forget, anything that
//!   fails or does not decode is counted (`vipfleet_peer_datagrams_total`)
//!   and dropped, never fatal: the detector treats a lost datagram like any
//!   other.
//!
//! The driver owns a transport and a detector together (`driver::peers`).

pub mod auth;
pub mod book;
pub mod replay;
pub mod seal;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

pub use auth::PeerAuth;
pub use book::AddressBook;
pub use seal::{KeyRing, PeerKey};
pub use transport::Transport;
