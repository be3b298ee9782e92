//! Usage reports from the cost ledger (`GET /v1/usage`, the operator's
//! `GET /admin/v1/usage` across tenants, JSON or CSV) and the per-tenant
//! model allow-list on the operator plane.

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{TenantId, Timestamp};
use bulkhead_gateway::usage::{UsageGroup, UsageSummary, nanos_to_usd};
use bulkhead_policy::{Action, Resource};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, OperatorCtx, Path, Query, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(usage))
        .operator(routes!(operator_usage))
        .operator(routes!(get_models, put_models))
        .operator(routes!(get_settings, put_settings))
}

/// `GET /v1/usage` and `GET /admin/v1/usage` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, inclusive: `YYYY-MM-DD` or RFC 3339 (default: 30 days ago).
    pub from: Option<String>,
    /// End, exclusive: `YYYY-MM-DD` or RFC 3339 (default: now).
    pub to: Option<String>,
    /// What each row groups by: a comma-separated list of `day`, `agent`,
    /// `model`, `tool` (default `day,model`).
    pub group_by: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

fn instant(s: &str, name: &str) -> Result<Timestamp, ApiError> {
    let text = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    Timestamp::parse(&text).map_err(|_| {
        ApiError::InvalidParameter(format!(
            "`{name}` must be YYYY-MM-DD or an RFC 3339 timestamp"
        ))
    })
}

/// A query's period, groups and format, checked.
struct Report {
    from: Timestamp,
    to: Timestamp,
    group: Vec<UsageGroup>,
    csv: bool,
}

impl Report {
    fn parse(q: &UsageQuery) -> Result<Self, ApiError> {
        let to = match &q.to {
            Some(t) => instant(t, "to")?,
            None => Timestamp::now().plus_seconds(1),
        };
        let from = match &q.from {
            Some(f) => instant(f, "from")?,
            None => to.plus_seconds(-30 * 86_400),
        };
        if from >= to {
            return Err(ApiError::InvalidParameter(
                "`from` must be before `to`".into(),
            ));
        }
        let group = UsageGroup::parse_list(q.group_by.as_deref().unwrap_or("day,model"))
            .map_err(ApiError::InvalidParameter)?;
        let csv = match q.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(ApiError::InvalidParameter(format!(
                    "`format` is json or csv, not {other:?}"
                )));
            }
        };
        Ok(Self {
            from,
            to,
            group,
            csv,
        })
    }

    /// The report as JSON or CSV.
    fn answer(&self, lines: Vec<UsageLine>) -> Response {
        let mut total = UsageLine::default();
        let mut nanos = 0u64;
        for l in &lines {
            total.requests += l.requests;
            total.input_tokens += l.input_tokens;
            total.output_tokens += l.output_tokens;
            total.cached_tokens += l.cached_tokens;
            nanos += l.cost_nanos;
        }
        total.cost_usd = nanos_to_usd(nanos);
        if self.csv {
            return csv(&lines).into_response();
        }
        AxumJson(UsageReport {
            from: self.from.to_string(),
            to: self.to.to_string(),
            rows: lines,
            total,
        })
        .into_response()
    }
}

/// One line of the report; grouping fields not asked for are absent.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct UsageLine {
    /// Tenant (operator report only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// UTC day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// Agent (`null` in its group: calls made directly, not by a run).
    #[serde(skip_serializing_if = "Grouped::is_absent")]
    #[schema(value_type = Option<String>)]
    pub agent: Grouped,
    /// Model alias (`null` in its group: tool calls).
    #[serde(skip_serializing_if = "Grouped::is_absent")]
    #[schema(value_type = Option<String>)]
    pub model: Grouped,
    /// Tool (`null` in its group: model calls).
    #[serde(skip_serializing_if = "Grouped::is_absent")]
    #[schema(value_type = Option<String>)]
    pub tool: Grouped,
    /// Calls.
    pub requests: u64,
    /// Input tokens (cached included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// Cost, USD, decimal string with nine decimals.
    pub cost_usd: String,
    #[serde(skip)]
    cost_nanos: u64,
}

/// A grouping field: absent when not grouped by, else a value or `null`.
#[derive(Default)]
pub enum Grouped {
    /// Not grouped by this field.
    #[default]
    Absent,
    /// Grouped: this row's value (`None`: the row's calls have none).
    Value(Option<String>),
}

impl Grouped {
    fn is_absent(&self) -> bool {
        matches!(self, Grouped::Absent)
    }
    fn text(&self) -> &str {
        match self {
            Grouped::Value(Some(v)) => v,
            _ => "",
        }
    }
}

impl Serialize for Grouped {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Grouped::Value(Some(v)) => s.serialize_str(v),
            _ => s.serialize_none(),
        }
    }
}

