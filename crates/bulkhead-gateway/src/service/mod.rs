//! The gateway service: resolve, check, call, translate, record.
//!
//! [`Gateway`] is built from all of its collaborators ([`Collaborators`]):
//! the limiter and the tripwire are not optional, so no call path can skip
//! a limit or the canary check because a builder was not called (tests
//! pass an unlimited limiter, `memory::unlimited_limiter`). This module
//! holds what every call shares — resolving the model against the tenant
//! (allow-list, region), the provider key and the outbound check; the
//! calls themselves are in `chat`, `embed` and `stream` (and the
//! Responses API over chat in `respond`), their bookkeeping
//! in `ledger`, fair admission in `slot`, and the tenant settings in
//! `settings`.

mod chat;
mod embed;
mod ledger;
mod request;
mod respond;
mod settings;
mod slot;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulkhead_auth::TenantScope;
use bulkhead_auth::observe::{CrossTenant, Observer};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{SecretString, TenantUid, Timestamp};
use bulkhead_quota::Limiter;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::store::CredScope;
use bulkhead_vault::{Vault, VaultError};
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::canary::{CanaryScanner, Channel, LeakAlarm};
use crate::catalog::{Catalog, KeySource, Model};
use crate::error::GatewayError;
use crate::store::{GatewaySettings, GatewayStore};
use crate::upstream::{ReadError, Upstream};

pub use chat::ChatOutcome;
pub use embed::{Embeddings, EmbeddingsRequest, MAX_EMBEDDING_INPUTS};
pub use ledger::ToolUsage;
pub use request::ChatRequest;
pub use respond::ResponseOutcome;

use ledger::Recorder;

/// Everything a [`Gateway`] works with; each is required.
pub struct Collaborators {
    /// The providers and model aliases.
    pub catalog: Arc<Catalog>,
    /// Where tenants' own provider keys are.
    pub vault: Arc<Vault>,
    /// The ledger, the audit chain and the tenant settings.
    pub store: Arc<dyn GatewayStore>,
    /// Tenants' token rates and budgets, and their weights for fair
    /// admission to saturated providers.
    pub limiter: Arc<Limiter>,
    /// The cross-tenant tripwire: every outbound request is scanned for
    /// another tenant's canary ...
    pub canaries: Arc<CanaryScanner>,
    /// ... and a hit is reported here (and refused).
    pub alarm: Arc<dyn LeakAlarm>,
}

/// The model gateway.
pub struct Gateway {
    catalog: Arc<Catalog>,
    upstream: Upstream,
    vault: Arc<Vault>,
    store: Arc<dyn GatewayStore>,
    recorder: Recorder,
    settings_cache: Mutex<HashMap<TenantUid, (GatewaySettings, Instant)>>,
    canaries: Arc<CanaryScanner>,
    alarm: Arc<dyn LeakAlarm>,
    limiter: Arc<Limiter>,
}

fn now_unix() -> u64 {
    Timestamp::now().unix_seconds().max(0) as u64
}

impl Gateway {
    /// A gateway over its collaborators.
    pub fn new(parts: Collaborators) -> Result<Self, GatewayError> {
        let Collaborators {
            catalog,
            vault,
            store,
            limiter,
            canaries,
            alarm,
        } = parts;
        Ok(Self {
            catalog,
            upstream: Upstream::new()?,
            vault,
            recorder: Recorder {
                store: store.clone(),
                tasks: TaskTracker::new(),
                stop: tokio_util::sync::CancellationToken::new(),
                observer: Arc::new(std::sync::OnceLock::new()),
                ledger_failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            },
            store,
            settings_cache: Mutex::new(HashMap::new()),
            canaries,
            alarm,
            limiter,
        })
    }

