//! [`DynamoLeaseStore`]: the core's `LeaseStore` over DynamoDB, with the
//! item format of `dynamo_items`.
//!
//! Every write is one conditional `UpdateItem` or `PutItem`, except the
//! takeover of a gone node's shard, which is a `TransactWriteItems` of a
//! `ConditionCheck` on the node's item (still as observed, or still
//! missing) and the shard update (`dynamo_takeover`). A failed
//! condition is an outcome (`LostRace`, `NotMine`, …), exactly as in the
//! core's in-memory fake; the contract suite in `vipfleet_core::contract`
//! holds both to the same behaviour.
//!
//! Retries: the SDK retries a call whose answer was lost (timeout, 5xx). A
//! retried claim whose first attempt did land then fails its condition, and
//! would report a race lost to ourselves; so a failed claim returns the item
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), and an item that shows
//! this very node and incarnation as owner at the epoch the claim produces
//! is reported as `Acquired`. (The fake answers `LostRace` there; only a
//! retry can tell the two apart, as the protocol never re-claims its own
//! shard.) Takeover transactions carry an idempotency token the SDK fills
//! in, so their retries are exact. A retried hand-off or heartbeat needs
//! nothing: `NotOwner` after our own hand-off is true, and a heartbeat
//! counted twice is harmless. `init_table` lives in `dynamo_table`.
//!
//! Every call asks for the capacity it consumed and counts it through a
//! [`UnitsSink`] (the agent's metrics); see `dynamo_units` for what moto
//! answers and where the store estimates instead.
//!
//! The fleet item (`pk = fleet`) holds the change counter cold nodes watch
//! (`vipfleet_core::machine` pace): `announce_change` adds one to it
//! unconditionally, and `watch` reads it and the watched node's item with
//! two concurrent, eventually consistent `GetItem`s (not `BatchGetItem`,
//! which would need another IAM action for no saving: both bill per item).
//!
//! A table that does not exist (deleted, or being restored) answers
//! `ResourceNotFoundException`: every call then fails as
//! [`StoreErrorKind::TableMissing`], which the agent reports and rides out
//! (fail static).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use vipfleet_core::store::{
    AcquireOutcome, AcquireRequest, BeatKind, EvictOutcome, EvictRequest, Expect, HandoffOutcome, HandoffRequest,
    HeartbeatOutcome, HeartbeatRequest, LeaseStore, MarkDeadOutcome, MarkDeadRequest, RetireOutcome, RetireRequest,
    Scan, Skipped, StoreError, StoreErrorKind, StoreOp, StoreResult, Watch, WatchRequest, Watched,
};
use vipfleet_core::units::{self, Consistency};
use vipfleet_core::{Epoch, LayoutId, NodeId, NodeRecord, NodeState, ShardId, ShardLayout, ShardRecord};

use super::dynamo_items::{
    attr, decode_all, expr, fleet_key, fleet_version, get_n, inc_value, layout_from_item, layout_item, layout_key, n,
    names, node_item, node_key, node_record, node_values, s, shard_key, shard_record, Beat, Item, FLEET_KEY,
    NODE_PREFIX, SHARD_PREFIX,
};
use super::dynamo_units::{item_bytes, read_estimate, value_bytes, write_estimate, Sink};
use super::{classify, error_code, error_detail, ErrorClass};

pub use super::dynamo_units::{Units, UnitsSink};

pub use super::dynamo_table::{init_table, Billing, InitTableError, TableInit};

/// How long DynamoDB keeps a dead node's item before TTL removes it: long
/// enough for the dashboard and post-mortems to still show it.
const DEAD_NODE_RETENTION_SECS: u64 = 24 * 60 * 60;

/// The answer of a table that does not exist.
const TABLE_MISSING_CODE: &str = "ResourceNotFoundException";
/// The answer to an update whose expression meets an attribute of the wrong
/// type (a node item edited by hand).
const VALIDATION_CODE: &str = "ValidationException";

/// The lease table. Cheap to clone (the SDK client is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct DynamoLeaseStore {
    pub(super) client: Client,
    pub(super) table: String,
    /// Node reads are eventually consistent by default: half the cost, and a
    /// stale heartbeat only delays an observer; every takeover is fenced by
    /// a condition on the heartbeat it observed.
    consistent_node_reads: bool,
    /// Wall clock in unix seconds, only for the display and TTL attributes.
    pub(super) wall_clock: fn() -> u64,
    /// Where consumed request units are counted.
    pub(super) units: Sink,
}

fn system_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a conditional write came to: `Ok(new attributes)`, or the condition
/// failed (with the item as it was, when asked for and present).
type Conditional = Result<Item, Option<Item>>;

