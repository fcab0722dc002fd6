//! `at-rest`: what a settled fleet costs in DynamoDB request units, counted
//! by the agents, against the cost model (`vipfleet_core::cost::at_rest`).
//!
//! The harness waits until the lab has converged and, with the cheap
//! profile, every agent reads cold (`vipfleet_reads_cold`), then reads every agent's unit counters
//! (`vipfleet_dynamodb_{read,write}_units_total`, every `op`) at the start
//! and the end of a quiet window. The model is fed the lab's own shape, the
//! sizes of the items in its lease table and the lease the agents run; the
//! counted rates must come within [`TOLERANCE`] of the modelled ones. The
//! agents count units by their size estimate against moto (see the agent's
//! `dynamo_units`), the same rules the model uses, so a gap is a
//! difference in what is read or written, not in how it is billed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::time::{sleep, Instant};
use vipfleet_agent::aws::dynamo::DynamoLeaseStore;
use vipfleet_core::cost::{self, Fleet, ItemSizes, UnitsPerSecond};
use vipfleet_core::store::LeaseStore;
use vipfleet_core::units::{node_item_bytes, shard_item_bytes};
use vipfleet_core::{LeaseConfig, NodeState};

use super::faults::Fault;
use super::fleet::Agent;
use crate::lab::state::LabState;
use crate::report::AtRestCost;

/// Counted and modelled rates may differ by this share of the modelled.
pub const TOLERANCE: f64 = 0.10;
/// The quiet window lasts at least this long: a cold node reads the whole
/// table once a `cold_refresh_interval` (60 s by default), and a shorter
/// window would catch that read or miss it by chance.
const MIN_WINDOW: Duration = Duration::from_secs(60);
/// Beyond two leases (a node turns cold a lease after the fleet's last
/// change), how long the fleet may take to read cold.
const COLD_SLACK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// The longest the harness waits for every agent to read cold.
pub fn cold_wait_bound(lease_ttl: Duration) -> Duration {
    lease_ttl * 2 + COLD_SLACK
}

/// The quiet window for `--duration` seconds.
pub fn window(duration_s: f64) -> Duration {
    Duration::from_secs_f64(duration_s.max(0.0)).max(MIN_WINDOW)
}

/// `window` rounded up to a whole number of cold refreshes.
pub fn whole_refreshes(window: Duration, refresh: Duration) -> Duration {
    let refreshes = window.as_secs_f64() / refresh.as_secs_f64().max(f64::EPSILON);
    refresh.mul_f64(refreshes.ceil().max(1.0))
}

/// Seconds of load the scenario runs: the warm-up, the usual wait for
/// cold reads (two leases) and the window. Load is HTTP to the VIPs and
/// costs no DynamoDB unit, so a measurement that runs past it is as good.
pub fn duration(warmup: Duration, lease_ttl: Duration, duration_s: f64) -> Duration {
    warmup + lease_ttl * 2 + window(duration_s)
}

/// The lease the lab's agents run (see [`crate::lab::state::Lease::config`]).
pub fn lab_lease(state: &LabState) -> LeaseConfig {
    state.lease.config()
}

/// What one agent's `/metrics` says of its reads and their cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnitsReading {
    pub reads_cold: bool,
    pub read_units: f64,
    pub write_units: f64,
}

/// The unit counters (summed over `op`) and the cold gauge of a `/metrics`
/// text. Counters are floats: an eventually consistent read is half a unit.
pub fn parse_units(text: &str) -> UnitsReading {
    let mut r = UnitsReading::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match series.split('{').next().unwrap_or(series) {
            "vipfleet_dynamodb_read_units_total" => r.read_units += value,
            "vipfleet_dynamodb_write_units_total" => r.write_units += value,
            "vipfleet_reads_cold" => r.reads_cold = value > 0.0,
            _ => {}
        }
    }
    r
}

/// Every answering agent's reading, by process.
async fn read_agents(state: &LabState) -> BTreeMap<Agent, UnitsReading> {
    super::fleet::scrape_with(state, parse_units).await
}

/// Units per second each kind, over the agents read at both ends.
fn counted_rate(
    start: &BTreeMap<Agent, UnitsReading>,
    end: &BTreeMap<Agent, UnitsReading>,
    elapsed: Duration,
) -> UnitsPerSecond {
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let (read, write) = end.iter().fold((0.0, 0.0), |(read, write), (agent, e)| {
        let s = start.get(agent).copied().unwrap_or_default();
        (
            read + (e.read_units - s.read_units),
            write + (e.write_units - s.write_units),
        )
    });
    UnitsPerSecond {
        read: read / secs,
        write: write / secs,
    }
}

