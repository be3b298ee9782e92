//! Which counter each tenant action touches, and what a refusal says.
//!
//! - Every tenant-plane request counts against `requests_per_minute`, every
//!   tool call against `tool_calls_per_minute` (fixed one-minute windows,
//!   by the wall clock, so every process sharing a backend uses the same
//!   window).
//! - A model call first *reserves* its estimated tokens (against
//!   `tokens_per_minute`) and estimated cost (against the daily and monthly
//!   budgets), then *settles* to what the provider reported. Concurrent
//!   and streaming calls therefore cannot overshoot a budget by more than
//!   one call's estimate error; a reservation whose process died expires
//!   after `reservation_ttl`.
//! - A run holds one of `concurrent_runs` leases while it executes.
//!
//! Budgets are counted in nano-dollars, like usage rows. A budget's spend
//! is seeded from the tenant's ledger the first time a process needs it,
//! so a restart neither forgets nor double-counts what was spent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::config::QuotaValues;
use bulkhead_core::money::Usd;

use crate::backend::{LimitBackend, LimitError, Reserved, now_ms};

/// Length of a rate window, and how long its counter is kept.
const WINDOW_MS: u64 = 60_000;
/// Budget counters outlive their period by this much (late settles).
const BUDGET_GRACE_MS: u64 = 2 * 86_400_000;

/// Why work was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A per-minute limit is used up.
    #[error(
        "the tenant's limit of {limit} {what} per minute is used up; retry in {retry_after_s} s"
    )]
    RateLimited {
        /// `requests`, `tokens` or `tool calls`.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// Seconds until the window turns.
        retry_after_s: u64,
    },
    /// The tenant already runs as many agents as it may.
    #[error("the tenant already has {limit} runs in progress, its limit")]
    ConcurrencyLimited {
        /// The limit.
        limit: u64,
    },
    /// The call could take the tenant over a budget.
    #[error("the call could take the tenant over its {period} budget of ${budget}")]
    BudgetExceeded {
        /// `daily` or `monthly`.
        period: &'static str,
        /// The budget.
        budget: Usd,
        /// Seconds until the budget renews, or 1 when only calls in
        /// flight hold it (they may settle below their estimate).
        retry_after_s: u64,
    },
    /// The counters cannot be reached; nothing is admitted uncounted.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The entry of the code table this refusal answers with.
    pub fn error_code(&self) -> bulkhead_core::codes::ErrorCode {
        use bulkhead_core::codes;
        match self {
            Refusal::RateLimited { .. } => codes::RATE_LIMITED,
            Refusal::ConcurrencyLimited { .. } => codes::CONCURRENCY_LIMITED,
            Refusal::BudgetExceeded { .. } => codes::BUDGET_EXCEEDED,
            Refusal::Unavailable(_) => codes::LIMITS_UNAVAILABLE,
        }
    }

    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        self.error_code().code
    }

    /// The `Retry-After` value, in seconds.
    pub fn retry_after_s(&self) -> u64 {
        match self {
            Refusal::RateLimited { retry_after_s, .. }
            | Refusal::BudgetExceeded { retry_after_s, .. } => *retry_after_s,
            Refusal::ConcurrencyLimited { .. } => 1,
            Refusal::Unavailable(_) => 5,
        }
    }
}

impl From<LimitError> for Refusal {
    fn from(e: LimitError) -> Self {
        Refusal::Unavailable(e.to_string())
    }
}

/// Committed spend, read from the tenant's ledger (usage rows).
#[async_trait]
pub trait SpendLedger: Send + Sync {
    /// Nano-dollars spent by the tenant since `from`.
    async fn spent_since(&self, scope: &TenantScope, from: Timestamp) -> Result<u64, String>;
}

/// A ledger with no spend in it (see [`Limiter::unlimited`]).
struct NothingSpent;

#[async_trait]
impl SpendLedger for NothingSpent {
    async fn spent_since(&self, _scope: &TenantScope, _from: Timestamp) -> Result<u64, String> {
        Ok(0)
    }
}

