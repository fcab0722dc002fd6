//! The Auto Scaling lifecycle hooks, from the agent's side.
//!
//! Launch: [`spawn_launch_gate`] waits until this node is
//! [`ready_for_service`] (lease valid, mode Active: health good, source/
//! destination check off) and completes the launch hook's action with
//! `CONTINUE`, so an instance refresh only counts a node that serves; if the
//! node cannot become ready within `lifecycle.launch_timeout` of boot it
//! completes with `ABANDON`, and Auto Scaling replaces the instance.
//!
//! Termination: [`Watcher`] polls IMDS `autoscaling/target-lifecycle-state`;
//! when it turns `Terminated` (scale-in, instance refresh) the node drains.
//! While it drains, the lifecycle action is kept alive with
//! `RecordLifecycleActionHeartbeat`; once drained (or once the drain timeout
//! gave up) it is completed with `CONTINUE`. `ABANDON` is never sent for a
//! termination: it would not keep the instance anyway.
//!
//! The Auto Scaling calls sit behind [`Lifecycle`], so both paths are tested
//! with `aws-smithy-mocks` (moto answers these calls with HTTP 500).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vipfleet_core::machine::Mode;

use crate::config::AgentConfig;
use crate::driver::Control;
use crate::identity::{Imds, LifecycleState, NodeIdentity};
use crate::status::Status;

/// Under the hook's default heartbeat timeout (60 s and up) with room to spare.
pub const LIFECYCLE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
/// Tries of `CompleteLifecycleAction` before giving up to the hook's timeout.
const COMPLETE_ATTEMPTS: u32 = 5;
const COMPLETE_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Where Linux tells how long ago the machine booted; the launch hook started
/// moments before that, when the instance was launched.
const UPTIME_PATH: &str = "/proc/uptime";

#[derive(Debug, Error)]
#[error("autoscaling {op} for {instance}: {detail}")]
pub struct LifecycleError {
    pub op: &'static str,
    pub instance: String,
    pub detail: String,
    pub kind: LifecycleErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleErrorKind {
    /// Auto Scaling refused the call (`ValidationError`): no action of that
    /// hook is waiting for this instance (it is already in service, the hook
    /// timed out, or the group has no such hook). Trying again cannot help.
    NotWaiting,
    /// Anything else: throttling, a timeout, a server error.
    Failed,
}

/// The launch hook's verdict on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchVerdict {
    /// Ready for service: `CONTINUE`, the instance goes in service.
    Ready,
    /// Could not become ready in time: `ABANDON`, Auto Scaling terminates it.
    NotReady,
}

impl LaunchVerdict {
    fn result(self) -> &'static str {
        match self {
            LaunchVerdict::Ready => "CONTINUE",
            LaunchVerdict::NotReady => "ABANDON",
        }
    }
}

/// The lifecycle calls the agent makes.
pub trait Lifecycle: Send + Sync {
    /// Keeps the termination hook's action waiting.
    fn record_heartbeat(&self) -> impl Future<Output = Result<(), LifecycleError>> + Send;
    /// Completes the termination hook's action with `CONTINUE`.
    fn complete_continue(&self) -> impl Future<Output = Result<(), LifecycleError>> + Send;
    /// Completes the launch hook's action: `CONTINUE` when ready, else `ABANDON`.
    fn complete_launch(&self, verdict: LaunchVerdict) -> impl Future<Output = Result<(), LifecycleError>> + Send;
}

/// [`Lifecycle`] over aws-sdk-autoscaling, for one instance and its group's
/// two hooks.
#[derive(Clone)]
pub struct AsgLifecycle {
    client: aws_sdk_autoscaling::Client,
    group: String,
    hook: String,
    launch_hook: String,
    instance: String,
}

impl AsgLifecycle {
    /// `hook` is the termination hook, `launch_hook` the launch hook.
    pub fn new(
        client: aws_sdk_autoscaling::Client,
        group: &str,
        hook: &str,
        launch_hook: &str,
        instance: &str,
    ) -> Self {
        Self {
            client,
            group: group.to_string(),
            hook: hook.to_string(),
            launch_hook: launch_hook.to_string(),
            instance: instance.to_string(),
        }
    }