/// Whether `counted` is within [`TOLERANCE`] of `modelled`.
fn within(counted: f64, modelled: f64) -> bool {
    (counted - modelled).abs() <= TOLERANCE * modelled.abs()
}

/// The model's rates for the lab as its lease table shows it, and how often
/// a cold node reads that table in full.
async fn modelled(f: &Fault<'_>) -> Result<(UnitsPerSecond, Duration)> {
    let table = &f.state.aws.table;
    let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(f.sdk), table.clone());
    let nodes = store
        .read_nodes()
        .await
        .map_err(|e| anyhow!("reading the node items of {table}: {e}"))?;
    let shards = store
        .read_shards()
        .await
        .map_err(|e| anyhow!("reading the shard items of {table}: {e}"))?;
    // The largest item of each kind: they differ by a byte or two (counter
    // digits), and the model bills whole blocks of the table.
    let node = nodes
        .records
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .max_by_key(|n| node_item_bytes(n))
        .ok_or_else(|| anyhow!("no active node item in {table}"))?;
    let shard = shards
        .records
        .iter()
        .max_by_key(|s| shard_item_bytes(s))
        .ok_or_else(|| anyhow!("no shard item in {table}"))?;
    let layout_id = node
        .config
        .as_ref()
        .map(|c| c.layout.clone())
        .ok_or_else(|| anyhow!("node item {} announces no layout", node.info.id))?;
    let layout = store
        .read_layout(&layout_id)
        .await
        .map_err(|e| anyhow!("reading layout {layout_id} from {table}: {e}"))?
        .ok_or_else(|| anyhow!("layout {layout_id} is not in {table}"))?;
    let fleet = Fleet {
        nodes: f.state.nodes.len() as u64,
        vips: f.state.vips.len() as u64,
        route_tables: f.state.route_tables.len() as u64,
    };
    let (sizes, lease) = (ItemSizes::of(node, shard, &layout), lab_lease(f.state));
    let refresh = cost::cold_refresh(&lease, cost::table_bytes(&fleet, &sizes));
    Ok((cost::at_rest(&fleet, &sizes, &lease), refresh))
}

/// Waits for a converged fleet, every agent reading cold when its profile
/// reads cold; `Ok(false)` (and a violation) when it does not come within
/// [`cold_wait_bound`].
async fn wait_cold(f: &mut Fault<'_>) -> Result<bool> {
    let bound = cold_wait_bound(f.ttl());
    let cold_reads = lab_lease(f.state).cold_reads;
    let deadline = Instant::now() + bound;
    loop {
        let converged = crate::lab::check::check(f.state, f.sdk).await?;
        let readings = read_agents(f.state).await;
        let cold = readings.values().filter(|r| r.reads_cold).count();
        if converged.converged() && (!cold_reads || cold == f.state.nodes.len()) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            f.trace.violations.push(format!(
                "the fleet did not read cold within {bound:?}: {cold}/{} agents cold, {}",
                f.state.nodes.len(),
                converged.summary()
            ));
            return Ok(false);
        }
        sleep(POLL).await;
    }
}