impl DynamoLeaseStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            consistent_node_reads: false,
            wall_clock: system_unix_secs,
            units: Sink::default(),
        }
    }

    /// Counts the request units every call consumes into `sink`: as the
    /// endpoint reports them, or, with `estimating` (an endpoint that is not
    /// DynamoDB, such as moto), always by the store's size estimate.
    pub fn with_units_sink(mut self, sink: Arc<dyn UnitsSink>, estimating: bool) -> Self {
        self.units = Sink::new(sink, estimating);
        self
    }

    /// Strongly consistent node reads (twice the read cost).
    pub fn with_consistent_node_reads(mut self, consistent: bool) -> Self {
        self.consistent_node_reads = consistent;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(super) fn error<E>(&self, op: StoreOp, context: &str, err: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = if error_code(err) == Some(TABLE_MISSING_CODE) {
            StoreErrorKind::TableMissing
        } else {
            match classify(err) {
                ErrorClass::Throttled => StoreErrorKind::Throttled,
                ErrorClass::Unavailable => StoreErrorKind::Unavailable,
                ErrorClass::Other => StoreErrorKind::Other,
            }
        };
        StoreError::new(
            op,
            kind,
            error_detail(&format!("{context} in table {}", self.table), err),
        )
    }

    /// All items whose key starts with `prefix`. Cost: a Scan reads (and
    /// bills) the whole table whatever a filter would keep, nodes and shards
    /// alike: one read unit per 4 KB of items, half that when eventually
    /// consistent. So it filters here rather than in the request: the same
    /// bill, a few KB more on the wire, and an estimate of the units (moto
    /// reports none) from the items actually read, not extrapolated from
    /// the ones a filter kept.
    async fn scan(&self, op: StoreOp, prefix: &str, consistent: bool) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| self.error(op, &format!("scan for {prefix}*"), &e))?;
            self.units
                .count(op, Units::reported(page.consumed_capacity(), true), || {
                    let read: u64 = page.items().iter().map(item_bytes).sum();
                    read_estimate(read, consistency(consistent))
                });
            let wanted = |item: &&Item| {
                item.get(attr::PK)
                    .and_then(|key| key.as_s().ok())
                    .is_some_and(|key| key.starts_with(prefix))
            };
            items.extend(page.items().iter().filter(wanted).cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    fn corrupt(op: StoreOp, detail: String) -> StoreError {
        StoreError::new(op, StoreErrorKind::Corrupt, detail)
    }

    /// One conditional `UpdateItem`.
    async fn update(
        &self,
        op: StoreOp,
        key: AttributeValue,
        update: &str,
        condition: Option<&str>,
        values: HashMap<String, AttributeValue>,
        return_old_on_failure: bool,
    ) -> StoreResult<Conditional> {
        let mut expressions = vec![update];
        expressions.extend(condition);
        let context = match &key {
            AttributeValue::S(k) => format!("update {k}"),
            _ => "update".to_string(),
        };
        let key_bytes = key_bytes(&key);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, key)
            .update_expression(update)
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_names(Some(names(&expressions)))
            .set_expression_attribute_values(Some(values))
            // The whole item as it now stands: what a write is billed by,
            // and what an eviction that found the item evicted already
            // must answer with (nothing of it changed).
            .return_values(ReturnValue::AllNew)
            .set_return_values_on_condition_check_failure(
                return_old_on_failure.then_some(ReturnValuesOnConditionCheckFailure::AllOld),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                let new = out.attributes().cloned().unwrap_or_default();
                self.units
                    .count(op, Units::reported(out.consumed_capacity(), false), || {
                        write_estimate(key_bytes + item_bytes(&new), false)
                    });
                Ok(Ok(new))
            }
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    let old = match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                            c,
                        ) => c.item().cloned(),
                        _ => None,
                    };
                    // Billed, though the error does not say so.
                    let bytes = old.as_ref().map_or(key_bytes, item_bytes);
                    self.units.count(op, None, || write_estimate(bytes, false));
                    Ok(Err(old))
                }
                // A transaction holds the item right now: someone else is
                // moving it. Only a claim may read that as a lost race.
                Some(e) if e.is_transaction_conflict_exception() && op == StoreOp::Acquire => Ok(Err(None)),
                // An expression met an attribute of the wrong type: for our
                // own heartbeat, an item broken by hand, to be written anew.
                _ if op == StoreOp::Heartbeat && error_code(&err) == Some(VALIDATION_CODE) => Ok(Err(None)),
                _ => Err(self.error(op, &context, &err)),
            },
        }
    }

    /// One `PutItem`, conditional when `condition` is given; `Ok(false)`
    /// when the condition failed.
    async fn put(
        &self,
        op: StoreOp,
        item: Item,
        condition: Option<&str>,
        values: HashMap<String, AttributeValue>,
    ) -> StoreResult<bool> {
        let context = item
            .get(attr::PK)
            .and_then(|k| k.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let bytes = item_bytes(&item);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_names(condition.map(|c| names(&[c])))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                self.units
                    .count(op, Units::reported(out.consumed_capacity(), false), || {
                        write_estimate(bytes, false)
                    });
                Ok(true)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                self.units.count(op, None, || write_estimate(bytes, false));
                Ok(false)
            }
            Err(err) => Err(self.error(op, &format!("put {context}"), &err)),
        }
    }

    async fn get(&self, op: StoreOp, key: AttributeValue, consistent: bool) -> StoreResult<Option<Item>> {
        let context = format!("get {}", key.as_s().map(String::as_str).unwrap_or("?"));
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, key)
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.error(op, &context, &e))?;
        self.units
            .count(op, Units::reported(out.consumed_capacity(), true), || {
                read_estimate(out.item().map_or(0, item_bytes), consistency(consistent))
            });
        Ok(out.item().cloned())
    }

    /// The watched node's item, as `watch` reports it.
    async fn watch_node(&self, node: &NodeId) -> StoreResult<Watched> {
        let key = format!("{NODE_PREFIX}{node}");
        Ok(match self.get(StoreOp::Watch, node_key(node), false).await? {
            None => Watched::Missing,
            Some(item) => match node_record(&item) {
                Ok(record) => Watched::Record(record),
                Err(reason) => Watched::Unreadable(Skipped {
                    key,
                    reason,
                    node: Some(node.clone()),
                    shard: None,
                }),
            },
        })
    }

    pub(super) fn values(
        pairs: impl IntoIterator<Item = (&'static str, AttributeValue)>,
    ) -> HashMap<String, AttributeValue> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The epoch, when a shard item returned by a failed claim shows that
    /// claim's own result: owner `me` at incarnation `inc`, at the epoch the
    /// claim sets. An earlier attempt landed.
    fn shows_own_claim(item: &Option<Item>, req: &AcquireRequest, epoch: Epoch) -> Option<Epoch> {
        let record = shard_record(item.as_ref()?).ok()?;
        let ours = record.owner.as_ref() == Some(&req.me) && record.owner_inc == Some(req.inc);
        (ours && record.epoch == epoch).then_some(record.epoch)
    }
}

