//! In-memory [`VaultStore`], for tests below HTTP (feature `test-support`).
//!
//! It keeps the SQLite store's semantics (`bulkhead-store`'s
//! `sqlite/vault.rs`): data keys of every owner in one table ordered by
//! (owner text, version), as the control database keeps them; credentials
//! in the owner's own map, so another tenant's are unreachable; the same
//! compare-and-swap on credential versions and on re-wrapped keys; a write
//! and its audit event together (under one lock). A tenant removed with
//! [`MemoryVaultStore::delete_tenant`] loses its keys and credentials, and
//! its scope then finds nothing and cannot add keys again (`NotFound`), as
//! after a tenant deletion there.
//!
//! With it come a key provider whose KEKs live in memory and a refresher
//! with no token endpoint, so [`vault`] builds a whole vault without files
//! or network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{TenantUid, Timestamp};

use crate::credential::ConnectionName;
use crate::kms::{EncryptionContext, KeyProvider, KmsError, WrappedKey};
use crate::oauth::{RefreshError, RefreshRequest, TokenGrant, TokenRefresher};
use crate::store::{
    CredScope, KeyOwner, StoredCredential, StoredDataKey, VaultStore, VaultStoreError, VsResult,
};

#[derive(Default)]
struct State {
    /// Every owner's data keys by (owner text, version): the order of
    /// `ORDER BY owner, version`.
    keys: BTreeMap<(String, u32), StoredDataKey>,
    /// Each owner's credentials, by connection name.
    credentials: HashMap<KeyOwner, BTreeMap<ConnectionName, StoredCredential>>,
    /// Each owner's audit events, in order.
    audit: HashMap<KeyOwner, Vec<NewAuditEvent>>,
    /// Deleted tenant incarnations.
    deleted: HashSet<TenantUid>,
}

impl State {
    /// `NotFound` once the owner's tenant was deleted.
    fn alive(&self, owner: KeyOwner) -> VsResult<()> {
        match owner {
            KeyOwner::Tenant(uid) if self.deleted.contains(&uid) => Err(VaultStoreError::NotFound),
            _ => Ok(()),
        }
    }

    fn audit(&mut self, owner: KeyOwner, event: NewAuditEvent) {
        self.audit.entry(owner).or_default().push(event);
    }
}

/// The vault's storage in memory.
#[derive(Default, Clone)]
pub struct MemoryVaultStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryVaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVaultStore").finish_non_exhaustive()
    }
}

