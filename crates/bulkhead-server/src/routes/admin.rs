//! The operator plane (`/admin/v1`): tenants and API keys. Every handler
//! takes an [`OperatorCtx`]; every change is recorded by the store in the
//! operator's audit chain and mirrored into the tenant's.

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_auth::apikey;
use bulkhead_core::tenant::{TenantPatch, validate_tenant_name};
use bulkhead_core::{
    ApiKeyId, ApiKeyRecord, Isolation, Region, Role, Tenant, TenantId, TenantStatus, Timestamp,
};
use bulkhead_store::{NewApiKeyRecord, NewTenant};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::error::{ApiError, problems};
use crate::extract::{Json, OperatorCtx, Path, Query};
use crate::routes::RouteTable;
use crate::routes::tenant::{AuditPage, AuditQuery};
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .operator(routes!(list_tenants, create_tenant))
        .operator(routes!(get_tenant, update_tenant, delete_tenant))
        .operator(routes!(list_keys, create_key))
        .operator(routes!(revoke_key))
        .operator(routes!(operator_audit))
}

/// A tenant as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantBody {
    /// Public id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Residency region.
    pub region: String,
    /// `shared` or `dedicated`.
    pub isolation: String,
    /// `active` or `suspended`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The tenant's own quota overrides (over `[quotas.default]`).
    #[schema(value_type = Object)]
    pub quotas: bulkhead_core::config::QuotaValues,
}

impl From<Tenant> for TenantBody {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            region: t.region.to_string(),
            isolation: t.isolation.as_str().to_owned(),
            status: t.status.as_str().to_owned(),
            created_at: t.created_at.to_string(),
            updated_at: t.updated_at.to_string(),
            quotas: t.quotas,
        }
    }
}

/// `POST /admin/v1/tenants` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lowercase letters, digits and `-`, 1-63 characters.
    #[schema(value_type = String, example = "acme")]
    pub id: TenantId,
    /// Display name (defaults to the id).
    pub name: Option<String>,
    /// Residency region (defaults to `server.default_region`).
    #[schema(value_type = Option<String>, example = "eu")]
    pub region: Option<Region>,
    /// `shared` (the default, and the only one this build runs);
    /// `dedicated` is refused with 409 `isolation_unavailable`.
    #[schema(value_type = Option<String>)]
    pub isolation: Option<Isolation>,
}

/// A list of tenants.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantList {
    /// Tenants by id.
    pub tenants: Vec<TenantBody>,
}

/// Refuses a region this deployment does not serve (`[[regions]]`, or the
/// providers' regions): a tenant there could reach nothing.
fn served_region(state: &AppState, region: &bulkhead_core::Region) -> Result<(), ApiError> {
    bulkhead_core::config::regions::check(state.settings.regions.as_ref(), region)
        .map_err(|e| ApiError::Validation(format!("region: {e}")))
}

/// Refuses an isolation mode this build cannot provide. There are no
/// dedicated worker processes yet: accepting `dedicated` would store a
/// promise while the tenant runs in the shared process like any other.
fn supported_isolation(isolation: Option<Isolation>) -> Result<(), ApiError> {
    match isolation {
        Some(Isolation::Dedicated) => Err(ApiError::State {
            code: bulkhead_core::codes::ISOLATION_UNAVAILABLE,
            message: "isolation \"dedicated\" is not available in this build: there are no dedicated worker processes yet, every tenant runs in the shared process; use \"shared\"".into(),
        }),
        Some(Isolation::Shared) | None => Ok(()),
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    // A malformed id cannot name an existing tenant: answer as for a missing one.
    TenantId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// Creates a tenant and its empty partition.
#[utoipa::path(post, path = "/admin/v1/tenants", operation_id = "create_tenant", tag = "operator", security(("operator" = [])), request_body = CreateTenant,
    responses((status = 201, body = TenantBody, headers(("Location" = String, description = "The tenant's URL"))),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn create_tenant(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Json(body): Json<CreateTenant>,
) -> Result<Response, ApiError> {
    let name = body.name.unwrap_or_else(|| body.id.to_string());
    validate_tenant_name(&name).map_err(|m| ApiError::Validation(m.into()))?;
    supported_isolation(body.isolation)?;
    let region = body
        .region
        .unwrap_or_else(|| state.settings.default_region.clone());
    served_region(&state, &region)?;
    let tenant = state
        .control
        .create_tenant(
            &op,
            NewTenant {
                id: body.id,
                name,
                region,
                isolation: body.isolation.unwrap_or(Isolation::Shared),
            },
        )
        .await?;
    // The tenant's data key is made now; if the key provider fails, the
    // vault makes it on first use instead, so the tenant is still usable.
    if let Err(e) = state
        .vault
        .ensure_tenant_key(&op.act_for_tenant(&tenant))
        .await
    {
        tracing::error!(error = %e, tenant = %tenant.id, "could not create the tenant's data key");
    }
    let location = format!("/admin/v1/tenants/{}", tenant.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        AxumJson(TenantBody::from(tenant)),
    )
        .into_response())
}

/// Lists all tenants.
#[utoipa::path(get, path = "/admin/v1/tenants", operation_id = "list_tenants", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = TenantList),
        problems::OperatorAuth,
        problems::Timeout))]
