//! The [`LeaseStore`] suite: every outcome of every conditional write, on
//! ids derived from a prefix so that runs can share a table.

use std::sync::Arc;

use crate::layout::ShardLayout;
use crate::liveness::NodeCheck;
use crate::store::{
    AcquireOutcome, AcquireRequest, BeatKind, EvictOutcome, EvictRequest, Expect, HandoffOutcome, HandoffRequest,
    HeartbeatOutcome, HeartbeatRequest, LeaseStore, MarkDeadOutcome, MarkDeadRequest, RetireOutcome, RetireRequest,
    WatchRequest, Watched,
};
use crate::types::{
    EniId, Epoch, Heartbeat, Incarnation, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardId,
    ShardRecord, Vip,
};

/// FNV-1a: a stable hash, so that ids derived from a prefix are the same on
/// every platform and run.
fn fnv1a(text: &str) -> u64 {
    crate::layout::fnv1a(text.bytes())
}

/// The nodes, incarnations and shards of one run of the lease suite.
struct Ids {
    prefix: String,
    /// Shards are VIPs: a block of 16 addresses per prefix, at a hashed
    /// offset in 10.64.0.0/10.
    shard_base: u32,
    inc_base: u64,
}

impl Ids {
    fn new(prefix: &str) -> Self {
        let hash = fnv1a(prefix);
        Self {
            prefix: prefix.to_string(),
            shard_base: 0x0a40_0000 + (((hash >> 32) as u32 % (1 << 18)) << 4),
            inc_base: hash,
        }
    }
    fn node(&self, name: &str) -> NodeId {
        NodeId::new(format!("{}-{name}", self.prefix))
    }
    fn inc(&self, n: u64) -> Incarnation {
        Incarnation(self.inc_base.wrapping_add(n))
    }
    fn shard(&self, n: u32) -> ShardId {
        let vip = Vip::new(std::net::Ipv4Addr::from(self.shard_base + n), 32)
            .unwrap_or_else(|e| panic!("contract shard {n}: {e}"));
        ShardId::of(vip)
    }
    fn info(&self, name: &str, weight: u32) -> NodeInfo {
        NodeInfo {
            id: self.node(name),
            eni: EniId(format!("eni-{}-{name}", self.prefix)),
            az: "us-east-1a".into(),
            addr: "10.0.1.10".into(),
            weight,
            version: "contract".into(),
        }
    }
    fn layout(&self) -> ShardLayout {
        ShardLayout::from_shards((0..4).map(|n| self.shard(n)))
    }
    fn config(&self) -> NodeConfig {
        NodeConfig {
            layout: self.layout().id(),
            route_tables: vec![RouteTableId("rtb-contract".into())],
            lease_ttl: std::time::Duration::from_millis(3000),
            heartbeat_interval: std::time::Duration::from_millis(1000),
            peer_port: Some(7946),
        }
    }
}

async fn beat<S: LeaseStore>(
    store: &S,
    ids: &Ids,
    info: &NodeInfo,
    inc: Incarnation,
    state: NodeState,
    kind: BeatKind,
) -> HeartbeatOutcome {
    beat_putting(store, ids, info, inc, state, kind, 1).await
}

/// A heartbeat whose registration (if it is one) puts `register_hb`.
async fn beat_putting<S: LeaseStore>(
    store: &S,
    ids: &Ids,
    info: &NodeInfo,
    inc: Incarnation,
    state: NodeState,
    kind: BeatKind,
    register_hb: Heartbeat,
) -> HeartbeatOutcome {
    let req = HeartbeatRequest {
        info: info.clone(),
        config: ids.config(),
        inc,
        state,
        kind,
        epoch_floor: 7,
        register_hb,
    };
    store
        .heartbeat(&req)
        .await
        .unwrap_or_else(|e| panic!("heartbeat {}: {e}", info.id))
}

async fn node<S: LeaseStore>(store: &S, id: &NodeId) -> Option<NodeRecord> {
    let nodes = store.read_nodes().await.unwrap_or_else(|e| panic!("read_nodes: {e}"));
    nodes.records.into_iter().find(|n| &n.info.id == id)
}

