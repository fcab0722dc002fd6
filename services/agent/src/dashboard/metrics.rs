//! The agent's Prometheus metrics: one [`Metrics`] per process, updated by
//! the driver (events, store and EC2 call outcomes) and rendered by
//! `GET /metrics`.
//!
//! Counters and histograms move as things happen. The two values that
//! depend on *now* (time since the last successful heartbeat, the EC2 token
//! bucket's level) are computed when the page is rendered, so a wedged
//! driver shows a growing heartbeat age rather than a frozen one. The gauges
//! derived from the published status (lease, mode, haproxy health, fleet
//! totals) are built per scrape by [`super::scrape`] and rendered after
//! these ([`Metrics::render_with`]).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant as TokioInstant;
use vipfleet_core::machine::Event;
use vipfleet_core::peers::{PeerStatus, Verdict};
use vipfleet_core::routes::RouteOp;
use vipfleet_core::store::StoreOp;

use super::build_info;
use crate::aws::dynamo::{Units, UnitsSink};

/// Media type of the OpenMetrics text the registry encodes (Prometheus
/// negotiates it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Smallest bucket of the call latency histograms; buckets double from it.
const LATENCY_FIRST_BUCKET_SECONDS: f64 = 0.002;
/// 2 ms … 8 s: past the store call timeout.
const LATENCY_BUCKETS: u16 = 13;
/// Outcome label of a call the driver's timeout gave up on.
pub const OUTCOME_TIMEOUT: &str = "timeout";
pub const OUTCOME_OK: &str = "ok";

/// `op` and `outcome` of one store or EC2 call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Datagrams of the peer probes: `sent`, `received` (decoded and handed to
/// the detector) or `dropped` (garbled, oversized, another wire version, or
/// a send that failed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Why a peer datagram failed authentication (`Rejection::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

pub const DATAGRAM_SENT: &str = "sent";
pub const DATAGRAM_RECEIVED: &str = "received";
pub const DATAGRAM_DROPPED: &str = "dropped";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type HistogramFamily = Family<OpLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(LATENCY_FIRST_BUCKET_SECONDS, 2.0, LATENCY_BUCKETS))
}

/// Every metric family the agent exports, and the registry that renders
/// them. Shared as `Arc<Metrics>` between the driver (writer) and the
/// dashboard (reader).
pub struct Metrics {
    registry: Registry,
    /// Latency of successful heartbeats: how close the lease runs to its
    /// deadline.
    heartbeat_seconds: Histogram,
    store_calls: Family<CallLabels, Counter>,
    store_call_seconds: HistogramFamily,
    /// DynamoDB request units the store consumed, by operation.
    read_units: Family<OpLabel, Counter<f64, AtomicU64>>,
    write_units: Family<OpLabel, Counter<f64, AtomicU64>>,
    ec2_calls: Family<CallLabels, Counter>,
    ec2_call_seconds: HistogramFamily,
    shards_owned: Gauge,
    claims: Counter,
    takeovers: Counter,
    handoffs: Counter,
    reclaims: Counter,
    shards_lost: Counter,
    route_repairs: Counter,
    lease_expiries: Counter,
    nodes_marked_dead: Counter,
    nodes_evicted: Counter,
    own_lease_lapses: Counter,
    reregistrations: Counter,
    shards_retired: Counter,
    /// Items the last reads could not use, by kind (node, shard, other).
    items_skipped: Family<KindLabel, Gauge>,
    /// 1 while the lease table answers that it does not exist.
    table_missing: Gauge,
    heartbeat_age_seconds: Gauge<f64, AtomicU64>,
    token_bucket_level: Gauge<f64, AtomicU64>,
    failover_waiting: Gauge,
    dashboard_connections: Gauge,
    dashboard_rejected: Counter,
    dashboard_timed_out: Counter,
    peer_datagrams: Family<DirectionLabel, Counter>,
    peer_rejected: Family<ReasonLabel, Counter>,
    peer_verdicts: Family<VerdictLabel, Counter>,
    /// Members of the peer detector by what it believes of them.
    peer_members: Family<StatusLabel, Gauge>,
    /// Send time of the last successful heartbeat (the lease counts from
    /// the send time, so the age does too); the creation time until then.
    last_heartbeat_ok: Mutex<Option<TokioInstant>>,
    created_at: TokioInstant,
}

