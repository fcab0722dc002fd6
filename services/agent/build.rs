//! Build script: records which commit the agent was built from, for
//! `--version` and `vipfleet_agent::build::BUILD_COMMIT`.
//!
//! The commit comes from `git` when the package sits in this workspace's own
//! checkout (short hash, `-dirty` when tracked files differ from it), else
//! from `VIPFLEET_BUILD_COMMIT` (builds from a source tarball), else it is
//! `unknown`. The script reruns when HEAD moves (checkout, commit, reset) or
//! this crate's sources change, and at no other time: it has no build
//! dependencies and sets nothing but one `rustc-env`, so a new commit
//! recompiles this crate and its dependents, never the SDK below it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Supplies the commit where git cannot (a build from a tarball).
const COMMIT_VAR: &str = "VIPFLEET_BUILD_COMMIT";
/// What the crate reads with `env!`.
const OUT_VAR: &str = "VIPFLEET_AGENT_BUILD_COMMIT";
const UNKNOWN: &str = "unknown";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed={COMMIT_VAR}");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit = from_git(&manifest_dir)
        .or_else(from_env)
        .unwrap_or_else(|| UNKNOWN.to_string());
    println!("cargo:rustc-env={OUT_VAR}={commit}");
}

/// `git -C dir args...`, trimmed, when it succeeds with output.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // --no-optional-locks: `status` must not refresh the index behind the
    // developer's back.
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success()).then(|| text.trim().to_string())
}

fn from_git(manifest_dir: &Path) -> Option<String> {
    // A source tarball unpacked inside some other repository must not take
    // that repository's commit: the checkout's top must be this workspace.
    let workspace = manifest_dir.join("../..").canonicalize().ok()?;
    let top = PathBuf::from(git(manifest_dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != workspace {
        return None;
    }
    let hash = git(manifest_dir, &["rev-parse", "--short", "HEAD"]).filter(|h| !h.is_empty())?;
    watch_head(manifest_dir);
    let dirty = git(manifest_dir, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Asks cargo to rerun this script when HEAD moves. HEAD's reflog grows
/// with every move (commit, checkout, reset); HEAD itself and the branch
/// file (or the packed refs, for a branch without one) cover a repository
/// that keeps no reflog. Only files that exist: cargo reruns on every build
/// for a missing one.
fn watch_head(manifest_dir: &Path) {
    let git_path = |name: &str| {
        git(manifest_dir, &["rev-parse", "--git-path", name])
            .map(|p| manifest_dir.join(p))
            .filter(|p| p.is_file())
    };
    let mut watched: Vec<PathBuf> = ["HEAD", "logs/HEAD"].into_iter().filter_map(git_path).collect();
    if let Some(branch) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git_path(&branch).or_else(|| git_path("packed-refs")));
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn from_env() -> Option<String> {
    let value = std::env::var(COMMIT_VAR).ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let hash = value.strip_suffix("-dirty").unwrap_or(value);
    // It lands in `--version` and a metric label: a commit hash, nothing else.
    assert!(
        (4..=40).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{COMMIT_VAR}={value:?} is not a commit hash (4 to 40 hex digits, optionally with -dirty)"
    );
    Some(value.to_string())
}
