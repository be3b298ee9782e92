//! The tenant's gateway settings: read through a short per-tenant cache,
//! written with their audit events (the cache entry dropped either way).

use std::time::{Duration, Instant};

use bulkhead_auth::TenantScope;
use bulkhead_core::RequestId;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};

use super::Gateway;
use crate::error::GatewayError;
use crate::store::{GatewaySettings, SettingsChange};

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
            #[expect(
                clippy::disallowed_methods,
                reason = "the settings cache's TTL measures elapsed time on the monotonic clock"
            )]
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

    /// Applies the operator's `change` to the tenant's settings: one write
    /// with one `tenant.settings` event in the tenant's chain, which it
    /// returns so the caller can record the same event in the operator's
    /// chain. The event lists each changed setting; of the approval webhook
    /// only whether one is set (its URL may carry a token).
    pub async fn change_settings(
        &self,
        scope: &TenantScope,
        request_id: &RequestId,
        change: &SettingsChange,
    ) -> Result<NewAuditEvent, GatewayError> {
        let mut details = serde_json::Map::new();
        if let Some(on) = change.audit_prompts {
            details.insert("audit_prompts".into(), on.into());
        }
        if let Some(days) = change.message_retention_days {
            details.insert("message_retention_days".into(), serde_json::json!(days));
        }
        if let Some(url) = &change.approval_webhook {
            details.insert("approval_webhook_set".into(), url.is_some().into());
        }
        let event = NewAuditEvent::new(
            AuditAction::TenantSettings,
            format!("tenant:{}", scope.tenant()),
            Outcome::Success,
            request_id.clone(),
        )
        .with_details(details.into());
        let result = self
            .store
            .update_settings(scope, change, event.clone())
            .await;
        self.settings_changed(scope, result)?;
        Ok(event)
    }

    /// Replaces the tenant's model allow-list (`None`: every model of the
    /// catalog) with one `tenant.models` event in the tenant's chain, which
    /// it returns so the caller can record the same event in the
    /// operator's chain.
    pub async fn set_allowed(
        &self,
        scope: &TenantScope,
        request_id: &RequestId,
        models: Option<Vec<String>>,
    ) -> Result<NewAuditEvent, GatewayError> {
        let event = NewAuditEvent::new(
            AuditAction::TenantModels,
            format!("tenant:{}", scope.tenant()),
            Outcome::Success,
            request_id.clone(),
        )
        .with_details(serde_json::json!({ "allowed": models }));
        let result = self
            .store
            .set_allowed_models(scope, models, event.clone())
            .await;
        self.settings_changed(scope, result)?;
        Ok(event)
    }
}
