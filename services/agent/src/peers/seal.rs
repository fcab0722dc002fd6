//! Sealing peer datagrams: an HMAC-SHA256 tag under the fleet's shared key,
//! so that only holders of the key can speak to a detector. Pure functions
//! over bytes; the clock and the socket are the transport's.
//!
//! ```text
//!   byte 0       1        2..10             10..18   18..n-32   n-32..n
//!        FRAME   key id   sent at (unix ms) nonce    message    HMAC-SHA256(key, bytes 0..n-32)
//! ```
//!
//! - `FRAME` is not `{`, the first byte of an unsealed (JSON) datagram, so
//!   an agent without a key is told apart from a forger.
//! - The key id is derived from the key itself (see [`PeerKey::id`]):
//!   operators never keep ids and keys in step. A receiver tries each of
//!   its keys (the current one and, during a rotation, the previous one)
//!   whose id matches; an unknown id costs no HMAC at all.
//! - The send time and the nonce (a counter from a random start, unique
//!   per sender) are covered by the tag; [`super::replay`] uses them to
//!   refuse old and repeated datagrams.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::secret::{FileError, Secret};

/// Shorter keys are refused at start-up: 32 bytes of key is what
/// HMAC-SHA256 can use (`openssl rand -hex 32` gives 64).
pub const MIN_KEY_BYTES: usize = 32;
/// The first byte of every sealed datagram (`{` starts an unsealed one).
pub const FRAME: u8 = 0xA5;
pub const HEADER_BYTES: usize = 18;
pub const TAG_BYTES: usize = 32;
/// What sealing adds to a message.
pub const SEAL_OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;
/// Domain separation of the key id from the datagrams' tags.
const KEY_ID_LABEL: &[u8] = b"vipfleet peer key id";

type HmacSha256 = Hmac<Sha256>;

/// Why a received datagram was refused; [`Rejection::reason`] is the
/// metric's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("not sealed (an agent without peers.key_file, or not a peer datagram)")]
    Unsealed,
    #[error("shorter than a sealed datagram")]
    Truncated,
    #[error("sealed under key id {0}, which is none of ours (another fleet, or a rotation not rolled out)")]
    UnknownKey(u8),
    #[error("its tag does not verify (forged or corrupted)")]
    BadTag,
    #[error("sent {0} ms away from our clock (an old datagram replayed, or clocks apart)")]
    Stale(i128),
    #[error("already received (replayed)")]
    Replayed,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Unsealed => "unsealed",
            Rejection::Truncated => "truncated",
            Rejection::UnknownKey(_) => "unknown_key",
            Rejection::BadTag => "bad_tag",
            Rejection::Stale(_) => "stale",
            Rejection::Replayed => "replayed",
        }
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("the fleet key: {0}")]
    File(#[from] FileError),
    /// HMAC takes keys of any length, so this is not expected; it is an
    /// error rather than a panic or a weaker key all the same.
    #[error("the fleet key cannot key HMAC-SHA256")]
    Unusable,
}

/// One fleet key, ready to sign. `Debug` shows its id only.
#[derive(Clone)]
pub struct PeerKey {
    id: u8,
    mac: HmacSha256,
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey(id {}, <redacted>)", self.id)
    }
}

impl PeerKey {
    pub fn new(secret: &Secret) -> Result<Self, KeyError> {
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret.expose()).map_err(|_| KeyError::Unusable)?;
        let mut id_mac = mac.clone();
        id_mac.update(KEY_ID_LABEL);
        let id = id_mac.finalize().into_bytes()[0];
        Ok(Self { id, mac })
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::new(&Secret::from_file(path, MIN_KEY_BYTES)?)
    }

    /// The first byte of the key's HMAC over a fixed label: the same on
    /// every node with the key, and it tells nothing useful about the key.
    /// Two keys share an id one time in 256; a receiver then simply tries
    /// both.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn tag(&self, bytes: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac
    }
}

/// The keys a node signs and verifies with: it signs with `current` and
/// accepts either. A rotation: stage the new key as `previous` everywhere,
/// then swap the two everywhere, then drop the old one (docs/operations.md).
#[derive(Clone, Debug)]
pub struct KeyRing {
    pub current: PeerKey,
    pub previous: Option<PeerKey>,
}

/// A datagram whose tag verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub sent_at_ms: u64,
    pub nonce: u64,
    pub tag: &'a [u8],
    pub message: &'a [u8],
}

impl KeyRing {
    /// `message` in a frame sealed with the current key.
    pub fn seal(&self, sent_at_ms: u64, nonce: u64, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + SEAL_OVERHEAD_BYTES);
        out.push(FRAME);
        out.push(self.current.id);
        out.extend_from_slice(&sent_at_ms.to_be_bytes());
        out.extend_from_slice(&nonce.to_be_bytes());
        out.extend_from_slice(message);
        let tag = self.current.tag(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// The frame's fields, if a key of ours made its tag (compared in
    /// constant time).
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<Opened<'a>, Rejection> {
        if datagram.first() != Some(&FRAME) {
            return Err(Rejection::Unsealed);
        }
        if datagram.len() < SEAL_OVERHEAD_BYTES {
            return Err(Rejection::Truncated);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_BYTES);
        let id = signed[1];
        let mut keys = std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|k| k.id == id)
            .peekable();
        if keys.peek().is_none() {
            return Err(Rejection::UnknownKey(id));
        }
        if !keys.any(|k| k.tag(signed).verify_slice(tag).is_ok()) {
            return Err(Rejection::BadTag);
        }
        let (header, message) = signed.split_at(HEADER_BYTES);
        Ok(Opened {
            sent_at_ms: u64_at(header, 2),
            nonce: u64_at(header, 10),
            tag,
            message,
        })
    }
}