    fn from_config(config: &AgentConfig, group: &str, sdk: &SdkConfig, me: &NodeIdentity) -> Self {
        Self::new(
            aws_sdk_autoscaling::Client::new(sdk),
            group,
            &config.lifecycle.hook_name,
            &config.lifecycle.launch_hook_name,
            me.instance_id.as_str(),
        )
    }

    fn error<E>(&self, op: &'static str, e: SdkError<E, HttpResponse>) -> LifecycleError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = match crate::aws::error_code(&e) {
            Some("ValidationError") => LifecycleErrorKind::NotWaiting,
            _ => LifecycleErrorKind::Failed,
        };
        LifecycleError {
            op,
            instance: self.instance.clone(),
            detail: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
            kind,
        }
    }

    async fn complete_action(&self, hook: &str, result: &str) -> Result<(), LifecycleError> {
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance)
            .lifecycle_action_result(result)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("CompleteLifecycleAction", e))
    }
}

impl Lifecycle for AsgLifecycle {
    async fn record_heartbeat(&self) -> Result<(), LifecycleError> {
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(&self.hook)
            .instance_id(&self.instance)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("RecordLifecycleActionHeartbeat", e))
    }

    async fn complete_continue(&self) -> Result<(), LifecycleError> {
        self.complete_action(&self.hook, "CONTINUE").await
    }

    async fn complete_launch(&self, verdict: LaunchVerdict) -> Result<(), LifecycleError> {
        self.complete_action(&self.launch_hook, verdict.result()).await
    }
}

/// Keeps the lifecycle action alive until `done` is set.
pub async fn keep_alive<L: Lifecycle>(lifecycle: &L, done: &AtomicBool) {
    let mut tick = tokio::time::interval(LIFECYCLE_HEARTBEAT_INTERVAL);
    tick.tick().await;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        if done.load(Ordering::Relaxed) {
            return;
        }
        match lifecycle.record_heartbeat().await {
            Ok(()) => debug!("lifecycle action heartbeat sent"),
            Err(e) => warn!("{e}"),
        }
    }
}

/// Completes the termination hook's action with `CONTINUE`, retrying a few times.
pub async fn complete<L: Lifecycle>(lifecycle: &L) -> Result<(), LifecycleError> {
    with_retries(|| lifecycle.complete_continue()).await
}

/// Runs `call` until it succeeds, fails [`COMPLETE_ATTEMPTS`] times, or is
/// refused for good ([`LifecycleErrorKind::NotWaiting`]).
async fn with_retries<F, Fut>(mut call: F) -> Result<(), LifecycleError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), LifecycleError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= COMPLETE_ATTEMPTS || e.kind == LifecycleErrorKind::NotWaiting => return Err(e),
            Err(e) => {
                warn!(attempt, "{e}; retrying");
                attempt += 1;
                tokio::time::sleep(COMPLETE_RETRY_DELAY).await;
            }
        }
    }
}

/// Whether this node may take traffic: its lease is valid (its heartbeats
/// land) and it is Active (health known good, source/destination check off).
pub fn ready_for_service(status: &Status) -> bool {
    status.lease_valid && status.mode == Some(Mode::Active)
}

/// What [`gate_launch`] did.
#[derive(Debug)]
pub enum LaunchOutcome {
    /// Ready in time; the action was completed with `CONTINUE`.
    Continued,
    /// Not ready in time; the action was completed with `ABANDON`.
    Abandoned,
    /// No launch action was waiting for this instance (see
    /// [`LifecycleErrorKind::NotWaiting`]).
    NotWaiting,
    /// The status channel closed (the agent is stopping): left to the hook.
    Stopped,
    /// Completing failed every time; the hook's timeout decides.
    Failed(LifecycleError),
}

