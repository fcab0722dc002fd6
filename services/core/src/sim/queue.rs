//! The simulation's agenda: events by due time, ties broken by the order
//! they were scheduled in (a sequence number), so a run is deterministic.
//!
//! Each entry carries its event: popping one is a heap operation and
//! nothing else (events used to sit in a map beside a heap of keys, a
//! second ordered lookup per event).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::time::Instant;

struct Entry<T> {
    at: Instant,
    seq: u64,
    what: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: the heap is a max-heap, the agenda wants the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(super) struct Agenda<T> {
    heap: BinaryHeap<Entry<T>>,
}

impl<T> Default for Agenda<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T> Agenda<T> {
    /// `seq` must grow with every call: it orders events due together.
    pub(super) fn push(&mut self, at: Instant, seq: u64, what: T) {
        self.heap.push(Entry { at, seq, what });
    }

    /// The earliest event, and when it is due.
    pub(super) fn pop(&mut self) -> Option<(Instant, T)> {
        self.heap.pop().map(|e| (e.at, e.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_then_in_scheduling_order() {
        let mut agenda = Agenda::default();
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        agenda.push(t(5), 1, "late");
        agenda.push(t(1), 2, "first");
        agenda.push(t(1), 3, "second");
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop().map(|(_, w)| w)).collect();
        assert_eq!(order, ["first", "second", "late"]);
    }
}
