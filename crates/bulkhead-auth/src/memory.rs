//! A [`Directory`] held in memory: tenants and API keys put there by the
//! caller. For tests and embedding (the server's directory is its control
//! store). It mints nothing: a [`crate::TenantScope`] still comes only from
//! [`crate::Authenticator::authenticate`] over it, or from an operator.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bulkhead_core::{ApiKeyRecord, Tenant, TenantId, TenantStatus, Timestamp};

use crate::apikey::ApiKeyDigest;
use crate::authenticator::{Directory, DirectoryError};

/// Tenants and API keys in memory (see the module doc).
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    tenants: Mutex<HashMap<TenantId, Tenant>>,
    keys: Mutex<HashMap<[u8; 32], ApiKeyRecord>>,
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> DirectoryError {
    DirectoryError(e.to_string())
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tenant.
    pub fn put_tenant(&self, tenant: Tenant) -> Result<(), DirectoryError> {
        self.tenants
            .lock()
            .map_err(poisoned)?
            .insert(tenant.id.clone(), tenant);
        Ok(())
    }

    /// Sets a tenant's status; false when there is no such tenant.
    pub fn set_status(&self, id: &TenantId, status: TenantStatus) -> Result<bool, DirectoryError> {
        let mut tenants = self.tenants.lock().map_err(poisoned)?;
        Ok(match tenants.get_mut(id) {
            Some(t) => {
                t.status = status;
                t.updated_at = Timestamp::now();
                true
            }
            None => false,
        })
    }

    /// Removes a tenant (as a deletion does); its keys stop working.
    pub fn remove_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError> {
        Ok(self.tenants.lock().map_err(poisoned)?.remove(id))
    }

    /// Adds an API key, found by its digest.
    pub fn put_api_key(
        &self,
        digest: &ApiKeyDigest,
        record: ApiKeyRecord,
    ) -> Result<(), DirectoryError> {
        self.keys
            .lock()
            .map_err(poisoned)?
            .insert(*digest.as_bytes(), record);
        Ok(())
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError> {
        Ok(self.tenants.lock().map_err(poisoned)?.get(id).cloned())
    }

    async fn api_key(
        &self,
        digest: &ApiKeyDigest,
    ) -> Result<Option<(ApiKeyRecord, Tenant)>, DirectoryError> {
        let Some(record) = self
            .keys
            .lock()
            .map_err(poisoned)?
            .get(digest.as_bytes())
            .cloned()
        else {
            return Ok(None);
        };
        let tenant = self.tenant(&record.tenant).await?;
        Ok(tenant.map(|t| (record, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authenticator, JwtVerifier};
    use bulkhead_core::config::QuotaValues;
    use bulkhead_core::{Isolation, Region, RequestId, Role, TenantUid};
    use std::sync::Arc;

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: TenantId::parse(id).unwrap(),
            uid: TenantUid::generate(),
            name: id.to_owned(),
            region: Region::parse("eu").unwrap(),
            isolation: Isolation::Shared,
            status: TenantStatus::Active,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            quotas: QuotaValues::default(),
        }
    }

    #[tokio::test]
    async fn a_key_authenticates_for_its_tenant_until_the_tenant_goes() {
        let dir = Arc::new(MemoryDirectory::new());
        let acme = tenant("acme");
        dir.put_tenant(acme.clone()).unwrap();
        let key = crate::apikey::generate().unwrap();
        dir.put_api_key(
            &key.digest,
            ApiKeyRecord {
                id: key.id,
                tenant: acme.id.clone(),
                name: None,
                roles: vec![Role::Member],
                created_at: Timestamp::now(),
                expires_at: None,
                revoked_at: None,
            },
        )
        .unwrap();
        let auth = Authenticator::new(JwtVerifier::default(), dir.clone());
        let rid = RequestId::generate();
        let scope = auth
            .authenticate(Some(key.plaintext.expose()), None, &rid)
            .await
            .unwrap();
        assert_eq!((scope.tenant(), scope.partition()), (&acme.id, acme.uid));
        dir.set_status(&acme.id, TenantStatus::Suspended).unwrap();
        assert!(
            auth.authenticate(Some(key.plaintext.expose()), None, &rid)
                .await
                .is_err()
        );
        dir.remove_tenant(&acme.id).unwrap();
        assert!(dir.tenant(&acme.id).await.unwrap().is_none());
    }
}