/// A crossed budget threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAlert {
    /// Percentage of the monthly budget.
    pub threshold_pct: u32,
    /// `YYYY-MM`.
    pub month: String,
    /// Spend after the call that crossed it, nano-dollars.
    pub spent_nanos: u64,
    /// The monthly budget, nano-dollars.
    pub budget_nanos: u64,
    /// Where to post it.
    pub webhook: String,
}

/// Receives crossed budget thresholds (posts the signed webhook).
#[async_trait]
pub trait BudgetAlerts: Send + Sync {
    /// `alert` was crossed by a call of `scope`'s tenant; called once per
    /// crossing across every process sharing the backend.
    async fn crossed(&self, scope: &TenantScope, alert: BudgetAlert);
}

/// The limits of every tenant.
pub struct Limiter {
    defaults: QuotaValues,
    backend: Arc<dyn LimitBackend>,
    ledger: Arc<dyn SpendLedger>,
    seeded: Mutex<HashSet<String>>,
    reservation_ttl_ms: u64,
    thresholds: Vec<u32>,
    alerts: Option<Arc<dyn BudgetAlerts>>,
}

fn nanos(usd: Usd) -> u64 {
    usd.micros().saturating_mul(1000)
}

fn seconds_until(t: Timestamp, now: Timestamp) -> u64 {
    (t.unix_seconds() - now.unix_seconds()).max(1) as u64
}

impl Limiter {
    /// A limiter with the configured defaults over `backend`.
    pub fn new(
        defaults: QuotaValues,
        backend: Arc<dyn LimitBackend>,
        ledger: Arc<dyn SpendLedger>,
        reservation_ttl: std::time::Duration,
    ) -> Self {
        Self {
            defaults,
            backend,
            ledger,
            seeded: Mutex::new(HashSet::new()),
            reservation_ttl_ms: reservation_ttl.as_millis() as u64,
            thresholds: Vec::new(),
            alerts: None,
        }
    }

    /// A limiter with no default limits, in-process counters and a ledger
    /// that reports nothing spent. For tests and embedding: only the
    /// overrides a tenant's scope carries limit it.
    pub fn unlimited() -> Self {
        Self::new(
            QuotaValues::default(),
            Arc::new(crate::backend::MemoryBackend::new()),
            Arc::new(NothingSpent),
            std::time::Duration::from_secs(60),
        )
    }

    /// Posts crossings of these percentages of a tenant's monthly budget
    /// through `alerts`.
    pub fn with_alerts(mut self, thresholds: Vec<u32>, alerts: Arc<dyn BudgetAlerts>) -> Self {
        self.thresholds = thresholds;
        self.alerts = Some(alerts);
        self
    }

    /// The backend's name (`memory`, `redis`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The tenant's limits: the defaults with its overrides.
    pub fn quotas(&self, scope: &TenantScope) -> QuotaValues {
        self.defaults.overridden_by(scope.quota_overrides())
    }

    /// The tenant's share of saturated capacity.
    pub fn weight(&self, scope: &TenantScope) -> u32 {
        scope
            .quota_overrides()
            .weight
            .or(self.defaults.weight)
            .unwrap_or(1)
            .max(1)
    }

    async fn per_minute(
        &self,
        scope: &TenantScope,
        counter: &str,
        what: &'static str,
        limit: Option<u64>,
        amount: u64,
    ) -> Result<(), Refusal> {
        let Some(limit) = limit else { return Ok(()) };
        let now = now_ms();
        let key = format!("bh:{}:{counter}:{}", scope.partition(), now / WINDOW_MS);
        if self
            .backend
            .add_within(&key, amount, limit, 2 * WINDOW_MS)
            .await?
        {
            Ok(())
        } else {
            Err(Refusal::RateLimited {
                what,
                limit,
                retry_after_s: (WINDOW_MS - now % WINDOW_MS).div_ceil(1000).max(1),
            })
        }
    }

