//! The load generator: HTTP GETs to every VIP at a fixed rate, each with a
//! short timeout, one record per request. It runs inside a client namespace
//! (`ip netns exec <client> vipfleet-loadtest load …`), so every request
//! crosses that client's router, as a client in the VPC would.
//!
//! The HTTP is written by hand (one GET, one status line): the generator must
//! measure the network path, not a client library's pooling and retries.
//! `new-conn` opens a connection per request (what a failover breaks first);
//! `keep-alive` reuses one per VIP and reconnects after any failure.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

pub const DEFAULT_RATE_PER_VIP: f64 = 20.0;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// A status line longer than this is not from our backends.
const MAX_STATUS_LINE_BYTES: u64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    NewConn,
    KeepAlive,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// VIP addresses to load, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub vips: Vec<Ipv4Addr>,
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Requests per second to each VIP.
    #[arg(long, default_value_t = DEFAULT_RATE_PER_VIP)]
    pub rate: f64,
    /// How long to run, in seconds.
    #[arg(long)]
    pub duration: f64,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_millis() as u64)]
    pub timeout_ms: u64,
    #[arg(long, value_enum, default_value_t = Mode::NewConn)]
    pub mode: Mode,
    /// Label of this client (its route table), copied into every record.
    #[arg(long, default_value = "client")]
    pub client: String,
    /// Where to write one JSON record per request.
    #[arg(long)]
    pub out: PathBuf,
}

/// One request as the generator saw it. `t_ms` is wall-clock Unix time in
/// milliseconds at the send: the harness lines it up with its fault events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub client: String,
    pub vip: Ipv4Addr,
    pub t_ms: u64,
    pub ok: bool,
    pub latency_ms: u64,
    /// Why it failed (`timeout`, `connect: …`, `status 503`), empty when ok.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Record {
    /// When the outcome was known (the send time plus the latency).
    pub fn done_ms(&self) -> u64 {
        self.t_ms + self.latency_ms
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.rate) || !positive(args.duration) {
        bail!("--rate and --duration must be positive");
    }
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_millis(args.timeout_ms);
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    for vip in args.vips.iter().copied() {
        let target = SocketAddr::from((vip, args.port));
        let (tx, client, mode) = (tx.clone(), args.client.clone(), args.mode);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            // A stalled request must not be followed by a burst: keep the rate.
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut conn: Option<BufReader<TcpStream>> = None;
            loop {
                let at = tick.tick().await;
                if at >= deadline {
                    return;
                }
                let t_ms = unix_ms();
                let started = Instant::now();
                let result = match mode {
                    Mode::NewConn => tokio::time::timeout(timeout, get_new(target)).await,
                    Mode::KeepAlive => tokio::time::timeout(timeout, get_reusing(target, &mut conn)).await,
                };
                let error = match result {
                    Ok(Ok(())) => String::new(),
                    Ok(Err(e)) => e,
                    Err(_) => "timeout".to_string(),
                };
                if !error.is_empty() {
                    conn = None;
                }
                let record = Record {
                    client: client.clone(),
                    vip,
                    t_ms,
                    ok: error.is_empty(),
                    latency_ms: started.elapsed().as_millis() as u64,
                    error,
                };
                if tx.send(record).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let (mut sent, mut ok) = (0u64, 0u64);
    while let Some(record) = rx.recv().await {
        sent += 1;
        ok += u64::from(record.ok);
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{}: {sent} requests, {ok} ok", args.client);
    Ok(())
}

fn request(target: SocketAddr, keep_alive: bool) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n\r\n",
        target.ip()
    )
}

async fn get_new(target: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(target).await.map_err(|e| format!("connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    conn.get_mut()
        .write_all(request(target, false).as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    read_response(&mut conn, false).await
}

async fn get_reusing(target: SocketAddr, conn: &mut Option<BufReader<TcpStream>>) -> Result<(), String> {
    if conn.is_none() {
        let stream = TcpStream::connect(target).await.map_err(|e| format!("connect: {e}"))?;
        *conn = Some(BufReader::new(stream));
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    c.get_mut()
        .write_all(request(target, true).as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    read_response(c, true).await
}

/// Reads a response; a 2xx status is success. With `keep_alive` the body is
/// consumed by its `Content-Length` so the connection can be reused.
async fn read_response(conn: &mut BufReader<TcpStream>, keep_alive: bool) -> Result<(), String> {
    let mut line = String::new();
    (&mut *conn)
        .take(MAX_STATUS_LINE_BYTES)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        let n = conn.read_line(&mut header).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if keep_alive {
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
    }
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Reads the records a generator wrote.
pub fn read_records(path: &std::path::Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad record in {}: {l}", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 answering `status` to every request.
    async fn server(status: u16) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match conn.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        let body = "ok\n";
                        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn both_modes_read_a_good_answer_and_reject_a_bad_one() {
        let good = server(200).await;
        let bad = server(503).await;
        assert_eq!(get_new(good).await, Ok(()));
        assert_eq!(get_new(bad).await, Err("status 503".to_string()));
        let mut conn = None;
        for _ in 0..3 {
            assert_eq!(get_reusing(good, &mut conn).await, Ok(()));
        }
        assert!(conn.is_some(), "the connection is kept");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = get_new(addr).await.unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }
}
