//! What this binary is: the version and commit `vipfleet_build_info`
//! reports.

/// The version this binary was built as (`vipfleet_build_info`'s `version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `vipfleet_build_info`'s `commit` label until a build records one.
pub const UNKNOWN_COMMIT: &str = "unknown";

/// The commit this binary was built from, or [`UNKNOWN_COMMIT`].
///
/// Hook for the release build: it sets `VIPFLEET_COMMIT` at compile time
/// (a `build.rs` emitting `cargo:rustc-env=VIPFLEET_COMMIT=...`, or the
/// environment of `cargo build`), and `/metrics` picks it up from here
/// (`--version` can too). The label exists from the start so that its set
/// never changes when the commit arrives.
pub fn commit() -> &'static str {
    option_env!("VIPFLEET_COMMIT").unwrap_or(UNKNOWN_COMMIT)
}