    /// Counts one tenant-plane request.
    pub async fn request(&self, scope: &TenantScope) -> Result<(), Refusal> {
        let limit = self.quotas(scope).requests_per_minute;
        self.per_minute(scope, "req", "requests", limit, 1).await
    }

    /// Counts one tool call.
    pub async fn tool_call(&self, scope: &TenantScope) -> Result<(), Refusal> {
        let limit = self.quotas(scope).tool_calls_per_minute;
        self.per_minute(scope, "tool", "tool calls", limit, 1).await
    }

    /// Seeds a budget counter from the ledger, once per process and key.
    async fn seed(
        &self,
        scope: &TenantScope,
        key: &str,
        from: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), Refusal> {
        if self.seeded.lock().map(|s| s.contains(key)).unwrap_or(false) {
            return Ok(());
        }
        let spent = self
            .ledger
            .spent_since(scope, from)
            .await
            .map_err(Refusal::Unavailable)?;
        self.backend.seed(key, spent, ttl_ms).await?;
        if let Ok(mut seeded) = self.seeded.lock() {
            // Two keys a tenant a day; start over rather than grow forever.
            if seeded.len() > 200_000 {
                seeded.clear();
            }
            seeded.insert(key.to_owned());
        }
        Ok(())
    }

    /// Reserves a model call's estimated tokens and cost. Settle the
    /// reservation with what the call actually used; dropping it unsettled
    /// gives the estimate back.
    pub async fn reserve(
        &self,
        scope: &TenantScope,
        est_tokens: u64,
        est_cost_nanos: u64,
    ) -> Result<Reservation, Refusal> {
        let quotas = self.quotas(scope);
        let now = now_ms();
        let tokens_key = quotas.tokens_per_minute.map(|limit| {
            (
                format!("bh:{}:tok:{}", scope.partition(), now / WINDOW_MS),
                limit,
            )
        });
        let ts = Timestamp::now();
        // (counter key, limit in nanos, period, budget, when it renews)
        let budgets: Vec<(String, u64, &'static str, Usd, Timestamp)> = [
            (
                quotas.daily_budget_usd,
                "daily",
                "d",
                ts.day(),
                ts.next_day(),
            ),
            (
                quotas.monthly_budget_usd,
                "monthly",
                "m",
                ts.month(),
                ts.next_month(),
            ),
        ]
        .into_iter()
        .filter_map(|(budget, period, tag, name, end)| {
            budget.map(|b| {
                let key = format!("bh:{}:spend:{tag}:{name}", scope.partition());
                (key, nanos(b), period, b, end)
            })
        })
        .collect();
        for (key, _, period, _, end) in &budgets {
            let from = if *period == "daily" {
                ts.start_of_day()
            } else {
                ts.start_of_month()
            };
            let ttl =
                (end.unix_seconds() - ts.unix_seconds()).max(0) as u64 * 1000 + BUDGET_GRACE_MS;
            self.seed(scope, key, from, ttl).await?;
        }
        let id = uuid::Uuid::now_v7().to_string();
        let pairs: Vec<(String, u64)> = budgets.iter().map(|(k, l, ..)| (k.clone(), *l)).collect();
        // The token window and the budgets are independent counters: both
        // are asked at once (one round trip with Redis, not two), and the
        // one that admitted is given back if the other refused.
        let window = async {
            match &tokens_key {
                Some((key, limit)) => {
                    self.backend
                        .add_within(key, est_tokens, *limit, 2 * WINDOW_MS)
                        .await
                }
                None => Ok(true),
            }
        };
        let budget = async {
            if pairs.is_empty() {
                return Ok(None);
            }
            self.backend
                .reserve(
                    &pairs,
                    &id,
                    est_cost_nanos,
                    now,
                    now + self.reservation_ttl_ms,
                )
                .await
                .map(Some)
        };
        let (window, budget) = tokio::join!(window, budget);
        let window_ok = matches!(window, Ok(true));
        let budget_ok = matches!(budget, Ok(None) | Ok(Some(Reserved { ok: true, .. })));
        if !(window_ok && budget_ok) {
            if window_ok
                && let Some((key, _)) = &tokens_key
                && let Err(e) = self
                    .backend
                    .adjust(key, -(est_tokens as i64), 2 * WINDOW_MS)
                    .await
            {
                tracing::warn!(error = %e, "could not give back a refused call's tokens");
            }
            if budget_ok && !pairs.is_empty() {
                let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
                if let Err(e) = self.backend.settle(&keys, &id, 0, BUDGET_GRACE_MS).await {
                    tracing::warn!(error = %e, "could not give back a refused call's reservation; it expires");
                }
            }
        }
        let reserved = budget?;
        if !window? {
            let limit = tokens_key.as_ref().map_or(0, |(_, l)| *l);
            return Err(Refusal::RateLimited {
                what: "tokens",
                limit,
                retry_after_s: (WINDOW_MS - now % WINDOW_MS).div_ceil(1000).max(1),
            });
        }
        if let Some(r) = reserved
            && !r.ok
        {
            // The budget the call alone would overrun, else the first one
            // held by calls in flight.
            let over = budgets
                .iter()
                .zip(&r.spent)
                .find(|((_, limit, ..), spent)| spent.saturating_add(est_cost_nanos) > *limit);
            return Err(match over {
                Some(((_, _, period, budget, end), _)) => Refusal::BudgetExceeded {
                    period,
                    budget: *budget,
                    retry_after_s: seconds_until(*end, ts),
                },
                None => {
                    let (_, _, period, budget, _) = &budgets[0];
                    Refusal::BudgetExceeded {
                        period,
                        budget: *budget,
                        retry_after_s: 1,
                    }
                }
            });
        }
        let month = budgets
            .iter()
            .position(|(_, _, p, ..)| *p == "monthly")
            .map(|i| (i, budgets[i].1, ts.month()));
        Ok(Reservation {
            backend: self.backend.clone(),
            scope: scope.clone(),
            id,
            tokens_key: tokens_key.map(|(k, _)| k),
            budget_keys: budgets.into_iter().map(|(k, ..)| k).collect(),
            est_tokens,
            est_cost_nanos,
            month,
            alert: self.alerts.clone().and_then(|a| {
                quotas
                    .alert_webhook
                    .clone()
                    .map(|url| (a, url, self.thresholds.clone()))
            }),
            settled: false,
        })
    }

