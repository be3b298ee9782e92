//! In-memory [`GatewayStore`], for tests below HTTP (feature `test-support`).
//!
//! It keeps the SQLite store's semantics (`bulkhead-store`'s
//! `sqlite/gateway.rs`): every row lives in the partition of the scope's
//! tenant incarnation, so another tenant's rows are unreachable; a call's
//! settlement replaces its `in_flight` row of the same id in place (keeping
//! the row's time and request); `in_flight` rows count neither in reports
//! nor in committed spend; report lines are ordered by their groups with
//! "none" first, as SQLite orders `NULL`. Writes are visible to the next
//! read at once (there is no writer queue to wait for).
//!
//! What it does not do: recover `in_flight` rows of a dead process (there
//! is no other process), or keep an audit *chain* (events are kept in
//! order, unhashed, for tests to read back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{TenantUid, Timestamp};

use crate::store::{
    GatewaySettings, GatewayStore, GatewayStoreError, LedgerSpend, SettingsChange, UsageWrite,
};
use crate::usage::{UsageGroup, UsageRecord, UsageSummary};

/// One tenant incarnation's gateway data.
#[derive(Default)]
struct Partition {
    /// Ledger rows in insertion order (the order [`MemoryGatewayStore::usage_rows`] returns).
    usage: Vec<UsageRecord>,
    /// Audit events in the order they were appended.
    audit: Vec<NewAuditEvent>,
    settings: GatewaySettings,
    responses: HashMap<String, String>,
}

/// The gateway's storage in memory: one partition per tenant incarnation.
#[derive(Default, Clone)]
pub struct MemoryGatewayStore {
    partitions: Arc<Mutex<HashMap<TenantUid, Partition>>>,
}

impl std::fmt::Debug for MemoryGatewayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGatewayStore").finish_non_exhaustive()
    }
}

impl MemoryGatewayStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<TenantUid, Partition>>, GatewayStoreError> {
        self.partitions
            .lock()
            .map_err(|_| GatewayStoreError("the memory store's lock is poisoned".into()))
    }

    fn with<T>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&mut Partition) -> T,
    ) -> Result<T, GatewayStoreError> {
        let mut map = self.lock()?;
        Ok(f(map.entry(scope.partition()).or_default()))
    }

    /// The tenant's ledger rows (settled and `in_flight`), oldest write first.
    pub fn usage_rows(&self, scope: &TenantScope) -> Vec<UsageRecord> {
        self.with(scope, |p| p.usage.clone()).unwrap_or_default()
    }

    /// The tenant's audit events, in the order they were appended.
    pub fn audit_events(&self, scope: &TenantScope) -> Vec<NewAuditEvent> {
        self.with(scope, |p| p.audit.clone()).unwrap_or_default()
    }

    /// The ledger as a limiter's source of committed spend.
    pub fn ledger(&self) -> Arc<LedgerSpend> {
        Arc::new(LedgerSpend(Arc::new(self.clone())))
    }

    /// Writes a row, or settles the row of the same id in place: as the
    /// SQLite upsert, only the counts, cost, latency, status and
    /// `estimated` change.
    fn upsert(p: &mut Partition, u: UsageRecord) {
        match p.usage.iter_mut().find(|r| r.id == u.id) {
            Some(row) => {
                row.tokens = u.tokens;
                row.cost_nanos = u.cost_nanos;
                row.latency_ms = u.latency_ms;
                row.status = u.status;
                row.estimated = u.estimated;
            }
            None => p.usage.push(u),
        }
    }

    fn done(result: Result<(), GatewayStoreError>) -> UsageWrite {
        Box::pin(async move { result })
    }
}

/// The value a row has for one grouping column (`None` as SQL `NULL`).
fn group_value(row: &UsageRecord, group: UsageGroup) -> Option<String> {
    match group {
        UsageGroup::Day => Some(row.time.day()),
        UsageGroup::Agent => row.agent.clone(),
        // `NULLIF(model, '')`: tool rows have no model.
        UsageGroup::Model => Some(row.model.clone()).filter(|m| !m.is_empty()),
        UsageGroup::Tool => row.tool.clone(),
    }
}