/// Completes the launch hook's action: `CONTINUE` as soon as `status` shows
/// the node [`ready_for_service`], `ABANDON` if `within` passes first.
pub async fn gate_launch<L: Lifecycle>(
    lifecycle: &L,
    mut status: watch::Receiver<Status>,
    within: Duration,
) -> LaunchOutcome {
    let verdict = match tokio::time::timeout(within, status.wait_for(ready_for_service)).await {
        Ok(Ok(_)) => LaunchVerdict::Ready,
        Ok(Err(_)) => return LaunchOutcome::Stopped,
        Err(_) => LaunchVerdict::NotReady,
    };
    match with_retries(|| lifecycle.complete_launch(verdict)).await {
        Ok(()) if verdict == LaunchVerdict::Ready => LaunchOutcome::Continued,
        Ok(()) => LaunchOutcome::Abandoned,
        Err(e) if e.kind == LifecycleErrorKind::NotWaiting => LaunchOutcome::NotWaiting,
        Err(e) => LaunchOutcome::Failed(e),
    }
}

/// How much of `timeout` (counted from boot) is left `since_boot` after it;
/// `None` once it is spent, when no launch action can still be waiting. An
/// unknown boot time counts from now.
pub fn launch_budget(timeout: Duration, since_boot: Option<Duration>) -> Option<Duration> {
    match since_boot {
        Some(up) => timeout.checked_sub(up).filter(|left| !left.is_zero()),
        None => Some(timeout),
    }
}

/// The first field of `/proc/uptime`: seconds since boot, with decimals.
fn parse_uptime(text: &str) -> Option<Duration> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// With an Auto Scaling group configured, completes the launch hook's action
/// for this node in the background ([`gate_launch`]), within what is left of
/// `lifecycle.launch_timeout` since boot.
pub fn spawn_launch_gate(config: &AgentConfig, me: &NodeIdentity, sdk: &SdkConfig, status: watch::Receiver<Status>) {
    let Some(group) = &config.lifecycle.asg_name else {
        return;
    };
    let since_boot = std::fs::read_to_string(UPTIME_PATH)
        .ok()
        .and_then(|text| parse_uptime(&text));
    let Some(within) = launch_budget(config.lifecycle.launch_timeout, since_boot) else {
        debug!(
            ?since_boot,
            "booted longer ago than lifecycle.launch_timeout: no launch action can be waiting"
        );
        return;
    };
    let asg = AsgLifecycle::from_config(config, group, sdk, me);
    tokio::spawn(async move {
        match gate_launch(&asg, status, within).await {
            LaunchOutcome::Continued => info!("ready for service: launch lifecycle action completed with CONTINUE"),
            LaunchOutcome::Abandoned => warn!(
                ?within,
                "not ready for service in time: launch lifecycle action completed with ABANDON; \
                 Auto Scaling replaces this instance"
            ),
            LaunchOutcome::NotWaiting => {
                info!("no launch lifecycle action is waiting for this instance (already in service, or no launch hook)")
            }
            LaunchOutcome::Stopped => debug!("agent stopping: the launch hook's timeout decides"),
            LaunchOutcome::Failed(e) => warn!("{e}; the launch hook's timeout decides"),
        }
    });
}

/// Watches the lifecycle state and owns the lifecycle action of this node.
pub struct Watcher {
    asg: Option<AsgLifecycle>,
    terminating: Arc<AtomicBool>,
    drained: Arc<AtomicBool>,
}

