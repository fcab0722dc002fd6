//! The Auto Scaling termination lifecycle, from the agent's side.
//!
//! [`Watcher`] polls IMDS `autoscaling/target-lifecycle-state`; when it turns
//! `Terminated` (scale-in, instance refresh) the node drains. While it
//! drains, the lifecycle action is kept alive with
//! `RecordLifecycleActionHeartbeat`; once drained it is completed with
//! `CONTINUE`. `ABANDON` is never sent: an instance that could not hand its
//! shards away should keep its routes (fail static) until the hook times out.
//!
//! The Auto Scaling calls sit behind [`Lifecycle`], so the path is tested
//! with `aws-smithy-mocks` (moto answers these calls with HTTP 500).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::driver::Control;
use crate::identity::{Imds, LifecycleState, NodeIdentity};

/// Under the hook's default heartbeat timeout (60 s and up) with room to spare.
pub const LIFECYCLE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
/// Tries of `CompleteLifecycleAction` before giving up to the hook's timeout.
const COMPLETE_ATTEMPTS: u32 = 5;
const COMPLETE_RETRY_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
#[error("autoscaling {op} for {instance}: {detail}")]
pub struct LifecycleError {
    pub op: &'static str,
    pub instance: String,
    pub detail: String,
}

/// The two lifecycle calls the agent makes.
pub trait Lifecycle: Send + Sync {
    fn record_heartbeat(&self) -> impl Future<Output = Result<(), LifecycleError>> + Send;
    fn complete_continue(&self) -> impl Future<Output = Result<(), LifecycleError>> + Send;
}

/// [`Lifecycle`] over aws-sdk-autoscaling, for one instance and hook.
#[derive(Clone)]
pub struct AsgLifecycle {
    client: aws_sdk_autoscaling::Client,
    group: String,
    hook: String,
    instance: String,
}

impl AsgLifecycle {
    pub fn new(client: aws_sdk_autoscaling::Client, group: &str, hook: &str, instance: &str) -> Self {
        Self {
            client,
            group: group.to_string(),
            hook: hook.to_string(),
            instance: instance.to_string(),
        }
    }

    fn error(&self, op: &'static str, e: impl std::error::Error) -> LifecycleError {
        LifecycleError {
            op,
            instance: self.instance.clone(),
            detail: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
        }
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
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(&self.hook)
            .instance_id(&self.instance)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("CompleteLifecycleAction", e))
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

/// Completes the action with `CONTINUE`, retrying a few times.
pub async fn complete<L: Lifecycle>(lifecycle: &L) -> Result<(), LifecycleError> {
    let mut attempt = 1;
    loop {
        match lifecycle.complete_continue().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= COMPLETE_ATTEMPTS => return Err(e),
            Err(e) => {
                warn!(attempt, "{e}; retrying");
                attempt += 1;
                tokio::time::sleep(COMPLETE_RETRY_DELAY).await;
            }
        }
    }
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
        let asg = config.lifecycle.asg_name.as_ref().map(|group| {
            AsgLifecycle::new(
                aws_sdk_autoscaling::Client::new(sdk),
                group,
                &config.lifecycle.hook_name,
                me.instance_id.as_str(),
            )
        });
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

    use crate::aws::mocked_client;

    fn lifecycle(rule: &Rule) -> AsgLifecycle {
        let client: Client = mocked_client!(aws_sdk_autoscaling, [rule]);
        AsgLifecycle::new(client, "fleet-asg", "vipfleet-drain", "i-0abc")
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
