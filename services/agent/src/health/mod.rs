//! Is the local haproxy able to serve? A node whose haproxy fails its checks
//! turns `unhealthy` and hands its shards off; it returns when the checks
//! pass again.
//!
//! Data flow: a [`Probe`] ([`HaproxyProbe`]: the HTTP monitor URI or the stats
//! socket, in [`probe`]) answers up or down once per interval; the pure
//! [`Hysteresis`] turns those answers into a state that changes only after
//! `fall` consecutive failures or `rise` consecutive successes, so one slow
//! answer does not move shards; [`HealthMonitor::run`] drives both on
//! `tokio::time` and publishes each change on a `watch` channel.

pub mod probe;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

pub use probe::{HaproxyProbe, Probe, ProbeError};
pub use vipfleet_agent_config::health::{
    HealthCheck, HealthConfigError, HealthTarget, HttpTarget, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE,
    DEFAULT_TIMEOUT,
};

/// The local haproxy's state: the lease machine's own type, so the policy
/// that turns it into a mode lives in the core.
pub use vipfleet_core::machine::Health;

/// The pure hysteresis: feed it probe results, it says when the state changes.
#[derive(Clone, Debug)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    state: Health,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl Hysteresis {
    /// Starts `Unknown`; the first result decides directly, since there is
    /// no settled state yet to protect from a single odd answer.
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            fall: fall.max(1),
            rise: rise.max(1),
            state: Health::Unknown,
            streak: 0,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        let next = match (self.state, ok) {
            (Health::Unknown, true) => Health::Healthy,
            (Health::Unknown, false) => Health::Unhealthy,
            (Health::Healthy, true) | (Health::Unhealthy, false) => {
                self.streak = 0;
                return None;
            }
            (Health::Healthy, false) => {
                self.streak += 1;
                if self.streak < self.fall {
                    return None;
                }
                Health::Unhealthy
            }
            (Health::Unhealthy, true) => {
                self.streak += 1;
                if self.streak < self.rise {
                    return None;
                }
                Health::Healthy
            }
        };
        self.state = next;
        self.streak = 0;
        Some(next)
    }
}

/// A channel for a monitor's output, starting at `Unknown`.
pub fn channel() -> (watch::Sender<Health>, watch::Receiver<Health>) {
    watch::channel(Health::Unknown)
}

/// Runs a probe on an interval and publishes health changes.
#[derive(Debug)]
pub struct HealthMonitor<P> {
    probe: P,
    interval: Duration,
    timeout: Duration,
    hysteresis: Hysteresis,
}

impl HealthMonitor<HaproxyProbe> {
    /// The monitor for a configured check of the local haproxy.
    pub fn new(check: &HealthCheck) -> Result<Self, HealthConfigError> {
        check.validate()?;
        Ok(Self::with_probe(HaproxyProbe::new(check.target.clone()), check))
    }
}

impl<P: Probe> HealthMonitor<P> {
    /// A monitor over any probe, with the check's timing and thresholds.
    pub fn with_probe(probe: P, check: &HealthCheck) -> Self {
        Self {
            probe,
            interval: check.interval,
            timeout: check.timeout,
            hysteresis: Hysteresis::new(check.fall, check.rise),
        }
    }

