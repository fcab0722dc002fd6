//! Helpers for the black-box tests in `tests/tests/`: they run the built
//! `vipfleet-agent` binary as a separate process and judge it only by what
//! it leaves in DynamoDB and EC2 (moto) and by its exit code and stderr.
//!
//! - [`agent_binary`] (and [`workspace_binary`] for the others) finds the
//!   binary next to the test executable (cargo does not build other
//!   packages' binaries for `cargo test`; `tests/run` runs
//!   `cargo build --workspace --bins` first).
//! - [`moto_endpoint`] reads `VIPFLEET_TEST_AWS_ENDPOINT` or says loudly
//!   that the test skips.
//! - [`agent_command`] gives a command with a closed environment, so no
//!   variable of the developer's shell (a real AWS profile, a stray
//!   `VIPFLEET_*`) changes what the test sees or reaches.
//! - [`Agent`] is a running agent whose process dies with the handle, and
//!   whose log is printed when the test fails; [`Workdir`] is a temporary
//!   directory kept on failure so the logs can be read afterwards.
//! - [`moto`] builds the VPC, subnet, route tables and ENIs in moto and reads
//!   back the lease table and the routes; [`fleet`] starts a small fleet of
//!   agents on top of it and waits until they have shared the VIPs.

pub mod fleet;
pub mod moto;

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The variable naming the moto server (`tests/run` starts one and sets it).
pub const ENDPOINT_VAR: &str = "VIPFLEET_TEST_AWS_ENDPOINT";
/// The region every test process uses (moto accepts any).
pub const REGION: &str = "us-east-1";
/// `EX_USAGE`: the agent's exit code for a configuration that cannot work.
pub const EXIT_CONFIG: i32 = 78;
/// A loopback port nothing listens on (discard): where the agent's IMDS
/// client and, in tests without moto, its AWS clients are pointed, so no
/// test ever reaches the link-local metadata address or a real AWS endpoint.
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";
/// Set (to anything) to keep every test's [`Workdir`], passing or not.
pub const KEEP_FILES_VAR: &str = "VIPFLEET_TEST_KEEP_FILES";
/// The agents' `VIPFLEET_LOG` filter (default `info`), e.g. `debug` to see
/// every route write in their logs.
pub const AGENT_LOG_VAR: &str = "VIPFLEET_TEST_AGENT_LOG";
/// How often a waiting helper looks at a child process again.
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of an agent's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// How often [`Agent::dashboard_addr`] reads the log again.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Writes straight to the stderr stream: the test harness captures
/// `eprintln!` of passing tests, and skips and measured times must be seen.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The moto endpoint, or `None` after saying loudly that `test` skips.
pub fn moto_endpoint(test: &str) -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            say(&format!(
                "SKIPPED (no moto): {test} needs {ENDPOINT_VAR} (e.g. http://127.0.0.1:5077); tests/run starts moto and sets it"
            ));
            None
        }
    }
}

/// A name no other test, run or process uses (tables, instance ids).
pub fn unique(kind: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("vipfleet-{kind}-{}-{nanos}", std::process::id())
}

/// The `vipfleet-agent` binary of this build.
pub fn agent_binary() -> PathBuf {
    workspace_binary("vipfleet-agent")
}

/// A binary of this workspace's build: the test executable is
/// `<target>/<profile>/deps/<test>-<hash>`, the binary
/// `<target>/<profile>/<name>`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()));
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first; tests/run does",
        binary.display()
    );
    binary
}

/// A `vipfleet-agent` command with a closed environment: AWS calls go to
/// `endpoint` (or to a dead loopback port) with moto's dummy credentials,
/// IMDS is off, and no variable of the caller's shell leaks in.
pub fn agent_command(endpoint: Option<&str>) -> Command {
    let mut cmd = Command::new(agent_binary());
    cmd.env_clear()
        .env("AWS_ENDPOINT_URL", endpoint.unwrap_or(DEAD_ENDPOINT))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEAD_ENDPOINT)
        .env(
            "VIPFLEET_LOG",
            std::env::var(AGENT_LOG_VAR).unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
    if let Ok(backtrace) = std::env::var("RUST_BACKTRACE") {
        cmd.env("RUST_BACKTRACE", backtrace);
    }
    cmd
}

