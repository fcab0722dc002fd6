//! `soak`: load for the whole duration, and every 20–40 s one of the
//! classic faults on a random node, healed and converged before the next;
//! the choices come from `--seed`, so a run can be repeated.
//!
//! Each fault concerns the VIPs its victim owned when it struck and those
//! whose shards moved until the fleet converged again; only they may fail,
//! and only in that window ([`super::trace::Window`]). The report adds the
//! agents' resident memory at the start and the end.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use tokio::time::sleep;

use super::faults::{self, Fault, Scenario};
use super::fleet;
use super::trace::Window;
use crate::lab::procs;

/// The gap before each fault, drawn uniformly.
const GAP_MIN: Duration = Duration::from_secs(20);
const GAP_MAX: Duration = Duration::from_secs(40);
/// A store outage in the soak: shorter than `store-outage`'s, so a fault
/// fits in its gap.
const SOAK_STORE_OUTAGE: Duration = Duration::from_secs(5);
/// A scale-in's drain and exit must be over within this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests that end this long after the fleet converged again still
/// belong to the fault: converged means owned and routed, and a node that
/// came back may take a share back a moment later.
const WINDOW_SLACK: Duration = Duration::from_secs(2);
/// No fault starts unless the load runs this much longer: the fault, its
/// heal and convergence must fall inside the run.
const FAULT_ROOM: Duration = Duration::from_secs(20);

/// The faults the soak draws from: each can strike any node of a running
/// lab and be healed while the load runs.
const FAULTS: [Scenario; 7] = [
    Scenario::Crash,
    Scenario::Zombie,
    Scenario::Partition,
    Scenario::StoreOutage,
    Scenario::ScaleIn,
    Scenario::RouteDrift,
    Scenario::AgentRestart,
];

/// splitmix64: small, seedable, and plenty for choosing faults.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn gap(&mut self) -> Duration {
        let span = (GAP_MAX - GAP_MIN).as_millis() as u64;
        GAP_MIN + Duration::from_millis(self.below(span + 1))
    }
}

/// The whole soak; returns when the load is about to end.
pub async fn soak(f: &mut Fault<'_>, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    loop {
        let gap = rng.gap();
        let now = crate::load::unix_ms();
        if now + (gap + FAULT_ROOM).as_millis() as u64 > f.load_end_ms {
            return Ok(());
        }
        sleep(gap).await;
        let kind = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        let victim = rng.below(f.state.nodes.len() as u64) as usize;
        one_fault(f, kind, victim).await?;
    }
}

async fn one_fault(f: &mut Fault<'_>, kind: Scenario, victim: usize) -> Result<()> {
    let before = fleet::ownership(f.state, f.sdk).await?;
    let from_ms = crate::load::unix_ms();
    let victim_id = f.state.nodes[victim].instance_id.clone();
    eprintln!("    soak: {} on {}", kind.name(), f.state.nodes[victim].name);
    {
        let mut sub = Fault {
            state: &mut *f.state,
            sdk: f.sdk,
            victim,
            before: &before,
            store_outage: SOAK_STORE_OUTAGE,
            load_end_ms: f.load_end_ms,
            crash_bound: f.crash_bound,
            trace: &mut *f.trace,
            proxy: None,
            seed: f.seed,
            duration_s: f.duration_s,
        };
        // Boxed: the soak is itself a scenario that `inject` runs.
        Box::pin(faults::inject(kind, &mut sub)).await?;
    }
    if kind == Scenario::Crash {
        // The survivors fail it over before the node comes back; started
        // at once, it would only be a restart.
        sleep(f.crash_bound).await;
    }
    if kind == Scenario::ScaleIn {
        let pid = f.state.nodes[victim].agent.pid;
        if !procs::wait_gone(&[pid], DRAIN_TIMEOUT).is_empty() {
            f.trace
                .violations
                .push(format!("{victim_id} did not drain within {DRAIN_TIMEOUT:?}"));
        }
    }
    let pids_before: Vec<u32> = f.state.nodes.iter().map(|n| n.agent.pid).collect();
    faults::heal(kind, f.state, victim, f.sdk).await?;
    // Agents started by the heal are watched from now on.
    for (i, node) in f.state.nodes.clone().iter().enumerate() {
        if pids_before.get(i) != Some(&node.agent.pid) {
            f.trace.watch(&node.name, &node.agent);
            f.trace.event("agent-start", &node.instance_id);
        }
    }
    if let Err(e) = super::wait_converged(f.state, f.sdk, f.state.nodes.len()).await {
        f.trace
            .violations
            .push(format!("after {} on {victim_id}: {e:#}", kind.name()));
    }
    sleep(WINDOW_SLACK).await;
    let after = fleet::ownership(f.state, f.sdk).await?;
    let mut vips: BTreeSet<_> = fleet::vips_of(&before, &victim_id).iter().map(|v| v.addr()).collect();
    vips.extend(fleet::moved(&before, &after, &BTreeSet::new()).keys().map(|v| v.addr()));
    if kind == Scenario::StoreOutage {
        // Fail static: the store's outage concerns no VIP.
        vips.clear();
    }
    f.trace.windows.push(Window {
        from_ms,
        to_ms: crate::load::unix_ms(),
        vips,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_choices_and_gaps_stay_in_range() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| (rng.gap(), rng.below(FAULTS.len() as u64)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let all = draw(7);
        assert!(all.iter().all(|(g, _)| (GAP_MIN..=GAP_MAX).contains(g)));
        let kinds: BTreeSet<u64> = all.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds.len(), FAULTS.len(), "50 draws reach every fault");
    }
}
