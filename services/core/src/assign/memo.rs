//! Reusing the last [`assign`]ment while owners only move to where it sent
//! them.
//!
//! A node plans its targets again whenever a shard's owner changes, and
//! while a fleet forms or fails over, almost every change is a claim (or a
//! hand-off) landing where the last assignment sent the shard. The
//! assignment of thousands of shards ranks every orphan against every
//! member with spare quota; such a change cannot alter it. Say shard `s`
//! moves to `m`, its target, from an owner that was not `m`:
//!
//! - `s` came to `m` as an orphan (it was neither kept nor sticky for
//!   `m`), so `m` is a member that takes and held fewer shards than its
//!   quota; after the move it holds at most its quota, and keeps them all.
//! - A former owner that takes held more than its quota (it did not keep
//!   `s`), so after the move it holds at least its quota and keeps the
//!   same shards. Owners that do not take are out of the sharing.
//! - Quotas: the leftover shards go to the members first in an order that
//!   puts members holding more than their base share first. `m` can only
//!   move up, and crosses that line only if it already got a leftover; a
//!   former owner can only move down, and stays above the line if it got
//!   one. The same members get them.
//! - Orphans: `m` starts one shard fuller, so it may leave the members with
//!   spare quota earlier than at `s`, but only after its last win before
//!   `s`: the orphans in between went to others, and still do.
//!
//! Changes one at a time keep the assignment, so any number of them do. On
//! anything else (other shards or members, an owner lost, or one that is
//! not the target) the assignment is computed afresh.
//!
//! A simulation runs a thousand machines, each planning from its own view;
//! views that agree ask for the same assignment, and the assignment is a
//! pure function. So the memo remembers the last few assignments, and the
//! machines of one simulation may share it ([`AssignMemo::shared`]): the
//! rule above holds against any remembered one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{assign, Assignment, Member};
use crate::types::{NodeId, ShardId};

/// The last assignments computed, with their inputs; cloning it shares them.
#[derive(Clone, Debug)]
pub struct AssignMemo {
    recent: Arc<Mutex<Recent>>,
}

#[derive(Debug)]
struct Recent {
    /// Newest first.
    computed: VecDeque<Computed>,
    capacity: usize,
}

#[derive(Debug)]
struct Computed {
    shards: Vec<ShardId>,
    members: Vec<Member>,
    owners: BTreeMap<ShardId, NodeId>,
    assignment: SharedAssignment,
}

/// An [`Assignment`] shared, not copied, between the memo and whoever
/// asked for it: a node plans its targets after every change it learns,
/// and a copy of ten thousand targets cost more than finding them reused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedAssignment {
    pub target: Arc<BTreeMap<ShardId, NodeId>>,
    pub quota: Arc<BTreeMap<NodeId, usize>>,
}

impl From<Assignment> for SharedAssignment {
    fn from(a: Assignment) -> Self {
        Self {
            target: Arc::new(a.target),
            quota: Arc::new(a.quota),
        }
    }
}

impl Default for AssignMemo {
    /// A node's own memo: its last assignment is all it can reuse.
    fn default() -> Self {
        Self::shared(1)
    }
}

impl AssignMemo {
    /// A memo remembering the last `capacity` assignments, for clones of it
    /// handed to many machines.
    pub fn shared(capacity: usize) -> Self {
        Self {
            recent: Arc::new(Mutex::new(Recent {
                computed: VecDeque::with_capacity(capacity),
                capacity: capacity.max(1),
            })),
        }
    }

    /// What [`assign`] returns for these inputs.
    pub fn assign(
        &self,
        shards: &[ShardId],
        members: &[Member],
        owners: BTreeMap<ShardId, NodeId>,
    ) -> SharedAssignment {
        // A panic while the lock was held left nothing half written: an
        // entry is pushed whole or not at all.
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let reusable = recent.computed.iter().position(|c| {
            c.shards == shards && c.members == members && moved_to_targets(&c.owners, &owners, &c.assignment.target)
        });
        if let Some(at) = reusable {
            // Moved to the front: the views of a fleet drift together.
            let hit = recent.computed.remove(at).expect("found above");
            let assignment = hit.assignment.clone();
            recent.computed.push_front(hit);
            return assignment;
        }
        let assignment = SharedAssignment::from(assign(shards, members, &owners));
        if recent.computed.len() == recent.capacity {
            recent.computed.pop_back();
        }
        recent.computed.push_front(Computed {
            shards: shards.to_vec(),
            members: members.to_vec(),
            owners,
            assignment: assignment.clone(),
        });
        assignment
    }
}

