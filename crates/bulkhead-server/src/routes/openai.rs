//! The OpenAI-compatible endpoints: `POST /v1/chat/completions`,
//! `POST /v1/embeddings`, `GET /v1/models` and `/v1/models/{id}`, and the
//! Responses API (`POST /v1/responses`, `GET` and `DELETE
//! /v1/responses/{id}`). Their errors, authentication failures, bodies
//! over the limit and unknown paths under `/v1` included, use OpenAI's
//! shape `{"error": {"message", "type", "param", "code"}}` so the
//! official SDKs understand them.

use std::time::Duration;
use tracing::Instrument;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_auth::TenantScope;
use bulkhead_core::{Deadline, codes};
use bulkhead_gateway::{ChatOutcome, EmbeddingsRequest, GatewayError, ResponseOutcome};
use bulkhead_policy::{Action, Resource};
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::ApiError;
use crate::extract::{Path, TenantCtx};
use crate::request::RequestDeadline;
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(chat).layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT)))
        .tenant(routes!(embeddings).layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT)))
        .tenant(routes!(models))
        .tenant(routes!(model))
        .tenant(routes!(create_response).layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT)))
        .tenant(routes!(get_response, delete_response))
}

/// Chat requests carry whole conversations (long contexts, tool results):
/// they get a larger body limit than the rest of the API (so do
/// embeddings and responses).
const CHAT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The chat completions path (the request middleware leaves its timeout
/// to the provider settings).
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// The Responses API path (a model call too: no generic timeout).
pub const RESPONSES_PATH: &str = "/v1/responses";

/// The embeddings path (bounded by its provider's timeout, as chat is).
pub const EMBEDDINGS_PATH: &str = "/v1/embeddings";

/// The first segments after `/v1/` of the OpenAI-compatible paths. An
/// unmatched path under `/v1` answers in OpenAI's shape unless its first
/// segment is one of the tenant plane's own resources (those answer
/// problems, as the rest of that plane does).
pub const OPENAI_SEGMENTS: [&str; 4] = ["chat", "embeddings", "models", "responses"];

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
    /// The 404 of a path under `/v1` that no route matches, as OpenAI
    /// answers it.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        // The path is the client's own; only a bounded prefix is echoed.
        let shown: String = path.chars().take(200).collect();
        let method = crate::metrics::method_label(method);
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "Unknown request URL: {method} {shown}. Please check the URL for typos."
            ),
            kind: "invalid_request_error",
            code: codes::UNKNOWN_URL.code,
            param: None,
            retry_after: None,
        }
    }

    /// A 405 on an OpenAI-compatible path (the path exists, the method
    /// does not).
    pub fn method_not_allowed(method: &str) -> Self {
        let method = crate::metrics::method_label(method);
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not allowed on this path"),
            kind: "invalid_request_error",
            code: codes::METHOD_NOT_ALLOWED.code,
            param: None,
            retry_after: None,
        }
    }

    /// A chat body that could not be read: over the chat body limit
    /// (413 `request_too_large`, as `docs/errors.md` says), or cut off
    /// (400). axum's own answer would be plain text, which no OpenAI SDK
    /// parses.
    fn body_rejected(r: BytesRejection, limit: usize) -> Self {
        let (status, message, code) = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit of {limit} bytes"),
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
        res.extensions_mut()
            .insert(crate::request::ProblemCode(self.code));
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
    responses((status = 200, description = "A chat.completion, or an SSE stream of chat.completion.chunk", content((Object = "application/json"), (crate::sse::SseEvent = "text/event-stream"))),
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
        Err(r) => return OpenAiError::body_rejected(r, CHAT_BODY_LIMIT).into_response(),
    };
    let value = match json_body(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // The call runs in its own task: if the client goes away, or the
    // connection drops, the call still completes (within the request's
    // deadline: `[server] request_timeout_s`) and its usage is recorded.
    let gateway = state.gateway.clone();
    let deadline = request_deadline(&state, deadline);
    // The task keeps the request's span: the call's span is its child.
    let task = tokio::spawn(
        async move { gateway.chat_until(&scope, value, deadline).await }
            .instrument(tracing::Span::current()),
    );
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

/// A body read as JSON, with OpenAI-shaped failures.
fn json_body(body: &Bytes) -> Result<Value, OpenAiError> {
    serde_json::from_slice(body).map_err(|e| {
        OpenAiError::from(GatewayError::InvalidRequest(format!(
            "the body is not valid JSON: {e}"
        )))
    })
}

/// Authorizes a model call and reads its body.
async fn model_call_body(
    state: &AppState,
    scope: &TenantScope,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, OpenAiError> {
    authorize(state, scope, Action::UseModels, Resource::Tenant).await?;
    let body = body.map_err(|r| OpenAiError::body_rejected(r, CHAT_BODY_LIMIT))?;
    json_body(&body)
}

/// Gets one model this tenant may use, as in the list.
#[utoipa::path(get, path = "/v1/models/{id}", operation_id = "retrieve_model", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "The model alias")),
    responses((status = 200, body = ModelObject),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, or the tenant is suspended", body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`: unknown, not allowed for this tenant, or not served from its region", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The request took longer than `server.request_timeout_s`", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn model(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    Path(id): Path<String>,
) -> Result<axum::Json<ModelObject>, OpenAiError> {
    authorize(&state, &scope, Action::UseModels, Resource::Tenant).await?;
    let models = state.gateway.models(&scope).await?;
    models
        .into_iter()
        .find(|m| m.name == id)
        .map(|m| {
            axum::Json(ModelObject {
                id: m.name,
                object: "model",
                created: 0,
                owned_by: "bulkhead",
            })
        })
        .ok_or_else(|| GatewayError::ModelNotFound(id).into())
}

/// One vector of an embeddings answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingObject {
    /// Always `embedding`.
    pub object: &'static str,
    /// The input's position.
    pub index: usize,
    /// The vector: numbers, or (`encoding_format: base64`) the base64 of
    /// its little-endian f32 values.
    #[schema(value_type = Object)]
    pub embedding: Value,
}

/// Input tokens of an embeddings call.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    /// Input tokens billed.
    pub prompt_tokens: u64,
    /// The same (embeddings have no output).
    pub total_tokens: u64,
}

/// An embeddings answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: &'static str,
    /// One vector per input, in input order.
    pub data: Vec<EmbeddingObject>,
    /// The model alias.
    pub model: String,
    /// What was billed.
    pub usage: EmbeddingUsage,
}

