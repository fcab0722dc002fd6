//! The scenario report: the JSON file of issue 4's schema, a one-line
//! summary for the terminal, and an SVG timeline (VIPs as rows, time as
//! columns, failed requests in red, fault events as marked lines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::load::Record;
use crate::timeline::{percentile, FaultEvent, Outage};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moves {
    pub actual: u64,
    pub minimum: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ddb {
    pub writes: u64,
    pub reads: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ec2 {
    pub mutating: u64,
    pub describe: u64,
}

/// A stretch of the run between two of the harness's readings of the
/// agents, named after what the harness did at its start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub route_changes: u64,
    pub ddb: Ddb,
    pub ec2: Ec2,
}

/// Mutating EC2 calls for a route table that EC2 refuses, counted at the
/// fault proxy (`ec2-partial`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableCalls {
    pub table: String,
    /// The window the backoff is judged over (after a settle time).
    pub window_s: f64,
    /// Calls in the window, by agent address...
    pub per_agent: BTreeMap<String, u64>,
    /// ...and the retry rounds they came in (calls less than a second
    /// apart are one round: one call per shard, sent together).
    pub rounds_per_agent: BTreeMap<String, u64>,
    /// Calls over the whole run, every agent.
    pub total: u64,
}

/// An agent process that ended during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentExit {
    pub node: String,
    pub pid: u32,
    /// `stopped` (SIGTERM), `killed` (SIGKILL), `drained` (scale-in), or
    /// `unexpected`: the harness did not end it.
    pub cause: String,
    /// The agent's last log line about its exit; none after a SIGKILL.
    pub exit_line: Option<String>,
}

/// The report of one scenario run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub nodes: usize,
    pub vips: usize,
    pub route_tables: usize,
    pub lease_ttl_ms: u64,
    pub heartbeat_ms: u64,
    pub duration_s: f64,
    pub events: Vec<FaultEvent>,
    pub requests: Requests,
    pub vips_affected: usize,
    pub vips_restored: usize,
    pub outage_ms: Distribution,
    pub moves: Moves,
    pub ddb: Ddb,
    pub ec2: Ec2,
    /// Kernel route changes in the routers during the run (the lab's
    /// stand-in for the VPC applying route writes).
    pub route_changes: u64,
    /// Route changes that sent a route back where it pointed before its
    /// previous change (A → B → A): two nodes disagreeing on a VIP.
    #[serde(default)]
    pub flips: u64,
    /// The run cut at each reading the harness took as it acted (where it
    /// took any besides the start and the end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Agent processes that ended during the run.
    #[serde(default)]
    pub agent_exits: Vec<AgentExit>,
    /// Lease table items each agent's reads skipped at the end of the run,
    /// by instance id.
    #[serde(default)]
    pub items_skipped: BTreeMap<String, u64>,
    /// The longest a crashed node's VIP may stay dark, where a node crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_bound_ms: Option<u64>,
    /// Memory and CPU of the agents that ran through the load.
    #[serde(default)]
    pub agent_footprint: crate::footprint::Footprint,
    /// Where a route table failed: the agents' calls for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_table_calls: Option<TableCalls>,
    /// At-rest: the fleet's DynamoDB units, counted and modelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_rest: Option<AtRestCost>,
    pub violations: Vec<String>,
}

/// A settled fleet's DynamoDB request units per second, as the agents
/// counted them over a quiet window and as `vipfleet_core::cost::at_rest`
/// models them, and what each comes to a month on on-demand capacity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AtRestCost {
    pub window_s: f64,
    pub counted_read_units_per_s: f64,
    pub counted_write_units_per_s: f64,
    pub modelled_read_units_per_s: f64,
    pub modelled_write_units_per_s: f64,
    pub counted_usd_per_month: f64,
    pub modelled_usd_per_month: f64,
}

impl AtRestCost {
    pub fn summary(&self) -> String {
        format!(
            "at rest: reads {:.3}/{:.3}, writes {:.3}/{:.3} units/s counted/modelled, \
             on demand ${:.2}/${:.2} a month",
            self.counted_read_units_per_s,
            self.modelled_read_units_per_s,
            self.counted_write_units_per_s,
            self.modelled_write_units_per_s,
            self.counted_usd_per_month,
            self.modelled_usd_per_month,
        )
    }
}

impl Report {
    /// Fills the request counts and the outage figures from the timeline.
    pub fn add_traffic(&mut self, records: &[Record], outages: &[Outage]) {
        self.requests = Requests {
            sent: records.len() as u64,
            ok: records.iter().filter(|r| r.ok).count() as u64,
            failed: records.iter().filter(|r| !r.ok).count() as u64,
        };
        self.vips_affected = outages.len();
        self.vips_restored = outages.iter().filter(|o| o.outage_ms.is_some()).count();
        let mut dark: Vec<u64> = outages.iter().filter_map(|o| o.outage_ms).collect();
        dark.sort_unstable();
        self.outage_ms = Distribution {
            p50: percentile(&dark, 50.0),
            p99: percentile(&dark, 99.0),
            max: dark.last().copied().unwrap_or(0),
        };
        for o in outages.iter().filter(|o| o.outage_ms.is_none()) {
            self.violations
                .push(format!("VIP {} never answered again after event {}", o.vip, o.fault));
        }
    }

