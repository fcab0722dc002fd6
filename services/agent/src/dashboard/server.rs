//! The dashboard's HTTP/1 server, bounded so that no client can take the
//! node out of the fleet through it.
//!
//! Every connection holds a file descriptor, and the agent shares its file
//! limit (1024 under the systemd unit) with the heartbeat's connections to
//! DynamoDB. With no bound, 1,143 idle connections to the dashboard port
//! made heartbeats fail with "Too many open files" and the node's VIPs
//! moved away. So:
//!
//! - at most [`MAX_CONNECTIONS`] are open at once, over all listeners; a
//!   connection beyond that is accepted and closed at once (counted in
//!   `vipfleet_dashboard_connections_rejected_total`). Closing, rather than
//!   leaving it in the listen backlog, tells the client at once and keeps
//!   the descriptors the agent holds at the limit plus one;
//! - a connection must send a complete request header within
//!   [`HEADER_READ_TIMEOUT`] of opening or of its previous response, else
//!   it is closed: that bounds slow headers and idle keep-alive alike
//!   (hyper's header read timer runs whenever it waits for a request head);
//! - a connection lives at most [`CONNECTION_MAX_LIFETIME`]: then it is
//!   closed after the request in progress, or after [`CLOSE_GRACE`] if that
//!   request does not finish (a client that stops reading its answer).
//!
//! On shutdown the listeners close, open connections close the same way,
//! and [`serve_with`] returns once every one is gone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant as TokioInstant;
use tracing::{debug, warn};

use super::metrics::Metrics;

/// Open dashboard connections at most, over all listeners: a quarter of
/// the usual 1024 file limit, far more than any number of operators,
/// Prometheus servers and probes need.
pub const MAX_CONNECTIONS: usize = 256;
/// A request header must be complete within this of the connection
/// opening or of the previous response; a scrape sends it in microseconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After this a connection is closed once its current request is answered,
/// so even a busy keep-alive client gives its slot back now and then.
pub const CONNECTION_MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long a closing connection may take to finish its request.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (the process is out of descriptors, say)
/// so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per listener this often while connections are
/// turned away.
const REJECT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The bounds of one server; tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_lifetime: Duration,
    pub close_grace: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_lifetime: CONNECTION_MAX_LIFETIME,
        close_grace: CLOSE_GRACE,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `app` on every listener within `limits` until `shutdown`
/// completes; returns when every connection has closed.
pub async fn serve_with(
    listeners: Vec<TcpListener>,
    app: Router,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                app.clone(),
                permits.clone(),
                limits,
                metrics.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    for accepting in loops {
        // The loop only ends when told to; a panic in it is a bug to show.
        if let Err(e) = accepting.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    // Every connection holds a permit until it is gone.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    permits: Arc<Semaphore>,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut warned_at: Option<TokioInstant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "dashboard: accept failed");
                if !is_per_connection(&e) {
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.dashboard_connection_rejected();
            if warned_at.is_none_or(|at| at.elapsed() >= REJECT_WARN_INTERVAL) {
                warned_at = Some(TokioInstant::now());
                warn!(
                    %peer,
                    limit = limits.max_connections,
                    "dashboard: connection limit reached; closing new connections (see vipfleet_dashboard_connections_rejected_total)"
                );
            }
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            permit,
            limits,
            metrics.clone(),
            stop.clone(),
        ));
    }
}

