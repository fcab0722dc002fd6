//! What the harness did during a run and what it learnt on the way: fault
//! events, readings of the agents' `/metrics`, agent processes it ended or
//! started, and what the scenario expects of the fleet (VIPs that may
//! fail, shard items it deleted, routes that may change).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use vipfleet_core::Vip;

use super::fleet::{self, Scrape};
use super::route_log::{self, RouteChange};
use crate::lab::procs::{self, ProcRecord};
use crate::lab::state::LabState;
use crate::report::{AgentExit, Phase};
use crate::timeline::FaultEvent;

/// A reading of every agent's `/metrics`, named after what follows it.
pub struct Reading {
    pub name: String,
    pub t_ms: u64,
    pub scrape: Scrape,
}

/// An agent process the run watches: alive at the start or started by the
/// harness. `log_from` is where its log stood when the harness last
/// touched it, so its exit line is found after that.
#[derive(Clone, Debug)]
struct Watched {
    node: String,
    log: PathBuf,
    log_from: u64,
    /// How the harness ended it (`stopped`, `killed`) or expects it to end
    /// (`drained`); `None`: it should outlive the run.
    cause: Option<&'static str>,
}

#[derive(Default)]
pub struct Trace {
    pub events: Vec<FaultEvent>,
    pub readings: Vec<Reading>,
    watched: BTreeMap<u32, Watched>,
    /// Acceptance failures found while acting.
    pub violations: Vec<String>,
    /// VIPs the fault concerns: their requests may fail from this time on.
    pub may_fail: BTreeMap<Ipv4Addr, u64>,
    /// VIPs taken out of service on purpose: not expected to answer again.
    pub removed: BTreeSet<Ipv4Addr>,
    /// Shards whose items the harness deleted: their epochs start over.
    pub recreated: BTreeSet<Vip>,
    /// VIPs whose shard item was missing when their owner crashed: such a
    /// shard is claimed only once seen missing for a lease, however soon
    /// its owner is found gone, so it may stay dark a lease longer.
    pub missing_at_crash: BTreeSet<Ipv4Addr>,
    /// VIPs whose routes may change although their shard did not move (a
    /// route the harness drifted, a VIP added or removed).
    pub may_reroute: BTreeSet<Vip>,
    /// Route tables the fault keeps the agents from writing: their routes
    /// are not held to the owners at the end.
    pub frozen_tables: BTreeSet<String>,
    /// (client, VIP) pairs the fault leaves routed to a dead node for good
    /// (through a frozen table): their requests are left out.
    pub unreachable: BTreeSet<(String, Ipv4Addr)>,
    /// Where the fault proxy's EC2 calls are held to a backoff, Unix ms.
    pub ec2_window: Option<(u64, u64)>,
    /// Drains the harness saw done.
    pub drains: Vec<super::drain_storm::DrainDone>,
    /// The soak's faults: where the scenario is a series of faults, a VIP
    /// may fail only inside a window that concerns it (and `may_fail` is
    /// not used).
    pub windows: Vec<Window>,
    /// Where the fault is a series, each followed by a restart the harness
    /// does ([`super::crashes`]): the spans that are the faults' own, Unix
    /// ms; flips are counted in them only.
    pub measured: Vec<(u64, u64)>,
    /// The series' moves, counted fault by fault, instead of from the
    /// run's start to its end.
    pub series_moves: Option<crate::report::Moves>,
    /// At-rest's counted and modelled cost ([`super::at_rest`]).
    pub at_rest: Option<crate::report::AtRestCost>,
}

/// One fault of a series, from its start until the fleet converged again,
/// and the VIPs it concerns.
#[derive(Clone, Debug)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    pub vips: BTreeSet<Ipv4Addr>,
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

impl Trace {
    /// Starts watching every running agent of the lab.
    pub fn new(state: &LabState) -> Self {
        let mut trace = Trace::default();
        for node in state
            .nodes
            .iter()
            .filter(|n| procs::is_alive(n.agent.pid, &state.prefix))
        {
            trace.watch(&node.name, &node.agent);
        }
        trace
    }

    pub fn event(&mut self, kind: &str, node: &str) {
        self.events.push(FaultEvent {
            t_ms: crate::load::unix_ms(),
            kind: kind.to_string(),
            node: node.to_string(),
        });
    }

