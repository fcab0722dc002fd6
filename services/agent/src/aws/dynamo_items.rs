//! The lease table's item format: attribute names, keys, expressions, and
//! the conversion between DynamoDB items and the core's records.
//!
//! | item | key | attributes |
//! |---|---|---|
//! | node | `node#<instance-id>` | `hb`, `inc`, `state`, `eni`, `az`, `addr`, `weight`, `version`, `updated_at`, `expires_at` (TTL, once dead), `epoch_floor`; what it runs: `layout` (fingerprint), `tables`, `ttl_ms`, `hb_ms` |
//! | shard | `shard#<cidr>` | `owner`, `owner_inc`, `epoch`, `moves`, `moved_at` |
//! | layout | `layout#<fingerprint>` | `vips` |
//!
//! Decoding is lenient: it needs only what the protocol needs (a node's
//! `hb`, `inc` and `eni`; a shard's key), takes defaults for the rest, and
//! reads an unknown `state` as "unrecognized". An item that still cannot be
//! used is reported, with its key and why, and skipped: one bad item never
//! fails a whole read.
//!
//! Items stay small (about 250 bytes a node, 100 a shard): reads bill by
//! size, and the layout, which grows with the VIPs, is stored once per
//! fingerprint rather than in every node item.
//!
//! The fuzz target `dynamo_items` (fuzz/) compiles this file on its own, so
//! it uses nothing of the agent: only the core and the DynamoDB types.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use vipfleet_core::store::Skipped;
use vipfleet_core::{
    EniId, Incarnation, LayoutId, NodeConfig, NodeId, NodeInfo, NodeRecord, NodeState, RouteTableId, ShardId,
    ShardLayout, ShardRecord, Vip,
};

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
    pub const LAYOUT: &str = "layout";
    pub const TABLES: &str = "tables";
    pub const TTL_MS: &str = "ttl_ms";
    pub const HB_MS: &str = "hb_ms";
    pub const EPOCH_FLOOR: &str = "epoch_floor";
    pub const UPDATED_AT: &str = "updated_at";
    /// The table's TTL attribute: set when a node is marked dead.
    pub const EXPIRES_AT: &str = "expires_at";
    pub const VIPS: &str = "vips";
    pub const OWNER: &str = "owner";
    pub const OWNER_INC: &str = "owner_inc";
    pub const EPOCH: &str = "epoch";
    pub const MOVES: &str = "moves";
    pub const MOVED_AT: &str = "moved_at";
    /// The UDP port the node answers peer probes on (0: none).
    pub const PEER_PORT: &str = "peer_port";
    /// Set when peers found the incarnation dead: who evicted it...
    pub const EVICTED_BY: &str = "evicted_by";
    /// ...and the counter it stood at (renewals stop from then on).
    pub const EVICTED_HB: &str = "evicted_hb";

    /// Every attribute written through an expression, for checking them.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        PK,
        HB,
        INC,
        STATE,
        ENI,
        AZ,
        ADDR,
        WEIGHT,
        VERSION,
        LAYOUT,
        TABLES,
        TTL_MS,
        HB_MS,
        EPOCH_FLOOR,
        UPDATED_AT,
        EXPIRES_AT,
        OWNER,
        OWNER_INC,
        EPOCH,
        MOVES,
        MOVED_AT,
        PEER_PORT,
        EVICTED_BY,
        EVICTED_HB,
    ];
}

