//! The fleet as one observer sees it: [`FleetView`], built from the latest
//! [`Status`] when a page is asked for. It is the JSON of `GET /api/v1/fleet`
//! (its schema is `services/agent/openapi.yaml`) and the model the HTML page
//! renders, so the two never disagree.
//!
//! Everything time-related is an age relative to *now* (the snapshot's
//! machine instant plus how long ago it was taken), never a wall-clock
//! time: the agent has no synchronized clock and needs none.
//! Quotas and target owners are recomputed here with the same
//! [`vipfleet_core::assign::assign`] every agent uses, so a page shows
//! where shards are headed as well as where they are.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant as TokioInstant;
use vipfleet_core::assign::{assign, Member};
use vipfleet_core::machine::{Event, Mode, RouteCheck};
use vipfleet_core::{Instant, NodeId, NodeRecord, NodeState, ShardId};

use super::build_info::{config_fingerprint, split_version};
use crate::status::{Happening, Status};

/// A heartbeat older than this many intervals is late (the node may be
/// struggling) although not yet expired.
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
    pub route_tables: Vec<String>,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
    /// Newest first.
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObserverView {
    pub node_id: String,
    pub az: String,
    pub eni: String,
    pub addr: String,
    pub version: String,
    pub config_hash: String,
    /// `starting` until the lease loop's first step.
    pub mode: &'static str,
    pub lease_valid: bool,
    /// Until this node must stop writing routes unless a heartbeat lands.
    pub lease_remaining_ms: Option<u64>,
    /// The lease loop has stopped (drained, or superseded).
    pub exited: bool,
    pub shards_held: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaseTimings {
    pub heartbeat_interval_ms: u64,
    pub lease_ttl_ms: u64,
    pub scan_interval_ms: u64,
    pub reconcile_interval_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub nodes: usize,
    pub nodes_by_state: StateCounts,
    pub nodes_in_trouble: usize,
    pub shards: usize,
    pub shards_owned: usize,
    pub shards_free: usize,
    /// Owned by a node that is expired, dead or unknown.
    pub shards_orphaned: usize,
    /// Owned by a live node, but the target assignment names another.
    pub shards_moving: usize,
    pub shards_in_trouble: usize,
    /// Routes this observer checked and found wrong, missing or blackholed.
    pub route_problems: usize,
    /// Owner changes this observer saw in the last hour.
    pub moves_last_hour: usize,
}

/// Nodes by what this observer makes of them: `expired` wins over the
/// state a node last wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateCounts {
    pub active: usize,
    pub draining: usize,
    pub unhealthy: usize,
    pub expired: usize,
    pub dead: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub is_self: bool,
    pub az: String,
    pub eni: String,
    pub addr: String,
    /// The state the node last wrote: active, draining, unhealthy, dead.
    pub state: &'static str,
    /// Its counter stood still for the lease TTL on this observer's clock.
    pub expired: bool,
    pub heartbeat: u64,
    /// How long this observer has seen the counter stand still.
    pub heartbeat_age_ms: Option<u64>,
    /// Until this observer would judge it expired (0 once it is).
    pub expires_in_ms: Option<u64>,
    pub shards: usize,
    /// Its share of the shards by weight; 0 for nodes that take none.
    pub quota: usize,
    pub weight: u32,
    pub version: String,
    pub config_hash: Option<String>,
    /// Same fleet configuration as this observer; `null` when the node
    /// does not announce one.
    pub config_matches: Option<bool>,
    pub trouble: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShardView {
    pub id: u32,
    pub vips: Vec<String>,
    pub owner: Option<String>,
    /// `live`, `expired`, `dead`, `unknown` (no node item) or `free`.
    pub owner_status: &'static str,
    pub epoch: u64,
    pub moves: u64,
    /// When this observer last saw the owner change.
    pub moved_ago_ms: Option<u64>,
    /// Where the assignment wants the shard; `null` when no node can take it.
    pub target: Option<String>,
    pub held_here: bool,
    /// One entry per configured route table, in configuration order.
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
pub struct EventView {
    pub at_ms: u64,
    pub ago_ms: u64,
    pub kind: &'static str,
    pub shard: Option<u32>,
    pub node: Option<String>,
    pub detail: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Active => "active",
        Mode::Draining => "draining",
        Mode::Unhealthy => "unhealthy",
    }
}

fn route_check_name(check: RouteCheck) -> &'static str {
    match check {
        RouteCheck::Ok => "ok",
        RouteCheck::WrongTarget => "wrong_target",
        RouteCheck::Missing => "missing",
        RouteCheck::Blackhole => "blackhole",
    }
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
        let my_hash = config_fingerprint(setup);
        let ttl = lease.lease_ttl;

        let held: BTreeMap<ShardId, u64> = status.held.iter().copied().collect();
        let nodes: BTreeMap<&NodeId, &NodeRecord> = status.nodes.iter().map(|n| (&n.info.id, n)).collect();
        let is_live = |id: &NodeId| {
            id == me
                || nodes
                    .get(id)
                    .is_some_and(|n| n.state != NodeState::Dead && !status.expired.contains(id))
        };

        // The assignment every agent computes, from this snapshot.
        let mut members: Vec<Member> = nodes
            .values()
            .filter(|n| &n.info.id != me && is_live(&n.info.id))
            .map(|n| Member {
                id: n.info.id.clone(),
                weight: n.info.weight,
                eligible: n.state == NodeState::Active,
            })
            .collect();
        members.push(Member {
            id: me.clone(),
            weight: setup.info.weight,
            eligible: status.mode == Some(Mode::Active),
        });
        if !members.iter().any(|m| m.eligible) {
            // As the machine does: unhealthy nodes serve when nobody
            // healthy is left.
            for m in &mut members {
                let unhealthy = if &m.id == me {
                    status.mode == Some(Mode::Unhealthy)
                } else {
                    nodes.get(&m.id).is_some_and(|n| n.state == NodeState::Unhealthy)
                };
                m.eligible |= unhealthy;
            }
        }
        let records: BTreeMap<ShardId, _> = status.shards.iter().map(|r| (r.id, r)).collect();
        let owners: BTreeMap<ShardId, NodeId> = records
            .iter()
            .filter_map(|(id, r)| r.owner.clone().filter(|o| is_live(o)).map(|o| (*id, o)))
            .chain(held.keys().map(|s| (*s, me.clone())))
            .collect();
        let shard_ids: Vec<ShardId> = setup.layout.ids().collect();
        let assignment = assign(&shard_ids, &members, &owners);

        let mut totals = Totals {
            shards: shard_ids.len(),
            moves_last_hour: status.recent_moves(now),
            ..Totals::default()
        };

        let mut shards = Vec::with_capacity(shard_ids.len());
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (id, vips) in &setup.layout.shards {
            let record = records.get(id);
            let held_here = held.contains_key(id);
            let owner = if held_here {
                Some(me.clone())
            } else {
                record.and_then(|r| r.owner.clone())
            };
            let owner_status = match &owner {
                None => "free",
                Some(o) if is_live(o) => "live",
                Some(o) => match nodes.get(o) {
                    None => "unknown",
                    Some(n) if n.state == NodeState::Dead => "dead",
                    Some(_) => "expired",
                },
            };
            if let Some(o) = &owner {
                *counts.entry(o.clone()).or_default() += 1;
            }
            let target = assignment.target.get(id).cloned();
            let mut trouble = Vec::new();
            match owner_status {
                "free" => trouble.push("no owner".to_string()),
                "live" => {}
                other => trouble.push(format!("owner is {other}")),
            }
            let routes: Vec<RouteView> = setup
                .route_tables
                .iter()
                .map(|table| {
                    let check = status.route_checks.get(&(*id, table.clone())).filter(|_| held_here);
                    let (verdict, checked_ago_ms) = match check {
                        _ if !held_here => ("elsewhere", None),
                        None => ("not_checked", None),
                        Some((check, at)) => (route_check_name(*check), Some(ago(*at))),
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
            totals.shards_in_trouble += usize::from(!trouble.is_empty());
            shards.push(ShardView {
                id: id.0,
                vips: vips.iter().map(ToString::to_string).collect(),
                owner: owner.map(|o| o.0),
                owner_status,
                epoch: record.map_or(0, |r| r.epoch),
                moves: record.map_or(0, |r| r.moves),
                moved_ago_ms: status.shard_changed_at.get(id).map(|t| ago(*t)),
                target: target.map(|t| t.0),
                held_here,
                routes,
                trouble,
            });
        }

        let late = lease.heartbeat_interval * LATE_HEARTBEAT_INTERVALS;
        let node_views: Vec<NodeView> = nodes
            .values()
            .map(|n| {
                let id = &n.info.id;
                let expired = status.expired.contains(id);
                let age = status.heartbeat_ages.get(id).map(|a| *a + snapshot_age);
                let (version, hash) = split_version(&n.info.version);
                let config_matches = hash.map(|h| h == my_hash);
                let shards = counts.get(id).copied().unwrap_or(0);
                let quota = assignment.quota.get(id).copied().unwrap_or(0);
                let mut trouble = Vec::new();
                match (n.state, expired) {
                    (NodeState::Dead, _) => trouble.push("marked dead".to_string()),
                    (_, true) => trouble.push("lease expired".to_string()),
                    (NodeState::Unhealthy, _) => trouble.push("unhealthy".to_string()),
                    _ => {}
                }
                if let Some(age) = age.filter(|a| !expired && n.state != NodeState::Dead && *a > late) {
                    trouble.push(format!("heartbeat late ({:.1}s)", age.as_secs_f64()));
                }
                if config_matches == Some(false) {
                    trouble.push("configuration differs".to_string());
                }
                if is_live(id) && shards > quota && n.state == NodeState::Active {
                    trouble.push(format!("over quota ({shards}/{quota})"));
                }
                let counted = &mut totals.nodes_by_state;
                match (n.state, expired) {
                    (NodeState::Dead, _) => counted.dead += 1,
                    (_, true) => counted.expired += 1,
                    (NodeState::Active, _) => counted.active += 1,
                    (NodeState::Draining, _) => counted.draining += 1,
                    (NodeState::Unhealthy, _) => counted.unhealthy += 1,
                }
                totals.nodes_in_trouble += usize::from(!trouble.is_empty());
                NodeView {
                    id: id.0.clone(),
                    is_self: id == me,
                    az: n.info.az.clone(),
                    eni: n.info.eni.0.clone(),
                    addr: n.info.addr.clone(),
                    state: n.state.as_str(),
                    expired,
                    heartbeat: n.hb,
                    heartbeat_age_ms: age.map(ms),
                    expires_in_ms: age.map(|a| ms(ttl.saturating_sub(a))),
                    shards,
                    quota,
                    weight: n.info.weight,
                    version: version.to_string(),
                    config_hash: hash.map(str::to_string),
                    config_matches,
                    trouble,
                }
            })
            .collect();
        totals.nodes = node_views.len();

        let (my_version, _) = split_version(&setup.info.version);
        let lease_valid = status.lease_deadline.is_some_and(|d| now < d);
        Some(FleetView {
            generated_at_ms: ms(now.as_offset()),
            snapshot_age_ms: ms(snapshot_age),
            observer: ObserverView {
                node_id: me.0.clone(),
                az: setup.info.az.clone(),
                eni: setup.info.eni.0.clone(),
                addr: setup.info.addr.clone(),
                version: my_version.to_string(),
                config_hash: my_hash,
                mode: status.mode.map_or("starting", mode_name),
                lease_valid,
                lease_remaining_ms: status
                    .lease_deadline
                    .filter(|_| lease_valid)
                    .map(|d| ms(d.saturating_since(now))),
                exited: status.exited,
                shards_held: held.len(),
            },
            lease: LeaseTimings {
                heartbeat_interval_ms: ms(lease.heartbeat_interval),
                lease_ttl_ms: ms(lease.lease_ttl),
                scan_interval_ms: ms(lease.scan_interval),
                reconcile_interval_ms: ms(lease.reconcile_interval),
            },
            totals,
            route_tables: setup.route_tables.iter().map(ToString::to_string).collect(),
            nodes: node_views,
            shards,
            events: status
                .events
                .iter()
                .rev()
                .map(|e| event_view(&e.what, e.at, ago(e.at)))
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
                Some(from) => format!("{} → {}", mode_name(*from), mode_name(*to)),
                None => format!("started {}", mode_name(*to)),
            };
            return view;
        }
        Happening::Machine(event) => event,
    };
    let (kind, shard, node, detail) = match event {
        Event::Registered => ("registered", None, None, "joined the fleet".to_string()),
        Event::LeaseLapsed => (
            "lease_lapsed",
            None,
            None,
            "own lease lapsed: route writes stopped".to_string(),
        ),
        Event::LeaseRenewed => (
            "lease_renewed",
            None,
            None,
            "own lease valid: a heartbeat landed".to_string(),
        ),
        Event::NodeExpired { node } => ("node_expired", None, Some(node), "heartbeat stopped".to_string()),
        Event::NodeMarkedDead { node } => ("node_marked_dead", None, Some(node), "marked dead".to_string()),
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
                None => "no longer ours".to_string(),
            },
        ),
        Event::RouteDrift {
            shard,
            table,
            vip,
            found,
        } => (
            "route_repair",
            Some(shard),
            None,
            match found {
                Some(eni) => format!("{table} {vip} pointed at {eni}; rewriting"),
                None => format!("{table} {vip} missing or blackholed; rewriting"),
            },
        ),
        Event::RoutesWritten {
            shard,
            eni,
            failed,
            fenced,
        } => (
            "routes_written",
            Some(shard),
            None,
            format!("routes to {eni}, {failed} failed, {fenced} fenced"),
        ),
        Event::StoreError { detail } => ("store_error", None, None, detail.clone()),
    };
    view.kind = kind;
    view.shard = shard.map(|s| s.0);
    view.node = node.map(|n| n.0.clone());
    view.detail = detail;
    view
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vipfleet_core::machine::NodeSetup;
    use vipfleet_core::{EniId, Incarnation, LeaseConfig, NodeInfo, RouteTableId, ShardLayout, ShardRecord, Vip};

    use super::*;
    use crate::dashboard::build_info::announced_version;

    fn info(id: &str, version: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            eni: EniId(format!("eni-{id}")),
            az: "az-1".into(),
            addr: "10.0.0.1".into(),
            weight: 1,
            version: version.into(),
        }
    }

    fn record(id: &str, version: &str, state: NodeState) -> NodeRecord {
        NodeRecord {
            info: info(id, version),
            hb: 10,
            inc: Incarnation(1),
            state,
        }
    }

    fn shard(id: u32, owner: Option<&str>, epoch: u64) -> ShardRecord {
        ShardRecord {
            id: ShardId(id),
            vips: vec![format!("10.200.0.{}", id + 1).parse().unwrap()],
            owner: owner.map(NodeId::new),
            owner_inc: None,
            epoch,
            moves: epoch.saturating_sub(1),
        }
    }

    /// `me` holds shard 0 (one route wrong), `b` holds 1 but runs another
    /// configuration, expired `c` holds 2, 3 is free, `d` is dead.
    fn troubled() -> (Status, TokioInstant) {
        let vips: Vec<Vip> = (1..=4).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
        let mut setup = NodeSetup {
            info: info("me", "0.1.0"),
            inc: Incarnation(1),
            lease: LeaseConfig::DEFAULT,
            layout: ShardLayout::one_per_vip(&vips).unwrap(),
            route_tables: vec![RouteTableId("rtb-1".into()), RouteTableId("rtb-2".into())],
        };
        let mine = announced_version("0.1.0", &config_fingerprint(&setup));
        setup.info.version = mine.clone();
        let recorded_at = TokioInstant::now();
        let now = Instant::from_millis(60_000);
        let status = Status {
            now,
            recorded_at: Some(recorded_at),
            setup: Some(Arc::new(setup)),
            mode: Some(Mode::Active),
            exited: false,
            lease_valid: true,
            lease_deadline: Some(now + Duration::from_millis(2_000)),
            held: vec![(ShardId(0), 3)],
            nodes: vec![
                record("b", "0.1.0+cfg.000000000000", NodeState::Active),
                record("c", &mine, NodeState::Active),
                record("d", &mine, NodeState::Dead),
                record("me", &mine, NodeState::Active),
            ],
            heartbeat_ages: [("b", 2_500), ("c", 9_000), ("d", 60_000), ("me", 100)]
                .into_iter()
                .map(|(id, ms)| (NodeId::new(id), Duration::from_millis(ms)))
                .collect(),
            expired: [NodeId::new("c")].into(),
            shards: vec![
                shard(0, Some("me"), 3),
                shard(1, Some("b"), 1),
                shard(2, Some("c"), 2),
                shard(3, None, 0),
            ],
            shard_changed_at: [(ShardId(0), Instant::from_millis(30_000))].into(),
            moves: [(Instant::from_millis(30_000), ShardId(0))].into(),
            route_checks: [
                (
                    (ShardId(0), RouteTableId("rtb-1".into())),
                    (RouteCheck::Ok, Instant::from_millis(55_000)),
                ),
                (
                    (ShardId(0), RouteTableId("rtb-2".into())),
                    (RouteCheck::WrongTarget, Instant::from_millis(55_000)),
                ),
                // Left over from a shard we no longer hold: not shown.
                (
                    (ShardId(1), RouteTableId("rtb-1".into())),
                    (RouteCheck::Ok, Instant::from_millis(1_000)),
                ),
            ]
            .into(),
            events: Default::default(),
        };
        (status, recorded_at)
    }

    #[test]
    fn nothing_to_show_before_the_first_step() {
        assert!(FleetView::build(&Status::default(), TokioInstant::now()).is_none());
    }

    #[test]
    fn trouble_is_found_and_counted() {
        let (status, recorded_at) = troubled();
        let view = FleetView::build(&status, recorded_at + Duration::from_millis(500)).unwrap();
        assert_eq!(view.snapshot_age_ms, 500);
        assert_eq!(view.generated_at_ms, 60_500);
        assert_eq!(view.observer.lease_remaining_ms, Some(1_500));

        let node = |id: &str| view.nodes.iter().find(|n| n.id == id).unwrap();
        assert_eq!(
            node("b").heartbeat_age_ms,
            Some(3_000),
            "ages count to now, not to the snapshot"
        );
        assert_eq!(node("b").config_matches, Some(false));
        assert!(node("b").trouble.iter().any(|t| t.contains("configuration")));
        assert!(node("b").trouble.iter().any(|t| t.contains("heartbeat late")));
        assert_eq!(node("c").trouble, vec!["lease expired".to_string()]);
        assert_eq!(node("c").expires_in_ms, Some(0));
        assert_eq!(node("d").trouble, vec!["marked dead".to_string()]);
        assert!(node("me").trouble.is_empty() && node("me").is_self);
        // Two live, eligible members share four shards.
        assert_eq!((node("me").quota, node("b").quota, node("c").quota), (2, 2, 0));

        let shard = |id: u32| view.shards.iter().find(|s| s.id == id).unwrap();
        let statuses = |id: u32| shard(id).routes.iter().map(|r| r.status).collect::<Vec<_>>();
        assert_eq!(statuses(0), vec!["ok", "wrong_target"]);
        assert_eq!(shard(0).routes[1].checked_ago_ms, Some(5_500));
        assert_eq!(shard(0).moved_ago_ms, Some(30_500));
        assert_eq!(statuses(1), vec!["elsewhere", "elsewhere"]);
        assert_eq!(shard(2).owner_status, "expired");
        assert_eq!(shard(3).owner_status, "free");
        assert!(
            shard(2).target.is_some() && shard(3).target.is_some(),
            "orphans have a target"
        );

        let t = &view.totals;
        assert_eq!((t.nodes, t.nodes_in_trouble), (4, 3));
        assert_eq!(
            (t.nodes_by_state.active, t.nodes_by_state.expired, t.nodes_by_state.dead),
            (2, 1, 1)
        );
        assert_eq!((t.shards_owned, t.shards_free, t.shards_orphaned), (3, 1, 1));
        assert_eq!((t.route_problems, t.shards_in_trouble, t.moves_last_hour), (1, 3, 1));
    }

    #[test]
    fn a_stale_route_check_and_a_lapsed_lease_show() {
        let (status, recorded_at) = troubled();
        let view = FleetView::build(&status, recorded_at + Duration::from_secs(40)).unwrap();
        assert!(!view.observer.lease_valid);
        assert_eq!(view.observer.lease_remaining_ms, None);
        let zero = view.shards.iter().find(|s| s.id == 0).unwrap();
        assert!(
            zero.trouble.iter().any(|t| t == "rtb-1: route check is stale"),
            "{:?}",
            zero.trouble
        );
    }
}
