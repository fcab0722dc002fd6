//! The message format: one detector [`Message`] in a versioned envelope,
//! `{"v": 1, "m": …}` as JSON, which [`super::auth`] seals (or not) into a
//! datagram. The version comes first so that a later format can be
//! refused by name rather than misread.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vipfleet_core::peers::Message;

use super::seal::SEAL_OVERHEAD_BYTES;

/// The only envelope version this agent speaks.
pub const WIRE_VERSION: u32 = 1;
/// Largest datagram sent or accepted: below a 1500-byte MTU after the IP
/// and UDP headers, so no datagram is ever fragmented. Messages are a
/// fraction of it (node ids, a few integers).
pub const MAX_DATAGRAM_BYTES: usize = 1400;
/// Largest message: a sealed datagram of it stays within the limit.
pub const MAX_MESSAGE_BYTES: usize = MAX_DATAGRAM_BYTES - SEAL_OVERHEAD_BYTES;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes is above the {MAX_MESSAGE_BYTES}-byte limit")]
    Oversized(usize),
    #[error("datagram is wire version {0}; this agent speaks {WIRE_VERSION}")]
    Version(u32),
    #[error("datagram does not decode: {0}")]
    Garbled(String),
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    m: &'a Message,
}

/// The version alone, read before the message so that another version is
/// refused as such, whatever its message looks like.
#[derive(Deserialize)]
struct Head {
    v: u32,
}

#[derive(Deserialize)]
struct In {
    #[allow(dead_code)] // checked through `Head`
    v: u32,
    m: Message,
}

pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    let bytes = serde_json::to_vec(&Out {
        v: WIRE_VERSION,
        m: message,
    })
    .map_err(|e| WireError::Garbled(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::Oversized(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::Oversized(bytes.len()));
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| WireError::Garbled(e.to_string()))?;
    if head.v != WIRE_VERSION {
        return Err(WireError::Version(head.v));
    }
    let envelope: In = serde_json::from_slice(bytes).map_err(|e| WireError::Garbled(e.to_string()))?;
    Ok(envelope.m)
}
