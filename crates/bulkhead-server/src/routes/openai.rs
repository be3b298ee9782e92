//! The OpenAI-compatible endpoints: `POST /v1/chat/completions` and
//! `GET /v1/models`. Their errors, authentication failures included, use
//! OpenAI's shape `{"error": {"message", "type", "code"}}` so the official
//! SDKs understand them.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_auth::TenantScope;
use bulkhead_core::{Deadline, codes};
use bulkhead_gateway::{ChatOutcome, GatewayError};
use bulkhead_policy::{Action, Resource};
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::ApiError;
use crate::extract::TenantCtx;
use crate::request::RequestDeadline;
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(chat).layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT)))
        .tenant(routes!(models))
}

/// Chat requests carry whole conversations (long contexts, tool results):
/// they get a larger body limit than the rest of the API.
const CHAT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The chat completions path (the request middleware leaves its timeout
/// to the provider settings).
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// An error in OpenAI's shape.
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: &'static str,
    /// The request field at fault, when one is.
    param: Option<String>,
    retry_after: Option<u64>,
}

impl From<GatewayError> for OpenAiError {
    fn from(e: GatewayError) -> Self {
        if let GatewayError::Internal(m) = &e {
            tracing::error!(error = %m, "gateway internal error");
        }
        let retry_after = match &e {
            GatewayError::UpstreamRateLimited { .. } | GatewayError::Limited(_) => e.retry_after(),
            _ => None,
        };
        let message = match &e {
            GatewayError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        Self {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
            kind: e.kind(),
            code: e.code(),
            param: e.param().map(str::to_owned),
            retry_after,
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let (kind, code) = match &e {
            ApiError::Unauthenticated => (
                "invalid_request_error",
                bulkhead_core::codes::INVALID_API_KEY.code,
            ),
            ApiError::TenantSuspended | ApiError::TenantMismatch | ApiError::Forbidden => {
                ("permission_error", e.code())
            }
            ApiError::Internal(_) | ApiError::Unavailable => ("server_error", e.code()),
            ApiError::Limited(r) => return GatewayError::Limited(r.clone()).into(),
            ApiError::AuthThrottled(_) => ("rate_limit_error", e.code()),
            _ => ("invalid_request_error", e.code()),
        };
        let retry_after = match &e {
            ApiError::AuthThrottled(s) => Some(*s),
            _ => None,
        };
        Self {
            status: e.status(),
            message: e.to_string(),
            kind,
            code,
            param: None,
            retry_after,
        }
    }
}

/// The body of an error in OpenAI's shape: what the official SDKs parse.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiErrorDetail,
}

/// The `error` member of [`OpenAiErrorBody`].
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    /// What went wrong.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `rate_limit_error`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// bulkhead's stable code.
    pub code: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl OpenAiError {
    /// A chat body that could not be read: over the chat body limit
    /// (413 `request_too_large`, as `docs/errors.md` says), or cut off
    /// (400). axum's own answer would be plain text, which no OpenAI SDK
    /// parses.
    fn body_rejected(r: BytesRejection) -> Self {
        let (status, message, code) = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the chat completions limit".to_owned(),
                codes::REQUEST_TOO_LARGE.code,
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                r.body_text(),
                codes::INVALID_REQUEST.code,
            )
        };
        Self {
            status,
            message,
            kind: "invalid_request_error",
            code,
            param: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message,
                kind: self.kind,
                code: self.code,
                param: self.param,
            },
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// Tenant authentication with OpenAI-shaped failures.
pub struct OpenAiTenant(pub TenantScope);

impl FromRequestParts<AppState> for OpenAiTenant {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OpenAiError> {
        TenantCtx::from_request_parts(parts, state)
            .await
            .map(|TenantCtx(s)| OpenAiTenant(s))
            .map_err(OpenAiError::from)
    }
}

/// Creates a chat completion (OpenAI Chat Completions format, streaming
/// with `stream: true`).
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "create_chat_completion", tag = "models", security(("bearer" = [])),
    request_body(content = Object, description = "An OpenAI chat completion request"),
    responses((status = 200, description = "A chat.completion, or an SSE stream of chat.completion.chunk", content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Invalid request or message, or a missing tenant credential", body = OpenAiErrorBody),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, suspended, or a residency refusal", body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`", body = OpenAiErrorBody),
        (status = 413, description = "The body is larger than the chat limit", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant, or the provider's rate limit", body = OpenAiErrorBody),
        (status = 502, description = "The provider failed", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The provider did not answer in time", body = OpenAiErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    deadline: Option<Extension<RequestDeadline>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = authorize(&state, &scope, Action::UseModels, Resource::Tenant).await {
        return OpenAiError::from(e).into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return OpenAiError::body_rejected(r).into_response(),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return OpenAiError::from(GatewayError::InvalidRequest(format!(
                "the body is not valid JSON: {e}"
            )))
            .into_response();
        }
    };
    // The call runs in its own task: if the client goes away, or the
    // connection drops, the call still completes (within the request's
    // deadline: `[server] request_timeout_s`) and its usage is recorded.
    let gateway = state.gateway.clone();
    let deadline = deadline.map_or_else(
        || Deadline::after(Duration::from_secs(state.settings.request_timeout_s)),
        |Extension(RequestDeadline(d))| d,
    );
    let task = tokio::spawn(async move { gateway.chat_until(&scope, value, deadline).await });
    match task.await {
        Ok(Ok(ChatOutcome::Complete(v))) => axum::Json(v).into_response(),
        Ok(Ok(ChatOutcome::Stream(rx))) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Bytes::from(b), rx))
            });
            crate::sse::response(stream)
        }
        Ok(Err(e)) => OpenAiError::from(e).into_response(),
        Err(e) => OpenAiError::from(GatewayError::Internal(e.to_string())).into_response(),
    }
}

/// One model in `GET /v1/models`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelObject {
    /// The alias to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always 0 (configuration has no creation date).
    pub created: u64,
    /// Always `bulkhead`.
    pub owned_by: &'static str,
}

/// The model list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// Models this tenant may use.
    pub data: Vec<ModelObject>,
}

/// Lists the models the calling tenant may use (allowed for it and served
/// from its region).
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ModelList),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, or the tenant is suspended", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The request took longer than `server.request_timeout_s`", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn models(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
) -> Result<axum::Json<ModelList>, OpenAiError> {
    authorize(&state, &scope, Action::UseModels, Resource::Tenant).await?;
    let models = state.gateway.models(&scope).await?;
    Ok(axum::Json(ModelList {
        object: "list",
        data: models
            .into_iter()
            .map(|m| ModelObject {
                id: m.name,
                object: "model",
                created: 0,
                owned_by: "bulkhead",
            })
            .collect(),
    }))
}
