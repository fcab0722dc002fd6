//! Three `vipfleet-agent` processes against moto share 24 VIPs over 2
//! route tables, survive a `kill -9` of one, restart another (SIGTERM, then
//! start again: nothing moves and no route is written), and drain it through
//! its dashboard.
//!
//! The test judges the fleet only by what it leaves in AWS: it polls the
//! lease table (a consistent scan) and the route tables through the SDK,
//! never the agents' logs. Besides the acceptance checks of each phase it
//! checks at every poll that no route moved to a node that did not hold
//! the shard's lease (the fencing rule of docs/design.md). The logs go to files
//! that are printed when the test fails. Measured times are printed past
//! the harness's capture so a passing run reports them too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use vipfleet_tests::fleet::{counts, summarize, Fleet, Node, Snapshot, LEASE_TTL_MS, TRACE_VAR};
use vipfleet_tests::{http, metric, moto_endpoint, say, Agent, Workdir};

const AGENTS: usize = 3;
const VIPS: u32 = 24;
const ROUTE_TABLES: usize = 2;
/// Start-up takes claims, rebalancing as the later agents join, and 48
/// route writes.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The acceptance bound: a crashed node's shards have new owners, with
/// routes, within `lease_ttl + 3 s`.
const FAILOVER_BOUND: Duration = Duration::from_millis(LEASE_TTL_MS + 3000);
/// How long the test keeps looking after the bound, to report how late a
/// slow failover was rather than only that it was late.
const FAILOVER_GRACE: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A stopped agent exits at once (it does not drain).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a restarted agent is watched for moves: past the lease, so a
/// restart that let the lease run out would show.
const RESTART_WATCH: Duration = Duration::from_millis(LEASE_TTL_MS * 3);
const DASHBOARD_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "agents-test-token-0123456789abcdef";

