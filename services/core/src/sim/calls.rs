//! Performing one call of a node against the simulated store and route
//! tables, with the faults that strike it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{throughput, Sabotage, World};
use crate::config::LeaseConfig;
use crate::machine::{Effect, Input};
use crate::routes::{RouteError, RouteOp, ROUTE_CALL_TIMEOUT};
use crate::store::{
    AcquireRequest, BeatKind, EvictOutcome, Expect, HeartbeatOutcome, StoreError, StoreErrorKind, StoreOp,
};
use crate::time::Instant;

/// What a flaky store does to one call.
enum Flake {
    Answers,
    /// Refused before it applied.
    Throttled,
    /// Applied, but the answer never arrives: the node times out and
    /// cannot know the call took effect.
    AnswerLost,
}

/// The store operation an effect performs, if it is a store call.
pub(super) fn store_op(effect: &Effect) -> Option<StoreOp> {
    Some(match effect {
        Effect::Heartbeat(_) => StoreOp::Heartbeat,
        Effect::ReadNodes => StoreOp::ReadNodes,
        Effect::ReadShards => StoreOp::ReadShards,
        Effect::ConfirmShard(_) => StoreOp::ReadShard,
        Effect::PublishLayout(_) => StoreOp::PublishLayout,
        Effect::ReadLayout(_) => StoreOp::ReadLayout,
        Effect::Acquire(_) => StoreOp::Acquire,
        Effect::HandOff(_) => StoreOp::Handoff,
        Effect::MarkDead(_) => StoreOp::MarkDead,
        Effect::Evict(_) => StoreOp::Evict,
        Effect::Retire(_) => StoreOp::Retire,
        Effect::Watch(_) => StoreOp::Watch,
        Effect::AnnounceChange => StoreOp::AnnounceChange,
        _ => return None,
    })
}

pub(super) fn is_store_call(effect: &Effect) -> bool {
    store_op(effect).is_some()
}

/// How long the driver waits for a store call sent at `sent_at`, and what
/// the node hears if it gives up; `None` for calls the driver does not
/// time out this way.
pub(super) fn timeout(effect: &Effect, lease: &LeaseConfig, sent_at: Instant) -> Option<(Duration, Input)> {
    if let Effect::DescribeTable(table) = effect {
        let result = Err(RouteError::Unavailable {
            op: RouteOp::Describe,
            detail: "timed out".into(),
        });
        let input = Input::TableDescribed {
            table: table.clone(),
            sent_at,
            result,
        };
        return Some((ROUTE_CALL_TIMEOUT, input));
    }
    let op = store_op(effect)?;
    let timeout = match op {
        StoreOp::Heartbeat => lease.heartbeat_timeout(),
        _ => lease.store_call_timeout(),
    };
    let error = StoreError::new(op, StoreErrorKind::Unavailable, "timed out");
    Some((timeout, failed(effect, sent_at, error)?))
}

/// The input a store call's failure turns into.
fn failed(effect: &Effect, sent_at: Instant, e: StoreError) -> Option<Input> {
    Some(match effect {
        Effect::Heartbeat(_) => Input::Heartbeat {
            sent_at,
            result: Err(e),
        },
        Effect::ReadNodes => Input::Nodes {
            sent_at,
            result: Err(e),
        },
        Effect::ReadShards => Input::Shards {
            sent_at,
            result: Err(e),
        },
        Effect::ConfirmShard(shard) => Input::Confirmed {
            shard: *shard,
            sent_at,
            result: Err(e),
        },
        Effect::PublishLayout(_) => Input::LayoutPublished { result: Err(e) },
        Effect::ReadLayout(id) => Input::Layout {
            id: id.clone(),
            result: Err(e),
        },
        Effect::Acquire(req) => Input::Acquired {
            shard: req.shard,
            sent_at,
            result: Err(e),
        },
        Effect::HandOff(req) => Input::HandedOff {
            shard: req.shard,
            sent_at,
            result: Err(e),
        },
        Effect::MarkDead(req) => Input::MarkedDead {
            node: req.node.clone(),
            result: Err(e),
        },
        Effect::Evict(req) => Input::Evicted {
            node: req.node.clone(),
            inc: req.inc,
            result: Err(e),
        },
        Effect::Retire(req) => Input::Retired {
            shard: req.shard,
            result: Err(e),
        },
        Effect::Watch(_) => Input::Watched { result: Err(e) },
        Effect::AnnounceChange => Input::ChangeAnnounced { result: Err(e) },
        _ => return None,
    })
}