fn line(tenant: Option<&str>, group: &[UsageGroup], r: UsageSummary) -> UsageLine {
    let pick = |g: UsageGroup, v: Option<String>| {
        if group.contains(&g) {
            Grouped::Value(v)
        } else {
            Grouped::Absent
        }
    };
    UsageLine {
        tenant: tenant.map(str::to_owned),
        day: r.day,
        agent: pick(UsageGroup::Agent, r.agent),
        model: pick(UsageGroup::Model, r.model),
        tool: pick(UsageGroup::Tool, r.tool),
        requests: r.requests,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cached_tokens: r.cached_tokens,
        cost_usd: nanos_to_usd(r.cost_nanos),
        cost_nanos: r.cost_nanos,
    }
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The lines as CSV with a header (every grouping column, empty when not
/// grouped by), `text/csv`.
fn csv(lines: &[UsageLine]) -> impl IntoResponse {
    let mut out = String::from(
        "tenant,day,agent,model,tool,requests,input_tokens,output_tokens,cached_tokens,cost_usd\n",
    );
    for l in lines {
        let cols = [
            field(l.tenant.as_deref().unwrap_or("")),
            field(l.day.as_deref().unwrap_or("")),
            field(l.agent.text()),
            field(l.model.text()),
            field(l.tool.text()),
            l.requests.to_string(),
            l.input_tokens.to_string(),
            l.output_tokens.to_string(),
            l.cached_tokens.to_string(),
            l.cost_usd.clone(),
        ];
        out.push_str(&cols.join(","));
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"usage.csv\"",
            ),
        ],
        out,
    )
}

/// The usage report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Start of the period (RFC 3339).
    pub from: String,
    /// End of the period (RFC 3339).
    pub to: String,
    /// One per group, ordered by the groups.
    pub rows: Vec<UsageLine>,
    /// Sum of all rows.
    pub total: UsageLine,
}

/// The calling tenant's cost ledger, grouped by day, agent, model or
/// tool, as JSON or CSV.
#[utoipa::path(get, path = "/v1/usage", operation_id = "tenant_usage", tag = "usage", security(("bearer" = [])), params(UsageQuery),
    responses((status = 200, description = "The report: JSON, or CSV with `format=csv`", content((UsageReport = "application/json"), (String = "text/csv"))),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn usage(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &scope, Action::ReadUsage, Resource::Tenant).await?;
    let report = Report::parse(&q)?;
    let rows = state
        .gateway
        .usage(&scope, report.from, report.to, &report.group)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let lines = rows
        .into_iter()
        .map(|r| line(None, &report.group, r))
        .collect();
    Ok(report.answer(lines))
}

/// The operator's view: every tenant's ledger, one row per tenant and
/// group, as JSON or CSV. Recorded in the operator's chain.
#[utoipa::path(get, path = "/admin/v1/usage", operation_id = "operator_usage", tag = "operator", security(("operator" = [])), params(UsageQuery),
    responses((status = 200, description = "The report: JSON, or CSV with `format=csv`", content((UsageReport = "application/json"), (String = "text/csv"))),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn operator_usage(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let report = Report::parse(&q)?;
    let tenants = state.control.list_tenants(&op).await?;
    crate::operations::record_usage_report(&state, &op, &report.from, &report.to, tenants.len())
        .await?;
    let mut lines = Vec::new();
    for tenant in tenants {
        let scope = op.act_for_tenant(&tenant);
        let rows = state
            .gateway
            .usage(&scope, report.from, report.to, &report.group)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        lines.extend(
            rows.into_iter()
                .map(|r| line(Some(tenant.id.as_str()), &report.group, r)),
        );
    }
    Ok(report.answer(lines))
}

/// `PUT /admin/v1/tenants/{id}/models` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutModels {
    /// Model aliases the tenant may use; `null` allows every model.
    pub allowed: Option<Vec<String>>,
}

/// A tenant's model access.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantModels {
    /// Tenant id.
    pub tenant: String,
    /// The allow-list; `null` means every model.
    pub allowed: Option<Vec<String>>,
    /// What the tenant can call now: allowed and in its region.
    pub available: Vec<String>,
}

async fn answer(
    state: &AppState,
    scope: &bulkhead_auth::TenantScope,
) -> Result<TenantModels, ApiError> {
    let allowed = state
        .gateway
        .settings(scope)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .allowed_models;
    let available = state
        .gateway
        .models(scope)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_iter()
        .map(|m| m.name)
        .collect();
    Ok(TenantModels {
        tenant: scope.tenant().to_string(),
        allowed,
        available,
    })
}

