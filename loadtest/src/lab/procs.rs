//! Starting, finding and stopping the lab's background processes (moto, the
//! IMDS emulator, the route mirror, backends, haproxy, agents).
//!
//! Every process is started detached from the caller: its own process group
//! (so a Ctrl-C in `lab up`'s terminal does not reach it), stdin from
//! /dev/null, stdout and stderr appended to `<dir>/logs/<name>.log`, a
//! pidfile `<dir>/pids/<name>.pid`, and a clean environment plus the marker
//! variable [`MARKER_VAR`]`=<prefix>`. Processes in a namespace are started
//! with `ip netns exec`, which execs the program, so the pid recorded is the
//! program's own.
//!
//! The stand-ins of AWS (moto, the IMDS emulator and the route mirror) run at a higher
//! scheduling priority ([`Priority::AwsStandIn`], through `nice`, which
//! execs the program too): in a deployment AWS runs on machines of its own,
//! and in the lab on a busy CPU the load generator and the backends would
//! otherwise show as a slow AWS in every failover measured.
//!
//! The marker is what makes clean-up reliable after a harness crash:
//! `lab down` kills every process whose environment carries the lab's
//! marker, whether or not a pidfile survived, and it never kills a process
//! without it (a pid from a stale pidfile may have been reused).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Environment entry that marks a process as belonging to a lab. Read only
/// by clean-up, never as configuration, so no user shell ever carries it.
pub const MARKER_VAR: &str = "VIPFLEET_LAB_MEMBER";
/// Variables passed from the caller's environment to lab processes; the
/// rest (AWS profiles, credentials) must not leak into the lab.
const PASSED_VARS: &[&str] = &["PATH", "HOME", "LANG", "TERM", "VIPFLEET_LOG"];
const POLL_GONE: Duration = Duration::from_millis(20);
/// The `nice` increment of [`Priority::AwsStandIn`] (root may lower it).
const AWS_STAND_IN_NICE: &str = "-10";

/// How the kernel schedules a process against the rest of the lab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    #[default]
    Normal,
    /// moto, the IMDS emulator and the mirror: AWS, which is not on the lab's CPU in a
    /// deployment.
    AwsStandIn,
}

/// One started process, as the state file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// Unique within the lab: `moto`, `imds`, `mirror`, `be0`, `n0-agent`, `n0-haproxy`, …
    pub name: String,
    pub pid: u32,
    /// The namespace it runs in; `null` for the host namespace.
    pub netns: Option<String>,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Variables set on top of the passed-through ones (PATH, HOME).
    pub env: BTreeMap<String, String>,
    pub log: PathBuf,
    #[serde(default)]
    pub priority: Priority,
    /// Filled in by `lab status` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    pub name: String,
    pub netns: Option<String>,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub priority: Priority,
}

pub fn pid_dir(dir: &Path) -> PathBuf {
    dir.join("pids")
}

pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join("logs")
}

fn pidfile(dir: &Path, name: &str) -> PathBuf {
    pid_dir(dir).join(format!("{name}.pid"))
}

/// Starts `spec` detached, in the lab with `prefix` whose directory is `dir`.
pub fn spawn(dir: &Path, prefix: &str, spec: &ProcSpec) -> Result<ProcRecord> {
    fs::create_dir_all(pid_dir(dir))?;
    fs::create_dir_all(log_dir(dir))?;
    let log = log_dir(dir).join(format!("{}.log", spec.name));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut launcher: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(ns) = &spec.netns {
        launcher.extend(["ip", "netns", "exec", ns.as_str()].map(std::ffi::OsStr::new));
    }
    if spec.priority == Priority::AwsStandIn {
        launcher.extend(["nice", "-n", AWS_STAND_IN_NICE].map(std::ffi::OsStr::new));
    }
    launcher.push(spec.program.as_os_str());
    let mut cmd = Command::new(launcher[0]);
    cmd.args(&launcher[1..])
        .args(&spec.args)
        .env_clear()
        .envs(
            PASSED_VARS
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&spec.env)
        // Logs are files that tools read: no colour codes.
        .env("NO_COLOR", "1")
        .env(MARKER_VAR, prefix)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    let pid = child.id();
    // The child is reaped by init once the lab command exits; a harness that
    // keeps running should wait on its own children.
    drop(child);
    fs::write(pidfile(dir, &spec.name), format!("{pid}\n"))?;
    Ok(ProcRecord {
        name: spec.name.clone(),
        pid,
        netns: spec.netns.clone(),
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        log,
        priority: spec.priority,
        alive: None,
    })
}

