//! [`DynamoLeaseStore`]: the core's `LeaseStore` over DynamoDB, with the
//! table and item format of DESIGN.md (see `dynamo_items`).
//!
//! Every write is one conditional `UpdateItem`, except the takeover of an
//! expired node's shard, which is a `TransactWriteItems` of a
//! `ConditionCheck` on the node's heartbeat and the shard update. A failed
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

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use vipfleet_core::store::{
    AcquireOutcome, AcquireRequest, Expect, HandoffOutcome, HandoffRequest, HeartbeatOutcome, HeartbeatRequest,
    LeaseStore, MarkDeadOutcome, MarkDeadRequest, StoreError, StoreErrorKind, StoreOp, StoreResult,
};
use vipfleet_core::{Epoch, NodeId, NodeRecord, NodeState, ShardId, ShardRecord};

use super::dynamo_items::{
    attr, expr, get_n, inc_value, n, names, node_key, node_record, s, shard_key, shard_record, vips_value, Item,
    NODE_PREFIX, SHARD_PREFIX,
};
use super::{classify, error_detail, ErrorClass};

pub use super::dynamo_table::{init_table, Billing, InitTableError, TableInit};

/// How long DynamoDB keeps a dead node's item before TTL removes it: long
/// enough for the dashboard and post-mortems to still show it.
const DEAD_NODE_RETENTION_SECS: u64 = 24 * 60 * 60;

/// The order of the items in the takeover transaction; cancellation reasons
/// come back in the same order.
const TAKEOVER_NODE_ITEM: usize = 0;
const TAKEOVER_SHARD_ITEM: usize = 1;

/// The lease table. Cheap to clone (the SDK client is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
    /// Node reads are eventually consistent by default: half the cost, and a
    /// stale heartbeat only delays an observer; every takeover is fenced by
    /// a condition on the heartbeat it observed.
    consistent_node_reads: bool,
    /// Wall clock in unix seconds, only for the display and TTL attributes.
    wall_clock: fn() -> u64,
}

