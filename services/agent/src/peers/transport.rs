//! The UDP socket of the peer probes. Sends never wait on the network (a
//! full buffer drops the datagram, as the network may), except for the
//! `Leave` at exit, which is worth a short wait. Every datagram is counted
//! by direction; failures are logged at debug only (a dead peer makes
//! sends fail by design, and the detector is the one to judge it).
//! Datagrams that fail authentication are counted by reason
//! (`vipfleet_peer_messages_rejected_total`) and logged at warn, at most
//! every few seconds: a forger must not be able to flood the journal.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, warn};
use vipfleet_core::peers::{Message, Outgoing};

use super::auth::{unix_now_ms, PeerAuth};
use super::book::AddressBook;
use super::seal::Rejection;
use super::wire::{self, WireError, MAX_DATAGRAM_BYTES};
use crate::dashboard::metrics::{Metrics, DATAGRAM_DROPPED, DATAGRAM_RECEIVED, DATAGRAM_SENT};
use crate::driver::Throttled;

/// Receive buffer: room for one byte past the limit, so that an oversized
/// datagram shows as such instead of being cut to size silently.
const RECEIVE_BUFFER_BYTES: usize = MAX_DATAGRAM_BYTES + 1;
/// Pause after a failed receive, so that an error that repeats cannot spin
/// the loop.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);

pub struct Transport {
    socket: UdpSocket,
    book: AddressBook,
    metrics: Arc<Metrics>,
    auth: PeerAuth,
    rejections: Throttled,
    buf: Box<[u8]>,
}

impl Transport {
    /// Binds `addr`; a port already taken fails start-up.
    pub async fn bind(addr: SocketAddr, auth: PeerAuth, metrics: Arc<Metrics>) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(Self {
            socket,
            book: AddressBook::default(),
            metrics,
            auth,
            rejections: Throttled::default(),
            buf: vec![0; RECEIVE_BUFFER_BYTES].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn set_book(&mut self, book: AddressBook) {
        self.book = book;
    }

    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// Sends each message without waiting: what cannot go now is dropped.
    pub fn send(&self, outgoing: &[Outgoing]) {
        for out in outgoing {
            if let Some((addr, bytes)) = self.prepare(out) {
                match self.socket.try_send_to(&bytes, addr) {
                    Ok(_) => self.metrics.peer_datagram(DATAGRAM_SENT),
                    Err(e) => self.dropped(out, &format!("send to {addr}: {e}")),
                }
            }
        }
    }

    /// Sends each message, waiting up to `limit` in all (the `Leave` at
    /// exit: worth a moment, never worth a hang).
    pub async fn send_within(&self, outgoing: &[Outgoing], limit: Duration) {
        let all = async {
            for out in outgoing {
                if let Some((addr, bytes)) = self.prepare(out) {
                    match self.socket.send_to(&bytes, addr).await {
                        Ok(_) => self.metrics.peer_datagram(DATAGRAM_SENT),
                        Err(e) => self.dropped(out, &format!("send to {addr}: {e}")),
                    }
                }
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            debug!(?limit, "peers: not every datagram went out in time");
        }
    }

    fn prepare(&self, out: &Outgoing) -> Option<(SocketAddr, Vec<u8>)> {
        let Some(addr) = self.book.get(&out.to) else {
            self.dropped(out, "no address known");
            return None;
        };
        match wire::encode(&out.message) {
            Ok(bytes) => Some((addr, self.auth.wrap(bytes, unix_now_ms()))),
            Err(e) => {
                self.dropped(out, &e.to_string());
                None
            }
        }
    }

    fn dropped(&self, out: &Outgoing, why: &str) {
        self.metrics.peer_datagram(DATAGRAM_DROPPED);
        debug!(to = %out.to, "peers: datagram not sent: {why}");
    }

    /// The next message that passes authentication and decodes; others
    /// are counted and skipped. Cancel-safe (a `select!` branch): nothing
    /// is lost but the wait.
    pub async fn recv(&mut self) -> Message {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(got) => got,
                Err(e) => {
                    // ICMP port unreachable from a dead peer and the like:
                    // the socket itself goes on working.
                    debug!("peers: receive failed: {e}");
                    self.metrics.peer_datagram(DATAGRAM_DROPPED);
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    continue;
                }
            };
            if len > MAX_DATAGRAM_BYTES {
                self.metrics.peer_datagram(DATAGRAM_DROPPED);
                debug!(%from, "peers: datagram dropped: {}", WireError::Oversized(len));
                continue;
            }
            let message = match self.auth.unwrap(&self.buf[..len], unix_now_ms()) {
                Ok(message) => message,
                Err(rejection) => {
                    self.rejected(rejection, from);
                    continue;
                }
            };
            match wire::decode(message) {
                Ok(message) => {
                    self.metrics.peer_datagram(DATAGRAM_RECEIVED);
                    return message;
                }
                Err(e) => {
                    self.metrics.peer_datagram(DATAGRAM_DROPPED);
                    debug!(%from, "peers: datagram dropped: {e}");
                }
            }
        }
    }

    fn rejected(&mut self, rejection: Rejection, from: SocketAddr) {
        self.metrics.peer_datagram(DATAGRAM_DROPPED);
        self.metrics.peer_message_rejected(rejection.reason());
        if let Some(suppressed) = self.rejections.admit() {
            warn!(
                %from,
                reason = rejection.reason(),
                suppressed,
                "peers: datagram refused: {rejection}"
            );
        }
    }
}