impl UnitsSink for Metrics {
    fn consumed(&self, op: StoreOp, units: Units) {
        self.observe_store_units(op, units);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vipfleet");
        let heartbeat_seconds = latency_histogram();
        let store_calls = Family::<CallLabels, Counter>::default();
        let store_call_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let ec2_calls = Family::<CallLabels, Counter>::default();
        let ec2_call_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let m = Self {
            heartbeat_seconds,
            store_calls,
            store_call_seconds,
            read_units: Family::default(),
            write_units: Family::default(),
            ec2_calls,
            ec2_call_seconds,
            shards_owned: Gauge::default(),
            claims: Counter::default(),
            takeovers: Counter::default(),
            handoffs: Counter::default(),
            reclaims: Counter::default(),
            shards_lost: Counter::default(),
            route_repairs: Counter::default(),
            lease_expiries: Counter::default(),
            nodes_marked_dead: Counter::default(),
            nodes_evicted: Counter::default(),
            own_lease_lapses: Counter::default(),
            reregistrations: Counter::default(),
            shards_retired: Counter::default(),
            items_skipped: Family::default(),
            table_missing: Gauge::default(),
            heartbeat_age_seconds: Gauge::default(),
            token_bucket_level: Gauge::default(),
            failover_waiting: Gauge::default(),
            dashboard_connections: Gauge::default(),
            dashboard_rejected: Counter::default(),
            dashboard_timed_out: Counter::default(),
            peer_datagrams: Family::default(),
            peer_rejected: Family::default(),
            peer_verdicts: Family::default(),
            peer_members: Family::default(),
            last_heartbeat_ok: Mutex::new(None),
            created_at: TokioInstant::now(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: build_info::VERSION,
                commit: build_info::commit(),
            })
            .set(1);
        r.register("build_info", "The agent's version and commit; always 1", build);
        r.register_with_unit(
            "heartbeat_duration",
            "Latency of successful heartbeat writes",
            Unit::Seconds,
            m.heartbeat_seconds.clone(),
        );
        r.register(
            "store_calls",
            "Lease store calls by operation and outcome",
            m.store_calls.clone(),
        );
        r.register_with_unit(
            "store_call_duration",
            "Lease store call latency by operation",
            Unit::Seconds,
            m.store_call_seconds.clone(),
        );
        r.register(
            "dynamodb_read_units",
            "DynamoDB read request units the lease store consumed, by operation (as DynamoDB reports them, \
             else estimated by item size)",
            m.read_units.clone(),
        );
        r.register(
            "dynamodb_write_units",
            "DynamoDB write request units the lease store consumed, by operation (as DynamoDB reports them, \
             else estimated by item size)",
            m.write_units.clone(),
        );
        r.register(
            "ec2_calls",
            "EC2 route calls by operation and outcome",
            m.ec2_calls.clone(),
        );
        r.register_with_unit(
            "ec2_call_duration",
            "EC2 route call latency by operation (token wait excluded)",
            Unit::Seconds,
            m.ec2_call_seconds.clone(),
        );
        r.register("shards_owned", "Shards this node holds", m.shards_owned.clone());
        r.register("claims", "Free shards this node claimed", m.claims.clone());
        r.register(
            "takeovers",
            "Shards this node took over from an expired or dead node",
            m.takeovers.clone(),
        );
        r.register(
            "handoffs",
            "Shards this node handed to another node",
            m.handoffs.clone(),
        );
        r.register(
            "reclaims",
            "Shards this node claimed again (after re-registering, or found its own in the table)",
            m.reclaims.clone(),
        );
        r.register(
            "shards_lost",
            "Shards this node found taken by another node",
            m.shards_lost.clone(),
        );
        r.register(
            "route_repairs",
            "Routes the read-back found wrong, missing or blackholed (each is rewritten)",
            m.route_repairs.clone(),
        );
        r.register(
            "lease_expiries_observed",
            "Nodes this observer saw expire",
            m.lease_expiries.clone(),
        );
        r.register(
            "nodes_marked_dead",
            "Expired nodes this node marked dead",
            m.nodes_marked_dead.clone(),
        );
        r.register(
            "nodes_evicted",
            "Nodes this node evicted on the peer probes' word",
            m.nodes_evicted.clone(),
        );
        r.register(
            "own_lease_lapses",
            "Times this node's own lease lapsed",
            m.own_lease_lapses.clone(),
        );
        r.register(
            "reregistrations",
            "Times this node found its own item gone and wrote it again",
            m.reregistrations.clone(),
        );
        r.register(
            "shards_retired",
            "Shards of VIPs no node serves any more that this node retired",
            m.shards_retired.clone(),
        );
        r.register(
            "items_skipped",
            "Lease table items the last reads could not use, by kind",
            m.items_skipped.clone(),
        );
        r.register(
            "store_table_missing",
            "1 while the lease table does not exist (every route is held as it is)",
            m.table_missing.clone(),
        );
        r.register_with_unit(
            "heartbeat_age",
            "Time since the send time of the last successful heartbeat (since start if none yet)",
            Unit::Seconds,
            m.heartbeat_age_seconds.clone(),
        );
        r.register(
            "ec2_token_bucket_level",
            "Tokens in the client-side EC2 mutating-call bucket",
            m.token_bucket_level.clone(),
        );
        r.register(
            "ec2_failover_waiting",
            "Failover route writes waiting for an EC2 token",
            m.failover_waiting.clone(),
        );
        r.register(
            "dashboard_connections",
            "Open dashboard connections",
            m.dashboard_connections.clone(),
        );
        r.register(
            "dashboard_connections_rejected",
            "Dashboard connections closed at once because the connection limit was reached",
            m.dashboard_rejected.clone(),
        );
        r.register(
            "dashboard_connections_timed_out",
            "Dashboard connections closed for sending no complete request header in time (slow or idle)",
            m.dashboard_timed_out.clone(),
        );
        r.register(
            "peer_datagrams",
            "Peer probe datagrams sent, received, or dropped (garbled, oversized, another wire version, a failed send)",
            m.peer_datagrams.clone(),
        );
        r.register(
            "peer_messages_rejected",
            "Peer datagrams refused by authentication, by reason (unsealed, truncated, unknown_key, bad_tag, stale, replayed); also counted as dropped",
            m.peer_rejected.clone(),
        );
        r.register(
            "peer_verdicts",
            "Verdicts of the peer detector about other nodes",
            m.peer_verdicts.clone(),
        );
        r.register(
            "peer_members",
            "Nodes the peer detector probes, by what it believes of them",
            m.peer_members.clone(),
        );
        Self { registry, ..m }
    }

