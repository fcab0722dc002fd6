use std::collections::BTreeMap;
use std::sync::Arc;

use vipfleet_core::assign::{Member, Role};
use vipfleet_core::machine::{ExitReason, NodeSetup, Pacing, Readiness, RouteCheck, TableHealth};
use vipfleet_core::membership::Membership;
use vipfleet_core::routes::RouteErrorClass;
use vipfleet_core::store::Skipped;
use vipfleet_core::{EniId, Incarnation, LeaseConfig, NodeInfo, RouteTableId, ShardLayout, ShardRecord, Vip};

use super::*;

fn info(id: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        eni: EniId(format!("eni-{id}")),
        az: "az-1".into(),
        addr: "10.0.0.1".into(),
        weight: 1,
        version: "0.2.0".into(),
    }
}

fn shard(i: u32) -> ShardId {
    format!("10.200.0.{}/32", i + 1).parse().unwrap()
}

fn record(id: &str, state: NodeState, config: Option<NodeConfig>) -> NodeRecord {
    NodeRecord {
        info: Arc::new(info(id)),
        hb: 10,
        inc: Incarnation(1),
        state,
        config: config.map(Arc::new),
        epoch_floor: 0,
        evicted_by: None,
    }
}

fn shard_record(i: u32, owner: Option<&str>, epoch: u64) -> ShardRecord {
    ShardRecord {
        id: shard(i),
        owner: owner.map(NodeId::new),
        owner_inc: None,
        epoch,
        moves: epoch.saturating_sub(1),
    }
}

fn member(id: &str) -> Member {
    Member {
        id: NodeId::new(id),
        weight: 1,
        role: Role::Takes,
    }
}

/// `me` holds shard 0 (one route wrong), `b` holds 1 but runs another
/// configuration, gone `c` holds 2, 3 is free, `d` is dead, `junk` cannot
/// be read.
fn troubled() -> (Status, TokioInstant) {
    let vips: Vec<Vip> = (1..=4).map(|i| format!("10.200.0.{i}").parse().unwrap()).collect();
    let setup = NodeSetup {
        info: info("me"),
        inc: Incarnation(1),
        // Timings of their own: b's 3 s old heartbeat is late against
        // them, and b's 9 s TTL is the larger one.
        lease: LeaseConfig {
            heartbeat_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(3),
            ..LeaseConfig::HOT
        },
        layout: Arc::new(ShardLayout::from_vips(&vips).unwrap()),
        route_tables: vec![RouteTableId("rtb-1".into()), RouteTableId("rtb-2".into())],
        drain_timeout: Duration::from_secs(120),
        pacing: Pacing::default(),
        peer_port: None,
    };
    let mine = setup.config();
    let other = NodeConfig {
        lease_ttl: Duration::from_secs(9),
        ..mine.clone()
    };
    let recorded_at = TokioInstant::now();
    let now = Instant::from_millis(60_000);
    let membership = Membership {
        members: vec![member("b"), member("me")],
        gone: [(
            NodeId::new("c"),
            vipfleet_core::liveness::NodeCheck::Unchanged {
                hb: 10,
                inc: Incarnation(1),
            },
        )]
        .into(),
        agreed: setup.layout.shards().clone(),
        layouts_complete: true,
        tables: setup.route_tables.clone(),
        ..Membership::default()
    };
    let status = Status {
        now,
        recorded_at: Some(recorded_at),
        mode: Some(Mode::Active),
        readiness: Readiness {
            drain: false,
            health: Health::Healthy,
            source_dest_check_off: true,
            cut_off_from_peers: false,
        },
        exited: None,
        lease_valid: true,
        lease_deadline: Some(now + Duration::from_millis(2_000)),
        held: vec![(shard(0), 3)],
        nodes: vec![
            record("b", NodeState::Active, Some(other)),
            record("c", NodeState::Active, Some(mine.clone())),
            record("d", NodeState::Dead, Some(mine.clone())),
            record("me", NodeState::Active, Some(mine)),
        ],
        heartbeat_ages: [("b", 2_500), ("c", 9_000), ("d", 60_000), ("me", 100)]
            .into_iter()
            .map(|(id, ms)| (NodeId::new(id), Duration::from_millis(ms)))
            .collect(),
        gone: [NodeId::new("c")].into(),
        unreadable: [NodeId::new("junk")].into(),
        skipped: vec![Skipped {
            key: "node#junk".into(),
            reason: "attribute hb is not a number".into(),
            node: Some(NodeId::new("junk")),
            shard: None,
        }],
        membership,
        target: BTreeMap::from([
            (shard(0), NodeId::new("me")),
            (shard(1), NodeId::new("b")),
            (shard(2), NodeId::new("me")),
            (shard(3), NodeId::new("b")),
        ]),
        quota: BTreeMap::from([(NodeId::new("b"), 2), (NodeId::new("me"), 2)]),
        shards: vec![
            shard_record(0, Some("me"), 3),
            shard_record(1, Some("b"), 1),
            shard_record(2, Some("c"), 2),
            shard_record(3, None, 0),
        ],
        shard_changed_at: [(shard(0), Instant::from_millis(30_000))].into(),
        moves: [(Instant::from_millis(30_000), shard(0))].into(),
        route_checks: [
            (
                (shard(0), RouteTableId("rtb-1".into())),
                (RouteCheck::Ok, Instant::from_millis(55_000)),
            ),
            (
                (shard(0), RouteTableId("rtb-2".into())),
                (RouteCheck::WrongTarget, Instant::from_millis(55_000)),
            ),
            // Left over from a shard we no longer hold: not shown.
            (
                (shard(1), RouteTableId("rtb-1".into())),
                (RouteCheck::Ok, Instant::from_millis(1_000)),
            ),
        ]
        .into(),
        table_health: [
            (RouteTableId("rtb-1".into()), TableHealth::default()),
            (RouteTableId("rtb-2".into()), failing_table()),
        ]
        .into(),
        setup: Some(Arc::new(setup)),
        ..Status::default()
    };
    (status, recorded_at)
}

