//! Agents restarted with another AWS endpoint (the fault proxy,
//! [`super::aws_proxy`]) or other `--set`s before a scenario, and back as
//! the lab made them afterwards. The agents read both only at start; a
//! restart moves nothing (the new process adopts its node's shards), so
//! the scenario's numbers start from a fleet as it was.

use std::time::Duration;

use anyhow::{bail, Result};

use super::rollout::wait_ready;
use crate::lab::node::{Endpoints, DYNAMODB_ENDPOINT_VAR, ENDPOINT_VAR};
use crate::lab::procs::{self, ProcRecord};
use crate::lab::state::LabState;

/// A stopped agent exits within this long (it does not drain).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts of one agent before giving up: an agent that exits at start (an
/// IMDS call timed out on a loaded machine, say) is started again, as
/// systemd's `Restart=on-failure` would.
const START_ATTEMPTS: u32 = 3;

/// How an agent is started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wiring {
    /// The one endpoint of every service, DynamoDB's included; `None`:
    /// the lab's motos.
    pub endpoint: Option<String>,
    /// `--set`s on top of the lab's own.
    pub sets: Vec<String>,
}

/// Node `index`'s agent record as the lab made it, rewired.
fn rewired(state: &LabState, index: usize, wiring: &Wiring) -> ProcRecord {
    let mut record = state.nodes[index].agent.clone();
    let lab = Endpoints::of(state);
    let endpoints = match &wiring.endpoint {
        Some(one) => Endpoints {
            aws: one,
            dynamodb: one,
        },
        None => lab,
    };
    record.env.insert(ENDPOINT_VAR.into(), endpoints.aws.into());
    record
        .env
        .insert(DYNAMODB_ENDPOINT_VAR.into(), endpoints.dynamodb.into());
    // The lab's own arguments, then the wiring's.
    let mut args = crate::lab::node::agent_args(state, std::path::Path::new(&config_of(&record)));
    for set in &wiring.sets {
        args.push("--set".into());
        args.push(set.clone());
    }
    record.args = args;
    record
}

/// The `--config` argument of an agent record.
fn config_of(record: &ProcRecord) -> String {
    record
        .args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .cloned()
        .unwrap_or_default()
}

/// Restarts every node's agent with `wiring`, one by one, each ready
/// before the next; a dead agent is only re-recorded (heal starts it).
/// The state is saved, so the lab's records say how the agents run.
pub async fn rewire_all(state: &mut LabState, wiring: &Wiring) -> Result<()> {
    for index in 0..state.nodes.len() {
        let record = rewired(state, index, wiring);
        if record == state.nodes[index].agent {
            continue;
        }
        let old = state.nodes[index].agent.clone();
        if !procs::is_alive(old.pid, &state.prefix) {
            state.nodes[index].agent = record;
            continue;
        }
        procs::signal(&[old.pid], "TERM");
        if !procs::wait_gone(&[old.pid], STOP_TIMEOUT).is_empty() {
            bail!(
                "{}'s agent still runs {STOP_TIMEOUT:?} after SIGTERM",
                state.nodes[index].name
            );
        }
        start(state, index, &record).await?;
    }
    state.save()
}

/// Starts node `index`'s agent as `record` says and waits until it is
/// ready, starting it again if it exits first.
async fn start(state: &mut LabState, index: usize, record: &ProcRecord) -> Result<()> {
    let mut attempt = 1;
    loop {
        state.nodes[index].agent = procs::respawn(&state.dir, &state.prefix, record)?;
        state.save()?;
        match wait_ready(state, index).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < START_ATTEMPTS && !procs::is_alive(state.nodes[index].agent.pid, &state.prefix) => {
                eprintln!(
                    "==> {}'s agent exited at start ({e}); starting it again",
                    state.nodes[index].name
                );
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_argument_is_found() {
        let record = ProcRecord {
            name: "n0-agent".into(),
            pid: 1,
            netns: None,
            program: "agent".into(),
            args: vec![
                "run".into(),
                "--config".into(),
                "/x/n0.toml".into(),
                "--set".into(),
                "a.b=1".into(),
            ],
            env: Default::default(),
            log: "/x/n0.log".into(),
            priority: Default::default(),
            alive: None,
        };
        assert_eq!(config_of(&record), "/x/n0.toml");
    }
}