    /// The lease machine's EC2 token bucket after its last step: tokens
    /// left, and failover route changes waiting for one.
    pub fn set_route_pacing(&self, tokens: f64, failover_waiting: usize) {
        self.token_bucket_level.set(tokens);
        self.failover_waiting
            .set(i64::try_from(failover_waiting).unwrap_or(i64::MAX));
    }

    pub fn observe_event(&self, event: &Event) {
        match event {
            Event::Acquired { from: None, .. } => self.claims.inc(),
            Event::Acquired { from: Some(_), .. } => self.takeovers.inc(),
            Event::HandedOff { .. } => self.handoffs.inc(),
            Event::Reclaimed { .. } => self.reclaims.inc(),
            Event::Lost { .. } => self.shards_lost.inc(),
            Event::RouteDrift { .. } => self.route_repairs.inc(),
            Event::NodeGone { .. } => self.lease_expiries.inc(),
            Event::NodeMarkedDead { .. } => self.nodes_marked_dead.inc(),
            Event::NodeEvicted { .. } => self.nodes_evicted.inc(),
            Event::LeaseLapsed => self.own_lease_lapses.inc(),
            Event::Reregistered => self.reregistrations.inc(),
            Event::Retired { .. } => self.shards_retired.inc(),
            Event::ItemsSkipped { skipped } => {
                self.items_skipped.clear();
                for item in skipped {
                    let kind = match (&item.node, &item.shard) {
                        (Some(_), _) => "node",
                        (_, Some(_)) => "shard",
                        _ => "other",
                    };
                    self.items_skipped.get_or_create(&KindLabel { kind }).inc();
                }
                return;
            }
            Event::StoreError { kind, .. } => {
                self.table_missing
                    .set(i64::from(*kind == vipfleet_core::store::StoreErrorKind::TableMissing));
                return;
            }
            // Calls are counted where they are made; the rest is not a rate
            // anyone alerts on.
            Event::Registered
            | Event::LeaseRenewed
            | Event::RouteChanged { .. }
            | Event::RouteError { .. }
            | Event::ModeChanged { .. }
            | Event::VerdictsWeighed { .. }
            | Event::StopDeferred => return,
        };
    }

