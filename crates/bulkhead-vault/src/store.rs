//! What the vault needs from storage. The store crate implements it; the
//! trait lives here so the vault does not depend on any storage engine.
//!
//! Every method that touches one owner's keys or credentials takes a
//! [`CredScope`]: a tenant scope, or the operator acting on the platform's
//! own credentials. Only the operator-wide re-wrap works across owners.

use async_trait::async_trait;
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{TenantUid, Timestamp};

use crate::credential::{ConnectionName, CredentialKind, CredentialStatus};
use crate::kms::WrappedKey;

/// Whose keys and credentials: a tenant's (through its scope) or the
/// platform's (through the operator's).
#[derive(Clone, Copy)]
pub enum CredScope<'a> {
    /// A tenant.
    Tenant(&'a TenantScope),
    /// The platform's own credentials (operator model keys).
    Platform(&'a OperatorScope),
}

impl CredScope<'_> {
    /// The owner these keys belong to.
    pub fn owner(&self) -> KeyOwner {
        match self {
            CredScope::Tenant(s) => KeyOwner::Tenant(s.partition()),
            CredScope::Platform(_) => KeyOwner::Platform,
        }
    }

    /// Principal recorded in audit events.
    pub fn principal(&self) -> &str {
        match self {
            CredScope::Tenant(s) => s.principal().id(),
            CredScope::Platform(op) => op.principal_id(),
        }
    }

    /// The request being served.
    pub fn request_id(&self) -> &bulkhead_core::RequestId {
        match self {
            CredScope::Tenant(s) => s.request_id(),
            CredScope::Platform(op) => op.request_id(),
        }
    }
}

/// The owner of a data key, as stored. Returned by the store; callers
/// cannot use it to reach data (every access method takes a scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    /// A tenant incarnation.
    Tenant(TenantUid),
    /// The platform.
    Platform,
}

impl KeyOwner {
    /// Stable text form (`platform` or the tenant uid).
    pub fn as_text(&self) -> String {
        match self {
            KeyOwner::Tenant(uid) => uid.to_string(),
            KeyOwner::Platform => "platform".to_owned(),
        }
    }
}

/// A wrapped data key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataKey {
    /// Whose key.
    pub owner: KeyOwner,
    /// Data-key version (1, 2, … per owner; the highest is current).
    pub version: u32,
    /// The wrapped key.
    pub wrapped: WrappedKey,
    /// Creation time.
    pub created_at: Timestamp,
}

/// An encrypted credential as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// Connection name.
    pub connection: ConnectionName,
    /// Kind (also inside the ciphertext; here for listing).
    pub kind: CredentialKind,
    /// Write version, for compare-and-swap.
    pub version: u64,
    /// The data-key version it is encrypted under.
    pub dek_version: u32,
    /// The sealed secret.
    pub ciphertext: Vec<u8>,
    /// Status.
    pub status: CredentialStatus,
    /// OAuth2 access-token expiry, kept in clear for listing.
    pub expires_at: Option<Timestamp>,
    /// First stored.
    pub created_at: Timestamp,
    /// Last written.
    pub updated_at: Timestamp,
    /// Last used.
    pub last_used_at: Option<Timestamp>,
}

/// Storage failures, as the vault sees them.
#[derive(Debug, thiserror::Error)]
pub enum VaultStoreError {
    /// The owner (tenant) no longer exists.
    #[error("not found")]
    NotFound,
    /// A compare-and-swap lost (the row changed since it was read).
    #[error("the record changed concurrently")]
    Conflict,
    /// The store failed: its error, kept whole as the source (its message
    /// is this error's message).
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result alias.
pub type VsResult<T> = Result<T, VaultStoreError>;

/// Storage for data keys and credentials.
#[async_trait]
pub trait VaultStore: Send + Sync {
    /// The owner's data keys, oldest first.
    async fn data_keys(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredDataKey>>;
    /// Records a new data-key version; `Conflict` if that version exists.
    async fn insert_data_key(
        &self,
        scope: CredScope<'_>,
        key: &StoredDataKey,
        event: NewAuditEvent,
    ) -> VsResult<()>;
    /// Deletes a data-key version no credential uses any more.
    async fn delete_data_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
        event: NewAuditEvent,
    ) -> VsResult<()>;
    /// Data keys of every owner not wrapped by `(provider, key_id, key_version)`, at most `limit`.
    async fn stale_data_keys(
        &self,
        op: &OperatorScope,
        provider: &str,
        key_id: &str,
        key_version: u32,
        limit: u32,
    ) -> VsResult<Vec<StoredDataKey>>;
    /// Replaces wrapped keys in one transaction, each only if it still equals
    /// the stored one it was read as (compare-and-swap); returns how many
    /// were replaced.
    async fn rewrap_data_keys(
        &self,
        op: &OperatorScope,
        keys: &[(StoredDataKey, WrappedKey)],
    ) -> VsResult<u64>;

    /// One credential.
    async fn credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
    ) -> VsResult<Option<StoredCredential>>;
    /// All the owner's credentials, by name.
    async fn credentials(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredCredential>>;
    /// Writes a credential with its audit event in one transaction. With
    /// `expected_version = Some(v)` it only replaces a row whose version is
    /// `v` (false otherwise); with `None` it inserts or replaces.
    async fn put_credential(
        &self,
        scope: CredScope<'_>,
        credential: &StoredCredential,
        expected_version: Option<u64>,
        event: NewAuditEvent,
    ) -> VsResult<bool>;
    /// Deletes a credential; false if there was none.
    async fn delete_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        event: NewAuditEvent,
    ) -> VsResult<bool>;
    /// Records a use.
    async fn touch_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        at: Timestamp,
        event: NewAuditEvent,
    ) -> VsResult<()>;
}
