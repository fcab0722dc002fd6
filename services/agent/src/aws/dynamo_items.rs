//! The lease table's item format (DESIGN.md, "Data model"): attribute names,
//! keys, and the conversion between DynamoDB items and the core's records.
//!
//! Kept apart from the calls so the format can be read in one place. Items
//! stay small (about 200 bytes a node, 100 a shard): every scan reads all of
//! them, and DynamoDB bills reads by size.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use vipfleet_core::{EniId, Incarnation, NodeId, NodeInfo, NodeRecord, NodeState, ShardId, ShardRecord, Vip};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Attribute names. Several are DynamoDB reserved words (`owner`, `state`),
/// so expressions always refer to them as `#name` (see [`names`]). Some are
/// only ever written through expression text; a test checks every
/// expression against [`attr::ALL`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod attr {
    pub const PK: &str = "pk";
    pub const HB: &str = "hb";
    pub const INC: &str = "inc";
    pub const STATE: &str = "state";
    pub const ENI: &str = "eni";
    pub const AZ: &str = "az";
    pub const ADDR: &str = "addr";
    pub const WEIGHT: &str = "weight";
    pub const VERSION: &str = "version";
    pub const UPDATED_AT: &str = "updated_at";
    /// The table's TTL attribute: set when a node is marked dead.
    pub const EXPIRES_AT: &str = "expires_at";
    pub const VIPS: &str = "vips";
    pub const OWNER: &str = "owner";
    pub const OWNER_INC: &str = "owner_inc";
    pub const EPOCH: &str = "epoch";
    pub const MOVES: &str = "moves";
    pub const MOVED_AT: &str = "moved_at";

    /// Every attribute of the format, for checking the expressions.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        PK, HB, INC, STATE, ENI, AZ, ADDR, WEIGHT, VERSION, UPDATED_AT, EXPIRES_AT, VIPS, OWNER, OWNER_INC, EPOCH,
        MOVES, MOVED_AT,
    ];
}

/// The update, condition and filter expressions. `#name` stands for
/// attribute `name` (see [`names`]). The epoch arithmetic uses
/// `if_not_exists` even where the condition guarantees the attribute, so no
/// order of evaluation can turn a lost race into a validation error.
pub(crate) mod expr {
    pub const SCAN_FILTER: &str = "begins_with(#pk, :prefix)";
    /// Every beat rewrites the node's facts (one write unit either way) and
    /// clears a TTL left by an observer that took the node for dead.
    pub const HEARTBEAT_UPDATE: &str = "SET #hb = if_not_exists(#hb, :zero) + :one, #inc = :inc, #state = :state, \
         #eni = :eni, #az = :az, #addr = :addr, #weight = :weight, #version = :version, #updated_at = :now \
         REMOVE #expires_at";
    pub const HEARTBEAT_CONDITION: &str = "#inc = :inc";
    /// A free shard has had no owner: `moves` counts changes of owner.
    pub const CLAIM_UPDATE: &str = "SET #owner = :me, #owner_inc = :inc, #vips = :vips, \
         #epoch = if_not_exists(#epoch, :zero) + :one, #moves = if_not_exists(#moves, :zero), #moved_at = :now";
    pub const CLAIM_CONDITION: &str = "attribute_not_exists(#owner)";
    /// The shard update of both kinds of takeover (dead and expired owner).
    pub const TAKEOVER_UPDATE: &str =
        "SET #owner = :me, #owner_inc = :inc, #vips = :vips, #epoch = if_not_exists(#epoch, :zero) + :one, \
         #moves = if_not_exists(#moves, :zero) + :one, #moved_at = :now";
    pub const TAKEOVER_CONDITION: &str = "#owner = :prev AND #epoch = :epoch";
    /// The `ConditionCheck` on the expired owner's node item.
    pub const TAKEOVER_NODE_CONDITION: &str = "#hb = :hb";
    /// Taking a shard of a node marked dead: it must still be marked dead
    /// (a zombie that heartbeated is `active` again), or gone.
    pub const DEAD_NODE_CONDITION: &str = "attribute_not_exists(#pk) OR #state = :dead";
    pub const HANDOFF_UPDATE: &str =
        "SET #owner = :to, #owner_inc = :to_inc, #epoch = if_not_exists(#epoch, :zero) + :one, \
         #moves = if_not_exists(#moves, :zero) + :one, #moved_at = :now";
    pub const HANDOFF_CONDITION: &str = "#owner = :me AND #epoch = :epoch";
    pub const MARK_DEAD_UPDATE: &str = "SET #state = :dead, #expires_at = :expires";
    pub const MARK_DEAD_CONDITION: &str = "#hb = :hb AND #inc = :inc";

