//! Micro-benchmarks at fleet scale: the target assignment of 10,000 shards
//! over 1,000 nodes, and one step of a node's machine that holds a snapshot
//! of such a fleet (`cargo bench -p vipfleet-core --bench scale`).
//!
//! `cargo test --all-targets` runs each benchmark once, briefly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vipfleet_core::assign::{assign, Member, Role};
use vipfleet_core::fake::LeaseTable;
use vipfleet_core::machine::{Effect, Health, Input, Machine, NodeSetup, Pacing};
use vipfleet_core::sim::shard_of;
use vipfleet_core::store::{AcquireRequest, BeatKind, Expect, HeartbeatRequest};
use vipfleet_core::types::{EniId, Incarnation, NodeId, NodeInfo, NodeState, RouteTableId, ShardId};
use vipfleet_core::{Instant, LeaseConfig, ShardLayout};

const NODES: usize = 1_000;
const SHARDS: usize = 10_000;

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:04}"))
}

fn members() -> Vec<Member> {
    (0..NODES)
        .map(|i| Member {
            id: node_id(i),
            weight: 1,
            role: Role::Takes,
        })
        .collect()
}

fn shards() -> Vec<ShardId> {
    (0..SHARDS).map(shard_of).collect()
}

fn bench_assign(c: &mut Criterion) {
    let shards = shards();
    let members = members();
    let settled = assign(&shards, &members, &BTreeMap::new()).target;
    // The fleet after a crash: the dead node's shards are orphans.
    let survivors: Vec<Member> = members[1..].to_vec();
    c.bench_function("assign 10k shards over 1k nodes, from scratch", |b| {
        b.iter(|| assign(&shards, &members, &BTreeMap::new()))
    });
    c.bench_function("assign 10k shards over 1k nodes, settled", |b| {
        b.iter(|| assign(&shards, &members, &settled))
    });
    c.bench_function("assign 10k shards over 1k nodes, one node lost", |b| {
        b.iter(|| assign(&shards, &survivors, &settled))
    });
}

fn setup(i: usize, layout: &Arc<ShardLayout>) -> NodeSetup {
    let id = node_id(i);
    NodeSetup {
        info: NodeInfo {
            eni: EniId(format!("eni-{id}")),
            id,
            az: format!("az-{}", i % 3),
            addr: String::new(),
            weight: 1,
            version: "bench".into(),
        },
        inc: Incarnation(i as u64 + 1),
        lease: LeaseConfig::CHEAP,
        layout: layout.clone(),
        route_tables: vec![RouteTableId("rtb-0".into())],
        drain_timeout: Duration::from_secs(120),
        pacing: Pacing::default(),
        peer_port: None,
    }
}

/// A table holding 1,000 registered nodes and 10,000 shards, each owned by
/// its target; and node 0's machine, fed reads of it until it has planned.
fn snapshot() -> (Machine, LeaseTable, Instant) {
    let layout = Arc::new(ShardLayout::from_shards(shards()));
    let mut table = LeaseTable::default();
    table.publish_layout(&layout);
    for i in 1..NODES {
        let s = setup(i, &layout);
        table.heartbeat(&HeartbeatRequest {
            config: s.config(),
            info: s.info,
            inc: s.inc,
            state: NodeState::Active,
            kind: BeatKind::Register,
            epoch_floor: 0,
            register_hb: 1,
        });
    }
    let target = assign(&shards(), &members(), &BTreeMap::new()).target;
    for (shard, owner) in &target {
        let index: usize = owner.as_str()[1..].parse().unwrap_or(0);
        table.acquire(&AcquireRequest {
            shard: *shard,
            me: owner.clone(),
            inc: Incarnation(index as u64 + 1),
            expect: Expect::Free { next_epoch: 1 },
        });
    }
    let mut now = Instant::ZERO;
    let mut machine = Machine::new(setup(0, &layout), now);
    let mut inputs = vec![Input::Health(Health::Healthy), Input::SourceDestCheckOff(true)];
    // A few seconds of a node's life against the table: it registers,
    // reads, and claims its share.
    for _ in 0..200 {
        for input in std::mem::take(&mut inputs) {
            let step = machine.step(input, now);
            inputs.extend(step.effects.into_iter().filter_map(|e| answer(&mut table, e, now)));
        }
        now = now + Duration::from_millis(50);
        inputs.push(Input::Tick);
    }
    (machine, table, now)
}

/// What the table answers to the calls a machine makes (route calls and
/// anything else are left unanswered: they play no part here).
fn answer(table: &mut LeaseTable, effect: Effect, now: Instant) -> Option<Input> {
    Some(match effect {
        Effect::Heartbeat(req) => Input::Heartbeat {
            sent_at: now,
            result: Ok(table.heartbeat(&req)),
        },
        Effect::ReadNodes => Input::Nodes {
            sent_at: now,
            result: Ok(table.read_nodes()),
        },
        Effect::ReadShards => Input::Shards {
            sent_at: now,
            result: Ok(table.read_shards()),
        },
        Effect::PublishLayout(layout) => {
            table.publish_layout(&layout);
            Input::LayoutPublished { result: Ok(()) }
        }
        Effect::ReadLayout(id) => Input::Layout {
            result: Ok(table.read_layout(&id)),
            id,
        },
        Effect::Acquire(req) => Input::Acquired {
            shard: req.shard,
            sent_at: now,
            result: Ok(table.acquire(&req)),
        },
        _ => return None,
    })
}

fn bench_step(c: &mut Criterion) {
    let (machine, mut table, now) = snapshot();
    assert!(!machine.target().is_empty(), "the machine planned its targets");
    let nodes = table.read_nodes();
    let shards = table.read_shards();
    c.bench_function("step: tick, 1k nodes and 10k shards known", |b| {
        b.iter_batched_ref(
            || machine.clone(),
            |m| m.step(Input::Tick, now + Duration::from_millis(1)),
            BatchSize::LargeInput,
        )
    });
    let at = now + Duration::from_millis(1);
    bench_read(c, "step: a read of 1k node items", (&machine, at), nodes, |scan| {
        Input::Nodes {
            sent_at: now,
            result: Ok(scan),
        }
    });
    bench_read(c, "step: a read of 10k shard items", (&machine, at), shards, |scan| {
        Input::Shards {
            sent_at: now,
            result: Ok(scan),
        }
    });
}

/// One step, at `at`, of a copy of `machine` on the read `input` makes of
/// `scan`.
fn bench_read<T: Clone>(
    c: &mut Criterion,
    name: &str,
    (machine, at): (&Machine, Instant),
    scan: T,
    input: impl Fn(T) -> Input,
) {
    c.bench_function(name, |b| {
        b.iter_batched(
            || (machine.clone(), scan.clone()),
            |(mut m, scan)| {
                let step = m.step(input(scan), at);
                (m, step)
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench_assign, bench_step
}
criterion_main!(benches);
