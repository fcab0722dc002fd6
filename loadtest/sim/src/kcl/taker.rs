//! What one run of KCL's lease taker decides, from what its Scan showed:
//! `DynamoDBLeaseTaker.computeLeasesToTake` and `chooseLeasesToSteal`
//! (KCL 1.x `LeaseTaker`, the same rules in 2.x), without the I/O.
//!
//! - Workers are the owners of the leases that are not expired, plus the
//!   taker itself (`computeLeaseCounts`): a dead worker stops counting once
//!   all its leases look expired.
//! - The target is `ceil(leases / workers)` (1 when there are at least as
//!   many workers as leases); `maxLeasesForWorker` is unlimited by default.
//! - Under target, the taker takes expired leases, up to the target, chosen
//!   at random (`Collections.shuffle`).
//! - Under target with nothing expired, it steals from the most loaded
//!   worker: the excess over target, or 1 if that worker is at target and
//!   the taker needs more than 1; never more than
//!   `maxLeasesToStealAtOneTime` (default 1).

use std::collections::BTreeMap;

/// What a taker does this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// Take this many of the expired leases (chosen at random).
    TakeExpired(usize),
    /// Steal this many leases (chosen at random) from this worker.
    Steal {
        from: usize,
        count: usize,
    },
}

/// `counts`: leases per worker among the leases not expired, the taker
/// included (with 0 if it holds none); `expired`: how many leases look
/// expired.
pub fn plan(me: usize, leases: usize, counts: &BTreeMap<usize, usize>, expired: usize, max_steal: usize) -> Plan {
    if leases == 0 {
        return Plan::Nothing;
    }
    let workers = counts.len().max(1);
    let target = if workers >= leases { 1 } else { leases.div_ceil(workers) };
    let mine = counts.get(&me).copied().unwrap_or(0);
    let needed = target.saturating_sub(mine);
    if needed == 0 {
        return Plan::Nothing;
    }
    if expired > 0 {
        return Plan::TakeExpired(needed.min(expired));
    }
    // The first of the most loaded in worker order: KCL takes the first in
    // its HashMap's order, which is as arbitrary and as fixed.
    let Some((&from, &most)) = counts
        .iter()
        .fold(None, |best: Option<(&usize, &usize)>, (w, c)| match best {
            Some((_, b)) if b >= c => best,
            _ => Some((w, c)),
        })
    else {
        return Plan::Nothing;
    };
    if most < target {
        return Plan::Nothing;
    }
    let over = most - target;
    let mut count = needed.min(over);
    if needed > 1 && count == 0 {
        count = 1;
    }
    let count = count.min(max_steal);
    if count == 0 || from == me {
        Plan::Nothing
    } else {
        Plan::Steal { from, count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(usize, usize)]) -> BTreeMap<usize, usize> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn takes_expired_leases_up_to_the_target() {
        // 30 leases, 3 live workers: target 10; I hold 8 and 5 are expired.
        let c = counts(&[(0, 8), (1, 10), (2, 7)]);
        assert_eq!(plan(0, 30, &c, 5, 1), Plan::TakeExpired(2));
        assert_eq!(plan(2, 30, &c, 2, 1), Plan::TakeExpired(2));
    }

    #[test]
    fn steals_one_at_a_time_from_the_most_loaded() {
        // A newcomer with nothing: target ceil(30 / 4) = 8, most loaded 10.
        let c = counts(&[(0, 10), (1, 10), (2, 10), (3, 0)]);
        assert_eq!(plan(3, 30, &c, 0, 1), Plan::Steal { from: 0, count: 1 });
        // With a higher limit it takes the excess (2), not all it needs.
        assert_eq!(plan(3, 30, &c, 0, 5), Plan::Steal { from: 0, count: 2 });
    }

    #[test]
    fn one_short_of_a_worker_at_target_is_stable() {
        // 29 leases over 3: target 10; 9 + 10 + 10 steals nothing.
        let c = counts(&[(0, 9), (1, 10), (2, 10)]);
        assert_eq!(plan(0, 29, &c, 0, 1), Plan::Nothing);
        // Two short of it steals one.
        let c = counts(&[(0, 8), (1, 11), (2, 10)]);
        assert_eq!(plan(0, 29, &c, 0, 1), Plan::Steal { from: 1, count: 1 });
    }

    #[test]
    fn more_workers_than_leases_means_one_each() {
        let c = counts(&[(0, 1), (1, 1), (2, 0)]);
        assert_eq!(plan(2, 2, &c, 0, 1), Plan::Nothing);
        assert_eq!(plan(2, 2, &c, 1, 1), Plan::TakeExpired(1));
    }
}
