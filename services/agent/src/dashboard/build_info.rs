//! What this binary is: the version and commit `vipfleet_build_info`
//! reports, as [`crate::build`] recorded them at build time.

/// The version this binary was built as (`vipfleet_build_info`'s `version`).
pub const VERSION: &str = crate::build::VERSION;
/// `vipfleet_build_info`'s `commit` label for a build that knew no commit
/// (no git checkout and no `VIPFLEET_BUILD_COMMIT`); `build.rs` records it.
pub const UNKNOWN_COMMIT: &str = "unknown";

/// The commit this binary was built from (`-dirty` when the tree had
/// uncommitted changes), or [`UNKNOWN_COMMIT`]; `--version` shows the same.
pub fn commit() -> &'static str {
    crate::build::BUILD_COMMIT
}