fn consistency(consistent: bool) -> Consistency {
    if consistent {
        Consistency::Strong
    } else {
        Consistency::Eventual
    }
}

/// Whether a read of `consistency` is a `ConsistentRead`.
fn is_strong(consistency: Consistency) -> bool {
    matches!(consistency, Consistency::Strong)
}

/// The size of the key attribute `pk` holding `key`.
fn key_bytes(key: &AttributeValue) -> u64 {
    attr::PK.len() as u64 + value_bytes(key)
}

impl LeaseStore for DynamoLeaseStore {
    async fn heartbeat(&self, req: &HeartbeatRequest) -> StoreResult<HeartbeatOutcome> {
        let op = StoreOp::Heartbeat;
        let beat = Beat {
            info: &req.info,
            config: &req.config,
            inc: req.inc,
            state: req.state,
            epoch_floor: req.epoch_floor,
            register_hb: req.register_hb,
            now: (self.wall_clock)(),
        };
        let item = || node_item(&beat);
        match req.kind {
            BeatKind::Register => {
                self.put(op, item(), None, HashMap::new()).await?;
                Ok(HeartbeatOutcome::Beat(req.register_hb))
            }
            BeatKind::Reregister => {
                let values = Self::values([(":inc", inc_value(req.inc)), (":string", s("S"))]);
                Ok(
                    match self.put(op, item(), Some(expr::REREGISTER_CONDITION), values).await? {
                        true => HeartbeatOutcome::Beat(req.register_hb),
                        false => HeartbeatOutcome::NotMine,
                    },
                )
            }
            BeatKind::Renew => {
                let mut values = Self::values(node_values(&beat));
                values.extend(Self::values([(":zero", n(0)), (":one", n(1))]));
                let result = self
                    .update(
                        op,
                        node_key(&req.info.id),
                        expr::HEARTBEAT_UPDATE,
                        Some(expr::HEARTBEAT_CONDITION),
                        values,
                        true,
                    )
                    .await?;
                match result {
                    Ok(new) => get_n(&new, attr::HB)
                        .map(HeartbeatOutcome::Beat)
                        .map_err(|e| Self::corrupt(op, format!("node#{}: {e}", req.info.id))),
                    // Another process's incarnation is there: it holds the
                    // id. Ours, evicted by peers: we start over. No item,
                    // or one we cannot read: ours to write anew.
                    Err(Some(old)) if node_record(&old).is_ok_and(|r| r.inc != req.inc) => {
                        Ok(HeartbeatOutcome::NotMine)
                    }
                    Err(Some(old)) if node_record(&old).is_ok_and(|r| r.evicted_by.is_some()) => {
                        Ok(HeartbeatOutcome::Evicted)
                    }
                    Err(_) => Ok(HeartbeatOutcome::Missing),
                }
            }
        }
    }