impl Watcher {
    pub fn start(
        config: &AgentConfig,
        me: &NodeIdentity,
        imds: Imds,
        sdk: &SdkConfig,
        controls: mpsc::Sender<Control>,
    ) -> Self {
        let asg = config
            .lifecycle
            .asg_name
            .as_ref()
            .map(|group| AsgLifecycle::from_config(config, group, sdk, me));
        let watcher = Self {
            asg,
            terminating: Arc::new(AtomicBool::new(false)),
            drained: Arc::new(AtomicBool::new(false)),
        };
        let poll = config.lifecycle.poll_interval;
        let terminating = watcher.terminating.clone();
        let drained = watcher.drained.clone();
        let asg = watcher.asg.clone();
        tokio::spawn(async move {
            let mut warned = false;
            let mut tick = tokio::time::interval(poll);
            loop {
                tick.tick().await;
                match imds.target_lifecycle_state().await {
                    Ok(LifecycleState::Terminated) => break,
                    Ok(state) => debug!(?state, "lifecycle state"),
                    Err(e) if !warned => {
                        warned = true;
                        warn!("cannot read the lifecycle state from IMDS (not warning again): {e}");
                    }
                    Err(e) => debug!("lifecycle state: {e}"),
                }
            }
            info!("Auto Scaling is terminating this instance: draining");
            terminating.store(true, Ordering::Relaxed);
            let _ = controls.send(Control::Drain).await;
            if let Some(asg) = asg {
                keep_alive(&asg, &drained).await;
            }
        });
        watcher
    }

    /// The node has drained: let the termination go on.
    pub async fn drained(&self) {
        self.release().await;
    }

    /// The drain did not finish within `lifecycle.drain_timeout`: let the
    /// termination go on all the same. Waiting for the hook's timeout would
    /// only delay it (the heartbeats have kept the hook alive until now), and
    /// the shards left move by lease expiry once this instance is gone.
    pub async fn gave_up(&self) {
        if self.terminating.load(Ordering::Relaxed) {
            warn!("drain timed out; completing the lifecycle action so that termination goes on");
        }
        self.release().await;
    }

