//! The vault's storage in the embedded layout.
//!
//! Wrapped data keys live in `control.db` (`data_keys`), apart from the
//! data they protect: deleting a tenant deletes its keys there first, so
//! its credentials (in its partition) are unreadable even if the partition
//! files survive somewhere. Tenant credentials live in the tenant's own
//! `tenant.db`; the platform's in `control.db`. Each write and its audit
//! event share one transaction.

use async_trait::async_trait;
use bulkhead_auth::OperatorScope;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{TenantId, TenantUid, Timestamp};
use bulkhead_vault::credential::{ConnectionName, CredentialKind, CredentialStatus};
use bulkhead_vault::kms::WrappedKey;
use bulkhead_vault::store::{
    CredScope, KeyOwner, StoredCredential, StoredDataKey, VaultStore, VaultStoreError, VsResult,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::SqliteStore;
use super::commit::Writer;
use super::partition;
use crate::StoreError;

/// A scope reduced to owned values, so it can move into a blocking task.
#[derive(Clone)]
enum Owner {
    Tenant {
        tenant: TenantId,
        uid: TenantUid,
        principal: String,
    },
    Platform {
        principal: String,
    },
}

impl Owner {
    fn of(scope: CredScope<'_>) -> Self {
        match scope {
            CredScope::Tenant(s) => Owner::Tenant {
                tenant: s.tenant().clone(),
                uid: s.partition(),
                principal: s.principal().id().to_owned(),
            },
            CredScope::Platform(op) => Owner::Platform {
                principal: op.principal_id().to_owned(),
            },
        }
    }

    fn key_text(&self) -> String {
        match self {
            Owner::Tenant { uid, .. } => uid.to_string(),
            Owner::Platform { .. } => "platform".to_owned(),
        }
    }
}

fn vs(e: StoreError) -> VaultStoreError {
    match e {
        StoreError::NotFound => VaultStoreError::NotFound,
        StoreError::Conflict(_) => VaultStoreError::Conflict,
        // The vault's message was the store's own, without its prefix.
        StoreError::Internal(m) | StoreError::Quota(m) => VaultStoreError::Internal(m.into()),
        StoreError::Backend(e) => VaultStoreError::Internal(e),
    }
}

fn sq(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn owner_from_text(s: &str) -> rusqlite::Result<KeyOwner> {
    if s == "platform" {
        return Ok(KeyOwner::Platform);
    }
    TenantUid::parse(s).map(KeyOwner::Tenant).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    })
}

fn conversion(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("corrupt {what}").into(),
    )
}

fn time(s: String) -> rusqlite::Result<Timestamp> {
    Timestamp::parse(&s).map_err(|_| conversion("timestamp"))
}

fn data_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDataKey> {
    Ok(StoredDataKey {
        owner: owner_from_text(&r.get::<_, String>("owner")?)?,
        version: r.get("version")?,
        wrapped: WrappedKey {
            provider: r.get("provider")?,
            key_id: r.get("key_id")?,
            key_version: r.get("key_version")?,
            ciphertext: r.get("wrapped")?,
        },
        created_at: time(r.get("created_at")?)?,
    })
}

fn credential_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCredential> {
    let kind: String = r.get("kind")?;
    let status: String = r.get("status")?;
    Ok(StoredCredential {
        connection: ConnectionName::parse(&r.get::<_, String>("connection")?)
            .map_err(|_| conversion("connection"))?,
        kind: CredentialKind::parse(&kind).ok_or_else(|| conversion("kind"))?,
        version: r.get::<_, i64>("version")? as u64,
        dek_version: r.get("dek_version")?,
        ciphertext: r.get("ciphertext")?,
        status: if status == "needs_reauth" {
            CredentialStatus::NeedsReauth
        } else {
            CredentialStatus::Active
        },
        expires_at: r
            .get::<_, Option<String>>("expires_at")?
            .map(time)
            .transpose()?,
        created_at: time(r.get("created_at")?)?,
        updated_at: time(r.get("updated_at")?)?,
        last_used_at: r
            .get::<_, Option<String>>("last_used_at")?
            .map(time)
            .transpose()?,
    })
}