#[async_trait]
impl GatewayStore for MemoryGatewayStore {
    fn begin_usage(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite {
        Self::done(self.with(scope, |p| Self::upsert(p, usage)))
    }

    fn record_usage(
        &self,
        scope: &TenantScope,
        usage: UsageRecord,
        event: NewAuditEvent,
    ) -> UsageWrite {
        Self::done(self.with(scope, |p| {
            Self::upsert(p, usage);
            p.audit.push(event);
        }))
    }

    fn record_usage_row(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite {
        Self::done(self.with(scope, |p| Self::upsert(p, usage)))
    }

    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        self.with(scope, |p| p.audit.push(event))
    }

    async fn save_response(
        &self,
        scope: &TenantScope,
        id: &str,
        stored: String,
    ) -> Result<(), GatewayStoreError> {
        self.with(scope, |p| {
            p.responses.insert(id.to_owned(), stored);
        })
    }

    async fn load_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<String>, GatewayStoreError> {
        self.with(scope, |p| p.responses.get(id).cloned())
    }

    async fn delete_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<bool, GatewayStoreError> {
        self.with(scope, |p| p.responses.remove(id).is_some())
    }

    async fn usage_summary(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageSummary>, GatewayStoreError> {
        self.with(scope, |p| {
            // Keyed by the group values in order: `Option`'s order puts
            // `None` first, as SQLite sorts `NULL` in `ORDER BY`.
            let mut lines: std::collections::BTreeMap<Vec<Option<String>>, UsageSummary> =
                Default::default();
            let rows = p.usage.iter().filter(|r| {
                r.status != "in_flight"
                    && r.time.unix_micros() >= from.unix_micros()
                    && r.time.unix_micros() < to.unix_micros()
            });
            for row in rows {
                let key: Vec<Option<String>> = group.iter().map(|g| group_value(row, *g)).collect();
                let line = lines.entry(key.clone()).or_insert_with(|| {
                    let mut line = UsageSummary::default();
                    for (g, v) in group.iter().zip(key) {
                        match g {
                            UsageGroup::Day => line.day = v,
                            UsageGroup::Agent => line.agent = v,
                            UsageGroup::Model => line.model = v,
                            UsageGroup::Tool => line.tool = v,
                        }
                    }
                    line
                });
                line.requests += 1;
                line.input_tokens += row.tokens.input;
                line.output_tokens += row.tokens.output;
                line.cached_tokens += row.tokens.cached;
                line.cost_nanos += row.cost_nanos;
            }
            // No row in the period: no lines, grouped or not.
            lines.into_values().collect()
        })
    }

    async fn spent_since(
        &self,
        scope: &TenantScope,
        from: Timestamp,
    ) -> Result<u64, GatewayStoreError> {
        self.with(scope, |p| {
            p.usage
                .iter()
                // In-flight calls are counted by their live reservations.
                .filter(|r| r.status != "in_flight" && r.time.unix_micros() >= from.unix_micros())
                .map(|r| r.cost_nanos)
                .sum()
        })
    }

    async fn settings(&self, scope: &TenantScope) -> Result<GatewaySettings, GatewayStoreError> {
        self.with(scope, |p| p.settings.clone())
    }

    async fn update_settings(
        &self,
        scope: &TenantScope,
        change: &SettingsChange,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        self.with(scope, |p| {
            change.apply(&mut p.settings);
            p.audit.push(event);
        })
    }

    async fn set_allowed_models(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        self.with(scope, |p| {
            p.settings.allowed_models = models;
            p.audit.push(event);
        })
    }
}

/// A limiter that enforces nothing: default (unset) quota values over the
/// in-process counter backend, its committed spend read from `store`'s
/// ledger. Tests pass it where the gateway requires a limiter and no limit
/// is under test.
pub fn unlimited_limiter(store: &MemoryGatewayStore) -> Arc<bulkhead_quota::Limiter> {
    limiter(store, bulkhead_core::config::QuotaValues::default())
}

/// A limiter with `defaults` for every tenant, over the in-process counter
/// backend, its committed spend read from `store`'s ledger.
pub fn limiter(
    store: &MemoryGatewayStore,
    defaults: bulkhead_core::config::QuotaValues,
) -> Arc<bulkhead_quota::Limiter> {
    Arc::new(bulkhead_quota::Limiter::new(
        defaults,
        Arc::new(bulkhead_quota::backend::MemoryBackend::new()),
        store.ledger(),
        // Reservations of a test outlive it: no reclaiming mid-test.
        std::time::Duration::from_secs(600),
    ))
}

/// One tripwire hit, as a [`RecordingAlarm`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The tenant whose request carried the canary.
    pub from: TenantUid,
    /// The tenant the canary belongs to.
    pub victim: TenantUid,
    /// Where the request was going.
    pub channel: crate::canary::Channel,
}

/// A leak alarm that records every hit, for tests to read back (the
/// server's raises an operator alert and audits both tenants).
#[derive(Debug, Default, Clone)]
pub struct RecordingAlarm {
    hits: Arc<Mutex<Vec<Leak>>>,
}

impl RecordingAlarm {
    /// The hits so far, in order.
    pub fn hits(&self) -> Vec<Leak> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl crate::canary::LeakAlarm for RecordingAlarm {
    async fn raise(&self, scope: &TenantScope, victim: TenantUid, channel: crate::canary::Channel) {
        if let Ok(mut hits) = self.hits.lock() {
            hits.push(Leak {
                from: scope.partition(),
                victim,
                channel,
            });
        }
    }
}
