//! The tenant plane (`/v1`): every handler takes a [`TenantCtx`], so the
//! tenant always comes from the credential, never from the request.

use axum::Json;
use axum::extract::State;
use bulkhead_policy::{Action, Resource};
use bulkhead_store::Page;
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Query, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new().tenant(routes!(me)).tenant(routes!(audit))
}

/// Who the caller is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// Tenant id.
    pub tenant: String,
    /// Principal id (`key:<uuid>` for API keys, the JWT `sub` otherwise).
    pub principal: String,
    /// How the principal authenticated: `api_key` or `jwt`.
    pub principal_kind: String,
    /// Roles in the tenant.
    pub roles: Vec<String>,
    /// The tenant's residency region.
    pub region: String,
}

/// The authenticated tenant and principal.
#[utoipa::path(get, path = "/v1/me", operation_id = "get_me", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = Me),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn me(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<Json<Me>, ApiError> {
    authorize(&state, &scope, Action::ReadProfile, Resource::Tenant).await?;
    let p = scope.principal();
    Ok(Json(Me {
        tenant: scope.tenant().to_string(),
        principal: p.id().to_owned(),
        principal_kind: serde_json::to_value(p.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        roles: p.roles().iter().map(|r| r.as_str().to_owned()).collect(),
        region: scope.region().to_string(),
    }))
}

/// Paging of an audit chain.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return events with a sequence number greater than this (default 0).
    pub after: Option<u64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Largest page: keeps one response bounded in memory and size.
const MAX_AUDIT_PAGE: u32 = 1000;

impl AuditQuery {
    /// The validated page.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_AUDIT_PAGE {
            return Err(ApiError::InvalidParameter(format!(
                "limit must be between 1 and {MAX_AUDIT_PAGE}"
            )));
        }
        Ok(Page {
            after: self.after.unwrap_or(0),
            limit,
        })
    }
}

/// A page of audit events.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Events in chain order; each is exactly what was hashed.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<bulkhead_core::audit::AuditEvent>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u64>,
}

impl AuditPage {
    /// Builds the page answer.
    pub fn new(events: Vec<bulkhead_core::audit::AuditEvent>, page: Page) -> Self {
        let next_after = (events.len() as u32 == page.limit)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Self { events, next_after }
    }
}

/// This tenant's audit chain, oldest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "tenant_audit", tag = "tenant", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn audit(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    authorize(&state, &scope, Action::ReadAudit, Resource::Tenant).await?;
    let page = q.page()?;
    let events = state.tenants.audit(&scope, page).await?;
    Ok(Json(AuditPage::new(events, page)))
}