fn system_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl DynamoLeaseStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            consistent_node_reads: false,
            wall_clock: system_unix_secs,
        }
    }

    /// Strongly consistent node reads (twice the read cost).
    pub fn with_consistent_node_reads(mut self, consistent: bool) -> Self {
        self.consistent_node_reads = consistent;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn error<E>(&self, op: StoreOp, context: &str, err: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = match classify(err) {
            ErrorClass::Throttled => StoreErrorKind::Throttled,
            ErrorClass::Unavailable => StoreErrorKind::Unavailable,
            ErrorClass::Other => StoreErrorKind::Other,
        };
        StoreError::new(
            op,
            kind,
            error_detail(&format!("{context} in table {}", self.table), err),
        )
    }

    /// All items whose key starts with `prefix`. Cost: a Scan reads (and
    /// bills) the whole table whatever the filter keeps, nodes and shards
    /// alike: one read unit per 4 KB of items, half that when eventually
    /// consistent. 10 nodes (~200 B each) and 100 shards (~100 B) are 12 KB:
    /// 3 units a consistent scan, 1.5 an eventual one, per agent per scan.
    /// Reading shards therefore costs as much as reading nodes; the caller
    /// should do it less often (DESIGN.md, cost model).
    async fn scan(&self, op: StoreOp, prefix: &str, consistent: bool) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(expr::SCAN_FILTER)
                .set_expression_attribute_names(Some(names(&[expr::SCAN_FILTER])))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error(op, &format!("scan for {prefix}*"), &e))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    fn corrupt(op: StoreOp, detail: String) -> StoreError {
        StoreError::new(op, StoreErrorKind::Corrupt, detail)
    }

    /// One conditional `UpdateItem`. `Ok(Err(old))`: the condition failed,
    /// with the item as it was (when asked for and present).
    async fn update(
        &self,
        op: StoreOp,
        key: AttributeValue,
        update: &str,
        condition: Option<&str>,
        values: HashMap<String, AttributeValue>,
        return_old_on_failure: bool,
    ) -> StoreResult<Result<Item, Option<Item>>> {
        let mut expressions = vec![update];
        expressions.extend(condition);
        let context = match &key {
            AttributeValue::S(k) => format!("update {k}"),
            _ => "update".to_string(),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, key)
            .update_expression(update)
            .set_condition_expression(condition.map(str::to_string))
            .set_expression_attribute_names(Some(names(&expressions)))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::UpdatedNew)
            .set_return_values_on_condition_check_failure(
                return_old_on_failure.then_some(ReturnValuesOnConditionCheckFailure::AllOld),
            )
            .send()
            .await;
        match result {
            Ok(out) => Ok(Ok(out.attributes().cloned().unwrap_or_default())),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(e)) => Ok(Err(e.item().cloned())),
                // A transaction holds the item right now: someone else is
                // moving it. Only a claim may read that as a lost race.
                Some(UpdateItemError::TransactionConflictException(_)) if op == StoreOp::Acquire => Ok(Err(None)),
                _ => Err(self.error(op, &context, &err)),
            },
        }
    }

    fn values(pairs: impl IntoIterator<Item = (&'static str, AttributeValue)>) -> HashMap<String, AttributeValue> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The epoch, when a shard item returned by a failed claim shows that
    /// claim's own result: owner `me` at incarnation `inc`, and (for a
    /// takeover at `from_epoch`) one epoch on. An earlier attempt landed.
    fn shows_own_claim(item: &Option<Item>, req: &AcquireRequest, from_epoch: Option<Epoch>) -> Option<Epoch> {
        let record = shard_record(item.as_ref()?).ok()?;
        let ours = record.owner.as_ref() == Some(&req.me) && record.owner_inc == Some(req.inc);
        let epoch_ok = from_epoch.is_none_or(|e| record.epoch == e + 1);
        (ours && epoch_ok).then_some(record.epoch)
    }

    /// The transaction of DESIGN.md step 3: a `ConditionCheck` on the old
    /// owner's node item (`node_check`: expression, its one value's name and
    /// value) beside the conditional update of the shard.
    async fn take_over(
        &self,
        req: &AcquireRequest,
        prev: &NodeId,
        epoch: Epoch,
        node_check: (&'static str, &'static str, AttributeValue),
    ) -> StoreResult<AcquireOutcome> {
        let (node_condition, value_name, value) = node_check;
        let op = StoreOp::Acquire;
        let build_error = |e: aws_smithy_types::error::operation::BuildError| {
            StoreError::new(
                op,
                StoreErrorKind::Other,
                format!("building the takeover transaction: {e}"),
            )
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(attr::PK, node_key(prev))
            .condition_expression(node_condition)
            .set_expression_attribute_names(Some(names(&[node_condition])))
            .expression_attribute_values(value_name, value.clone())
            .build()
            .map_err(build_error)?;
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, shard_key(req.shard))
            .update_expression(expr::TAKEOVER_UPDATE)
            .condition_expression(expr::TAKEOVER_CONDITION)
            .set_expression_attribute_names(Some(names(&[expr::TAKEOVER_UPDATE, expr::TAKEOVER_CONDITION])))
            .set_expression_attribute_values(Some(self.takeover_values(req, prev, epoch)))
            .build()
            .map_err(build_error)?;
        // In the order of TAKEOVER_NODE_ITEM, TAKEOVER_SHARD_ITEM.
        let items = vec![
            TransactWriteItem::builder().condition_check(check).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(AcquireOutcome::Acquired { epoch: epoch + 1 }),
            Err(err) => err,
        };
        let context = format!(
            "take over shard#{} from {prev} ({node_condition} with {value:?}, epoch {epoch})",
            req.shard
        );
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            if let Some(outcome) = takeover_verdict(&codes) {
                return outcome.map_err(|kind| StoreError::new(op, kind, error_detail(&context, &err)));
            }
        }
        Err(self.error(op, &context, &err))
    }

    fn takeover_values(&self, req: &AcquireRequest, prev: &NodeId, epoch: Epoch) -> HashMap<String, AttributeValue> {
        Self::values([
            (":me", s(req.me.as_str())),
            (":inc", inc_value(req.inc)),
            (":vips", vips_value(&req.vips)),
            (":one", n(1)),
            (":zero", n(0)),
            (":now", n((self.wall_clock)())),
            (":prev", s(prev.as_str())),
            (":epoch", n(epoch)),
        ])
    }
}

/// The outcome of a cancelled takeover from its per-item reasons, `None`
/// when the reasons say nothing we understand. The shard's reason wins, as
/// in the fake: a shard that moved is a lost race whatever the node did. A
/// `TransactionConflict` is another writer on that item at that moment: on
/// the shard a racing claim, on the node its own heartbeat.
fn takeover_verdict(codes: &[&str]) -> Option<Result<AcquireOutcome, StoreErrorKind>> {
    let code = |i: usize| codes.get(i).copied().unwrap_or("None");
    let (node, shard) = (code(TAKEOVER_NODE_ITEM), code(TAKEOVER_SHARD_ITEM));
    let failed = |c: &str| c == "ConditionalCheckFailed" || c == "TransactionConflict";
    let throttled = |c: &str| c == "ThrottlingError" || c == "ProvisionedThroughputExceeded";
    if throttled(node) || throttled(shard) {
        Some(Err(StoreErrorKind::Throttled))
    } else if failed(shard) {
        Some(Ok(AcquireOutcome::LostRace))
    } else if failed(node) {
        Some(Ok(AcquireOutcome::OwnerAlive))
    } else {
        None
    }
}