    async fn read_nodes(&self) -> StoreResult<Scan<NodeRecord>> {
        let items = self
            .scan(StoreOp::ReadNodes, NODE_PREFIX, self.consistent_node_reads)
            .await?;
        Ok(decode_all(&items, node_record))
    }

    async fn read_shards(&self) -> StoreResult<Scan<ShardRecord>> {
        // Consistent: a read that shows us as owner confirms the lease.
        let items = self.scan(StoreOp::ReadShards, SHARD_PREFIX, true).await?;
        let mut scan = decode_all(&items, shard_record);
        // The fake returns shards in id order; a scan returns hash order.
        scan.records.sort_by_key(|s| s.id);
        Ok(scan)
    }

    async fn read_shard(&self, shard: ShardId) -> StoreResult<Option<ShardRecord>> {
        let op = StoreOp::ReadShard;
        self.get(op, shard_key(shard), true)
            .await?
            .map(|item| shard_record(&item).map_err(|e| Self::corrupt(op, format!("shard#{shard}: {e}"))))
            .transpose()
    }

    async fn publish_layout(&self, layout: &ShardLayout) -> StoreResult<()> {
        // Already there is as good: a fingerprint names one layout.
        self.put(
            StoreOp::PublishLayout,
            layout_item(layout),
            Some(expr::PUT_IF_ABSENT),
            HashMap::new(),
        )
        .await
        .map(|_| ())
    }

    async fn read_layout(&self, id: &LayoutId) -> StoreResult<Option<ShardLayout>> {
        let op = StoreOp::ReadLayout;
        self.get(op, layout_key(id), false)
            .await?
            .map(|item| layout_from_item(&item).map_err(|e| Self::corrupt(op, format!("layout#{id}: {e}"))))
            .transpose()
    }

    async fn acquire(&self, req: &AcquireRequest) -> StoreResult<AcquireOutcome> {
        let op = StoreOp::Acquire;
        let (next_epoch, update, condition, values) = match &req.expect {
            Expect::GoneOwner { owner, epoch, check } => return self.take_over(req, owner, *epoch, *check).await,
            Expect::Free { next_epoch } => (
                *next_epoch,
                expr::CLAIM_UPDATE,
                expr::CLAIM_CONDITION,
                Self::values([
                    (":me", s(req.me.as_str())),
                    (":inc", inc_value(req.inc)),
                    (":next", n(*next_epoch)),
                    (":zero", n(0)),
                    (":now", n((self.wall_clock)())),
                ]),
            ),
            Expect::Held { epoch } => (
                epoch + 1,
                expr::RECLAIM_UPDATE,
                expr::RECLAIM_CONDITION,
                Self::values([
                    (":me", s(req.me.as_str())),
                    (":inc", inc_value(req.inc)),
                    (":epoch", n(*epoch)),
                    (":next", n(epoch + 1)),
                ]),
            ),
        };
        match self
            .update(op, shard_key(req.shard), update, Some(condition), values, true)
            .await?
        {
            Ok(_) => Ok(AcquireOutcome::Acquired { epoch: next_epoch }),
            Err(old) => Ok(match Self::shows_own_claim(&old, req, next_epoch) {
                Some(epoch) => AcquireOutcome::Acquired { epoch },
                None => AcquireOutcome::LostRace,
            }),
        }
    }