    /// All of them, for checking them against the item format.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        SCAN_FILTER,
        HEARTBEAT_UPDATE,
        HEARTBEAT_CONDITION,
        CLAIM_UPDATE,
        CLAIM_CONDITION,
        TAKEOVER_UPDATE,
        TAKEOVER_CONDITION,
        TAKEOVER_NODE_CONDITION,
        DEAD_NODE_CONDITION,
        HANDOFF_UPDATE,
        HANDOFF_CONDITION,
        MARK_DEAD_UPDATE,
        MARK_DEAD_CONDITION,
    ];
}

pub(crate) const NODE_PREFIX: &str = "node#";
pub(crate) const SHARD_PREFIX: &str = "shard#";

pub(crate) fn node_key(node: &NodeId) -> AttributeValue {
    AttributeValue::S(format!("{NODE_PREFIX}{node}"))
}

pub(crate) fn shard_key(shard: ShardId) -> AttributeValue {
    AttributeValue::S(format!("{SHARD_PREFIX}{shard}"))
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Incarnations are stored as the 16 hex digits they display as: readable
/// in the console, and safe from tools that read numbers as doubles.
pub(crate) fn inc_value(inc: Incarnation) -> AttributeValue {
    s(inc.to_string())
}

pub(crate) fn vips_value(vips: &[Vip]) -> AttributeValue {
    AttributeValue::L(vips.iter().map(|v| s(v.to_string())).collect())
}

/// The `ExpressionAttributeNames` for a set of expressions: `#foo` stands
/// for attribute `foo`. Derived from the text because DynamoDB rejects a
/// request that defines a name its expressions do not use.
pub(crate) fn names(expressions: &[&str]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for expression in expressions {
        let mut rest = *expression;
        while let Some(at) = rest.find('#') {
            let tail = &rest[at + 1..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            map.insert(format!("#{}", &tail[..end]), tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    map
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(other) => Err(format!("attribute {name} is not a string: {other:?}")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn get_opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, String> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_s(item, name).map(Some),
    }
}

pub(crate) fn get_n<T: FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| format!("attribute {name} = {v} is out of range")),
        Some(other) => Err(format!("attribute {name} is not a number: {other:?}")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn parse_inc(text: &str) -> Result<Incarnation, String> {
    u64::from_str_radix(text, 16)
        .map(Incarnation)
        .map_err(|_| format!("incarnation {text:?} is not hex"))
}

fn pk(item: &Item) -> String {
    get_s(item, attr::PK).unwrap_or("<no pk>").to_string()
}

/// A node item as the core's record; the error names the item and the
/// attribute, for the `Corrupt` store error.
pub(crate) fn node_record(item: &Item) -> Result<NodeRecord, String> {
    let parse = || -> Result<NodeRecord, String> {
        let id = get_s(item, attr::PK)?
            .strip_prefix(NODE_PREFIX)
            .ok_or("not a node key")?;
        Ok(NodeRecord {
            info: NodeInfo {
                id: NodeId::new(id),
                eni: EniId(get_s(item, attr::ENI)?.to_string()),
                az: get_s(item, attr::AZ)?.to_string(),
                addr: get_s(item, attr::ADDR)?.to_string(),
                weight: get_n(item, attr::WEIGHT)?,
                version: get_s(item, attr::VERSION)?.to_string(),
            },
            hb: get_n(item, attr::HB)?,
            inc: parse_inc(get_s(item, attr::INC)?)?,
            state: NodeState::from_str(get_s(item, attr::STATE)?)?,
        })
    };
    parse().map_err(|e| format!("item {}: {e}", pk(item)))
}

pub(crate) fn shard_record(item: &Item) -> Result<ShardRecord, String> {
    let parse = || -> Result<ShardRecord, String> {
        let id = get_s(item, attr::PK)?
            .strip_prefix(SHARD_PREFIX)
            .ok_or("not a shard key")?;
        let id = ShardId(id.parse().map_err(|_| format!("shard id {id:?} is not a number"))?);
        let vips = match item.get(attr::VIPS) {
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| match v {
                    AttributeValue::S(text) => text.parse::<Vip>().map_err(|e| e.to_string()),
                    other => Err(format!("vips holds a non-string: {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => return Err(format!("vips is not a list: {other:?}")),
            None => return Err("attribute vips is missing".into()),
        };
        Ok(ShardRecord {
            id,
            vips,
            owner: get_opt_s(item, attr::OWNER)?.map(NodeId::new),
            owner_inc: get_opt_s(item, attr::OWNER_INC)?.map(parse_inc).transpose()?,
            epoch: get_n(item, attr::EPOCH)?,
            moves: get_n(item, attr::MOVES)?,
        })
    };
    parse().map_err(|e| format!("item {}: {e}", pk(item)))
}

/// Builds items in the stored format, for tests (mocked responses).
#[cfg(test)]
pub(crate) fn shard_item(record: &ShardRecord) -> Item {
    let mut item = Item::new();
    item.insert(attr::PK.into(), shard_key(record.id));
    item.insert(attr::VIPS.into(), vips_value(&record.vips));
    if let Some(owner) = &record.owner {
        item.insert(attr::OWNER.into(), s(owner.as_str()));
    }
    if let Some(inc) = record.owner_inc {
        item.insert(attr::OWNER_INC.into(), inc_value(inc));
    }
    item.insert(attr::EPOCH.into(), n(record.epoch));
    item.insert(attr::MOVES.into(), n(record.moves));
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_name_only_attributes_of_the_item_format() {
        let used = names(expr::ALL);
        for attribute in used.values() {
            assert!(
                attr::ALL.contains(&attribute.as_str()),
                "{attribute} is not in attr::ALL"
            );
        }
        assert_eq!(
            used.len(),
            attr::ALL.len(),
            "every attribute of the format is written somewhere"
        );
    }

    #[test]
    fn names_cover_exactly_the_placeholders_used() {
        let map = names(&[
            "SET #owner = :me, #epoch = #epoch + :one",
            "attribute_not_exists(#owner)",
        ]);
        let mut keys: Vec<_> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        assert_eq!(keys, ["#epoch=epoch", "#owner=owner"]);
    }

    #[test]
    fn shard_items_round_trip_and_bad_items_name_themselves() {
        let record = ShardRecord {
            id: ShardId(7),
            vips: vec!["10.200.0.1/32".parse().unwrap(), "10.200.1.0/24".parse().unwrap()],
            owner: Some(NodeId::new("i-1")),
            owner_inc: Some(Incarnation(0xdead_beef_0000_0001)),
            epoch: 4,
            moves: 3,
        };
        assert_eq!(shard_record(&shard_item(&record)), Ok(record.clone()));

        let mut bad = shard_item(&record);
        bad.insert(attr::EPOCH.into(), s("four"));
        let err = shard_record(&bad).unwrap_err();
        assert!(err.contains("shard#7") && err.contains("epoch"), "{err}");
    }
}
