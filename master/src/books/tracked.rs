//! [`Tracked`]: a map of the books that remembers which keys changed, so
//! the master's snapshot for operators redoes the views of those alone
//! (see `crate::state::Views`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

/// More keys remembered than a map holds, beyond which it says that
/// everything changed instead (a map nobody takes changes from stays
/// bounded). The master takes them when it takes a snapshot, about once
/// a second: what a second changes at scale (thousands of tasks and
/// offers that came and went, of a framework's or of all) fits, so that
/// a snapshot redoes what changed rather than everything.
const SLACK: usize = 1 << 16;

/// A map that remembers the keys changed through it since its changes
/// were last taken. It reads as a `BTreeMap`; every change goes through
/// its own methods, which note the key (there is no `DerefMut`).
#[derive(Debug, Clone)]
pub struct Tracked<K: Ord + Clone, V> {
    map: BTreeMap<K, V>,
    changed: BTreeSet<K>,
    /// Too many keys to remember changed: all count as changed.
    all_changed: bool,
}

/// What changed in a [`Tracked`] map since its changes were last taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes<K> {
    /// Possibly everything.
    All,
    /// These keys (changed, added or removed).
    Keys(BTreeSet<K>),
}

impl<K: Ord + Clone, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
            all_changed: false,
        }
    }
}

impl<K: Ord + Clone, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    /// Notes that `key`'s entry changed.
    pub fn mark(&mut self, key: &K) {
        if self.all_changed {
            return;
        }
        if self.changed.len() > self.map.len() + SLACK {
            self.all_changed = true;
            self.changed.clear();
        } else if !self.changed.contains(key) {
            self.changed.insert(key.clone());
        }
    }

    /// `key`'s value to change: noted as changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if self.map.contains_key(key) {
            self.mark(key);
        }
        self.map.get_mut(key)
    }

    /// `key`'s value, for a change to what no view shows (ping
    /// bookkeeping): not noted.
    pub fn get_mut_unseen(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.mark(&key);
        self.map.insert(key, value)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = self.map.remove(key);
        if removed.is_some() {
            self.mark(key);
        }
        removed
    }

    /// Empties it: every key it held noted.
    pub fn clear(&mut self) {
        let keys: Vec<K> = self.map.keys().cloned().collect();
        for key in &keys {
            self.mark(key);
        }
        self.map.clear();
    }

    /// Lets `change` see every entry; the keys it says it changed are
    /// noted.
    pub fn change_each(&mut self, mut change: impl FnMut(&K, &mut V) -> bool) {
        let mut changed = Vec::new();
        for (key, value) in &mut self.map {
            if change(key, value) {
                changed.push(key.clone());
            }
        }
        for key in &changed {
            self.mark(key);
        }
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes<K> {
        if std::mem::take(&mut self.all_changed) {
            self.changed.clear();
            Changes::All
        } else {
            Changes::Keys(std::mem::take(&mut self.changed))
        }
    }
}

impl<'a, K: Ord + Clone, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone, V> FromIterator<(K, V)> for Tracked<K, V> {
    /// A map whose every key counts as changed.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        Tracked {
            map: entries.into_iter().collect(),
            changed: BTreeSet::new(),
            all_changed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_the_keys_changed_since_they_were_last_taken() {
        let mut map: Tracked<u32, &str> = Tracked::default();
        map.insert(1, "a");
        map.insert(2, "b");
        assert_eq!(map.take_changes(), Changes::Keys([1, 2].into()));
        if let Some(value) = map.get_mut_unseen(&1) {
            *value = "c";
        }
        map.get_mut(&3);
        assert_eq!(map.take_changes(), Changes::Keys([].into()), "{map:?}");
        map.remove(&2);
        map.change_each(|key, _| *key == 1);
        assert_eq!(map.take_changes(), Changes::Keys([1, 2].into()));
        assert_eq!(map.get(&1), Some(&"c"));
    }

    #[test]
    fn a_map_whose_changes_nobody_takes_stays_bounded() {
        let mut map: Tracked<usize, ()> = Tracked::default();
        for key in 0..10 * SLACK {
            map.insert(key, ());
            map.remove(&key);
        }
        assert!(map.changed.len() <= SLACK + 1);
        assert_eq!(map.take_changes(), Changes::All);
        assert_eq!(map.take_changes(), Changes::Keys([].into()));
    }
}