pub async fn list_tenants(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
) -> Result<AxumJson<TenantList>, ApiError> {
    let tenants = state.control.list_tenants(&op).await?;
    Ok(AxumJson(TenantList {
        tenants: tenants.into_iter().map(TenantBody::from).collect(),
    }))
}

/// One tenant.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}", operation_id = "get_tenant", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantBody),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get_tenant(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<TenantBody>, ApiError> {
    let tenant = state.control.get_tenant(&op, &tenant_id(&id)?).await?;
    Ok(AxumJson(tenant.into()))
}

/// `PATCH /admin/v1/tenants/{id}` body; absent fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// New display name.
    pub name: Option<String>,
    /// New region.
    #[schema(value_type = Option<String>)]
    pub region: Option<Region>,
    /// `shared`; `dedicated` is refused with 409 `isolation_unavailable`
    /// (no dedicated workers in this build).
    #[schema(value_type = Option<String>)]
    pub isolation: Option<Isolation>,
    /// `active` or `suspended`.
    #[schema(value_type = Option<String>)]
    pub status: Option<TenantStatus>,
    /// Quota overrides merged into the tenant's current ones; a `null`
    /// value removes that override (back to the configured default).
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The tenant's quota overrides after merging `patch` into `current`.
fn merge_quotas(
    current: &bulkhead_core::config::QuotaValues,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<bulkhead_core::config::QuotaValues, ApiError> {
    let mut merged = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    let quotas: bulkhead_core::config::QuotaValues =
        serde_path_to_error::deserialize(serde_json::Value::Object(merged)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::Validation(format!("quotas: {inner}"))
            } else {
                ApiError::Validation(format!("quotas.{path}: {inner}"))
            }
        })?;
    if let Some((key, message)) = quotas.problems().into_iter().next() {
        return Err(ApiError::Validation(format!("quotas.{key}: {message}")));
    }
    Ok(quotas)
}