/// Errors that concern one incoming connection only (it was reset before
/// it was accepted); anything else may repeat at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Counts an open connection until dropped.
struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dashboard_connection(false);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    metrics.dashboard_connection(true);
    let _open = Open(metrics.clone());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(limits.max_lifetime);
    tokio::pin!(lifetime);
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let result = loop {
        let closing = grace.is_some();
        tokio::select! {
            result = conn.as_mut() => break result,
            () = &mut lifetime, if !closing => {}
            _ = stop.wait_for(|stop| *stop), if !closing => {}
            () = async { if let Some(grace) = grace.as_mut() { grace.await } }, if closing => {
                debug!(%peer, "dashboard: closing a connection that did not finish in time");
                return;
            }
        }
        conn.as_mut().graceful_shutdown();
        grace = Some(Box::pin(tokio::time::sleep(limits.close_grace)));
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics.dashboard_connection_timed_out();
        }
        debug!(%peer, error = %e, "dashboard: connection ended");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn app() -> Router {
        Router::new().route("/healthz", get(|| async { "ok\n" }))
    }

    fn metric(metrics: &Metrics, name: &str) -> f64 {
        let text = metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Server {
        async fn start(limits: Limits) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = Arc::new(Metrics::new());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_with(vec![listener], app(), metrics.clone(), limits, async {
                let _ = stopped.await;
            }));
            Server {
                addr,
                metrics,
                stop: Some(stop),
                task,
            }
        }

        /// Waits (yielding, so it works on paused time too) until the
        /// server counts `n` open connections.
        async fn wait_open(&self, n: usize) {
            for _ in 0..10_000 {
                if metric(&self.metrics, "vipfleet_dashboard_connections") == n as f64 {
                    return;
                }
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_micros(100));
            }
            panic!(
                "the server never counted {n} open connections (it counts {})",
                metric(&self.metrics, "vipfleet_dashboard_connections")
            );
        }

        async fn stop(mut self) {
            self.stop.take().unwrap().send(()).unwrap();
            self.task.await.unwrap().unwrap();
        }
    }

    /// Reads until the server closes; what it sent, or `None` for a reset.
    async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
        let mut all = Vec::new();
        match stream.read_to_end(&mut all).await {
            Ok(_) => Some(String::from_utf8_lossy(&all).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading: {e}"),
        }
    }

    async fn healthz(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut stream).await.unwrap_or_default()
    }

    /// The server closes `stream` without an answer once the header timeout
    /// has run out on the (paused) clock, and not before.
    async fn assert_closed_after_the_header_timeout(stream: &mut TcpStream) {
        let started = TokioInstant::now();
        assert_eq!(
            read_to_close(stream).await.as_deref(),
            Some(""),
            "no answer, just closed"
        );
        let waited = started.elapsed();
        assert!(
            (HEADER_READ_TIMEOUT..HEADER_READ_TIMEOUT + Duration::from_secs(1)).contains(&waited),
            "closed after {waited:?} on the paused clock"
        );
    }

    /// Reads exactly one `/healthz` answer (its body is "ok\n").
    async fn read_one_answer(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.unwrap();
            assert_eq!(n, 1, "closed mid-answer: {}", String::from_utf8_lossy(&answer));
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once_and_a_freed_slot_serves_again() {
        // Timeouts out of the way: only the limit closes anything here.
        let limits = Limits {
            header_read_timeout: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(3600),
            ..Limits::DEFAULT
        };
        assert_eq!(limits.max_connections, MAX_CONNECTIONS);
        let server = Server::start(limits).await;
        let mut idle = Vec::with_capacity(MAX_CONNECTIONS);
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        server.wait_open(MAX_CONNECTIONS).await;

        for extra in 1..=3 {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            // Sending a request does not help: the server never reads it.
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
            // Bounded, so a server that keeps it waiting fails the test.
            let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut stream))
                .await
                .expect("a connection past the limit is closed, not kept waiting");
            assert!(
                answer.as_deref().is_none_or(str::is_empty),
                "a connection past the limit was served: {answer:?}"
            );
            assert_eq!(
                metric(&server.metrics, "vipfleet_dashboard_connections_rejected_total"),
                f64::from(extra)
            );
        }
        assert_eq!(
            metric(&server.metrics, "vipfleet_dashboard_connections"),
            MAX_CONNECTIONS as f64
        );

        drop(idle.pop());
        server.wait_open(MAX_CONNECTIONS - 1).await;
        let answer = healthz(server.addr).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");

        // The held connections are still open: the limit closed only new ones.
        let mut held = idle.pop().unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert!(read_one_answer(&mut held).await.starts_with("HTTP/1.1 200 OK"));
        drop(idle);
        drop(held);
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_not_finished_in_time_closes_the_connection() {
        let server = Server::start(Limits::DEFAULT).await;

        // Slow but in time: half the timeout between the two halves.
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(HEADER_READ_TIMEOUT / 2).await;
        slow.write_all(b"st: t\r\nConnection: close\r\n\r\n").await.unwrap();
        let answer = read_to_close(&mut slow).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

        // Never finished: closed when the timeout runs out, not before.
        let mut stalled = TcpStream::connect(server.addr).await.unwrap();
        stalled
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        assert_closed_after_the_header_timeout(&mut stalled).await;
        assert_eq!(
            metric(&server.metrics, "vipfleet_dashboard_connections_timed_out_total"),
            1.0
        );

        // Connected and silent: the same.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        assert_closed_after_the_header_timeout(&mut silent).await;
        server.wait_open(0).await;
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
        let server = Server::start(Limits::DEFAULT).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        for _ in 0..3 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            assert!(read_one_answer(&mut stream).await.starts_with("HTTP/1.1 200 OK"));
        }
        assert_closed_after_the_header_timeout(&mut stream).await;
        server.wait_open(0).await;
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_keep_alive_connection_is_closed_at_its_lifetime_between_requests() {
        let server = Server::start(Limits::DEFAULT).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let opened = TokioInstant::now();
        let mut answered = 0;
        loop {
            // Once the server has closed, the write or the read fails (a
            // reset) or the read sees the end.
            if stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .is_err()
            {
                break;
            }
            let mut first = [0u8; 1];
            if !matches!(stream.read(&mut first).await, Ok(1)) {
                break;
            }
            let rest = read_one_answer(&mut stream).await;
            assert!(rest.starts_with("TTP/1.1 200 OK"), "{rest}");
            answered += 1;
            assert!(answered < 1000, "never closed");
            // Never idle long enough for the header timeout.
            tokio::time::sleep(HEADER_READ_TIMEOUT / 2).await;
        }
        let lived = opened.elapsed();
        assert!(
            (CONNECTION_MAX_LIFETIME..CONNECTION_MAX_LIFETIME + HEADER_READ_TIMEOUT).contains(&lived),
            "closed after {lived:?} and {answered} answers"
        );
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_idle_connections_and_returns() {
        let server = Server::start(Limits::DEFAULT).await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        server.wait_open(1).await;
        let addr = server.addr;
        server.stop().await;
        assert_eq!(read_to_close(&mut idle).await.as_deref(), Some(""));
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
