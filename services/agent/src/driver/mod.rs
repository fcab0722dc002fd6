//! The async driver of the lease machine: it feeds the machine timer ticks,
//! operator controls and the results of store and route calls, and performs
//! the effects the machine returns, each as its own task.
//!
//! ```text
//!   controls (signals, health, ENI, lifecycle, dashboard) ──┐
//!   timer (machine's wake_at) ──────────────────────────────┼─> Machine::step ─> effects ─> tasks
//!   results of tasks <──────────────────────────────────────┘                              │
//!        ^─────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The driver decides nothing: what a control means (drain, stop, health)
//! and when to exit are the machine's rules. Every call carries the instant
//! it was sent, as the machine's liveness rules require. Store calls are
//! bounded by the timeouts the lease configuration sets (a heartbeat by its
//! interval), so a hung request becomes an error rather than a stuck
//! heartbeat. Route changes are the machine's to pace, retry and fence; the
//! driver makes each one under a [`Gate`] that asks the machine's [`Fence`]
//! (republished after every step) and the call's deadline before every
//! attempt the SDK transmits, and cuts the call off at that deadline.
//!
//! With peer probes on, the loop also waits on the probe socket and the
//! detector's timer ([`peers`]): the detector shares the machine's clock,
//! is given the machine's members after every step, and its `Dead`
//! verdicts become `Input::PeerDead`. An orderly exit sends `Leave` first.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{debug, info, trace, warn};
use vipfleet_core::machine::{Effect, Event, ExitReason, Fence, Health, Input, Machine, RouteCall};
use vipfleet_core::routes::{Gate, RouteError, RouteOp, RouteTable, ROUTE_CALL_TIMEOUT};
use vipfleet_core::store::{LeaseStore, StoreError, StoreErrorKind, StoreOp};
use vipfleet_core::Instant;

pub mod incarnations;
pub mod peers;

use self::peers::PeerLink;
use crate::dashboard::metered::{store_outcome, MeteredRoutes, OutcomeLabel};
use crate::dashboard::metrics::Metrics;
use crate::status::{Status, StatusBoard};

/// How far ahead the loop sleeps when the machine names no wake-up time
/// (or one past what the runtime's clock can hold).
const IDLE_WAKE_INTERVAL: Duration = Duration::from_secs(1);
/// The detector's timer never fires sooner than this: a wake-up it leaves
/// in the past cannot spin the loop.
const PEER_WAKE_MIN_DELAY: Duration = Duration::from_micros(100);
/// Errors of one kind are logged at most this often; the rest are counted.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What the rest of the agent can ask of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Drain,
    Undrain,
    /// Stop without draining (SIGTERM outside a termination).
    Stop,
    Health(Health),
    SourceDestCheckOff(bool),
}

impl Control {
    fn input(self) -> Input {
        match self {
            Control::Drain => Input::Drain(true),
            Control::Undrain => Input::Drain(false),
            Control::Stop => Input::Stop,
            Control::Health(health) => Input::Health(health),
            Control::SourceDestCheckOff(off) => Input::SourceDestCheckOff(off),
        }
    }
}

/// Logs a noisy kind of event at most every [`ERROR_LOG_INTERVAL`] (also
/// the peer transport's refused datagrams).
#[derive(Default)]
pub(crate) struct Throttled {
    last: Option<TokioInstant>,
    suppressed: u64,
}