/// Changes a tenant's name, region, isolation or status.
#[utoipa::path(patch, path = "/admin/v1/tenants/{id}", operation_id = "update_tenant", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")), request_body = PatchTenant,
    responses((status = 200, body = TenantBody),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn update_tenant(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
    Json(body): Json<PatchTenant>,
) -> Result<AxumJson<TenantBody>, ApiError> {
    let id = tenant_id(&id)?;
    if let Some(name) = &body.name {
        validate_tenant_name(name).map_err(|m| ApiError::Validation(m.into()))?;
    }
    supported_isolation(body.isolation)?;
    if let Some(region) = &body.region {
        served_region(&state, region)?;
    }
    let quotas = match body.quotas {
        Some(q) => {
            let current = state.control.get_tenant(&op, &id).await?;
            Some(merge_quotas(&current.quotas, q)?)
        }
        None => None,
    };
    let patch = TenantPatch {
        name: body.name,
        region: body.region,
        isolation: body.isolation,
        status: body.status,
        quotas,
    };
    if patch.is_empty() {
        return Err(ApiError::Validation(
            "the patch changes nothing; set at least one of name, region, isolation, status, quotas"
                .into(),
        ));
    }
    let tenant = state.control.update_tenant(&op, &id, patch).await?;
    // Once suspended, the tenant's runs in this process end before the
    // answer: no tool call of theirs is made after it.
    if tenant.status == TenantStatus::Suspended {
        state
            .runtime
            .stop_tenant(&op, tenant.uid, bulkhead_agent::TenantStop::Suspended)
            .await;
    }
    Ok(AxumJson(tenant.into()))
}

/// Erases a tenant: its keys, its partition and all its data.
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}", operation_id = "delete_tenant", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted"),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id(&id)?;
    // Its runs end (and record it) while its partition still exists; a run
    // that starts meanwhile fails its tenant check at its next call.
    let uid = state.control.get_tenant(&op, &id).await?.uid;
    state
        .runtime
        .stop_tenant(&op, uid, bulkhead_agent::TenantStop::Deleted)
        .await;
    let tenant = state.control.delete_tenant(&op, &id).await?;
    state
        .runtime
        .stop_tenant(&op, tenant.uid, bulkhead_agent::TenantStop::Deleted)
        .await;
    // A deleted tenant is no longer named by the metrics, and its place
    // under `server.metrics_max_tenants` goes to the next tenant.
    state.metrics.forget_tenant(tenant.id.as_str());
    state.alerts.forget(tenant.uid);
    state
        .vault
        .forget(bulkhead_vault::store::KeyOwner::Tenant(tenant.uid));
    // Its decoded vectors leave memory now, not when evicted.
    state.knowledge.forget_tenant(tenant.uid);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/v1/tenants/{id}/api-keys` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Roles granted to the key (default `["member"]`).
    #[schema(value_type = Option<Vec<String>>, example = json!(["admin"]))]
    pub roles: Option<Vec<Role>>,
    /// Optional label, up to 200 characters.
    pub name: Option<String>,
    /// Optional expiry (RFC 3339, in the future).
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Timestamp>,
}

/// An API key's metadata (never the key).
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyBody {
    /// Key id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Label.
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if the key expires.
    pub expires_at: Option<String>,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
}

impl From<ApiKeyRecord> for KeyBody {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            id: k.id.to_string(),
            tenant: k.tenant.to_string(),
            name: k.name,
            roles: k.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created_at: k.created_at.to_string(),
            expires_at: k.expires_at.map(|t| t.to_string()),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
        }
    }
}

/// A new key: the only time the key itself is returned.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// Key id.
    pub id: String,
    /// The key (`bk_...`); store it now, it is not shown again.
    pub key: String,
    /// Owning tenant.
    pub tenant: String,
    /// Label.
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if the key expires.
    pub expires_at: Option<String>,
}

/// A tenant's keys.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Keys by id (creation order).
    pub api_keys: Vec<KeyBody>,
}

/// Creates an API key for a tenant; the key is in this response only.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/api-keys", operation_id = "create_api_key", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")), request_body = CreateKey,
    responses((status = 201, body = CreatedKey),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn create_key(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, AxumJson<CreatedKey>), ApiError> {
    let id = tenant_id(&id)?;
    let roles = body.roles.unwrap_or_else(|| vec![Role::Member]);
    if roles.is_empty() {
        return Err(ApiError::Validation(
            "roles must name at least one role".into(),
        ));
    }
    if let Some(name) = &body.name {
        validate_tenant_name(name)
            .map_err(|m| ApiError::Validation(m.replace("name", "key name")))?;
    }
    if body.expires_at.is_some_and(|exp| exp <= Timestamp::now()) {
        return Err(ApiError::Validation(
            "expires_at must be in the future".into(),
        ));
    }
    let new = apikey::generate().map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = state
        .control
        .create_api_key(
            &op,
            &id,
            NewApiKeyRecord {
                id: new.id,
                digest: new.digest,
                name: body.name,
                roles,
                expires_at: body.expires_at,
            },
        )
        .await?;
    let meta = KeyBody::from(record);
    Ok((
        StatusCode::CREATED,
        AxumJson(CreatedKey {
            id: meta.id,
            key: new.plaintext.expose().to_owned(),
            tenant: meta.tenant,
            name: meta.name,
            roles: meta.roles,
            created_at: meta.created_at,
            expires_at: meta.expires_at,
        }),
    ))
}

/// Lists a tenant's keys (metadata only).
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/api-keys", operation_id = "list_api_keys", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = KeyList),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn list_keys(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<KeyList>, ApiError> {
    let keys = state.control.list_api_keys(&op, &tenant_id(&id)?).await?;
    Ok(AxumJson(KeyList {
        api_keys: keys.into_iter().map(KeyBody::from).collect(),
    }))
}

/// Revokes a key at once; revoking again is harmless.
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}/api-keys/{key_id}", operation_id = "revoke_api_key", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn revoke_key(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id(&id)?;
    let key_id = ApiKeyId::parse(&key_id).map_err(|_| ApiError::NotFound)?;
    state.control.revoke_api_key(&op, &id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The operator's own audit chain, oldest first.
#[utoipa::path(get, path = "/admin/v1/audit", operation_id = "operator_audit", tag = "operator", security(("operator" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn operator_audit(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Query(q): Query<AuditQuery>,
) -> Result<AxumJson<AuditPage>, ApiError> {
    let page = q.page()?;
    let events = state.control.operator_audit(&op, page).await?;
    Ok(AxumJson(AuditPage::new(events, page)))
}