/// How a command that ran to its end (or was stopped) went.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when a signal ended it, or it was killed after `timeout`.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Outcome {
    /// Everything a failed assertion should show.
    pub fn describe(&self) -> String {
        format!(
            "exit code {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            if self.timed_out { " (killed: timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` to its end, killing it after `timeout` (an agent that should
/// have refused its configuration must not hang the suite).
pub fn run_to_end(cmd: Command, timeout: Duration) -> Outcome {
    run_collecting(cmd, timeout, false)
}

/// [`run_to_end`] for a program that starts helper processes of its own
/// (Chromium's zygote and renderers, schemathesis' workers): it runs in a
/// process group of its own, and whatever is left of that group when it
/// ends, or when `timeout` passes, is killed with it, so no helper
/// outlives the test or holds its output pipes open.
pub fn run_group_to_end(mut cmd: Command, timeout: Duration) -> Outcome {
    cmd.process_group(0);
    run_collecting(cmd, timeout, true)
}

fn run_collecting(mut cmd: Command, timeout: Duration, own_group: bool) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(status) => (Some(status), false),
        None => {
            let _ = child.kill();
            (child.wait().ok(), true)
        }
    };
    if own_group {
        // The group's id is the leader's pid, which the kernel does not
        // hand out again while the group has members: this reaches only
        // the helpers this command started. "No such process" is the
        // usual answer: they ended with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
    }
    Outcome {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    }
}

/// The child's exit status if it ends within `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(CHILD_POLL_INTERVAL);
    }
}

/// A temporary directory for configs and logs; kept (and its path printed)
/// when the test fails or [`KEEP_FILES_VAR`] is set, removed otherwise.
pub struct Workdir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Workdir {
    pub fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vipfleet-{test}-"))
            .tempdir()
            .expect("temporary directory");
        let path = dir.path().to_path_buf();
        Self { dir: Some(dir), path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed || std::env::var_os(KEEP_FILES_VAR).is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                let why = if failed { "test failed" } else { KEEP_FILES_VAR };
                say(&format!("{why}: files kept in {}", kept.display()));
            }
        }
    }
}

/// A running `vipfleet-agent run`, its stdout and stderr in a log file.
/// Dropping the handle kills the process; if the test is failing, the log's
/// path and last lines are printed first.
pub struct Agent {
    pub name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Agent {
    /// Starts `cmd` (from [`agent_command`], with its arguments) with its
    /// output going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");
        cmd.stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("SIGKILL the agent");
        self.status = Some(self.child.wait().expect("reap the killed agent"));
    }

    /// `kill -TERM`: the agent should drain and exit.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status, if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The address the agent's dashboard listens on, from the `bound=[…]`
    /// field of its "dashboard" log line (the config asks for port 0).
    /// Panics if the line does not appear within `timeout` or the agent
    /// exits first.
    pub fn dashboard_addr(&mut self, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(bound_dashboard_addr) {
                return addr;
            }
            if let Some(status) = self.exit_status() {
                panic!("agent {} exited with {status} before serving its dashboard", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "agent {} logged no dashboard address within {timeout:?}",
                self.name
            );
            std::thread::sleep(LOG_POLL_INTERVAL);
        }
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read log: {e}>"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            say(&format!(
                "--- agent {} (pid {}, {:?}), log {} (last {LOG_TAIL_LINES} lines) ---\n{}",
                self.name,
                self.child.id(),
                self.status,
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            ));
        }
    }
}

/// The first address in a text log line like `… dashboard listen=[…]
/// bound=[127.0.0.1:40123] …`, whether or not the log is coloured.
fn bound_dashboard_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    if !plain.contains(" dashboard ") {
        return None;
    }
    let list = plain.split_once("bound=[")?.1.split_once(']')?.0;
    list.split(',').next()?.trim().parse().ok()
}

/// `text` without ANSI colour sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A TOML array of strings.
pub fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{:?}", s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_address_is_read_from_plain_and_coloured_logs() {
        let plain = "2026-11-26T10:36:52Z  INFO vipfleet_agent::app: dashboard listen=[127.0.0.1:0] \
                     bound=[127.0.0.1:40123] drain_endpoints=false";
        let coloured = "\u{1b}[2m2026-11-26T10:36:52Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m dashboard \
                        \u{1b}[3mbound\u{1b}[0m\u{1b}[2m=\u{1b}[0m[127.0.0.1:40124, 10.0.1.5:9180] x";
        assert_eq!(bound_dashboard_addr(plain), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(bound_dashboard_addr(coloured), Some("127.0.0.1:40124".parse().unwrap()));
        assert_eq!(bound_dashboard_addr("INFO dashboard listen=[127.0.0.1:0]"), None);
        assert_eq!(bound_dashboard_addr("INFO claimed bound=[127.0.0.1:1]"), None);
    }

    #[test]
    fn a_timed_out_group_is_killed_with_its_helpers() {
        // The helper keeps stdout open: if it survived, reading the output
        // would wait for its whole sleep.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo started; sleep 60"]);
        let began = Instant::now();
        let outcome = run_group_to_end(cmd, Duration::from_millis(300));
        assert!(outcome.timed_out, "{}", outcome.describe());
        assert_eq!(outcome.stdout, "started\n");
        assert!(began.elapsed() < Duration::from_secs(20), "took {:?}", began.elapsed());
    }
}

/// One HTTP/1.1 request to a loopback server (an agent's dashboard): the
/// status line's code and the body. `bearer` adds an Authorization header.
pub async fn http(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((code, body))
}

/// The value of one sample line (`name{labels} value`) of a `/metrics` page;
/// 0 when the series is absent (a counter never incremented).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