    async fn release(&self) {
        self.drained.store(true, Ordering::Relaxed);
        let (Some(asg), true) = (&self.asg, self.terminating.load(Ordering::Relaxed)) else {
            return;
        };
        match complete(asg).await {
            Ok(()) => info!("lifecycle action completed with CONTINUE"),
            Err(e) => warn!("{e}; the hook's timeout will let termination go on"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The Auto Scaling calls against `aws-smithy-mocks` (moto answers them
    //! with HTTP 500), on paused time so retries and heartbeats cost nothing.

    use super::*;
    use aws_sdk_autoscaling::operation::complete_lifecycle_action::CompleteLifecycleActionOutput;
    use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;
    use aws_sdk_autoscaling::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use crate::aws::mocked_client;

    const LAUNCH_WITHIN: Duration = Duration::from_secs(300);

    fn lifecycle(rule: &Rule) -> AsgLifecycle {
        let client: Client = mocked_client!(aws_sdk_autoscaling, [rule]);
        AsgLifecycle::new(client, "fleet-asg", "vipfleet-drain", "vipfleet-launch", "i-0abc")
    }

    /// Auto Scaling's answer when no action of the hook waits for the instance,
    /// in its query protocol's XML.
    fn no_action_waiting() -> HttpResponse {
        let body = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
<Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID i-0abc</Message></Error>
<RequestId>req-1</RequestId></ErrorResponse>"#;
        HttpResponse::new(StatusCode::try_from(400).expect("status"), SdkBody::from(body))
    }

    /// A launch action completion with `result` for this instance's launch hook.
    fn launch_rule(result: &'static str) -> Rule {
        mock!(Client::complete_lifecycle_action)
            .match_requests(move |r| {
                r.lifecycle_action_result() == Some(result)
                    && r.auto_scaling_group_name() == Some("fleet-asg")
                    && r.lifecycle_hook_name() == Some("vipfleet-launch")
                    && r.instance_id() == Some("i-0abc")
            })
            .then_output(|| CompleteLifecycleActionOutput::builder().build())
    }

    fn set(tx: &watch::Sender<Status>, lease_valid: bool, mode: Option<Mode>) {
        tx.send_modify(|s| {
            s.lease_valid = lease_valid;
            s.mode = mode;
        });
    }

    #[test]
    fn ready_for_service_needs_a_valid_lease_and_active_mode() {
        let cases = [
            (true, Some(Mode::Active), true),
            (false, Some(Mode::Active), false),
            (true, Some(Mode::Unhealthy), false),
            (true, Some(Mode::Draining), false),
            (true, None, false),
        ];
        for (lease_valid, mode, ready) in cases {
            let status = Status {
                lease_valid,
                mode,
                ..Status::default()
            };
            assert_eq!(ready_for_service(&status), ready, "{lease_valid} {mode:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_launch_continues_once_ready_and_not_before() {
        let rule = launch_rule("CONTINUE");
        let asg = Arc::new(lifecycle(&rule));
        let (tx, rx) = watch::channel(Status::default());
        let started = tokio::time::Instant::now();
        let gate = tokio::spawn({
            let asg = asg.clone();
            async move { gate_launch(&*asg, rx, LAUNCH_WITHIN).await }
        });
        // Heartbeats land before health is known: not ready yet.
        set(&tx, true, Some(Mode::Unhealthy));
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(rule.num_calls(), 0, "no completion before the node is ready");
        set(&tx, true, Some(Mode::Active));
        let outcome = gate.await.expect("gate task");
        assert!(matches!(outcome, LaunchOutcome::Continued), "{outcome:?}");
        assert_eq!(rule.num_calls(), 1);
        assert!(started.elapsed() < LAUNCH_WITHIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_not_ready_in_time_abandons_its_launch() {
        let rule = launch_rule("ABANDON");
        let (tx, rx) = watch::channel(Status::default());
        // Active but its heartbeats do not land (the lease is not valid).
        set(&tx, false, Some(Mode::Active));
        let started = tokio::time::Instant::now();
        let outcome = gate_launch(&lifecycle(&rule), rx, LAUNCH_WITHIN).await;
        assert!(matches!(outcome, LaunchOutcome::Abandoned), "{outcome:?}");
        assert_eq!(rule.num_calls(), 1);
        assert!(started.elapsed() >= LAUNCH_WITHIN);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn no_waiting_launch_action_is_not_retried() {
        let rule = mock!(Client::complete_lifecycle_action).then_http_response(no_action_waiting);
        let (tx, rx) = watch::channel(Status::default());
        set(&tx, true, Some(Mode::Active));
        let outcome = gate_launch(&lifecycle(&rule), rx, LAUNCH_WITHIN).await;
        assert!(matches!(outcome, LaunchOutcome::NotWaiting), "{outcome:?}");
        assert_eq!(rule.num_calls(), 1);
        // The termination path reads the same answer the same way.
        let err = complete(&lifecycle(&rule)).await.expect_err("refused");
        assert_eq!(err.kind, LifecycleErrorKind::NotWaiting);
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_completion_failing_every_time_is_left_to_the_hook() {
        let rule = mock!(Client::complete_lifecycle_action)
            .sequence()
            .http_status(500, None)
            .times(COMPLETE_ATTEMPTS as usize)
            .build();
        let (tx, rx) = watch::channel(Status::default());
        set(&tx, true, Some(Mode::Active));
        let outcome = gate_launch(&lifecycle(&rule), rx, LAUNCH_WITHIN).await;
        match outcome {
            LaunchOutcome::Failed(e) => assert_eq!(e.kind, LifecycleErrorKind::Failed),
            other => panic!("{other:?}"),
        }
        assert_eq!(rule.num_calls(), COMPLETE_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_agent_leaves_the_launch_to_the_hook() {
        let rule = launch_rule("ABANDON");
        let (tx, rx) = watch::channel(Status::default());
        drop(tx);
        let outcome = gate_launch(&lifecycle(&rule), rx, LAUNCH_WITHIN).await;
        assert!(matches!(outcome, LaunchOutcome::Stopped), "{outcome:?}");
        assert_eq!(rule.num_calls(), 0);
    }

    #[test]
    fn the_launch_budget_counts_from_boot() {
        let timeout = Duration::from_secs(570);
        assert_eq!(
            launch_budget(timeout, Some(Duration::from_secs(70))),
            Some(Duration::from_secs(500))
        );
        assert_eq!(launch_budget(timeout, Some(timeout)), None);
        assert_eq!(launch_budget(timeout, Some(Duration::from_secs(86_400))), None);
        assert_eq!(launch_budget(timeout, None), Some(timeout));
        assert_eq!(parse_uptime("91.52 170.21\n"), Some(Duration::from_millis(91_520)));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("-1 2"), None);
        assert_eq!(parse_uptime("abc"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn completion_says_continue_for_this_instance_and_hook() {
        let rule = mock!(Client::complete_lifecycle_action)
            .match_requests(|r| {
                r.lifecycle_action_result() == Some("CONTINUE")
                    && r.auto_scaling_group_name() == Some("fleet-asg")
                    && r.lifecycle_hook_name() == Some("vipfleet-drain")
                    && r.instance_id() == Some("i-0abc")
            })
            .then_output(|| CompleteLifecycleActionOutput::builder().build());
        complete(&lifecycle(&rule)).await.expect("completed");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_completion_is_retried_then_reported_never_abandoned() {
        // Only CONTINUE requests match; an ABANDON would find no rule and
        // fail the test with the mock's own error instead of HTTP 500.
        let rule = mock!(Client::complete_lifecycle_action)
            .match_requests(|r| r.lifecycle_action_result() == Some("CONTINUE"))
            .sequence()
            .http_status(500, None)
            .times(COMPLETE_ATTEMPTS as usize)
            .build();
        let err = complete(&lifecycle(&rule)).await.expect_err("every attempt failed");
        assert_eq!(rule.num_calls(), COMPLETE_ATTEMPTS as usize);
        assert_eq!(err.op, "CompleteLifecycleAction");
        assert_eq!(err.instance, "i-0abc");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_until_it_completes() {
        let rule = mock!(Client::complete_lifecycle_action)
            .sequence()
            .http_status(500, None)
            .times(2)
            .output(|| CompleteLifecycleActionOutput::builder().build())
            .build();
        complete(&lifecycle(&rule)).await.expect("third attempt succeeds");
        assert_eq!(rule.num_calls(), 3);
    }

    fn watcher(asg: AsgLifecycle, terminating: bool) -> Watcher {
        Watcher {
            asg: Some(asg),
            terminating: Arc::new(AtomicBool::new(terminating)),
            drained: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_gave_up_still_lets_the_termination_go_on() {
        let rule = mock!(Client::complete_lifecycle_action)
            .match_requests(|r| r.lifecycle_action_result() == Some("CONTINUE"))
            .then_output(|| CompleteLifecycleActionOutput::builder().build());
        let terminating = watcher(lifecycle(&rule), true);
        terminating.gave_up().await;
        assert_eq!(rule.num_calls(), 1);
        assert!(terminating.drained.load(Ordering::Relaxed), "heartbeats stop");
        // A drain asked for by a signal or the dashboard has no action to complete.
        watcher(lifecycle(&rule), false).gave_up().await;
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_action_is_kept_alive_while_draining_and_no_longer() {
        let rule = mock!(Client::record_lifecycle_action_heartbeat)
            .match_requests(|r| r.instance_id() == Some("i-0abc"))
            .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
        let asg = Arc::new(lifecycle(&rule));
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (asg, done) = (asg.clone(), done.clone());
            async move { keep_alive(&*asg, &done).await }
        });
        tokio::time::sleep(LIFECYCLE_HEARTBEAT_INTERVAL * 3 + Duration::from_secs(1)).await;
        let while_draining = rule.num_calls();
        assert_eq!(while_draining, 3, "one heartbeat per interval while draining");
        done.store(true, Ordering::Relaxed);
        tokio::time::sleep(LIFECYCLE_HEARTBEAT_INTERVAL * 3).await;
        task.await.expect("keep_alive ends once drained");
        assert_eq!(rule.num_calls(), while_draining, "no heartbeat after the drain");
    }
}