/// Starts a recorded process again (after a `kill -9`, say), as it was.
#[allow(dead_code)] // for the fault harness
pub fn respawn(dir: &Path, prefix: &str, record: &ProcRecord) -> Result<ProcRecord> {
    spawn(
        dir,
        prefix,
        &ProcSpec {
            name: record.name.clone(),
            netns: record.netns.clone(),
            program: record.program.clone(),
            args: record.args.clone(),
            env: record.env.clone(),
            priority: record.priority,
        },
    )
}

/// The process's state letter from /proc (`R`, `S`, `Z`, …), if it exists.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the state follows
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

fn has_marker(pid: u32, prefix: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{MARKER_VAR}={prefix}");
    environ.split(|b| *b == 0).any(|entry| entry == wanted.as_bytes())
}

/// Whether `pid` exists and is not a zombie. For the caller's own
/// unreaped children this is enough: their pids cannot be reused.
pub fn is_running(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Whether `pid` runs (not a zombie) and belongs to the lab `prefix`. A
/// process in the middle of its `exec` may briefly show no environment.
pub fn is_alive(pid: u32, prefix: &str) -> bool {
    is_running(pid) && has_marker(pid, prefix)
}

/// Whether `pid` has stopped (SIGSTOP): a zombie-in-waiting for the harness.
pub fn is_stopped(pid: u32) -> bool {
    matches!(proc_state(pid), Some('T'))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The calling process and its ancestors: never to be killed by clean-up,
/// even if (by some mistake) they carry a marker.
fn self_and_ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(parent) = chain.last().and_then(|p| parent_of(*p)) {
        if parent == 0 || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
    }
    chain
}

/// Every live process carrying the marker of lab `prefix`.
pub fn marked_pids(prefix: &str) -> Vec<u32> {
    let spared = self_and_ancestors();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !spared.contains(pid) && is_alive(*pid, prefix))
        .collect();
    pids.sort_unstable();
    pids
}

/// The pids named by pidfiles in `dir`.
pub fn pidfile_pids(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = fs::read_dir(pid_dir(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            let pid = fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect()
}

/// Sends `signal` (a `kill` signal name: `KILL`, `TERM`, `STOP`, `CONT`)
/// to `pids`. Processes that are already gone are not an error.
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        tracing::warn!("kill -{signal} {pids:?}: {e}");
    }
}

/// Waits until none of `pids` runs (zombies count as gone); returns those
/// still running at the deadline.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| matches!(proc_state(*p), Some(s) if s != 'Z' && s != 'X'))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(POLL_GONE);
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the caller is root (effective uid 0), from /proc/self/status.
pub fn running_as_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Truncates (or creates) a file, for logs a new lab starts afresh.
pub fn truncate(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_unmarked() {
        let me = std::process::id();
        assert!(matches!(proc_state(me), Some('R' | 'S')));
        assert!(!is_alive(me, "vf"), "the test process carries no marker");
        assert!(self_and_ancestors().contains(&me));
        assert!(self_and_ancestors().len() >= 2, "a test process has a parent");
    }

    #[test]
    fn a_spawned_process_is_marked_logged_and_killable() {
        let dir = std::env::temp_dir().join(format!("vipfleet-procs-test-{}", std::process::id()));
        let prefix = "zzprocs";
        let rec = spawn(
            &dir,
            prefix,
            &ProcSpec {
                name: "sleeper".into(),
                netns: None,
                program: "sh".into(),
                args: vec!["-c".into(), "echo started; exec sleep 30".into()],
                env: BTreeMap::from([("EXTRA".to_string(), "1".to_string())]),
                priority: Priority::Normal,
            },
        )
        .unwrap();
        // Until its exec completes, the child shows this process's environment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(log_tail(&rec.log, 1).contains("started") && is_alive(rec.pid, prefix)) && Instant::now() < deadline {
            std::thread::sleep(POLL_GONE);
        }
        assert!(is_alive(rec.pid, prefix));
        assert!(!is_alive(rec.pid, "zzproc"), "a prefix of the prefix is another lab");
        assert!(marked_pids(prefix).contains(&rec.pid));
        assert_eq!(pidfile_pids(&dir), vec![("sleeper".to_string(), rec.pid)]);
        signal(&[rec.pid], "KILL");
        assert!(wait_gone(&[rec.pid], Duration::from_secs(5)).is_empty());
        assert!(!marked_pids(prefix).contains(&rec.pid));
        fs::remove_dir_all(&dir).unwrap();
    }
}