impl LeaseStore for DynamoLeaseStore {
    async fn heartbeat(&self, req: &HeartbeatRequest) -> StoreResult<HeartbeatOutcome> {
        let op = StoreOp::Heartbeat;
        let condition = (!req.register).then_some(expr::HEARTBEAT_CONDITION);
        let info = &req.info;
        let values = Self::values([
            (":zero", n(0)),
            (":one", n(1)),
            (":inc", inc_value(req.inc)),
            (":state", s(req.state.as_str())),
            (":eni", s(info.eni.to_string())),
            (":az", s(info.az.as_str())),
            (":addr", s(info.addr.as_str())),
            (":weight", n(u64::from(info.weight))),
            (":version", s(info.version.as_str())),
            (":now", n((self.wall_clock)())),
        ]);
        match self
            .update(op, node_key(&info.id), expr::HEARTBEAT_UPDATE, condition, values, false)
            .await?
        {
            Ok(new) => get_n(&new, attr::HB)
                .map(HeartbeatOutcome::Beat)
                .map_err(|e| Self::corrupt(op, format!("node#{}: {e}", info.id))),
            Err(_) => Ok(HeartbeatOutcome::NotMine),
        }
    }

    async fn read_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let op = StoreOp::ReadNodes;
        let items = self.scan(op, NODE_PREFIX, self.consistent_node_reads).await?;
        items
            .iter()
            .map(|item| node_record(item).map_err(|e| Self::corrupt(op, e)))
            .collect()
    }

    async fn read_shards(&self) -> StoreResult<Vec<ShardRecord>> {
        let op = StoreOp::ReadShards;
        // Consistent: a read that shows us as owner confirms the lease.
        let items = self.scan(op, SHARD_PREFIX, true).await?;
        let mut shards = items
            .iter()
            .map(|item| shard_record(item).map_err(|e| Self::corrupt(op, e)))
            .collect::<StoreResult<Vec<_>>>()?;
        // The fake returns shards in id order; a scan returns hash order.
        shards.sort_by_key(|s| s.id);
        Ok(shards)
    }

    async fn read_shard(&self, shard: ShardId) -> StoreResult<Option<ShardRecord>> {
        let op = StoreOp::ReadShard;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, shard_key(shard))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(op, &format!("get shard#{shard}"), &e))?;
        out.item()
            .map(|item| shard_record(item).map_err(|e| Self::corrupt(op, e)))
            .transpose()
    }

    async fn acquire(&self, req: &AcquireRequest) -> StoreResult<AcquireOutcome> {
        let op = StoreOp::Acquire;
        let (update, condition, values, from_epoch) = match &req.expect {
            Expect::ExpiredOwner {
                owner,
                epoch,
                observed_hb,
            } => {
                let unchanged = (expr::TAKEOVER_NODE_CONDITION, ":hb", n(*observed_hb));
                return self.take_over(req, owner, *epoch, unchanged).await;
            }
            Expect::Free => (
                expr::CLAIM_UPDATE,
                expr::CLAIM_CONDITION,
                Self::values([
                    (":me", s(req.me.as_str())),
                    (":inc", inc_value(req.inc)),
                    (":vips", vips_value(&req.vips)),
                    (":one", n(1)),
                    (":zero", n(0)),
                    (":now", n((self.wall_clock)())),
                ]),
                None,
            ),
            Expect::DeadOwner { owner, epoch } => {
                let dead = (expr::DEAD_NODE_CONDITION, ":dead", s(NodeState::Dead.as_str()));
                return self.take_over(req, owner, *epoch, dead).await;
            }
        };
        match self
            .update(op, shard_key(req.shard), update, Some(condition), values, true)
            .await?
        {
            Ok(new) => get_n(&new, attr::EPOCH)
                .map(|epoch| AcquireOutcome::Acquired { epoch })
                .map_err(|e| Self::corrupt(op, format!("shard#{}: {e}", req.shard))),
            Err(old) => Ok(match Self::shows_own_claim(&old, req, from_epoch) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_takeover_reasons_map_shard_first() {
        let verdict = |codes: &[&str]| takeover_verdict(codes);
        assert_eq!(
            verdict(&["ConditionalCheckFailed", "None"]),
            Some(Ok(AcquireOutcome::OwnerAlive))
        );
        assert_eq!(
            verdict(&["None", "ConditionalCheckFailed"]),
            Some(Ok(AcquireOutcome::LostRace))
        );
        assert_eq!(
            verdict(&["ConditionalCheckFailed", "ConditionalCheckFailed"]),
            Some(Ok(AcquireOutcome::LostRace))
        );
        assert_eq!(
            verdict(&["TransactionConflict", "None"]),
            Some(Ok(AcquireOutcome::OwnerAlive))
        );
        assert_eq!(
            verdict(&["None", "ThrottlingError"]),
            Some(Err(StoreErrorKind::Throttled))
        );
        assert_eq!(verdict(&["None", "ValidationError"]), None);
        assert_eq!(verdict(&[]), None);
    }
}
