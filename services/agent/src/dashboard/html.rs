//! The dashboard page: a [`FleetView`] rendered as one self-contained HTML
//! document. No scripts, fonts or stylesheets from elsewhere (nodes often
//! have no internet), readable without JavaScript, refreshed by a meta tag.
//!
//! Every string that comes from the lease table (node ids, AZs, versions)
//! is escaped: a node item is not trusted to be well-behaved HTML. Rows
//! carry `data-*` attributes and classes so tests (and people) can find
//! nodes, shards and trouble without parsing the text.

use std::fmt::Write;

use super::view::{FleetView, NodeView, PeerView, ShardView};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:left;white-space:nowrap}\
th{background:#eee}td.num{text-align:right}\
tr.trouble{background:#fde2e2}tr.self td:first-child{font-weight:bold}\
tr.dead{color:#999}.ok{color:#176f2c}.bad{color:#b00020;font-weight:bold}.muted{color:#888}\
.totals span{display:inline-block;margin-right:1.5em}.warn{color:#b00020}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `850ms`, `4.2s`, `3m 05s`, `2h 10m`.
pub fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn opt_age(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_string(), age)
}

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

/// The page shown before the lease loop has published anything.
pub fn starting_page() -> String {
    let mut out = String::new();
    head(&mut out, "vipfleet: starting");
    out.push_str("<h1>vipfleet</h1><p id=\"starting\">The agent is starting: no fleet snapshot yet.</p></body></html>");
    out
}

pub fn render(view: &FleetView) -> String {
    let mut out = String::with_capacity(4096 + 400 * (view.nodes.len() + view.shards.len()));
    let o = &view.observer;
    head(&mut out, &format!("vipfleet: {}", o.node_id));
    let lease = if o.lease_valid {
        format!(
            "<span class=\"ok\">valid</span> ({} left)",
            opt_age(o.lease_remaining_ms)
        )
    } else {
        "<span class=\"bad\">not valid: no route writes</span>".to_string()
    };
    let _ = write!(
        out,
        "<h1>vipfleet fleet, as seen by <span id=\"observer\">{}</span></h1>\
         <p>mode <b id=\"mode\">{}</b>{} · haproxy {} · source/dest check {} · lease {lease} · reads {} · \
         version {} · layout <code>{}</code> · snapshot {} old · heartbeat every {}, lease TTL {}</p>",
        escape(&o.node_id),
        o.mode,
        match o.exit_reason {
            Some(reason) => format!(" (exited: {reason})"),
            None => String::new(),
        },
        match o.health {
            "healthy" => "<span class=\"ok\">healthy</span>",
            "unhealthy" => "<span class=\"bad\">unhealthy</span>",
            _ => "<span class=\"warn\">not checked yet</span>",
        },
        if o.source_dest_check_off {
            "<span class=\"ok\">off</span>"
        } else {
            "<span class=\"bad\">not confirmed off: claims no VIP</span>"
        },
        if o.reads_cold {
            "<span id=\"reads\">cold</span> (settled: watches one peer and the change counter)"
        } else {
            "<span id=\"reads\">hot</span>"
        },
        escape(&o.version),
        escape(&o.layout),
        age(view.snapshot_age_ms),
        age(view.lease.heartbeat_interval_ms),
        age(view.lease.lease_ttl_ms),
    );
    totals(&mut out, view);
    skipped(&mut out, view);
    table_problems(&mut out, view);
    nodes(&mut out, view);
    peers(&mut out, &view.peers);
    shards(&mut out, view);
    events(&mut out, view);
    out.push_str(
        "<p class=\"muted\">JSON: <a href=\"/api/v1/fleet\">/api/v1/fleet</a> · \
                  metrics: <a href=\"/metrics\">/metrics</a></p></body></html>\n",
    );
    out
}

fn totals(out: &mut String, view: &FleetView) {
    let t = &view.totals;
    let s = &t.nodes_by_state;
    let warn = |n: usize| if n > 0 { " class=\"warn\"" } else { "" };
    let _ = write!(
        out,
        "<p class=\"totals\" id=\"totals\"><span>nodes <b>{}</b>: {} active, {} starting, {} draining, \
         <b{}>{} unhealthy</b>, <b{}>{} gone</b>, {} dead, <b{}>{} unreadable</b>, \
         <b{}>{} with another configuration</b></span>\
         <span>shards <b>{}</b>: {} owned, <b{}>{} free</b>, <b{}>{} orphaned</b>, {} moving, \
         <b{}>{} disputed</b></span>\
         <span><b{}>{} route problems</b></span><span>moves in the last hour: <b>{}</b></span></p>",
        t.nodes,
        s.active,
        s.starting,
        s.draining,
        warn(s.unhealthy),
        s.unhealthy,
        warn(s.gone),
        s.gone,
        s.dead,
        warn(s.unreadable),
        s.unreadable,
        warn(t.nodes_config_mismatch),
        t.nodes_config_mismatch,
        t.shards,
        t.shards_owned,
        warn(t.shards_free),
        t.shards_free,
        warn(t.shards_orphaned),
        t.shards_orphaned,
        t.shards_moving,
        warn(t.shards_disputed),
        t.shards_disputed,
        warn(t.route_problems),
        t.route_problems,
        t.moves_last_hour,
    );
}

/// Items of the lease table the agent cannot read: shown until fixed.
fn skipped(out: &mut String, view: &FleetView) {
    if view.skipped.is_empty() {
        return;
    }
    out.push_str("<p class=\"warn\" id=\"skipped\">Lease table items this agent cannot read (skipped): ");
    let items: Vec<String> = view
        .skipped
        .iter()
        .map(|s| format!("<code>{}</code> ({})", escape(&s.key), escape(&s.reason)))
        .collect();
    out.push_str(&items.join("; "));
    out.push_str("</p>");
}

/// Route tables whose calls from this node fail: shown until one succeeds.
fn table_problems(out: &mut String, view: &FleetView) {
    if view.route_table_problems.is_empty() {
        return;
    }
    out.push_str("<p class=\"warn\" id=\"route-table-problems\">Route tables failing: ");
    let items: Vec<String> = view
        .route_table_problems
        .iter()
        .map(|p| {
            format!(
                "<code>{}</code> ({}, {} in a row: {})",
                escape(&p.table),
                p.class,
                p.failures,
                escape(&p.detail)
            )
        })
        .collect();
    out.push_str(&items.join("; "));
    out.push_str("</p>");
}

fn node_row(out: &mut String, n: &NodeView) {
    let mut classes = vec!["node"];
    if !n.trouble.is_empty() {
        classes.push("trouble");
    }
    if n.is_self {
        classes.push("self");
    }
    if n.state == "dead" {
        classes.push("dead");
    }
    let state = if n.gone { "gone" } else { n.state };
    let config = match (&n.layout, n.config_matches) {
        (Some(h), Some(true)) => format!("<code>{}</code>", escape(h)),
        (Some(h), _) => format!("<code class=\"bad\">{}</code>", escape(h)),
        (None, _) => "<span class=\"muted\">—</span>".to_string(),
    };
    let _ = write!(
        out,
        "<tr class=\"{}\" data-node=\"{}\" data-state=\"{state}\"><td>{}</td><td>{}</td><td>{state}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td>\
         <td class=\"num\">{}</td><td>{}</td><td>{config}</td><td>{}</td></tr>",
        classes.join(" "),
        escape(&n.id),
        escape(&n.id),
        escape(&n.az),
        opt_age(n.heartbeat_age_ms),
        opt_age(n.expires_in_ms),
        n.shards,
        n.quota,
        n.weight,
        escape(&n.version),
        escape(&n.trouble.join("; ")),
    );
}

fn nodes(out: &mut String, view: &FleetView) {
    out.push_str(
        "<h2>Nodes</h2><table id=\"nodes\"><thead><tr><th>node</th><th>AZ</th><th>state</th>\
         <th>heartbeat age</th><th>expires in</th><th>shards / quota</th><th>weight</th>\
         <th>version</th><th>config</th><th>trouble</th></tr></thead><tbody>",
    );
    for n in &view.nodes {
        node_row(out, n);
    }
    out.push_str("</tbody></table>");
}

/// What this node's peer probes make of the others: the detector's state,
/// its last ack, and the haproxy health that ack carried. Read-only, like
/// the rest of the page.
fn peers(out: &mut String, peers: &[PeerView]) {
    out.push_str("<h2>Peers</h2>");
    if peers.is_empty() {
        out.push_str(
            "<p id=\"peers\" class=\"muted\">No peer is probed: probes are off here, \
             or no other node announces a peer port.</p>",
        );
        return;
    }
    out.push_str(
        "<table id=\"peers\"><thead><tr><th>peer</th><th>state (our probes)</th>\
         <th>last ack</th><th>haproxy (in that ack)</th></tr></thead><tbody>",
    );
    for p in peers {
        let (class, state) = match p.status {
            "alive" => ("peer", "<span class=\"ok\">alive</span>"),
            "suspect" => ("peer trouble", "<span class=\"warn\">suspect</span>"),
            "dead" => ("peer trouble dead", "<span class=\"bad\">dead</span>"),
            _ => ("peer dead", "left"),
        };
        let haproxy = match p.healthy {
            Some(true) => "<span class=\"ok\">healthy</span>",
            Some(false) => "<span class=\"bad\">unhealthy</span>",
            None => "<span class=\"muted\">—</span>",
        };
        let last_ack = p
            .last_ack_ms_ago
            .map_or_else(|| "never".to_string(), |ms| format!("{} ago", age(ms)));
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-peer=\"{}\" data-status=\"{}\"><td>{}</td><td>{state}</td>\
             <td class=\"num\">{last_ack}</td><td>{haproxy}</td></tr>",
            escape(&p.node),
            escape(p.status),
            escape(&p.node),
        );
    }
    out.push_str("</tbody></table>");
}

fn shard_row(out: &mut String, s: &ShardView) {
    let class = if s.trouble.is_empty() { "shard" } else { "shard trouble" };
    let owner = s.owner.as_deref().unwrap_or("");
    let owner_cell = match (&s.owner, s.owner_status) {
        (None, _) => "<span class=\"bad\">free</span>".to_string(),
        (Some(o), "live") => escape(o),
        (Some(o), status) => format!("<span class=\"bad\">{} ({status})</span>", escape(o)),
    };
    let target = match &s.target {
        Some(t) if s.target != s.owner => format!("→ {}", escape(t)),
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<tr class=\"{class}\" data-shard=\"{}\" data-owner=\"{}\"><td>{}{}</td>\
         <td>{owner_cell}</td><td>{target}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>",
        escape(&s.id),
        escape(owner),
        escape(&s.id),
        if s.disputed {
            " <span class=\"warn\">(disputed)</span>"
        } else {
            ""
        },
        s.epoch,
        s.moves,
        opt_age(s.moved_ago_ms),
    );
    for r in &s.routes {
        let cell = match r.status {
            "ok" => format!("<span class=\"ok\">ok</span> ({} ago)", opt_age(r.checked_ago_ms)),
            "not_checked" => "<span class=\"muted\">not checked yet</span>".to_string(),
            "elsewhere" => "<span class=\"muted\">checked by owner</span>".to_string(),
            bad => format!(
                "<span class=\"bad\">{}</span> ({} ago)",
                bad.replace('_', " "),
                opt_age(r.checked_ago_ms)
            ),
        };
        let _ = write!(out, "<td data-route=\"{}\">{cell}</td>", r.status);
    }
    let _ = write!(out, "<td>{}</td></tr>", escape(&s.trouble.join("; ")));
}

fn shards(out: &mut String, view: &FleetView) {
    out.push_str(
        "<h2>Shards</h2><table id=\"shards\"><thead><tr><th>shard (VIP)</th><th>owner</th>\
         <th>moving</th><th>epoch</th><th>moves</th><th>last move</th>",
    );
    for table in &view.route_tables {
        let _ = write!(out, "<th>route {}</th>", escape(table));
    }
    out.push_str("<th>trouble</th></tr></thead><tbody>");
    for s in &view.shards {
        shard_row(out, s);
    }
    out.push_str("</tbody></table>");
}

fn events(out: &mut String, view: &FleetView) {
    out.push_str(
        "<h2>Recent events</h2><table id=\"events\"><thead><tr><th>when</th><th>what</th>\
         <th>shard</th><th>node</th><th>detail</th></tr></thead><tbody>",
    );
    if view.events.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">none yet</td></tr>");
    }
    for e in &view.events {
        let _ = write!(
            out,
            "<tr class=\"event\" data-kind=\"{}\"><td>{} ago</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            e.kind,
            age(e.ago_ms),
            e.kind.replace('_', " "),
            escape(e.shard.as_deref().unwrap_or("")),
            escape(e.node.as_deref().unwrap_or("")),
            escape(&e.detail),
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0ms");
        assert_eq!(age(850), "850ms");
        assert_eq!(age(4_240), "4.2s");
        assert_eq!(age(185_000), "3m 05s");
        assert_eq!(age(7_800_000), "2h 10m");
    }

    fn peer(node: &str, status: &'static str, healthy: Option<bool>, last_ack_ms_ago: Option<u64>) -> PeerView {
        PeerView {
            node: node.into(),
            status,
            healthy,
            last_ack_ms_ago,
        }
    }

    #[test]
    fn peers_show_their_state_last_ack_and_haproxy() {
        let mut out = String::new();
        peers(
            &mut out,
            &[
                peer("i-a", "alive", Some(true), Some(120)),
                peer("i-b", "suspect", Some(false), Some(4_200)),
                peer("i-<c>", "dead", None, None),
            ],
        );
        assert!(out.contains("<table id=\"peers\">"), "{out}");
        assert!(
            out.contains(
                "data-peer=\"i-a\" data-status=\"alive\"><td>i-a</td><td><span class=\"ok\">alive</span></td>\
                 <td class=\"num\">120ms ago</td><td><span class=\"ok\">healthy</span></td></tr>"
            ),
            "{out}"
        );
        assert!(out.contains("<tr class=\"peer trouble\" data-peer=\"i-b\""), "{out}");
        assert!(
            out.contains("4.2s ago</td><td><span class=\"bad\">unhealthy</span>"),
            "{out}"
        );
        assert!(out.contains("data-peer=\"i-&lt;c&gt;\" data-status=\"dead\""), "{out}");
        assert!(out.contains("<td class=\"num\">never</td>"), "{out}");
        assert!(!out.contains("i-<c>"), "peer names are escaped: {out}");
    }

    #[test]
    fn without_peers_the_page_says_why() {
        let mut out = String::new();
        peers(&mut out, &[]);
        assert!(
            out.contains("<p id=\"peers\" class=\"muted\">No peer is probed"),
            "{out}"
        );
    }

    #[test]
    fn the_starting_page_refreshes_itself() {
        let page = starting_page();
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(page.contains("id=\"starting\""));
    }
}
