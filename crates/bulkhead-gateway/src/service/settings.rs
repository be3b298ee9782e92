//! The tenant's gateway settings: read through a short per-tenant cache,
//! written with their audit events (the cache entry dropped either way).

use std::time::{Duration, Instant};

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::NewAuditEvent;

use super::Gateway;
use crate::error::GatewayError;
use crate::store::GatewaySettings;

/// How long a tenant's settings are reused without reading them again.
/// Changes made through this process apply at once (the entry is dropped);
/// another replica's change applies within this time.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

impl Gateway {
    pub(super) fn forget_settings(&self, scope: &TenantScope) {
        if let Ok(mut cache) = self.settings_cache.lock() {
            cache.remove(&scope.partition());
        }
    }

    /// The tenant's gateway settings (cached per tenant incarnation).
    pub async fn settings(&self, scope: &TenantScope) -> Result<GatewaySettings, GatewayError> {
        if let Ok(cache) = self.settings_cache.lock()
            && let Some((s, at)) = cache.get(&scope.partition())
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(s.clone());
        }
        let settings = self
            .store
            .settings(scope)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if let Ok(mut cache) = self.settings_cache.lock() {
            cache.insert(scope.partition(), (settings.clone(), Instant::now()));
        }
        Ok(settings)
    }

    /// After a settings write: the cached settings go whatever the outcome
    /// (a failed write may still have committed).
    pub(super) fn settings_changed(
        &self,
        scope: &TenantScope,
        result: Result<(), crate::store::GatewayStoreError>,
    ) -> Result<(), GatewayError> {
        self.forget_settings(scope);
        result.map_err(|e| GatewayError::Internal(e.to_string()))
    }

    /// Turns keeping prompts in the tenant's audit chain on or off.
    pub async fn set_audit_prompts(
        &self,
        scope: &TenantScope,
        on: bool,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_audit_prompts(scope, on, event).await;
        self.settings_changed(scope, result)
    }

    /// Sets or clears the tenant's message retention.
    pub async fn set_retention(
        &self,
        scope: &TenantScope,
        days: Option<u32>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_retention(scope, days, event).await;
        self.settings_changed(scope, result)
    }

    /// Sets or clears the tenant's approval webhook.
    pub async fn set_approval_webhook(
        &self,
        scope: &TenantScope,
        url: Option<String>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_approval_webhook(scope, url, event).await;
        self.settings_changed(scope, result)
    }

    /// Replaces the tenant's model allow-list.
    pub async fn set_allowed(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_allowed_models(scope, models, event).await;
        self.settings_changed(scope, result)
    }
}
