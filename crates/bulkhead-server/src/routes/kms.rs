//! Key rotation on the operator plane.

use axum::Json as AxumJson;
use axum::extract::State;
use bulkhead_core::TenantId;
use bulkhead_vault::store::CredScope;
use bulkhead_vault::vault::{DataKeyReport, RewrapReport};
use serde::Serialize;
use utoipa_axum::routes;

use crate::error::{ApiError, problems};
use crate::extract::{OperatorCtx, Path};
use crate::operations::{self, KekChange};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .operator(routes!(rotate))
        .operator(routes!(rewrap))
        .operator(routes!(rotate_tenant_key))
}

/// Result of a key-encryption-key rotation or re-wrap pass.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RewrapBody {
    /// Provider name.
    pub provider: String,
    /// The KEK version now current.
    pub key_version: u32,
    /// Data keys re-wrapped by this call.
    pub rewrapped: u64,
}

/// Result of a data-key rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataKeyBody {
    /// The tenant.
    pub tenant: String,
    /// The data-key version now current.
    pub dek_version: u32,
    /// Credentials re-encrypted by this call.
    pub reencrypted: u64,
    /// Old data-key versions deleted.
    pub retired: u64,
}

fn rewrap_body((provider, r): (String, RewrapReport)) -> AxumJson<RewrapBody> {
    AxumJson(RewrapBody {
        provider,
        key_version: r.key_version,
        rewrapped: r.rewrapped,
    })
}

/// Rotates the key-encryption key and re-wraps every data key under the
/// new version, online. Safe to call again after an interruption.
#[utoipa::path(post, path = "/admin/v1/kms/rotate", operation_id = "rotate_kek", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = RewrapBody),
        problems::OperatorAuth,
        (status = 409, description = "the key provider rotates keys itself (aws-kms)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn rotate(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
) -> Result<AxumJson<RewrapBody>, ApiError> {
    Ok(rewrap_body(
        operations::change_kek(&state, &op, KekChange::Rotate).await?,
    ))
}

/// Re-wraps data keys not yet under the current key-encryption key
/// (finishes an interrupted rotation) without rotating again.
#[utoipa::path(post, path = "/admin/v1/kms/rewrap", operation_id = "rewrap_data_keys", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = RewrapBody),
        problems::OperatorAuth,
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn rewrap(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
) -> Result<AxumJson<RewrapBody>, ApiError> {
    Ok(rewrap_body(
        operations::change_kek(&state, &op, KekChange::Rewrap).await?,
    ))
}

/// Rotates one tenant's data key: a new version, every credential
/// re-encrypted under it, the old version deleted. Resumes if interrupted.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/data-key/rotate", operation_id = "rotate_tenant_data_key", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = DataKeyBody),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn rotate_tenant_key(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<DataKeyBody>, ApiError> {
    let id = TenantId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let tenant = state.control.get_tenant(&op, &id).await?;
    let scope = op.act_for_tenant(&tenant);
    let DataKeyReport {
        dek_version,
        reencrypted,
        retired,
    } = state
        .vault
        .rotate_data_key(CredScope::Tenant(&scope))
        .await?;
    Ok(AxumJson(DataKeyBody {
        tenant: id.to_string(),
        dek_version,
        reencrypted,
        retired,
    }))
}