/// The scenario: wait for cold reads, count a quiet window, compare.
pub async fn at_rest(f: &mut Fault<'_>, window: Duration) -> Result<()> {
    if !wait_cold(f).await? {
        return Ok(());
    }
    let (modelled, refresh) = modelled(f).await?;
    let window = if lab_lease(f.state).cold_reads {
        // The nodes turned cold together and each reads the whole table
        // once a refresh from then on: a window that starts half a refresh
        // later and lasts whole refreshes holds each of those reads once,
        // never one at its edge.
        sleep(refresh / 2).await;
        whole_refreshes(window, refresh)
    } else {
        window
    };
    f.trace.event("at-rest-start", "fleet");
    let start = read_agents(f.state).await;
    let started = Instant::now();
    sleep(window).await;
    let end = read_agents(f.state).await;
    let elapsed = started.elapsed();
    f.trace.event("at-rest-end", "fleet");

    if start.keys().ne(end.keys()) || end.len() != f.state.nodes.len() {
        f.trace.violations.push(format!(
            "the agents changed during the quiet window: {:?} at the start, {:?} at the end",
            start.keys().collect::<Vec<_>>(),
            end.keys().collect::<Vec<_>>()
        ));
    }
    let cold_reads = lab_lease(f.state).cold_reads;
    let hot: Vec<&str> = end
        .iter()
        .filter(|(_, r)| cold_reads && !r.reads_cold)
        .map(|((id, _), _)| id.as_str())
        .collect();
    if !hot.is_empty() {
        f.trace
            .violations
            .push(format!("reading hot again at the end of the quiet window: {hot:?}"));
    }
    let counted = counted_rate(&start, &end, elapsed);
    for (kind, c, m) in [
        ("read", counted.read, modelled.read),
        ("write", counted.write, modelled.write),
    ] {
        if !within(c, m) {
            f.trace.violations.push(format!(
                "at rest the agents counted {c:.3} {kind} units/s, the model {m:.3}: more than {:.0}% apart",
                TOLERANCE * 100.0
            ));
        }
    }
    f.trace.at_rest = Some(AtRestCost {
        window_s: elapsed.as_secs_f64(),
        counted_read_units_per_s: counted.read,
        counted_write_units_per_s: counted.write,
        modelled_read_units_per_s: modelled.read,
        modelled_write_units_per_s: modelled.write,
        counted_usd_per_month: cost::on_demand_usd_per_month(&counted),
        modelled_usd_per_month: cost::on_demand_usd_per_month(&modelled),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_summed_over_ops_and_the_cold_gauge_read() {
        let text = "# HELP vipfleet_reads_cold x\n\
            vipfleet_reads_cold 1\n\
            vipfleet_dynamodb_read_units_total{op=\"watch\"} 10.5\n\
            vipfleet_dynamodb_read_units_total{op=\"read_nodes\"} 3\n\
            vipfleet_dynamodb_write_units_total{op=\"heartbeat\"} 20\n\
            vipfleet_dynamodb_write_units_total{op=\"announce_change\"} 1\n\
            vipfleet_store_calls_total{op=\"heartbeat\",outcome=\"ok\"} 20\n";
        assert_eq!(
            parse_units(text),
            UnitsReading {
                reads_cold: true,
                read_units: 13.5,
                write_units: 21.0
            }
        );
        assert!(!parse_units("vipfleet_reads_cold 0\n").reads_cold);
    }

    #[test]
    fn rates_count_the_agents_read_at_the_end_from_their_start() {
        let agent = |id: &str, pid| (id.to_string(), pid);
        let reading = |read_units, write_units| UnitsReading {
            reads_cold: true,
            read_units,
            write_units,
        };
        let start = BTreeMap::from([
            (agent("a", 1), reading(10.0, 100.0)),
            (agent("b", 2), reading(4.0, 50.0)),
        ]);
        let end = BTreeMap::from([
            (agent("a", 1), reading(40.0, 160.0)),
            (agent("b", 2), reading(14.0, 110.0)),
        ]);
        let rate = counted_rate(&start, &end, Duration::from_secs(10));
        assert!(
            (rate.read - 4.0).abs() < 1e-9 && (rate.write - 12.0).abs() < 1e-9,
            "{rate:?}"
        );
    }

    #[test]
    fn the_tolerance_is_a_share_of_the_model() {
        assert!(within(1.09, 1.0) && within(0.91, 1.0));
        assert!(!within(1.11, 1.0) && !within(0.89, 1.0));
        assert!(within(0.0, 0.0) && !within(0.1, 0.0));
    }

    #[test]
    fn a_cold_window_is_whole_refreshes() {
        let minute = Duration::from_secs(60);
        assert_eq!(whole_refreshes(minute, minute), minute);
        assert_eq!(whole_refreshes(Duration::from_secs(61), minute), minute * 2);
        assert_eq!(whole_refreshes(Duration::from_secs(1), minute), minute);
    }

    #[test]
    fn the_window_is_a_minute_at_least_and_the_load_outlasts_the_usual_wait() {
        assert_eq!(window(20.0), MIN_WINDOW);
        assert_eq!(window(90.0), Duration::from_secs(90));
        let ttl = Duration::from_secs(3);
        assert_eq!(
            duration(Duration::from_secs(4), ttl, 20.0),
            Duration::from_secs(4 + 6 + 60)
        );
        assert_eq!(cold_wait_bound(ttl), Duration::from_secs(36));
    }
}
