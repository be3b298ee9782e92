//! A tenant's own observability: `GET /v1/metrics` (the per-tenant
//! families, the caller's series only), its alert rules and webhook
//! (`GET`/`PUT /v1/alerts`, admins by default) and its alert transitions
//! (`GET /v1/alerts/events`).

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use bulkhead_core::alert::{AlertMetric, AlertRule, check_rules};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_policy::{Action, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::routes;

use crate::alerting::TenantAlertSettings;
use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, Query, TenantCtx};
use crate::routes::RouteTable;
use crate::routes::tenant::AuditQuery;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(metrics))
        .tenant(routes!(get_alerts, put_alerts))
        .tenant(routes!(alert_events))
}

/// The caller's tenant's series of the per-tenant families, in
/// OpenMetrics text: the same names and labels as `GET /metrics`, no
/// other tenant's. A tenant beyond `server.metrics_max_tenants` has no
/// series of its own (only `# EOF`).
#[utoipa::path(get, path = "/v1/metrics", operation_id = "tenant_metrics", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn metrics(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &scope, Action::ReadUsage, Resource::Tenant).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.per_tenant().encode_tenant(&scope),
    ))
}

/// `PUT /v1/alerts` body: the tenant's own rules and webhook.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAlerts {
    /// At most 32 rules; one with a platform rule's name replaces it
    /// for this tenant. Each: `name`, `metric` (`error_rate`,
    /// `p99_latency_ms`, `spend_usd`, `tool_error_rate`), `of` (`model`,
    /// `tool`, `run`; `p99_latency_ms` only), `threshold` (a rate in
    /// [0, 1), milliseconds, or dollars as a decimal string), `window_s`
    /// (60–86400), `min_samples` (default 1).
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<AlertRule>,
    /// An http(s) URL the tenant's alert transitions are posted to,
    /// signed with `[alerting] signing_key`; `null`: none.
    pub webhook: Option<String>,
}

/// The tenant's alert settings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertsBody {
    /// The tenant's own rules.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<AlertRule>,
    /// Where its transitions are posted (`null`: nowhere).
    pub webhook: Option<String>,
    /// The platform's rules (`[[alerts]]`), in force unless replaced by
    /// name; `cross_tenant_block` rules are the operator's.
    #[schema(value_type = Vec<Object>)]
    pub platform_rules: Vec<AlertRule>,
    /// Names of the rules firing now.
    pub firing: Vec<String>,
}

async fn stored(
    state: &AppState,
    scope: &bulkhead_auth::TenantScope,
) -> Result<TenantAlertSettings, ApiError> {
    match state.tenants.alert_rules(scope).await? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::Internal(format!("stored alert rules: {e}"))),
        None => Ok(TenantAlertSettings::default()),
    }
}

fn answer(
    state: &AppState,
    scope: &bulkhead_auth::TenantScope,
    s: TenantAlertSettings,
) -> AlertsBody {
    AlertsBody {
        rules: s.rules,
        webhook: s.webhook,
        platform_rules: state.alerts.platform_rules(),
        firing: state.alerts.firing(scope),
    }
}

/// The caller's tenant's alert rules, webhook, the platform's rules and
/// which fire now (tenant admins by default).
#[utoipa::path(get, path = "/v1/alerts", operation_id = "get_alerts", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = AlertsBody),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn get_alerts(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<AxumJson<AlertsBody>, ApiError> {
    authorize(&state, &scope, Action::ManageAlerts, Resource::Tenant).await?;
    let s = stored(&state, &scope).await?;
    Ok(AxumJson(answer(&state, &scope, s)))
}

/// Replaces the caller's tenant's alert rules and webhook (tenant admins
/// by default); they apply at once.
#[utoipa::path(put, path = "/v1/alerts", operation_id = "put_alerts", tag = "tenant", security(("bearer" = [])),
    request_body = PutAlerts,
    responses((status = 200, body = AlertsBody),
        problems::TenantAuth,
        problems::JsonBody,
        problems::Timeout))]
pub async fn put_alerts(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Json(body): Json<PutAlerts>,
) -> Result<AxumJson<AlertsBody>, ApiError> {
    authorize(&state, &scope, Action::ManageAlerts, Resource::Tenant).await?;
    if let Err((i, e)) = check_rules(&body.rules) {
        return Err(ApiError::Validation(match i {
            Some(i) => format!("rules[{i}].{}: {}", e.field, e.message),
            None => format!("{}: {}", e.field, e.message),
        }));
    }
    for (i, r) in body.rules.iter().enumerate() {
        if r.metric == AlertMetric::CrossTenantBlock {
            return Err(ApiError::Validation(format!(
                "rules[{i}].metric: cross_tenant_block rules are the operator's ([[alerts]])"
            )));
        }
        if state.alerts.is_operator_rule(&r.name) {
            return Err(ApiError::Validation(format!(
                "rules[{i}].name: {:?} is the operator's rule and cannot be replaced",
                r.name
            )));
        }
    }
    if let Some(url) = &body.webhook {
        if !state.settings.alerts_signed {
            return Err(ApiError::Validation(
                "webhook: this server has no [alerting] signing_key, so it cannot sign alert webhooks".into(),
            ));
        }
        if !bulkhead_core::config::valid_webhook(url) {
            return Err(ApiError::Validation(
                "webhook: must be an http(s) URL of at most 2048 characters".into(),
            ));
        }
        if let Err(e) = state.egress.vet(url).await {
            return Err(ApiError::Validation(format!("webhook: {e}")));
        }
    }
    let settings = TenantAlertSettings {
        rules: body.rules,
        webhook: body.webhook,
    };
    let text = serde_json::to_string(&settings).map_err(|e| ApiError::Internal(e.to_string()))?;
    let names: Vec<&str> = settings.rules.iter().map(|r| r.name.as_str()).collect();
    // The URL may carry a token: only whether one is set is recorded.
    let event = NewAuditEvent::new(
        AuditAction::AlertRulesUpdate,
        format!("tenant:{}", scope.tenant()),
        Outcome::Success,
        scope.request_id().clone(),
    )
    .with_details(json!({"rules": names, "webhook_set": settings.webhook.is_some()}));
    state
        .tenants
        .set_alert_rules(&scope, Some(text), event)
        .await?;
    state.alerts.install(&scope, &settings);
    Ok(AxumJson(answer(&state, &scope, settings)))
}

/// A page of alert transitions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertEventsPage {
    /// Oldest first; each is the body its webhooks were sent, with `seq`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// The caller's tenant's alert transitions (`alert.fired`,
/// `alert.resolved`), oldest first (tenant admins by default).
#[utoipa::path(get, path = "/v1/alerts/events", operation_id = "alert_events", tag = "tenant", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AlertEventsPage),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn alert_events(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<AuditQuery>,
) -> Result<AxumJson<AlertEventsPage>, ApiError> {
    authorize(&state, &scope, Action::ManageAlerts, Resource::Tenant).await?;
    let page = q.page()?;
    let rows = state.tenants.alert_events(&scope, page).await?;
    let next_after = (rows.len() as u32 == page.limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let events = rows
        .into_iter()
        .map(|r| {
            let mut v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("seq".into(), json!(r.seq));
            }
            v
        })
        .collect();
    Ok(AxumJson(AlertEventsPage { events, next_after }))
}