/// The credentials table of the database a connection belongs to: tenant
/// databases call it `credentials`, the control database
/// `platform_credentials`. The SQL is chosen between two literals, never
/// assembled from input.
#[derive(Clone, Copy)]
enum Table {
    Tenant,
    Platform,
}

impl Table {
    fn select_one(self) -> &'static str {
        match self {
            Table::Tenant => "SELECT * FROM credentials WHERE connection = ?1",
            Table::Platform => "SELECT * FROM platform_credentials WHERE connection = ?1",
        }
    }
    fn select_all(self) -> &'static str {
        match self {
            Table::Tenant => "SELECT * FROM credentials ORDER BY connection",
            Table::Platform => "SELECT * FROM platform_credentials ORDER BY connection",
        }
    }
    fn upsert(self) -> &'static str {
        match self {
            Table::Tenant => {
                "INSERT INTO credentials (connection, kind, version, dek_version, ciphertext, status, expires_at, created_at, updated_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (connection) DO UPDATE SET kind = ?2, version = ?3, dek_version = ?4, ciphertext = ?5,
                   status = ?6, expires_at = ?7, updated_at = ?9, last_used_at = ?10"
            }
            Table::Platform => {
                "INSERT INTO platform_credentials (connection, kind, version, dek_version, ciphertext, status, expires_at, created_at, updated_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (connection) DO UPDATE SET kind = ?2, version = ?3, dek_version = ?4, ciphertext = ?5,
                   status = ?6, expires_at = ?7, updated_at = ?9, last_used_at = ?10"
            }
        }
    }
    fn version_of(self) -> &'static str {
        match self {
            Table::Tenant => "SELECT version FROM credentials WHERE connection = ?1",
            Table::Platform => "SELECT version FROM platform_credentials WHERE connection = ?1",
        }
    }
    fn delete(self) -> &'static str {
        match self {
            Table::Tenant => "DELETE FROM credentials WHERE connection = ?1",
            Table::Platform => "DELETE FROM platform_credentials WHERE connection = ?1",
        }
    }
    fn touch(self) -> &'static str {
        match self {
            Table::Tenant => "UPDATE credentials SET last_used_at = ?2 WHERE connection = ?1",
            Table::Platform => {
                "UPDATE platform_credentials SET last_used_at = ?2 WHERE connection = ?1"
            }
        }
    }
}

fn put(
    tx: &Connection,
    table: Table,
    c: &StoredCredential,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    let current: Option<i64> = tx
        .query_row(table.version_of(), params![c.connection.as_str()], |r| {
            r.get(0)
        })
        .optional()?;
    if expected.is_some_and(|v| current != Some(v as i64)) {
        return Ok(false);
    }
    tx.execute(
        table.upsert(),
        params![
            c.connection.as_str(),
            c.kind.as_str(),
            c.version as i64,
            c.dek_version,
            c.ciphertext,
            c.status.as_str(),
            c.expires_at.map(|t| t.to_string()),
            c.created_at.to_string(),
            c.updated_at.to_string(),
            c.last_used_at.map(|t| t.to_string()),
        ],
    )?;
    Ok(true)
}