/// Creates embeddings (OpenAI format: `input` a string or an array of
/// strings, `encoding_format` `float` or `base64`, `dimensions`), with an
/// embedding model of `[[embedding_models]]` the tenant may use; billed,
/// limited and audited like a chat call.
#[utoipa::path(post, path = "/v1/embeddings", operation_id = "create_embedding", tag = "models", security(("bearer" = [])),
    request_body(content = Object, description = "An OpenAI embeddings request"),
    responses((status = 200, body = EmbeddingList),
        (status = 400, description = "Invalid request (`param` names the member), or a missing tenant credential", body = OpenAiErrorBody),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, suspended, or a residency refusal", body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`", body = OpenAiErrorBody),
        (status = 413, description = "The body is larger than the limit", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant, or the provider's rate limit", body = OpenAiErrorBody),
        (status = 502, description = "The provider failed", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The provider did not answer in time", body = OpenAiErrorBody)))]
pub async fn embeddings(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    deadline: Option<Extension<RequestDeadline>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EmbeddingList>, OpenAiError> {
    let deadline = request_deadline(&state, deadline);
    let value = model_call_body(&state, &scope, body).await?;
    let request = EmbeddingsRequest::parse(&value)?;
    let base64 = request.base64;
    let gateway = state.gateway.clone();
    // As for chat: the call completes (and is recorded) if the client goes.
    let task = tokio::spawn(
        async move { gateway.embeddings(&scope, &request, Some(deadline)).await }
            .instrument(tracing::Span::current()),
    );
    let out = task
        .await
        .map_err(|e| OpenAiError::from(GatewayError::Internal(e.to_string())))??;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            },
        })
        .collect();
    Ok(axum::Json(EmbeddingList {
        object: "list",
        data,
        model: out.model,
        usage: EmbeddingUsage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    }))
}

