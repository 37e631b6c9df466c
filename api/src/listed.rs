//! [`Listed`]: the views a master's snapshot lists (agents, tasks,
//! offers), shared between snapshots.
//!
//! A master at tens of thousands of agents cannot copy every view into
//! each snapshot it publishes: the copy would hold up every message
//! behind it. A `Listed` is a persistent ordered map (a B-tree whose nodes
//! are shared between versions, from the `imbl` crate) of shared values:
//! a snapshot clones it in constant time, and the master changes only
//! the entries that changed since the snapshot before, each in
//! logarithmic time, copying only the nodes on its path (pointers to the
//! values, not the values). Readers see a list: it is written as a JSON
//! array of its values in key order, and read back from one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// The key a listed value is ordered by. Read back from a list, a value's
/// key is made from the value and its position in the list.
pub trait ListKey<V>: Ord + Clone {
    /// The key of `value`, found at `position` of a list read back.
    fn of(value: &V, position: u64) -> Self;
}

/// Values ordered by key, shared between snapshots (see the module
/// docs).
pub struct Listed<K: Ord + Clone, V>(imbl::OrdMap<K, Arc<V>>);

impl<K: Ord + Clone, V> Listed<K, V> {
    pub fn new() -> Self {
        Listed(imbl::OrdMap::new())
    }

    /// The values in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.0.values().map(|value| &**value)
    }

    /// Keys and values in key order.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(key, value)| (key, &**value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key).map(|value| &**value)
    }

    pub fn first(&self) -> Option<&V> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<&V> {
        self.iter().next_back()
    }

    /// Sets the value of `key`; the one it replaces, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<Arc<V>> {
        self.0.insert(key, Arc::new(value))
    }

    pub fn remove(&mut self, key: &K) -> Option<Arc<V>> {
        self.0.remove(key)
    }

    /// Keeps the values `keep` says to (off the master's thread: a pass
    /// over all of them).
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let gone: Vec<K> = self
            .entries()
            .filter(|(_, value)| !keep(value))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.0.remove(key);
        }
    }

    /// The keys from `from` on, in order.
    pub fn keys_from<'a>(&'a self, from: &K) -> impl Iterator<Item = &'a K> + 'a {
        self.0.range(from.clone()..).map(|(key, _)| key)
    }
}

impl<K: Ord + Clone, V> Default for Listed<K, V> {
    fn default() -> Self {
        Listed::new()
    }
}

/// A clone shares every node: constant time.
impl<K: Ord + Clone, V> Clone for Listed<K, V> {
    fn clone(&self) -> Self {
        Listed(self.0.clone())
    }
}

impl<K: Ord + Clone, V: fmt::Debug> fmt::Debug for Listed<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when they list equal values in the same order.
impl<K: Ord + Clone, V: PartialEq> PartialEq for Listed<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: ListKey<V>, V> FromIterator<V> for Listed<K, V> {
    fn from_iter<I: IntoIterator<Item = V>>(values: I) -> Self {
        let mut listed = Listed::new();
        for (position, value) in (0u64..).zip(values) {
            listed.insert(K::of(&value, position), value);
        }
        listed
    }
}

impl<'a, K: Ord + Clone, V> IntoIterator for &'a Listed<K, V> {
    type Item = &'a V;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a V> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<K: Ord + Clone, V: Serialize> Serialize for Listed<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, K: ListKey<V>, V: Deserialize<'de>> Deserialize<'de> for Listed<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List<K, V>(PhantomData<(K, V)>);
        impl<'de, K: ListKey<V>, V: Deserialize<'de>> Visitor<'de> for List<K, V> {
            type Value = Listed<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut listed = Listed::new();
                let mut position = 0u64;
                while let Some(value) = seq.next_element::<V>()? {
                    listed.insert(K::of(&value, position), value);
                    position += 1;
                }
                Ok(listed)
            }
        }
        deserializer.deserialize_seq(List(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Named {
        name: String,
    }

    impl ListKey<Named> for String {
        fn of(value: &Named, _: u64) -> String {
            value.name.clone()
        }
    }

    #[test]
    fn a_listed_map_is_a_list_in_key_order_and_reads_back() {
        let mut listed: Listed<String, Named> = Listed::new();
        for name in ["b", "c", "a"] {
            listed.insert(name.into(), Named { name: name.into() });
        }
        let shared = listed.clone();
        listed.remove(&"c".to_owned());
        let text = serde_json::to_string(&shared).unwrap_or_default();
        assert_eq!(text, r#"[{"name":"a"},{"name":"b"},{"name":"c"}]"#);
        let read: Listed<String, Named> = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(read, shared);
        assert_eq!(listed.len(), 2, "a clone is not changed by its original");
        assert_eq!(shared.last().map(|named| named.name.as_str()), Some("c"));
        assert!(serde_json::from_str::<Listed<String, Named>>(r#"{"a":1}"#).is_err());
    }
}