fn failing_table() -> TableHealth {
    let mut health = TableHealth::default();
    health.failing = Some((RouteErrorClass::Permanent, "route table rtb-2 does not exist".into()));
    health
}

#[test]
fn nothing_to_show_before_the_first_step() {
    assert!(FleetView::build(&Status::default(), TokioInstant::now()).is_none());
}

#[test]
fn a_cold_observer_judges_no_heartbeat_late() {
    let (mut status, recorded_at) = troubled();
    status.reads_cold = true;
    let view = FleetView::build(&status, recorded_at).unwrap();
    assert!(view.observer.reads_cold);
    let b = view.nodes.iter().find(|n| n.id == "b").unwrap();
    assert!(
        !b.trouble.iter().any(|t| t.contains("heartbeat late")),
        "{:?}",
        b.trouble
    );
    assert_eq!(b.heartbeat_age_ms, Some(2_500), "the age is still shown");
}

#[test]
fn trouble_is_found_and_counted() {
    let (status, recorded_at) = troubled();
    let view = FleetView::build(&status, recorded_at + Duration::from_millis(500)).unwrap();
    assert_eq!(view.snapshot_age_ms, 500);
    assert_eq!(view.generated_at_ms, 60_500);
    assert_eq!(view.observer.lease_remaining_ms, Some(1_500));
    assert_eq!(
        (view.observer.health, view.observer.source_dest_check_off),
        ("healthy", true)
    );

    let node = |id: &str| view.nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(
        node("b").heartbeat_age_ms,
        Some(3_000),
        "ages count to now, not to the snapshot"
    );
    assert_eq!(node("b").config_matches, Some(false));
    assert!(node("b").trouble.iter().any(|t| t.contains("configuration")));
    assert!(node("b").trouble.iter().any(|t| t.contains("heartbeat late")));
    assert_eq!(
        node("b").expires_in_ms,
        Some(6_000),
        "judged by the larger of the two TTLs (9 s)"
    );
    assert_eq!(node("c").trouble, vec!["gone".to_string()]);
    assert_eq!(node("c").expires_in_ms, Some(0));
    assert_eq!(node("d").trouble, vec!["marked dead".to_string()]);
    assert_eq!(node("junk").state, "unreadable");
    assert!(node("me").trouble.is_empty() && node("me").is_self);
    assert_eq!((node("me").quota, node("b").quota, node("c").quota), (2, 2, 0));

    let shard_view = |i: u32| view.shards.iter().find(|s| s.id == shard(i).to_string()).unwrap();
    let statuses = |i: u32| shard_view(i).routes.iter().map(|r| r.status).collect::<Vec<_>>();
    assert_eq!(statuses(0), vec!["ok", "wrong_target"]);
    assert_eq!(shard_view(0).routes[1].checked_ago_ms, Some(5_500));
    assert_eq!(shard_view(0).moved_ago_ms, Some(30_500));
    assert_eq!(statuses(1), vec!["elsewhere", "elsewhere"]);
    assert_eq!(shard_view(2).owner_status, "gone");
    assert_eq!(shard_view(3).owner_status, "free");
    assert_eq!(shard_view(2).target.as_deref(), Some("me"), "the machine's target");

    let t = &view.totals;
    assert_eq!((t.nodes, t.nodes_in_trouble, t.nodes_config_mismatch), (5, 4, 2));
    let s = &t.nodes_by_state;
    assert_eq!((s.active, s.gone, s.dead, s.unreadable), (2, 1, 1, 1));
    assert_eq!((t.shards_owned, t.shards_free, t.shards_orphaned), (3, 1, 1));
    assert_eq!((t.route_problems, t.shards_in_trouble, t.moves_last_hour), (1, 3, 1));
    assert_eq!(t.items_skipped, 1);
    assert_eq!(view.skipped[0].key, "node#junk");
    assert_eq!(t.route_tables_failing, 1);
    assert_eq!(view.route_table_problems.len(), 1, "only the failing table");
    let problem = &view.route_table_problems[0];
    assert_eq!((problem.table.as_str(), problem.class), ("rtb-2", "permanent"));
    assert!(problem.detail.contains("does not exist"));
}

#[test]
fn a_stale_route_check_a_lapsed_lease_and_an_exit_show() {
    let (mut status, recorded_at) = troubled();
    status.exited = Some(ExitReason::DrainTimedOut);
    let view = FleetView::build(&status, recorded_at + Duration::from_secs(40)).unwrap();
    assert!(!view.observer.lease_valid);
    assert_eq!(view.observer.lease_remaining_ms, None);
    assert_eq!(view.observer.exit_reason, Some("drain_timed_out"));
    let zero = view.shards.iter().find(|s| s.id == shard(0).to_string()).unwrap();
    assert!(
        zero.trouble.iter().any(|t| t == "rtb-1: route check is stale"),
        "{:?}",
        zero.trouble
    );
}
