//! The takeover of a gone owner's shard: one `TransactWriteItems` of a
//! `ConditionCheck` on the owner's node item (still as we observed it, or
//! still missing) and the conditional update of the shard item, and the
//! reading of a cancelled transaction's per-item reasons as an outcome.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, ReturnConsumedCapacity, TransactWriteItem, Update};
use vipfleet_core::liveness::NodeCheck;
use vipfleet_core::store::{AcquireOutcome, AcquireRequest, StoreError, StoreErrorKind, StoreOp, StoreResult};
use vipfleet_core::{Epoch, NodeId};

use super::dynamo::DynamoLeaseStore;
use super::dynamo_items::{attr, expr, inc_value, n, names, node_key, s, shard_key};
use super::dynamo_units::{write_estimate, Units};
use super::error_detail;

/// The order of the items in the takeover transaction; cancellation reasons
/// come back in the same order.
const TAKEOVER_NODE_ITEM: usize = 0;
const TAKEOVER_SHARD_ITEM: usize = 1;

impl DynamoLeaseStore {
    /// A takeover from a gone owner: a `ConditionCheck` on its node item
    /// (still as we saw it, or still missing) beside the conditional update
    /// of the shard.
    pub(super) async fn take_over(
        &self,
        req: &AcquireRequest,
        prev: &NodeId,
        epoch: Epoch,
        check: NodeCheck,
    ) -> StoreResult<AcquireOutcome> {
        let op = StoreOp::Acquire;
        let build_error = |e: aws_smithy_types::error::operation::BuildError| {
            StoreError::new(
                op,
                StoreErrorKind::Other,
                format!("building the takeover transaction: {e}"),
            )
        };
        let node_check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(attr::PK, node_key(prev));
        let node_check = match check {
            NodeCheck::Unchanged { hb, inc } => node_check
                .condition_expression(expr::GONE_UNCHANGED_CONDITION)
                .set_expression_attribute_names(Some(names(&[expr::GONE_UNCHANGED_CONDITION])))
                .expression_attribute_values(":hb", n(hb))
                .expression_attribute_values(":prev_inc", inc_value(inc)),
            NodeCheck::Missing => node_check
                .condition_expression(expr::GONE_MISSING_CONDITION)
                .set_expression_attribute_names(Some(names(&[expr::GONE_MISSING_CONDITION]))),
        }
        .build()
        .map_err(build_error)?;
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, shard_key(req.shard))
            .update_expression(expr::TAKEOVER_UPDATE)
            .condition_expression(expr::TAKEOVER_CONDITION)
            .set_expression_attribute_names(Some(names(&[expr::TAKEOVER_UPDATE, expr::TAKEOVER_CONDITION])))
            .set_expression_attribute_values(Some(Self::values([
                (":me", s(req.me.as_str())),
                (":inc", inc_value(req.inc)),
                (":one", n(1)),
                (":zero", n(0)),
                (":now", n((self.wall_clock)())),
                (":prev", s(prev.as_str())),
                (":epoch", n(epoch)),
            ])))
            .build()
            .map_err(build_error)?;
        // In the order of TAKEOVER_NODE_ITEM, TAKEOVER_SHARD_ITEM.
        let items = vec![
            TransactWriteItem::builder().condition_check(node_check).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        // Both items are lease-table items under 1 KB: twice a unit each.
        let estimate = || {
            let mut units = write_estimate(0, true);
            units.write *= 2.0;
            units
        };
        let err = match result {
            Ok(out) => {
                self.units
                    .count(op, Units::reported(out.consumed_capacity(), false), estimate);
                return Ok(AcquireOutcome::Acquired { epoch: epoch + 1 });
            }
            Err(err) => err,
        };
        let context = format!("take over shard#{} from {prev} ({check:?}, epoch {epoch})", req.shard);
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            if let Some(outcome) = takeover_verdict(&codes) {
                // A cancelled transaction is billed as if it had run.
                if outcome.is_ok() {
                    self.units.count(op, None, estimate);
                }
                return outcome.map_err(|kind| StoreError::new(op, kind, error_detail(&context, &err)));
            }
        }
        Err(self.error(op, &context, &err))
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