impl SqliteStore {
    /// Runs `f` in a transaction on the owner's credential database with
    /// its audit chain: for a tenant through its partition's write queue
    /// (group-committed with the tenant's other writes), for the platform
    /// on the control database.
    fn owner_tx<T: Send + 'static>(
        &self,
        owner: &Owner,
        f: impl FnOnce(&Connection, Table, Option<TenantId>, &str) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        match owner {
            Owner::Tenant {
                tenant,
                uid,
                principal,
            } => {
                let id = tenant.clone();
                let writer = Writer::new(tenant.clone(), *uid, principal.clone());
                self.partition_write_blocking(writer, move |tx, principal| {
                    f(tx, Table::Tenant, Some(id), principal)
                })
            }
            Owner::Platform { principal } => {
                let mut conn = self.control()?;
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&tx, Table::Platform, None, principal)?;
                tx.commit()?;
                Ok(out)
            }
        }
    }

    fn owner_read<T>(
        &self,
        owner: &Owner,
        f: impl FnOnce(&Connection, Table) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match owner {
            Owner::Tenant { tenant, uid, .. } => self
                .partition(tenant, *uid)?
                .with_conn(|c| f(c, Table::Tenant)),
            Owner::Platform { .. } => f(&*self.control()?, Table::Platform),
        }
    }

    /// A change to the owner's data keys (in the control database) and its
    /// audit event: in the same transaction for the platform, right after
    /// it in the tenant's own chain for a tenant.
    fn data_key_write(
        &self,
        owner: &Owner,
        event: NewAuditEvent,
        f: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        {
            // Checked under the control lock, which a tenant deletion holds
            // for its whole transaction: a key can never be added for a
            // tenant whose keys were just shredded.
            let mut conn = self.control()?;
            self.owner_alive(owner)?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            f(&tx)?;
            if let Owner::Platform { principal } = owner {
                partition::append_chain(&tx, None, principal, event.clone())?;
            }
            tx.commit()?;
        }
        if let Owner::Tenant { .. } = owner {
            self.owner_tx(owner, move |tx, _, tenant, principal| {
                partition::append_chain(tx, tenant, principal, event)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Whether the owner still exists (a deleted tenant's scope must not
    /// recreate keys after they were shredded).
    fn owner_alive(&self, owner: &Owner) -> Result<(), StoreError> {
        match owner {
            Owner::Tenant { tenant, uid, .. } => {
                let index = self.read_index()?;
                match index.tenants.get(tenant) {
                    Some(t) if t.uid == *uid => Ok(()),
                    _ => Err(StoreError::NotFound),
                }
            }
            Owner::Platform { .. } => Ok(()),
        }
    }
}

#[async_trait]
impl VaultStore for SqliteStore {
    async fn data_keys(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredDataKey>> {
        let owner = Owner::of(scope);
        self.blocking(move |s| {
            s.owner_alive(&owner)?;
            let conn = s.control()?;
            let mut stmt =
                conn.prepare_cached("SELECT * FROM data_keys WHERE owner = ?1 ORDER BY version")?;
            let rows = stmt.query_map(params![owner.key_text()], data_key_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
        .await
        .map_err(vs)
    }

    async fn insert_data_key(
        &self,
        scope: CredScope<'_>,
        key: &StoredDataKey,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let owner = Owner::of(scope);
        let key = key.clone();
        self.blocking(move |s| {
            s.data_key_write(&owner, event, |tx| {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM data_keys WHERE owner = ?1 AND version = ?2",
                        params![owner.key_text(), key.version],
                        |r| r.get(0),
                    )
                    .optional()?;
                if exists.is_some() {
                    return Err(StoreError::Conflict("data key version exists".into()));
                }
                tx.execute(
                    "INSERT INTO data_keys (owner, version, provider, key_id, key_version, wrapped, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        owner.key_text(),
                        key.version,
                        key.wrapped.provider,
                        key.wrapped.key_id,
                        key.wrapped.key_version,
                        key.wrapped.ciphertext,
                        key.created_at.to_string()
                    ],
                )?;
                Ok(())
            })
        })
        .await
        .map_err(vs)
    }

    async fn delete_data_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let owner = Owner::of(scope);
        self.blocking(move |s| {
            s.data_key_write(&owner, event, |tx| {
                tx.execute(
                    "DELETE FROM data_keys WHERE owner = ?1 AND version = ?2",
                    params![owner.key_text(), version],
                )?;
                Ok(())
            })
        })
        .await
        .map_err(vs)
    }

    async fn stale_data_keys(
        &self,
        _op: &OperatorScope,
        provider: &str,
        key_id: &str,
        key_version: u32,
        limit: u32,
    ) -> VsResult<Vec<StoredDataKey>> {
        let (provider, key_id) = (provider.to_owned(), key_id.to_owned());
        self.blocking(move |s| {
            let conn = s.control()?;
            let mut stmt = conn.prepare_cached(
                "SELECT * FROM data_keys WHERE NOT (provider = ?1 AND key_id = ?2 AND key_version = ?3)
                 ORDER BY owner, version LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![provider, key_id, key_version, limit], data_key_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
        .await
        .map_err(vs)
    }

    async fn rewrap_data_keys(
        &self,
        _op: &OperatorScope,
        keys: &[(StoredDataKey, WrappedKey)],
    ) -> VsResult<u64> {
        let keys = keys.to_vec();
        self.blocking(move |s| {
            let mut conn = s.control()?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut done = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE data_keys SET provider = ?1, key_id = ?2, key_version = ?3, wrapped = ?4
                     WHERE owner = ?5 AND version = ?6 AND wrapped = ?7",
                )?;
                for (key, new) in &keys {
                    done += stmt.execute(params![
                        new.provider,
                        new.key_id,
                        new.key_version,
                        new.ciphertext,
                        key.owner.as_text(),
                        key.version,
                        key.wrapped.ciphertext
                    ])? as u64;
                }
            }
            tx.commit()?;
            Ok(done)
        })
        .await
        .map_err(vs)
    }

    async fn credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
    ) -> VsResult<Option<StoredCredential>> {
        let owner = Owner::of(scope);
        let connection = connection.clone();
        self.blocking(move |s| {
            s.owner_read(&owner, |conn, table| {
                conn.query_row(
                    table.select_one(),
                    params![connection.as_str()],
                    credential_row,
                )
                .optional()
                .map_err(sq)
            })
        })
        .await
        .map_err(vs)
    }

    async fn credentials(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredCredential>> {
        let owner = Owner::of(scope);
        self.blocking(move |s| {
            s.owner_read(&owner, |conn, table| {
                let mut stmt = conn.prepare_cached(table.select_all())?;
                let rows = stmt.query_map([], credential_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
            })
        })
        .await
        .map_err(vs)
    }

    async fn put_credential(
        &self,
        scope: CredScope<'_>,
        credential: &StoredCredential,
        expected_version: Option<u64>,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        let owner = Owner::of(scope);
        let credential = credential.clone();
        self.blocking(move |s| {
            s.owner_tx(&owner, move |tx, table, tenant, principal| {
                if !put(tx, table, &credential, expected_version)? {
                    return Ok(false);
                }
                partition::append_chain(tx, tenant, principal, event)?;
                Ok(true)
            })
        })
        .await
        .map_err(vs)
    }

    async fn delete_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        let owner = Owner::of(scope);
        let connection = connection.clone();
        self.blocking(move |s| {
            s.owner_tx(&owner, move |tx, table, tenant, principal| {
                if tx.execute(table.delete(), params![connection.as_str()])? == 0 {
                    return Ok(false);
                }
                partition::append_chain(tx, tenant, principal, event)?;
                Ok(true)
            })
        })
        .await
        .map_err(vs)
    }

    async fn touch_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        at: Timestamp,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        let connection = connection.clone();
        if let CredScope::Tenant(t) = scope {
            // The hot path (every tool call): group-committed with the
            // tenant's other writes.
            let tenant = t.tenant().clone();
            return self
                .tenant_write(t, move |tx, principal| {
                    partition::exec(
                        tx,
                        Table::Tenant.touch(),
                        params![connection.as_str(), at.to_string()],
                    )?;
                    partition::append_chain(tx, Some(tenant), principal, event)?;
                    Ok(())
                })
                .await
                .map_err(vs);
        }
        let owner = Owner::of(scope);
        self.blocking(move |s| {
            s.owner_tx(&owner, move |tx, table, tenant, principal| {
                tx.execute(table.touch(), params![connection.as_str(), at.to_string()])?;
                partition::append_chain(tx, tenant, principal, event)?;
                Ok(())
            })
        })
        .await
        .map_err(vs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reaches_sqlite, sqlite_error};

    /// The vault's message is the backend's own, without the store's
    /// prefix, as it was when it was a string.
    #[test]
    fn the_vault_sees_the_sqlite_error_itself() {
        let sqlite = sqlite_error();
        let text = sqlite.to_string();
        let e = vs(sq(sqlite));
        assert!(matches!(e, VaultStoreError::Internal(_)));
        assert_eq!(e.to_string(), text);
        assert!(reaches_sqlite(&e));
        assert_eq!(
            vs(StoreError::Internal("corrupt row".into())).to_string(),
            "corrupt row"
        );
    }
}
