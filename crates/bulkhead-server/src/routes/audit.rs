//! Audit export and the audit public keys: `GET /v1/audit/export`,
//! `GET /v1/audit/keys`, and the operator's `GET /admin/v1/audit/export`
//! (its own chain) and `GET /admin/v1/tenants/{id}/audit/export`.
//!
//! An export is JSON Lines, streamed: each event in its canonical form,
//! each signed checkpoint of the range right after the event it covers
//! (docs/audit.md). It is read from the store a batch at a time, so its
//! memory does not grow with the chain.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::TenantId;
use bulkhead_core::audit::AuditEvent;
use bulkhead_core::checkpoint::{AuditPublicKey, Checkpoint};
use bulkhead_policy::{Action, Resource};
use bulkhead_store::{ControlStore, Page, StoreResult, TenantStore};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{OperatorCtx, Path, Query, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(audit_keys))
        .tenant(routes!(audit_export))
        .operator(routes!(operator_audit_export))
        .operator(routes!(tenant_audit_export))
}

/// The platform's audit public keys.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditKeysBody {
    /// Every key a checkpoint may name (`id`, `alg` `Ed25519`, `public_key`
    /// as 64 hex digits, `current`), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<AuditPublicKey>,
}

/// The public keys that sign audit checkpoints.
#[utoipa::path(get, path = "/v1/audit/keys", operation_id = "tenant_audit_keys", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = AuditKeysBody),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn audit_keys(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<Json<AuditKeysBody>, ApiError> {
    authorize(&state, &scope, Action::ReadAudit, Resource::Tenant).await?;
    Ok(Json(AuditKeysBody {
        keys: state.audit_keys.public.clone(),
    }))
}

/// The range of an export.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First sequence number (default 1).
    pub from: Option<u64>,
    /// Last sequence number (default: the newest event).
    pub to: Option<u64>,
}

impl ExportQuery {
    fn range(&self) -> Result<(u64, u64), ApiError> {
        let from = self.from.unwrap_or(1);
        let to = self.to.unwrap_or(u64::MAX);
        if from == 0 || to < from {
            return Err(ApiError::InvalidParameter(
                "from must be at least 1 and to at least from".into(),
            ));
        }
        Ok((from, to))
    }
}

/// Events read from the store per batch of an export.
const EXPORT_BATCH: u32 = 1000;

/// One chain, read in batches.
#[async_trait]
trait Chain: Send + Sync + 'static {
    async fn events(&self, page: Page) -> StoreResult<Vec<AuditEvent>>;
    async fn checkpoints(&self, from: u64, limit: u32) -> StoreResult<Vec<Checkpoint>>;
}

struct TenantChain {
    store: Arc<dyn TenantStore>,
    scope: TenantScope,
}

#[async_trait]
impl Chain for TenantChain {
    async fn events(&self, page: Page) -> StoreResult<Vec<AuditEvent>> {
        self.store.audit(&self.scope, page).await
    }
    async fn checkpoints(&self, from: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        self.store.checkpoints(&self.scope, from, limit).await
    }
}

struct OperatorChain {
    store: Arc<dyn ControlStore>,
    op: OperatorScope,
}

#[async_trait]
impl Chain for OperatorChain {
    async fn events(&self, page: Page) -> StoreResult<Vec<AuditEvent>> {
        self.store.operator_audit(&self.op, page).await
    }
    async fn checkpoints(&self, from: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        self.store.operator_checkpoints(&self.op, from, limit).await
    }
}

/// One batch of the export starting at `next`: its bytes, and where the
/// next batch starts (`None` at the end).
async fn batch(chain: &dyn Chain, next: u64, to: u64) -> StoreResult<(Bytes, Option<u64>)> {
    let limit = (to - next + 1).min(u64::from(EXPORT_BATCH)) as u32;
    let events = chain
        .events(Page {
            after: next - 1,
            limit,
        })
        .await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok((Bytes::new(), None));
    };
    // At most one checkpoint per sequence number, so a batch of events
    // has at most as many.
    let checkpoints = chain.checkpoints(next, limit).await?;
    let mut checkpoints = checkpoints.into_iter().filter(|c| c.seq <= last).peekable();
    let mut buf = String::with_capacity(events.len() * 600);
    for e in &events {
        buf.push_str(&e.line());
        buf.push('\n');
        while let Some(c) = checkpoints.next_if(|c| c.seq <= e.seq) {
            buf.push_str(&c.line());
            buf.push('\n');
        }
    }
    let more = events.len() as u32 == limit && last < to;
    Ok((Bytes::from(buf), more.then_some(last + 1)))
}

fn export(chain: Arc<dyn Chain>, from: u64, to: u64) -> Response {
    let stream = futures_util::stream::unfold(Some(from), move |next| {
        let chain = chain.clone();
        async move {
            let next = next?;
            match batch(chain.as_ref(), next, to).await {
                Ok((bytes, _)) if bytes.is_empty() => None,
                Ok((bytes, after)) => Some((Ok(bytes), after)),
                Err(e) => {
                    // The body ends early: the last line is cut or missing,
                    // which a verifier reports.
                    tracing::error!(error = %e, "audit export: could not read the chain");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// This tenant's audit chain as JSON Lines: events `from`..`to` and the
/// signed checkpoints among them.
#[utoipa::path(get, path = "/v1/audit/export", operation_id = "tenant_audit_export", tag = "tenant", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, description = "JSON Lines: events and checkpoints (docs/audit.md)", content_type = "application/jsonl", body = String),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn audit_export(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &scope, Action::ReadAudit, Resource::Tenant).await?;
    let (from, to) = q.range()?;
    let chain = TenantChain {
        store: state.tenants.clone(),
        scope,
    };
    Ok(export(Arc::new(chain), from, to))
}

/// The operator's own audit chain as JSON Lines.
#[utoipa::path(get, path = "/admin/v1/audit/export", operation_id = "operator_audit_export", tag = "operator", security(("operator" = [])), params(ExportQuery),
    responses((status = 200, description = "JSON Lines: events and checkpoints (docs/audit.md)", content_type = "application/jsonl", body = String),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn operator_audit_export(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = q.range()?;
    let chain = OperatorChain {
        store: state.control.clone(),
        op,
    };
    Ok(export(Arc::new(chain), from, to))
}

/// A tenant's audit chain as JSON Lines, for the operator.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/audit/export", operation_id = "tenant_audit_export_admin", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ExportQuery),
    responses((status = 200, description = "JSON Lines: events and checkpoints (docs/audit.md)", content_type = "application/jsonl", body = String),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn tenant_audit_export(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = q.range()?;
    let id = TenantId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let tenant = state.control.get_tenant(&op, &id).await?;
    let chain = TenantChain {
        store: state.tenants.clone(),
        scope: op.act_for_tenant(&tenant),
    };
    Ok(export(Arc::new(chain), from, to))
}
