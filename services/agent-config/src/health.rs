//! The `[health]` section: what to check (haproxy's monitor URI or its
//! stats socket) and how often; the probes themselves are the agent's
//! (`vipfleet_agent::health`).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Defaults of the `[health]` config section.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_RISE: u32 = 2;
/// A check may take at most this long, and never longer than the interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);

/// One configured health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub target: HealthTarget,
    pub interval: Duration,
    /// Bounds one probe; a probe that runs out counts as a failure.
    pub timeout: Duration,
    /// Consecutive failures that turn a healthy node unhealthy.
    pub fall: u32,
    /// Consecutive successes that turn an unhealthy node healthy again.
    pub rise: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HealthConfigError {
    #[error("health url {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("health {field} must be at least 1, got {value}")]
    ZeroCount { field: &'static str, value: u32 },
    #[error("health interval must be positive")]
    ZeroInterval,
    #[error("health timeout {timeout:?} must be positive and at most the interval {interval:?}")]
    BadTimeout { timeout: Duration, interval: Duration },
}

impl HealthCheck {
    /// A check with the default interval, timeout, fall and rise.
    pub fn new(target: HealthTarget) -> Self {
        Self {
            target,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
        }
    }

    pub fn validate(&self) -> Result<(), HealthConfigError> {
        if self.fall == 0 {
            return Err(HealthConfigError::ZeroCount {
                field: "fall",
                value: 0,
            });
        }
        if self.rise == 0 {
            return Err(HealthConfigError::ZeroCount {
                field: "rise",
                value: 0,
            });
        }
        if self.interval.is_zero() {
            return Err(HealthConfigError::ZeroInterval);
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(HealthConfigError::BadTimeout {
                timeout: self.timeout,
                interval: self.interval,
            });
        }
        Ok(())
    }
}

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

    /// The host as written, brackets included for IPv6: the `Host` header.
    pub fn authority_host(&self) -> &str {
        &self.authority_host
    }

    /// The host to connect to (an IPv6 literal without its brackets).
    pub fn connect_host(&self) -> &str {
        self.authority_host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query to request.
    pub fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t = HttpTarget::parse("http://127.0.0.1:8404/healthz").unwrap();
        assert_eq!((t.connect_host(), t.port(), t.path()), ("127.0.0.1", 8404, "/healthz"));
        let t = HttpTarget::parse("HTTP://localhost").unwrap();
        assert_eq!((t.connect_host(), t.port(), t.path()), ("localhost", 80, "/"));
        let t = HttpTarget::parse("http://[::1]:81/a?b=c").unwrap();
        assert_eq!((t.connect_host(), t.port(), t.path()), ("::1", 81, "/a?b=c"));
        let t = HttpTarget::parse("http://[::1]/x").unwrap();
        assert_eq!((t.connect_host(), t.port()), ("::1", 80));
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
}
