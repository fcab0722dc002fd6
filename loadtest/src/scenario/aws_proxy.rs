//! A fault proxy between the agents and moto, steered by the scenario at
//! runtime: store calls delayed (a slow DynamoDB), one node's traffic held
//! (a store blackout), the fleet's Scans held to a rate and the rest
//! throttled (a table that serves fewer reads than the fleet asks), EC2
//! calls naming one route table refused (a table deleted or denied), and
//! every mutating EC2 call logged per node and table.
//!
//! Why not `tc netem`: the lab's kernel has no netem qdisc. Why HTTP and
//! not bytes: a refused EC2 call must be answered as EC2 would, and a
//! delay must apply to DynamoDB's calls only (rewired, the agents send
//! DynamoDB, EC2 and Auto Scaling calls here, and the proxy forwards each
//! to its service's moto). Each request is read
//! whole (the SDK sends a `Content-Length`), forwarded to moto on a
//! connection of its own, and answered with `Connection: close`, so the
//! proxy never has to track a kept-alive connection's framing.
//!
//! Nodes are told apart by source address: every agent calls from its own
//! namespace's address. The agents are pointed here by [`super::rewire`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A request head longer than this is not the SDK's.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Nor a body longer than this (route and lease calls are a few KiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A forwarded call that moto has not answered in this long is abandoned;
/// longer than any SDK attempt timeout, so the agent gives up first.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How a refused EC2 call is answered. One kind for now: a deleted table
/// (a client error the SDK does not retry, so the proxy counts the agents'
/// own calls); throttling or a 5xx would go here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ec2Refusal {
    NotFound,
}

/// What the proxy does to traffic; the scenario changes it at any time.
#[derive(Clone, Debug, Default)]
struct Rules {
    /// Added before every DynamoDB request is forwarded, by source node;
    /// `store_latency_all` for nodes not listed.
    store_latency: BTreeMap<IpAddr, Duration>,
    store_latency_all: Duration,
    /// Nodes whose store traffic is held (requests and answers) until the
    /// blackout ends.
    blackout: BTreeSet<IpAddr>,
    /// EC2 calls whose parameters name this route table are refused.
    failing_table: Option<(String, Ec2Refusal)>,
    /// DynamoDB Scans the whole fleet may make a second; the rest are
    /// throttled.
    scans_per_second: Option<f64>,
}

impl Rules {
    fn latency(&self, node: IpAddr) -> Duration {
        self.store_latency.get(&node).copied().unwrap_or(self.store_latency_all)
    }
}

/// One mutating EC2 call (a route created, replaced or deleted) as the
/// proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2Call {
    pub t_ms: u64,
    pub node: IpAddr,
    pub action: String,
    /// Route tables the call names.
    pub tables: Vec<String>,
    /// Whether the proxy refused it.
    pub refused: bool,
}

pub struct AwsProxy {
    addr: SocketAddr,
    rules: watch::Sender<Rules>,
    calls: Arc<Mutex<Vec<Ec2Call>>>,
    scans: Arc<Mutex<ScanBucket>>,
    accept: JoinHandle<()>,
}

/// The fleet's Scans under a rate limit: a bucket of a second's worth,
/// and what it let through and refused.
#[derive(Debug, Default)]
struct ScanBucket {
    tokens: f64,
    refilled_at: Option<std::time::Instant>,
    counts: ScanCounts,
}

/// Scans the proxy forwarded and throttled while a limit was on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub forwarded: u64,
    pub throttled: u64,
}

