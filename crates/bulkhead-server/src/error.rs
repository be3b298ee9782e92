//! The one API error type.
//!
//! Every failure a client can see is an [`ApiError`]; each variant maps to
//! one entry of [`bulkhead_core::codes`] (its stable `code`, HTTP status and
//! title, documented in `docs/errors.md`).
//! Bodies are `application/problem+json` (RFC 9457) and carry the request
//! id. 5xx bodies never include internal details; those go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_store::StoreError;
use serde::Serialize;

use crate::request::current_request_id;

/// A client-visible failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be parsed or did not match the schema.
    #[error("{0}")]
    InvalidBody(String),
    /// A path or query parameter is invalid.
    #[error("{0}")]
    InvalidParameter(String),
    /// The request parsed but a value is not acceptable.
    #[error("{0}")]
    Validation(String),
    /// No valid credential.
    #[error("the request could not be authenticated")]
    Unauthenticated,
    /// The tenant is suspended.
    #[error("this tenant is suspended")]
    TenantSuspended,
    /// `X-Tenant-ID` disagrees with the credential.
    #[error("the X-Tenant-ID header does not match the credential's tenant")]
    TenantMismatch,
    /// Authenticated, but the principal's roles do not allow this.
    #[error("the principal's roles do not allow this action")]
    Forbidden,
    /// No such resource, or not this tenant's.
    #[error("the resource does not exist")]
    NotFound,
    /// The method is not allowed on this path.
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    /// A conflicting resource exists.
    #[error("{0}")]
    Conflict(String),
    /// The resource is not in a state that allows this (409 with its own
    /// code: `approval_decided`, `approval_mismatch`, `thread_paused`).
    #[error("{message}")]
    State {
        /// Stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the server accepts.
    #[error("the request body is too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// The body is not JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The request took longer than the server allows.
    #[error("the request did not complete within {0} seconds")]
    Timeout(u64),
    /// A dependency (store) is unavailable.
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
    /// The tenant disabled the agent.
    #[error("{0}")]
    AgentDisabled(String),
    /// The request would take a tenant's data out of its region.
    #[error("{0}")]
    Residency(String),
    /// The run has already ended.
    #[error("the run has already ended")]
    RunFinished,
    /// The agent's prompt could not be rendered with the tenant's settings.
    #[error("{0}")]
    Prompt(String),
    /// A knowledge request was refused (`code` from the knowledge layer).
    #[error("{message}")]
    Knowledge {
        /// Stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// A tenant's policies do not parse or validate (the validator's message).
    #[error("{0}")]
    InvalidPolicy(String),
    /// Over one of the tenant's limits: 429 with `Retry-After` (503 when
    /// the limit counters cannot be reached).
    #[error("{0}")]
    Limited(bulkhead_quota::Refusal),
    /// Too many failed authentications from this credential or address in
    /// the current minute: 429 `rate_limited` with `Retry-After`.
    #[error("too many failed authentications from this credential or address; retry in {0} s")]
    AuthThrottled(u64),
}

impl ApiError {
    /// The entry of the code table this error answers with: its code,
    /// status and title.
    pub fn error_code(&self) -> ErrorCode {
        use bulkhead_quota::Refusal;
        match self {
            ApiError::InvalidBody(_) => codes::INVALID_BODY,
            ApiError::InvalidParameter(_) => codes::INVALID_PARAMETER,
            ApiError::Validation(_) => codes::VALIDATION_FAILED,
            ApiError::Unauthenticated => codes::UNAUTHENTICATED,
            ApiError::TenantSuspended => codes::TENANT_SUSPENDED,
            ApiError::TenantMismatch => codes::TENANT_MISMATCH,
            ApiError::Forbidden => codes::FORBIDDEN,
            ApiError::NotFound => codes::NOT_FOUND,
            ApiError::MethodNotAllowed => codes::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => codes::CONFLICT,
            ApiError::State { code, .. } | ApiError::Knowledge { code, .. } => *code,
            ApiError::PayloadTooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => codes::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout(_) => codes::TIMEOUT,
            ApiError::Unavailable => codes::UNAVAILABLE,
            ApiError::Internal(_) => codes::INTERNAL,
            ApiError::AgentDisabled(_) => codes::AGENT_DISABLED,
            ApiError::Residency(_) => codes::RESIDENCY_VIOLATION,
            ApiError::RunFinished => codes::RUN_FINISHED,
            ApiError::Prompt(_) => codes::PROMPT_ERROR,
            ApiError::InvalidPolicy(_) => codes::INVALID_POLICY,
            ApiError::Limited(Refusal::RateLimited { .. }) | ApiError::AuthThrottled(_) => {
                codes::RATE_LIMITED
            }
            ApiError::Limited(Refusal::ConcurrencyLimited { .. }) => codes::CONCURRENCY_LIMITED,
            ApiError::Limited(Refusal::BudgetExceeded { .. }) => codes::BUDGET_EXCEEDED,
            ApiError::Limited(Refusal::Unavailable(_)) => codes::LIMITS_UNAVAILABLE,
        }
    }

    /// The HTTP status. Every code an `ApiError` can carry has one (a
    /// server test checks); a code without one would be a bug, answered
    /// as a 500.
    pub fn status(&self) -> StatusCode {
        self.error_code()
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        self.error_code().code
    }

    fn title(&self) -> &'static str {
        self.error_code().title
    }
}