/// Whether every shard whose owner differs between `before` and `after`
/// has its `target` as owner in `after`.
fn moved_to_targets(
    before: &BTreeMap<ShardId, NodeId>,
    after: &BTreeMap<ShardId, NodeId>,
    target: &BTreeMap<ShardId, NodeId>,
) -> bool {
    // Both maps in shard order, side by side.
    let mut before = before.iter().peekable();
    for (shard, owner) in after {
        let mut was = None;
        while let Some((s, o)) = before.peek() {
            if *s > shard {
                break;
            }
            if *s < shard {
                return false; // lost its owner
            }
            was = Some(*o);
            before.next();
        }
        if was != Some(owner) && target.get(shard) != Some(owner) {
            return false;
        }
    }
    before.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Role;
    use proptest::prelude::*;

    fn shard(i: u32) -> ShardId {
        ShardId::of(crate::Vip::new(std::net::Ipv4Addr::from(0x0ac8_0000 + i), 32).unwrap())
    }

    fn members(n: usize, weights: &[u32]) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: NodeId::new(format!("i-{i:04}")),
                weight: weights[i],
                role: Role::Takes,
            })
            .collect()
    }

    proptest! {
        /// Claims of targets, and hand-offs to them, in rounds: the memo
        /// answers as a fresh assignment would, reused or not.
        #[test]
        fn same_answer_as_assigning_afresh(
            n in 1usize..10,
            s in 0u32..120,
            weights in prop::collection::vec(1u32..4, 10),
            owned in prop::collection::vec((0u32..120, 0usize..10), 0..80),
            roles in prop::collection::vec(0u8..3, 10),
            rounds in prop::collection::vec(prop::collection::vec((0u32..120, 0u8..4), 0..30), 1..5),
        ) {
            let mut m = members(n, &weights);
            let all = [Role::Takes, Role::Keeps, Role::Leaves];
            for (member, r) in m.iter_mut().zip(&roles).take(n / 3) {
                member.role = all[usize::from(*r)];
            }
            let shards: Vec<ShardId> = (0..s).map(shard).collect();
            let mut owners: BTreeMap<ShardId, NodeId> =
                owned.iter().filter(|(sh, _)| *sh < s).map(|(sh, o)| (shard(*sh), m[o % n].id.clone())).collect();
            let memo = AssignMemo::default();
            let mut current = memo.assign(&shards, &m, owners.clone());
            prop_assert_eq!(&current, &assign(&shards, &m, &owners).into());
            for round in rounds {
                for (sh, what) in round {
                    let sh = shard(sh % s.max(1));
                    match what {
                        // Mostly: the shard goes to its target.
                        0 | 1 => {
                            if let Some(to) = current.target.get(&sh) {
                                owners.insert(sh, to.clone());
                            }
                        }
                        // Now and then: it loses its owner, or goes elsewhere.
                        2 => {
                            owners.remove(&sh);
                        }
                        _ => {
                            owners.insert(sh, m[sh.key() as usize % n].id.clone());
                        }
                    }
                }
                current = memo.assign(&shards, &m, owners.clone());
                prop_assert_eq!(&current, &assign(&shards, &m, &owners).into());
            }
        }
    }

    proptest! {
        /// Two views that drift apart, each moving shards mostly to the
        /// targets it was given, ask one shared memo in turns: each gets
        /// what a fresh assignment of its own view gives.
        #[test]
        fn views_sharing_a_memo_get_their_own_answers(
            n in 1usize..8,
            s in 1u32..100,
            owned in prop::collection::vec((0u32..100, 0usize..8, any::<bool>()), 0..60),
            rounds in prop::collection::vec(prop::collection::vec((0u32..100, 0u8..4, any::<bool>()), 0..20), 1..6),
            capacity in 1usize..4,
        ) {
            let m = members(n, &[1; 8]);
            let shards: Vec<ShardId> = (0..s).map(shard).collect();
            let mut views: [BTreeMap<ShardId, NodeId>; 2] = Default::default();
            for (sh, o, second) in owned {
                views[usize::from(second)].insert(shard(sh % s), m[o % n].id.clone());
            }
            let memo = AssignMemo::shared(capacity);
            let mut current: Vec<SharedAssignment> =
                views.iter().map(|v| memo.assign(&shards, &m, v.clone())).collect();
            for round in rounds {
                for (sh, what, second) in round {
                    let view = usize::from(second);
                    let sh = shard(sh % s);
                    match what {
                        0 | 1 => {
                            if let Some(to) = current[view].target.get(&sh) {
                                views[view].insert(sh, to.clone());
                            }
                        }
                        2 => {
                            views[view].remove(&sh);
                        }
                        _ => {
                            views[view].insert(sh, m[sh.key() as usize % n].id.clone());
                        }
                    }
                }
                for view in 0..2 {
                    current[view] = memo.assign(&shards, &m, views[view].clone());
                    prop_assert_eq!(&current[view], &assign(&shards, &m, &views[view]).into());
                }
            }
        }
    }

    #[test]
    fn a_claim_of_a_target_reuses_the_assignment_and_a_loss_does_not() {
        let m = members(3, &[1, 1, 1]);
        let shards: Vec<ShardId> = (0..30).map(shard).collect();
        let memo = AssignMemo::default();
        let first = memo.assign(&shards, &m, BTreeMap::new());
        let (s, to) = first.target.iter().next().map(|(s, o)| (*s, o.clone())).unwrap();
        let claimed = BTreeMap::from([(s, to)]);
        assert!(moved_to_targets(&BTreeMap::new(), &claimed, &first.target));
        assert!(!moved_to_targets(&claimed, &BTreeMap::new(), &first.target));
        let again = memo.assign(&shards, &m, claimed);
        assert_eq!(again, first);
        assert!(Arc::ptr_eq(&again.target, &first.target), "reused, not copied");
    }
}
