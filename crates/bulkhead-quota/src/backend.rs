//! The counter operations limits are built from, each atomic on its own:
//! a concurrent caller never sees half of one. Times are given by the
//! caller (milliseconds since the Unix epoch) so that every process
//! sharing a backend expires reservations by the same rule, and tests can
//! move time without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// A backend failure. The limiter refuses work it cannot count.
#[derive(Debug, thiserror::Error)]
#[error("limit backend unavailable: {0}")]
pub struct LimitError(pub String);

/// What a budget reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// Whether the reservation was taken (in every budget).
    pub ok: bool,
    /// Per budget, in the order given: settled spend (reservations not
    /// included) at the time of the decision.
    pub spent: Vec<u64>,
}

/// Atomic counters shared by every limit of every tenant.
///
/// Keys are built by the limiter and always start with the tenant's id.
#[async_trait]
pub trait LimitBackend: Send + Sync {
    /// `memory` or `redis`.
    fn name(&self) -> &'static str;

    /// Adds `amount` to the counter `key` if the result stays within
    /// `limit`, and says whether it did. A new counter lives `ttl_ms`.
    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        ttl_ms: u64,
    ) -> Result<bool, LimitError>;

    /// Adds `delta` to the counter `key` unconditionally, never going below
    /// zero (corrects an estimate once the actual figure is known).
    async fn adjust(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<(), LimitError>;

    /// Sets budget `key`'s settled spend to `spent` unless it is already
    /// known (the first process to need it seeds it from the ledger).
    async fn seed(&self, key: &str, spent: u64, ttl_ms: u64) -> Result<(), LimitError>;

    /// Reserves `amount` under `id` in every budget `(key, limit)` — only
    /// if, in each, settled spend + live reservations + `amount` stays
    /// within the limit. Reservations whose expiry is at or before
    /// `now_ms` are dropped first; this one expires at `expires_ms`.
    async fn reserve(
        &self,
        budgets: &[(String, u64)],
        id: &str,
        amount: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Reserved, LimitError>;

    /// Drops reservation `id` from every budget in `keys` and adds `actual`
    /// to their settled spend. Returns each budget's spend after.
    async fn settle(
        &self,
        keys: &[String],
        id: &str,
        actual: u64,
        ttl_ms: u64,
    ) -> Result<Vec<u64>, LimitError>;

    /// Takes one of `limit` slots of `key` under lease `id`, held until
    /// released or until `expires_ms`.
    async fn acquire(
        &self,
        key: &str,
        id: &str,
        limit: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<bool, LimitError>;

    /// Gives lease `id` of `key` back.
    async fn release(&self, key: &str, id: &str) -> Result<(), LimitError>;
}

struct Budget {
    spent: u64,
    /// id → (amount, expires_ms)
    reservations: HashMap<String, (u64, u64)>,
    /// When the whole budget may be forgotten (its period is over).
    expires_ms: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            spent: 0,
            reservations: HashMap::new(),
            // Not seeded: kept until the process ends.
            expires_ms: u64::MAX,
        }
    }
}

impl Budget {
    fn expire(&mut self, now_ms: u64) {
        self.reservations.retain(|_, (_, exp)| *exp > now_ms);
    }
    fn reserved(&self) -> u64 {
        self.reservations.values().map(|(a, _)| *a).sum()
    }
}

#[derive(Default)]
struct State {
    /// key → (value, expires_ms)
    counters: HashMap<String, (u64, u64)>,
    budgets: HashMap<String, Budget>,
    /// key → id → expires_ms
    leases: HashMap<String, HashMap<String, u64>>,
    /// Operations since the last sweep of expired counters.
    ops: u64,
}

/// The in-process backend: one mutex over plain maps (each operation is a
/// few hash lookups, far cheaper than contention on a finer scheme would
/// save). Counters expire like Redis keys so memory stays bounded.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

/// Milliseconds since the Unix epoch, from the domain crates' one wall
/// clock (`Timestamp::now`); a clock before the epoch reads as 0.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(bulkhead_core::Timestamp::now().unix_micros() / 1000).unwrap_or(0)
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, LimitError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| LimitError("the in-process limit state is poisoned".into()))?;
        state.ops += 1;
        if state.ops % 4096 == 0 {
            // Past windows and past periods' budgets: memory stays bounded
            // however long the process runs.
            let now = now_ms();
            state.counters.retain(|_, (_, exp)| *exp > now);
            state.budgets.retain(|_, b| b.expires_ms > now);
        }
        Ok(f(&mut state))
    }
}

fn counter<'a>(state: &'a mut State, key: &str, ttl_ms: u64) -> &'a mut u64 {
    let now = now_ms();
    let entry = state
        .counters
        .entry(key.to_owned())
        .or_insert((0, now + ttl_ms));
    if entry.1 <= now {
        *entry = (0, now + ttl_ms);
    }
    &mut entry.0
}

