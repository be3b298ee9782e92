//! What the gateway needs from storage (implemented by the store crate).

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;

use crate::usage::{UsageGroup, UsageRecord, UsageSummary};

/// A tenant's gateway settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Model allow-list; `None` means every model.
    pub allowed_models: Option<Vec<String>>,
    /// Keep the request messages in the audit event of each call (off by default).
    pub audit_prompts: bool,
    /// Thread messages older than this many days are deleted (none: kept).
    pub message_retention_days: Option<u32>,
    /// Where new approval requests are posted (none: nowhere).
    pub approval_webhook: Option<String>,
}

/// A change of a tenant's settings: each `Some` field is set (an inner
/// `None` clears it), each `None` field is left as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// Keep prompts in the audit chain.
    pub audit_prompts: Option<bool>,
    /// Message retention in days (`Some(None)`: keep messages).
    pub message_retention_days: Option<Option<u32>>,
    /// The approval webhook URL (`Some(None)`: none).
    pub approval_webhook: Option<Option<String>>,
}

impl SettingsChange {
    /// Whether the change names no setting at all.
    pub fn is_empty(&self) -> bool {
        self.audit_prompts.is_none()
            && self.message_retention_days.is_none()
            && self.approval_webhook.is_none()
    }

    /// The change applied to `settings`.
    pub fn apply(&self, settings: &mut GatewaySettings) {
        if let Some(on) = self.audit_prompts {
            settings.audit_prompts = on;
        }
        if let Some(days) = self.message_retention_days {
            settings.message_retention_days = days;
        }
        if let Some(url) = &self.approval_webhook {
            settings.approval_webhook = url.clone();
        }
    }
}

/// Storage failures, as the gateway sees them: the store's own error, kept
/// whole as the source (its message is this error's message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GatewayStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The outcome of a queued usage write.
pub type UsageWrite = Pin<Box<dyn Future<Output = Result<(), GatewayStoreError>> + Send>>;

/// Usage rows and per-tenant model settings, in the tenant's partition.
#[async_trait]
pub trait GatewayStore: Send + Sync {
    /// Writes a call's ledger row before its request is sent: status
    /// `in_flight`, the reservation's estimated tokens and cost, the
    /// process that runs it. The call's [`GatewayStore::record_usage`]
    /// settles the same row (same id) in place; a row left `in_flight` by a
    /// process that died is billed at its estimate as `interrupted` (with
    /// an audit event) before the partition is next read, so a crash never
    /// loses a call that reached a provider. Resolves once durable.
    fn begin_usage(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite;
    /// Queues a usage row and its audit event, to be written in one
    /// transaction (replacing the call's `in_flight` row of the same id).
    /// The row is queued when this returns, so a usage or
    /// audit read of the tenant that starts afterwards includes it; the
    /// returned future resolves once it is durable (or could not be written).
    fn record_usage(
        &self,
        scope: &TenantScope,
        usage: UsageRecord,
        event: NewAuditEvent,
    ) -> UsageWrite;
    /// Queues a ledger row that has no audit event of its own (a tool
    /// call, audited by the agent runtime), like [`GatewayStore::record_usage`].
    fn record_usage_row(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite;
    /// Appends an event to the tenant's audit chain (a refused call).
    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
    /// The ledger aggregated by `group` (in that order), for
    /// `from <= time < to`, ordered by the groups.
    async fn usage_summary(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageSummary>, GatewayStoreError>;
    /// Nano-dollars spent since `from` (budgets are seeded from it): every
    /// row but those `in_flight` (which live reservations count).
    async fn spent_since(
        &self,
        scope: &TenantScope,
        from: Timestamp,
    ) -> Result<u64, GatewayStoreError>;
    /// The tenant's gateway settings (one read per call).
    async fn settings(&self, scope: &TenantScope) -> Result<GatewaySettings, GatewayStoreError>;
    /// Applies `change` (the settings it names, the others untouched) and
    /// appends its one audit event, in one transaction.
    async fn update_settings(
        &self,
        scope: &TenantScope,
        change: &SettingsChange,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
    /// Keeps a Responses API response (its JSON, opaque here) under `id`
    /// in the tenant's partition, replacing one of the same id.
    async fn save_response(
        &self,
        scope: &TenantScope,
        id: &str,
        stored: String,
    ) -> Result<(), GatewayStoreError>;
    /// A stored response of the tenant, if there is one of this id.
    async fn load_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<String>, GatewayStoreError>;
    /// Deletes a stored response of the tenant; whether there was one.
    async fn delete_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<bool, GatewayStoreError>;
    /// Replaces the tenant's model allow-list, with its audit event.
    async fn set_allowed_models(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
}

/// The ledger as the limiter's source of committed spend: budgets are
/// seeded from the usage rows of the current day and month.
pub struct LedgerSpend(pub std::sync::Arc<dyn GatewayStore>);

#[async_trait]
impl bulkhead_quota::SpendLedger for LedgerSpend {
    async fn spent_since(&self, scope: &TenantScope, from: Timestamp) -> Result<u64, String> {
        self.0
            .spent_since(scope, from)
            .await
            .map_err(|e| e.to_string())
    }
}
