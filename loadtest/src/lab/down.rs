//! `lab down`: removes every process, namespace and interface of a lab, and
//! works without the state file, after a crash of whatever started the lab.
//!
//! What is removed is found three ways, none of which needs `state.json`:
//! processes carrying the lab's marker variable (see [`super::procs`]),
//! every process inside one of the lab's namespaces (`ip netns pids`: also
//! catches a `curl` a harness left in a client namespace), and namespaces
//! and the root-namespace link by their exact name patterns
//! ([`super::layout::is_lab_netns`]). The state file and pidfiles are only
//! cross-checked. Everything is killed with SIGKILL: the lab is disposable,
//! and a draining agent would otherwise try to hand its shards to peers that
//! are dying too. Logs are kept; `--purge` removes the lab directory.
//! Running it twice is harmless.

use std::time::Duration;

use anyhow::{bail, Result};

use super::layout;
use super::netns;
use super::procs;
use super::state::LabState;

/// How long killed processes get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Namespace deletion is asynchronous in the kernel; links vanish shortly after.
const LINK_GONE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub killed: Vec<u32>,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
}

/// The lab's namespaces that exist now.
pub fn lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    Ok(netns::list_netns()?
        .into_iter()
        .filter(|n| layout::is_lab_netns(prefix, n))
        .collect())
}

/// The lab's links in the root namespace that exist now.
pub fn lab_root_links(prefix: &str) -> Result<Vec<String>> {
    let host = format!("{prefix}-host");
    Ok(netns::root_links()?.into_iter().filter(|l| *l == host).collect())
}

/// Every process that belongs to the lab, by marker or by namespace.
fn lab_pids(prefix: &str, namespaces: &[String]) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = procs::marked_pids(prefix);
    for ns in namespaces {
        if let Ok(out) = netns::ip(&["netns", "pids", ns]) {
            pids.extend(out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    pids.retain(|p| *p != me);
    pids.sort_unstable();
    pids.dedup();
    pids
}

pub fn teardown(prefix: &str) -> Result<DownReport> {
    layout::check_prefix(prefix)?;
    let dir = layout::lab_dir(prefix);
    let mut report = DownReport::default();

    let namespaces = lab_namespaces(prefix)?;
    let pids = lab_pids(prefix, &namespaces);
    // A pidfile whose process still runs but lost its marker cannot be
    // ours; only note it, never kill it.
    for (name, pid) in procs::pidfile_pids(&dir) {
        if !pids.contains(&pid) && procs::is_alive(pid, prefix) {
            tracing::warn!("{name}: pid {pid} from its pidfile runs unmarked; left alone");
        }
    }
    procs::signal(&pids, "KILL");
    let left = procs::wait_gone(&pids, KILL_WAIT);
    if !left.is_empty() {
        bail!("processes {left:?} of lab {prefix} survived SIGKILL for {KILL_WAIT:?}");
    }
    report.killed = pids;

    // The host link first: deleting its peer's namespace removes it too, but
    // asynchronously, and a quick `up` would then trip over it.
    for link in lab_root_links(prefix)? {
        netns::del_root_link(&link)?;
        report.links.push(link);
    }
    for ns in &namespaces {
        netns::del_netns(ns)?;
        report.namespaces.push(ns.clone());
    }
    let deadline = std::time::Instant::now() + LINK_GONE_WAIT;
    while !lab_root_links(prefix)?.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }

    for (name, _) in procs::pidfile_pids(&dir) {
        let _ = std::fs::remove_file(procs::pid_dir(&dir).join(format!("{name}.pid")));
    }
    let _ = std::fs::remove_file(LabState::path(&dir));
    super::claims::release(prefix);

    let leftovers = leftovers(prefix)?;
    if !leftovers.is_empty() {
        bail!("lab {prefix} is not fully removed: {}", leftovers.join("; "));
    }
    Ok(report)
}

/// What of lab `prefix` still exists (empty: nothing).
pub fn leftovers(prefix: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let namespaces = lab_namespaces(prefix)?;
    if !namespaces.is_empty() {
        found.push(format!("namespaces {}", namespaces.join(" ")));
    }
    let links = lab_root_links(prefix)?;
    if !links.is_empty() {
        found.push(format!("links {}", links.join(" ")));
    }
    let pids = procs::marked_pids(prefix);
    if !pids.is_empty() {
        found.push(format!("processes {pids:?}"));
    }
    Ok(found)
}

/// Removes the lab directory (logs included).
pub fn purge(prefix: &str) -> Result<()> {
    let dir = layout::lab_dir(prefix);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