/// Creates a model response (OpenAI Responses API), run as a chat call
/// of the tenant: `input` a string or a list of items (messages,
/// `function_call`, `function_call_output`), `instructions`, function
/// `tools`, `tool_choice`, `max_output_tokens`, `temperature`, `top_p`,
/// `previous_response_id` (a response of this tenant's), `store`, and
/// `stream: true` for the Responses event stream.
#[utoipa::path(post, path = "/v1/responses", operation_id = "create_response", tag = "models", security(("bearer" = [])),
    request_body(content = Object, description = "An OpenAI Responses API request"),
    responses((status = 200, description = "A response, or an SSE stream of Responses events", content((Object = "application/json"), (crate::sse::SseEvent = "text/event-stream"))),
        (status = 400, description = "Invalid or unsupported request member (`param` names it), or a missing tenant credential", body = OpenAiErrorBody),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, suspended, or a residency refusal", body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`, or `response_not_found` for `previous_response_id`", body = OpenAiErrorBody),
        (status = 413, description = "The body is larger than the limit", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant, or the provider's rate limit", body = OpenAiErrorBody),
        (status = 502, description = "The provider failed", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The provider did not answer in time", body = OpenAiErrorBody)))]
pub async fn create_response(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    deadline: Option<Extension<RequestDeadline>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let deadline = request_deadline(&state, deadline);
    let value = match model_call_body(&state, &scope, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let gateway = state.gateway.clone();
    let task = tokio::spawn(
        async move { gateway.respond(&scope, &value, Some(deadline)).await }
            .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(Ok(ResponseOutcome::Complete(v))) => axum::Json(v).into_response(),
        Ok(Ok(ResponseOutcome::Stream(rx))) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Bytes::from(b), rx))
            });
            crate::sse::response(stream)
        }
        Ok(Err(e)) => OpenAiError::from(e).into_response(),
        Err(e) => OpenAiError::from(GatewayError::Internal(e.to_string())).into_response(),
    }
}

/// Gets a stored response of this tenant.
#[utoipa::path(get, path = "/v1/responses/{id}", operation_id = "get_response", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "The response id (`resp_...`)")),
    responses((status = 200, description = "The response object", body = Object),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, or the tenant is suspended", body = OpenAiErrorBody),
        (status = 404, description = "`response_not_found`: none of this id in this tenant", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The request took longer than `server.request_timeout_s`", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_response(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, OpenAiError> {
    authorize(&state, &scope, Action::UseModels, Resource::Tenant).await?;
    Ok(axum::Json(state.gateway.response(&scope, &id).await?))
}

/// Deletes a stored response of this tenant.
#[utoipa::path(delete, path = "/v1/responses/{id}", operation_id = "delete_response", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "The response id (`resp_...`)")),
    responses((status = 200, description = "`{id, object: response, deleted: true}`", body = Object),
        (status = 401, description = "No valid credential", body = OpenAiErrorBody),
        (status = 403, description = "Not allowed, or the tenant is suspended", body = OpenAiErrorBody),
        (status = 404, description = "`response_not_found`: none of this id in this tenant", body = OpenAiErrorBody),
        (status = 429, description = "Over a limit of the tenant", body = OpenAiErrorBody),
        (status = 503, description = "The store or the limit counters cannot be reached", body = OpenAiErrorBody),
        (status = 504, description = "The request took longer than `server.request_timeout_s`", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn delete_response(
    State(state): State<AppState>,
    OpenAiTenant(scope): OpenAiTenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, OpenAiError> {
    authorize(&state, &scope, Action::UseModels, Resource::Tenant).await?;
    Ok(axum::Json(
        state.gateway.delete_response(&scope, &id).await?,
    ))
}

/// The request's deadline (`[server] request_timeout_s` from its arrival,
/// set by the request middleware), which its provider calls keep.
fn request_deadline(state: &AppState, set: Option<Extension<RequestDeadline>>) -> Deadline {
    set.map_or_else(
        || Deadline::after(Duration::from_secs(state.settings.request_timeout_s)),
        |Extension(RequestDeadline(d))| d,
    )
}