/// Routes that changed between two polls to an ENI whose node held the
/// shard neither at the first scan of `prev` nor at the last scan of
/// `next`. When the epoch moved by at most one in between, those two
/// were the only holders, so such a route was written by a node that did
/// not hold the lease (docs/design.md, "Fencing route writes").
fn unfenced_writes(fleet: &Fleet, prev: &Snapshot, next: &Snapshot) -> Vec<String> {
    let mut found = Vec::new();
    for (id, shard) in &next.shards {
        let (owner0, epoch0) = prev.before.get(id).map_or((None, 0), |s| (s.owner.as_deref(), s.epoch));
        let (owner1, epoch1) = (shard.owner.as_deref(), shard.epoch);
        if epoch1.saturating_sub(epoch0) > 1 {
            continue; // holders in between are unknown
        }
        let holders: Vec<&str> = [owner0, owner1]
            .into_iter()
            .flatten()
            .filter_map(|o| fleet.eni_of(o))
            .collect();
        for vip in &shard.vips {
            for table in &fleet.lab.route_tables {
                let key = (table.clone(), vip.clone());
                let (was, now) = (
                    prev.routes.get(&key).cloned().flatten(),
                    next.routes.get(&key).cloned().flatten(),
                );
                match now {
                    Some(eni) if was.as_ref() != Some(&eni) && !holders.contains(&eni.as_str()) => {
                        found.push(format!(
                            "{table} {vip} changed from {was:?} to {eni} ({}), but shard {id} was held only by \
                             {owner0:?} (epoch {epoch0}) and {owner1:?} (epoch {epoch1}) meanwhile",
                            fleet.name_of_eni(&eni)
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// `(owner, epoch)` of every shard `owner` holds.
fn held_by(snap: &Snapshot, owners: &[&Node]) -> BTreeMap<String, (String, u64)> {
    snap.shards
        .iter()
        .filter_map(|(id, s)| {
            let owner = s.owner.clone()?;
            owners
                .iter()
                .any(|n| n.instance_id == owner)
                .then_some((id.clone(), (owner, s.epoch)))
        })
        .collect()
}

/// Panics if any shard in `kept` changed owner or went back in epoch. The
/// epoch may step with the owner unchanged: an owner that re-registered
/// (a heartbeat lost on a slow store) claims its shards again.
fn assert_unmoved(snap: &Snapshot, kept: &BTreeMap<String, (String, u64)>, when: &str) {
    for (id, (owner, epoch)) in kept {
        let now = snap.shards.get(id).map(|s| (s.owner.clone(), s.epoch));
        assert!(
            now.as_ref()
                .is_some_and(|(o, e)| o.as_deref() == Some(owner.as_str()) && e >= epoch),
            "{when}: shard {id} of surviving {owner} (epoch {epoch}) moved ({now:?}); it must stay put"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_share_fail_over_and_drain() {
    let Some(endpoint) = moto_endpoint("three_agents_share_fail_over_and_drain") else {
        return;
    };
    let work = Workdir::new("agents");
    let fleet = Fleet::create(&endpoint, "agents", &work, AGENTS, VIPS, ROUTE_TABLES).await;
    let nodes = fleet.nodes.clone();

    // 1. Start: every shard owned, 8/8/8, routes to the owners.
    let mut observer = Observer::new(&fleet);
    let started = Instant::now();
    let mut agents: Vec<Agent> = nodes.iter().map(|n| fleet.start(n, &work)).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let start = poll(&mut observer, &mut agents, CONVERGE_TIMEOUT, "start", |snap| {
        fleet.converged(snap, &all)
    })
    .await;
    let converge_time = started.elapsed();
    say(&format!(
        "MEASURED start: converged in {converge_time:?} ({:?})",
        counts(&start)
    ));

    // 2. kill -9 agent a: its shards, and only those, move; routes follow.
    let (dead, survivors) = (&nodes[0], [&nodes[1], &nodes[2]]);
    let orphans: BTreeSet<String> = held_by(&start, &[dead]).into_keys().collect();
    let kept = held_by(&start, &survivors);
    assert_eq!(orphans.len() + kept.len(), VIPS as usize);
    let killed_at = Instant::now();
    agents[0].kill_hard();
    let mut owned_again: Option<Duration> = None;
    let after_kill = poll(
        &mut observer,
        &mut agents[1..],
        FAILOVER_BOUND + FAILOVER_GRACE,
        "failover",
        |snap| {
            assert_unmoved(snap, &kept, "after kill -9");
            let placed = orphans
                .iter()
                .all(|id| snap.shards.get(id).and_then(|s| s.owner.as_deref()) != Some(dead.instance_id.as_str()));
            if placed && owned_again.is_none() {
                owned_again = Some(killed_at.elapsed());
            }
            fleet.converged(snap, &survivors)
        },
    )
    .await;
    let failover_time = killed_at.elapsed();
    say(&format!(
        "MEASURED failover after kill -9: owners in {:?}, owners and routes in {failover_time:?} \
         (bound {FAILOVER_BOUND:?}, lease_ttl {LEASE_TTL_MS} ms) ({:?})",
        owned_again.unwrap_or(failover_time),
        counts(&after_kill)
    ));
    assert!(
        failover_time <= FAILOVER_BOUND,
        "failover took {failover_time:?}, over the bound of {FAILOVER_BOUND:?}"
    );
    assert_unmoved(&after_kill, &kept, "after failover");
    let dead_state = after_kill.nodes.get(&dead.instance_id).map(|n| n.state.clone());
    say(&format!("node item of the killed agent: state {dead_state:?}"));

    // 3. Restart agent b (SIGTERM, then start it again at once, as an
    //    upgrade does): it exits 0 without draining, and the new process
    //    adopts its shards. Nothing moves, no route changes, and the new
    //    process writes no route.
    let (restarted, last) = (&nodes[1], &nodes[2]);
    let before_restart = observer.snapshot().await.expect("read moto before the restart");
    let stopped_at = Instant::now();
    agents[1].terminate();
    let status = loop {
        if let Some(status) = agents[1].exit_status() {
            break status;
        }
        assert!(
            stopped_at.elapsed() < STOP_TIMEOUT,
            "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
            restarted.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "{} exited with {status} after SIGTERM",
        restarted.name
    );
    let stop_time = stopped_at.elapsed();
    let mut with_token = restarted.clone();
    with_token.dashboard_token_file = Some(work.write("b.token", &format!("{TOKEN}\n")));
    agents[1] = fleet.start(&with_token, &work);
    let watch_until = Instant::now() + RESTART_WATCH;
    while Instant::now() < watch_until {
        let snap = observer.snapshot().await.expect("read moto after the restart");
        let everything = held_by(&before_restart, &[restarted, last]);
        assert_unmoved(&snap, &everything, "after an agent restart");
        assert_eq!(snap.routes, before_restart.routes, "a restart changed a route");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let dashboard = agents[1].dashboard_addr(DASHBOARD_TIMEOUT);
    let (code, text) = http(dashboard, "GET", "/metrics", None).await.expect("metrics of b");
    assert_eq!(code, 200, "{text}");
    let writes: f64 = ["replace_route", "create_route"]
        .iter()
        .map(|op| metric(&text, &format!(r#"vipfleet_ec2_calls_total{{op="{op}",outcome="ok"}}"#)))
        .sum();
    assert_eq!(writes, 0.0, "the restarted agent wrote routes it already had");
    assert_eq!(
        metric(&text, "vipfleet_claims_total") + metric(&text, "vipfleet_takeovers_total"),
        0.0
    );
    // Against moto the agent counts its own estimate of the units, not
    // moto's constants (0.5 for an UpdateItem): a unit per heartbeat, at
    // least (units are counted before the call is).
    let beats = metric(&text, r#"vipfleet_store_calls_total{op="heartbeat",outcome="ok"}"#);
    let beat_units = metric(&text, r#"vipfleet_dynamodb_write_units_total{op="heartbeat"}"#);
    assert!(beats > 0.0 && beat_units >= beats, "{text}");
    assert!(
        metric(&text, r#"vipfleet_dynamodb_read_units_total{op="read_nodes"}"#) > 0.0,
        "{text}"
    );
    say(&format!(
        "MEASURED restart: exited 0 in {stop_time:?} after SIGTERM; {RESTART_WATCH:?} later nothing had moved, \
         routes unchanged, 0 route writes by the new process"
    ));

    // 4. Drain b through its dashboard: it hands everything to c, routes
    //    follow, it exits 0.
    let kept = held_by(&before_restart, &[last]);
    let (code, body) = http(dashboard, "POST", "/api/v1/drain", Some(TOKEN))
        .await
        .expect("drain b");
    assert_eq!(code, 202, "{body}");
    let drain_asked_at = Instant::now();
    let mut exited: Option<(Duration, std::process::ExitStatus)> = None;
    let deadline = drain_asked_at + DRAIN_TIMEOUT;
    let drained = loop {
        if exited.is_none() {
            exited = agents[1].exit_status().map(|s| (drain_asked_at.elapsed(), s));
        }
        if let Some((_, status)) = exited {
            assert!(
                status.success(),
                "{} exited with {status} after its drain",
                restarted.name
            );
        }
        assert!(
            agents[2].exit_status().is_none(),
            "{} exited during the drain",
            last.name
        );
        let snap = observer.snapshot().await;
        if let Ok(snap) = &snap {
            assert_unmoved(snap, &kept, "during the drain");
        }
        let verdict = snap.and_then(|snap| fleet.converged(&snap, &[last]).map(|()| snap));
        match (verdict, exited) {
            (Ok(snap), Some(_)) => break snap,
            (verdict, _) => assert!(
                Instant::now() < deadline,
                "drain of {} not done within {DRAIN_TIMEOUT:?}: exited {exited:?}, {:?}",
                restarted.name,
                verdict.err()
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let drain_time = drain_asked_at.elapsed();
    say(&format!(
        "MEASURED drain through the dashboard: exited 0 in {:?}, owners and routes on {} by {drain_time:?} ({:?})",
        exited.map(|(t, _)| t),
        last.name,
        counts(&drained)
    ));
    let leaving_state = drained.nodes.get(&restarted.instance_id).map(|n| n.state.clone());
    assert_eq!(
        leaving_state.as_deref(),
        Some("draining"),
        "the drained node's item says so"
    );
}

/// Reads moto for the test and checks at every poll that no route was
/// written by a node that did not hold its shard.
struct Observer<'a> {
    fleet: &'a Fleet,
    prev: Option<Snapshot>,
}

impl<'a> Observer<'a> {
    fn new(fleet: &'a Fleet) -> Self {
        Self { fleet, prev: None }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        let snap = self.fleet.snapshot().await?;
        if let Some(prev) = &self.prev {
            let unfenced = unfenced_writes(self.fleet, prev, &snap);
            assert!(
                unfenced.is_empty(),
                "a route was written by a node without the shard's lease: {}",
                summarize(&unfenced)
            );
        }
        self.prev = Some(snap.clone());
        Ok(snap)
    }
}

/// Polls moto until `check` passes, failing the test after `timeout` with
/// the last reason. `check` may itself panic on an invariant. Every agent
/// in `running` must stay up meanwhile.
async fn poll(
    observer: &mut Observer<'_>,
    running: &mut [Agent],
    timeout: Duration,
    phase: &str,
    mut check: impl FnMut(&Snapshot) -> Result<(), String>,
) -> Snapshot {
    let began = Instant::now();
    loop {
        for agent in running.iter_mut() {
            if let Some(status) = agent.exit_status() {
                panic!("{phase}: agent {} exited with {status}", agent.name);
            }
        }
        let last = match observer.snapshot().await {
            Ok(snap) => match check(&snap) {
                Ok(()) => return snap,
                Err(why) => why,
            },
            Err(e) => format!("cannot read moto: {e}"),
        };
        if std::env::var_os(TRACE_VAR).is_some() {
            say(&format!("{phase} +{:?}: {last}", began.elapsed()));
        }
        assert!(
            began.elapsed() < timeout,
            "{phase}: not converged within {timeout:?}: {last}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
