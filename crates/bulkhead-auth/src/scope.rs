//! The capability types: tenant scope, operator scope and failure
//! attribution. None of them can be built outside this crate.

use bulkhead_core::config::QuotaValues;
use bulkhead_core::{
    Principal, PrincipalKind, Region, RequestId, Role, Tenant, TenantId, TenantUid,
};

/// Proof that the current request acts for exactly one tenant, as one
/// principal. Store APIs for tenant data take it as their first argument.
///
/// It is deliberately not `Deserialize` and has no public constructor.
#[derive(Debug, Clone)]
pub struct TenantScope {
    tenant: TenantId,
    uid: TenantUid,
    // The display name as of authentication: templates show it
    // (`{{ tenant.name }}`); shared, since scopes are cloned per task.
    name: std::sync::Arc<str>,
    region: Region,
    principal: Principal,
    request_id: RequestId,
    quotas: std::sync::Arc<QuotaValues>,
}

impl TenantScope {
    pub(crate) fn mint(tenant: &Tenant, principal: Principal, request_id: RequestId) -> Self {
        Self {
            tenant: tenant.id.clone(),
            uid: tenant.uid,
            name: std::sync::Arc::from(tenant.name.as_str()),
            region: tenant.region.clone(),
            principal,
            request_id,
            quotas: std::sync::Arc::new(tenant.quotas.clone()),
        }
    }

    /// The tenant's own quota overrides, as of authentication.
    pub fn quota_overrides(&self) -> &QuotaValues {
        &self.quotas
    }

    /// The tenant's public id.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant's display name at authentication time (data, never an
    /// id: it selects nothing).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant incarnation whose partition this scope opens.
    pub fn partition(&self) -> TenantUid {
        self.uid
    }

    /// The tenant's residency region at authentication time.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Who is acting.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The request being served.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
}

/// Proof that the current request was made with the operator token.
#[derive(Debug, Clone)]
pub struct OperatorScope {
    request_id: RequestId,
}

/// Principal id recorded for operator actions.
pub const OPERATOR_PRINCIPAL: &str = "operator";

impl OperatorScope {
    pub(crate) fn mint(request_id: RequestId) -> Self {
        Self { request_id }
    }

    /// The request being served.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The operator's principal id.
    pub fn principal_id(&self) -> &'static str {
        OPERATOR_PRINCIPAL
    }

    /// An operator action on one tenant's partition (recording an event in
    /// its audit chain, setting its credentials). The caller records the
    /// action in both the operator's and the tenant's chain; the scope's
    /// principal is `operator`, so every event it produces says so.
    pub fn act_for_tenant(&self, tenant: &Tenant) -> TenantScope {
        TenantScope::mint(
            tenant,
            Principal::new(
                OPERATOR_PRINCIPAL,
                PrincipalKind::Operator,
                vec![Role::Admin],
            ),
            self.request_id.clone(),
        )
    }
}

/// An authentication failure that can be attributed to a tenant (a revoked
/// key, a valid token for a suspended tenant, a tenant header mismatch). It
/// lets the store append one event to that tenant's chain and nothing else.
#[derive(Debug, Clone)]
pub struct FailureAttribution {
    tenant: TenantId,
    uid: TenantUid,
    principal: String,
    reason: &'static str,
    request_id: RequestId,
}

impl FailureAttribution {
    pub(crate) fn new(
        tenant: &Tenant,
        principal: String,
        reason: &'static str,
        request_id: RequestId,
    ) -> Self {
        Self {
            tenant: tenant.id.clone(),
            uid: tenant.uid,
            principal,
            reason,
            request_id,
        }
    }

    /// The tenant the failure belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant incarnation whose chain records it.
    pub fn partition(&self) -> TenantUid {
        self.uid
    }

    /// The principal the credential names (`key:<id>` or the JWT subject).
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// A stable reason code for the audit event (never shown to the caller).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The request that failed.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
}
