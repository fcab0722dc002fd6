//! A node made the way the Auto Scaling group makes one (`lab add-node
//! --bootstrap`): `infra/bootstrap/bootstrap.sh` runs for real, as root of a
//! chroot (`loadtest/lab/node-chroot.sh`) inside the node's namespace. It
//! fetches the agent's release tarball and checks its sha256, writes the
//! agent and haproxy configs, sets the sysctls, and starts haproxy and the
//! agent with systemctl: a stand-in (`loadtest/lab/systemctl-standin.py`),
//! because CI machines run no systemd.
//!
//! The release is the lab's agent binary packaged by
//! `infra/release/build.sh --profile dev`, the fast mode CI uses: the same
//! tarball layout and `SHA256SUMS` as a release build, so the bootstrap
//! installs the lab's node the way it installs a real one.
//!
//! The lab adds only its own part, as systemd drop-ins: where AWS (moto) and
//! IMDS (the emulator) are, and the marker that makes the processes the
//! lab's. `lab bootstrap NODE` runs the bootstrap again on such a node, which
//! must change nothing.
//!
//! Files of node `nX` under `<lab dir>/nodes/nX/`: `root/` (the chroot, with
//! its own `/etc`, `/var`, `/run`), `root-usr-local/` (its `/usr/local`), and
//! `srv/` (its read-only `/srv/vipfleet`: the bootstrap, the unit and, in
//! `release/`, the agent's tarball and `SHA256SUMS`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use vipfleet_core::LeaseConfig;

use super::aws::Instance;
use super::layout::{Layout, DASHBOARD_PORT};
use super::node::{aws_env, node_name, node_record, Endpoints, NodeFiles};
use super::procs::{ProcRecord, MARKER_VAR};
use super::state::{self, LabState};
use super::tools;

const BOOTSTRAP_SCRIPT: &str = include_str!("../../../infra/bootstrap/bootstrap.sh");
const AGENT_UNIT: &str = include_str!("../../../infra/systemd/vipfleet-agent.service");
const NODE_CHROOT: &str = include_str!("../../lab/node-chroot.sh");
const SYSTEMCTL_STANDIN: &str = include_str!("../../lab/systemctl-standin.py");
/// Answers the bootstrap's read of the peer key from SSM (see the script).
const AWS_STANDIN: &str = include_str!("../../lab/aws-standin.sh");
/// The SSM parameter the bootstrap reads the peer key from: the template's
/// default, which the stand-in knows.
const PEER_KEY_PARAMETER: &str = "/vipfleet/peer-key";

const AGENT_UNIT_NAME: &str = "vipfleet-agent.service";
const HAPROXY_UNIT_NAME: &str = "haproxy.service";
/// As the lab's other haproxies.
const HAPROXY_MAXCONN: u32 = 4096;
/// Where the chroot sees the lab's `srv/` directory.
const SRV_IN_CHROOT: &str = "/srv/vipfleet";
/// The release command, in the repository (it packs files from there).
const RELEASE_SCRIPT: &str = "infra/release/build.sh";
/// The release's directory under `srv/`.
const RELEASE_DIR: &str = "release";

fn node_dir(lab: &LabState, name: &str) -> PathBuf {
    lab.dir.join("nodes").join(name)
}

fn chroot_dir(lab: &LabState, name: &str) -> PathBuf {
    node_dir(lab, name).join("root")
}

/// Whether node `name` was made by the bootstrap.
pub fn is_bootstrapped(lab: &LabState, name: &str) -> bool {
    chroot_dir(lab, name).is_dir()
}

/// The bootstrap knows the lease profiles by name only.
fn lease_profile(lab: &LabState) -> Result<&'static str> {
    let matches = |c: &LeaseConfig| {
        c.heartbeat_interval.as_millis() == u128::from(lab.lease.heartbeat_ms)
            && c.lease_ttl.as_millis() == u128::from(lab.lease.lease_ttl_ms)
    };
    let hot = lab.lease.profile != "cheap";
    if !hot && matches(&LeaseConfig::CHEAP) {
        Ok("cheap")
    } else if hot && matches(&LeaseConfig::HOT) {
        Ok("hot")
    } else if hot && matches(&LeaseConfig::FAST) {
        Ok("fast")
    } else {
        bail!(
            "a bootstrapped node runs a named lease profile (cheap: ttl 15000 ms, heartbeat 5000 ms; \
             hot: ttl 3000 ms, heartbeat 1000 ms; fast: ttl 1000 ms, heartbeat 200 ms), but this \
             lab runs ttl {} ms, heartbeat {} ms",
            lab.lease.lease_ttl_ms,
            lab.lease.heartbeat_ms
        )
    }
}