/// The update, condition and filter expressions. `#name` stands for
/// attribute `name` (see [`names`]). The epoch arithmetic uses
/// `if_not_exists` even where the condition guarantees the attribute, so no
/// order of evaluation can turn a lost race into a validation error.
pub(crate) mod expr {
    /// Every beat rewrites the node's facts (one write unit either way) and
    /// clears a TTL left by an observer that took the node for dead.
    pub const HEARTBEAT_UPDATE: &str = "SET #hb = if_not_exists(#hb, :zero) + :one, #inc = :inc, #state = :state, \
         #eni = :eni, #az = :az, #addr = :addr, #weight = :weight, #version = :version, #layout = :layout, \
         #tables = :tables, #ttl_ms = :ttl_ms, #hb_ms = :hb_ms, #peer_port = :peer_port, \
         #epoch_floor = :epoch_floor, #updated_at = :now REMOVE #expires_at";
    /// An evicted incarnation never renews again: its lease runs out.
    pub const HEARTBEAT_CONDITION: &str = "#inc = :inc AND attribute_not_exists(#evicted_by)";
    /// Peers found the incarnation dead; the counter is frozen where it
    /// stood (a second eviction keeps the first's name and counter).
    pub const EVICT_UPDATE: &str = "SET #evicted_by = if_not_exists(#evicted_by, :by), #evicted_hb = #hb";
    pub const EVICT_CONDITION: &str = "#inc = :inc";
    /// Re-registering writes the item again unless another process holds
    /// it: an incarnation that reads as one and is not ours.
    pub const REREGISTER_CONDITION: &str =
        "attribute_not_exists(#pk) OR attribute_not_exists(#inc) OR NOT attribute_type(#inc, :string) OR #inc = :inc";
    /// A free shard has no owner and no epoch at or above the one we set.
    pub const CLAIM_UPDATE: &str = "SET #owner = :me, #owner_inc = :inc, #epoch = :next, \
         #moves = if_not_exists(#moves, :zero), #moved_at = :now";
    pub const CLAIM_CONDITION: &str =
        "attribute_not_exists(#owner) AND (attribute_not_exists(#epoch) OR #epoch < :next)";
    /// A shard we hold, claimed again under our incarnation: the epoch moves,
    /// the owner does not.
    pub const RECLAIM_UPDATE: &str = "SET #owner_inc = :inc, #epoch = :next";
    pub const RECLAIM_CONDITION: &str = "#owner = :me AND #epoch = :epoch";
    /// The shard update of a takeover from a gone owner.
    pub const TAKEOVER_UPDATE: &str =
        "SET #owner = :me, #owner_inc = :inc, #epoch = if_not_exists(#epoch, :zero) + :one, \
         #moves = if_not_exists(#moves, :zero) + :one, #moved_at = :now";
    pub const TAKEOVER_CONDITION: &str = "#owner = :prev AND #epoch = :epoch";
    /// The `ConditionCheck` on the gone owner's node item: as we saw it...
    pub const GONE_UNCHANGED_CONDITION: &str = "#hb = :hb AND #inc = :prev_inc";
    /// ...or still missing.
    pub const GONE_MISSING_CONDITION: &str = "attribute_not_exists(#pk)";
    pub const HANDOFF_UPDATE: &str =
        "SET #owner = :to, #owner_inc = :to_inc, #epoch = if_not_exists(#epoch, :zero) + :one, \
         #moves = if_not_exists(#moves, :zero) + :one, #moved_at = :now";
    pub const HANDOFF_CONDITION: &str = "#owner = :me AND #epoch = :epoch";
    pub const MARK_DEAD_UPDATE: &str = "SET #state = :dead, #expires_at = :expires";
    pub const MARK_DEAD_CONDITION: &str = "#hb = :hb AND #inc = :inc";
    pub const RETIRE_CONDITION: &str = "attribute_not_exists(#pk) OR #epoch = :epoch";
    pub const PUT_IF_ABSENT: &str = "attribute_not_exists(#pk)";
    /// The fleet's change counter, one up; `ADD` creates the item (and the
    /// attribute at 0) when missing, so the first announcement needs no
    /// condition and no read.
    pub const ANNOUNCE_UPDATE: &str = "ADD #version :one";