    /// One lease store call finished (or timed out) after `duration`.
    pub fn observe_store_call(&self, op: StoreOp, outcome: &'static str, duration: Duration) {
        let op_name = op.as_str();
        self.store_calls
            .get_or_create(&CallLabels { op: op_name, outcome })
            .inc();
        self.store_call_seconds
            .get_or_create(&OpLabel { op: op_name })
            .observe(duration.as_secs_f64());
        if outcome == OUTCOME_OK {
            self.table_missing.set(0);
        }
        if op == StoreOp::Heartbeat && outcome == OUTCOME_OK {
            self.heartbeat_seconds.observe(duration.as_secs_f64());
            let sent_at = TokioInstant::now().checked_sub(duration).unwrap_or(self.created_at);
            let mut last = self.last_heartbeat_ok.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some(last.map_or(sent_at, |t| t.max(sent_at)));
        }
    }

    /// Request units one lease store call consumed.
    pub fn observe_store_units(&self, op: StoreOp, units: Units) {
        let label = OpLabel { op: op.as_str() };
        if units.read > 0.0 {
            self.read_units.get_or_create(&label).inc_by(units.read);
        }
        if units.write > 0.0 {
            self.write_units.get_or_create(&label).inc_by(units.write);
        }
    }

    /// One EC2 route call finished (or timed out) after `duration`.
    pub fn observe_route_call(&self, op: RouteOp, outcome: &'static str, duration: Duration) {
        let op_name = op.as_str();
        self.ec2_calls.get_or_create(&CallLabels { op: op_name, outcome }).inc();
        self.ec2_call_seconds
            .get_or_create(&OpLabel { op: op_name })
            .observe(duration.as_secs_f64());
    }