    /// Takes one of the tenant's concurrent-run slots for at most `ttl`
    /// (the run's own time limit, plus margin: a dead process's lease
    /// frees itself).
    pub async fn start_run(
        &self,
        scope: &TenantScope,
        ttl: std::time::Duration,
    ) -> Result<RunLease, Refusal> {
        let Some(limit) = self.quotas(scope).concurrent_runs else {
            return Ok(RunLease { inner: None });
        };
        let key = format!("bh:{}:runs", scope.partition());
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        if self
            .backend
            .acquire(&key, &id, limit, now, now + ttl.as_millis() as u64)
            .await?
        {
            Ok(RunLease {
                inner: Some((self.backend.clone(), key, id)),
            })
        } else {
            Err(Refusal::ConcurrencyLimited { limit })
        }
    }
}

type AlertTarget = (Arc<dyn BudgetAlerts>, String, Vec<u32>);

/// A model call's reserved tokens and cost, until settled.
pub struct Reservation {
    backend: Arc<dyn LimitBackend>,
    scope: TenantScope,
    id: String,
    tokens_key: Option<String>,
    budget_keys: Vec<String>,
    est_tokens: u64,
    est_cost_nanos: u64,
    /// Index of the monthly budget in `budget_keys`, its limit, `YYYY-MM`.
    month: Option<(usize, u64, String)>,
    alert: Option<AlertTarget>,
    settled: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.id)
            .field("est_tokens", &self.est_tokens)
            .field("est_cost_nanos", &self.est_cost_nanos)
            .finish()
    }
}