    /// All of them, for checking them against the item format.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        HEARTBEAT_UPDATE,
        HEARTBEAT_CONDITION,
        REREGISTER_CONDITION,
        CLAIM_UPDATE,
        CLAIM_CONDITION,
        RECLAIM_UPDATE,
        RECLAIM_CONDITION,
        TAKEOVER_UPDATE,
        TAKEOVER_CONDITION,
        GONE_UNCHANGED_CONDITION,
        GONE_MISSING_CONDITION,
        HANDOFF_UPDATE,
        HANDOFF_CONDITION,
        MARK_DEAD_UPDATE,
        MARK_DEAD_CONDITION,
        EVICT_UPDATE,
        EVICT_CONDITION,
        RETIRE_CONDITION,
        PUT_IF_ABSENT,
        ANNOUNCE_UPDATE,
    ];
}

pub(crate) const NODE_PREFIX: &str = "node#";
pub(crate) const SHARD_PREFIX: &str = "shard#";
pub(crate) const LAYOUT_PREFIX: &str = "layout#";
/// The key of the fleet item, which holds the change counter in
/// [`attr::VERSION`] (the attribute name a node item uses for the agent's
/// version: no clash, the items never share a key).
pub(crate) const FLEET_KEY: &str = "fleet";

pub(crate) fn node_key(node: &NodeId) -> AttributeValue {
    AttributeValue::S(format!("{NODE_PREFIX}{node}"))
}

pub(crate) fn shard_key(shard: ShardId) -> AttributeValue {
    AttributeValue::S(format!("{SHARD_PREFIX}{shard}"))
}

pub(crate) fn fleet_key() -> AttributeValue {
    AttributeValue::S(FLEET_KEY.to_string())
}

/// The change counter of the fleet item.
pub(crate) fn fleet_version(item: &Item) -> Result<u64, String> {
    get_n(item, attr::VERSION)
}

pub(crate) fn layout_key(id: &LayoutId) -> AttributeValue {
    AttributeValue::S(format!("{LAYOUT_PREFIX}{id}"))
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn ms(d: Duration) -> AttributeValue {
    n(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Incarnations are stored as the 16 hex digits they display as: readable
/// in the console, and safe from tools that read numbers as doubles.
pub(crate) fn inc_value(inc: Incarnation) -> AttributeValue {
    s(inc.to_string())
}

fn list(values: impl IntoIterator<Item = String>) -> AttributeValue {
    AttributeValue::L(values.into_iter().map(s).collect())
}

/// What a heartbeat writes into its node item.
pub(crate) struct Beat<'a> {
    pub info: &'a NodeInfo,
    pub config: &'a NodeConfig,
    pub inc: Incarnation,
    pub state: NodeState,
    pub epoch_floor: u64,
    /// The counter a registration's put writes.
    pub register_hb: u64,
    pub now: u64,
}

/// The attributes of a node item (placeholders of the heartbeat's update),
/// as written by a registration (a put) or a heartbeat (an update of the
/// same names).
pub(crate) fn node_values(beat: &Beat<'_>) -> Vec<(&'static str, AttributeValue)> {
    let Beat {
        info,
        config,
        inc,
        state,
        epoch_floor,
        now,
        ..
    } = beat;
    vec![
        (":inc", inc_value(*inc)),
        (":state", s(state.as_str())),
        (":eni", s(info.eni.to_string())),
        (":az", s(info.az.as_str())),
        (":addr", s(info.addr.as_str())),
        (":weight", n(u64::from(info.weight))),
        (":version", s(info.version.as_str())),
        (":layout", s(config.layout.to_string())),
        (":tables", list(config.route_tables.iter().map(ToString::to_string))),
        (":ttl_ms", ms(config.lease_ttl)),
        (":hb_ms", ms(config.heartbeat_interval)),
        (":peer_port", n(u64::from(config.peer_port.unwrap_or(0)))),
        (":epoch_floor", n(*epoch_floor)),
        (":now", n(*now)),
    ]
}

/// A whole node item, for a registration's put.
pub(crate) fn node_item(beat: &Beat<'_>) -> Item {
    let mut item: Item = node_values(beat)
        .into_iter()
        .map(|(placeholder, value)| {
            let name = match placeholder {
                ":now" => attr::UPDATED_AT,
                other => other.trim_start_matches(':'),
            };
            (name.to_string(), value)
        })
        .collect();
    item.insert(attr::PK.into(), node_key(&beat.info.id));
    item.insert(attr::HB.into(), n(beat.register_hb));
    item
}

/// A layout item: its VIPs, in order.
pub(crate) fn layout_item(layout: &ShardLayout) -> Item {
    Item::from([
        (attr::PK.to_string(), layout_key(&layout.id())),
        (attr::VIPS.to_string(), list(layout.vips().map(|v| v.to_string()))),
    ])
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

/// A string attribute, or `default` when it is missing or not a string.
fn s_or<'a>(item: &'a Item, name: &str, default: &'a str) -> &'a str {
    get_s(item, name).unwrap_or(default)
}

pub(crate) fn get_n<T: FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| format!("attribute {name} = {v} is out of range")),
        Some(other) => Err(format!("attribute {name} is not a number: {other:?}")),
        None => Err(format!("attribute {name} is missing")),
    }
}

