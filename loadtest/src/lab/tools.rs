//! What the lab needs from the machine, found (and installed on first use)
//! before anything is built: root and `ip netns` (refused with exit code 2
//! when missing), haproxy (the distribution's package, through
//! `tests/setup/packages.sh`), the moto venv (`tests/setup/venv.sh`) and its
//! serializing launcher, and the `vipfleet-agent` binary next to this one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::netns;
use super::procs;

/// Overrides the agent binary found next to this executable.
pub const AGENT_BIN_VAR: &str = "VIPFLEET_AGENT_BIN";
/// Overrides the repository root (for the setup scripts and moto launcher).
pub const REPO_VAR: &str = "VIPFLEET_REPO";
const AGENT_BIN: &str = "vipfleet-agent";
/// moto behind a lock: plain `moto_server` lets racing conditional writes
/// both succeed (see the launcher's docstring).
const MOTO_LAUNCHER: &str = "tests/setup/moto_server.py";

/// The machine cannot host a lab; `lab` exits with code 2 and this message.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Root and working network namespaces, or a [`Refusal`].
pub fn preflight() -> Result<()> {
    if !procs::running_as_root() {
        return Err(Refusal(
            "the lab needs root (network namespaces, veth links, routes): run it with sudo or as root \
             (without root, `cargo run -p vipfleet-sim` runs the fault scenarios in the simulation)"
                .into(),
        )
        .into());
    }
    if let Err(e) = netns::netns_available() {
        return Err(Refusal(format!(
            "`ip netns` does not work here, so the lab cannot build its network: {e:#}"
        ))
        .into());
    }
    Ok(())
}

/// The programs the lab runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// This executable: runs the mirror, the IMDS emulator and the backends.
    pub loadtest: PathBuf,
    pub agent: PathBuf,
    pub haproxy: PathBuf,
    /// The venv's Python, with moto installed.
    pub python: PathBuf,
    pub moto_launcher: PathBuf,
}

/// The repository: `VIPFLEET_REPO`, else where this binary was built from.
pub fn repo_root() -> PathBuf {
    let root = std::env::var_os(REPO_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    root.canonicalize().unwrap_or(root)
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn run_setup_script(script: &Path) -> Result<String> {
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Finds every tool, installing haproxy and the moto venv if needed.
pub fn find() -> Result<Tools> {
    let loadtest = std::env::current_exe().context("finding this executable")?;
    let agent = match std::env::var_os(AGENT_BIN_VAR) {
        Some(path) => PathBuf::from(path),
        None => loadtest
            .parent()
            .map(|dir| dir.join(AGENT_BIN))
            .unwrap_or_else(|| PathBuf::from(AGENT_BIN)),
    };
    if !agent.is_file() {
        bail!(
            "no agent binary at {}: build it with `cargo build -p vipfleet-agent` (same profile and target dir as \
             this binary) or set {AGENT_BIN_VAR}",
            agent.display()
        );
    }
    let repo = repo_root();
    let haproxy = match on_path("haproxy") {
        Some(p) => p,
        None => {
            eprintln!("lab: haproxy is missing; installing the distribution's package");
            run_setup_script(&repo.join("tests/setup/packages.sh"))?;
            on_path("haproxy").context("haproxy is still missing after tests/setup/packages.sh")?
        }
    };
    let venv = PathBuf::from(run_setup_script(&repo.join("tests/setup/venv.sh"))?);
    let python = venv.join("bin/python");
    if !python.is_file() {
        bail!(
            "tests/setup/venv.sh printed {}, which has no bin/python",
            venv.display()
        );
    }
    let moto_launcher = repo.join(MOTO_LAUNCHER);
    if !moto_launcher.is_file() {
        bail!(
            "the moto launcher {} is missing (set {REPO_VAR} to the repository)",
            moto_launcher.display()
        );
    }
    Ok(Tools {
        loadtest,
        agent,
        haproxy,
        python,
        moto_launcher,
    })
}
