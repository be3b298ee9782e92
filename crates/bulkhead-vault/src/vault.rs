//! The vault service: store, use, rotate and redact credentials.

use bulkhead_core::audit::AuditAction;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::Timestamp;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use serde_json::json;

use crate::aead::{DataKey, associated_data};
use crate::credential::{
    ConnectionName, CredentialMeta, CredentialSecret, CredentialStatus, OAuth2Secret,
};
use crate::kms::{EncryptionContext, KeyProvider, KmsError};
use crate::oauth::{RefreshRequest, TokenRefresher};
use crate::redact::Redactor;
use crate::store::{
    CredScope, KeyOwner, StoredCredential, StoredDataKey, VaultStore, VaultStoreError,
};

/// Vault failures as callers see them.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No such credential (or not this scope's).
    #[error("not found")]
    NotFound,
    /// The credential failed to refresh and needs new tokens.
    #[error("the credential needs to be re-authorised by a tenant admin")]
    NeedsReauth,
    /// A concurrent writer won; retrying is safe.
    #[error("the credential changed concurrently; retry")]
    Conflict,
    /// The key provider failed.
    #[error("key provider: {0}")]
    Kms(#[from] KmsError),
    /// A ciphertext did not open (tampering, a row moved between tenants).
    #[error("a stored credential failed its integrity check")]
    Integrity,
    /// Storage or randomness failed.
    #[error("{0}")]
    Internal(String),
}

impl From<VaultStoreError> for VaultError {
    fn from(e: VaultStoreError) -> Self {
        match e {
            VaultStoreError::NotFound => VaultError::NotFound,
            VaultStoreError::Conflict => VaultError::Conflict,
            VaultStoreError::Internal(e) => VaultError::Internal(e.to_string()),
        }
    }
}

/// Outcome of a re-wrap pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RewrapReport {
    /// The KEK version now current.
    pub key_version: u32,
    /// Data keys re-wrapped by this pass.
    pub rewrapped: u64,
}

/// Outcome of a data-key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DataKeyReport {
    /// The data-key version now current.
    pub dek_version: u32,
    /// Credentials re-encrypted by this pass.
    pub reencrypted: u64,
    /// Old data-key versions deleted.
    pub retired: u64,
}

/// Unwrapped data keys are kept this long; a revoked KEK or a rotated data
/// key stops being used within this time even in a long-running process.
const DEK_CACHE_TTL: Duration = Duration::from_secs(300);
/// Refresh an OAuth2 access token this long before it expires, so it does
/// not expire in flight.
const REFRESH_MARGIN_S: i64 = 60;
/// Re-wrap works in batches so a huge fleet does not load every key at once.
const REWRAP_BATCH: u32 = 500;

type CacheKey = (KeyOwner, u32);
type LockKey = (KeyOwner, String);

/// The credential vault.
pub struct Vault {
    kms: Arc<dyn KeyProvider>,
    store: Arc<dyn VaultStore>,
    refresher: Arc<dyn TokenRefresher>,
    cache: Mutex<HashMap<CacheKey, (DataKey, Instant)>>,
    refresh_locks: Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>,
}

fn event(
    scope: CredScope<'_>,
    action: AuditAction,
    target: String,
    outcome: Outcome,
    details: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent::new(action, target, outcome, scope.request_id().clone()).with_details(details)
}

fn credential_aad(
    owner: &KeyOwner,
    connection: &ConnectionName,
    version: u64,
    dek_version: u32,
) -> Vec<u8> {
    associated_data(
        "bulkhead-secret-v1",
        &[
            owner.as_text().as_bytes(),
            connection.as_str().as_bytes(),
            &version.to_be_bytes(),
            &dek_version.to_be_bytes(),
        ],
    )
}

fn context(owner: &KeyOwner, dek_version: u32) -> EncryptionContext {
    match owner {
        KeyOwner::Tenant(uid) => EncryptionContext::tenant(&uid.to_string(), dek_version),
        KeyOwner::Platform => EncryptionContext::platform(dek_version),
    }
}

fn meta(c: &StoredCredential) -> CredentialMeta {
    CredentialMeta {
        connection: c.connection.to_string(),
        kind: c.kind,
        version: c.version,
        status: c.status,
        created_at: c.created_at,
        updated_at: c.updated_at,
        last_used_at: c.last_used_at,
        expires_at: c.expires_at,
    }
}