impl From<bulkhead_vault::VaultError> for ApiError {
    fn from(e: bulkhead_vault::VaultError) -> Self {
        use bulkhead_vault::VaultError;
        match e {
            VaultError::NotFound => ApiError::NotFound,
            VaultError::Conflict => {
                ApiError::Conflict("the credential changed concurrently; retry".into())
            }
            VaultError::NeedsReauth => {
                ApiError::Conflict("the credential needs new tokens from a tenant admin".into())
            }
            // The configured provider cannot do this (`kms rotate` on
            // aws-kms); the message tells the operator what to do instead.
            VaultError::Kms(bulkhead_vault::KmsError::Unsupported(m)) => ApiError::Conflict(m),
            VaultError::Kms(k) => {
                tracing::error!(error = %k, "key provider failure");
                ApiError::Unavailable
            }
            VaultError::Integrity => {
                ApiError::Internal("a stored credential failed its integrity check".into())
            }
            VaultError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<bulkhead_agent::AgentError> for ApiError {
    fn from(e: bulkhead_agent::AgentError) -> Self {
        use bulkhead_agent::AgentError;
        match e {
            AgentError::UnknownAgent(_) | AgentError::NotFound => ApiError::NotFound,
            AgentError::Disabled(_) => ApiError::AgentDisabled(e.to_string()),
            AgentError::Residency(m) => ApiError::Residency(m),
            AgentError::Invalid(m) => ApiError::Validation(m),
            AgentError::Finished => ApiError::RunFinished,
            AgentError::Prompt(m) => ApiError::Prompt(m),
            AgentError::Store(s) => ApiError::Internal(s.to_string()),
            AgentError::Config(m) | AgentError::Internal(m) => ApiError::Internal(m),
            AgentError::Limited(r) => ApiError::Limited(r),
            AgentError::Decided(_) => ApiError::state(codes::APPROVAL_DECIDED, &e),
            AgentError::Mismatch(_) => ApiError::state(codes::APPROVAL_MISMATCH, &e),
            AgentError::ThreadPaused => ApiError::state(codes::THREAD_PAUSED, &e),
            AgentError::InProgress => ApiError::state(codes::RUN_IN_PROGRESS, &e),
        }
    }
}

impl ApiError {
    /// A 409 with its own code, saying what `e` says.
    fn state(code: ErrorCode, e: &impl std::fmt::Display) -> Self {
        ApiError::State {
            code,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Internal(m) => ApiError::Internal(m),
            StoreError::Backend(e) => ApiError::Internal(e.to_string()),
            StoreError::Quota(message) => ApiError::Knowledge {
                code: codes::STORAGE_QUOTA_EXCEEDED,
                message,
            },
        }
    }
}

/// The problem body (RFC 9457) with bulkhead's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:bulkhead:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// The request id (also in the `X-Request-ID` header).
    pub request_id: String,
}

/// The OpenAPI response components of the errors: one per status an
/// [`ApiError`] maps to, each an `application/problem+json` [`Problem`].
/// A handler's `#[utoipa::path]` lists those it can return
/// (`(status = 404, response = problems::NotFound)`), so the document
/// names every error status with its content type and schema.
pub mod problems {
    use std::collections::BTreeMap;

    use utoipa::openapi::response::Response;
    use utoipa::openapi::{Ref, RefOr};
    use utoipa::{IntoResponses, ToResponse};

    use super::Problem;

    /// References to the response components, by status.
    fn refs<const N: usize>(list: [(u16, &str); N]) -> BTreeMap<String, RefOr<Response>> {
        list.into_iter()
            .map(|(status, name)| {
                (
                    status.to_string(),
                    RefOr::Ref(Ref::from_response_name(name)),
                )
            })
            .collect()
    }

    /// The component name of a response, as the document lists it.
    fn name<'a, T: ToResponse<'a>>() -> &'a str {
        T::response().0
    }

    /// What [`crate::extract::TenantCtx`] refuses a request with: no valid
    /// credential (401), a suspended tenant or a mismatched `X-Tenant-ID`
    /// (403), too many failures or requests (429), an unreachable store or
    /// limit counters (503). Handlers add 403 `forbidden` themselves.
    pub struct TenantAuth;

    impl IntoResponses for TenantAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            refs([
                (401, name::<Unauthorized>()),
                (403, name::<Forbidden>()),
                (429, name::<TooManyRequests>()),
                (503, name::<ServiceUnavailable>()),
            ])
        }
    }

    /// What [`crate::extract::OperatorCtx`] refuses a request with: no
    /// valid operator token (401), too many failures (429).
    pub struct OperatorAuth;

    impl IntoResponses for OperatorAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            refs([
                (401, name::<Unauthorized>()),
                (429, name::<TooManyRequests>()),
            ])
        }
    }

    /// What [`crate::extract::Json`] refuses a body with: not JSON of the
    /// schema (400), too large (413), not `application/json` (415).
    pub struct JsonBody;

    impl IntoResponses for JsonBody {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            refs([
                (400, name::<BadRequest>()),
                (413, name::<PayloadTooLarge>()),
                (415, name::<UnsupportedMediaType>()),
            ])
        }
    }

    /// The request middleware's answer past `server.request_timeout_s`
    /// (every route but run creation and chat completions).
    pub struct Timeout;

    impl IntoResponses for Timeout {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            refs([(504, name::<GatewayTimeout>())])
        }
    }

    /// `invalid_body`, `invalid_parameter`, `validation_failed` or
    /// `invalid_policy`: the request is malformed or a value is not
    /// acceptable (the knowledge layer's own codes too).
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct BadRequest(pub Problem);

    /// `unauthenticated`: no valid credential.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    pub struct Unauthorized(pub Problem);

    /// `forbidden`, `tenant_suspended`, `tenant_mismatch`,
    /// `residency_violation` or `storage_quota_exceeded`.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Forbidden(pub Problem);

    /// `not_found`: no such resource, or not the caller's.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct NotFound(pub Problem);

    /// `conflict` or a state code (`approval_decided`, `approval_mismatch`,
    /// `thread_paused`, `run_in_progress`, `run_finished`,
    /// `agent_disabled`, `isolation_unavailable`).
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Conflict(pub Problem);

    /// `payload_too_large` or `document_too_large`.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct PayloadTooLarge(pub Problem);

    /// `unsupported_media_type`: the body is not `application/json`.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct UnsupportedMediaType(pub Problem);

    /// `prompt_error`: the agent's prompt cannot be rendered with the
    /// tenant's settings.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct UnprocessableEntity(pub Problem);

    /// `rate_limited`, `budget_exceeded`, `concurrency_limited` or another
    /// limit's code; `Retry-After` says when to try again.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    pub struct TooManyRequests(pub Problem);

    /// `embedding_failed`: the embedding provider failed.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct BadGateway(pub Problem);

    /// `unavailable` or `limits_unavailable`: a dependency (the store, the
    /// key provider, the limit counters) cannot be reached.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct ServiceUnavailable(pub Problem);

    /// `timeout`: the request took longer than `server.request_timeout_s`.
    #[derive(utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct GatewayTimeout(pub Problem);
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = Problem {
            kind: self.error_code().problem_type(),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_owned(),
            request_id: current_request_id()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (status, bytes).into_response();
        // For the request middleware's per-tenant metrics and alerts.
        res.extensions_mut()
            .insert(crate::request::ProblemCode(self.code()));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            ApiError::Limited(r) => Some(r.retry_after_s()),
            ApiError::AuthThrottled(s) => Some(*s),
            _ => None,
        };
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_quota::Refusal;
    use bulkhead_vault::{KmsError, VaultError};

    /// Every variant answers with the status, code and title it answered
    /// with before they came from the code table (pinned here by hand, so
    /// a wrong table entry fails), and every code it can carry has a status.
    #[test]
    fn every_variant_answers_as_before() {
        let s = String::new;
        let cases: Vec<(ApiError, u16, &str, &str)> = vec![
            (
                ApiError::InvalidBody(s()),
                400,
                "invalid_body",
                "Invalid request body",
            ),
            (
                ApiError::InvalidParameter(s()),
                400,
                "invalid_parameter",
                "Invalid parameter",
            ),
            (
                ApiError::Validation(s()),
                400,
                "validation_failed",
                "Validation failed",
            ),
            (
                ApiError::Unauthenticated,
                401,
                "unauthenticated",
                "Unauthenticated",
            ),
            (
                ApiError::TenantSuspended,
                403,
                "tenant_suspended",
                "Tenant suspended",
            ),
            (
                ApiError::TenantMismatch,
                403,
                "tenant_mismatch",
                "Tenant mismatch",
            ),
            (ApiError::Forbidden, 403, "forbidden", "Forbidden"),
            (ApiError::NotFound, 404, "not_found", "Not found"),
            (
                ApiError::MethodNotAllowed,
                405,
                "method_not_allowed",
                "Method not allowed",
            ),
            (ApiError::Conflict(s()), 409, "conflict", "Conflict"),
            (
                ApiError::PayloadTooLarge(1),
                413,
                "payload_too_large",
                "Payload too large",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            (ApiError::Timeout(1), 504, "timeout", "Timeout"),
            (
                ApiError::Unavailable,
                503,
                "unavailable",
                "Service unavailable",
            ),
            (ApiError::Internal(s()), 500, "internal", "Internal error"),
            (
                ApiError::AgentDisabled(s()),
                409,
                "agent_disabled",
                "Agent disabled",
            ),
            (
                ApiError::Residency(s()),
                403,
                "residency_violation",
                "Residency violation",
            ),
            (
                ApiError::RunFinished,
                409,
                "run_finished",
                "Run already ended",
            ),
            (ApiError::Prompt(s()), 422, "prompt_error", "Prompt error"),
            (
                ApiError::InvalidPolicy(s()),
                400,
                "invalid_policy",
                "Invalid policy",
            ),
            (
                ApiError::AuthThrottled(3),
                429,
                "rate_limited",
                "Rate limited",
            ),
            (
                ApiError::Limited(Refusal::RateLimited {
                    what: "requests",
                    limit: 1,
                    retry_after_s: 1,
                }),
                429,
                "rate_limited",
                "Rate limited",
            ),
            (
                ApiError::Limited(Refusal::ConcurrencyLimited { limit: 1 }),
                429,
                "concurrency_limited",
                "Too many concurrent runs",
            ),
            (
                ApiError::Limited(Refusal::BudgetExceeded {
                    period: "daily",
                    budget: bulkhead_core::money::Usd::from_micros(1),
                    retry_after_s: 1,
                }),
                429,
                "budget_exceeded",
                "Budget exceeded",
            ),
            (
                ApiError::Limited(Refusal::Unavailable(s())),
                503,
                "limits_unavailable",
                "Limits unavailable",
            ),
        ];
        let state = [
            (codes::ISOLATION_UNAVAILABLE, "isolation_unavailable"),
            (codes::APPROVAL_DECIDED, "approval_decided"),
            (codes::APPROVAL_MISMATCH, "approval_mismatch"),
            (codes::THREAD_PAUSED, "thread_paused"),
            (codes::RUN_IN_PROGRESS, "run_in_progress"),
        ]
        .map(|(code, name)| {
            (
                ApiError::State { code, message: s() },
                409,
                name,
                "Conflict",
            )
        });
        let knowledge = [
            (codes::EMPTY_DOCUMENT, 400),
            (codes::INVALID_NAME, 400),
            (codes::INVALID_METADATA, 400),
            (codes::INVALID_FILTER, 400),
            (codes::DOCUMENT_TOO_LARGE, 413),
            (codes::STORAGE_QUOTA_EXCEEDED, 403),
            (codes::EMBEDDING_FAILED, 502),
        ]
        .map(|(code, status)| {
            (
                ApiError::Knowledge { code, message: s() },
                status,
                code.code,
                "Knowledge request refused",
            )
        });
        for (e, status, code, title) in cases.into_iter().chain(state).chain(knowledge) {
            assert_eq!(
                (e.status().as_u16(), e.code(), e.title()),
                (status, code, title),
                "{e:?}"
            );
            assert!(e.error_code().status.is_some(), "{e:?} has no status");
            assert_eq!(codes::ErrorCode::find(code), Some(&e.error_code()));
        }
    }

    /// The server answers an agent error with the code the agent runtime
    /// gives it (which a run's records and the agent's own tests use).
    #[test]
    fn agent_errors_keep_their_code_on_the_wire() {
        use bulkhead_agent::{AgentError, AgentStoreError, ApprovalStatus};
        let s = || "x".to_owned();
        let all = [
            AgentError::UnknownAgent(s()),
            AgentError::NotFound,
            AgentError::Disabled(s()),
            AgentError::Residency(s()),
            AgentError::Invalid(s()),
            AgentError::Finished,
            AgentError::Prompt(s()),
            AgentError::Store(AgentStoreError(s().into())),
            AgentError::Config(s()),
            AgentError::Limited(Refusal::ConcurrencyLimited { limit: 1 }),
            AgentError::Decided(ApprovalStatus::Denied),
            AgentError::Mismatch(s()),
            AgentError::ThreadPaused,
            AgentError::InProgress,
        ];
        for e in all {
            let code = e.error_code();
            let api = ApiError::from(e);
            assert_eq!(api.error_code(), code, "{api:?}");
        }
    }

    #[tokio::test]
    async fn the_problem_body_takes_type_and_title_from_the_table() {
        let res = ApiError::RunFinished.into_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["type"], "urn:bulkhead:problem:run_finished");
        assert_eq!(body["title"], "Run already ended");
        assert_eq!(body["status"], 409);
        assert_eq!(body["code"], "run_finished");
        assert_eq!(body["detail"], "the run has already ended");
    }

    #[test]
    fn an_unsupported_key_operation_is_a_conflict_that_says_why() {
        let e = ApiError::from(VaultError::Kms(KmsError::Unsupported(
            "enable automatic key rotation".into(),
        )));
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.to_string(), "enable automatic key rotation");
        let e = ApiError::from(VaultError::Kms(KmsError::Backend("down".into())));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
