//! `--version` of every binary names the package version and the commit it
//! was built from, as an operator comparing nodes would read it:
//! `vipfleet-agent 0.1.0 (c71b2b9)`, `-dirty` for a tree with uncommitted
//! changes. In a git checkout of this workspace the commit must be HEAD's
//! (a stale binary fails: rebuild with `cargo build --workspace --bins`);
//! outside one it is `VIPFLEET_BUILD_COMMIT`'s value or `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

use vipfleet_tests::workspace_binary;

const PROGRAMS: [&str; 2] = ["vipfleet-agent", "vipfleet-loadtest"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

/// HEAD's full hash, when the workspace is a git checkout of its own.
fn head_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    (top.canonicalize().ok()? == root).then_some(())?;
    git(&["rev-parse", "HEAD"])
}

fn is_commit_hash(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let head = head_commit(&workspace_root());
    for program in PROGRAMS {
        let out = Command::new(workspace_binary(program))
            .arg("--version")
            .output()
            .expect("running --version");
        assert!(out.status.success(), "{program} --version failed: {out:?}");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let prefix = format!("{program} {} (", env!("CARGO_PKG_VERSION"));
        let commit = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{program} --version printed {line:?}, expected \"{prefix}<commit>)\""));
        let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
        match &head {
            Some(full) => assert!(
                is_commit_hash(hash) && full.starts_with(hash),
                "{program} --version names {commit:?}, but HEAD is {full}: a stale binary? \
                 (`cargo build --workspace --bins`)"
            ),
            None => {
                let supplied = std::env::var("VIPFLEET_BUILD_COMMIT").unwrap_or_default();
                assert!(
                    commit == "unknown" || commit == supplied.trim(),
                    "{program} --version names {commit:?} outside a git checkout"
                );
            }
        }
    }
}