/// A number attribute, or `default` when it is missing; an error when it
/// is there but not a number.
fn n_or<T: FromStr>(item: &Item, name: &str, default: T) -> Result<T, String> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(default),
        Some(_) => get_n(item, name),
    }
}

fn parse_inc(text: &str) -> Result<Incarnation, String> {
    u64::from_str_radix(text, 16)
        .map(Incarnation)
        .map_err(|_| format!("incarnation {text:?} is not hex"))
}

fn string_list(item: &Item, name: &str) -> Result<Vec<String>, String> {
    match item.get(name) {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::S(text) => Ok(text.clone()),
                other => Err(format!("{name} holds a non-string: {other:?}")),
            })
            .collect(),
        Some(other) => Err(format!("{name} is not a list: {other:?}")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn pk(item: &Item) -> String {
    get_s(item, attr::PK).unwrap_or("<no pk>").to_string()
}

/// What a node item says it runs; `None` if it says nothing usable.
fn node_config(item: &Item) -> Option<NodeConfig> {
    let tables = string_list(item, attr::TABLES).ok()?;
    Some(NodeConfig {
        layout: LayoutId(get_s(item, attr::LAYOUT).ok()?.to_string()),
        route_tables: tables.into_iter().map(RouteTableId).collect(),
        lease_ttl: Duration::from_millis(get_n(item, attr::TTL_MS).ok()?),
        heartbeat_interval: Duration::from_millis(get_n(item, attr::HB_MS).ok()?),
        // Absent (an older agent) or 0: the node does not answer probes.
        peer_port: n_or(item, attr::PEER_PORT, 0u16).ok().filter(|p| *p != 0),
    })
}

/// A node item as the core's record. Needs `hb`, `inc` and `eni`; the error
/// says what is wrong, for the skipped-item report.
pub(crate) fn node_record(item: &Item) -> Result<NodeRecord, String> {
    let id = get_s(item, attr::PK)?
        .strip_prefix(NODE_PREFIX)
        .ok_or("not a node key")?;
    let eni = get_s(item, attr::ENI)?;
    if eni.is_empty() {
        return Err("attribute eni is empty".into());
    }
    Ok(NodeRecord {
        info: Arc::new(NodeInfo {
            id: NodeId::new(id),
            eni: EniId(eni.to_string()),
            az: s_or(item, attr::AZ, "").to_string(),
            addr: s_or(item, attr::ADDR, "").to_string(),
            weight: n_or(item, attr::WEIGHT, 1)?,
            version: s_or(item, attr::VERSION, "").to_string(),
        }),
        hb: get_n(item, attr::HB)?,
        inc: parse_inc(get_s(item, attr::INC)?)?,
        state: NodeState::parse_lenient(s_or(item, attr::STATE, "")),
        config: node_config(item).map(Arc::new),
        epoch_floor: n_or(item, attr::EPOCH_FLOOR, 0).unwrap_or(0),
        evicted_by: get_s(item, attr::EVICTED_BY).ok().map(NodeId::new),
    })
}

/// A shard item as the core's record. Needs only its key; an item with no
/// epoch is at epoch 0, one with no owner is free.
pub(crate) fn shard_record(item: &Item) -> Result<ShardRecord, String> {
    let key = get_s(item, attr::PK)?
        .strip_prefix(SHARD_PREFIX)
        .ok_or("not a shard key")?;
    let id: ShardId = key
        .parse()
        .map_err(|e| format!("shard key {key:?} is not a CIDR block: {e}"))?;
    Ok(ShardRecord {
        id,
        owner: match item.get(attr::OWNER) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(_) => Some(NodeId::new(get_s(item, attr::OWNER)?)),
        },
        // Only for display: a bad one is no reason to skip the shard.
        owner_inc: get_s(item, attr::OWNER_INC).ok().and_then(|t| parse_inc(t).ok()),
        epoch: n_or(item, attr::EPOCH, 0)?,
        moves: n_or(item, attr::MOVES, 0).unwrap_or(0),
    })
}

