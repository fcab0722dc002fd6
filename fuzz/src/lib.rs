//! What the fuzz targets check, one function a target (`fuzz_targets/` only
//! calls these). Each must never panic on any input; where a cheap second
//! opinion exists, it is asserted too.
//!
//! - [`dynamo_items`]: the agent's lenient decoding of lease-table items
//!   (`services/agent/src/aws/dynamo_items.rs`, compiled here on its own:
//!   it uses nothing of the agent but the core and the DynamoDB types).
//! - [`agent_config`]: TOML, `VIPFLEET_*` variables and `--set` flags to a
//!   validated `AgentConfig`, as `vipfleet-agent check-config` loads them.
//! - [`vip`]: the VIP (CIDR) parser and the layout's overlap check.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use vipfleet_core::{ShardLayout, Vip};

#[allow(dead_code)] // the encoders and expressions are the agent's business
#[path = "../../services/agent/src/aws/dynamo_items.rs"]
mod items;

/// Items as DynamoDB's JSON writes them (`{"pk": {"S": "node#i-1"}, "hb":
/// {"N": "7"}}`), one object or an array of them (a scan page), so the
/// corpus holds readable, real items. `B`, `BS` take their text as bytes.
/// Input that is not such JSON is passed over.
pub fn dynamo_items(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let objects = match json {
        Value::Array(items) => items,
        object => vec![object],
    };
    let Some(page) = objects.iter().map(item).collect::<Option<Vec<_>>>() else {
        return;
    };
    for item in &page {
        if let Err(reason) = items::node_record(item) {
            assert!(!reason.is_empty());
        }
        if let Err(reason) = items::shard_record(item) {
            assert!(!reason.is_empty());
        }
        // A layout that decodes is one the agent would write back alike.
        if let Ok(layout) = items::layout_from_item(item) {
            assert_eq!(items::layout_from_item(&items::layout_item(&layout)), Ok(layout));
        }
    }
    // A scan keeps or reports every item, each exactly once.
    let nodes = items::decode_all(&page, items::node_record);
    assert_eq!(nodes.records.len() + nodes.skipped.len(), page.len());
    let shards = items::decode_all(&page, items::shard_record);
    assert_eq!(shards.records.len() + shards.skipped.len(), page.len());
}

fn item(value: &Value) -> Option<items::Item> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(name, v)| Some((name.clone(), attribute(v)?)))
            .collect::<Option<HashMap<_, _>>>(),
        _ => None,
    }
}

fn attribute(value: &Value) -> Option<AttributeValue> {
    let Value::Object(map) = value else {
        return None;
    };
    let mut entries = map.iter();
    let (kind, v) = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    let strings =
        |v: &Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect() };
    Some(match (kind.as_str(), v) {
        ("S", Value::String(s)) => AttributeValue::S(s.clone()),
        ("N", Value::String(s)) => AttributeValue::N(s.clone()),
        ("B", Value::String(s)) => AttributeValue::B(Blob::new(s.as_bytes())),
        ("BOOL", Value::Bool(b)) => AttributeValue::Bool(*b),
        ("NULL", Value::Bool(b)) => AttributeValue::Null(*b),
        ("L", Value::Array(list)) => AttributeValue::L(list.iter().map(attribute).collect::<Option<_>>()?),
        ("M", Value::Object(_)) => AttributeValue::M(item(v)?),
        ("SS", v) => AttributeValue::Ss(strings(v)?),
        ("NS", v) => AttributeValue::Ns(strings(v)?),
        ("BS", v) => AttributeValue::Bs(strings(v)?.into_iter().map(|s| Blob::new(s.into_bytes())).collect()),
        _ => return None,
    })
}

/// The config file's text, then optionally a NUL byte and one override a
/// line: `VIPFLEET_…=value` or `AWS_…=value` go into the environment, any
/// other line is a `--set` argument. Not UTF-8: passed over (the loader
/// takes a `&str`, as the file is read with `read_to_string`).
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, overrides) = text.split_once('\0').unwrap_or((text, ""));
    let mut env = BTreeMap::new();
    let mut sets = Vec::new();
    for line in overrides.lines() {
        match line.split_once('=') {
            Some((name, value)) if name.starts_with("VIPFLEET_") || name.starts_with("AWS_") => {
                env.insert(name.to_string(), value.to_string());
            }
            _ => sets.push(line.to_string()),
        }
    }
    match vipfleet_agent_config::load(file, &env, &sets) {
        Ok(config) => {
            // What validation promised holds of what it let through.
            assert_eq!(config.lease.validate(), Ok(()));
            assert_eq!(config.pacing.validate(), Ok(()));
            // The pacer waits this long for a token: at most an hour.
            assert!(config.pacing.refill_time(1.0) <= std::time::Duration::from_secs(3600));
            if let Some(health) = &config.health {
                assert_eq!(health.validate(), Ok(()));
            }
            assert_eq!(config.layout.len(), config.vips.len());
            assert!(!config.table.is_empty() && !config.route_tables.is_empty());
            assert!(config.weight >= 1);
            let _ = format!("{config:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Comma-separated CIDR blocks. Each block that parses prints as text that
/// parses back to it; the layout accepts the list exactly when a pairwise
/// check finds no duplicate and no overlap.
pub fn vip(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut vips = Vec::new();
    for part in text.split(',') {
        match part.parse::<Vip>() {
            Ok(vip) => {
                assert_eq!(vip.to_string().parse::<Vip>(), Ok(vip));
                assert!(vip.contains(vip.addr()) && vip.overlaps(&vip));
                vips.push(vip);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    if vips.len() > 64 {
        return; // the pairwise check below is quadratic
    }
    let clash = vips
        .iter()
        .enumerate()
        .any(|(i, a)| vips[i + 1..].iter().any(|b| a.overlaps(b)));
    match ShardLayout::from_vips(&vips) {
        Ok(layout) => {
            assert!(!vips.is_empty() && !clash, "accepted {vips:?}");
            assert_eq!(layout.len(), vips.len());
        }
        Err(e) => assert!(vips.is_empty() || clash, "refused {vips:?}: {e}"),
    }
}