async fn shard<S: LeaseStore>(store: &S, id: ShardId) -> Option<ShardRecord> {
    store
        .read_shard(id)
        .await
        .unwrap_or_else(|e| panic!("read_shard {id}: {e}"))
}

async fn acquire<S: LeaseStore>(
    store: &S,
    shard: ShardId,
    me: &NodeId,
    inc: Incarnation,
    expect: Expect,
) -> AcquireOutcome {
    let req = AcquireRequest {
        shard,
        me: me.clone(),
        inc,
        expect,
    };
    store
        .acquire(&req)
        .await
        .unwrap_or_else(|e| panic!("acquire {shard} by {me}: {e}"))
}

async fn hand_off<S: LeaseStore>(
    store: &S,
    shard: ShardId,
    me: &NodeId,
    epoch: Epoch,
    to: &NodeId,
    to_inc: Incarnation,
) -> HandoffOutcome {
    let req = HandoffRequest {
        shard,
        me: me.clone(),
        epoch,
        to: to.clone(),
        to_inc,
    };
    store
        .hand_off(&req)
        .await
        .unwrap_or_else(|e| panic!("hand_off {shard} {me} -> {to}: {e}"))
}

async fn mark_dead<S: LeaseStore>(
    store: &S,
    node: &NodeId,
    inc: Incarnation,
    observed_hb: Heartbeat,
) -> MarkDeadOutcome {
    let req = MarkDeadRequest {
        node: node.clone(),
        inc,
        observed_hb,
    };
    store
        .mark_dead(&req)
        .await
        .unwrap_or_else(|e| panic!("mark_dead {node}: {e}"))
}

async fn evict<S: LeaseStore>(store: &S, node: &NodeId, inc: Incarnation, by: &NodeId) -> EvictOutcome {
    let req = EvictRequest {
        node: node.clone(),
        inc,
        by: by.clone(),
    };
    store
        .evict(&req)
        .await
        .unwrap_or_else(|e| panic!("evict {node} by {by}: {e}"))
}

async fn retire<S: LeaseStore>(store: &S, shard: ShardId, epoch: Epoch) -> RetireOutcome {
    store
        .retire(&RetireRequest { shard, epoch })
        .await
        .unwrap_or_else(|e| panic!("retire {shard}: {e}"))
}

fn gone(owner: &NodeId, epoch: Epoch, check: NodeCheck) -> Expect {
    Expect::GoneOwner {
        owner: owner.clone(),
        epoch,
        check,
    }
}

fn unchanged(hb: Heartbeat, inc: Incarnation) -> NodeCheck {
    NodeCheck::Unchanged { hb, inc }
}

fn free(next_epoch: Epoch) -> Expect {
    Expect::Free { next_epoch }
}

fn held(epoch: Epoch) -> Expect {
    Expect::Held { epoch }
}