    /// Sets who is told of settled calls, tool calls, run ends and
    /// blocked leaks; a second call changes nothing.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.recorder.observer.set(observer);
    }

    /// The observer ([`NoObserver`] until one is set).
    pub fn observer(&self) -> &dyn Observer {
        self.recorder.observer()
    }

    /// The limiter that enforces tenants' limits.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    fn weight(&self, scope: &TenantScope) -> u32 {
        self.limiter.weight(scope)
    }

    /// Checks an outbound request (model or tool) for another tenant's
    /// canary; on a hit, raises the alarm and refuses.
    pub async fn check_outbound(
        &self,
        scope: &TenantScope,
        bytes: &[u8],
        channel: Channel,
    ) -> Result<(), GatewayError> {
        if self.canaries.is_empty() {
            return Ok(());
        }
        let Some(victim) = self.canaries.check(scope.partition(), bytes) else {
            return Ok(());
        };
        tracing::error!(tenant = %scope.tenant(), channel = channel.as_str(), "blocked a request carrying another tenant's canary");
        self.alarm.raise(scope, victim, channel).await;
        self.observer().cross_tenant(scope, CrossTenant::Canary);
        Err(GatewayError::CrossTenantLeak)
    }

    /// Stops every model call still going (the shutdown grace is over):
    /// each is recorded `cancelled`, billed what the provider reported or
    /// else its estimate. [`Gateway::drain`] then returns promptly.
    pub fn cancel_in_flight(&self) {
        self.recorder.stop.cancel();
    }

    /// Waits until every started call (streams included) has finished and
    /// its usage row and audit event are written. Call it after the HTTP
    /// server has stopped accepting requests; calls started afterwards are
    /// still recorded but no longer waited for.
    pub async fn drain(&self) {
        self.recorder.tasks.close();
        self.recorder.tasks.wait().await;
        self.recorder.tasks.reopen();
    }

    /// The models this tenant may use: allowed for it and served from its region.
    pub async fn models(&self, scope: &TenantScope) -> Result<Vec<Model>, GatewayError> {
        let allowed = self.settings(scope).await?.allowed_models;
        Ok(self
            .catalog
            .all()
            .filter(|m| allowed.as_ref().is_none_or(|a| a.contains(&m.name)))
            .filter(|m| &m.provider.region == scope.region())
            .cloned()
            .collect())
    }

    async fn resolve(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<(Model, GatewaySettings), GatewayError> {
        let model = self
            .catalog
            .get(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        let settings = self.settings(scope).await?;
        if settings
            .allowed_models
            .as_ref()
            .is_some_and(|a| !a.contains(&model.name))
        {
            return Err(GatewayError::ModelNotFound(name.to_owned()));
        }
        if &model.provider.region != scope.region() {
            let err = GatewayError::Residency {
                model: model.name.clone(),
                provider_region: model.provider.region.to_string(),
                tenant_region: scope.region().to_string(),
            };
            let event = NewAuditEvent::new(
                AuditAction::ModelCall,
                format!("model:{}", model.name),
                Outcome::Denied,
                scope.request_id().clone(),
            )
            .with_details(
                json!({"reason": "residency", "provider": model.provider.name,
                "provider_region": model.provider.region, "tenant_region": scope.region()}),
            );
            if let Err(e) = self.store.append_audit(scope, event).await {
                tracing::error!(error = %e, "could not audit a residency refusal");
            }
            return Err(err);
        }
        Ok((model, settings))
    }

    async fn key(
        &self,
        scope: &TenantScope,
        model: &Model,
    ) -> Result<Option<SecretString>, GatewayError> {
        match &model.provider.key {
            KeySource::None => Ok(None),
            KeySource::Platform(k) => Ok(Some(k.clone())),
            KeySource::Tenant(conn) => {
                let name = ConnectionName::parse(conn)
                    .map_err(|_| GatewayError::MissingCredential(conn.clone()))?;
                let purpose = format!("model:{}", model.name);
                match self
                    .vault
                    .use_credential(CredScope::Tenant(scope), &name, &purpose)
                    .await
                {
                    Ok(CredentialSecret::ApiKey(k)) | Ok(CredentialSecret::Bearer(k)) => {
                        Ok(Some(k))
                    }
                    Ok(CredentialSecret::Oauth2(o)) => Ok(Some(o.access_token)),
                    Ok(CredentialSecret::Basic { .. })
                    | Err(VaultError::NotFound)
                    | Err(VaultError::NeedsReauth) => {
                        Err(GatewayError::MissingCredential(conn.clone()))
                    }
                    Err(e) => Err(GatewayError::Internal(e.to_string())),
                }
            }
        }
    }
}

fn read_error(provider: &crate::catalog::Provider, e: ReadError) -> GatewayError {
    match e {
        ReadError::TooLarge(_) => GatewayError::UpstreamTooLarge(provider.max_response_bytes),
        ReadError::Timeout => GatewayError::UpstreamTimeout(provider.timeout.as_secs()),
        ReadError::Failed(m) => GatewayError::Upstream(m),
    }
}
