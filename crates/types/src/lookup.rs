//! Lookup-only hash maps and sets for the deterministic core (`types`, `book`, `risk`,
//! `engine`).
//!
//! [`LookupMap`] and [`LookupSet`] wrap `fxhash`'s map and set and expose point operations
//! only (get, insert, remove, contains, len, clear). They have no `iter`, `keys`,
//! `values`, `drain`, `retain` or `IntoIterator`, and their `Debug` prints the length
//! only: a hash order cannot reach state, events, the state hash or a report through
//! them. Where an ordered walk is needed, keep a `BTreeMap`, a sorted `Vec` or a `Vec` in
//! creation order beside the index (as the book keeps `prices` beside its level lookup).
//!
//! The core crates ban the raw hash maps with clippy (`disallowed-types` in the workspace
//! `clippy.toml`, denied in each core crate's root; see `docs/DETERMINISM.md`). This module
//! is the one place in them that names one.

// The single sanctioned use of a hash map inside the deterministic core: wrapped so that
// only point operations are reachable.
#![allow(clippy::disallowed_types)]

use fxhash::{FxHashMap, FxHashSet};
use std::fmt;
use std::hash::Hash;
use std::ops::Index;

/// A hash map with point operations only (no iteration). See the module docs.
#[derive(Clone)]
pub struct LookupMap<K, V>(FxHashMap<K, V>);

impl<K, V> Default for LookupMap<K, V> {
    fn default() -> Self {
        LookupMap(FxHashMap::default())
    }
}

impl<K, V> fmt::Debug for LookupMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupMap")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq, V> LookupMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map with room for `capacity` entries before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut map = FxHashMap::default();
        map.reserve(capacity);
        LookupMap(map)
    }

    /// Room for `additional` more entries before the map reallocates.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.0.get_mut(key)
    }

    #[inline]
    pub fn contains_key(&self, key: &K) -> bool {
        self.0.contains_key(key)
    }

    /// Inserts or replaces; returns the value `key` had before, if any.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0.insert(key, value)
    }

    /// Removes `key`; returns its value, if it had one.
    #[inline]
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.0.remove(key)
    }

    /// The value of `key`, inserted from `default()` first if absent.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.0.entry(key).or_insert_with(default)
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// `map[&key]`: panics if `key` is absent, as `HashMap`'s index does.
impl<K: Hash + Eq, V> Index<&K> for LookupMap<K, V> {
    type Output = V;

    #[inline]
    fn index(&self, key: &K) -> &V {
        self.0.get(key).expect("LookupMap: key not present")
    }
}

/// A hash set with point operations only (no iteration). See the module docs.
#[derive(Clone)]
pub struct LookupSet<K>(FxHashSet<K>);

impl<K> Default for LookupSet<K> {
    fn default() -> Self {
        LookupSet(FxHashSet::default())
    }
}

impl<K> fmt::Debug for LookupSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupSet")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> LookupSet<K> {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn contains(&self, key: &K) -> bool {
        self.0.contains(key)
    }

    /// Adds `key`; `false` if it was already present (then nothing changed).
    #[inline]
    pub fn insert(&mut self, key: K) -> bool {
        self.0.insert(key)
    }

    /// Removes `key`; `false` if it was absent.
    #[inline]
    pub fn remove(&mut self, key: &K) -> bool {
        self.0.remove(key)
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_point_operations() {
        let mut m: LookupMap<u64, &str> = LookupMap::with_capacity(4);
        assert!(m.is_empty());
        assert_eq!(m.insert(7, "a"), None);
        assert_eq!(m.insert(7, "b"), Some("a"));
        assert_eq!(m.insert(9, "c"), None);
        assert_eq!(m.len(), 2);
        assert!(m.contains_key(&7));
        assert_eq!(m[&9], "c");
        *m.get_mut(&9).unwrap() = "d";
        assert_eq!(m.get(&9), Some(&"d"));
        assert_eq!(*m.get_or_insert_with(11, || "e"), "e");
        assert_eq!(*m.get_or_insert_with(11, || "f"), "e");
        assert_eq!(m.remove(&7), Some("b"));
        assert_eq!(m.remove(&7), None);
        assert_eq!(format!("{m:?}"), "LookupMap { len: 2, .. }");
        m.clear();
        assert!(m.is_empty() && m.get(&9).is_none());
    }

    #[test]
    #[should_panic(expected = "key not present")]
    fn map_index_of_an_absent_key_panics() {
        let m: LookupMap<u64, u64> = LookupMap::new();
        let _ = m[&1];
    }

    #[test]
    fn set_point_operations() {
        let mut s = LookupSet::new();
        assert!(s.insert(3u64));
        assert!(!s.insert(3));
        assert!(s.contains(&3) && !s.contains(&4));
        assert_eq!(s.len(), 1);
        assert!(s.remove(&3) && !s.remove(&3));
        s.insert(5);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(format!("{s:?}"), "LookupSet { len: 0, .. }");
    }
}
