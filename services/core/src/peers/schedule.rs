//! Which members to probe next: round-robin through a random permutation,
//! reshuffled after each full pass (SWIM's schedule). Every member is
//! probed once per pass, so a crash is noticed within a pass even by a
//! single prober, while different probers (different seeds) cover a member
//! at different times.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::types::NodeId;

#[derive(Clone, Debug, Default)]
pub(super) struct Schedule {
    order: Vec<NodeId>,
    /// The next position to probe in `order`.
    next: usize,
}

impl Schedule {
    /// Adds a member at a random place among those not yet probed in this
    /// pass, so that it is probed within the pass.
    pub fn add(&mut self, node: NodeId, rng: &mut SmallRng) {
        let at = rng.random_range(self.next..=self.order.len());
        self.order.insert(at, node);
    }

    pub fn remove(&mut self, node: &NodeId) {
        if let Some(at) = self.order.iter().position(|n| n == node) {
            self.order.remove(at);
            if at < self.next {
                self.next -= 1;
            }
        }
    }

    /// The next `count` distinct members for which `eligible` holds. Looks
    /// at most two passes' worth of places: a pass that ends midway may hand
    /// the same member again at the start of the next.
    pub fn take(&mut self, count: usize, rng: &mut SmallRng, eligible: impl Fn(&NodeId) -> bool) -> Vec<NodeId> {
        let mut picked: Vec<NodeId> = Vec::with_capacity(count);
        for _ in 0..2 * self.order.len() {
            if picked.len() == count {
                break;
            }
            if self.next >= self.order.len() {
                self.order.shuffle(rng);
                self.next = 0;
            }
            let node = &self.order[self.next];
            self.next += 1;
            if eligible(node) && !picked.contains(node) {
                picked.push(node.clone());
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId::new(format!("n{i}"))).collect()
    }

    #[test]
    fn every_member_is_probed_once_per_pass() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut s = Schedule::default();
        for n in nodes(9) {
            s.add(n, &mut rng);
        }
        let mut counts: BTreeMap<NodeId, u32> = BTreeMap::new();
        for _ in 0..30 {
            for n in s.take(3, &mut rng, |_| true) {
                *counts.entry(n).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 9);
        assert!(counts.values().all(|&c| c == 10), "{counts:?}");
    }

    #[test]
    fn a_small_fleet_is_probed_whole_every_time() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut s = Schedule::default();
        for n in nodes(3) {
            s.add(n, &mut rng);
        }
        for _ in 0..10 {
            let mut got = s.take(3, &mut rng, |_| true);
            got.sort();
            assert_eq!(got, nodes(3));
        }
        s.remove(&NodeId::new("n1"));
        assert_eq!(s.take(3, &mut rng, |_| true).len(), 2);
        assert!(s.take(3, &mut rng, |n| n.as_str() != "n0") == vec![NodeId::new("n2")]);
    }
}
