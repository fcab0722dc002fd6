//! One look at the local haproxy: a GET of its HTTP `monitor-uri` (200 means
//! up; haproxy answers 503 when a `monitor fail` condition holds), or
//! `show info` on its stats socket (an answer means the process is alive;
//! `Stopping: 1` means it is shutting down and about to stop serving).
//!
//! The HTTP check is a hand-written HTTP/1.0 request over a TCP stream: it
//! reads one status line from a process on the same host, which needs no
//! HTTP client, pool or TLS.

use std::future::Future;
use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{HealthTarget, HttpTarget};

/// The status line must fit in this; haproxy's is about 20 bytes.
const MAX_STATUS_LINE_BYTES: usize = 1024;
/// `show info` answers about 2 KiB; more means we are not talking to haproxy.
const MAX_INFO_BYTES: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("talking to {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("{target} answered {status_line:?}, not 200")]
    Status { target: String, status_line: String },
    #[error("{target}: {detail}")]
    Answer { target: String, detail: String },
}

/// One health check of whatever the node runs; a trait so the monitor's
/// timing is tested without sockets.
pub trait Probe: Send + Sync {
    /// `Ok` when the target can serve. The caller bounds the time.
    fn probe(&self) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// The real probe of the local haproxy.
#[derive(Clone, Debug)]
pub struct HaproxyProbe {
    target: HealthTarget,
}

impl HaproxyProbe {
    pub fn new(target: HealthTarget) -> Self {
        Self { target }
    }
}

impl Probe for HaproxyProbe {
    async fn probe(&self) -> Result<(), ProbeError> {
        match &self.target {
            HealthTarget::Http(target) => probe_http(target).await,
            HealthTarget::StatsSocket(path) => probe_stats_socket(path).await,
        }
    }
}

async fn probe_http(target: &HttpTarget) -> Result<(), ProbeError> {
    let io_err = |source| ProbeError::Io {
        target: target.url().to_string(),
        source,
    };
    let mut stream = TcpStream::connect((target.connect_host(), target.port()))
        .await
        .map_err(|source| ProbeError::Connect {
            target: target.url().to_string(),
            source,
        })?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: vipfleet-agent\r\nConnection: close\r\n\r\n",
        target.path(),
        target.authority_host(),
        target.port()
    );
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;

    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE_BYTES {
        let n = stream.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let status_line = String::from_utf8_lossy(&buf[..line_end]).trim_end().to_string();
    let mut words = status_line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
        (Some(version), Some(_)) if version.starts_with("HTTP/") => Err(ProbeError::Status {
            target: target.url().to_string(),
            status_line,
        }),
        _ => Err(ProbeError::Answer {
            target: target.url().to_string(),
            detail: format!("not an HTTP status line: {status_line:?}"),
        }),
    }
}

async fn probe_stats_socket(path: &std::path::Path) -> Result<(), ProbeError> {
    let target = || path.display().to_string();
    let io_err = |source| ProbeError::Io {
        target: target(),
        source,
    };
    let mut stream = UnixStream::connect(path).await.map_err(|source| ProbeError::Connect {
        target: target(),
        source,
    })?;
    stream.write_all(b"show info\n").await.map_err(io_err)?;
    // haproxy closes the socket after answering a single command.
    let mut answer = String::new();
    (&mut stream)
        .take(MAX_INFO_BYTES)
        .read_to_string(&mut answer)
        .await
        .map_err(io_err)?;
    info_verdict(&answer).map_err(|detail| ProbeError::Answer {
        target: target(),
        detail,
    })
}

/// Judges a `show info` answer.
fn info_verdict(answer: &str) -> Result<(), String> {
    let field = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    match (field("Name"), field("Stopping")) {
        (None, _) => {
            let first = answer.lines().next().unwrap_or("");
            Err(format!("not a `show info` answer: {first:?}"))
        }
        (Some(_), Some("1")) => Err("haproxy is stopping (soft-stop)".to_string()),
        (Some(_), _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_info_answers_are_judged() {
        let info = "Name: HAProxy\nVersion: 2.6.12\nPid: 42\nStopping: 0\n\n";
        assert_eq!(info_verdict(info), Ok(()));
        assert_eq!(info_verdict("Name: HAProxy\nPid: 42\n"), Ok(()));
        assert!(info_verdict("Name: HAProxy\nStopping: 1\n")
            .unwrap_err()
            .contains("stopping"));
        assert!(info_verdict("Unknown command.\n").is_err());
        assert!(info_verdict("").is_err());
    }
}
