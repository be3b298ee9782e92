//! Approval requests: `GET /v1/approvals`, `GET /v1/approvals/{id}`,
//! `POST /v1/approvals/{id}/approve` and `/deny`.
//!
//! A request is found only in the caller's tenant partition: another
//! tenant's id answers 404 before any policy is asked. Deciding needs the
//! `approve` action on the run's agent, with `context.own_request` telling
//! whether the caller started the run (refused by default).

use axum::Json as AxumJson;
use axum::extract::State;
use bulkhead_agent::{Approval, ApprovalStatus, Verdict};
use bulkhead_core::ApprovalId;
use bulkhead_policy::{Action, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, Path, Query, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(list))
        .tenant(routes!(get))
        .tenant(routes!(approve))
        .tenant(routes!(deny))
}

/// One approval request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApprovalBody {
    /// Id.
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    /// The paused run.
    pub run_id: String,
    /// The run's agent.
    pub agent: String,
    /// The tool the model asked for.
    pub tool: String,
    /// The connection whose credential the call would use.
    pub connection: Option<String>,
    /// The exact arguments.
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// SHA-256 (hex) of the arguments as compact JSON with sorted keys;
    /// a decision may name it to bind itself to exactly these arguments.
    pub arguments_hash: String,
    /// What the call does, for a person.
    pub summary: String,
    /// The principal who started the run.
    pub requested_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: after it, the request is `expired` and the run ends.
    pub expires_at: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// RFC 3339.
    pub decided_at: Option<String>,
    /// The decider's comment.
    pub comment: Option<String>,
}

impl From<Approval> for ApprovalBody {
    fn from(a: Approval) -> Self {
        Self {
            id: a.id.to_string(),
            status: a.status.as_str().to_owned(),
            run_id: a.run_id.to_string(),
            agent: a.agent,
            tool: a.tool,
            connection: a.connection,
            arguments: a.arguments,
            arguments_hash: a.arguments_hash,
            summary: a.summary,
            requested_by: a.requested_by,
            created_at: a.created_at.to_string(),
            expires_at: a.expires_at.to_string(),
            decided_by: a.decided_by,
            decided_at: a.decided_at.map(|t| t.to_string()),
            comment: a.comment,
        }
    }
}

/// The tenant's approval requests.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    /// Newest first (at most 500).
    pub approvals: Vec<ApprovalBody>,
}

/// `GET /v1/approvals` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only requests in this state (`pending`, `approved`, `denied`, `expired`).
    #[param(pattern = "^(pending|approved|denied|expired)?$")]
    pub status: Option<String>,
}

/// The body of a decision.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (at most 2,000 characters); kept with the decision and in the
    /// audit chain.
    pub comment: Option<String>,
    /// The `arguments_hash` the decider saw: when given and different,
    /// the decision is refused (409 `approval_mismatch`).
    pub arguments_hash: Option<String>,
}

fn approval_id(raw: &str) -> Result<ApprovalId, ApiError> {
    // A malformed id cannot exist: answer as for a missing one.
    ApprovalId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// Lists the caller's tenant's approval requests (every role by default).
/// Requests whose time is up are settled as `expired` first.
#[utoipa::path(get, path = "/v1/approvals", operation_id = "list_approvals", tag = "approvals", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = ApprovalList),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn list(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(params): Query<ListParams>,
) -> Result<AxumJson<ApprovalList>, ApiError> {
    authorize(&state, &scope, Action::ReadApprovals, Resource::Tenant).await?;
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "status: {s:?} is not one of pending, approved, denied, expired"
            ))
        })?),
    };
    let approvals = state.runtime.approvals(&scope, status).await?;
    Ok(AxumJson(ApprovalList {
        approvals: approvals.into_iter().map(Into::into).collect(),
    }))
}

/// One of the caller's tenant's approval requests.
#[utoipa::path(get, path = "/v1/approvals/{id}", operation_id = "get_approval", tag = "approvals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = ApprovalBody),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<ApprovalBody>, ApiError> {
    let id = approval_id(&id)?;
    // Authorised before the read, which may settle an expired request.
    authorize(&state, &scope, Action::ReadApprovals, Resource::Tenant).await?;
    let a = state.runtime.approval(&scope, id).await?;
    Ok(AxumJson(a.into()))
}

async fn decide(
    state: AppState,
    scope: bulkhead_auth::TenantScope,
    id: &str,
    verdict: Verdict,
    body: DecisionBody,
) -> Result<AxumJson<ApprovalBody>, ApiError> {
    let id = approval_id(id)?;
    // The request as stored: nothing is written (not even an expiry)
    // before the caller is authorised; `decide` settles an expired one.
    let a = state.runtime.peek_approval(&scope, id).await?;
    authorize(
        &state,
        &scope,
        Action::Approve,
        Resource::Approval {
            agent: &a.agent,
            own_request: a.requested_by == scope.principal().id(),
        },
    )
    .await?;
    let decided = state
        .runtime
        .decide(
            &scope,
            &a,
            verdict,
            body.comment,
            body.arguments_hash.as_deref(),
        )
        .await?;
    Ok(AxumJson(decided.into()))
}

/// Approves a pending request (approvers; not the principal who started
/// the run unless the tenant's policies allow it). When it was the run's
/// last pending request, the run resumes and the call is made once.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", operation_id = "approve_approval", tag = "approvals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Approval id")), request_body = DecisionBody,
    responses((status = 200, body = ApprovalBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn approve(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<AxumJson<ApprovalBody>, ApiError> {
    decide(state, scope, &id, Verdict::Approve, body).await
}

/// Denies a pending request: the call is never made, and the run ends
/// (`failed`, `approval_denied`) with the denial as the tool's answer.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", operation_id = "deny_approval", tag = "approvals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Approval id")), request_body = DecisionBody,
    responses((status = 200, body = ApprovalBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn deny(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<AxumJson<ApprovalBody>, ApiError> {
    decide(state, scope, &id, Verdict::Deny, body).await
}
