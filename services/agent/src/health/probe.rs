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
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::HealthConfigError;

/// The status line must fit in this; haproxy's is about 20 bytes.
const MAX_STATUS_LINE_BYTES: usize = 1024;
/// `show info` answers about 2 KiB; more means we are not talking to haproxy.
const MAX_INFO_BYTES: u64 = 64 * 1024;

/// What to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthTarget {
    /// haproxy's `monitor-uri`, e.g. `http://127.0.0.1:8404/healthz`.
    Http(HttpTarget),
    /// haproxy's stats socket, e.g. `/run/haproxy/admin.sock`.
    StatsSocket(PathBuf),
}

impl HealthTarget {
    pub fn http(url: &str) -> Result<Self, HealthConfigError> {
        HttpTarget::parse(url).map(Self::Http)
    }
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    url: String,
    /// As written, brackets included for IPv6: this is the `Host` header.
    authority_host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<Self, HealthConfigError> {
        let bad = |reason| HealthConfigError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad("only http:// is supported (haproxy's monitor-uri on this node)")),
            None => return Err(bad("expected http://host[:port]/path")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(_) => return Err(bad("expected a path starting with '/' after the host")),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if path.contains(['#', ' ', '\r', '\n']) {
            return Err(bad("the path must not contain spaces, line breaks or a fragment"));
        }
        // An IPv6 literal is bracketed and contains colons of its own.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..].parse::<u16>().map_err(|_| bad("invalid port"))?;
                (&authority[..i], port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("missing host"));
        }
        Ok(Self {
            url: url.to_string(),
            authority_host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect_host(&self) -> &str {
        self.authority_host.trim_start_matches('[').trim_end_matches(']')
    }
}

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
        target: target.url.clone(),
        source,
    };
    let mut stream = TcpStream::connect((target.connect_host(), target.port))
        .await
        .map_err(|source| ProbeError::Connect {
            target: target.url.clone(),
            source,
        })?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: vipfleet-agent\r\nConnection: close\r\n\r\n",
        target.path, target.authority_host, target.port
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
            target: target.url.clone(),
            status_line,
        }),
        _ => Err(ProbeError::Answer {
            target: target.url.clone(),
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
    fn urls_parse() {
        let t = HttpTarget::parse("http://127.0.0.1:8404/healthz").unwrap();
        assert_eq!(
            (t.connect_host(), t.port, t.path.as_str()),
            ("127.0.0.1", 8404, "/healthz")
        );
        let t = HttpTarget::parse("HTTP://localhost").unwrap();
        assert_eq!((t.connect_host(), t.port, t.path.as_str()), ("localhost", 80, "/"));
        let t = HttpTarget::parse("http://[::1]:81/a?b=c").unwrap();
        assert_eq!((t.connect_host(), t.port, t.path.as_str()), ("::1", 81, "/a?b=c"));
        let t = HttpTarget::parse("http://[::1]/x").unwrap();
        assert_eq!((t.connect_host(), t.port), ("::1", 80));
        for bad in [
            "https://127.0.0.1/healthz",
            "127.0.0.1:8404/healthz",
            "http://:8404/x",
            "http://host:99999/",
            "http://u:p@host/",
            "http://host?x",
            "http://host/a b",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

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
