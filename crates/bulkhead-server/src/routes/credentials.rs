//! Credentials: write-only over the API. Tenant admins manage their
//! tenant's (`/v1/credentials`); the operator can set a tenant's
//! (`/admin/v1/tenants/{id}/credentials`) and manages the platform's own
//! (`/admin/v1/platform/credentials`). No route ever returns a secret.

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_auth::TenantScope;
use bulkhead_core::TenantId;
use bulkhead_policy::{Action, Resource};
use bulkhead_vault::credential::{ConnectionName, CredentialMeta, CredentialWire};
use bulkhead_vault::store::CredScope;
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, OperatorCtx, Path, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(list))
        .tenant(routes!(put, delete))
        .operator(routes!(operator_list))
        .operator(routes!(operator_put, operator_delete))
        .operator(routes!(platform_list))
        .operator(routes!(platform_put, platform_delete))
}

/// A credential's metadata, never its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialBody {
    /// Connection name.
    pub connection: String,
    /// `api_key`, `bearer`, `basic` or `oauth2`.
    pub kind: String,
    /// Write version.
    pub version: u64,
    /// `active` or `needs_reauth`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, when last used for an outbound request.
    pub last_used_at: Option<String>,
    /// RFC 3339, OAuth2 access-token expiry.
    pub expires_at: Option<String>,
}

impl From<CredentialMeta> for CredentialBody {
    fn from(m: CredentialMeta) -> Self {
        Self {
            connection: m.connection,
            kind: m.kind.as_str().to_owned(),
            version: m.version,
            status: m.status.as_str().to_owned(),
            created_at: m.created_at.to_string(),
            updated_at: m.updated_at.to_string(),
            last_used_at: m.last_used_at.map(|t| t.to_string()),
            expires_at: m.expires_at.map(|t| t.to_string()),
        }
    }
}

/// A list of credentials.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialList {
    /// By connection name.
    pub credentials: Vec<CredentialBody>,
}

/// The `PUT` body: one object per `kind`, the fields of that kind only
/// (the documentation of [`CredentialWire`], which parses it).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PutCredential {
    /// An API key, sent as a bearer token.
    ApiKey {
        /// The key (at most 64 KiB).
        #[schema(min_length = 1, max_length = 65536)]
        secret: String,
    },
    /// A bearer token.
    Bearer {
        /// The token (at most 64 KiB).
        #[schema(min_length = 1, max_length = 65536)]
        secret: String,
    },
    /// HTTP Basic.
    Basic {
        /// User name (1-1024 bytes, no control characters).
        #[schema(min_length = 1, max_length = 1024)]
        username: String,
        /// Password.
        #[schema(min_length = 1)]
        password: String,
    },
    /// OAuth2 tokens, refreshed by the server.
    Oauth2 {
        /// Access token.
        #[schema(min_length = 1)]
        access_token: String,
        /// Refresh token.
        refresh_token: Option<String>,
        /// Expiry of the access token (RFC 3339).
        expires_at: Option<String>,
        /// http(s) URL of the token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Option<String>,
        /// Scope.
        scope: Option<String>,
    },
}

pub(crate) fn connection(raw: &str) -> Result<ConnectionName, ApiError> {
    ConnectionName::parse(raw).map_err(|e| ApiError::InvalidParameter(e.to_string()))
}

pub(crate) async fn put_in(
    state: &AppState,
    scope: CredScope<'_>,
    name: &str,
    body: CredentialWire,
) -> Result<(StatusCode, AxumJson<CredentialBody>), ApiError> {
    let name = connection(name)?;
    let secret = body.into_secret().map_err(|e| ApiError::Validation(e.0))?;
    // A token URL the egress guard would refuse could never be refreshed:
    // say so now. The refresh itself checks again (DNS and the operator's
    // rules can change after this).
    if let bulkhead_vault::CredentialSecret::Oauth2(o) = &secret {
        state
            .egress
            .vet(&o.token_url)
            .await
            .map_err(|e| ApiError::Validation(format!("token_url: {e}")))?;
    }
    let (meta, created) = state.vault.put(scope, &name, &secret).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AxumJson(meta.into())))
}

pub(crate) async fn list_in(
    state: &AppState,
    scope: CredScope<'_>,
) -> Result<AxumJson<CredentialList>, ApiError> {
    let list = state.vault.list(scope).await?;
    Ok(AxumJson(CredentialList {
        credentials: list.into_iter().map(CredentialBody::from).collect(),
    }))
}