/// The big-endian u64 at `at` (the header's length is checked before).
fn u64_at(header: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    if let Some(src) = header.get(at..at + 8) {
        bytes.copy_from_slice(src);
    }
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = "current-fleet-key-0123456789abcdef0123456789";
    const PREVIOUS: &str = "previous-fleet-key-0123456789abcdef012345678";
    const OTHER: &str = "another-fleet-key-0123456789abcdef0123456789";
    const MESSAGE: &[u8] = br#"{"v":1,"m":{"Leave":{"from":"i-a","from_inc":7}}}"#;

    fn key(text: &str) -> PeerKey {
        PeerKey::new(&Secret::parse(text, MIN_KEY_BYTES).unwrap()).unwrap()
    }

    fn ring(current: &str, previous: Option<&str>) -> KeyRing {
        KeyRing {
            current: key(current),
            previous: previous.map(key),
        }
    }

    /// A key other than `of` whose id is, or is not, `of`'s.
    fn key_with_id(of: &PeerKey, same: bool) -> PeerKey {
        (0..10_000)
            .map(|i| key(&format!("{OTHER}-{i}")))
            .find(|k| (k.id() == of.id()) == same)
            .expect("one in 256 keys shares an id")
    }

    #[test]
    fn a_sealed_message_opens_with_its_fields() {
        let ring = ring(CURRENT, None);
        let sealed = ring.seal(1_700_000_000_123, 42, MESSAGE);
        assert_eq!(sealed.len(), MESSAGE.len() + SEAL_OVERHEAD_BYTES);
        assert_eq!(sealed[..2], [FRAME, ring.current.id()]);
        let opened = ring.open(&sealed).unwrap();
        assert_eq!(opened.message, MESSAGE);
        assert_eq!((opened.sent_at_ms, opened.nonce), (1_700_000_000_123, 42));
        assert_eq!(opened.tag, &sealed[sealed.len() - TAG_BYTES..]);
    }

    #[test]
    fn a_tag_under_another_key_is_refused() {
        let ours = ring(CURRENT, None);
        // The same id, so the tag itself is what fails.
        let forger = KeyRing {
            current: key_with_id(&ours.current, true),
            previous: None,
        };
        let sealed = forger.seal(1, 1, MESSAGE);
        assert_eq!(ours.open(&sealed), Err(Rejection::BadTag));
        // Another id: refused before any HMAC.
        let stranger = KeyRing {
            current: key_with_id(&ours.current, false),
            previous: None,
        };
        let sealed = stranger.seal(1, 1, MESSAGE);
        assert_eq!(ours.open(&sealed), Err(Rejection::UnknownKey(sealed[1])));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ring = ring(CURRENT, None);
        let sealed = ring.seal(5, 6, MESSAGE);
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                let refused = ring.open(&bad);
                assert!(refused.is_err(), "byte {byte} bit {bit}: {refused:?}");
            }
        }
    }

    #[test]
    fn truncated_and_unsealed_datagrams_are_refused() {
        let ring = ring(CURRENT, None);
        let sealed = ring.seal(5, 6, MESSAGE);
        assert_eq!(ring.open(&sealed[..sealed.len() - 1]), Err(Rejection::BadTag));
        assert_eq!(ring.open(&sealed[..SEAL_OVERHEAD_BYTES - 1]), Err(Rejection::Truncated));
        assert_eq!(ring.open(&sealed[..1]), Err(Rejection::Truncated));
        assert_eq!(ring.open(b""), Err(Rejection::Unsealed));
        assert_eq!(ring.open(MESSAGE), Err(Rejection::Unsealed));
        // An empty message still carries a header and a tag.
        let empty = ring.seal(5, 6, b"");
        assert_eq!(ring.open(&empty).map(|o| o.message), Ok(&b""[..]));
    }

    #[test]
    fn the_previous_key_is_accepted_but_never_signs() {
        let old = ring(PREVIOUS, None);
        let rotated = ring(CURRENT, Some(PREVIOUS));
        let from_old = old.seal(1, 2, MESSAGE);
        assert_eq!(rotated.open(&from_old).map(|o| o.message), Ok(MESSAGE));
        let from_rotated = rotated.seal(1, 2, MESSAGE);
        assert_eq!(from_rotated[1], rotated.current.id());
        assert_eq!(rotated.open(&from_rotated).map(|o| o.message), Ok(MESSAGE));
        // A node not yet given the new key cannot read the rotated one.
        assert!(old.open(&from_rotated).is_err());
        // Dropping the previous key ends its acceptance.
        assert!(ring(CURRENT, None).open(&from_old).is_err());
    }

    #[test]
    fn keys_with_the_same_id_are_both_tried() {
        let current = key(CURRENT);
        let twin = key_with_id(&current, true);
        let ring = KeyRing {
            current,
            previous: Some(twin.clone()),
        };
        let from_twin = KeyRing {
            current: twin,
            previous: None,
        }
        .seal(3, 4, MESSAGE);
        assert_eq!(ring.open(&from_twin).map(|o| o.message), Ok(MESSAGE));
    }

    #[test]
    fn the_key_is_never_shown() {
        let key = key(CURRENT);
        let shown = format!("{key:?} {:?}", ring(CURRENT, Some(PREVIOUS)));
        assert!(!shown.contains(CURRENT) && !shown.contains(PREVIOUS), "{shown}");
        assert!(shown.contains(&format!("id {}", key.id())), "{shown}");
    }

    #[test]
    fn short_keys_are_refused() {
        let err = Secret::parse("0123456789abcdef", MIN_KEY_BYTES).unwrap_err();
        assert_eq!(err, crate::secret::ParseError::TooShort { len: 16, min: 32 });
    }
}
