//! systemd notifications (`Type=notify` with `WatchdogSec`): `READY=1` once
//! the agent runs, `WATCHDOG=1` while the lease loop makes progress. Outside
//! systemd (`NOTIFY_SOCKET` unset) both do nothing.
//!
//! Written by hand: it is one datagram to a unix socket.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::status::Status;

fn send(message: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|socket| match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)
        }
        None => socket.send_to(message.as_bytes(), &path),
    });
    if let Err(e) = result {
        warn!("sd_notify {message:?} to {path}: {e}");
    }
}

pub fn ready() {
    send("READY=1");
}

/// Pings the watchdog at half its period, but only while the driver's
/// clock moves: a wedged lease loop gets the process restarted.
pub async fn watchdog(status: watch::Receiver<Status>) {
    let Some(period) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_micros)
    else {
        return;
    };
    debug!(?period, "systemd watchdog enabled");
    let mut last_seen = None;
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tick.tick().await;
        let now = status.borrow().now;
        if last_seen != Some(now) {
            send("WATCHDOG=1");
            last_seen = Some(now);
        }
    }
}
