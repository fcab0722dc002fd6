//! The gauges `/metrics` computes at scrape time from the lease loop's
//! latest published [`Status`](crate::status::Status): this node's lease,
//! mode and haproxy health, and the fleet totals the page shows. They come from the same
//! [`FleetView`] as the page and the JSON, so the three never disagree, and
//! like every handler they never call AWS.
//!
//! Every agent exports the fleet totals as *it* sees the fleet; alert on
//! their maximum over the agents (a node cut off from the table sees an
//! old fleet, the others a current one). Before the lease loop's first
//! step there is no view: the lease reads invalid, the mode `starting`,
//! haproxy health `unknown`, and the fleet families are left out rather
//! than exported as zeros that would look like a healthy, empty fleet.
//!
//! haproxy health is exported twice: `vipfleet_haproxy_health{state}` is
//! one-hot over `healthy`, `unhealthy` and `unknown` (no check has
//! completed yet); `vipfleet_haproxy_healthy` is 1 or 0 for a verdict and
//! NaN without one, so `vipfleet_haproxy_healthy == 0` fires only on a real
//! failure. With `health.disabled` the agent counts itself healthy, and so
//! does this.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::view::{FleetView, Totals};

/// `mode` label values of `vipfleet_mode`, always all exported (one-hot).
/// A mode the agent reports that is not listed here is exported as well.
pub const MODES: [&str; 4] = ["starting", "active", "draining", "unhealthy"];
/// `state` label values of `vipfleet_haproxy_health`, the same way.
pub const HAPROXY_STATES: [&str; 3] = ["healthy", "unhealthy", "unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    state: &'static str,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn seconds(ms: u64) -> f64 {
    // Millisecond counts stay far below 2^53: exact as f64.
    ms as f64 / 1000.0
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn seconds_gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    registry.register_with_unit(name, help, Unit::Seconds, gauge);
}

/// The scrape-time families for `view` (`None` before the first step).
pub fn registry(view: Option<&FleetView>) -> Registry {
    let mut r = Registry::with_prefix("vipfleet");
    let observer = view.map(|v| &v.observer);
    gauge(
        &mut r,
        "lease_valid",
        "1 while this node's own lease is valid (a heartbeat landed within the lease TTL), else 0",
        i64::from(observer.is_some_and(|o| o.lease_valid)),
    );
    seconds_gauge(
        &mut r,
        "lease_remaining",
        "Time until this node's lease runs out unless a heartbeat lands; 0 when it is not valid",
        seconds(observer.and_then(|o| o.lease_remaining_ms).unwrap_or(0)),
    );
    gauge(
        &mut r,
        "reads_cold",
        "1 while this node reads cold (the fleet is settled: it watches only the change counter and one peer), else 0",
        i64::from(observer.is_some_and(|o| o.reads_cold)),
    );
    let current = observer.map_or("starting", |o| o.mode);
    let modes = Family::<ModeLabel, Gauge>::default();
    for mode in MODES.into_iter().chain([current]) {
        modes.get_or_create(&ModeLabel { mode }).set(i64::from(mode == current));
    }
    r.register("mode", "This node's mode, one-hot", modes);
    let health = observer.map_or("unknown", |o| o.health);
    let states = Family::<HealthLabel, Gauge>::default();
    for state in HAPROXY_STATES.into_iter().chain([health]) {
        states
            .get_or_create(&HealthLabel { state })
            .set(i64::from(state == health));
    }
    r.register(
        "haproxy_health",
        "The local haproxy's health as its checks say, one-hot: healthy, unhealthy, unknown (no verdict yet)",
        states,
    );
    let healthy = Gauge::<f64, AtomicU64>::default();
    healthy.set(match health {
        "healthy" => 1.0,
        "unhealthy" => 0.0,
        _ => f64::NAN,
    });
    r.register(
        "haproxy_healthy",
        "The local haproxy's health verdict: 1 healthy, 0 unhealthy, NaN before the first verdict",
        healthy,
    );
    if let Some(view) = view {
        seconds_gauge(
            &mut r,
            "snapshot_age",
            "Age of the lease loop's last published snapshot (it publishes after every step)",
            seconds(view.snapshot_age_ms),
        );
        fleet(&mut r, &view.totals);
    }
    r
}