impl Vault {
    /// A vault over a key provider, a store and a token refresher.
    pub fn new(
        kms: Arc<dyn KeyProvider>,
        store: Arc<dyn VaultStore>,
        refresher: Arc<dyn TokenRefresher>,
    ) -> Self {
        Self {
            kms,
            store,
            refresher,
            cache: Mutex::new(HashMap::new()),
            refresh_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The key provider.
    pub fn kms(&self) -> &Arc<dyn KeyProvider> {
        &self.kms
    }

    fn cached(&self, key: &CacheKey) -> Option<DataKey> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < DEK_CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the data-key cache's TTL measures elapsed time on the monotonic clock"
    )]
    fn remember(&self, key: CacheKey, dek: &DataKey) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (dek.clone(), Instant::now()));
        }
    }

    /// Drops every cached data key of an owner (tenant deletion, rotation).
    pub fn forget(&self, owner: KeyOwner) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(o, _), _| *o != owner);
        }
        if let Ok(mut locks) = self.refresh_locks.lock() {
            locks.retain(|(o, _), _| *o != owner);
        }
    }

    /// Empties the data-key cache (benchmarks measure the first use with it).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The owner's current data key, creating version 1 if it has none.
    async fn current_key(&self, scope: CredScope<'_>) -> Result<(u32, DataKey), VaultError> {
        let keys = self.store.data_keys(scope).await?;
        match keys.last() {
            Some(k) => Ok((k.version, self.unwrap_key(k).await?)),
            None => self.create_key(scope, 1).await,
        }
    }

    async fn create_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
    ) -> Result<(u32, DataKey), VaultError> {
        let owner = scope.owner();
        let dek = DataKey::generate().map_err(|e| VaultError::Internal(e.to_string()))?;
        let wrapped = self.kms.wrap(&dek, &context(&owner, version)).await?;
        let stored = StoredDataKey {
            owner,
            version,
            wrapped,
            created_at: Timestamp::now(),
        };
        let ev = event(
            scope,
            AuditAction::DataKeyCreate,
            format!("data_key:{version}"),
            Outcome::Success,
            json!({"kek_provider": stored.wrapped.provider, "kek_id": stored.wrapped.key_id, "kek_version": stored.wrapped.key_version}),
        );
        match self.store.insert_data_key(scope, &stored, ev).await {
            Ok(()) => {
                self.remember((owner, version), &dek);
                Ok((version, dek))
            }
            // Another request created this version first: use theirs.
            Err(VaultStoreError::Conflict) => {
                let keys = self.store.data_keys(scope).await?;
                let k = keys
                    .iter()
                    .find(|k| k.version == version)
                    .ok_or(VaultError::Conflict)?;
                Ok((version, self.unwrap_key(k).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn unwrap_key(&self, key: &StoredDataKey) -> Result<DataKey, VaultError> {
        if let Some(dek) = self.cached(&(key.owner, key.version)) {
            return Ok(dek);
        }
        let dek = self
            .kms
            .unwrap(&key.wrapped, &context(&key.owner, key.version))
            .await?;
        self.remember((key.owner, key.version), &dek);
        Ok(dek)
    }

    async fn key_version(&self, scope: CredScope<'_>, version: u32) -> Result<DataKey, VaultError> {
        if let Some(dek) = self.cached(&(scope.owner(), version)) {
            return Ok(dek);
        }
        let keys = self.store.data_keys(scope).await?;
        let k = keys.iter().find(|k| k.version == version).ok_or_else(|| {
            VaultError::Internal(format!("data key version {version} is missing"))
        })?;
        self.unwrap_key(k).await
    }

    /// Creates the tenant's first data key (at tenant creation). Idempotent.
    pub async fn ensure_tenant_key(&self, scope: &TenantScope) -> Result<u32, VaultError> {
        Ok(self.current_key(CredScope::Tenant(scope)).await?.0)
    }

    fn seal(
        &self,
        owner: &KeyOwner,
        connection: &ConnectionName,
        version: u64,
        dek_version: u32,
        dek: &DataKey,
        secret: &CredentialSecret,
    ) -> Result<Vec<u8>, VaultError> {
        dek.seal(
            &credential_aad(owner, connection, version, dek_version),
            &secret.to_plaintext(),
        )
        .map_err(|e| VaultError::Internal(e.to_string()))
    }

    /// Decrypts a stored credential of `scope` (the data-key lookup, cached,
    /// and the AEAD open; no store write, no audit event: callers that hand
    /// the secret to an outbound request use [`Vault::use_credential`]).
    pub async fn decrypt(
        &self,
        scope: CredScope<'_>,
        c: &StoredCredential,
    ) -> Result<CredentialSecret, VaultError> {
        self.open(scope, c).await
    }

    async fn open(
        &self,
        scope: CredScope<'_>,
        c: &StoredCredential,
    ) -> Result<CredentialSecret, VaultError> {
        let dek = self.key_version(scope, c.dek_version).await?;
        let plain = dek
            .open(
                &credential_aad(&scope.owner(), &c.connection, c.version, c.dek_version),
                &c.ciphertext,
            )
            .map_err(|_| VaultError::Integrity)?;
        CredentialSecret::from_plaintext(&plain).ok_or(VaultError::Integrity)
    }

    /// Stores (creates or replaces) a credential. Returns its metadata and
    /// whether it was new.
    pub async fn put(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        secret: &CredentialSecret,
    ) -> Result<(CredentialMeta, bool), VaultError> {
        let existing = self.store.credential(scope, connection).await?;
        let (dek_version, dek) = self.current_key(scope).await?;
        let now = Timestamp::now();
        let version = existing.as_ref().map_or(1, |c| c.version + 1);
        let stored = StoredCredential {
            connection: connection.clone(),
            kind: secret.kind(),
            version,
            dek_version,
            ciphertext: self.seal(
                &scope.owner(),
                connection,
                version,
                dek_version,
                &dek,
                secret,
            )?,
            status: CredentialStatus::Active,
            expires_at: secret.expires_at(),
            created_at: existing.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
            last_used_at: existing.as_ref().and_then(|c| c.last_used_at),
        };
        let ev = event(
            scope,
            AuditAction::CredentialPut,
            format!("connection:{connection}"),
            Outcome::Success,
            json!({"kind": secret.kind().as_str(), "version": version, "replaced": existing.is_some()}),
        );
        let expected = existing.as_ref().map(|c| c.version);
        if !self
            .store
            .put_credential(scope, &stored, expected, ev)
            .await?
        {
            return Err(VaultError::Conflict);
        }
        Ok((meta(&stored), existing.is_none()))
    }

    /// Metadata of every credential of the scope.
    pub async fn list(&self, scope: CredScope<'_>) -> Result<Vec<CredentialMeta>, VaultError> {
        Ok(self
            .store
            .credentials(scope)
            .await?
            .iter()
            .map(meta)
            .collect())
    }

    /// Deletes a credential.
    pub async fn delete(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
    ) -> Result<(), VaultError> {
        let ev = event(
            scope,
            AuditAction::CredentialDelete,
            format!("connection:{connection}"),
            Outcome::Success,
            json!({}),
        );
        if self.store.delete_credential(scope, connection, ev).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// Hands a credential to code about to make an outbound request for the
    /// scope's tenant, refreshing an expiring OAuth2 token first. Records
    /// the use; `purpose` says what it is for (e.g. `tool:notify`).
    pub async fn use_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        purpose: &str,
    ) -> Result<CredentialSecret, VaultError> {
        let stored = self
            .store
            .credential(scope, connection)
            .await?
            .ok_or(VaultError::NotFound)?;
        let mut secret = self.open(scope, &stored).await?;
        if let CredentialSecret::Oauth2(o) = &secret {
            let expiring = o.expires_at.is_some_and(|e| {
                e.unix_seconds() - REFRESH_MARGIN_S <= Timestamp::now().unix_seconds()
            });
            if expiring {
                secret = self.refresh(scope, connection, stored.version).await?;
            }
        }
        let now = Timestamp::now();
        let ev = event(
            scope,
            AuditAction::CredentialUse,
            format!("connection:{connection}"),
            Outcome::Success,
            json!({"purpose": purpose}),
        );
        self.store
            .touch_credential(scope, connection, now, ev)
            .await?;
        Ok(secret)
    }

    fn refresh_lock(
        &self,
        owner: KeyOwner,
        connection: &ConnectionName,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.refresh_locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks
            .entry((owner, connection.as_str().to_owned()))
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Refreshes an OAuth2 credential at most once at a time per (owner,
    /// connection). A caller that waited for another's refresh finds a newer
    /// version and uses it without calling the token endpoint again. The
    /// write is a compare-and-swap on the version, so two processes cannot
    /// overwrite each other's refresh either.
    async fn refresh(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        seen_version: u64,
    ) -> Result<CredentialSecret, VaultError> {
        let lock = self.refresh_lock(scope.owner(), connection);
        let _guard = lock.lock().await;
        let current = self
            .store
            .credential(scope, connection)
            .await?
            .ok_or(VaultError::NotFound)?;
        let secret = self.open(scope, &current).await?;
        let fresh = secret
            .expires_at()
            .is_none_or(|e| e.unix_seconds() - REFRESH_MARGIN_S > Timestamp::now().unix_seconds());
        if current.version != seen_version && fresh {
            return Ok(secret);
        }
        if current.status == CredentialStatus::NeedsReauth {
            return Err(VaultError::NeedsReauth);
        }
        let CredentialSecret::Oauth2(o) = &secret else {
            return Ok(secret);
        };
        let Some(refresh_token) = &o.refresh_token else {
            self.mark_needs_reauth(
                scope,
                &current,
                json!({"reason": "no refresh token", "code": "no_refresh_token"}),
            )
            .await?;
            return Err(VaultError::NeedsReauth);
        };
        let result = self
            .refresher
            .refresh(RefreshRequest {
                token_url: &o.token_url,
                client_id: &o.client_id,
                client_secret: o.client_secret.as_ref(),
                refresh_token,
                scope: o.scope.as_deref(),
            })
            .await;
        let grant = match result {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(connection = %connection, code = e.code(), error = %e, "OAuth2 refresh failed");
                // The error carries a stable code, the status and the
                // guard's reason at most: never the endpoint's body.
                self.mark_needs_reauth(
                    scope,
                    &current,
                    json!({"reason": e.to_string(), "code": e.code(), "http_status": e.status()}),
                )
                .await?;
                return Err(VaultError::NeedsReauth);
            }
        };
        let now = Timestamp::now();
        let rotated_refresh_token = grant.refresh_token.is_some();
        let refreshed = CredentialSecret::Oauth2(OAuth2Secret {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token.or_else(|| o.refresh_token.clone()),
            expires_at: grant.expires_in.map(|s| now.plus_seconds(s as i64)),
            token_url: o.token_url.clone(),
            client_id: o.client_id.clone(),
            client_secret: o.client_secret.clone(),
            scope: o.scope.clone(),
        });
        let (dek_version, dek) = self.current_key(scope).await?;
        let version = current.version + 1;
        let stored = StoredCredential {
            version,
            dek_version,
            ciphertext: self.seal(
                &scope.owner(),
                connection,
                version,
                dek_version,
                &dek,
                &refreshed,
            )?,
            status: CredentialStatus::Active,
            expires_at: refreshed.expires_at(),
            updated_at: now,
            ..current.clone()
        };
        let ev = event(
            scope,
            AuditAction::CredentialRefresh,
            format!("connection:{connection}"),
            Outcome::Success,
            json!({"version": version, "rotated_refresh_token": rotated_refresh_token}),
        );
        if !self
            .store
            .put_credential(scope, &stored, Some(current.version), ev)
            .await?
        {
            return Err(VaultError::Conflict);
        }
        Ok(refreshed)
    }

    async fn mark_needs_reauth(
        &self,
        scope: CredScope<'_>,
        current: &StoredCredential,
        why: serde_json::Value,
    ) -> Result<(), VaultError> {
        let stored = StoredCredential {
            version: current.version + 1,
            status: CredentialStatus::NeedsReauth,
            updated_at: Timestamp::now(),
            ..current.clone()
        };
        // The ciphertext is bound to its version: re-seal the same secret.
        let secret = self.open(scope, current).await?;
        let dek = self.key_version(scope, current.dek_version).await?;
        let stored = StoredCredential {
            ciphertext: self.seal(
                &scope.owner(),
                &current.connection,
                stored.version,
                current.dek_version,
                &dek,
                &secret,
            )?,
            ..stored
        };
        let ev = event(
            scope,
            AuditAction::CredentialRefresh,
            format!("connection:{}", current.connection),
            Outcome::Failure,
            {
                let mut details = why;
                details["status"] = json!("needs_reauth");
                details
            },
        );
        self.store
            .put_credential(scope, &stored, Some(current.version), ev)
            .await?;
        Ok(())
    }

    /// Replaces every occurrence of one of the tenant's secret values —
    /// verbatim or in a common encoding ([`crate::redact`]) — in `text`
    /// with `[redacted]`, before tool output reaches a model.
    pub async fn redact(&self, scope: &TenantScope, text: &str) -> Result<String, VaultError> {
        Ok(self.redactor(scope).await?.redact(text))
    }

    /// A redactor of every secret of the tenant's credentials, for texts
    /// of one step (built once, used on each).
    pub async fn redactor(&self, scope: &TenantScope) -> Result<Redactor, VaultError> {
        let scope = CredScope::Tenant(scope);
        let mut secrets = Vec::new();
        for c in self.store.credentials(scope).await? {
            secrets.push(self.open(scope, &c).await?);
        }
        Ok(Redactor::for_credentials(secrets.iter()))
    }

    /// Rotates the key-encryption key and re-wraps every data key under the
    /// new one. Online: old versions stay readable until re-wrapped.
    pub async fn rotate_kek(&self, op: &OperatorScope) -> Result<RewrapReport, VaultError> {
        self.kms.rotate().await?;
        self.rewrap_all(op).await
    }

    /// Re-wraps every data key not wrapped by the current KEK. Resumes an
    /// interrupted rotation; a no-op when everything is current.
    pub async fn rewrap_all(&self, op: &OperatorScope) -> Result<RewrapReport, VaultError> {
        let (key_id, key_version) = self.kms.current();
        let provider = self.kms.name().to_owned();
        let mut report = RewrapReport {
            key_version,
            rewrapped: 0,
        };
        loop {
            let batch = self
                .store
                .stale_data_keys(op, &provider, &key_id, key_version, REWRAP_BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(report);
            }
            let mut pairs = Vec::with_capacity(batch.len());
            for key in batch {
                let ctx = context(&key.owner, key.version);
                let dek = self.kms.unwrap(&key.wrapped, &ctx).await?;
                let new = self.kms.wrap(&dek, &ctx).await?;
                pairs.push((key, new));
            }
            let done = self.store.rewrap_data_keys(op, &pairs).await?;
            report.rewrapped += done;
            let progressed = done > 0;
            if !progressed {
                // Every candidate changed under us; the next pass sees their
                // new state. Stop rather than spin if that keeps happening.
                return Err(VaultError::Conflict);
            }
        }
    }

    /// Rotates a tenant's (or the platform's) data key: a new version, every
    /// credential re-encrypted under it, then the old versions deleted.
    /// Resumes an interrupted rotation instead of starting another.
    pub async fn rotate_data_key(&self, scope: CredScope<'_>) -> Result<DataKeyReport, VaultError> {
        let keys = self.store.data_keys(scope).await?;
        let latest = keys.last().map_or(0, |k| k.version);
        let creds = self.store.credentials(scope).await?;
        let unfinished = creds.iter().any(|c| c.dek_version < latest) || keys.len() > 1;
        let (target, dek) = if unfinished && latest > 0 {
            (latest, self.key_version(scope, latest).await?)
        } else {
            self.create_key(scope, latest + 1).await?
        };
        let mut report = DataKeyReport {
            dek_version: target,
            ..Default::default()
        };
        for c in self.store.credentials(scope).await? {
            if c.dek_version == target {
                continue;
            }
            let secret = self.open(scope, &c).await?;
            let version = c.version + 1;
            let stored = StoredCredential {
                version,
                dek_version: target,
                ciphertext: self.seal(
                    &scope.owner(),
                    &c.connection,
                    version,
                    target,
                    &dek,
                    &secret,
                )?,
                ..c.clone()
            };
            let ev = event(
                scope,
                AuditAction::CredentialReencrypt,
                format!("connection:{}", c.connection),
                Outcome::Success,
                json!({"from_data_key": c.dek_version, "to_data_key": target}),
            );
            // A concurrent write lost the race only if it also moved to the
            // new key (every writer uses the latest key), so a lost CAS is fine.
            if self
                .store
                .put_credential(scope, &stored, Some(c.version), ev)
                .await?
            {
                report.reencrypted += 1;
            }
        }
        let still_old = self
            .store
            .credentials(scope)
            .await?
            .iter()
            .any(|c| c.dek_version != target);
        if still_old {
            return Err(VaultError::Conflict);
        }
        for k in self.store.data_keys(scope).await? {
            if k.version < target {
                let ev = event(
                    scope,
                    AuditAction::DataKeyRetire,
                    format!("data_key:{}", k.version),
                    Outcome::Success,
                    json!({}),
                );
                self.store.delete_data_key(scope, k.version, ev).await?;
                report.retired += 1;
            }
        }
        if let Ok(mut cache) = self.cache.lock() {
            let owner = scope.owner();
            cache.retain(|(o, v), _| *o != owner || *v >= target);
        }
        Ok(report)
    }
}
