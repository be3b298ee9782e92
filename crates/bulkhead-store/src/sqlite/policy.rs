//! A tenant's own Cedar policies, as text in its partition's settings,
//! written with their audit event.

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_policy::{PolicyStore, PolicyStoreError};
use rusqlite::params;

use super::SqliteStore;
use super::partition;
use crate::StoreError;

/// Settings key of the tenant's policies.
const POLICIES: &str = "policies";

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn tenant_policies(
        &self,
        scope: &TenantScope,
    ) -> Result<Option<String>, PolicyStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut stmt = conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")?;
                let mut rows = stmt.query(params![POLICIES])?;
                match rows.next()? {
                    Some(row) => Ok(Some(row.get::<_, String>(0)?)),
                    None => Ok(None),
                }
            })
        })
        .await
        .map_err(|e: StoreError| PolicyStoreError(Box::new(e)))
    }

    async fn set_tenant_policies(
        &self,
        scope: &TenantScope,
        text: Option<String>,
        event: NewAuditEvent,
    ) -> Result<(), PolicyStoreError> {
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, principal| {
            match &text {
                Some(t) => partition::exec(
                    tx,
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = ?2",
                    params![POLICIES, t],
                )?,
                None => {
                    partition::exec(tx, "DELETE FROM settings WHERE key = ?1", params![POLICIES])?
                }
            };
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(())
        })
        .await
        .map_err(|e| PolicyStoreError(Box::new(e)))
    }
}