/// Every `LeaseStore` operation and its conditional semantics.
pub async fn lease_store_contract<S: LeaseStore>(store: &S, prefix: &str) {
    let ids = Ids::new(prefix);
    let (a, b, c, ghost) = (ids.node("a"), ids.node("b"), ids.node("c"), ids.node("ghost"));
    let (inc_a, inc_a2, inc_b, inc_c) = (ids.inc(1), ids.inc(2), ids.inc(3), ids.inc(4));
    let info_a = ids.info("a", 1);
    let active = NodeState::Active;
    use BeatKind::{Register, Renew, Reregister};

    // Heartbeat: a renewal of an item that does not exist says so, and
    // creates nothing; registration writes the item whatever it held.
    assert_eq!(
        beat(store, &ids, &info_a, inc_a, active, Renew).await,
        HeartbeatOutcome::Missing
    );
    assert_eq!(node(store, &a).await, None, "a refused beat must not create the item");
    assert_eq!(
        beat(store, &ids, &info_a, inc_a, active, Register).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        beat(store, &ids, &info_a, inc_a, active, Renew).await,
        HeartbeatOutcome::Beat(2)
    );
    assert_eq!(
        beat(store, &ids, &info_a, inc_b, active, Renew).await,
        HeartbeatOutcome::NotMine
    );
    let record = node(store, &a).await.expect("node a after two beats");
    assert_eq!(
        record,
        NodeRecord {
            info: Arc::new(info_a.clone()),
            hb: 2,
            inc: inc_a,
            state: active,
            config: Some(Arc::new(ids.config())),
            epoch_floor: 7,
            evicted_by: None,
        },
        "a NotMine beat must leave the item alone; the item announces the configuration"
    );
    // A new process takes the id over; the old one is out, and may not
    // re-register over it.
    let info_a2 = NodeInfo {
        weight: 3,
        addr: "10.0.1.11".into(),
        ..info_a.clone()
    };
    assert_eq!(
        beat(store, &ids, &info_a2, inc_a2, NodeState::Draining, Register).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        beat(store, &ids, &info_a, inc_a, active, Renew).await,
        HeartbeatOutcome::NotMine
    );
    assert_eq!(
        beat(store, &ids, &info_a, inc_a, active, Reregister).await,
        HeartbeatOutcome::NotMine
    );
    let record = node(store, &a).await.expect("node a after takeover");
    assert_eq!((record.hb, record.inc, record.state), (1, inc_a2, NodeState::Draining));
    assert_eq!(*record.info, info_a2, "a beat rewrites the node's facts");
    // Re-registration of our own item, or of one that vanished, works.
    assert_eq!(
        beat(store, &ids, &info_a2, inc_a2, NodeState::Draining, Reregister).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        beat(store, &ids, &info_a2, inc_a2, NodeState::Draining, Renew).await,
        HeartbeatOutcome::Beat(2)
    );
    assert_eq!(
        beat(store, &ids, &ids.info("b", 1), inc_b, active, Reregister).await,
        HeartbeatOutcome::Beat(1),
        "b had no item: re-registering creates it"
    );
    assert_eq!(
        beat(store, &ids, &ids.info("c", 1), inc_c, active, Register).await,
        HeartbeatOutcome::Beat(1)
    );
    // Every registration of a process puts its own counter, so observers
    // see each one (answers lost, the process registers again).
    assert_eq!(
        beat_putting(store, &ids, &ids.info("c", 1), inc_c, active, Register, 2).await,
        HeartbeatOutcome::Beat(2)
    );
    assert_eq!(node(store, &ids.node("c")).await.map(|r| r.hb), Some(2));
    // A put, whatever the item held: a new process starts its own count.
    assert_eq!(
        beat_putting(store, &ids, &ids.info("c", 1), inc_c, active, Register, 1).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(node(store, &ids.node("c")).await.map(|r| r.hb), Some(1));

    // Layouts: absent until published, then what was published; publishing
    // again changes nothing.
    let layout = ids.layout();
    let read_layout = || async {
        store
            .read_layout(&layout.id())
            .await
            .unwrap_or_else(|e| panic!("read_layout: {e}"))
    };
    assert_eq!(read_layout().await, None);
    for _ in 0..2 {
        store
            .publish_layout(&layout)
            .await
            .unwrap_or_else(|e| panic!("publish_layout: {e}"));
        assert_eq!(read_layout().await, Some(layout.clone()));
    }

    // Claim of a free shard: once, at the epoch asked for.
    let (s0, s1, s2) = (ids.shard(0), ids.shard(1), ids.shard(2));
    assert_eq!(shard(store, s0).await, None);
    assert_eq!(
        acquire(store, s0, &a, inc_a2, free(1)).await,
        AcquireOutcome::Acquired { epoch: 1 }
    );
    assert_eq!(acquire(store, s0, &b, inc_b, free(7)).await, AcquireOutcome::LostRace);
    let expected = ShardRecord {
        id: s0,
        owner: Some(a.clone()),
        owner_inc: Some(inc_a2),
        epoch: 1,
        moves: 0,
    };
    assert_eq!(shard(store, s0).await, Some(expected.clone()), "a claim is not a move");

    // Takeovers of a shard that is missing or not as expected fail, and
    // create nothing.
    let a_now = unchanged(2, inc_a2);
    assert_eq!(
        acquire(store, s1, &b, inc_b, gone(&a, 0, a_now)).await,
        AcquireOutcome::LostRace
    );
    assert_eq!(
        shard(store, s1).await,
        None,
        "a failed takeover must not create the shard"
    );
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&c, 1, unchanged(1, inc_c))).await,
        AcquireOutcome::LostRace,
        "c does not own it"
    );

    // A gone owner must still be gone as we saw it: same counter and
    // incarnation; a shard that moved beats a node that beat.
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&a, 1, unchanged(1, inc_a2))).await,
        AcquireOutcome::OwnerAlive
    );
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&a, 1, unchanged(2, inc_a))).await,
        AcquireOutcome::OwnerAlive,
        "another incarnation at the same counter is not the node we saw"
    );
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&a, 0, a_now)).await,
        AcquireOutcome::LostRace
    );
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&a, 1, NodeCheck::Missing)).await,
        AcquireOutcome::OwnerAlive,
        "a's item exists"
    );
    assert_eq!(
        shard(store, s0).await,
        Some(expected.clone()),
        "failed takeovers change nothing"
    );
    assert_eq!(
        acquire(store, s0, &b, inc_b, gone(&a, 1, a_now)).await,
        AcquireOutcome::Acquired { epoch: 2 }
    );
    let expected = ShardRecord {
        owner: Some(b.clone()),
        owner_inc: Some(inc_b),
        epoch: 2,
        moves: 1,
        ..expected
    };
    assert_eq!(shard(store, s0).await, Some(expected.clone()));

    // An owner without a node item: taken on the condition that it is
    // still missing.
    assert_eq!(
        acquire(store, s2, &ghost, ids.inc(9), free(1)).await,
        AcquireOutcome::Acquired { epoch: 1 }
    );
    assert_eq!(
        acquire(store, s2, &c, inc_c, gone(&ghost, 1, unchanged(0, ids.inc(9)))).await,
        AcquireOutcome::OwnerAlive,
        "no item shows that counter"
    );

    // Hand-off: only the owner at the current epoch.
    assert_eq!(hand_off(store, s0, &a, 2, &c, inc_c).await, HandoffOutcome::NotOwner);
    assert_eq!(hand_off(store, s0, &b, 1, &c, inc_c).await, HandoffOutcome::NotOwner);
    assert_eq!(hand_off(store, s1, &b, 0, &c, inc_c).await, HandoffOutcome::NotOwner);
    assert_eq!(
        shard(store, s1).await,
        None,
        "a refused hand-off must not create the shard"
    );
    assert_eq!(
        hand_off(store, s0, &b, 2, &c, inc_c).await,
        HandoffOutcome::Done { epoch: 3 }
    );
    let expected = ShardRecord {
        owner: Some(c.clone()),
        owner_inc: Some(inc_c),
        epoch: 3,
        moves: 2,
        ..expected
    };
    assert_eq!(shard(store, s0).await, Some(expected.clone()));
    assert_eq!(
        hand_off(store, s0, &b, 2, &c, inc_c).await,
        HandoffOutcome::NotOwner,
        "epoch 2 is gone"
    );
    assert_eq!(
        acquire(store, s2, &c, inc_c, gone(&ghost, 1, NodeCheck::Missing)).await,
        AcquireOutcome::Acquired { epoch: 2 }
    );

    // Re-claim: the owner (here a new process of it) moves the epoch on,
    // under its incarnation; the shard does not move.
    let inc_c_next = ids.inc(7);
    assert_eq!(
        acquire(store, s2, &b, inc_b, held(2)).await,
        AcquireOutcome::LostRace,
        "not b's"
    );
    assert_eq!(
        acquire(store, s2, &c, inc_c_next, held(1)).await,
        AcquireOutcome::LostRace,
        "epoch 1 is gone"
    );
    assert_eq!(
        acquire(store, s1, &c, inc_c_next, held(0)).await,
        AcquireOutcome::LostRace
    );
    assert_eq!(
        shard(store, s1).await,
        None,
        "a refused re-claim must not create the shard"
    );
    assert_eq!(
        acquire(store, s2, &c, inc_c_next, held(2)).await,
        AcquireOutcome::Acquired { epoch: 3 }
    );
    let reclaimed = shard(store, s2).await.expect("shard s2");
    assert_eq!(
        (
            reclaimed.owner.as_ref(),
            reclaimed.owner_inc,
            reclaimed.epoch,
            reclaimed.moves
        ),
        (Some(&c), Some(inc_c_next), 3, 1)
    );

    // Mark dead: only at the heartbeat and incarnation observed.
    assert_eq!(mark_dead(store, &c, inc_c, 0).await, MarkDeadOutcome::Alive);
    assert_eq!(mark_dead(store, &c, inc_b, 1).await, MarkDeadOutcome::Alive);
    assert_eq!(mark_dead(store, &ghost, ids.inc(9), 0).await, MarkDeadOutcome::Alive);
    assert_eq!(node(store, &ghost).await, None, "mark_dead must not create a node");
    assert_eq!(mark_dead(store, &c, inc_c, 1).await, MarkDeadOutcome::Marked);
    let record = node(store, &c).await.expect("node c");
    assert_eq!((record.state, record.hb, record.inc), (NodeState::Dead, 1, inc_c));

    // The node marked dead was only suspected: its own beat revives it, and
    // the verdict no longer lets anyone take its shard.
    assert_eq!(
        beat(store, &ids, &ids.info("c", 1), inc_c, active, Renew).await,
        HeartbeatOutcome::Beat(2)
    );
    assert_eq!(node(store, &c).await.map(|n| n.state), Some(active));
    assert_eq!(
        acquire(store, s0, &a, inc_a2, gone(&c, 3, unchanged(1, inc_c))).await,
        AcquireOutcome::OwnerAlive,
        "c beat after it was marked: its shard must not go on a stale verdict"
    );
    assert_eq!(
        acquire(store, s0, &a, inc_a2, gone(&c, 3, unchanged(2, inc_c))).await,
        AcquireOutcome::Acquired { epoch: 4 }
    );
    assert_eq!(acquire(store, s0, &b, inc_b, free(9)).await, AcquireOutcome::LostRace);
    let expected = ShardRecord {
        owner: Some(a.clone()),
        owner_inc: Some(inc_a2),
        epoch: 4,
        moves: 3,
        ..expected
    };
    assert_eq!(shard(store, s0).await, Some(expected.clone()));

    // The bulk reads agree with the single ones.
    let mine: Vec<ShardRecord> = store
        .read_shards()
        .await
        .unwrap_or_else(|e| panic!("read_shards: {e}"))
        .records
        .into_iter()
        .filter(|s| (ids.shard(0)..=ids.shard(15)).contains(&s.id))
        .collect();
    assert_eq!(mine.len(), 2, "shards {s0} and {s2} exist, {s1} does not: {mine:?}");
    assert_eq!(mine.iter().find(|s| s.id == s0), Some(&expected));
    assert_eq!(
        mine.iter().find(|s| s.id == s2).and_then(|s| s.owner.clone()),
        Some(c.clone()),
        "taken from the ghost"
    );
    let mut nodes: Vec<NodeId> = store
        .read_nodes()
        .await
        .unwrap_or_else(|e| panic!("read_nodes: {e}"))
        .records
        .into_iter()
        .map(|n| n.info.id.clone())
        .filter(|id| id.as_str().starts_with(&format!("{prefix}-")))
        .collect();
    nodes.sort();
    assert_eq!(nodes, [a.clone(), b.clone(), c.clone()]);

    // Retire: only at the epoch seen; then the item is gone, and a claim
    // may bring it back at a higher epoch, never a lower one.
    assert_eq!(retire(store, s0, 3).await, RetireOutcome::Changed);
    assert_eq!(shard(store, s0).await, Some(expected));
    assert_eq!(retire(store, s0, 4).await, RetireOutcome::Retired);
    assert_eq!(shard(store, s0).await, None);
    assert_eq!(
        retire(store, s0, 4).await,
        RetireOutcome::Retired,
        "retiring twice is fine"
    );
    assert_eq!(
        acquire(store, s0, &a, inc_a2, free(5)).await,
        AcquireOutcome::Acquired { epoch: 5 }
    );
    assert_eq!(shard(store, s0).await.map(|r| r.epoch), Some(5));

    // Eviction: peers found incarnation inc_d of d dead. Only that
    // incarnation is evicted; from then its renewals fail and its counter
    // stands where the eviction found it, so a takeover checking that
    // counter goes through; a new incarnation's registration starts clean.
    let (d, e, inc_d, inc_d2) = (ids.node("d"), ids.node("e"), ids.inc(5), ids.inc(6));
    let info_d = ids.info("d", 1);
    let s9 = ids.shard(9);
    assert_eq!(
        beat(store, &ids, &info_d, inc_d, active, Register).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        beat(store, &ids, &info_d, inc_d, active, Renew).await,
        HeartbeatOutcome::Beat(2)
    );
    assert_eq!(
        acquire(store, s9, &d, inc_d, free(1)).await,
        AcquireOutcome::Acquired { epoch: 1 }
    );
    assert_eq!(
        evict(store, &d, inc_d2, &c).await,
        EvictOutcome::NotThere,
        "another incarnation"
    );
    assert_eq!(evict(store, &e, inc_d, &c).await, EvictOutcome::NotThere, "no item");
    assert_eq!(node(store, &e).await, None, "an eviction creates nothing");
    assert_eq!(evict(store, &d, inc_d, &c).await, EvictOutcome::Evicted { hb: 2 });
    assert_eq!(
        evict(store, &d, inc_d, &b).await,
        EvictOutcome::Evicted { hb: 2 },
        "evicting twice finds it evicted"
    );
    assert_eq!(
        beat(store, &ids, &info_d, inc_d, active, Renew).await,
        HeartbeatOutcome::Evicted
    );
    let record = node(store, &d).await.expect("node d, evicted");
    assert_eq!(
        (record.hb, record.evicted_by),
        (2, Some(c.clone())),
        "the first eviction's name stays; the refused beat moved nothing"
    );
    assert_eq!(
        acquire(store, s9, &c, inc_c, gone(&d, 1, unchanged(2, inc_d))).await,
        AcquireOutcome::Acquired { epoch: 2 },
        "an evicted owner's shard is taken over on the counter the eviction froze"
    );
    assert_eq!(
        beat(store, &ids, &info_d, inc_d2, active, Register).await,
        HeartbeatOutcome::Beat(1)
    );
    assert_eq!(
        node(store, &d).await.and_then(|r| r.evicted_by),
        None,
        "a new incarnation is not evicted"
    );
    assert_eq!(
        beat(store, &ids, &info_d, inc_d2, active, Renew).await,
        HeartbeatOutcome::Beat(2)
    );

    // The change counter and the watch. Other runs may share the table and
    // announce too, so the counter is only known to move forward.
    let watch = |node: Option<NodeId>| async move {
        store
            .watch(&WatchRequest { node })
            .await
            .unwrap_or_else(|e| panic!("watch: {e}"))
    };
    let announce = || async {
        store
            .announce_change()
            .await
            .unwrap_or_else(|e| panic!("announce_change: {e}"))
    };
    let first = announce().await;
    let second = announce().await;
    assert!(
        second > first,
        "the counter moves with every announcement: {first}, {second}"
    );
    let seen = watch(None).await;
    assert!(seen.version.is_some_and(|v| v >= second), "{seen:?}");
    assert_eq!(seen.node, None, "a watch of no node reads no node");
    match watch(Some(d.clone())).await.node {
        Some(Watched::Record(record)) => assert_eq!((record.inc, record.hb), (inc_d2, 2)),
        other => panic!("node d, watched: {other:?}"),
    }
    assert_eq!(watch(Some(e.clone())).await.node, Some(Watched::Missing));
}
