//! Looking many keys up in a sorted map or set by walking it once.
//!
//! Planning the targets asks the shard book, the served sets and the
//! targets about every shard, in shard order. At ten thousand shards a
//! search of the tree per question was most of what a plan cost; walking
//! the tree beside the questions answers each in a step or two.

use std::collections::btree_map::{self, BTreeMap};
use std::collections::btree_set::{self, BTreeSet};
use std::iter::Peekable;

/// Answers [`BTreeMap::get`] for keys asked in ascending order, walking the
/// map once. A key below the last one asked starts the walk again from
/// it, so any order gives the right answer (only more slowly).
pub(crate) struct MapWalk<'a, K, V> {
    map: &'a BTreeMap<K, V>,
    rest: Peekable<btree_map::Range<'a, K, V>>,
    last: Option<K>,
}

impl<'a, K: Ord + Copy, V> MapWalk<'a, K, V> {
    pub(crate) fn new(map: &'a BTreeMap<K, V>) -> Self {
        Self {
            map,
            rest: map.range(..).peekable(),
            last: None,
        }
    }

    pub(crate) fn get(&mut self, key: K) -> Option<&'a V> {
        if self.last.is_some_and(|last| key < last) {
            self.rest = self.map.range(key..).peekable();
        }
        self.last = Some(key);
        while self.rest.next_if(|(k, _)| **k < key).is_some() {}
        self.rest.peek().filter(|(k, _)| **k == key).map(|(_, v)| *v)
    }
}

/// [`MapWalk`] for [`BTreeSet::contains`].
pub(crate) struct SetWalk<'a, K> {
    set: &'a BTreeSet<K>,
    rest: Peekable<btree_set::Range<'a, K>>,
    last: Option<K>,
}

impl<'a, K: Ord + Copy> SetWalk<'a, K> {
    pub(crate) fn new(set: &'a BTreeSet<K>) -> Self {
        Self {
            set,
            rest: set.range(..).peekable(),
            last: None,
        }
    }

    pub(crate) fn contains(&mut self, key: K) -> bool {
        if self.last.is_some_and(|last| key < last) {
            self.rest = self.set.range(key..).peekable();
        }
        self.last = Some(key);
        while self.rest.next_if(|k| **k < key).is_some() {}
        self.rest.peek().is_some_and(|k| **k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// In any order, the walks answer as the lookups they replace.
        #[test]
        fn same_answers_as_lookups(
            keys in prop::collection::btree_set(0u32..200, 0..80),
            asked in prop::collection::vec(0u32..220, 0..120),
            sort in any::<bool>(),
        ) {
            let map: BTreeMap<u32, u32> = keys.iter().map(|k| (*k, k * 3)).collect();
            let mut asked = asked;
            if sort {
                asked.sort();
            }
            let mut in_map = MapWalk::new(&map);
            let mut in_set = SetWalk::new(&keys);
            for key in asked {
                prop_assert_eq!(in_map.get(key), map.get(&key));
                prop_assert_eq!(in_set.contains(key), keys.contains(&key));
            }
        }
    }
}