pub(crate) async fn delete_in(
    state: &AppState,
    scope: CredScope<'_>,
    name: &str,
) -> Result<StatusCode, ApiError> {
    // A malformed name cannot exist: answer as for a missing one.
    let name = ConnectionName::parse(name).map_err(|_| ApiError::NotFound)?;
    state.vault.delete(scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores a credential for the caller's tenant (tenant admins). 201 when
/// new, 200 when replaced; the secret is never returned.
#[utoipa::path(put, path = "/v1/credentials/{connection}", operation_id = "put_credential", tag = "credentials", security(("bearer" = [])),
    params(("connection" = String, Path, description = "Connection name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = PutCredential,
    responses((status = 201, description = "Stored a new credential", body = CredentialBody),
        (status = 200, description = "Replaced the credential", body = CredentialBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn put(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(name): Path<String>,
    Json(body): Json<CredentialWire>,
) -> Result<(StatusCode, AxumJson<CredentialBody>), ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageCredentials,
        Resource::Connection(&name),
    )
    .await?;
    put_in(&state, CredScope::Tenant(&scope), &name, body).await
}

/// Lists the caller's tenant's credentials: names and metadata only.
#[utoipa::path(get, path = "/v1/credentials", operation_id = "list_credentials", tag = "credentials", security(("bearer" = [])),
    responses((status = 200, body = CredentialList),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn list(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<AxumJson<CredentialList>, ApiError> {
    authorize(&state, &scope, Action::ReadCredentials, Resource::Tenant).await?;
    list_in(&state, CredScope::Tenant(&scope)).await
}

/// Deletes one of the caller's tenant's credentials.
#[utoipa::path(delete, path = "/v1/credentials/{connection}", operation_id = "delete_credential", tag = "credentials", security(("bearer" = [])),
    params(("connection" = String, Path, description = "Connection name")),
    responses((status = 204, description = "Deleted"),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn delete(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageCredentials,
        Resource::Connection(&name),
    )
    .await?;
    delete_in(&state, CredScope::Tenant(&scope), &name).await
}

async fn tenant_scope(
    state: &AppState,
    op: &bulkhead_auth::OperatorScope,
    id: &str,
) -> Result<TenantScope, ApiError> {
    let id = TenantId::parse(id).map_err(|_| ApiError::NotFound)?;
    let tenant = state.control.get_tenant(op, &id).await?;
    Ok(op.act_for_tenant(&tenant))
}

/// The operator stores a credential for a tenant.
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/credentials/{connection}", operation_id = "operator_put_credential", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("connection" = String, Path, description = "Connection name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = PutCredential,
    responses((status = 201, description = "Stored a new credential", body = CredentialBody),
        (status = 200, description = "Replaced the credential", body = CredentialBody),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn operator_put(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<CredentialWire>,
) -> Result<(StatusCode, AxumJson<CredentialBody>), ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    put_in(&state, CredScope::Tenant(&scope), &name, body).await
}

/// The operator lists a tenant's credentials (metadata only).
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/credentials", operation_id = "operator_list_credentials", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = CredentialList),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn operator_list(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<CredentialList>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    list_in(&state, CredScope::Tenant(&scope)).await
}

/// The operator deletes a tenant's credential.
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}/credentials/{connection}", operation_id = "operator_delete_credential", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("connection" = String, Path, description = "Connection name")),
    responses((status = 204, description = "Deleted"),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn operator_delete(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    delete_in(&state, CredScope::Tenant(&scope), &name).await
}

/// Stores one of the platform's own credentials (e.g. a model provider key).
#[utoipa::path(put, path = "/admin/v1/platform/credentials/{connection}", operation_id = "put_platform_credential", tag = "operator", security(("operator" = [])),
    params(("connection" = String, Path, description = "Connection name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = PutCredential,
    responses((status = 201, description = "Stored a new credential", body = CredentialBody),
        (status = 200, description = "Replaced the credential", body = CredentialBody),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 409, response = problems::Conflict),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn platform_put(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(name): Path<String>,
    Json(body): Json<CredentialWire>,
) -> Result<(StatusCode, AxumJson<CredentialBody>), ApiError> {
    put_in(&state, CredScope::Platform(&op), &name, body).await
}

/// Lists the platform's credentials (metadata only).
#[utoipa::path(get, path = "/admin/v1/platform/credentials", operation_id = "list_platform_credentials", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = CredentialList),
        problems::OperatorAuth,
        problems::Timeout))]
pub async fn platform_list(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
) -> Result<AxumJson<CredentialList>, ApiError> {
    list_in(&state, CredScope::Platform(&op)).await
}

/// Deletes one of the platform's credentials.
#[utoipa::path(delete, path = "/admin/v1/platform/credentials/{connection}", operation_id = "delete_platform_credential", tag = "operator", security(("operator" = [])),
    params(("connection" = String, Path, description = "Connection name")),
    responses((status = 204, description = "Deleted"),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn platform_delete(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_in(&state, CredScope::Platform(&op), &name).await
}