impl MemoryVaultStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> VsResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| VaultStoreError::Internal("the memory store's lock is poisoned".into()))
    }

    /// The owner's audit events, in the order they were appended.
    pub fn audit_events(&self, scope: CredScope<'_>) -> Vec<NewAuditEvent> {
        self.lock()
            .map(|s| s.audit.get(&scope.owner()).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Deletes the tenant's data keys and credentials, as a tenant
    /// deletion does: its scope finds nothing afterwards.
    pub fn delete_tenant(&self, scope: &TenantScope) {
        if let Ok(mut s) = self.lock() {
            let owner = KeyOwner::Tenant(scope.partition());
            let text = owner.as_text();
            s.keys.retain(|(o, _), _| *o != text);
            s.credentials.remove(&owner);
            s.deleted.insert(scope.partition());
        }
    }
}

#[async_trait]
impl VaultStore for MemoryVaultStore {
    async fn data_keys(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredDataKey>> {
        let s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        let text = owner.as_text();
        Ok(s.keys
            .iter()
            .filter(|((o, _), _)| *o == text)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn insert_data_key(
        &self,
        scope: CredScope<'_>,
        key: &StoredDataKey,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let mut s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        let slot = (owner.as_text(), key.version);
        if s.keys.contains_key(&slot) {
            return Err(VaultStoreError::Conflict);
        }
        // Stored under the scope's owner, whatever the key says (as the
        // SQLite store binds the owner from the scope).
        let key = StoredDataKey {
            owner,
            ..key.clone()
        };
        s.keys.insert(slot, key);
        s.audit(owner, event);
        Ok(())
    }

    async fn delete_data_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let mut s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        s.keys.remove(&(owner.as_text(), version));
        s.audit(owner, event);
        Ok(())
    }

    async fn stale_data_keys(
        &self,
        _op: &OperatorScope,
        provider: &str,
        key_id: &str,
        key_version: u32,
        limit: u32,
    ) -> VsResult<Vec<StoredDataKey>> {
        let s = self.lock()?;
        Ok(s.keys
            .values()
            .filter(|k| {
                !(k.wrapped.provider == provider
                    && k.wrapped.key_id == key_id
                    && k.wrapped.key_version == key_version)
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn rewrap_data_keys(
        &self,
        _op: &OperatorScope,
        keys: &[(StoredDataKey, WrappedKey)],
    ) -> VsResult<u64> {
        let mut s = self.lock()?;
        let mut done = 0;
        for (key, new) in keys {
            // Compare-and-swap: only a key still wrapped as it was read.
            if let Some(stored) = s.keys.get_mut(&(key.owner.as_text(), key.version))
                && stored.wrapped.ciphertext == key.wrapped.ciphertext
            {
                stored.wrapped = new.clone();
                done += 1;
            }
        }
        Ok(done)
    }

    async fn credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
    ) -> VsResult<Option<StoredCredential>> {
        let s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        Ok(s.credentials
            .get(&owner)
            .and_then(|c| c.get(connection))
            .cloned())
    }

    async fn credentials(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredCredential>> {
        let s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        Ok(s.credentials
            .get(&owner)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_credential(
        &self,
        scope: CredScope<'_>,
        credential: &StoredCredential,
        expected_version: Option<u64>,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        let mut s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        let table = s.credentials.entry(owner).or_default();
        let current = table.get(&credential.connection);
        if expected_version.is_some_and(|v| current.map(|c| c.version) != Some(v)) {
            return Ok(false);
        }
        // An update keeps the row's first `created_at`, as the upsert does.
        let created_at = current.map_or(credential.created_at, |c| c.created_at);
        table.insert(
            credential.connection.clone(),
            StoredCredential {
                created_at,
                ..credential.clone()
            },
        );
        s.audit(owner, event);
        Ok(true)
    }

    async fn delete_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        let mut s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        let removed = s
            .credentials
            .get_mut(&owner)
            .and_then(|c| c.remove(connection))
            .is_some();
        if removed {
            s.audit(owner, event);
        }
        Ok(removed)
    }

    async fn touch_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        at: Timestamp,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let mut s = self.lock()?;
        let owner = scope.owner();
        s.alive(owner)?;
        if let Some(c) = s
            .credentials
            .get_mut(&owner)
            .and_then(|c| c.get_mut(connection))
        {
            c.last_used_at = Some(at);
        }
        s.audit(owner, event);
        Ok(())
    }
}

/// Key-encryption keys held in memory, versioned like the local key file:
/// [`KeyProvider::rotate`] adds a version, older ones still unwrap.
pub struct MemoryKeyProvider {
    state: Mutex<Keks>,
}

/// The active KEK version and every version by number.
type Keks = (u32, BTreeMap<u32, crate::aead::DataKey>);

impl std::fmt::Debug for MemoryKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKeyProvider").finish_non_exhaustive()
    }
}

/// The key id every wrap of a [`MemoryKeyProvider`] names.
const MEMORY_KEY_ID: &str = "memory";

impl MemoryKeyProvider {
    /// A provider with one fresh KEK (version 1).
    pub fn new() -> Result<Self, KmsError> {
        let kek = crate::aead::DataKey::generate().map_err(|e| KmsError::Backend(e.to_string()))?;
        Ok(Self {
            state: Mutex::new((1, BTreeMap::from([(1, kek)]))),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Keks>, KmsError> {
        self.state
            .lock()
            .map_err(|_| KmsError::Backend("key state poisoned".into()))
    }
}

#[async_trait]
impl KeyProvider for MemoryKeyProvider {
    fn name(&self) -> &str {
        "memory"
    }

    fn current(&self) -> (String, u32) {
        let active = self.lock().map(|s| s.0).unwrap_or(0);
        (MEMORY_KEY_ID.to_owned(), active)
    }

    async fn wrap(
        &self,
        key: &crate::aead::DataKey,
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let state = self.lock()?;
        let kek = state.1.get(&state.0).ok_or(KmsError::Unwrap)?;
        let ciphertext = kek
            .seal(&ctx.to_aad(), key.expose())
            .map_err(|e| KmsError::Backend(e.to_string()))?;
        Ok(WrappedKey {
            provider: self.name().to_owned(),
            key_id: MEMORY_KEY_ID.to_owned(),
            key_version: state.0,
            ciphertext,
        })
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<crate::aead::DataKey, KmsError> {
        if wrapped.provider != self.name() {
            return Err(KmsError::WrongProvider(wrapped.provider.clone()));
        }
        let state = self.lock()?;
        let kek = state
            .1
            .get(&wrapped.key_version)
            .filter(|_| wrapped.key_id == MEMORY_KEY_ID)
            .ok_or_else(|| KmsError::UnknownKeyVersion {
                key_id: wrapped.key_id.clone(),
                version: wrapped.key_version,
            })?;
        let raw = kek
            .open(&ctx.to_aad(), &wrapped.ciphertext)
            .map_err(|_| KmsError::Unwrap)?;
        crate::aead::DataKey::from_bytes(&raw).ok_or(KmsError::Unwrap)
    }

    async fn rotate(&self) -> Result<(String, u32), KmsError> {
        let mut state = self.lock()?;
        let next = state.1.keys().max().copied().unwrap_or(0) + 1;
        let kek = crate::aead::DataKey::generate().map_err(|e| KmsError::Backend(e.to_string()))?;
        state.1.insert(next, kek);
        state.0 = next;
        Ok((MEMORY_KEY_ID.to_owned(), next))
    }
}

/// A token refresher that refuses every refresh (no token endpoint in
/// tests that do not script one): an expired OAuth2 credential then needs
/// re-authorisation, as after a refused refresh.
#[derive(Debug, Default)]
pub struct NoRefresh;

#[async_trait]
impl TokenRefresher for NoRefresh {
    async fn refresh(&self, _req: RefreshRequest<'_>) -> Result<TokenGrant, RefreshError> {
        Err(RefreshError::Rejected {
            status: 400,
            error: Some("invalid_grant"),
        })
    }
}

/// A vault over `store`, with keys in memory and no token endpoint.
pub fn vault(store: &MemoryVaultStore) -> Result<crate::Vault, KmsError> {
    Ok(crate::Vault::new(
        Arc::new(MemoryKeyProvider::new()?),
        Arc::new(store.clone()),
        Arc::new(NoRefresh),
    ))
}
