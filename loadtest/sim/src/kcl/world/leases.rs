//! The lease table's calls: the renewer's renewals, the taker's Scan and
//! takes (KCL's rules: [`super::super`]).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use vipfleet_core::units;

use super::{Ev, Take, World};
use crate::kcl::taker::{self, Plan};
use crate::kcl::{
    lease_item_bytes, scan_half_units, DISPATCH_POLL_INTERVAL, MAX_LEASES_TO_STEAL_AT_ONE_TIME, RENEW_INTERVAL,
    TAKER_INTERVAL,
};

impl World<'_> {
    /// The renewer's run (at a fixed rate): every held lease, in parallel.
    pub(super) fn renew(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        let held: Vec<(usize, u64)> = self.workers[w].held.iter().map(|(&l, &c)| (l, c)).collect();
        for (lease, expected) in held {
            let at = self.now + self.leg();
            self.schedule(at, Ev::RenewArrives { w, lease, expected });
        }
        self.schedule(self.now + RENEW_INTERVAL, Ev::Renew { w });
    }

    pub(super) fn renew_arrives(&mut self, w: usize, lease: usize, expected: u64) {
        let l = &self.leases[lease];
        let ok = l.owner == Some(w) && l.counter == expected;
        let counter = if ok {
            self.write(lease, w);
            Some(self.leases[lease].counter)
        } else {
            self.bill_failed_write(lease);
            None
        };
        let at = self.now + self.leg();
        self.schedule(at, Ev::RenewAnswer { w, lease, counter });
    }

    /// The taker's Scan reaches the table: read every item, decide.
    pub(super) fn scan(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        let (pages, half) = scan_half_units(self.table_bytes);
        self.store.read_calls += pages;
        self.store.read_half_units += half;
        self.store.items_read += self.leases.len() as u64;
        let prev = self.workers[w].prev_scan.replace(self.now);
        // Unchanged since the previous Scan: unchanged for a taker
        // interval, longer than the failover time.
        let expired: Vec<usize> = match prev {
            Some(p) => self.by_change.range(..=(p, usize::MAX)).map(|&(_, l)| l).collect(),
            None => Vec::new(),
        };
        let mut expired_by_owner: BTreeMap<usize, usize> = BTreeMap::new();
        for &l in &expired {
            if let Some(o) = self.leases[l].owner {
                *expired_by_owner.entry(o).or_default() += 1;
            }
        }
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for (o, set) in self.owned.iter().enumerate() {
            let live = set.len() - expired_by_owner.get(&o).copied().unwrap_or(0);
            if live > 0 {
                counts.insert(o, live);
            }
        }
        counts.entry(w).or_insert(0);
        let chosen: Vec<usize> = match taker::plan(
            w,
            self.leases.len(),
            &counts,
            expired.len(),
            MAX_LEASES_TO_STEAL_AT_ONE_TIME,
        ) {
            Plan::Nothing => Vec::new(),
            Plan::TakeExpired(n) => {
                let mut expired = expired;
                expired.shuffle(&mut self.rng);
                expired.truncate(n);
                expired
            }
            Plan::Steal { from, count } => {
                let mut candidates: Vec<usize> = self.owned[from].iter().copied().collect();
                candidates.shuffle(&mut self.rng);
                candidates.truncate(count);
                candidates
            }
        };
        let takes = chosen
            .into_iter()
            .map(|lease| Take {
                lease,
                counter: self.leases[lease].counter,
                owner: self.leases[lease].owner,
            })
            .collect();
        self.workers[w].takes = takes;
        // The Scan's other pages, one after another, then its answer.
        let mut done = self.now + self.leg();
        for _ in 1..pages {
            done += self.leg() + self.leg();
        }
        self.schedule(done, Ev::ScanDone { w });
    }

    /// The taker's next take, or its next run a taker interval after this
    /// one ended (KCL schedules it with a fixed delay).
    pub(super) fn next_take(&mut self, w: usize) {
        if !self.alive(w) {
            return;
        }
        match self.workers[w].takes.pop_front() {
            Some(take) => {
                let at = self.now + self.leg();
                self.schedule(at, Ev::TakeArrives { w, take });
            }
            None => self.schedule(self.now + TAKER_INTERVAL, Ev::Taker { w }),
        }
    }

    pub(super) fn take_arrives(&mut self, w: usize, take: Take) {
        let l = &self.leases[take.lease];
        let ok = l.counter == take.counter && l.owner == take.owner;
        let counter = if ok {
            let before = l.owner;
            self.write(take.lease, w);
            if before.is_some_and(|b| b != w) {
                self.moved(before);
            }
            self.check_restored(take.lease);
            Some(self.leases[take.lease].counter)
        } else {
            self.bill_failed_write(take.lease);
            None
        };
        let at = self.now + self.leg();
        self.schedule(
            at,
            Ev::TakeAnswer {
                w,
                lease: take.lease,
                counter,
            },
        );
    }

    pub(super) fn take_answered(&mut self, w: usize, lease: usize, counter: Option<u64>) {
        if !self.alive(w) {
            return;
        }
        if let Some(c) = counter {
            let worker = &mut self.workers[w];
            worker.held.insert(lease, c);
            // The consumer starts at the scheduler's next poll.
            let since = self.now.saturating_sub(worker.dispatch_phase).as_micros();
            let every = DISPATCH_POLL_INTERVAL.as_micros();
            let polls = since.div_ceil(every).max(1) as u32;
            let at = worker.dispatch_phase + DISPATCH_POLL_INTERVAL * polls;
            self.schedule(at.max(self.now), Ev::StartConsumer { w, lease });
        }
        self.next_take(w);
    }

    /// A successful conditional write: the counter goes up; a new owner
    /// counts an owner switch.
    pub(super) fn write(&mut self, lease: usize, owner: usize) {
        let now = self.now;
        let l = &mut self.leases[lease];
        let before = l.bytes;
        self.by_change.remove(&(l.changed_at, lease));
        if l.owner != Some(owner) {
            if let Some(old) = l.owner {
                self.owned[old].remove(&lease);
            }
            self.owned[owner].insert(lease);
            l.owner = Some(owner);
            l.switches += 1;
        }
        l.counter += 1;
        l.changed_at = now;
        l.bytes = lease_item_bytes(&l.vip, l.counter, l.switches);
        let after = l.bytes;
        self.by_change.insert((now, lease));
        self.table_bytes = self.table_bytes - before + after;
        self.store.write_calls += 1;
        self.store.items_written += 1;
        self.store.write_units += units::write_units(before.max(after), false);
    }

    /// A failed condition costs what the write would have.
    pub(super) fn bill_failed_write(&mut self, lease: usize) {
        self.store.write_calls += 1;
        self.store.write_units += units::write_units(self.leases[lease].bytes, false);
    }

    pub(super) fn moved(&mut self, from: Option<usize>) {
        self.moves += 1;
        self.move_times.push(self.now);
        if let Some(&i) = from.and_then(|f| self.drained.get(&f)) {
            self.event_moves[i].actual += 1;
        }
    }

    pub(super) fn renew_answered(&mut self, w: usize, lease: usize, counter: Option<u64>) {
        let Some(worker) = self.workers.get_mut(w).filter(|x| x.alive) else {
            return;
        };
        match counter {
            Some(c) => {
                if let Some(held) = worker.held.get_mut(&lease) {
                    *held = c;
                }
            }
            // Someone took it: KCL drops the lease.
            None => {
                worker.held.remove(&lease);
            }
        }
    }
}
