//! What the gateway needs from storage (implemented by the store crate).

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;

use crate::usage::{UsageRecord, UsageSummary};

/// Storage failures, as the gateway sees them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GatewayStoreError(pub String);

/// Usage rows and per-tenant model settings, in the tenant's partition.
#[async_trait]
pub trait GatewayStore: Send + Sync {
    /// Writes a usage row and its audit event in one transaction.
    async fn record_usage(
        &self,
        scope: &TenantScope,
        usage: &UsageRecord,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
    /// Appends an event to the tenant's audit chain (a refused call).
    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
    /// Usage aggregated by UTC day and model, for `from <= time < to`.
    async fn usage_summary(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageSummary>, GatewayStoreError>;
    /// The tenant's model allow-list; `None` means every model.
    async fn allowed_models(
        &self,
        scope: &TenantScope,
    ) -> Result<Option<Vec<String>>, GatewayStoreError>;
    /// Replaces the tenant's model allow-list, with its audit event.
    async fn set_allowed_models(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError>;
}
