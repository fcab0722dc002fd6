//! Whether this node's peer datagrams are sealed: under the fleet's keys
//! ([`seal`](super::seal), fresh and once only per [`replay`](super::replay)),
//! or, with `peers.insecure = true`, not at all. A node of one kind
//! refuses every datagram of the other: a fleet is all sealed or all not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};

use super::replay::ReplayGuard;
use super::seal::{KeyError, KeyRing, PeerKey, Rejection, FRAME};
use crate::config::PeerAuthConfig;

#[derive(Debug)]
pub enum PeerAuth {
    Sealed(Box<Sealed>),
    /// No key: datagrams go as they are, and anyone who can reach the
    /// port can speak for any node.
    Insecure,
}

#[derive(Debug)]
pub struct Sealed {
    keys: KeyRing,
    replay: ReplayGuard,
    /// The next datagram's nonce: a counter from a random start, so a
    /// restarted process does not repeat its predecessor's.
    nonce: AtomicU64,
}

impl PeerAuth {
    /// Reads the key files `config` names (once, at start).
    pub fn load(config: &PeerAuthConfig) -> Result<Self, KeyError> {
        match config {
            PeerAuthConfig::Keys {
                key_file,
                previous_key_file,
            } => {
                let current = PeerKey::from_file(key_file)?;
                let previous = previous_key_file.as_deref().map(PeerKey::from_file).transpose()?;
                Ok(Self::sealed(KeyRing { current, previous }))
            }
            PeerAuthConfig::Insecure => Ok(PeerAuth::Insecure),
        }
    }

    pub fn sealed(keys: KeyRing) -> Self {
        let start = rand::rngs::SmallRng::from_os_rng().random();
        PeerAuth::Sealed(Box::new(Sealed {
            keys,
            replay: ReplayGuard::default(),
            nonce: AtomicU64::new(start),
        }))
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, PeerAuth::Sealed(_))
    }

    /// `message` as it goes on the wire at `now_ms` (unix ms).
    pub fn wrap(&self, message: Vec<u8>, now_ms: u64) -> Vec<u8> {
        match self {
            PeerAuth::Sealed(sealed) => {
                let nonce = sealed.nonce.fetch_add(1, Ordering::Relaxed);
                sealed.keys.seal(now_ms, nonce, &message)
            }
            PeerAuth::Insecure => message,
        }
    }

    /// The message in `datagram` received at `now_ms`, if it passes.
    pub fn unwrap<'a>(&mut self, datagram: &'a [u8], now_ms: u64) -> Result<&'a [u8], Rejection> {
        match self {
            PeerAuth::Sealed(sealed) => {
                let opened = sealed.keys.open(datagram)?;
                sealed.replay.admit(&opened, now_ms)?;
                Ok(opened.message)
            }
            PeerAuth::Insecure => match datagram {
                [FRAME, id, ..] => Err(Rejection::UnknownKey(*id)),
                _ => Ok(datagram),
            },
        }
    }
}

/// The wall clock in unix ms (0 before 1970: every sealed datagram is then
/// stale, which the rejection counter shows).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::seal::{PeerKey, MIN_KEY_BYTES};
    use super::*;
    use crate::secret::Secret;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn sealed(key: &str) -> PeerAuth {
        let secret = Secret::parse(key, MIN_KEY_BYTES).unwrap();
        PeerAuth::sealed(KeyRing {
            current: PeerKey::new(&secret).unwrap(),
            previous: None,
        })
    }

    #[test]
    fn sealed_nodes_hear_each_other_once_and_refuse_the_insecure() {
        let key = "fleet-key-0123456789abcdef0123456789abcdef";
        let (a, mut b) = (sealed(key), sealed(key));
        let first = a.wrap(b"hello".to_vec(), NOW_MS);
        let second = a.wrap(b"hello".to_vec(), NOW_MS);
        assert_ne!(first, second, "every datagram has its own nonce");
        assert_eq!(b.unwrap(&first, NOW_MS + 3), Ok(&b"hello"[..]));
        assert_eq!(b.unwrap(&second, NOW_MS + 3), Ok(&b"hello"[..]));
        assert_eq!(b.unwrap(&first, NOW_MS + 4), Err(Rejection::Replayed));
        let mut fresh = sealed(key);
        assert!(matches!(
            fresh.unwrap(&first, NOW_MS + 60_000),
            Err(Rejection::Stale(60_000))
        ));
        let plain = PeerAuth::Insecure.wrap(b"hello".to_vec(), NOW_MS);
        assert_eq!(plain, b"hello");
        assert_eq!(b.unwrap(&plain, NOW_MS), Err(Rejection::Unsealed));
        assert!(matches!(
            PeerAuth::Insecure.unwrap(&first, NOW_MS),
            Err(Rejection::UnknownKey(_))
        ));
        assert_eq!(PeerAuth::Insecure.unwrap(b"{}", NOW_MS), Ok(&b"{}"[..]));
    }

    #[test]
    fn nodes_with_different_keys_do_not_hear_each_other() {
        let a = sealed("fleet-a-key-0123456789abcdef0123456789abcdef");
        let mut b = sealed("fleet-b-key-0123456789abcdef0123456789abcdef");
        let from_a = a.wrap(b"hello".to_vec(), NOW_MS);
        assert!(matches!(
            b.unwrap(&from_a, NOW_MS),
            Err(Rejection::BadTag | Rejection::UnknownKey(_))
        ));
    }
}
