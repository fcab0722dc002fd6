//! What this binary was built from: the package version and the git commit
//! that `build.rs` recorded (`-dirty` when tracked files differed from it,
//! `unknown` outside a checkout without `VIPFLEET_BUILD_COMMIT`). For
//! `--version`, logs and a `build_info` metric.

/// The package version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit, e.g. `c71b2b9` or `c71b2b9-dirty`, or `unknown`.
pub const BUILD_COMMIT: &str = env!("VIPFLEET_AGENT_BUILD_COMMIT");

/// What `--version` prints after the program's name: `0.1.0 (c71b2b9)`.
pub const VERSION_WITH_COMMIT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("VIPFLEET_AGENT_BUILD_COMMIT"),
    ")"
);
