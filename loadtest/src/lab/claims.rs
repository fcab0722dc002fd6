//! Which network each lab uses, so that two labs (different prefixes) can
//! run side by side: a lab takes octet `o` (networks 10.o/16 and
//! 10.(o+1)/16) only if the host uses neither, and marks it taken with a
//! claim file `/var/tmp/vipfleet-lab-net-<o>` holding its prefix, created
//! exclusively so that two concurrent `lab up`s cannot both take it. A claim
//! whose lab no longer exists (no bridge namespace, no host link) is stale
//! and is taken over.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::layout::{Layout, DEFAULT_OCTET, MAX_OCTET};
use super::netns;

const CLAIM_BASE: &str = "/var/tmp/vipfleet-lab-net-";

fn claim_path(octet: u8) -> PathBuf {
    PathBuf::from(format!("{CLAIM_BASE}{octet}"))
}

/// Whether the lab `prefix` still has its bridge namespace or host link.
fn lab_exists(prefix: &str) -> bool {
    let ns = format!("{prefix}-vpc");
    let link = format!("{prefix}-host");
    netns::list_netns().is_ok_and(|all| all.contains(&ns)) || netns::root_links().is_ok_and(|all| all.contains(&link))
}

/// Takes an octet for lab `prefix`: `requested`, or the first free one
/// from 77 up (odd ones, so that o and o+1 of two labs never meet).
pub fn claim(prefix: &str, requested: Option<u8>) -> Result<u8> {
    let taken = netns::root_ipv4_blocks()?;
    let candidates: Vec<u8> = match requested {
        Some(o) => vec![o],
        None => (DEFAULT_OCTET..=MAX_OCTET).step_by(2).collect(),
    };
    let mut reasons = Vec::new();
    for octet in candidates {
        let layout = Layout::new(prefix, octet)?;
        if let Some((ours, theirs)) = layout
            .claimed_blocks()
            .iter()
            .find_map(|b| taken.iter().find(|t| t.overlaps(b)).map(|t| (*b, *t)))
        {
            reasons.push(format!("{ours} overlaps {theirs} on the host"));
            continue;
        }
        match try_claim(prefix, octet)? {
            None => return Ok(octet),
            Some(owner) => reasons.push(format!("10.{octet}/16 is taken by lab {owner}")),
        }
    }
    match requested {
        Some(o) => bail!("cannot use --net-octet {o}: {}", reasons.join("; ")),
        None => bail!("no free network for the lab: {}", reasons.join("; ")),
    }
}

/// `Ok(None)` when the claim is ours now, `Ok(Some(owner))` when another
/// live lab holds it.
fn try_claim(prefix: &str, octet: u8) -> Result<Option<String>> {
    let path = claim_path(octet);
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(prefix.as_bytes())?;
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                if owner == prefix {
                    return Ok(None);
                }
                if !owner.is_empty() && lab_exists(&owner) {
                    return Ok(Some(owner));
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some("(another lab starting at the same time)".into()))
}

/// Drops every claim held by lab `prefix`.
pub fn release(prefix: &str) {
    for octet in 1..=MAX_OCTET {
        let path = claim_path(octet);
        if std::fs::read_to_string(&path).is_ok_and(|owner| owner.trim() == prefix) {
            let _ = std::fs::remove_file(&path);
        }
    }
}
