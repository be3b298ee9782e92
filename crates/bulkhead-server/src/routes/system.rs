//! Public routes: health, metrics, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::routes;

use crate::error::{ApiError, problems};
use crate::routes::RouteTable;
use crate::state::AppState;

/// The public routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .public(routes!(healthz))
        .public(routes!(metrics))
        .public(routes!(openapi))
}

/// Health answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the process serves requests.
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "system",
    responses((status = 200, body = Health),
        problems::Timeout))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Metrics in OpenMetrics text (Prometheus scrapes it as-is). Public
/// unless `server.metrics_token` is set, then that bearer token is required.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`server.metrics_token` is set and the request does not carry it", body = crate::error::Problem, content_type = "application/problem+json"),
        problems::Timeout))]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.settings.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token.matches(presented) {
            state.metrics.auth_failure("metrics_token");
            return Err(ApiError::Unauthenticated);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    ))
}

/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_document", tag = "system",
    responses((status = 200, description = "OpenAPI document", body = Object),
        problems::Timeout))]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
}
