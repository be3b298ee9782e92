//! Tenants' policies kept in their partitions, compiled once and cached:
//! what the HTTP layer and the agent runtime ask for every decision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::TenantUid;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use sha2::Digest;

use crate::{Action, Decision, PolicyEngine, PolicyError, Resource, TenantPolicies};

/// How long a tenant's compiled policies are reused without reading them
/// again. A change made through this process applies at once; another
/// replica's change applies within this time.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The policy store failed: its error, kept whole as the source (its
/// message is this error's message), so the chain reaches, e.g., the
/// SQLite error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where a tenant's policy text lives (its partition).
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The tenant's policy text, if it has any.
    async fn tenant_policies(
        &self,
        scope: &TenantScope,
    ) -> Result<Option<String>, PolicyStoreError>;
    /// Replaces (or, with `None`, removes) the tenant's policies, with
    /// its audit event, in one transaction.
    async fn set_tenant_policies(
        &self,
        scope: &TenantScope,
        text: Option<String>,
        event: NewAuditEvent,
    ) -> Result<(), PolicyStoreError>;
}

/// Tenants' policy texts in memory, each under its tenant incarnation (so
/// one tenant's text is unreachable through another's scope). For tests
/// and embedding; the server keeps them in each tenant's partition.
#[derive(Debug, Default)]
pub struct MemoryPolicyStore {
    texts: Mutex<HashMap<TenantUid, String>>,
}

impl MemoryPolicyStore {
    /// A store in which no tenant has policies of its own.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PolicyStore for MemoryPolicyStore {
    async fn tenant_policies(
        &self,
        scope: &TenantScope,
    ) -> Result<Option<String>, PolicyStoreError> {
        let texts = self.texts.lock().map_err(poisoned)?;
        Ok(texts.get(&scope.partition()).cloned())
    }

    async fn set_tenant_policies(
        &self,
        scope: &TenantScope,
        text: Option<String>,
        _event: NewAuditEvent,
    ) -> Result<(), PolicyStoreError> {
        let mut texts = self.texts.lock().map_err(poisoned)?;
        match text {
            Some(t) => texts.insert(scope.partition(), t),
            None => texts.remove(&scope.partition()),
        };
        Ok(())
    }
}

/// A poisoned lock, as a store failure.
fn poisoned<T>(e: std::sync::PoisonError<T>) -> PolicyStoreError {
    PolicyStoreError(e.to_string().into())
}

/// Platform policies that permit every action of every principal (the
/// built-in cross-tenant forbid still applies). See [`Policies::permissive`].
pub const PERMIT_ALL: &str = r#"
@id("permit-all")
permit(principal, action, resource);
"#;

/// Why a policy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoliciesError {
    /// The policies are invalid (the parser's or validator's message).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error("policy store: {0}")]
    Store(#[source] PolicyStoreError),
}

/// Decisions for every tenant.
pub struct Policies {
    engine: PolicyEngine,
    store: std::sync::Arc<dyn PolicyStore>,
    cache: Mutex<HashMap<TenantUid, (TenantPolicies, Instant)>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policies")
    }
}

impl Policies {
    /// Decisions with `engine`, tenants' policies read from `store`.
    pub fn new(engine: PolicyEngine, store: std::sync::Arc<dyn PolicyStore>) -> Self {
        Self {
            engine,
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Decisions that permit everything (platform policies
    /// [`PERMIT_ALL`]) over a [`MemoryPolicyStore`], so a tool call needs no
    /// approval unless a tenant's own policies say so. For tests and
    /// embedding; the server's platform policies come from its
    /// configuration.
    pub fn permissive() -> Result<Self, PoliciesError> {
        Ok(Self::new(
            PolicyEngine::new(Some(PERMIT_ALL))?,
            std::sync::Arc::new(MemoryPolicyStore::new()),
        ))
    }

    /// The engine (schema and platform policies).
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// The tenant's compiled policies (cached).
    pub async fn tenant(&self, scope: &TenantScope) -> Result<TenantPolicies, PoliciesError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((p, at)) = cache.get(&scope.partition())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(p.clone());
        }
        let text = self
            .store
            .tenant_policies(scope)
            .await
            .map_err(PoliciesError::Store)?;
        // Stored text was valid when written; if a platform change made it
        // invalid, its forbids must not silently vanish: refuse everything
        // rather than fall back to the platform's permits.
        let compiled = self.engine.compile(text.as_deref().unwrap_or(""))?;
        if let Ok(mut cache) = self.cache.lock() {
            #[expect(
                clippy::disallowed_methods,
                reason = "the cache's TTL measures elapsed time on the monotonic clock"
            )]
            cache.insert(scope.partition(), (compiled.clone(), Instant::now()));
        }
        Ok(compiled)
    }

    /// Decides `action` on `resource` for the scope's principal.
    pub async fn authorize(
        &self,
        scope: &TenantScope,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PoliciesError> {
        let policies = self.tenant(scope).await?;
        Ok(self.engine.authorize(&policies, scope, action, resource)?)
    }

    /// The tenant's own policy text (empty when it has none).
    pub async fn text(&self, scope: &TenantScope) -> Result<String, PoliciesError> {
        Ok(self.tenant(scope).await?.text().to_owned())
    }

    /// Replaces the tenant's policies: validated first (an invalid text is
    /// refused, nothing is recorded and the old policies stay), then stored
    /// with its `policies.update` event — a SHA-256 and the size of the
    /// text, never the text — in one write. Empty text removes them.
    pub async fn replace(&self, scope: &TenantScope, text: &str) -> Result<(), PoliciesError> {
        let compiled = self.engine.compile(text)?;
        let event = NewAuditEvent::new(
            AuditAction::PoliciesUpdate,
            format!("tenant:{}", scope.tenant()),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_details(serde_json::json!({
            "sha256": bulkhead_core::audit::hex(&sha2::Sha256::digest(text.as_bytes())),
            "bytes": text.len(),
            "cleared": text.trim().is_empty(),
        }));
        let stored = (!text.trim().is_empty()).then(|| text.to_owned());
        let result = self.store.set_tenant_policies(scope, stored, event).await;
        if let Ok(mut cache) = self.cache.lock() {
            match &result {
                Ok(()) => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "the cache's TTL measures elapsed time on the monotonic clock"
                    )]
                    cache.insert(scope.partition(), (compiled, Instant::now()));
                }
                // A failed write may still have committed: read it again.
                Err(_) => {
                    cache.remove(&scope.partition());
                }
            }
        }
        result.map_err(PoliciesError::Store)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// A store failure keeps its message (behind `policy store:`) and is
    /// the source, holding the store's own error.
    #[test]
    fn a_store_failure_keeps_its_chain() {
        let io = std::io::Error::other("disk gone");
        let e = PoliciesError::Store(PolicyStoreError(Box::new(io)));
        assert_eq!(e.to_string(), "policy store: disk gone");
        let source = e.source().expect("the store error is the source");
        assert_eq!(source.to_string(), "disk gone");
        let store = source
            .downcast_ref::<PolicyStoreError>()
            .expect("the source is the store's error");
        assert!(store.0.downcast_ref::<std::io::Error>().is_some());
        assert!(
            source
                .source()
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        );
    }
}
