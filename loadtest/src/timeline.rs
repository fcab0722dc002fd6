//! From request records and fault events to what users saw: per VIP, when
//! it went dark after a fault and when it answered again.
//!
//! A VIP is *affected* by a fault when one of its requests ended in failure
//! between the fault and the next one (a request belongs where it ended: one
//! in flight when a node was killed fails because of the kill); its *outage*
//! runs from the fault to the first good response after its first failure.
//! All times are Unix milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::load::Record;

/// Something the harness did to the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub t_ms: u64,
    pub kind: String,
    pub node: String,
}

/// One VIP's experience of one fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub vip: Ipv4Addr,
    pub fault: usize,
    pub failed: u64,
    /// `None`: never answered again.
    pub outage_ms: Option<u64>,
}

/// Outages of every VIP after every fault, over records from all clients.
/// An outage belongs to the fault before its first failure, and runs until
/// the first good answer, even past the next fault: a VIP still dark when
/// the next fault comes is that fault's only if it fails again after it
/// answered.
pub fn outages(records: &[Record], faults: &[FaultEvent], end_ms: u64) -> Vec<Outage> {
    let mut by_vip: BTreeMap<Ipv4Addr, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_vip.entry(r.vip).or_default().push(r);
    }
    for list in by_vip.values_mut() {
        list.sort_by_key(|r| r.done_ms());
    }
    // When each VIP's last outage ended (`u64::MAX`: it never did).
    let mut dark_until: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let until = faults.get(i + 1).map_or(end_ms, |f| f.t_ms);
        for (vip, list) in &by_vip {
            let from = fault.t_ms.max(dark_until.get(vip).copied().unwrap_or(0));
            let in_window = |r: &&Record| r.done_ms() >= from && r.done_ms() < until;
            let Some(first_failure) = list.iter().position(|r| in_window(&r) && !r.ok) else {
                continue;
            };
            let failed = list[first_failure..].iter().filter(|r| in_window(r) && !r.ok).count() as u64;
            let restored = list[first_failure..].iter().find(|r| r.ok);
            dark_until.insert(*vip, restored.map_or(u64::MAX, |r| r.done_ms()));
            out.push(Outage {
                vip: *vip,
                fault: i,
                failed,
                outage_ms: restored.map(|r| r.t_ms.saturating_sub(fault.t_ms)),
            });
        }
    }
    out
}

/// Failed requests to VIPs outside `expected`, per VIP: these break the
/// promise that a fault touches only the faulted node's VIPs.
pub fn unexpected_failures(records: &[Record], expected: &BTreeSet<Ipv4Addr>, from_ms: u64) -> BTreeMap<Ipv4Addr, u64> {
    let mut failures = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| !r.ok && r.t_ms >= from_ms && !expected.contains(&r.vip))
    {
        *failures.entry(r.vip).or_insert(0) += 1;
    }
    failures
}

/// The `p`th percentile (0..=100) by nearest rank; 0 for no values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
            error: if ok { String::new() } else { "timeout".into() },
        }
    }

    #[test]
    fn outage_runs_from_the_fault_to_the_first_answer_after_failing() {
        let fault = FaultEvent {
            t_ms: 1000,
            kind: "crash".into(),
            node: "n1".into(),
        };
        let mut in_flight = rec(3, 990, false); // sent before the kill, failed by it
        in_flight.latency_ms = 20;
        let records = vec![
            in_flight,
            rec(1, 900, true),
            rec(1, 1050, true), // in flight before the kill landed
            rec(1, 1100, false),
            rec(1, 2000, false),
            rec(1, 3400, true),
            rec(1, 3500, true),
            rec(2, 1100, true),
            rec(2, 3000, true),
            rec(3, 1500, false),
        ];
        let got = outages(&records, &[fault], 5000);
        assert_eq!(got.len(), 2, "VIP 2 was never affected");
        assert_eq!(got[0].outage_ms, Some(2400));
        assert_eq!(got[0].failed, 2);
        assert_eq!(got[1].vip, Ipv4Addr::new(10, 200, 0, 3));
        assert_eq!(got[1].outage_ms, None, "VIP 3 never came back");
        assert_eq!(got[1].failed, 2, "the request in flight at the fault counts");
    }

    #[test]
    fn an_outage_past_the_next_fault_is_the_first_faults() {
        let faults = [
            FaultEvent {
                t_ms: 1000,
                kind: "crash".into(),
                node: "n1".into(),
            },
            FaultEvent {
                t_ms: 2500,
                kind: "route-drift".into(),
                node: "r".into(),
            },
        ];
        let records = vec![
            rec(1, 1100, false),
            rec(1, 2400, false),
            rec(1, 2520, false),
            rec(1, 2566, true),
            rec(1, 2700, true),
            // Dark again after it answered: the drift's.
            rec(2, 1200, false),
            rec(2, 1300, true),
            rec(2, 2600, false),
            rec(2, 2900, true),
        ];
        let got = outages(&records, &faults, 5000);
        let of = |vip: u8| -> Vec<(usize, Option<u64>)> {
            got.iter()
                .filter(|o| o.vip == Ipv4Addr::new(10, 200, 0, vip))
                .map(|o| (o.fault, o.outage_ms))
                .collect()
        };
        assert_eq!(of(1), vec![(0, Some(1566))], "one outage, measured to its end");
        assert_eq!(of(2), vec![(0, Some(300)), (1, Some(400))]);
    }

    #[test]
    fn failures_outside_the_expected_set_are_counted() {
        let records = vec![
            rec(1, 10, false),
            rec(2, 10, false),
            rec(2, 20, false),
            rec(2, 5, false),
        ];
        let expected: BTreeSet<_> = [Ipv4Addr::new(10, 200, 0, 1)].into();
        let got = unexpected_failures(&records, &expected, 8);
        assert_eq!(got, BTreeMap::from([(Ipv4Addr::new(10, 200, 0, 2), 2)]));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
