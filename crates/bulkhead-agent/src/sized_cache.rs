//! A cache with a byte budget, evicting the least recently used entries,
//! whose keys lead with the tenant incarnation so one tenant's entries can
//! be dropped at once.
//!
//! The knowledge service keeps each collection's decoded vectors (and its
//! ANN graph) in memory. Without a bound a tenant could grow that memory
//! without limit by creating collections and searching them, and a deleted
//! tenant's vectors stayed until the process restarted. Here the total is
//! capped (`[limits] vector_cache_mb`), an entry larger than the whole
//! budget is not kept at all (it serves its one search and is dropped), and
//! [`SizedCache::forget_tenant`] drops everything of an incarnation.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use bulkhead_core::TenantUid;

/// A key whose first part is the tenant incarnation it belongs to.
pub trait TenantKey: Eq + Hash + Clone {
    /// The incarnation.
    fn tenant(&self) -> TenantUid;
}

impl<A: Eq + Hash + Clone, B: Eq + Hash + Clone> TenantKey for (TenantUid, A, B) {
    fn tenant(&self) -> TenantUid {
        self.0
    }
}

struct Entry<V> {
    value: Arc<V>,
    bytes: u64,
    used: u64,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    bytes: u64,
    tick: u64,
}

/// The cache.
pub struct SizedCache<K, V> {
    budget: u64,
    inner: Mutex<Inner<K, V>>,
}

impl<K: TenantKey, V> SizedCache<K, V> {
    /// A cache holding at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry, marked as just used.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.map.get_mut(key)?;
        e.used = tick;
        Some(e.value.clone())
    }

    /// Keeps `value` (of about `bytes`), evicting the least recently used
    /// entries to stay within the budget. Returns whether it was kept (not
    /// when it alone exceeds the budget).
    pub fn insert(&self, key: K, value: Arc<V>, bytes: u64) -> bool {
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.bytes -= old.bytes;
        }
        if bytes > self.budget {
            return false;
        }
        while inner.bytes + bytes > self.budget {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.bytes += bytes;
        inner.map.insert(key, Entry { value, bytes, used });
        true
    }

    /// Drops the entries `drop` selects.
    pub fn remove_where(&self, drop: impl Fn(&K) -> bool) {
        let mut inner = self.lock();
        let mut freed = 0;
        inner.map.retain(|k, e| {
            let gone = drop(k);
            if gone {
                freed += e.bytes;
            }
            !gone
        });
        inner.bytes -= freed;
    }

    /// Drops every entry of a tenant incarnation (deleted, or suspended).
    pub fn forget_tenant(&self, uid: TenantUid) {
        self.remove_where(|k| k.tenant() == uid);
    }

    /// Bytes held, and entries.
    pub fn usage(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.bytes, inner.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Key = (TenantUid, String, String);

    fn key(uid: TenantUid, c: &str) -> Key {
        (uid, c.to_owned(), "m".to_owned())
    }

    #[test]
    fn the_budget_holds_and_the_least_recently_used_go_first() {
        let cache: SizedCache<Key, u32> = SizedCache::new(100);
        let t = TenantUid::generate();
        assert!(cache.insert(key(t, "a"), Arc::new(1), 40));
        assert!(cache.insert(key(t, "b"), Arc::new(2), 40));
        assert!(
            cache.get(&key(t, "a")).is_some(),
            "a is now the most recent"
        );
        assert!(cache.insert(key(t, "c"), Arc::new(3), 40));
        assert_eq!(cache.usage(), (80, 2));
        assert!(
            cache.get(&key(t, "b")).is_none(),
            "b was the least recently used"
        );
        assert!(cache.get(&key(t, "a")).is_some());
        // Larger than the whole budget: served, not kept.
        assert!(!cache.insert(key(t, "huge"), Arc::new(4), 101));
        assert_eq!(cache.usage(), (80, 2));
        // Replacing an entry frees its old size first.
        assert!(cache.insert(key(t, "a"), Arc::new(5), 10));
        assert_eq!(cache.usage(), (50, 2));
    }

    #[test]
    fn a_tenant_is_forgotten_whole_and_others_stay() {
        let cache: SizedCache<Key, u32> = SizedCache::new(1000);
        let (gone, kept) = (TenantUid::generate(), TenantUid::generate());
        for c in ["a", "b", "c"] {
            cache.insert(key(gone, c), Arc::new(0), 10);
        }
        cache.insert(key(kept, "a"), Arc::new(0), 10);
        cache.forget_tenant(gone);
        assert_eq!(cache.usage(), (10, 1));
        assert!(cache.get(&key(kept, "a")).is_some());
    }
}