impl World {
    fn flake(&mut self) -> Flake {
        let now = self.now;
        let Some((percent, _)) = self.flaky_store.filter(|(_, until)| now < *until) else {
            return Flake::Answers;
        };
        if !self.rng.random_bool(f64::from(percent) / 100.0) {
            return Flake::Answers;
        }
        if self.rng.random_bool(0.5) {
            Flake::Throttled
        } else {
            Flake::AnswerLost
        }
    }

    /// Performs a call at `self.now`, through DynamoDB's limits (when
    /// modelled) and whatever the flaky store does to it.
    pub(super) fn apply(
        &mut self,
        node: usize,
        effect: Effect,
        sent_at: Instant,
        sabotage: Option<Sabotage>,
    ) -> Option<Input> {
        if let Effect::DescribeTable(table) = effect {
            return Some(self.describe_table(table, sent_at, sabotage));
        }
        let Some(op) = store_op(&effect) else {
            return self.perform(node, effect, sent_at, sabotage);
        };
        let now = self.now;
        let draw = throughput::draw(&effect);
        if let Some(limits) = &mut self.store_throughput {
            if limits.refuses(draw, now) {
                let error = StoreError::new(op, StoreErrorKind::Throttled, "simulated: throughput exceeded");
                return failed(&effect, sent_at, error);
            }
        }
        let before = self.table.counters();
        let result = match self.flake() {
            Flake::Answers => self.perform(node, effect, sent_at, sabotage),
            Flake::Throttled => failed(
                &effect,
                sent_at,
                StoreError::new(op, StoreErrorKind::Throttled, "simulated throttling"),
            ),
            // No answer ever comes: the driver's timeout tells the node.
            Flake::AnswerLost => {
                self.perform(node, effect, sent_at, sabotage);
                None
            }
        };
        if let Some(limits) = &mut self.store_throughput {
            limits.charge(draw, now, &before, &self.table.counters());
        }
        result
    }

    fn store_error(&self, node: usize, op: StoreOp) -> Option<StoreError> {
        let now = self.now;
        if self.table_missing_until.is_some_and(|t| now < t) {
            return Some(StoreError::new(
                op,
                StoreErrorKind::TableMissing,
                "simulated: no such table",
            ));
        }
        let down = self.store_down_until.is_some_and(|t| now < t)
            || self.nodes[node].partitioned_until.is_some_and(|t| now < t);
        down.then(|| StoreError::new(op, StoreErrorKind::Unavailable, "simulated outage"))
    }