async fn tenant_scope(
    state: &AppState,
    op: &bulkhead_auth::OperatorScope,
    id: &str,
) -> Result<bulkhead_auth::TenantScope, ApiError> {
    let id = TenantId::parse(id).map_err(|_| ApiError::NotFound)?;
    let tenant = state.control.get_tenant(op, &id).await?;
    Ok(op.act_for_tenant(&tenant))
}

/// A tenant's model allow-list and what it can use now.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/models", operation_id = "get_tenant_models", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantModels),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get_models(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<TenantModels>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    Ok(AxumJson(answer(&state, &scope).await?))
}

/// Replaces a tenant's model allow-list (`null`: every model).
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/models", operation_id = "put_tenant_models", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")), request_body = PutModels,
    responses((status = 200, body = TenantModels),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn put_models(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
    Json(body): Json<PutModels>,
) -> Result<AxumJson<TenantModels>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    if let Some(list) = &body.allowed {
        for name in list {
            // Chat models and embedding models (`POST /v1/embeddings`).
            if state.catalog.get(name).is_none() && state.catalog.embedding(name).is_none() {
                return Err(ApiError::Validation(format!("unknown model {name:?}")));
            }
        }
    }
    crate::operations::set_tenant_models(&state, &op, &scope, body.allowed).await?;
    Ok(AxumJson(answer(&state, &scope).await?))
}

/// `PUT /admin/v1/tenants/{id}/settings` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettings {
    /// Keep each model call's request messages in the tenant's audit chain
    /// (off by default: audit events carry no prompt contents).
    pub audit_prompts: Option<bool>,
    /// Delete thread messages older than this many days (1–3650); `null`
    /// keeps them. Absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub message_retention_days: Option<Option<u32>>,
    /// An http(s) URL that new approval requests are posted to, signed
    /// with `[approvals] signing_key`; `null` removes it. Absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub approval_webhook: Option<Option<String>>,
}

/// Tells `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A tenant's gateway settings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantSettingsBody {
    /// Tenant id.
    pub tenant: String,
    /// Whether prompts are kept in the audit chain.
    pub audit_prompts: bool,
    /// The model allow-list (`null`: every model).
    pub allowed_models: Option<Vec<String>>,
    /// Days thread messages are kept (`null`: forever).
    pub message_retention_days: Option<u32>,
    /// Where new approval requests are posted (`null`: nowhere).
    pub approval_webhook: Option<String>,
}

async fn settings_body(
    state: &AppState,
    scope: &bulkhead_auth::TenantScope,
) -> Result<TenantSettingsBody, ApiError> {
    let s = state
        .gateway
        .settings(scope)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(TenantSettingsBody {
        tenant: scope.tenant().to_string(),
        audit_prompts: s.audit_prompts,
        allowed_models: s.allowed_models,
        message_retention_days: s.message_retention_days,
        approval_webhook: s.approval_webhook,
    })
}

/// A tenant's gateway settings.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/settings", operation_id = "get_tenant_settings", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantSettingsBody),
        problems::OperatorAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get_settings(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<TenantSettingsBody>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    Ok(AxumJson(settings_body(&state, &scope).await?))
}

/// Changes a tenant's gateway settings (the prompt-audit opt-in).
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/settings", operation_id = "put_tenant_settings", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id")), request_body = PutSettings,
    responses((status = 200, body = TenantSettingsBody),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn put_settings(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path(id): Path<String>,
    Json(body): Json<PutSettings>,
) -> Result<AxumJson<TenantSettingsBody>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    let change = bulkhead_gateway::SettingsChange {
        audit_prompts: body.audit_prompts,
        message_retention_days: body.message_retention_days,
        approval_webhook: body.approval_webhook,
    };
    if change.is_empty() {
        return Err(ApiError::Validation(
            "set audit_prompts, message_retention_days and/or approval_webhook".into(),
        ));
    }
    if let Some(Some(url)) = &change.approval_webhook {
        if !state.settings.approvals_signed {
            return Err(ApiError::Validation(
                "approval_webhook: this server has no [approvals] signing_key, so it cannot sign approval webhooks".into(),
            ));
        }
        let ok = reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok || url.len() > 2048 {
            return Err(ApiError::Validation(
                "approval_webhook: must be an http(s) URL of at most 2048 characters".into(),
            ));
        }
    }
    if let Some(Some(d)) = change.message_retention_days
        && !(1..=3650).contains(&d)
    {
        return Err(ApiError::Validation(
            "message_retention_days: must be between 1 and 3650, or null".into(),
        ));
    }
    crate::operations::change_tenant_settings(&state, &op, &scope, &change).await?;
    Ok(AxumJson(settings_body(&state, &scope).await?))
}
