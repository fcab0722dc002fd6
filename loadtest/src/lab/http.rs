//! A minimal HTTP/1.1 client for the lab's own plumbing (is moto up, the
//! IMDS emulator's control API): one request per connection
//! (`Connection: close`), the body read to the end. Nothing here is on a
//! measured path; the load generator has its own client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `http://host:port[/...]` → the socket address (IPv4 literal hosts only:
/// every lab endpoint is one).
pub fn endpoint_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?} is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{url:?} does not name an IPv4 address and port"))
}

/// Sends one request and reads the whole answer within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response> {
    tokio::time::timeout(timeout, exchange(addr, method, path, headers, body))
        .await
        .map_err(|_| anyhow!("{method} http://{addr}{path}: no answer within {timeout:?}"))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw).with_context(|| format!("{method} http://{addr}{path}"))
}

fn parse(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("answer without a complete header ({} bytes)", raw.len()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse::<u16>().ok())) {
        (Some(v), Some(status)) if v.starts_with("HTTP/1.") => Ok(Response {
            status,
            body: body.to_string(),
        }),
        _ => bail!("not an HTTP status line: {status_line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_endpoints_parse() {
        let r = parse(b"HTTP/1.1 204 No Content\r\nA: b\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(r.body, "hello");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
        assert_eq!(
            endpoint_addr("http://10.77.0.254:5000").unwrap(),
            "10.77.0.254:5000".parse().unwrap()
        );
        assert_eq!(
            endpoint_addr("http://127.0.0.1:1/x").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(endpoint_addr("https://127.0.0.1:1").is_err());
    }
}
