//! Storage for bulkhead.
//!
//! Two traits describe everything the layers above may do with stored
//! state. [`ControlStore`] holds the control plane (tenants, API keys, the
//! operator's audit chain) and answers authentication lookups; its methods
//! take an [`OperatorScope`]. [`TenantStore`] holds each tenant's own data
//! and takes a [`TenantScope`]: there is no method that accepts a tenant id
//! as a string, so tenant data cannot be reached without authentication.
//!
//! The embedded implementation ([`sqlite::SqliteStore`]) gives every tenant
//! its own directory and SQLite database, named by the tenant's internal
//! [`bulkhead_core::TenantUid`]. A PostgreSQL implementation (row-level
//! security) is meant to implement the same traits and pass the same
//! conformance suite (`tests/it/conformance.rs`).
//!
//! With the feature `redis`, [`redis_limits::RedisBackend`] keeps the
//! tenants' limit counters (`bulkhead_quota::LimitBackend`) in Redis, so
//! that several processes enforce one limit together.
//!
//! With the feature `nats`, [`nats::run`] publishes each tenant's audit
//! events to NATS JetStream from the partition's outbox.

pub mod migrate;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis_limits;
pub mod sqlite;

use async_trait::async_trait;
use bulkhead_auth::{Directory, FailureAttribution, OperatorScope, TenantScope};
use std::sync::Arc;

use bulkhead_core::audit::{AuditEvent, NewAuditEvent};
use bulkhead_core::checkpoint::{AuditSigner, Checkpoint};
use bulkhead_core::tenant::TenantPatch;
use bulkhead_core::{ApiKeyId, ApiKeyRecord, Isolation, Region, Role, Tenant, TenantId, Timestamp};

pub use bulkhead_auth::ApiKeyDigest;

/// Store failures. `NotFound` is also what another tenant's resource
/// produces: callers cannot tell the two apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such resource (or not visible to this scope).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An invariant of the store broke: a corrupt row, a poisoned lock, a
    /// writer that stopped.
    #[error("storage failure: {0}")]
    Internal(String),
    /// The database or file system failed; its error is the source, so
    /// callers (and logs) keep the whole chain.
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The write would take the tenant over a storage quota; nothing was
    /// written.
    #[error("{0}")]
    Quota(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl StoreError {
    /// Whether the backend refused the write for a uniqueness constraint
    /// (SQLite names it in its message: `UNIQUE constraint failed`).
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Internal(_) | StoreError::Backend(_))
            && self.to_string().contains("UNIQUE")
    }
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// A tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Public id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Region.
    pub region: Region,
    /// Isolation mode.
    pub isolation: Isolation,
}

/// An API key to record (the key itself never reaches the store).
#[derive(Debug, Clone)]
pub struct NewApiKeyRecord {
    /// Key id.
    pub id: ApiKeyId,
    /// Digest of the key.
    pub digest: ApiKeyDigest,
    /// Optional label.
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<Role>,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
}

/// A page of a chain: events with `seq > after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Exclusive lower bound on `seq`.
    pub after: u64,
    /// Maximum number of events.
    pub limit: u32,
}

/// When a chain gets a signed checkpoint (`[audit]`): once `events` events
/// were added since its last one, or once the oldest of those is
/// `interval_s` seconds old.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRule {
    /// Events since the last checkpoint.
    pub events: u64,
    /// Age in seconds of the oldest event since the last checkpoint.
    pub interval_s: u64,
}