    /// Reads every agent's `/metrics`. Taken just before an agent is
    /// stopped, it keeps that process's calls in the totals.
    pub async fn read(&mut self, name: &str, state: &LabState) {
        let scrape = fleet::scrape(state).await;
        self.readings.push(Reading {
            name: name.to_string(),
            t_ms: crate::load::unix_ms(),
            scrape,
        });
    }

    /// Watches an agent process from now on (one the harness started).
    pub fn watch(&mut self, node: &str, agent: &ProcRecord) {
        self.track(node, agent, None);
    }

    /// Notes that the harness is about to end (or expects the end of) an
    /// agent process, and how.
    pub fn ending(&mut self, node: &str, agent: &ProcRecord, cause: &'static str) {
        self.track(node, agent, Some(cause));
    }

    fn track(&mut self, node: &str, agent: &ProcRecord, cause: Option<&'static str>) {
        self.watched.insert(
            agent.pid,
            Watched {
                node: node.to_string(),
                log: agent.log.clone(),
                log_from: log_len(&agent.log),
                cause,
            },
        );
    }

    /// Starts an agent again as it was recorded, and watches the new process.
    pub fn respawn_agent(&mut self, state: &mut LabState, index: usize) -> Result<()> {
        let node = &state.nodes[index];
        let agent = procs::respawn(&state.dir, &state.prefix, &node.agent)?;
        self.watch(&node.name.clone(), &agent);
        state.nodes[index].agent = agent;
        state.save()
    }

    /// The run cut at the harness's readings, where it took more than the
    /// start and end ones.
    pub fn phases(&self, route_log: &[RouteChange]) -> Vec<Phase> {
        if self.readings.len() <= 2 {
            return Vec::new();
        }
        self.readings
            .windows(2)
            .map(|pair| {
                let (from, to) = (&pair[0], &pair[1]);
                let calls = fleet::calls_between(&from.scrape, &to.scrape);
                Phase {
                    name: from.name.clone(),
                    from_ms: from.t_ms,
                    to_ms: to.t_ms,
                    route_changes: route_log::between(route_log, from.t_ms, to.t_ms).count() as u64,
                    ddb: calls.ddb(),
                    ec2: calls.ec2(),
                }
            })
            .collect()
    }

    /// Every watched agent that is no longer running, with how it ended;
    /// `unexpected` when the harness did not end it.
    pub fn exits(&self, prefix: &str) -> Vec<AgentExit> {
        self.watched
            .iter()
            .filter(|(pid, _)| !procs::is_alive(**pid, prefix))
            .map(|(pid, w)| AgentExit {
                node: w.node.clone(),
                pid: *pid,
                cause: w.cause.unwrap_or("unexpected").to_string(),
                exit_line: exit_line(&w.log, w.log_from),
            })
            .collect()
    }
}

/// What the agent logged about its exit after `from` (its last line, or
/// `None` when it logged none, as after a `kill -9`).
fn exit_line(log: &Path, from: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(usize::try_from(from).ok()?..)?).into_owned();
    text.lines()
        .rev()
        .find(|l| l.contains(EXIT_STOPPED) || l.contains(EXIT_DRAINED) || l.contains(" ERROR "))
        .map(|l| l.trim().to_string())
}

/// The agent's last log line when it exits 0 after a stop signal
/// (services/agent/src/app.rs)...
pub const EXIT_STOPPED: &str = "stopped without draining";
/// ...and after draining.
pub const EXIT_DRAINED: &str = "drained: every shard handed off";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_line_is_the_last_one_after_the_mark() {
        let dir = std::env::temp_dir().join(format!("vipfleet-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("n0-agent.log");
        let first = "2026-01-01T00:00:00Z  INFO vipfleet_agent::app: stopped without draining: the next start adopts\n";
        std::fs::write(&log, format!("{first}2026-01-01T00:00:01Z  INFO x: event=Registered\n")).unwrap();
        assert!(exit_line(&log, 0).unwrap().contains(EXIT_STOPPED));
        assert_eq!(exit_line(&log, first.len() as u64), None, "a kill -9 logs nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