#[async_trait]
impl LimitBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        ttl_ms: u64,
    ) -> Result<bool, LimitError> {
        self.with(|s| {
            let c = counter(s, key, ttl_ms);
            if c.saturating_add(amount) <= limit {
                *c += amount;
                true
            } else {
                false
            }
        })
    }

    async fn adjust(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<(), LimitError> {
        self.with(|s| {
            let c = counter(s, key, ttl_ms);
            *c = c.saturating_add_signed(delta);
        })
    }

    async fn seed(&self, key: &str, spent: u64, ttl_ms: u64) -> Result<(), LimitError> {
        self.with(|s| {
            s.budgets.entry(key.to_owned()).or_insert_with(|| Budget {
                spent,
                reservations: HashMap::new(),
                expires_ms: now_ms().saturating_add(ttl_ms),
            });
        })
    }

    async fn reserve(
        &self,
        budgets: &[(String, u64)],
        id: &str,
        amount: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Reserved, LimitError> {
        self.with(|s| {
            let mut ok = true;
            let mut spent = Vec::with_capacity(budgets.len());
            for (key, limit) in budgets {
                let b = s.budgets.entry(key.clone()).or_default();
                b.expire(now_ms);
                spent.push(b.spent);
                if b.spent.saturating_add(b.reserved()).saturating_add(amount) > *limit {
                    ok = false;
                }
            }
            if ok {
                for (key, _) in budgets {
                    if let Some(b) = s.budgets.get_mut(key) {
                        b.reservations.insert(id.to_owned(), (amount, expires_ms));
                    }
                }
            }
            Reserved { ok, spent }
        })
    }

    async fn settle(
        &self,
        keys: &[String],
        id: &str,
        actual: u64,
        _ttl_ms: u64,
    ) -> Result<Vec<u64>, LimitError> {
        self.with(|s| {
            keys.iter()
                .map(|key| {
                    let b = s.budgets.entry(key.clone()).or_default();
                    b.reservations.remove(id);
                    b.spent = b.spent.saturating_add(actual);
                    b.spent
                })
                .collect()
        })
    }

    async fn acquire(
        &self,
        key: &str,
        id: &str,
        limit: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<bool, LimitError> {
        self.with(|s| {
            let held = s.leases.entry(key.to_owned()).or_default();
            held.retain(|_, exp| *exp > now_ms);
            if (held.len() as u64) < limit {
                held.insert(id.to_owned(), expires_ms);
                true
            } else {
                false
            }
        })
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), LimitError> {
        self.with(|s| {
            if let Some(held) = s.leases.get_mut(key) {
                held.remove(id);
                if held.is_empty() {
                    s.leases.remove(key);
                }
            }
        })
    }
}

/// The behaviour every backend must have, run against the in-process one
/// here and against Redis in the store crate's tests (feature
/// `conformance`).
#[cfg(any(test, feature = "conformance"))]
#[expect(
    clippy::unwrap_used,
    reason = "conformance checks fail loudly, like tests"
)]
pub mod conformance {
    use super::*;

    /// Runs every check on `b`; `prefix` keeps runs on a shared server apart.
    pub async fn check(b: &dyn LimitBackend, prefix: &str) {
        let k = |s: &str| format!("{prefix}:{s}");
        // Windows: up to the limit, then refused; adjust corrects both ways.
        assert!(b.add_within(&k("w"), 3, 5, 60_000).await.unwrap());
        assert!(b.add_within(&k("w"), 2, 5, 60_000).await.unwrap());
        assert!(!b.add_within(&k("w"), 1, 5, 60_000).await.unwrap());
        b.adjust(&k("w"), -2, 60_000).await.unwrap();
        assert!(b.add_within(&k("w"), 2, 5, 60_000).await.unwrap());
        b.adjust(&k("w"), -100, 60_000).await.unwrap();
        assert!(
            b.add_within(&k("w"), 5, 5, 60_000).await.unwrap(),
            "floored at zero"
        );

        // Budgets: seeded once; reservations count until settled or expired.
        let day = k("d");
        let month = k("m");
        b.seed(&day, 40, 60_000).await.unwrap();
        b.seed(&day, 999, 60_000).await.unwrap();
        b.seed(&month, 40, 60_000).await.unwrap();
        let both = vec![(day.clone(), 100), (month.clone(), 1000)];
        let r = b.reserve(&both, "a", 50, 1_000, 5_000).await.unwrap();
        assert_eq!(
            r,
            Reserved {
                ok: true,
                spent: vec![40, 40]
            },
            "the second seed must not overwrite the first"
        );
        let r = b.reserve(&both, "b", 20, 1_000, 5_000).await.unwrap();
        assert!(!r.ok, "40 spent + 50 reserved + 20 > 100");
        // Refused in one budget: nothing reserved in the other either.
        let r = b
            .reserve(&[(month.clone(), 1000)], "c", 900, 1_000, 5_000)
            .await
            .unwrap();
        assert!(r.ok, "the refused reservation left no trace in the month");
        b.settle(std::slice::from_ref(&month), "c", 0, 60_000)
            .await
            .unwrap();
        let after = b
            .settle(&[day.clone(), month.clone()], "a", 30, 60_000)
            .await
            .unwrap();
        assert_eq!(after, vec![70, 70]);
        assert!(b.reserve(&both, "d", 30, 1_000, 5_000).await.unwrap().ok);
        // "d" is never settled: its process died. At its expiry it frees.
        assert!(!b.reserve(&both, "e", 30, 4_999, 9_000).await.unwrap().ok);
        assert!(b.reserve(&both, "e", 30, 5_000, 9_000).await.unwrap().ok);

        // Leases: at most `limit`, released or expired.
        let l = k("l");
        assert!(b.acquire(&l, "x", 2, 0, 10_000).await.unwrap());
        assert!(b.acquire(&l, "y", 2, 0, 10_000).await.unwrap());
        assert!(!b.acquire(&l, "z", 2, 0, 10_000).await.unwrap());
        b.release(&l, "x").await.unwrap();
        assert!(b.acquire(&l, "z", 2, 0, 10_000).await.unwrap());
        assert!(!b.acquire(&l, "w", 2, 9_999, 20_000).await.unwrap());
        assert!(
            b.acquire(&l, "w", 2, 10_000, 20_000).await.unwrap(),
            "expired leases free their slot"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_backend_conforms() {
        conformance::check(&MemoryBackend::new(), "t").await;
    }
}