/// The totals of the dashboard's fleet view, as this observer sees them.
fn fleet(r: &mut Registry, t: &Totals) {
    let nodes = Family::<StateLabel, Gauge>::default();
    // By serialization, so a node state added to the view is exported
    // without touching this module.
    if let Ok(serde_json::Value::Object(states)) = serde_json::to_value(&t.nodes_by_state) {
        for (state, n) in states {
            let n = n.as_i64().unwrap_or(0);
            nodes.get_or_create(&StateLabel { state }).set(n);
        }
    }
    r.register(
        "fleet_nodes",
        "Nodes by state as this observer judges them (gone wins over the state a node wrote)",
        nodes,
    );
    let counts: [(&str, &str, usize); 12] = [
        (
            "fleet_nodes_in_trouble",
            "Nodes with any trouble: gone, dead, unhealthy, late, other configuration, over quota",
            t.nodes_in_trouble,
        ),
        (
            "fleet_nodes_config_mismatch",
            "Nodes announcing a fleet configuration other than this observer's",
            t.nodes_config_mismatch,
        ),
        ("fleet_shards", "Shards in the configured layout", t.shards),
        (
            "fleet_shards_owned",
            "Shards with an owner, live or not",
            t.shards_owned,
        ),
        (
            "fleet_shards_free",
            "Shards with no owner: their VIPs route nowhere new",
            t.shards_free,
        ),
        (
            "fleet_shards_orphaned",
            "Shards owned by a gone, dead or unknown node: their VIPs route to a node that may have stopped",
            t.shards_orphaned,
        ),
        (
            "fleet_shards_moving",
            "Shards owned by a live node while the assignment names another",
            t.shards_moving,
        ),
        (
            "fleet_shards_disputed",
            "Shards served by some members and not others (a VIP list being rolled out)",
            t.shards_disputed,
        ),
        (
            "fleet_shards_in_trouble",
            "Shards with any trouble: no owner, owner not live, a route problem, a stale route check",
            t.shards_in_trouble,
        ),
        (
            "fleet_route_problems",
            "Routes of shards held here that the last read-back found wrong, missing or blackholed",
            t.route_problems,
        ),
        (
            "fleet_route_tables_failing",
            "Route tables whose calls from this node fail for a reason retrying soon will not fix (missing, denied, route limit)",
            t.route_tables_failing,
        ),
        (
            "fleet_moves_last_hour",
            "Shard owner changes this observer saw in the last hour",
            t.moves_last_hour,
        ),
    ];
    for (name, help, n) in counts {
        gauge(r, name, help, count(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(view: Option<&FleetView>) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(view)).unwrap();
        text
    }

    #[test]
    fn before_the_first_step_the_node_is_starting_without_a_lease_or_fleet() {
        let text = render(None);
        assert!(text.contains("vipfleet_lease_valid 0\n"), "{text}");
        assert!(text.contains("vipfleet_lease_remaining_seconds 0.0\n"), "{text}");
        assert!(text.contains("vipfleet_mode{mode=\"starting\"} 1\n"), "{text}");
        for mode in ["active", "draining", "unhealthy"] {
            assert!(
                text.contains(&format!("vipfleet_mode{{mode=\"{mode}\"}} 0\n")),
                "{text}"
            );
        }
        assert_eq!(text.matches("vipfleet_mode{").count(), MODES.len(), "{text}");
        assert!(
            text.contains("vipfleet_haproxy_health{state=\"unknown\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vipfleet_haproxy_health{state=\"healthy\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("vipfleet_haproxy_healthy NaN\n"), "{text}");
        assert!(!text.contains("vipfleet_fleet_"), "{text}");
        assert!(!text.contains("vipfleet_snapshot_age"), "{text}");
    }
}
