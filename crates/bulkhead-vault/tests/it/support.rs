//! Scopes for tests, minted the way operator code does
//! ([`OperatorScope::act_for_tenant`]): there is no other way.

use bulkhead_auth::{OperatorAuthenticator, OperatorScope, TenantScope};
use bulkhead_core::tenant::Tenant;
use bulkhead_core::{
    Isolation, Region, RequestId, SecretString, TenantId, TenantStatus, TenantUid, Timestamp,
};

const TOKEN: &str = "vault-tests-operator-token";

pub fn op() -> OperatorScope {
    OperatorAuthenticator::new(&SecretString::new(TOKEN.into()))
        .verify(Some(TOKEN), &RequestId::generate())
        .unwrap()
}

/// A scope for a fresh incarnation of tenant `id` (region `eu`).
pub fn scope(id: &str) -> TenantScope {
    let now = Timestamp::now();
    op().act_for_tenant(&Tenant {
        id: TenantId::parse(id).unwrap(),
        uid: TenantUid::generate(),
        name: format!("{id} Inc"),
        region: Region::parse("eu").unwrap(),
        isolation: Isolation::Shared,
        status: TenantStatus::Active,
        created_at: now,
        updated_at: now,
        quotas: Default::default(),
    })
}