/// The control plane. Every mutation appends its event to the operator's
/// chain in the same transaction, and mirrors it into the tenant's chain
/// when it concerns one tenant.
#[async_trait]
pub trait ControlStore: Directory {
    /// Creates a tenant and its empty partition.
    async fn create_tenant(&self, op: &OperatorScope, new: NewTenant) -> StoreResult<Tenant>;
    /// One tenant.
    async fn get_tenant(&self, op: &OperatorScope, id: &TenantId) -> StoreResult<Tenant>;
    /// All tenants, by id.
    async fn list_tenants(&self, op: &OperatorScope) -> StoreResult<Vec<Tenant>>;
    /// Changes a tenant.
    async fn update_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        patch: TenantPatch,
    ) -> StoreResult<Tenant>;
    /// Erases a tenant: its keys, its partition and everything in it.
    async fn delete_tenant(&self, op: &OperatorScope, id: &TenantId) -> StoreResult<Tenant>;
    /// Records a new API key.
    async fn create_api_key(
        &self,
        op: &OperatorScope,
        tenant: &TenantId,
        key: NewApiKeyRecord,
    ) -> StoreResult<ApiKeyRecord>;
    /// A tenant's keys (never the keys themselves).
    async fn list_api_keys(
        &self,
        op: &OperatorScope,
        tenant: &TenantId,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key; revoking twice is not an error.
    async fn revoke_api_key(
        &self,
        op: &OperatorScope,
        tenant: &TenantId,
        key: ApiKeyId,
    ) -> StoreResult<ApiKeyRecord>;
    /// Appends an operator event that is not a store mutation (e.g. a
    /// refused request).
    async fn append_operator_audit(
        &self,
        op: &OperatorScope,
        tenant: Option<&TenantId>,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent>;
    /// A page of the operator's chain.
    async fn operator_audit(&self, op: &OperatorScope, page: Page) -> StoreResult<Vec<AuditEvent>>;
    /// Signs a checkpoint of the operator's chain if `rule` says one is due.
    async fn operator_checkpoint(
        &self,
        op: &OperatorScope,
        signer: Arc<AuditSigner>,
        rule: CheckpointRule,
    ) -> StoreResult<Option<Checkpoint>>;
    /// The operator chain's checkpoints with `seq >= from`, oldest first.
    async fn operator_checkpoints(
        &self,
        op: &OperatorScope,
        from: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>>;
}

/// Tenant data, reachable only through a scope.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Appends an event to the scope's tenant chain.
    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent>;
    /// Appends an attributed authentication failure to that tenant's chain.
    async fn append_failure(
        &self,
        failure: &FailureAttribution,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent>;
    /// A page of the scope's tenant chain.
    async fn audit(&self, scope: &TenantScope, page: Page) -> StoreResult<Vec<AuditEvent>>;
    /// Signs a checkpoint of the scope's chain if `rule` says one is due.
    async fn checkpoint(
        &self,
        scope: &TenantScope,
        signer: Arc<AuditSigner>,
        rule: CheckpointRule,
    ) -> StoreResult<Option<Checkpoint>>;
    /// The tenants whose partitions were written since the last call (the
    /// chains a checkpoint may have become due on), and forgets them. The
    /// checkpoint sweep visits these instead of every tenant.
    fn take_written(&self) -> Vec<TenantId>;
    /// The scope chain's checkpoints with `seq >= from`, oldest first.
    async fn checkpoints(
        &self,
        scope: &TenantScope,
        from: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>>;
    /// The tenant's own alert rules, as stored by
    /// [`set_alert_rules`](Self::set_alert_rules) (`None`: none set).
    async fn alert_rules(&self, scope: &TenantScope) -> StoreResult<Option<String>>;
    /// Replaces the tenant's alert rules (`None` removes them), in one
    /// transaction with `event`.
    async fn set_alert_rules(
        &self,
        scope: &TenantScope,
        rules: Option<String>,
        event: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Records one alert transition (its JSON body) in one transaction
    /// with its audit event; returns its sequence number.
    async fn record_alert(
        &self,
        scope: &TenantScope,
        body: String,
        event: NewAuditEvent,
    ) -> StoreResult<u64>;
    /// A page of the tenant's alert transitions (`seq > after`), oldest first.
    async fn alert_events(&self, scope: &TenantScope, page: Page) -> StoreResult<Vec<StoredAlert>>;
}

/// One recorded alert transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// Position among the tenant's alert events, from 1.
    pub seq: u64,
    /// The JSON body, as its webhooks were sent.
    pub body: String,
}

/// What the storage-port error tests share: a real SQLite error, and a
/// walk down an error's source chain.
#[cfg(test)]
pub(crate) mod testing {
    use std::error::Error;

    /// The error SQLite gives for text that is not SQL.
    pub(crate) fn sqlite_error() -> rusqlite::Error {
        rusqlite::Connection::open_in_memory()
            .unwrap()
            .execute("NOT SQL", [])
            .unwrap_err()
    }

    /// Whether `e` or an error in its source chain is a SQLite error.
    pub(crate) fn reaches_sqlite(e: &(dyn Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if e.downcast_ref::<rusqlite::Error>().is_some() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{reaches_sqlite, sqlite_error};
    use super::*;

    #[test]
    fn a_sqlite_failure_is_the_source_and_the_message_is_unchanged() {
        let sqlite = sqlite_error();
        let text = sqlite.to_string();
        let e = StoreError::from(sqlite);
        assert_eq!(e.to_string(), format!("storage failure: {text}"));
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), text);
        assert!(source.downcast_ref::<rusqlite::Error>().is_some());
        let io = StoreError::from(std::io::Error::other("disk gone"));
        assert_eq!(io.to_string(), "storage failure: disk gone");
        assert!(
            std::error::Error::source(&io)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        );
        assert!(!reaches_sqlite(&StoreError::Internal("corrupt row".into())));
    }

    #[test]
    fn only_a_unique_constraint_is_a_unique_violation() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT UNIQUE); INSERT INTO t VALUES ('a');")
            .unwrap();
        let dup = StoreError::from(conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err());
        assert!(dup.is_unique_violation(), "{dup}");
        assert!(!StoreError::from(sqlite_error()).is_unique_violation());
        assert!(!StoreError::Conflict("UNIQUE".into()).is_unique_violation());
    }
}