/// A layout item's VIPs, checked as a configuration would be.
pub(crate) fn layout_from_item(item: &Item) -> Result<ShardLayout, String> {
    let vips = string_list(item, attr::VIPS)?
        .iter()
        .map(|v| v.parse::<Vip>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    ShardLayout::from_vips(&vips).map_err(|e| e.to_string())
}

/// Decodes every item of a scan with `decode`, skipping (and reporting)
/// those it refuses.
pub(crate) fn decode_all<T>(
    items: &[Item],
    decode: impl Fn(&Item) -> Result<T, String>,
) -> vipfleet_core::store::Scan<T> {
    let mut scan = vipfleet_core::store::Scan::clean(Vec::with_capacity(items.len()));
    for item in items {
        match decode(item) {
            Ok(record) => scan.records.push(record),
            Err(reason) => {
                let key = pk(item);
                scan.skipped.push(Skipped {
                    node: key.strip_prefix(NODE_PREFIX).map(NodeId::new),
                    shard: key.strip_prefix(SHARD_PREFIX).and_then(|s| s.parse().ok()),
                    key,
                    reason,
                })
            }
        }
    }
    scan
}

/// Builds items in the stored format, for tests (mocked responses).
#[cfg(test)]
pub(crate) fn shard_item(record: &ShardRecord) -> Item {
    let mut item = Item::new();
    item.insert(attr::PK.into(), shard_key(record.id));
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

    fn info() -> NodeInfo {
        NodeInfo {
            id: NodeId::new("i-1"),
            eni: EniId("eni-1".into()),
            az: "az-a".into(),
            addr: "10.0.0.1".into(),
            weight: 2,
            version: "0.2.0".into(),
        }
    }

    fn config() -> NodeConfig {
        NodeConfig {
            layout: LayoutId("00112233aabbccdd".into()),
            route_tables: vec![RouteTableId("rtb-1".into()), RouteTableId("rtb-2".into())],
            lease_ttl: Duration::from_millis(3000),
            heartbeat_interval: Duration::from_millis(1000),
            peer_port: None,
        }
    }

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

    fn beat<'a>(info: &'a NodeInfo, config: &'a NodeConfig, inc: u64, state: NodeState, now: u64) -> Beat<'a> {
        Beat {
            info,
            config,
            inc: Incarnation(inc),
            state,
            epoch_floor: 9,
            register_hb: 1,
            now,
        }
    }

    #[test]
    fn node_items_round_trip_and_announce_the_configuration() {
        let (info, config) = (info(), config());
        let item = node_item(&beat(&info, &config, 0xab, NodeState::Starting, 1700));
        let record = node_record(&item).unwrap();
        assert_eq!(*record.info, info);
        assert_eq!(
            (record.hb, record.inc, record.state),
            (1, Incarnation(0xab), NodeState::Starting)
        );
        assert_eq!(record.config.as_deref(), Some(&config));
        assert_eq!(record.epoch_floor, 9);
        assert_eq!(
            item.get(attr::UPDATED_AT),
            Some(&n(1700)),
            "updated_at, not `now`, in the item"
        );
        // Every attribute of the put is one the heartbeat update writes.
        let updated: Vec<String> = names(&[expr::HEARTBEAT_UPDATE]).into_values().collect();
        for name in item.keys().filter(|k| *k != attr::PK) {
            assert!(updated.contains(name), "{name} is put but never updated");
        }
    }

    #[test]
    fn node_items_decode_leniently() {
        let (info, config) = (info(), config());
        let mut item = node_item(&beat(&info, &config, 1, NodeState::Active, 0));
        item.remove(attr::EPOCH_FLOOR);
        item.insert(attr::STATE.into(), s("hibernating"));
        item.remove(attr::WEIGHT);
        item.remove(attr::LAYOUT);
        item.remove(attr::AZ);
        let record = node_record(&item).unwrap();
        assert_eq!(record.state, NodeState::Unrecognized, "a newer version's state");
        assert_eq!(record.info.weight, 1);
        assert_eq!(record.info.az, "");
        assert_eq!(record.config, None, "an incomplete announcement is none");
        assert_eq!(record.epoch_floor, 0);
        // What the protocol needs must be there.
        for (name, value) in [(attr::HB, Some(s("seven"))), (attr::INC, None), (attr::ENI, None)] {
            let mut bad = item.clone();
            match value {
                Some(v) => bad.insert(name.into(), v),
                None => bad.remove(name),
            };
            let err = node_record(&bad).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn shard_items_round_trip_and_bad_items_are_skipped_by_key() {
        let record = ShardRecord {
            id: "10.200.1.0/24".parse().unwrap(),
            owner: Some(NodeId::new("i-1")),
            owner_inc: Some(Incarnation(0xdead_beef_0000_0001)),
            epoch: 4,
            moves: 3,
        };
        assert_eq!(shard_record(&shard_item(&record)), Ok(record.clone()));
        let bare = Item::from([(attr::PK.to_string(), s("shard#10.200.0.9/32"))]);
        let free = shard_record(&bare).unwrap();
        assert_eq!((free.owner, free.epoch), (None, 0), "a bare item is a free shard");

        let mut bad = shard_item(&record);
        bad.insert(attr::EPOCH.into(), s("four"));
        let stray = Item::from([(attr::PK.to_string(), s("node#test"))]);
        let scan = decode_all(&[shard_item(&record), bad], shard_record);
        assert_eq!(scan.records, vec![record.clone()]);
        assert_eq!(scan.skipped.len(), 1);
        assert_eq!(scan.skipped[0].key, "shard#10.200.1.0/24");
        assert_eq!(scan.skipped[0].shard, Some(record.id));
        assert!(scan.skipped[0].reason.contains("epoch"), "{:?}", scan.skipped[0]);
        let nodes = decode_all(&[stray], node_record);
        assert_eq!(nodes.records.len(), 0);
        assert_eq!(nodes.skipped[0].node, Some(NodeId::new("test")));
    }

    #[test]
    fn layout_items_round_trip_and_are_checked() {
        let layout = ShardLayout::from_vips(&["10.200.0.2".parse().unwrap(), "10.200.0.1".parse().unwrap()]).unwrap();
        let item = layout_item(&layout);
        assert_eq!(layout_from_item(&item), Ok(layout.clone()));
        let mut bad = item.clone();
        bad.insert(attr::VIPS.into(), list(["10.200.0.0/24".into(), "10.200.0.1".into()]));
        assert!(layout_from_item(&bad).unwrap_err().contains("overlap"));
    }
}