    pub const SUMMARY_HEADER: &'static str =
        "scenario        requests ok/sent   affected restored  outage p50/p99/max ms   moves act/min   violations";

    pub fn summary_line(&self) -> String {
        let line = format!(
            "{:<15} {:>17} {:>8} {:>8}  {:>21} {:>15}   {}",
            self.scenario,
            format!("{}/{}", self.requests.ok, self.requests.sent),
            self.vips_affected,
            self.vips_restored,
            format!("{}/{}/{}", self.outage_ms.p50, self.outage_ms.p99, self.outage_ms.max),
            format!("{}/{}", self.moves.actual, self.moves.minimum),
            self.violations.len()
        );
        match &self.at_rest {
            Some(cost) => format!("{line}   {}", cost.summary()),
            None => line,
        }
    }
}

/// Width of one time column in the SVG.
const BUCKET_MS: u64 = 100;
const ROW_PX: u64 = 10;
const COL_PX: u64 = 3;
const LABEL_PX: u64 = 110;
const TOP_PX: u64 = 30;

/// An SVG timeline: one row per VIP, one column per 100 ms; green where
/// every request in the bucket succeeded, red where any failed, blank where
/// none was sent; a labelled line at each fault event.
pub fn svg(records: &[Record], events: &[FaultEvent], start_ms: u64, end_ms: u64) -> String {
    let mut cells: BTreeMap<Ipv4Addr, BTreeMap<u64, bool>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.t_ms >= start_ms && r.t_ms < end_ms) {
        let bucket = (r.t_ms - start_ms) / BUCKET_MS;
        let ok = cells.entry(r.vip).or_default().entry(bucket).or_insert(true);
        *ok &= r.ok;
    }
    let columns = end_ms.saturating_sub(start_ms).div_ceil(BUCKET_MS);
    let width = LABEL_PX + columns * COL_PX + 10;
    let height = TOP_PX + cells.len() as u64 * ROW_PX + 20;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="9">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (row, (vip, buckets)) in cells.iter().enumerate() {
        let y = TOP_PX + row as u64 * ROW_PX;
        let _ = writeln!(out, r#"<text x="2" y="{}">{vip}</text>"#, y + ROW_PX - 2);
        for (bucket, ok) in buckets {
            let colour = if *ok { "#4caf50" } else { "#e53935" };
            let _ = writeln!(
                out,
                r#"<rect x="{}" y="{y}" width="{COL_PX}" height="{}" fill="{colour}"/>"#,
                LABEL_PX + bucket * COL_PX,
                ROW_PX - 1
            );
        }
    }
    for event in events.iter().filter(|e| e.t_ms >= start_ms && e.t_ms < end_ms) {
        let x = LABEL_PX + (event.t_ms - start_ms) / BUCKET_MS * COL_PX;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="black" stroke-dasharray="3,2"/>"#,
            TOP_PX - 12,
            height - 15
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{} {}</text>"#,
            x + 2,
            TOP_PX - 14,
            escape(&event.kind),
            escape(&event.node)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="2" y="{}">time: {} ms per column; green ok, red failed</text>"#,
        height - 4,
        BUCKET_MS
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vip: u8, t_ms: u64, ok: bool) -> Record {
        Record {
            client: "c0".into(),
            vip: Ipv4Addr::new(10, 200, 0, vip),
            t_ms,
            ok,
            latency_ms: 1,
            error: String::new(),
        }
    }

    #[test]
    fn traffic_fills_counts_and_outage_distribution() {
        let records = vec![rec(1, 0, true), rec(1, 10, false), rec(2, 10, false)];
        let outages = vec![
            Outage {
                vip: Ipv4Addr::new(10, 200, 0, 1),
                fault: 0,
                failed: 1,
                outage_ms: Some(300),
            },
            Outage {
                vip: Ipv4Addr::new(10, 200, 0, 2),
                fault: 0,
                failed: 1,
                outage_ms: None,
            },
        ];
        let mut report = Report::default();
        report.add_traffic(&records, &outages);
        assert_eq!(
            report.requests,
            Requests {
                sent: 3,
                ok: 1,
                failed: 2
            }
        );
        assert_eq!((report.vips_affected, report.vips_restored), (2, 1));
        assert_eq!(
            report.outage_ms,
            Distribution {
                p50: 300,
                p99: 300,
                max: 300
            }
        );
        assert_eq!(report.violations.len(), 1, "an unrestored VIP is a violation");
        let json = serde_json::to_value(&report).unwrap();
        for field in [
            "scenario",
            "lease_ttl_ms",
            "outage_ms",
            "moves",
            "ddb",
            "ec2",
            "violations",
            "events",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from the report");
        }
    }

    #[test]
    fn the_svg_marks_failures_and_events() {
        let records = vec![rec(1, 0, true), rec(1, 150, false), rec(2, 150, true)];
        let events = vec![FaultEvent {
            t_ms: 100,
            kind: "crash".into(),
            node: "<n1>".into(),
        }];
        let svg = svg(&records, &events, 0, 1000);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("#e53935").count(), 1, "one failed bucket");
        assert_eq!(svg.matches("#4caf50").count(), 2);
        assert!(svg.contains("crash &lt;n1&gt;"), "event labels are escaped");
    }
}