impl ScanBucket {
    /// Takes a token at `now` for one Scan, if the limit leaves one.
    fn admit(&mut self, per_second: f64, now: std::time::Instant) -> bool {
        let elapsed = self
            .refilled_at
            .map_or(per_second, |t| now.duration_since(t).as_secs_f64() * per_second);
        self.tokens = (self.tokens + elapsed).min(per_second);
        self.refilled_at = Some(now);
        let admitted = self.tokens >= 1.0;
        if admitted {
            self.tokens -= 1.0;
            self.counts.forwarded += 1;
        } else {
            self.counts.throttled += 1;
        }
        admitted
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the proxy forwards: DynamoDB's calls and every other service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstreams {
    pub aws: SocketAddr,
    pub dynamodb: SocketAddr,
}

impl Upstreams {
    fn of(&self, request: &Request) -> SocketAddr {
        if request.is_dynamodb() {
            self.dynamodb
        } else {
            self.aws
        }
    }
}

impl AwsProxy {
    /// Listens on `listen_ip` (a port of its choosing) and forwards to `upstreams`.
    pub async fn start(listen_ip: IpAddr, upstreams: Upstreams) -> Result<Self> {
        let listener = TcpListener::bind((listen_ip, 0))
            .await
            .with_context(|| format!("binding the fault proxy on {listen_ip}"))?;
        let addr = listener.local_addr()?;
        let (rules, _) = watch::channel(Rules::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let scans = Arc::new(Mutex::new(ScanBucket::default()));
        let (rules_rx, log, bucket) = (rules.subscribe(), calls.clone(), scans.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (rules, log, bucket) = (rules_rx.clone(), log.clone(), bucket.clone());
                tokio::spawn(async move {
                    // A failed exchange is the agent's to see (a reset
                    // connection); nothing for the proxy to report.
                    let _ = serve(stream, peer.ip(), upstreams, rules, log, bucket).await;
                });
            }
        });
        Ok(Self {
            addr,
            rules,
            calls,
            scans,
            accept,
        })
    }

    /// What the agents get as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds `latency` to every node's DynamoDB requests.
    pub fn set_store_latency(&self, latency: Duration) {
        self.rules.send_modify(|r| {
            r.store_latency.clear();
            r.store_latency_all = latency;
        });
    }

    /// Holds (`true`) or releases `node`'s store traffic.
    pub fn set_blackout(&self, node: IpAddr, on: bool) {
        self.rules.send_modify(|r| {
            if on {
                r.blackout.insert(node);
            } else {
                r.blackout.remove(&node);
            }
        });
    }

    /// Refuses every EC2 call that names `table`, or none.
    pub fn fail_table(&self, table: Option<(String, Ec2Refusal)>) {
        self.rules.send_modify(|r| r.failing_table = table);
    }

    /// Holds the fleet's DynamoDB Scans to `per_second` (a bucket of one
    /// second's worth), throttling the rest as DynamoDB does; or lifts it.
    pub fn limit_scans(&self, per_second: Option<f64>) {
        self.rules.send_modify(|r| r.scans_per_second = per_second);
    }

    /// Scans forwarded and throttled under a limit so far.
    pub fn scan_counts(&self) -> ScanCounts {
        self.scans.lock().map(|b| b.counts).unwrap_or_default()
    }

    /// Every mutating EC2 call so far.
    pub fn ec2_calls(&self) -> Vec<Ec2Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Logs a call as if an agent had made it.
    #[cfg(test)]
    pub fn log_for_test(&self, t_ms: u64, node: IpAddr, table: &str) {
        self.calls.lock().unwrap().push(Ec2Call {
            t_ms,
            node,
            action: "ReplaceRoute".into(),
            tables: vec![table.to_string()],
            refused: true,
        });
    }
}

/// A request read off the wire.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn is_dynamodb(&self) -> bool {
        self.header("x-amz-target").is_some_and(|t| t.starts_with("DynamoDB_"))
    }

    fn is_scan(&self) -> bool {
        self.header("x-amz-target").is_some_and(|t| t.ends_with(".Scan"))
    }

    /// The head with `Connection: close`, whatever the client asked.
    fn head_closing(&self) -> String {
        let mut out = String::new();
        for line in self.head.split("\r\n").filter(|l| !l.is_empty()) {
            if line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        out
    }
}

/// The query-protocol parameters of an EC2 call (`Action=…&RouteTableId=…`).
fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The EC2 actions that change a route.
const MUTATING_ACTIONS: &[&str] = &["CreateRoute", "ReplaceRoute", "DeleteRoute"];

/// Route table ids named anywhere in the parameters (`RouteTableId`,
/// `RouteTableId.1`, a filter's values).
fn tables_named(params: &BTreeMap<String, String>) -> Vec<String> {
    let mut tables: Vec<String> = params.values().filter(|v| v.starts_with("rtb-")).cloned().collect();
    tables.sort();
    tables.dedup();
    tables
}

