//! The fleet as one observer sees it: [`FleetView`], built from the latest
//! [`Status`] when a page is asked for. It is the JSON of `GET /api/v1/fleet`
//! (its schema is `services/agent/openapi.yaml`) and the model the HTML page
//! renders, so the two never disagree.
//!
//! Nothing here decides anything: membership, who is gone, which shards are
//! disputed, quotas and targets are the lease machine's own, as of its last
//! plan (the status carries them), so the page shows what the agent acts on.
//!
//! Everything time-related is an age relative to *now* (the snapshot's
//! machine instant plus how long ago it was taken), never a wall-clock
//! time: the agent has no synchronized clock and needs none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant as TokioInstant;
use vipfleet_core::machine::{Event, Health, Mode};
use vipfleet_core::routes::RouteChange;
use vipfleet_core::{Instant, NodeConfig, NodeId, NodeRecord, NodeState, ShardId};

use crate::status::{Happening, Status};

/// A heartbeat older than this many intervals is late (the node may be
/// struggling) although not yet gone.
const LATE_HEARTBEAT_INTERVALS: u32 = 2;
/// A route check older than this many reconcile intervals is stale: the
/// read-back is not running.
const STALE_CHECK_INTERVALS: u32 = 3;

#[derive(Clone, Debug, Serialize)]
pub struct FleetView {
    /// This observer's clock (ms since the agent started) at which the
    /// view was computed; every `*_ago_ms` counts back from it.
    pub generated_at_ms: u64,
    /// How long ago the lease loop last published its state.
    pub snapshot_age_ms: u64,
    pub observer: ObserverView,
    pub lease: LeaseTimings,
    pub totals: Totals,
    /// The tables the fleet maintains: ours and every member's.
    pub route_tables: Vec<String>,
    /// Route tables whose last call from this node failed.
    pub route_table_problems: Vec<TableProblemView>,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
    /// Lease table items the last reads could not use.
    pub skipped: Vec<SkippedView>,
    /// Newest first.
    pub events: Vec<EventView>,
    /// What this node's peer probes make of the other nodes (empty with
    /// probes off).
    pub peers: Vec<PeerView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    pub node: String,
    /// alive, suspect, dead or left.
    pub status: &'static str,
    /// Its haproxy health in its last ack; `None` before any ack.
    pub healthy: Option<bool>,
    pub last_ack_ms_ago: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObserverView {
    pub node_id: String,
    pub az: String,
    pub eni: String,
    pub addr: String,
    pub version: String,
    /// Fingerprint of the VIPs this node serves.
    pub layout: String,
    /// `starting` until the lease loop's first step, and while health or
    /// the source/destination check are not confirmed.
    pub mode: &'static str,
    /// `unknown`, `healthy` or `unhealthy`: what the haproxy checks say.
    pub health: &'static str,
    pub source_dest_check_off: bool,
    pub lease_valid: bool,
    /// Until this node must stop writing routes unless a heartbeat lands.
    pub lease_remaining_ms: Option<u64>,
    /// The fleet is settled: this node only watches the change counter and
    /// one peer, and reads the whole table every cold refresh.
    pub reads_cold: bool,
    /// The lease loop has stopped.
    pub exited: bool,
    /// Why: `drained`, `drain_timed_out`, `stopped`, `superseded`.
    pub exit_reason: Option<&'static str>,
    pub shards_held: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaseTimings {
    pub heartbeat_interval_ms: u64,
    pub lease_ttl_ms: u64,
    pub scan_interval_ms: u64,
    pub watch_interval_ms: u64,
    pub cold_refresh_interval_ms: u64,
    pub reconcile_interval_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub nodes: usize,
    pub nodes_by_state: StateCounts,
    pub nodes_in_trouble: usize,
    /// Nodes that announce another configuration than this one's (VIPs,
    /// route tables, lease timings), or none.
    pub nodes_config_mismatch: usize,
    pub shards: usize,
    pub shards_owned: usize,
    pub shards_free: usize,
    /// Owned by a node that is gone, dead or unknown.
    pub shards_orphaned: usize,
    /// Owned by a live node, but the target assignment names another.
    pub shards_moving: usize,
    /// Served by some members and not others (a VIP list being rolled out).
    pub shards_disputed: usize,
    pub shards_in_trouble: usize,
    /// Routes this observer checked and found wrong, missing or blackholed.
    pub route_problems: usize,
    /// Route tables whose calls fail for a reason retrying soon will not
    /// fix (missing, access denied, the route limit): backed off.
    pub route_tables_failing: usize,
    /// Owner changes this observer saw in the last hour.
    pub moves_last_hour: usize,
    pub items_skipped: usize,
}

/// Nodes by what this observer makes of them: `gone` wins over the state a
/// node last wrote; `unreadable` items have no state to show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateCounts {
    pub active: usize,
    pub starting: usize,
    pub draining: usize,
    pub unhealthy: usize,
    pub unrecognized: usize,
    pub unreadable: usize,
    pub gone: usize,
    pub dead: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub is_self: bool,
    pub az: String,
    pub eni: String,
    pub addr: String,
    /// The state the node last wrote (`unreadable` when its item cannot be
    /// read).
    pub state: &'static str,
    /// Its counter stood still, or its item was missing, for a lease on
    /// this observer's clock.
    pub gone: bool,
    /// Its item has vanished from the table (it may re-register).
    pub missing: bool,
    pub heartbeat: u64,
    /// How long this observer has seen the counter stand still.
    pub heartbeat_age_ms: Option<u64>,
    /// Until this observer would judge it gone (0 once it is); `None`
    /// while it reads cold (it does not judge ages then, see `reads_cold`).
    pub expires_in_ms: Option<u64>,
    pub shards: usize,
    /// Its share of the agreed shards by weight; 0 for nodes that take none.
    pub quota: usize,
    pub weight: u32,
    pub version: String,
    /// Fingerprint of the VIPs it serves; `null` when it announces none.
    pub layout: Option<String>,
    /// Same configuration as this observer; `null` when it announces none.
    pub config_matches: Option<bool>,
    pub trouble: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShardView {
    /// The shard's CIDR block (its VIP).
    pub id: String,
    pub owner: Option<String>,
    /// `live`, `gone`, `dead`, `unknown` (no node item) or `free`.
    pub owner_status: &'static str,
    pub epoch: u64,
    pub moves: u64,
    /// When this observer last saw the owner change.
    pub moved_ago_ms: Option<u64>,
    /// Where the assignment wants the shard; `null` when no node can take it.
    pub target: Option<String>,
    pub held_here: bool,
    /// This node serves the VIP (it is in its configuration).
    pub served_here: bool,
    /// Some members serve it and others do not.
    pub disputed: bool,
    /// One entry per route table the fleet maintains.
    pub routes: Vec<RouteView>,
    pub trouble: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RouteView {
    pub table: String,
    /// `ok`, `wrong_target`, `missing`, `blackhole`; `not_checked` for a
    /// shard held here whose routes were not read back yet; `elsewhere`
    /// for a shard held by another node (its owner checks them).
    pub status: &'static str,
    pub checked_ago_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableProblemView {
    pub table: String,
    /// `throttled`, `transient` or `permanent` (backed off for up to
    /// half a minute at a time).
    pub class: &'static str,
    /// Consecutive failures.
    pub failures: u32,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SkippedView {
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    pub at_ms: u64,
    pub ago_ms: u64,
    pub kind: &'static str,
    pub shard: Option<String>,
    pub node: Option<String>,
    pub detail: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// Whether two announced configurations agree on what the fleet must share.
fn same_config(a: &NodeConfig, b: &NodeConfig) -> bool {
    fn tables(c: &NodeConfig) -> BTreeSet<&vipfleet_core::RouteTableId> {
        c.route_tables.iter().collect()
    }
    a.layout == b.layout
        && tables(a) == tables(b)
        && a.lease_ttl == b.lease_ttl
        && a.heartbeat_interval == b.heartbeat_interval
}

impl FleetView {
    /// The view of `status` at runtime instant `at`. `None` before the lease
    /// loop's first step: there is nothing to show yet.
    pub fn build(status: &Status, at: TokioInstant) -> Option<FleetView> {
        let (setup, recorded_at) = (status.setup.as_ref()?, status.recorded_at?);
        let snapshot_age = at.saturating_duration_since(recorded_at);
        let now = status.now + snapshot_age;
        let ago = |t: Instant| ms(now.saturating_since(t));
        let lease = &setup.lease;
        let me = &setup.info.id;
        let my_config = setup.config();
        let membership = &status.membership;
        let tables = if membership.tables.is_empty() {
            setup.route_tables.clone()
        } else {
            membership.tables.clone()
        };

        let held: BTreeMap<ShardId, u64> = status.held.iter().copied().collect();
        let nodes: BTreeMap<&NodeId, &NodeRecord> = status.nodes.iter().map(|n| (&n.info.id, n)).collect();
        let is_member = |id: &NodeId| id == me || membership.role_of(id).is_some();

        let records: BTreeMap<ShardId, _> = status.shards.iter().map(|r| (r.id, r)).collect();
        let shard_ids: BTreeSet<ShardId> = setup
            .layout
            .ids()
            .chain(membership.served().copied())
            .chain(records.keys().copied())
            .collect();
        let mut totals = Totals {
            shards: shard_ids.len(),
            moves_last_hour: status.recent_moves(now),
            items_skipped: status.skipped.len(),
            ..Totals::default()
        };

        let mut shards = Vec::with_capacity(shard_ids.len());
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for id in &shard_ids {
            let record = records.get(id);
            let held_here = held.contains_key(id);
            let owner = if held_here {
                Some(me.clone())
            } else {
                record.and_then(|r| r.owner.clone())
            };
            let owner_status = match &owner {
                None => "free",
                Some(o) if is_member(o) => "live",
                Some(o) if status.gone.contains(o) => "gone",
                Some(o) => match nodes.get(o) {
                    Some(n) if n.state == NodeState::Dead => "dead",
                    Some(_) => "live",
                    None if status.unreadable.contains(o) => "live",
                    None => "unknown",
                },
            };
            if let Some(o) = &owner {
                *counts.entry(o.clone()).or_default() += 1;
            }
            let target = status.target.get(id).cloned();
            let disputed = membership.disputed.contains(id);
            let mut trouble = Vec::new();
            match owner_status {
                "free" => trouble.push("no owner".to_string()),
                "live" => {}
                other => trouble.push(format!("owner is {other}")),
            }
            if !membership.serves(*id) && !membership.members.is_empty() {
                trouble.push("no member serves it: to be retired".to_string());
            }
            let routes: Vec<RouteView> = tables
                .iter()
                .map(|table| {
                    let check = status.route_checks.get(&(*id, table.clone())).filter(|_| held_here);
                    let (verdict, checked_ago_ms) = match check {
                        _ if !held_here => ("elsewhere", None),
                        None => ("not_checked", None),
                        Some((check, at)) => (check.as_str(), Some(ago(*at))),
                    };
                    if !matches!(verdict, "ok" | "elsewhere" | "not_checked") {
                        totals.route_problems += 1;
                        trouble.push(format!("{table}: {}", verdict.replace('_', " ")));
                    }
                    if checked_ago_ms.is_some_and(|a| a > ms(lease.reconcile_interval * STALE_CHECK_INTERVALS)) {
                        trouble.push(format!("{table}: route check is stale"));
                    }
                    RouteView {
                        table: table.to_string(),
                        status: verdict,
                        checked_ago_ms,
                    }
                })
                .collect();
            match owner_status {
                "free" => totals.shards_free += 1,
                "live" => totals.shards_owned += 1,
                _ => {
                    totals.shards_owned += 1;
                    totals.shards_orphaned += 1;
                }
            }
            if owner_status == "live" && target.is_some() && target != owner {
                totals.shards_moving += 1;
            }
            totals.shards_disputed += usize::from(disputed);
            totals.shards_in_trouble += usize::from(!trouble.is_empty());
            shards.push(ShardView {
                id: id.to_string(),
                owner: owner.map(|o| o.to_string()),
                owner_status,
                epoch: record.map_or(0, |r| r.epoch),
                moves: record.map_or(0, |r| r.moves),
                moved_ago_ms: status.shard_changed_at.get(id).map(|t| ago(*t)),
                target: target.map(|t| t.to_string()),
                held_here,
                served_here: setup.layout.contains(*id),
                disputed,
                routes,
                trouble,
            });
        }

        let late = lease.heartbeat_interval * LATE_HEARTBEAT_INTERVALS;
        let mut node_views: Vec<NodeView> = nodes
            .values()
            .map(|n| {
                let id = &n.info.id;
                let gone = status.gone.contains(id);
                let missing = status.missing.contains(id);
                let age = status.heartbeat_ages.get(id).map(|a| *a + snapshot_age);
                let their_ttl = n
                    .config
                    .as_ref()
                    .map_or(lease.lease_ttl, |c| c.lease_ttl.max(lease.lease_ttl));
                let config_matches = n.config.as_ref().map(|c| same_config(c, &my_config));
                let shards = counts.get(id).copied().unwrap_or(0);
                let quota = status.quota.get(id).copied().unwrap_or(0);
                let mut trouble = Vec::new();
                match (n.state, gone) {
                    (_, true) => trouble.push("gone".to_string()),
                    (NodeState::Dead, _) => trouble.push("marked dead".to_string()),
                    (NodeState::Unhealthy, _) => trouble.push("unhealthy".to_string()),
                    (NodeState::Unrecognized, _) => trouble.push("state unknown to this version".to_string()),
                    _ => {}
                }
                // Cold, this node has not read the others' counters since its
                // last full read (a minute or more ago): their ages say
                // nothing about them, and each is watched by its successor.
                let judged = !gone && n.state != NodeState::Dead && !status.reads_cold;
                if let Some(age) = age.filter(|a| judged && *a > late) {
                    trouble.push(format!("heartbeat late ({:.1}s)", age.as_secs_f64()));
                }
                match config_matches {
                    Some(false) => trouble.push("configuration differs".to_string()),
                    None => trouble.push("announces no configuration".to_string()),
                    Some(true) => {}
                }
                if is_member(id) && shards > quota && n.state == NodeState::Active && quota > 0 {
                    trouble.push(format!("over quota ({shards}/{quota})"));
                }
                totals.nodes_config_mismatch += usize::from(config_matches != Some(true));
                let counted = &mut totals.nodes_by_state;
                match (n.state, gone) {
                    (_, true) => counted.gone += 1,
                    (NodeState::Dead, _) => counted.dead += 1,
                    (NodeState::Active, _) => counted.active += 1,
                    (NodeState::Starting, _) => counted.starting += 1,
                    (NodeState::Draining, _) => counted.draining += 1,
                    (NodeState::Unhealthy, _) => counted.unhealthy += 1,
                    (NodeState::Unrecognized, _) => counted.unrecognized += 1,
                }
                totals.nodes_in_trouble += usize::from(!trouble.is_empty());
                NodeView {
                    id: id.to_string(),
                    is_self: id == me,
                    az: n.info.az.clone(),
                    eni: n.info.eni.0.clone(),
                    addr: n.info.addr.clone(),
                    state: n.state.as_str(),
                    gone,
                    missing,
                    heartbeat: n.hb,
                    heartbeat_age_ms: age.map(ms),
                    expires_in_ms: age
                        .filter(|_| !status.reads_cold)
                        .map(|a| ms(their_ttl.saturating_sub(a))),
                    shards,
                    quota,
                    weight: n.info.weight,
                    version: n.info.version.clone(),
                    layout: n.config.as_ref().map(|c| c.layout.to_string()),
                    config_matches,
                    trouble,
                }
            })
            .collect();
        for id in status.unreadable.iter().filter(|id| !nodes.contains_key(id)) {
            totals.nodes_by_state.unreadable += 1;
            totals.nodes_in_trouble += 1;
            totals.nodes_config_mismatch += 1;
            node_views.push(NodeView {
                id: id.to_string(),
                is_self: id == me,
                az: String::new(),
                eni: String::new(),
                addr: String::new(),
                state: "unreadable",
                gone: false,
                missing: false,
                heartbeat: 0,
                heartbeat_age_ms: None,
                expires_in_ms: None,
                shards: counts.get(id).copied().unwrap_or(0),
                quota: 0,
                weight: 0,
                version: String::new(),
                layout: None,
                config_matches: None,
                trouble: vec!["its item cannot be read".to_string()],
            });
        }
        totals.nodes = node_views.len();

        let route_table_problems: Vec<TableProblemView> = status
            .table_health
            .iter()
            .filter_map(|(table, health)| {
                let (class, detail) = health.failing.as_ref()?;
                Some(TableProblemView {
                    table: table.to_string(),
                    class: class.as_str(),
                    failures: health.failures(),
                    detail: detail.clone(),
                })
            })
            .collect();
        totals.route_tables_failing = status.table_health.values().filter(|h| h.is_down()).count();

        let lease_valid = status.lease_deadline.is_some_and(|d| now < d);
        let readiness = status.readiness;
        Some(FleetView {
            generated_at_ms: ms(now.as_offset()),
            snapshot_age_ms: ms(snapshot_age),
            observer: ObserverView {
                node_id: me.to_string(),
                az: setup.info.az.clone(),
                eni: setup.info.eni.0.clone(),
                addr: setup.info.addr.clone(),
                version: setup.info.version.clone(),
                layout: my_config.layout.to_string(),
                mode: status.mode.map_or("starting", Mode::as_str),
                health: health_name(readiness.health),
                source_dest_check_off: readiness.source_dest_check_off,
                lease_valid,
                lease_remaining_ms: status
                    .lease_deadline
                    .filter(|_| lease_valid)
                    .map(|d| ms(d.saturating_since(now))),
                reads_cold: status.reads_cold,
                exited: status.exited.is_some(),
                exit_reason: status.exited.map(|r| r.as_str()),
                shards_held: held.len(),
            },
            lease: LeaseTimings {
                heartbeat_interval_ms: ms(lease.heartbeat_interval),
                lease_ttl_ms: ms(lease.lease_ttl),
                scan_interval_ms: ms(lease.scan_interval),
                watch_interval_ms: ms(lease.watch_interval),
                cold_refresh_interval_ms: ms(lease.cold_refresh_interval),
                reconcile_interval_ms: ms(lease.reconcile_interval),
            },
            totals,
            route_tables: tables.iter().map(ToString::to_string).collect(),
            route_table_problems,
            nodes: node_views,
            shards,
            skipped: status
                .skipped
                .iter()
                .map(|s| SkippedView {
                    key: s.key.clone(),
                    reason: s.reason.clone(),
                })
                .collect(),
            events: status
                .events
                .iter()
                .rev()
                .map(|e| event_view(&e.what, e.at, ago(e.at)))
                .collect(),
            peers: status
                .peers
                .iter()
                .map(|(node, state)| PeerView {
                    node: node.to_string(),
                    status: crate::dashboard::metrics::status_label(state.status),
                    healthy: state.healthy,
                    last_ack_ms_ago: state.last_ack_at.map(ago),
                })
                .collect(),
        })
    }
}

fn event_view(what: &Happening, at: Instant, ago_ms: u64) -> EventView {
    let mut view = EventView {
        at_ms: at.as_millis(),
        ago_ms,
        kind: "",
        shard: None,
        node: None,
        detail: String::new(),
    };
    let event = match what {
        Happening::Mode { from, to } => {
            view.kind = "mode_changed";
            view.detail = match from {
                Some(from) => format!("{} → {}", from.as_str(), to.as_str()),
                None => format!("started {}", to.as_str()),
            };
            return view;
        }
        Happening::Machine(event) => event,
    };
    let text = |s: &str| s.to_string();
    let (kind, shard, node, detail) = match event {
        Event::Registered => ("registered", None, None, text("joined the fleet")),
        Event::Reregistered => ("reregistered", None, None, text("our item had vanished; written again")),
        Event::LeaseLapsed => (
            "lease_lapsed",
            None,
            None,
            text("own lease lapsed: route writes stopped"),
        ),
        Event::LeaseRenewed => ("lease_renewed", None, None, text("own lease valid: a heartbeat landed")),
        Event::ModeChanged { from, to } => (
            "mode_changed",
            None,
            None,
            format!("{} → {}", from.as_str(), to.as_str()),
        ),
        Event::StopDeferred => ("stop_deferred", None, None, text("stop asked for during a drain")),
        Event::NodeGone { node } => ("node_gone", None, Some(node), text("heartbeat stopped or item missing")),
        Event::NodeMarkedDead { node } => ("node_marked_dead", None, Some(node), text("marked dead")),
        Event::NodeEvicted { node } => (
            "node_evicted",
            None,
            Some(node),
            text("evicted: peer probes found it dead"),
        ),
        Event::VerdictsWeighed { held, ranked } => (
            "verdicts_weighed",
            None,
            None,
            if *ranked {
                format!("{held} peer verdicts held; ranked the orphans to find whose shards we take")
            } else {
                format!("{held} peer verdicts held; our quota would not grow, so we take none")
            },
        ),
        Event::Acquired {
            shard,
            from: None,
            epoch,
        } => (
            "claimed",
            Some(shard),
            None,
            format!("claimed free shard at epoch {epoch}"),
        ),
        Event::Acquired {
            shard,
            from: Some(from),
            epoch,
        } => (
            "took_over",
            Some(shard),
            Some(from),
            format!("took over from {from} at epoch {epoch}"),
        ),
        Event::Reclaimed { shard, epoch } => (
            "reclaimed",
            Some(shard),
            None,
            format!("claimed again at epoch {epoch}"),
        ),
        Event::HandedOff { shard, to, epoch } => (
            "handed_off",
            Some(shard),
            Some(to),
            format!("handed to {to} at epoch {epoch}"),
        ),
        Event::Lost { shard, to } => (
            "lost",
            Some(shard),
            to.as_ref(),
            match to {
                Some(to) => format!("now held by {to}"),
                None => text("no longer ours"),
            },
        ),
        Event::RouteDrift { shard, table, found } => (
            "route_repair",
            Some(shard),
            None,
            match found {
                Some(eni) => format!("{table}: pointed at {eni}; rewriting"),
                None => format!("{table}: missing or blackholed; rewriting"),
            },
        ),
        Event::RouteChanged { call, error } => (
            "route_changed",
            Some(&call.shard),
            None,
            match error {
                None => format!("{}: {}", call.change.op().as_str(), describe_change(&call.change)),
                Some(error) => format!("{} failed: {error}", describe_change(&call.change)),
            },
        ),
        Event::Retired { shard } => (
            "retired",
            Some(shard),
            None,
            text("no member serves it: routes and item deleted"),
        ),
        Event::ItemsSkipped { skipped } => (
            "items_skipped",
            None,
            None,
            if skipped.is_empty() {
                text("every item reads again")
            } else {
                let keys: Vec<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
                format!("cannot read {}", keys.join(", "))
            },
        ),
        Event::StoreError { detail, .. } => ("store_error", None, None, detail.clone()),
        Event::RouteError { detail, .. } => ("route_error", None, None, detail.clone()),
    };
    view.kind = kind;
    view.shard = shard.map(ToString::to_string);
    view.node = node.map(|n| n.to_string());
    view.detail = detail;
    view
}

fn describe_change(change: &RouteChange) -> String {
    match change.eni() {
        Some(eni) => format!("{} {} -> {eni}", change.table(), change.vip()),
        None => format!("{} {} deleted", change.table(), change.vip()),
    }
}

#[cfg(test)]
mod tests;