    /// Probes every interval (the first at once) and sends each change of
    /// state on `tx`, until `shutdown` completes or every receiver is gone.
    pub async fn run(mut self, tx: watch::Sender<Health>, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        // After a stall, probe once and go on; a burst of catch-up probes
        // would count one outage several times.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tx.closed() => break,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                biased;
                () = &mut shutdown => break,
                result = tokio::time::timeout(self.timeout, self.probe.probe()) => result
                    .unwrap_or(Err(ProbeError::Timeout { after: self.timeout })),
            };
            if let Err(e) = &result {
                debug!(error = %e, "health probe failed");
            }
            let previous = self.hysteresis.state();
            if let Some(next) = self.hysteresis.observe(result.is_ok()) {
                match (&result, next) {
                    (Err(e), Health::Unhealthy) => warn!(error = %e, ?previous, "haproxy is unhealthy"),
                    _ => info!(?previous, state = ?next, "haproxy health changed"),
                }
                tx.send_replace(next);
            }
        }
        debug!("health monitor stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn falls_after_k_failures_and_rises_after_m_successes() {
        let mut h = Hysteresis::new(3, 2);
        assert_eq!(h.observe(true), Some(Health::Healthy));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Health::Unhealthy));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn a_broken_streak_starts_over() {
        let mut h = Hysteresis::new(2, 2);
        h.observe(true);
        for _ in 0..10 {
            assert_eq!(h.observe(false), None);
            assert_eq!(h.observe(true), None, "flapping must not change state");
        }
        assert_eq!(h.state(), Health::Healthy);
        h.observe(false);
        assert_eq!(h.observe(false), Some(Health::Unhealthy));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn first_result_decides_and_one_means_immediate() {
        let mut h = Hysteresis::new(1, 1);
        assert_eq!(h.state(), Health::Unknown);
        assert_eq!(h.observe(false), Some(Health::Unhealthy));
        assert_eq!(h.observe(true), Some(Health::Healthy));
        assert_eq!(h.observe(false), Some(Health::Unhealthy));
    }

    #[test]
    fn config_is_validated() {
        let target = HealthTarget::StatsSocket("/run/haproxy/admin.sock".into());
        assert_eq!(HealthCheck::new(target.clone()).validate(), Ok(()));
        let zero_fall = HealthCheck {
            fall: 0,
            ..HealthCheck::new(target.clone())
        };
        assert!(matches!(
            zero_fall.validate(),
            Err(HealthConfigError::ZeroCount { field: "fall", .. })
        ));
        let slow = HealthCheck {
            timeout: Duration::from_secs(5),
            ..HealthCheck::new(target)
        };
        assert!(matches!(slow.validate(), Err(HealthConfigError::BadTimeout { .. })));
    }

    /// Answers from a script; `None` hangs past any timeout.
    #[derive(Clone)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Option<bool>>>>,
        calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Probe for Scripted {
        async fn probe(&self) -> Result<(), ProbeError> {
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            let next = self.answers.lock().unwrap().pop_front();
            match next {
                Some(Some(true)) | None => Ok(()),
                Some(Some(false)) => Err(ProbeError::Answer {
                    target: "script".into(),
                    detail: "scripted failure".into(),
                }),
                Some(None) => std::future::pending().await,
            }
        }
    }

    fn check() -> HealthCheck {
        HealthCheck {
            target: HealthTarget::StatsSocket("/unused".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 2,
            rise: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_publishes_changes_on_paused_time() {
        // ok, fail, hang (timeout = fail), ok, ok, then ok forever.
        let script = [Some(true), Some(false), None, Some(true), Some(true)];
        let probe = Scripted {
            answers: Arc::new(Mutex::new(script.into_iter().collect())),
            calls: Arc::default(),
        };
        let (tx, mut rx) = channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(HealthMonitor::with_probe(probe.clone(), &check()).run(tx, async {
            let _ = stop_rx.await;
        }));

        let mut seen = Vec::new();
        for _ in 0..3 {
            // On paused time this limit only fires if the monitor is stuck.
            tokio::time::timeout(Duration::from_secs(60), rx.changed())
                .await
                .expect("no health change within 60 s")
                .unwrap();
            seen.push((*rx.borrow_and_update(), start.elapsed()));
        }
        assert_eq!(
            seen,
            vec![
                (Health::Healthy, Duration::ZERO),
                // Second failure is the hung probe at t=2 s, cut at 500 ms.
                (Health::Unhealthy, Duration::from_millis(2500)),
                (Health::Healthy, Duration::from_secs(4)),
            ]
        );
        let calls = probe.calls.lock().unwrap().clone();
        let offsets: Vec<Duration> = calls.iter().map(|c| *c - start).collect();
        assert_eq!(
            offsets[..5],
            [0, 1, 2, 3, 4].map(Duration::from_secs),
            "one probe per interval"
        );

        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_stops_when_nobody_listens() {
        let probe = Scripted {
            answers: Arc::default(),
            calls: Arc::default(),
        };
        let (tx, rx) = channel();
        let task = tokio::spawn(HealthMonitor::with_probe(probe, &check()).run(tx, std::future::pending()));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("monitor kept running without receivers")
            .unwrap();
    }
}
