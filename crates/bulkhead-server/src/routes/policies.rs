//! A tenant's own Cedar policies: `GET` and `PUT /v1/policies`. A new
//! text is validated against the schema before it replaces the old one;
//! an invalid text is refused with the validator's message and the old
//! policies stay.

use axum::Json as AxumJson;
use axum::extract::State;
use bulkhead_policy::{Action, PoliciesError, Resource};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new().tenant(routes!(get, put))
}

/// The tenant's policies.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Cedar policies, added to the platform's (`""`: none of its own).
    pub policies: String,
}

fn policy_error(e: PoliciesError) -> ApiError {
    match e {
        PoliciesError::Policy(p) => ApiError::InvalidPolicy(p.to_string()),
        PoliciesError::Store(s) => ApiError::Internal(s.to_string()),
    }
}

/// The caller's tenant's own policies.
#[utoipa::path(get, path = "/v1/policies", operation_id = "get_policies", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = PolicyBody),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn get(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<AxumJson<PolicyBody>, ApiError> {
    authorize(&state, &scope, Action::ReadPolicies, Resource::Tenant).await?;
    let policies = state.policies.text(&scope).await.map_err(policy_error)?;
    Ok(AxumJson(PolicyBody { policies }))
}

/// Replaces the caller's tenant's policies (tenant admins by default).
/// They apply from the next request.
#[utoipa::path(put, path = "/v1/policies", operation_id = "put_policies", tag = "policies", security(("bearer" = [])),
    request_body = PolicyBody,
    responses((status = 200, body = PolicyBody),
        problems::TenantAuth,
        problems::JsonBody,
        problems::Timeout))]
pub async fn put(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Json(body): Json<PolicyBody>,
) -> Result<AxumJson<PolicyBody>, ApiError> {
    authorize(&state, &scope, Action::ManagePolicies, Resource::Tenant).await?;
    state
        .policies
        .replace(&scope, &body.policies)
        .await
        .map_err(policy_error)?;
    Ok(AxumJson(body))
}