    pub fn set_shards_owned(&self, n: usize) {
        self.shards_owned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One peer datagram went `direction` ([`DATAGRAM_SENT`], …).
    pub fn peer_datagram(&self, direction: &'static str) {
        self.peer_datagrams.get_or_create(&DirectionLabel { direction }).inc();
    }

    /// One peer datagram refused by authentication, for `reason`.
    pub fn peer_message_rejected(&self, reason: &'static str) {
        self.peer_rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn observe_peer_verdict(&self, verdict: &Verdict) {
        let verdict = match verdict {
            Verdict::Suspect { .. } => "suspect",
            Verdict::Dead { .. } => "dead",
            Verdict::Alive { .. } => "alive",
            Verdict::Restarted { .. } => "restarted",
        };
        self.peer_verdicts.get_or_create(&VerdictLabel { verdict }).inc();
    }

    /// What the detector believes of its members, counted by status (every
    /// status present, 0 included, so that a series never vanishes).
    pub fn set_peer_members<'a>(&self, statuses: impl IntoIterator<Item = &'a PeerStatus>) {
        let mut counts = [0i64; 4];
        for status in statuses {
            counts[status_index(*status)] += 1;
        }
        for status in [
            PeerStatus::Alive,
            PeerStatus::Suspect,
            PeerStatus::Dead,
            PeerStatus::Left,
        ] {
            self.peer_members
                .get_or_create(&StatusLabel {
                    status: status_label(status),
                })
                .set(counts[status_index(status)]);
        }
    }

    /// The dashboard accepted (`true`) or closed (`false`) a connection.
    pub fn dashboard_connection(&self, opened: bool) {
        if opened {
            self.dashboard_connections.inc();
        } else {
            self.dashboard_connections.dec();
        }
    }

    /// The dashboard closed a connection at once: too many were open.
    pub fn dashboard_connection_rejected(&self) {
        self.dashboard_rejected.inc();
    }

    /// The dashboard closed a connection that sent no complete header in time.
    pub fn dashboard_connection_timed_out(&self) {
        self.dashboard_timed_out.inc();
    }

    /// The OpenMetrics text of every family, with the time-dependent gauges
    /// brought up to now.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// As [`render`](Self::render), followed by the families of `scrape`
    /// (gauges computed for this scrape; their names must differ from ours).
    pub fn render_with(&self, scrape: Option<&Registry>) -> String {
        let now = TokioInstant::now();
        let since = self
            .last_heartbeat_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.created_at);
        self.heartbeat_age_seconds
            .set(now.saturating_duration_since(since).as_secs_f64());
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        if let Some(scrape) = scrape {
            let _ = encode_registry(&mut text, scrape);
        }
        let _ = encode_eof(&mut text);
        text
    }
}

fn status_index(status: PeerStatus) -> usize {
    match status {
        PeerStatus::Alive => 0,
        PeerStatus::Suspect => 1,
        PeerStatus::Dead => 2,
        PeerStatus::Left => 3,
    }
}