impl Reservation {
    /// The estimate reserved, nano-dollars.
    pub fn estimate_nanos(&self) -> u64 {
        self.est_cost_nanos
    }

    /// Replaces the estimate with what the call used: its tokens count
    /// against the minute's window, its cost against the budgets. Posts
    /// any budget threshold this call crossed.
    pub async fn settle(mut self, tokens: u64, cost_nanos: u64) {
        self.settled = true;
        settle(
            self.backend.clone(),
            self.scope.clone(),
            self.id.clone(),
            self.tokens_key.take(),
            std::mem::take(&mut self.budget_keys),
            self.est_tokens,
            tokens,
            cost_nanos,
            self.month.take(),
            self.alert.take(),
        )
        .await;
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "each argument is one part of the settlement; a struct would only rename them"
)]
async fn settle(
    backend: Arc<dyn LimitBackend>,
    scope: TenantScope,
    id: String,
    tokens_key: Option<String>,
    budget_keys: Vec<String>,
    est_tokens: u64,
    tokens: u64,
    cost_nanos: u64,
    month: Option<(usize, u64, String)>,
    alert: Option<AlertTarget>,
) {
    // The token correction and the budgets' settle are independent: both
    // at once (one round trip with Redis).
    let tokens_done = async {
        if let Some(key) = tokens_key {
            let delta = tokens as i64 - est_tokens as i64;
            if delta != 0
                && let Err(e) = backend.adjust(&key, delta, 2 * WINDOW_MS).await
            {
                tracing::warn!(error = %e, "could not settle a call's tokens");
            }
        }
    };
    let budgets_done = async {
        if budget_keys.is_empty() {
            return None;
        }
        match backend
            .settle(&budget_keys, &id, cost_nanos, BUDGET_GRACE_MS)
            .await
        {
            Ok(after) => Some(after),
            Err(e) => {
                // The reservation expires on its own; the ledger row is the record.
                tracing::error!(error = %e, "could not settle a call's cost");
                None
            }
        }
    };
    let ((), after) = tokio::join!(tokens_done, budgets_done);
    let Some(after) = after else { return };
    let (Some((i, budget, month)), Some((alerts, webhook, thresholds))) = (month, alert) else {
        return;
    };
    let Some(&spent) = after.get(i) else { return };
    let before = spent.saturating_sub(cost_nanos);
    for pct in thresholds {
        let line = (u128::from(budget) * u128::from(pct) / 100) as u64;
        // The settle that moved spend across the line — exactly one, since
        // each settle adds atomically and sees its own before and after.
        if before < line && spent >= line && cost_nanos > 0 {
            alerts
                .crossed(
                    &scope,
                    BudgetAlert {
                        threshold_pct: pct,
                        month: month.clone(),
                        spent_nanos: spent,
                        budget_nanos: budget,
                        webhook: webhook.clone(),
                    },
                )
                .await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled (a cancelled call that reached no provider):
        // give the reservation back now rather than at its expiry.
        let args = (
            self.backend.clone(),
            self.scope.clone(),
            self.id.clone(),
            self.tokens_key.take(),
            std::mem::take(&mut self.budget_keys),
            self.est_tokens,
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let (backend, scope, id, tokens_key, keys, est) = args;
                settle(backend, scope, id, tokens_key, keys, est, 0, 0, None, None).await;
            });
        }
    }
}

/// One of a tenant's concurrent-run slots; released when dropped.
pub struct RunLease {
    inner: Option<(Arc<dyn LimitBackend>, String, String)>,
}

impl RunLease {
    /// Gives the slot back now.
    pub async fn release(mut self) {
        if let Some((backend, key, id)) = self.inner.take()
            && let Err(e) = backend.release(&key, &id).await
        {
            tracing::warn!(error = %e, "could not release a run slot; it expires on its own");
        }
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        if let Some((backend, key, id)) = self.inner.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                if let Err(e) = backend.release(&key, &id).await {
                    tracing::warn!(error = %e, "could not release a run slot; it expires on its own");
                }
            });
        }
    }
}
