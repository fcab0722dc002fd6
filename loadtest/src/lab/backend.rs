//! The lab's application servers behind haproxy: a tiny HTTP/1.1 server
//! (`vipfleet-loadtest lab backend --listen ADDR --name NAME`) that answers
//! every request with 200 and its own name, keeps connections alive, and
//! nothing else. Its job is to be predictable, so that a failed request in a
//! report is vipfleet's doing, never the backend's.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

/// A request head larger than this is refused (the lab only sends tiny ones).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct BackendArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name in every answer's body and in the `X-Backend` header.
    #[arg(long, default_value = "backend")]
    pub name: String,
}

pub async fn run(args: BackendArgs) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    serve(listener, args.name).await
}

/// Serves forever on `listener`.
pub async fn serve(listener: TcpListener, name: String) -> Result<()> {
    info!(addr = ?listener.local_addr().ok(), %name, "backend listening");
    loop {
        let (stream, peer) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &name).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn connection(mut stream: TcpStream, name: &str) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read one request head; bodies are skipped by Content-Length.
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > MAX_HEAD_BYTES {
                stream
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
                    .await?;
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body_len = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let http10 = head.lines().next().is_some_and(|l| l.trim_end().ends_with("http/1.0"));
        let close = match header(&head, "connection") {
            Some("close") => true,
            Some("keep-alive") => false,
            _ => http10,
        };
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + body_len);
        let body = format!("{name}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        stream.write_all(answer.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` in a lowercased request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::http;

    #[tokio::test]
    async fn answers_200_with_its_name_over_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, "be-test".into()));
        let r = http::request(addr, "GET", "/", &[], "", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "be-test\n"));

        // Two requests, the first with a body, on one kept-alive connection.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    }
}