    async fn hand_off(&self, req: &HandoffRequest) -> StoreResult<HandoffOutcome> {
        let op = StoreOp::Handoff;
        let values = Self::values([
            (":to", s(req.to.as_str())),
            (":to_inc", inc_value(req.to_inc)),
            (":me", s(req.me.as_str())),
            (":epoch", n(req.epoch)),
            (":one", n(1)),
            (":zero", n(0)),
            (":now", n((self.wall_clock)())),
        ]);
        match self
            .update(
                op,
                shard_key(req.shard),
                expr::HANDOFF_UPDATE,
                Some(expr::HANDOFF_CONDITION),
                values,
                false,
            )
            .await?
        {
            // The condition pinned the epoch, so the new one is known.
            Ok(_) => Ok(HandoffOutcome::Done { epoch: req.epoch + 1 }),
            Err(_) => Ok(HandoffOutcome::NotOwner),
        }
    }

    async fn mark_dead(&self, req: &MarkDeadRequest) -> StoreResult<MarkDeadOutcome> {
        let op = StoreOp::MarkDead;
        let values = Self::values([
            (":dead", s(NodeState::Dead.as_str())),
            (":expires", n((self.wall_clock)() + DEAD_NODE_RETENTION_SECS)),
            (":hb", n(req.observed_hb)),
            (":inc", inc_value(req.inc)),
        ]);
        match self
            .update(
                op,
                node_key(&req.node),
                expr::MARK_DEAD_UPDATE,
                Some(expr::MARK_DEAD_CONDITION),
                values,
                false,
            )
            .await?
        {
            Ok(_) => Ok(MarkDeadOutcome::Marked),
            Err(_) => Ok(MarkDeadOutcome::Alive),
        }
    }

    async fn evict(&self, req: &EvictRequest) -> StoreResult<EvictOutcome> {
        let op = StoreOp::Evict;
        let values = Self::values([(":by", s(req.by.as_str())), (":inc", inc_value(req.inc))]);
        let result = self
            .update(
                op,
                node_key(&req.node),
                expr::EVICT_UPDATE,
                Some(expr::EVICT_CONDITION),
                values,
                false,
            )
            .await?;
        match result {
            Ok(new) => get_n(&new, attr::EVICTED_HB)
                .map(|hb| EvictOutcome::Evicted { hb })
                .map_err(|e| Self::corrupt(op, format!("node#{}: {e}", req.node))),
            Err(_) => Ok(EvictOutcome::NotThere),
        }
    }

    async fn watch(&self, req: &WatchRequest) -> StoreResult<Watch> {
        let op = StoreOp::Watch;
        // Concurrent: a watch is two round trips' worth of latency
        // otherwise, on every watch interval of every cold node.
        let watched = async {
            match &req.node {
                Some(node) => self.watch_node(node).await.map(Some),
                None => Ok(None),
            }
        };
        let (fleet, node) = futures::join!(self.get(op, fleet_key(), is_strong(units::WATCH_GET)), watched);
        let version = fleet?
            .map(|item| fleet_version(&item).map_err(|e| Self::corrupt(op, format!("{FLEET_KEY}: {e}"))))
            .transpose()?;
        Ok(Watch { version, node: node? })
    }

    async fn announce_change(&self) -> StoreResult<u64> {
        let op = StoreOp::AnnounceChange;
        let context = format!("announce a change (add 1 to {FLEET_KEY}.{})", attr::VERSION);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, fleet_key())
            .update_expression(expr::ANNOUNCE_UPDATE)
            .set_expression_attribute_names(Some(names(&[expr::ANNOUNCE_UPDATE])))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.error(op, &context, &e))?;
        let version = out
            .attributes()
            .ok_or_else(|| "no attributes returned".to_string())
            .and_then(fleet_version)
            .map_err(|e| Self::corrupt(op, format!("{FLEET_KEY}: {e}")));
        // Billed whether or not the answer reads: the write happened.
        self.units
            .count(op, Units::reported(out.consumed_capacity(), false), || {
                let bytes = version.as_ref().map_or(0, |v| units::fleet_item_bytes(*v));
                write_estimate(bytes, false)
            });
        version
    }

    async fn retire(&self, req: &RetireRequest) -> StoreResult<RetireOutcome> {
        let op = StoreOp::Retire;
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::PK, shard_key(req.shard))
            .condition_expression(expr::RETIRE_CONDITION)
            .set_expression_attribute_names(Some(names(&[expr::RETIRE_CONDITION])))
            .expression_attribute_values(":epoch", n(req.epoch))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        // A shard item is under 1 KB: one unit, deleted or not.
        let estimate = || write_estimate(0, false);
        match result {
            Ok(out) => {
                self.units
                    .count(op, Units::reported(out.consumed_capacity(), false), estimate);
                Ok(RetireOutcome::Retired)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                self.units.count(op, None, estimate);
                Ok(RetireOutcome::Changed)
            }
            Err(err) => Err(self.error(op, &format!("delete shard#{}", req.shard), &err)),
        }
    }
}