    /// Performs a call against the store or the route tables at `self.now`.
    fn perform(&mut self, node: usize, effect: Effect, sent_at: Instant, sabotage: Option<Sabotage>) -> Option<Input> {
        let fail = |op| self.store_error(node, op);
        let strict = |skipped: usize| {
            (sabotage == Some(Sabotage::StrictReads) && skipped > 0)
                .then(|| StoreError::new(StoreOp::ReadNodes, StoreErrorKind::Corrupt, "sabotaged: strict reads"))
        };
        Some(match effect {
            Effect::Heartbeat(req) => {
                let result = match fail(StoreOp::Heartbeat) {
                    Some(e) => Err(e),
                    None => match self.table.heartbeat(&req) {
                        HeartbeatOutcome::Missing if sabotage == Some(Sabotage::MissingItemIsSuperseded) => {
                            Ok(HeartbeatOutcome::NotMine)
                        }
                        outcome => Ok(outcome),
                    },
                };
                if let Ok(HeartbeatOutcome::Beat(hb)) = result {
                    let shown = self.counters.entry((req.info.id.clone(), req.inc)).or_default();
                    if req.kind != BeatKind::Renew {
                        // A put sent before renewals landed may land after
                        // them: only what the item showed before it was sent
                        // counts.
                        let before_sent = shown.iter().rev().find(|(t, _)| *t <= sent_at).map_or(0, |(_, c)| *c);
                        if req.register_hb <= before_sent {
                            self.counters_back.push(format!(
                                "{} {} put counter {} (sent {sent_at}), its item had shown {before_sent} before",
                                self.now, req.info.id, req.register_hb
                            ));
                        }
                    }
                    if shown.last().is_none_or(|(_, c)| hb > *c) {
                        shown.push((self.now, hb));
                    }
                }
                Input::Heartbeat { sent_at, result }
            }
            Effect::ReadNodes => Input::Nodes {
                sent_at,
                result: match fail(StoreOp::ReadNodes) {
                    Some(e) => Err(e),
                    None => {
                        let mut scan = self.table.read_nodes();
                        if sabotage == Some(Sabotage::OwnTtlOnly) {
                            for record in &mut scan.records {
                                if let Some(c) = &mut record.config {
                                    Arc::make_mut(c).lease_ttl = Duration::ZERO;
                                }
                            }
                        }
                        strict(scan.skipped.len()).map_or(Ok(scan), Err)
                    }
                },
            },
            Effect::ReadShards => Input::Shards {
                sent_at,
                result: match fail(StoreOp::ReadShards) {
                    Some(e) => Err(e),
                    None => {
                        let scan = self.table.read_shards();
                        strict(scan.skipped.len()).map_or(Ok(scan), Err)
                    }
                },
            },
            Effect::ConfirmShard(shard) => Input::Confirmed {
                shard,
                sent_at,
                result: match fail(StoreOp::ReadShard) {
                    Some(e) => Err(e),
                    None => self
                        .table
                        .read_shard(shard)
                        .map_err(|reason| StoreError::new(StoreOp::ReadShard, StoreErrorKind::Corrupt, reason)),
                },
            },
            Effect::PublishLayout(layout) => Input::LayoutPublished {
                result: match fail(StoreOp::PublishLayout) {
                    Some(e) => Err(e),
                    None => {
                        self.table.publish_layout(&layout);
                        Ok(())
                    }
                },
            },
            Effect::ReadLayout(id) => Input::Layout {
                result: match fail(StoreOp::ReadLayout) {
                    Some(e) => Err(e),
                    None => Ok(self.table.read_layout(&id)),
                },
                id,
            },
            Effect::Acquire(req) => Input::Acquired {
                shard: req.shard,
                sent_at,
                result: match (fail(StoreOp::Acquire), sabotage) {
                    (Some(e), _) => Err(e),
                    (None, Some(Sabotage::TakeoverWithoutNodeCheck)) => Ok(self.table.acquire_without_node_check(&req)),
                    (None, Some(Sabotage::EpochsRestart)) => Ok(self.table.acquire(&restart_epochs(req))),
                    (None, _) => Ok(self.table.acquire(&req)),
                },
            },
            Effect::HandOff(req) => Input::HandedOff {
                shard: req.shard,
                sent_at,
                result: match fail(StoreOp::Handoff) {
                    Some(e) => Err(e),
                    None => Ok(self.table.hand_off(&req)),
                },
            },
            Effect::MarkDead(req) => Input::MarkedDead {
                node: req.node.clone(),
                result: match fail(StoreOp::MarkDead) {
                    Some(e) => Err(e),
                    None => Ok(self.table.mark_dead(&req)),
                },
            },
            Effect::Evict(req) => Input::Evicted {
                node: req.node.clone(),
                inc: req.inc,
                result: match fail(StoreOp::Evict) {
                    Some(e) => Err(e),
                    None => {
                        let outcome = self.table.evict(&req);
                        if matches!(outcome, EvictOutcome::Evicted { .. }) {
                            let now = self.now;
                            self.evictions.entry((req.node.clone(), req.inc)).or_insert(now);
                        }
                        Ok(outcome)
                    }
                },
            },
            Effect::Retire(req) => Input::Retired {
                shard: req.shard,
                result: match fail(StoreOp::Retire) {
                    Some(e) => Err(e),
                    None => Ok(self.table.retire(&req)),
                },
            },
            Effect::Watch(req) => Input::Watched {
                result: match fail(StoreOp::Watch) {
                    Some(e) => Err(e),
                    None => Ok(self.table.watch(&req)),
                },
            },
            Effect::AnnounceChange => Input::ChangeAnnounced {
                result: match fail(StoreOp::AnnounceChange) {
                    Some(e) => Err(e),
                    None => Ok(self.table.announce_change()),
                },
            },
            // EC2 calls go through the driver's model ([`super::ec2`]).
            Effect::ChangeRoute(_) | Effect::DescribeTable(_) | Effect::Exit(_) => return None,
        })
    }
}

pub(super) fn restart_epochs(mut req: AcquireRequest) -> AcquireRequest {
    if let Expect::Free { next_epoch } = &mut req.expect {
        *next_epoch = 1;
    }
    req
}