impl Throttled {
    /// `Some(suppressed since the last one)` when this one may be logged.
    pub(crate) fn admit(&mut self) -> Option<u64> {
        let now = TokioInstant::now();
        if self.last.is_some_and(|t| now - t < ERROR_LOG_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

pub struct Driver<S, R> {
    machine: Machine,
    store: Arc<S>,
    routes: Arc<MeteredRoutes<R>>,
    origin: TokioInstant,
    fence: Arc<Mutex<Fence>>,
    status: StatusBoard,
    metrics: Arc<Metrics>,
    store_errors: Throttled,
    route_errors: Throttled,
    peers: Option<PeerLink>,
    /// The last health and source/destination check controls, for a
    /// machine that starts over (see [`Driver::replay`]).
    replay: Replay,
}

/// The controls whose state outlives a machine: a new incarnation in the
/// same process is told them again, since nobody sends them twice (the
/// health monitor reports changes, the ENI and lifecycle watchers report
/// once).
#[derive(Clone, Copy, Debug, Default)]
pub struct Replay {
    health: Option<Health>,
    source_dest_check_off: Option<bool>,
    drain: Option<bool>,
    stop: bool,
}

impl Replay {
    fn note(&mut self, control: Control) {
        match control {
            Control::Health(health) => self.health = Some(health),
            Control::SourceDestCheckOff(off) => self.source_dest_check_off = Some(off),
            Control::Drain => self.drain = Some(true),
            Control::Undrain => self.drain = Some(false),
            Control::Stop => self.stop = true,
        }
    }

    /// A stop was asked for: a machine that ends now has no successor.
    pub fn stop_asked(&self) -> bool {
        self.stop
    }

    fn controls(self) -> impl Iterator<Item = Control> {
        let drain = self.drain.filter(|d| *d).map(|_| Control::Drain);
        self.health
            .map(Control::Health)
            .into_iter()
            .chain(self.source_dest_check_off.map(Control::SourceDestCheckOff))
            .chain(drain)
    }
}

/// What the loop woke up for.
enum Woken {
    Input(Input),
    Control(Control),
    Datagram(vipfleet_core::peers::Message),
    PeerTimer,
}

impl<S, R> Driver<S, R>
where
    S: LeaseStore + 'static,
    R: RouteTable + 'static,
{
    /// `origin` is the zero of the machine's clock: the instant it was
    /// created at, or earlier (a machine that replaces an evicted one keeps
    /// the process's clock).
    pub fn new(
        machine: Machine,
        store: Arc<S>,
        routes: Arc<R>,
        origin: TokioInstant,
        status: StatusBoard,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            machine,
            store,
            routes: Arc::new(MeteredRoutes::new(routes, metrics.clone())),
            origin,
            fence: Arc::new(Mutex::new(Fence::default())),
            status,
            metrics,
            store_errors: Throttled::default(),
            route_errors: Throttled::default(),
            peers: None,
            replay: Replay::default(),
        }
    }

    /// Probes peers through `link` (which must use this machine's node id
    /// and incarnation).
    pub fn with_peers(mut self, link: PeerLink) -> Self {
        self.peers = Some(link);
        self
    }

    /// Controls a previous machine of this process was given, applied to
    /// this one before anything else.
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = replay;
        self
    }

    /// What outlives the machine, for the next one: the status board, the
    /// probe link and the replayed controls.
    pub fn into_parts(self) -> (StatusBoard, Option<PeerLink>, Replay) {
        (self.status, self.peers, self.replay)
    }

    fn now(&self) -> Instant {
        Instant::from_offset(TokioInstant::now().saturating_duration_since(self.origin))
    }

    /// `instant` on the runtime's clock; `None` past what it can hold.
    fn at(&self, instant: Instant) -> Option<TokioInstant> {
        self.origin.checked_add(instant.as_offset())
    }

    /// Runs until the machine exits, and says why. If `controls` closes
    /// (the agent is going away), the machine is asked to stop.
    pub async fn run(mut self, mut controls: mpsc::Receiver<Control>) -> ExitReason {
        self.drive(&mut controls).await
    }

    /// As [`run`](Self::run), keeping the driver (and `controls`) for a
    /// machine that starts over ([`into_parts`](Self::into_parts)). On an
    /// orderly exit, peers are told not to condemn this incarnation.
    pub async fn drive(&mut self, controls: &mut mpsc::Receiver<Control>) -> ExitReason {
        let (results_tx, mut results) = mpsc::unbounded_channel::<Input>();
        let mut wake_at = self.step(Input::Tick, &results_tx);
        for control in self.replay.controls() {
            wake_at = self.control(control, &results_tx);
        }
        let mut controls_open = true;
        loop {
            if let Some(reason) = self.machine.exited() {
                self.leave(reason).await;
                return reason;
            }
            let sleep_until = wake_at
                .and_then(|w| self.at(w))
                .unwrap_or_else(|| TokioInstant::now() + IDLE_WAKE_INTERVAL);
            let peer_wake = self
                .peers
                .as_ref()
                .and_then(PeerLink::next_wake)
                .and_then(|w| self.at(w))
                .map(|w| w.max(TokioInstant::now() + PEER_WAKE_MIN_DELAY));
            let peers_on = self.peers.is_some();
            let woken = tokio::select! {
                Some(input) = results.recv() => Woken::Input(input),
                control = controls.recv(), if controls_open => match control {
                    Some(control) => Woken::Control(control),
                    None => {
                        controls_open = false;
                        self.replay.stop = true;
                        Woken::Input(Input::Stop)
                    }
                },
                () = tokio::time::sleep_until(sleep_until) => Woken::Input(Input::Tick),
                message = recv_datagram(&mut self.peers), if peers_on => Woken::Datagram(message),
                () = sleep_until_some(peer_wake), if peer_wake.is_some() => Woken::PeerTimer,
            };
            match woken {
                Woken::Input(input) => wake_at = self.step(input, &results_tx),
                Woken::Control(control) => {
                    info!(?control, "control");
                    wake_at = self.control(control, &results_tx);
                }
                Woken::Datagram(message) => {
                    let now = self.now();
                    let inputs = self.peers.as_mut().map(|p| p.receive(message, now)).unwrap_or_default();
                    self.publish_peers();
                    for input in inputs {
                        wake_at = self.step(input, &results_tx);
                    }
                }
                Woken::PeerTimer => {
                    let now = self.now();
                    let inputs = self.peers.as_mut().map(|p| p.tick(now)).unwrap_or_default();
                    self.publish_peers();
                    for input in inputs {
                        wake_at = self.step(input, &results_tx);
                    }
                }
            }
        }
    }

    fn control(&mut self, control: Control, results: &mpsc::UnboundedSender<Input>) -> Option<Instant> {
        self.replay.note(control);
        if let (Control::Health(health), Some(peers)) = (control, self.peers.as_mut()) {
            peers.set_health(health);
        }
        self.step(control.input(), results)
    }

    /// Sends the detector's `Leave` on an orderly exit (the lease decides
    /// whether the node is gone, not the probes). An evicted incarnation
    /// has nothing to say: it is already condemned.
    async fn leave(&mut self, reason: ExitReason) {
        let orderly = matches!(
            reason,
            ExitReason::Stopped | ExitReason::Drained | ExitReason::DrainTimedOut | ExitReason::Superseded
        );
        if let (true, Some(peers)) = (orderly, self.peers.as_mut()) {
            peers.leave().await;
        }
    }

    fn step(&mut self, input: Input, results: &mpsc::UnboundedSender<Input>) -> Option<Instant> {
        let now = self.now();
        trace!(input = %Abridged(&input), "input");
        let step = self.machine.step(input, now);
        for event in &step.events {
            self.log(event);
            self.metrics.observe_event(event);
        }
        self.metrics.set_shards_owned(self.machine.held().count());
        let (tokens, (failover_waiting, _)) = self.machine.route_pacing(now);
        self.metrics.set_route_pacing(tokens, failover_waiting);
        self.status.record(&self.machine, &step.events, now);
        if let Some(peers) = self.peers.as_mut() {
            peers.refresh(&self.machine, now);
            self.status.record_peers(peers.members());
        }
        self.publish_fence();
        for effect in step.effects {
            trace!(effect = %Abridged(&effect), "effect");
            self.perform(effect, now, results.clone());
        }
        step.wake_at
    }

    fn publish_peers(&self) {
        if let Some(peers) = &self.peers {
            self.status.record_peers(peers.members());
        }
    }

    fn publish_fence(&self) {
        let fence = self.machine.fence();
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// What every attempt of `call` asks first: is it still before the
    /// call's deadline, and does the machine's latest fence allow it?
    fn gate(&self, call: &RouteCall) -> Gate {
        let (fence, origin) = (self.fence.clone(), self.origin);
        let (shard, epoch, deadline) = (call.shard, call.epoch, call.deadline);
        Gate::new(move || {
            let now = Instant::from_offset(TokioInstant::now().saturating_duration_since(origin));
            now < deadline
                && fence
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allows(shard, epoch, now)
        })
    }

    fn log(&mut self, event: &Event) {
        match event {
            Event::StoreError { kind, detail } => {
                if let Some(suppressed) = self.store_errors.admit() {
                    if *kind == StoreErrorKind::TableMissing {
                        warn!(
                            suppressed,
                            "{detail}: the lease table is missing; holding every route as it is until it is back"
                        );
                    } else {
                        warn!(suppressed, "{detail}");
                    }
                }
            }
            Event::RouteError { detail, .. } => {
                if let Some(suppressed) = self.route_errors.admit() {
                    warn!(suppressed, "{detail}");
                }
            }
            Event::RouteChanged { call, error: None } => debug!(?call, "route changed"),
            Event::RouteChanged {
                call,
                error: Some(RouteError::Fenced),
            } => info!(
                ?call,
                "route change not sent: the shard moved, the lease lapsed or its deadline passed"
            ),
            Event::RouteChanged {
                call,
                error: Some(error),
            } => {
                if let Some(suppressed) = self.route_errors.admit() {
                    warn!(suppressed, change = ?call.change, "route change failed: {error}");
                }
            }
            Event::ItemsSkipped { skipped } if skipped.is_empty() => {
                info!("every item of the lease table reads again")
            }
            Event::ItemsSkipped { skipped } => {
                for item in skipped {
                    warn!(key = %item.key, reason = %item.reason, "lease table item skipped: it cannot be read");
                }
            }
            Event::LeaseLapsed => warn!("own lease lapsed: no route writes until a heartbeat lands"),
            Event::Reregistered => warn!("our node item had vanished; registered again"),
            Event::RouteDrift { .. } => warn!(?event, "route drift"),
            Event::StopDeferred => warn!("stop asked for during a drain: the drain goes on (bounded by its timeout)"),
            event => info!(?event),
        }
    }

    fn perform(&self, effect: Effect, sent_at: Instant, results: mpsc::UnboundedSender<Input>) {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let lease = &self.machine.setup().lease;
        let (beat_timeout, timeout) = (lease.heartbeat_timeout(), lease.store_call_timeout());
        match effect {
            Effect::Exit(reason) => info!(reason = reason.as_str(), "machine exits"),
            Effect::Heartbeat(req) => spawn(results, async move {
                let result = bounded(StoreOp::Heartbeat, store.heartbeat(&req), beat_timeout, &metrics).await;
                Input::Heartbeat { sent_at, result }
            }),
            Effect::ReadNodes => spawn(results, async move {
                let result = bounded(StoreOp::ReadNodes, store.read_nodes(), timeout, &metrics).await;
                Input::Nodes { sent_at, result }
            }),
            Effect::ReadShards => spawn(results, async move {
                let result = bounded(StoreOp::ReadShards, store.read_shards(), timeout, &metrics).await;
                Input::Shards { sent_at, result }
            }),
            Effect::ConfirmShard(shard) => spawn(results, async move {
                let result = bounded(StoreOp::ReadShard, store.read_shard(shard), timeout, &metrics).await;
                Input::Confirmed { shard, sent_at, result }
            }),
            Effect::PublishLayout(layout) => spawn(results, async move {
                let result = bounded(StoreOp::PublishLayout, store.publish_layout(&layout), timeout, &metrics).await;
                Input::LayoutPublished { result }
            }),
            Effect::ReadLayout(id) => spawn(results, async move {
                let result = bounded(StoreOp::ReadLayout, store.read_layout(&id), timeout, &metrics).await;
                Input::Layout { id, result }
            }),
            Effect::Acquire(req) => spawn(results, async move {
                let result = bounded(StoreOp::Acquire, store.acquire(&req), timeout, &metrics).await;
                Input::Acquired {
                    shard: req.shard,
                    sent_at,
                    result,
                }
            }),
            Effect::HandOff(req) => spawn(results, async move {
                let result = bounded(StoreOp::Handoff, store.hand_off(&req), timeout, &metrics).await;
                Input::HandedOff {
                    shard: req.shard,
                    sent_at,
                    result,
                }
            }),
            Effect::MarkDead(req) => spawn(results, async move {
                let result = bounded(StoreOp::MarkDead, store.mark_dead(&req), timeout, &metrics).await;
                Input::MarkedDead { node: req.node, result }
            }),
            Effect::Evict(req) => spawn(results, async move {
                let result = bounded(StoreOp::Evict, store.evict(&req), timeout, &metrics).await;
                Input::Evicted {
                    node: req.node,
                    inc: req.inc,
                    result,
                }
            }),
            Effect::Retire(req) => spawn(results, async move {
                let result = bounded(StoreOp::Retire, store.retire(&req), timeout, &metrics).await;
                Input::Retired {
                    shard: req.shard,
                    result,
                }
            }),
            Effect::Watch(req) => spawn(results, async move {
                let result = bounded(StoreOp::Watch, store.watch(&req), timeout, &metrics).await;
                Input::Watched { result }
            }),
            Effect::AnnounceChange => spawn(results, async move {
                let result = bounded(StoreOp::AnnounceChange, store.announce_change(), timeout, &metrics).await;
                Input::ChangeAnnounced { result }
            }),
            Effect::DescribeTable(table) => {
                let routes = self.routes.clone();
                spawn(results, async move {
                    let result = match tokio::time::timeout(ROUTE_CALL_TIMEOUT, routes.describe(&table)).await {
                        Ok(result) => result.map(Arc::from),
                        Err(_) => Err(RouteError::Unavailable {
                            op: RouteOp::Describe,
                            detail: format!("{table}: timed out"),
                        }),
                    };
                    Input::TableDescribed { table, sent_at, result }
                })
            }
            Effect::ChangeRoute(call) => {
                let routes = self.routes.clone();
                let gate = self.gate(&call);
                // No attempt may go out after the deadline: the call ends there.
                let limit = call.deadline.saturating_since(sent_at).min(ROUTE_CALL_TIMEOUT);
                spawn(results, async move {
                    let result = match tokio::time::timeout(limit, routes.change(&call.change, &gate)).await {
                        Ok(result) => result,
                        Err(_) => Err(RouteError::Unavailable {
                            op: call.change.op(),
                            detail: format!("{}: {}: timed out", call.change.table(), call.change.vip()),
                        }),
                    };
                    Input::RouteChanged { call, result }
                })
            }
        }
    }
}

/// The next datagram of the probe link; never, without one.
async fn recv_datagram(peers: &mut Option<PeerLink>) -> vipfleet_core::peers::Message {
    match peers {
        Some(peers) => peers.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn spawn(results: mpsc::UnboundedSender<Input>, task: impl Future<Output = Input> + Send + 'static) {
    tokio::spawn(async move {
        // The loop only goes away at exit: nobody left to tell.
        let _ = results.send(task.await);
    });
}

/// Runs a store call under `timeout` and records its outcome and latency.
async fn bounded<T: OutcomeLabel>(
    op: StoreOp,
    call: impl Future<Output = Result<T, StoreError>>,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<T, StoreError> {
    let started = TokioInstant::now();
    let (result, outcome) = match tokio::time::timeout(timeout, call).await {
        Ok(result) => {
            let outcome = store_outcome(&result);
            (result, outcome)
        }
        Err(_) => (
            Err(StoreError::new(op, StoreErrorKind::Unavailable, "timed out")),
            crate::dashboard::metrics::OUTCOME_TIMEOUT,
        ),
    };
    metrics.observe_store_call(op, outcome, started.elapsed());
    result
}

/// Handle to the driver for the rest of the agent.
pub fn controls() -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
    mpsc::channel(16)
}

/// The latest status, for readiness and the dashboard.
pub fn status_channel() -> (StatusBoard, watch::Receiver<Status>) {
    StatusBoard::new()
}

/// A value's `Debug` form cut to [`ABRIDGED_CHARS`], for trace lines: a
/// read's result lists every item of the table.
struct Abridged<'a, T>(&'a T);

const ABRIDGED_CHARS: usize = 160;

impl<T: std::fmt::Debug> std::fmt::Display for Abridged<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = format!("{:?}", self.0);
        match full.char_indices().nth(ABRIDGED_CHARS) {
            Some((cut, _)) => write!(f, "{}…", &full[..cut]),
            None => f.write_str(&full),
        }
    }
}