/// DynamoDB's answer to a call over the table's throughput.
fn throttled() -> Vec<u8> {
    let body = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\",\
                \"message\":\"The level of configured provisioned throughput for the table was exceeded.\"}";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// EC2's error document for a refused call.
fn refusal(refusal: Ec2Refusal, table: &str) -> Vec<u8> {
    let (status, code, message) = match refusal {
        Ec2Refusal::NotFound => (
            "400 Bad Request",
            "InvalidRouteTableID.NotFound",
            format!("The routeTable ID '{table}' does not exist"),
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>vipfleet-lab-fault</RequestID></Response>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Reads one HTTP message (head and `Content-Length` body) from `stream`;
/// `None` when the peer closed before sending one. Without a length the
/// body runs to the end of the stream (an answer on a closing connection).
async fn read_message(stream: &mut TcpStream, to_eof_without_length: bool) -> Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD_BYTES {
            bail!("a message head over {MAX_HEAD_BYTES} bytes");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("the peer closed in the middle of a message head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("chunked messages are not supported by the lab's proxy");
    }
    let mut body = buf[head_end..].to_vec();
    match content_length(&head) {
        Some(len) if len > MAX_BODY_BYTES => bail!("a body of {len} bytes"),
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("the peer closed in the middle of a body");
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if to_eof_without_length => {
            stream.read_to_end(&mut body).await?;
        }
        None => body.clear(),
    }
    Ok(Some(Request { head, body }))
}

/// Waits while `node`'s store traffic is held.
async fn pass_blackout(rules: &mut watch::Receiver<Rules>, node: IpAddr) {
    // An error means the proxy is gone: nothing holds the traffic any more.
    let _ = rules.wait_for(|r| !r.blackout.contains(&node)).await;
}

async fn serve(
    mut client: TcpStream,
    node: IpAddr,
    upstreams: Upstreams,
    mut rules: watch::Receiver<Rules>,
    log: Arc<Mutex<Vec<Ec2Call>>>,
    scans: Arc<Mutex<ScanBucket>>,
) -> Result<()> {
    let Some(request) = read_message(&mut client, false).await? else {
        return Ok(());
    };
    let store = request.is_dynamodb();
    if store {
        let latency = rules.borrow().latency(node);
        tokio::time::sleep(latency).await;
        pass_blackout(&mut rules, node).await;
        let limit = rules.borrow().scans_per_second;
        if let Some(per_second) = limit.filter(|_| request.is_scan()) {
            let admitted = scans
                .lock()
                .map(|mut b| b.admit(per_second, std::time::Instant::now()))
                .unwrap_or(true);
            if !admitted {
                client.write_all(&throttled()).await?;
                return Ok(());
            }
        }
    } else {
        let params = form(&request.body);
        let action = params.get("Action").cloned().unwrap_or_default();
        let tables = tables_named(&params);
        let failing = rules.borrow().failing_table.clone();
        let refused = failing.filter(|(t, _)| tables.contains(t));
        if MUTATING_ACTIONS.contains(&action.as_str()) {
            if let Ok(mut calls) = log.lock() {
                calls.push(Ec2Call {
                    t_ms: crate::load::unix_ms(),
                    node,
                    action,
                    tables,
                    refused: refused.is_some(),
                });
            }
        }
        if let Some((table, how)) = refused {
            client.write_all(&refusal(how, &table)).await?;
            return Ok(());
        }
    }
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut moto = TcpStream::connect(upstreams.of(&request)).await?;
        moto.write_all(request.head_closing().as_bytes()).await?;
        moto.write_all(&request.body).await?;
        read_message(&mut moto, true).await
    })
    .await
    .context("moto did not answer in time")??
    .context("moto closed without answering")?;
    if store {
        pass_blackout(&mut rules, node).await;
    }
    let mut out = Request {
        head: answer.head,
        body: Vec::new(),
    }
    .head_closing()
    .into_bytes();
    // Without a length the body ran to moto's close; give the client one.
    if content_length(&String::from_utf8_lossy(&out)).is_none() {
        let head = String::from_utf8_lossy(&out).trim_end().to_string();
        out = format!("{head}\r\nContent-Length: {}\r\n\r\n", answer.body.len()).into_bytes();
    }
    out.extend_from_slice(&answer.body);
    client.write_all(&out).await?;
    client.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_parameters_name_their_route_tables() {
        let body = b"Action=ReplaceRoute&Version=2016-11-15&RouteTableId=rtb-1a2b&DestinationCidrBlock=10.200.0.1%2F32&NetworkInterfaceId=eni-9";
        let params = form(body);
        assert_eq!(params["Action"], "ReplaceRoute");
        assert_eq!(params["DestinationCidrBlock"], "10.200.0.1/32");
        assert_eq!(tables_named(&params), vec!["rtb-1a2b".to_string()]);
        let describe = form(b"Action=DescribeRouteTables&RouteTableId.1=rtb-b&RouteTableId.2=rtb-a&Filter.1.Name=x");
        assert_eq!(tables_named(&describe), vec!["rtb-a".to_string(), "rtb-b".to_string()]);
        assert_eq!(percent_decode("a%2"), "a%2", "a cut escape is kept as it is");
    }

    #[test]
    fn the_forwarded_head_asks_to_close_and_a_refusal_is_ec2s_error() {
        let r = Request {
            head: "POST / HTTP/1.1\r\nHost: x\r\nconnection: keep-alive\r\nContent-Length: 3\r\n\r\n".into(),
            body: b"abc".to_vec(),
        };
        assert_eq!(
            r.head_closing(),
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(content_length(&r.head), Some(3));
        assert!(!r.is_dynamodb());
        let text = String::from_utf8(refusal(Ec2Refusal::NotFound, "rtb-1")).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains("<Code>InvalidRouteTableID.NotFound</Code>"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(content_length(head), Some(body.len()));
    }

    #[test]
    fn the_scan_limit_lets_a_seconds_worth_through_and_throttles_the_rest() {
        let start = std::time::Instant::now();
        let mut bucket = ScanBucket::default();
        let admitted = (0..5).filter(|_| bucket.admit(2.0, start)).count();
        assert_eq!(admitted, 2, "a burst gets a second's worth");
        assert!(
            bucket.admit(2.0, start + Duration::from_millis(500)),
            "refilled at 2 a second"
        );
        assert!(!bucket.admit(2.0, start + Duration::from_millis(500)));
        assert_eq!(
            bucket.counts,
            ScanCounts {
                forwarded: 3,
                throttled: 4
            }
        );
        let text = String::from_utf8(throttled()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert_eq!(content_length(head), Some(body.len()));
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(error["__type"]
            .as_str()
            .unwrap()
            .ends_with("#ProvisionedThroughputExceededException"));
    }

    /// A moto's stand-in: answers every request with its own body and its
    /// `name` in `X-Upstream`, then closes.
    async fn echo_upstream(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let req = read_message(&mut s, false).await.unwrap().unwrap();
                    assert!(req.head.contains("Connection: close\r\n"), "{}", req.head);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nX-Upstream: {name}\r\nContent-Length: {}\r\n\r\n",
                        req.body.len()
                    );
                    s.write_all(answer.as_bytes()).await.unwrap();
                    s.write_all(&req.body).await.unwrap();
                });
            }
        });
        addr
    }

    async fn call(proxy: &AwsProxy, head_extra: &str, body: &str) -> String {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{head_extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn calls_are_forwarded_held_and_refused_as_told() {
        let upstreams = Upstreams {
            aws: echo_upstream("aws").await,
            dynamodb: echo_upstream("dynamodb").await,
        };
        let proxy = AwsProxy::start("127.0.0.1".parse().unwrap(), upstreams).await.unwrap();
        let route = "Action=ReplaceRoute&RouteTableId=rtb-bad&DestinationCidrBlock=10.200.0.1%2F32";
        let answer = call(&proxy, "", route).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.contains("X-Upstream: aws\r\n") && answer.ends_with(route),
            "{answer}"
        );

        proxy.fail_table(Some(("rtb-bad".into(), Ec2Refusal::NotFound)));
        let answer = call(&proxy, "", route).await;
        assert!(answer.contains("InvalidRouteTableID.NotFound"), "{answer}");
        let other = call(&proxy, "", "Action=ReplaceRoute&RouteTableId=rtb-good").await;
        assert!(other.starts_with("HTTP/1.1 200 OK"), "{other}");
        let refused: Vec<bool> = proxy.ec2_calls().iter().map(|c| c.refused).collect();
        assert_eq!(refused, vec![false, true, false]);

        // A store call during a blackout is answered only once it ends.
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        proxy.set_blackout(me, true);
        let proxy = Arc::new(proxy);
        let held = tokio::spawn({
            let proxy = proxy.clone();
            async move { call(&proxy, "X-Amz-Target: DynamoDB_20120810.Scan\r\n", "{}").await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!held.is_finished(), "answered during the blackout");
        proxy.set_blackout(me, false);
        let answer = held.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK")
                && answer.contains("X-Upstream: dynamodb\r\n")
                && answer.ends_with("{}"),
            "{answer}"
        );
        assert_eq!(proxy.ec2_calls().len(), 3, "store calls are not EC2's");
    }
}