/// The bootstrap's inputs: what the CloudFormation template would pass.
fn inputs(lab: &LabState, ip: std::net::Ipv4Addr, artifact: &Artifact) -> Result<Vec<(String, String)>> {
    let join = |items: Vec<String>| items.join(",");
    let pairs = [
        ("VIPFLEET_AWS_TABLE", lab.aws.table.clone()),
        ("VIPFLEET_AWS_REGION", lab.aws.region.clone()),
        (
            "VIPFLEET_FLEET_VIPS",
            join(lab.vips.iter().map(ToString::to_string).collect()),
        ),
        (
            "VIPFLEET_FLEET_ROUTE_TABLES",
            join(lab.route_tables.iter().map(|t| t.id.clone()).collect()),
        ),
        ("VIPFLEET_FLEET_VPC_ID", lab.aws.vpc_id.clone()),
        ("VIPFLEET_LEASE_PROFILE", lease_profile(lab)?.to_string()),
        ("VIPFLEET_PEERS_KEY_PARAMETER", PEER_KEY_PARAMETER.to_string()),
        ("VIPFLEET_LIFECYCLE_ASG_NAME", lab.aws.asg_name.clone()),
        ("VIPFLEET_DASHBOARD_LISTEN", format!("{ip}:{DASHBOARD_PORT}")),
        (
            "VIPFLEET_AGENT_URL",
            format!("file://{SRV_IN_CHROOT}/{RELEASE_DIR}/{}", artifact.name),
        ),
        ("VIPFLEET_AGENT_SHA256", artifact.sha256.clone()),
        (
            "VIPFLEET_HAPROXY_BACKENDS",
            join(lab.backends.iter().map(|b| b.addr.to_string()).collect()),
        ),
        ("VIPFLEET_HAPROXY_PORT", "80".to_string()),
        // The default (20000) needs more file descriptors than containers allow.
        ("VIPFLEET_HAPROXY_MAXCONN", HAPROXY_MAXCONN.to_string()),
        // The lab's kernel may lack dummy; every lab agent uses ifb.
        ("VIPFLEET_VIP_BINDING_KIND", "ifb".to_string()),
    ];
    Ok(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The release tarball a bootstrap installs, as `SHA256SUMS` lists it.
struct Artifact {
    name: String,
    sha256: String,
}

/// Packages the lab's agent binary as a release into `out` (the fast mode
/// CI uses). No .deb: the chroot's `/usr` is the host's, read-only, so dpkg
/// could not install one; the tarball is what every distribution takes.
fn make_release(agent: &Path, out: &Path) -> Result<()> {
    let script = tools::repo_root().join(RELEASE_SCRIPT);
    let run = Command::new("bash")
        .arg(&script)
        .args(["--profile", "dev", "--no-deb", "--agent-bin"])
        .arg(agent)
        .arg("--out")
        .arg(out)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !run.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(())
}

/// The one tarball in the release at `dir`, with its sum from `SHA256SUMS`.
fn release_artifact(dir: &Path) -> Result<Artifact> {
    let sums = dir.join("SHA256SUMS");
    let text = fs::read_to_string(&sums).with_context(|| format!("reading {}", sums.display()))?;
    let tarballs: Vec<Artifact> = text
        .lines()
        .filter_map(|line| line.split_once("  "))
        .filter(|(_, name)| name.ends_with(".tar.gz"))
        .map(|(sha256, name)| Artifact {
            name: name.to_string(),
            sha256: sha256.to_string(),
        })
        .collect();
    match <[Artifact; 1]>::try_from(tarballs) {
        Ok([artifact]) => Ok(artifact),
        Err(found) => bail!("{} lists {} tarballs, expected one", sums.display(), found.len()),
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A drop-in that adds `env` to a unit, as an operator would with
/// `systemctl edit`.
fn drop_in(root: &Path, unit: &str, env: &BTreeMap<String, String>) -> Result<()> {
    let mut text =
        String::from("# written by `vipfleet-loadtest lab`: the lab's AWS, IMDS and process marker.\n[Service]\n");
    for (key, value) in env {
        text.push_str(&format!("Environment=\"{key}={value}\"\n"));
    }
    write_mode(
        &root.join(format!("etc/systemd/system/{unit}.d/vipfleet-lab.conf")),
        &text,
        0o644,
    )
}

/// The lab's environment for the agent, as its drop-in sets it.
fn agent_env(lab: &LabState) -> BTreeMap<String, String> {
    let mut env = aws_env(Endpoints::of(lab), Some(&lab.imds.endpoint));
    env.insert(MARKER_VAR.to_string(), lab.prefix.clone());
    // Logs are files that tools read: no colour codes.
    env.insert("NO_COLOR".to_string(), "1".to_string());
    env
}

/// Prepares node `name`'s directories, the artifact and the drop-ins.
fn prepare(lab: &LabState, name: &str) -> Result<()> {
    let dir = node_dir(lab, name);
    let srv = dir.join("srv");
    write_mode(&srv.join("bootstrap/bootstrap.sh"), BOOTSTRAP_SCRIPT, 0o755)?;
    write_mode(&srv.join("systemd").join(AGENT_UNIT_NAME), AGENT_UNIT, 0o644)?;
    write_mode(&dir.join("node-chroot.sh"), NODE_CHROOT, 0o755)?;
    make_release(&lab.programs.agent, &srv.join(RELEASE_DIR))?;
    let root = chroot_dir(lab, name);
    write_mode(&dir.join("root-usr-local/sbin/systemctl"), SYSTEMCTL_STANDIN, 0o755)?;
    write_mode(&dir.join("root-usr-local/sbin/aws"), AWS_STANDIN, 0o755)?;
    // The lab's SSM SecureString, for the stand-in above.
    let key = fs::read_to_string(lab.dir.join("conf").join(super::node::PEER_KEY_FILE))
        .context("reading the lab's peer key (lab up makes it)")?;
    write_mode(&srv.join("peer-key"), &key, 0o600)?;
    drop_in(&root, AGENT_UNIT_NAME, &agent_env(lab))?;
    let marker = BTreeMap::from([(MARKER_VAR.to_string(), lab.prefix.clone())]);
    drop_in(&root, HAPROXY_UNIT_NAME, &marker)
}

/// Runs the bootstrap in node `name`'s namespace and chroot; returns its
/// output, or fails with it.
fn run_bootstrap(lab: &LabState, name: &str, ns: &str, ip: std::net::Ipv4Addr) -> Result<String> {
    let dir = node_dir(lab, name);
    let srv = dir.join("srv");
    let artifact = release_artifact(&srv.join(RELEASE_DIR))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "bash"])
        .arg(dir.join("node-chroot.sh"))
        .arg(chroot_dir(lab, name))
        .arg(&srv);
    for (key, value) in inputs(lab, ip, &artifact)? {
        cmd.arg(format!("{key}={value}"));
    }
    cmd.args(["bash", &format!("{SRV_IN_CHROOT}/bootstrap/bootstrap.sh")]);
    let out = cmd.output().context("running the bootstrap in the node's chroot")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.join("bootstrap.log");
    let mut all = fs::read_to_string(&log).unwrap_or_default();
    all.push_str(&text);
    fs::write(&log, all)?;
    if !out.status.success() {
        bail!("the bootstrap of {name} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// The main PID the systemctl stand-in recorded for `unit`.
fn main_pid(root: &Path, unit: &str) -> Result<u32> {
    let path = root.join(format!("var/lib/systemctl-standin/{unit}.pid"));
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", path.display()))
}

/// The lab's record of a process the stand-in started, in host paths.
fn record(lab: &LabState, name: &str, ns: &str, unit: &str, program: PathBuf, args: Vec<String>) -> Result<ProcRecord> {
    let root = chroot_dir(lab, name);
    let env = if unit == AGENT_UNIT_NAME {
        agent_env(lab)
    } else {
        BTreeMap::new()
    };
    Ok(ProcRecord {
        name: format!(
            "{name}-{}",
            unit.trim_end_matches(".service").trim_start_matches("vipfleet-")
        ),
        pid: main_pid(&root, unit)?,
        netns: Some(ns.to_string()),
        program,
        args,
        env,
        log: root.join(format!("var/log/{}.log", unit.trim_end_matches(".service"))),
        priority: super::procs::Priority::Normal,
        alive: None,
    })
}

/// Whether this lab can have bootstrapped nodes; checked before anything
/// is launched, so a refusal leaves nothing half made.
pub fn check_lab(lab: &LabState) -> Result<()> {
    if !lab.agent_sets.is_empty() {
        bail!(
            "a bootstrapped node takes no --agent-set (this lab has {:?})",
            lab.agent_sets
        );
    }
    lease_profile(lab).map(|_| ())
}

/// Makes node `index` by running the bootstrap on it. The instance, the
/// namespace and its IMDS entry must exist.
pub fn bootstrap_node(lab: &LabState, index: usize, instance: &Instance) -> Result<(state::Node, String)> {
    check_lab(lab)?;
    let layout = Layout::new(&lab.prefix, lab.octet)?;
    let name = node_name(index);
    let ns = layout.node_ns(index);
    prepare(lab, &name)?;
    let output = run_bootstrap(lab, &name, &ns, instance.ip)?;
    let root = chroot_dir(lab, &name);
    let agent_config = root.join("etc/vipfleet/agent.toml");
    let haproxy_config = root.join("etc/haproxy/haproxy.cfg");
    let agent = record(
        lab,
        &name,
        &ns,
        AGENT_UNIT_NAME,
        node_dir(lab, &name).join("root-usr-local/bin/vipfleet-agent"),
        vec!["run".into(), "--config".into(), agent_config.display().to_string()],
    )?;
    let haproxy = record(
        lab,
        &name,
        &ns,
        HAPROXY_UNIT_NAME,
        lab.programs.haproxy.clone(),
        vec!["-Ws".into(), "-f".into(), haproxy_config.display().to_string()],
    )?;
    let files = NodeFiles {
        agent_config,
        haproxy_config,
        haproxy_stats_socket: root.join("var/lib/haproxy/admin.sock"),
    };
    let node = node_record(index, instance, ns, files, agent, haproxy);
    Ok((node, output))
}

/// Runs the bootstrap again on a node it made; returns its output.
pub fn rerun(lab: &LabState, node: &state::Node) -> Result<String> {
    if !is_bootstrapped(lab, &node.name) {
        bail!(
            "{} was not made by the bootstrap (`lab add-node --bootstrap` makes such nodes)",
            node.name
        );
    }
    run_bootstrap(lab, &node.name, &node.ns, node.ip)
}
