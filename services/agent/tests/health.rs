//! The haproxy health check over real sockets: an axum stand-in for the
//! monitor URI whose answer the test flips, a closed port, a stand-in stats
//! socket, and the real haproxy when it is installed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{oneshot, watch};
use vipfleet_agent::health::{
    channel, HaproxyProbe, Health, HealthCheck, HealthMonitor, HealthTarget, Probe, ProbeError,
};

/// Real time here: the probes do real I/O, which paused time cannot drive.
const INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Generous bound for a state change that needs a handful of intervals.
const CHANGE_DEADLINE: Duration = Duration::from_secs(5);

fn check(target: HealthTarget) -> HealthCheck {
    HealthCheck {
        target,
        interval: INTERVAL,
        timeout: PROBE_TIMEOUT,
        fall: 2,
        rise: 2,
    }
}

async fn next_state(rx: &mut watch::Receiver<Health>) -> Health {
    tokio::time::timeout(CHANGE_DEADLINE, rx.changed())
        .await
        .expect("no health change in time")
        .expect("monitor stopped");
    *rx.borrow_and_update()
}

/// A running monitor; dropping it stops the loop.
struct Monitor {
    rx: watch::Receiver<Health>,
    _stop: oneshot::Sender<()>,
}

fn start_monitor(check: &HealthCheck) -> Monitor {
    let (tx, rx) = channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let monitor = HealthMonitor::new(check).unwrap();
    tokio::spawn(monitor.run(tx, async {
        let _ = stopped.await;
    }));
    Monitor { rx, _stop: stop }
}

/// Where each test's unix sockets and files live; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vipfleet-health-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn http_monitor_follows_the_server_with_hysteresis() {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let app = Router::new().route(
        "/healthz",
        get(move || {
            let flag = flag.clone();
            async move {
                if flag.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let target = HealthTarget::http(&format!("http://{addr}/healthz")).unwrap();
    let probe = HaproxyProbe::new(target.clone());
    probe.probe().await.expect("server is up");

    let mut monitor = start_monitor(&check(target.clone()));
    assert_eq!(next_state(&mut monitor.rx).await, Health::Healthy);

    up.store(false, Ordering::SeqCst);
    match probe.probe().await {
        Err(ProbeError::Status { status_line, .. }) => assert!(status_line.contains("503"), "{status_line}"),
        other => panic!("expected a 503 status error, got {other:?}"),
    }
    assert_eq!(next_state(&mut monitor.rx).await, Health::Unhealthy);

    up.store(true, Ordering::SeqCst);
    assert_eq!(next_state(&mut monitor.rx).await, Health::Healthy);

    // A wrong path is a 404, which is down too.
    let wrong = HaproxyProbe::new(HealthTarget::http(&format!("http://{addr}/nope")).unwrap());
    assert!(matches!(wrong.probe().await, Err(ProbeError::Status { .. })));
}

#[tokio::test]
async fn closed_port_is_unhealthy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = HealthTarget::http(&format!("http://{addr}/healthz")).unwrap();
    let err = HaproxyProbe::new(target.clone()).probe().await.unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    let mut monitor = start_monitor(&check(target));
    assert_eq!(next_state(&mut monitor.rx).await, Health::Unhealthy);
}

/// A stats socket stand-in: answers `show info` with whatever `answer` holds
/// (or nothing at all while it is `None`, to exercise the timeout).
fn fake_stats_socket(path: &Path, answer: watch::Receiver<Option<String>>) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut command = [0u8; 64];
                let n = conn.read(&mut command).await.unwrap_or(0);
                assert_eq!(&command[..n], b"show info\n");
                let reply = answer.borrow().clone();
                match reply {
                    Some(reply) => {
                        let _ = conn.write_all(reply.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
}

#[tokio::test]
async fn stats_socket_answers_drive_health() {
    let dir = TempDir::new("stats");
    let socket = dir.path("admin.sock");
    let running = "Name: HAProxy\nVersion: 2.6\nPid: 7\nStopping: 0\n\n".to_string();
    let (answer, answers) = watch::channel(Some(running.clone()));
    fake_stats_socket(&socket, answers);
    let target = HealthTarget::StatsSocket(socket.clone());
    HaproxyProbe::new(target.clone())
        .probe()
        .await
        .expect("stats socket answers");

    let mut monitor = start_monitor(&check(target.clone()));
    assert_eq!(next_state(&mut monitor.rx).await, Health::Healthy);

    // Soft-stop: haproxy still answers but is about to stop serving.
    answer.send_replace(Some("Name: HAProxy\nStopping: 1\n".into()));
    assert_eq!(next_state(&mut monitor.rx).await, Health::Unhealthy);
    answer.send_replace(Some(running));
    assert_eq!(next_state(&mut monitor.rx).await, Health::Healthy);

    // A wedged process that accepts but never answers fails by timeout.
    answer.send_replace(None);
    assert_eq!(next_state(&mut monitor.rx).await, Health::Unhealthy);

    let missing = HealthTarget::StatsSocket(dir.path("missing.sock"));
    let err = HaproxyProbe::new(missing).probe().await.unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn real_haproxy_when_installed() {
    let Some(haproxy) = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        // Written past the harness's capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: haproxy is not installed; the real-haproxy health test did not run ***\n"
        );
        return;
    };
    let dir = TempDir::new("haproxy");
    let socket = dir.path("admin.sock");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = format!(
        "global\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend health\n    bind 127.0.0.1:{port}\n    monitor-uri /healthz\n",
        socket.display()
    );
    let config_path = dir.path("haproxy.cfg");
    std::fs::write(&config_path, config).unwrap();
    let mut child = tokio::process::Command::new(haproxy)
        .args(["-db", "-f"])
        .arg(&config_path)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = HaproxyProbe::new(HealthTarget::http(&format!("http://127.0.0.1:{port}/healthz")).unwrap());
    let stats = HaproxyProbe::new(HealthTarget::StatsSocket(socket));
    let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
    while http.probe().await.is_err() || stats.probe().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "haproxy did not come up");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("haproxy exited: {status}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
    child.kill().await.unwrap();
    assert!(matches!(http.probe().await, Err(ProbeError::Connect { .. })));
    assert!(matches!(stats.probe().await, Err(ProbeError::Connect { .. })));
}