/// The `status` label of a peer (also the dashboard's word for it).
pub fn status_label(status: PeerStatus) -> &'static str {
    match status {
        PeerStatus::Alive => "alive",
        PeerStatus::Suspect => "suspect",
        PeerStatus::Dead => "dead",
        PeerStatus::Left => "left",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipfleet_core::{NodeId, ShardId};

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{text}"))
    }

    #[test]
    fn events_and_calls_show_up_in_the_text() {
        let m = Metrics::new();
        let shard = |s: &str| s.parse::<ShardId>().unwrap();
        m.observe_event(&Event::Acquired {
            shard: shard("10.200.0.1/32"),
            from: Some(NodeId::new("i-dead")),
            epoch: 2,
        });
        m.observe_event(&Event::Acquired {
            shard: shard("10.200.0.2/32"),
            from: None,
            epoch: 1,
        });
        m.observe_event(&Event::ItemsSkipped {
            skipped: vec![
                vipfleet_core::store::Skipped {
                    key: "node#junk".into(),
                    reason: "hb is not a number".into(),
                    node: Some(NodeId::new("junk")),
                    shard: None,
                },
                vipfleet_core::store::Skipped {
                    key: "node#other".into(),
                    reason: "eni is missing".into(),
                    node: Some(NodeId::new("other")),
                    shard: None,
                },
            ],
        });
        m.observe_event(&Event::StoreError {
            kind: vipfleet_core::store::StoreErrorKind::TableMissing,
            detail: "ResourceNotFoundException".into(),
        });
        m.observe_event(&Event::NodeGone {
            node: NodeId::new("i-dead"),
        });
        m.observe_store_call(StoreOp::Acquire, "conflict", Duration::from_millis(5));
        m.observe_route_call(RouteOp::Replace, "no_route", Duration::from_millis(30));
        m.set_shards_owned(7);
        let text = m.render();
        assert_eq!(line(&text, "vipfleet_takeovers_total"), "vipfleet_takeovers_total 1");
        assert_eq!(line(&text, "vipfleet_claims_total"), "vipfleet_claims_total 1");
        assert_eq!(
            line(&text, "vipfleet_lease_expiries_observed_total"),
            "vipfleet_lease_expiries_observed_total 1"
        );
        assert_eq!(line(&text, "vipfleet_shards_owned"), "vipfleet_shards_owned 7");
        assert_eq!(
            line(&text, "vipfleet_items_skipped{"),
            r#"vipfleet_items_skipped{kind="node"} 2"#
        );
        assert_eq!(
            line(&text, "vipfleet_store_table_missing"),
            "vipfleet_store_table_missing 1"
        );
        m.observe_store_call(StoreOp::Heartbeat, OUTCOME_OK, Duration::from_millis(5));
        let text = m.render();
        assert_eq!(
            line(&text, "vipfleet_store_table_missing"),
            "vipfleet_store_table_missing 0"
        );
        assert!(
            text.contains(r#"vipfleet_store_calls_total{op="acquire",outcome="conflict"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vipfleet_ec2_calls_total{op="replace_route",outcome="no_route"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_age_counts_from_the_send_time_of_the_last_success() {
        let m = Metrics::new();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(line(&m.render(), "vipfleet_heartbeat_age_seconds ").ends_with(" 4.0"));
        m.observe_store_call(StoreOp::Heartbeat, OUTCOME_OK, Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            line(&m.render(), "vipfleet_heartbeat_age_seconds "),
            "vipfleet_heartbeat_age_seconds 1.5"
        );
        // A failed heartbeat does not freshen it.
        m.observe_store_call(StoreOp::Heartbeat, "unavailable", Duration::from_millis(10));
        tokio::time::advance(Duration::from_secs(1)).await;
        let text = m.render();
        assert_eq!(
            line(&text, "vipfleet_heartbeat_age_seconds "),
            "vipfleet_heartbeat_age_seconds 2.5"
        );
        assert_eq!(
            line(&text, "vipfleet_heartbeat_duration_seconds_count"),
            "vipfleet_heartbeat_duration_seconds_count 1"
        );
    }

    #[test]
    fn the_token_bucket_is_what_the_machine_last_said() {
        let m = Metrics::new();
        m.set_route_pacing(3.0, 0);
        assert_eq!(
            line(&m.render(), "vipfleet_ec2_token_bucket_level"),
            "vipfleet_ec2_token_bucket_level 3.0"
        );
        m.set_route_pacing(0.5, 4);
        let text = m.render();
        assert_eq!(
            line(&text, "vipfleet_ec2_token_bucket_level"),
            "vipfleet_ec2_token_bucket_level 0.5"
        );
        assert_eq!(
            line(&text, "vipfleet_ec2_failover_waiting"),
            "vipfleet_ec2_failover_waiting 4"
        );
    }

    #[test]
    fn peer_datagrams_verdicts_and_members_show_up() {
        let m = Metrics::new();
        m.peer_datagram(DATAGRAM_SENT);
        m.peer_datagram(DATAGRAM_DROPPED);
        m.peer_datagram(DATAGRAM_DROPPED);
        m.peer_message_rejected("bad_tag");
        m.observe_peer_verdict(&Verdict::Dead {
            node: NodeId::new("i-b"),
            inc: vipfleet_core::Incarnation(7),
        });
        m.set_peer_members([PeerStatus::Alive, PeerStatus::Alive, PeerStatus::Left].iter());
        let text = m.render();
        assert_eq!(
            line(&text, "vipfleet_peer_datagrams_total{direction=\"dropped\"}"),
            "vipfleet_peer_datagrams_total{direction=\"dropped\"} 2"
        );
        assert!(
            text.contains("vipfleet_peer_messages_rejected_total{reason=\"bad_tag\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vipfleet_peer_verdicts_total{verdict=\"dead\"} 1"),
            "{text}"
        );
        assert!(text.contains("vipfleet_peer_members{status=\"alive\"} 2"), "{text}");
        assert!(text.contains("vipfleet_peer_members{status=\"suspect\"} 0"), "{text}");
    }
}
