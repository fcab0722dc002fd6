//! The route mirror's change log read back: what the VPC did to traffic,
//! route by route. Kernel routes change only when moto's do, so this is
//! also the record of every route write that took effect.

use std::collections::BTreeMap;

use vipfleet_core::Vip;

use crate::lab::state::LabState;

/// One kernel route change in one router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteChange {
    pub t_ms: u64,
    pub table: String,
    pub vip: Vip,
    /// Where the route sends traffic afterwards: the next hop, `blackhole`,
    /// or `None` once it is removed.
    pub target: Option<String>,
}

/// Every change the mirror logged, oldest first.
pub fn read(state: &LabState) -> Vec<RouteChange> {
    let Ok(text) = std::fs::read_to_string(&state.mirror.changes_log) else {
        return Vec::new();
    };
    let mut log: Vec<RouteChange> = text.lines().filter_map(parse_line).collect();
    log.sort_by_key(|c| c.t_ms);
    log
}

fn parse_line(line: &str) -> Option<RouteChange> {
    let c: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = |key: &str| c.get(key).and_then(serde_json::Value::as_str);
    let target = match (text("action")?, text("via")) {
        ("remove", _) => None,
        (_, Some(via)) => Some(via.to_string()),
        _ => Some("blackhole".to_string()),
    };
    Some(RouteChange {
        t_ms: c.get("t_unix_ms")?.as_u64()?,
        table: text("route_table")?.to_string(),
        vip: text("dst")?.parse().ok()?,
        target,
    })
}

pub fn between(log: &[RouteChange], from_ms: u64, to_ms: u64) -> impl Iterator<Item = &RouteChange> {
    log.iter().filter(move |c| (from_ms..to_ms).contains(&c.t_ms))
}

/// Route changes in `[from_ms, to_ms)`, per VIP (over every table).
pub fn per_vip(log: &[RouteChange], from_ms: u64, to_ms: u64) -> BTreeMap<Vip, u64> {
    let mut counts = BTreeMap::new();
    for c in between(log, from_ms, to_ms) {
        *counts.entry(c.vip).or_insert(0) += 1;
    }
    counts
}

/// Changes in `[from_ms, to_ms)` that sent a route back to where it
/// pointed before its previous change (A → B → A): the trace two writers
/// that disagree on a VIP leave, each undoing the other at every
/// reconcile. A failover, a hand-off or a new VIP never returns; a node
/// that came back may take its share back (zombie, partition), so this is
/// no violation everywhere.
pub fn flips(log: &[RouteChange], from_ms: u64, to_ms: u64) -> u64 {
    // Per route, the targets it had in the window, after the one it had
    // when the window opened: where it was before that is another story
    // (a node that failed and came back in an earlier run).
    let mut history: BTreeMap<(&str, Vip), Vec<Option<&str>>> = BTreeMap::new();
    let mut flips = 0;
    for c in log.iter().filter(|c| c.t_ms < to_ms) {
        let now = c.target.as_deref();
        let targets = history.entry((c.table.as_str(), c.vip)).or_default();
        if c.t_ms < from_ms {
            *targets = vec![now];
            continue;
        }
        if targets.last() == Some(&now) {
            continue;
        }
        if targets.len() >= 2 && targets[targets.len() - 2] == now {
            flips += 1;
        }
        targets.push(now);
    }
    flips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(t_ms: u64, table: &str, vip: &str, target: Option<&str>) -> RouteChange {
        RouteChange {
            t_ms,
            table: table.into(),
            vip: vip.parse().unwrap(),
            target: target.map(String::from),
        }
    }

    #[test]
    fn the_mirrors_lines_are_read() {
        let line = r#"{"t_unix_ms":5,"seen_unix_ms":4,"route_table":"rtb-1","router_ns":"vf-r0","dst":"10.200.0.1/32","action":"replace","via":"10.77.0.11","eni":"eni-1","blackhole":false,"ok":true}"#;
        assert_eq!(
            parse_line(line),
            Some(change(5, "rtb-1", "10.200.0.1/32", Some("10.77.0.11")))
        );
        let removed = line
            .replace("\"replace\"", "\"remove\"")
            .replace("\"10.77.0.11\"", "null");
        assert_eq!(parse_line(&removed).unwrap().target, None);
        assert_eq!(parse_line("not json"), None);
    }

    #[test]
    fn a_route_sent_back_is_a_flip_a_move_onwards_is_not() {
        let log = vec![
            // Before the window: B, then A.
            change(1, "t0", "10.200.0.1/32", Some("b")),
            change(2, "t0", "10.200.0.1/32", Some("a")),
            // In it: to B, back to A (a flip), on to C, then removed.
            change(10, "t0", "10.200.0.1/32", Some("b")),
            change(11, "t0", "10.200.0.1/32", Some("a")),
            change(12, "t0", "10.200.0.1/32", Some("c")),
            change(13, "t0", "10.200.0.1/32", None),
            // The same VIP in another table moves once.
            change(10, "t1", "10.200.0.1/32", Some("b")),
            // A new VIP is added once.
            change(13, "t0", "10.200.0.2/32", Some("a")),
        ];
        assert_eq!(flips(&log, 10, 100), 1);
        assert_eq!(flips(&log, 11, 100), 0, "the window opens on B: A is a move");
        assert_eq!(flips(&log, 0, 100), 2, "B, A, B was one already");
        assert_eq!(flips(&log, 10, 11), 0, "the flip is after the window");
        assert_eq!(
            per_vip(&log, 10, 100),
            BTreeMap::from([
                ("10.200.0.1/32".parse().unwrap(), 5),
                ("10.200.0.2/32".parse().unwrap(), 1)
            ])
        );
        assert_eq!(between(&log, 0, 10).count(), 2);
    }
}
