//! The one API error type, and the table of stable error codes.
//!
//! Every failure a client can see is an [`ApiError`]; each variant maps to
//! one HTTP status and one stable `code` (documented in `docs/errors.md`).
//! Bodies are `application/problem+json` (RFC 9457) and carry the request
//! id. 5xx bodies never include internal details; those go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
        code: &'static str,
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
        code: &'static str,
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
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidBody(_) | ApiError::InvalidParameter(_) | ApiError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::TenantSuspended | ApiError::TenantMismatch | ApiError::Forbidden => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::State { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::AgentDisabled(_) | ApiError::RunFinished => StatusCode::CONFLICT,
            ApiError::Residency(_) => StatusCode::FORBIDDEN,
            ApiError::Prompt(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidPolicy(_) => StatusCode::BAD_REQUEST,
            ApiError::Limited(bulkhead_quota::Refusal::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Limited(_) | ApiError::AuthThrottled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Knowledge { code, .. } => match *code {
                "document_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                "storage_quota_exceeded" => StatusCode::FORBIDDEN,
                "embedding_failed" => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidParameter(_) => "invalid_parameter",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::TenantSuspended => "tenant_suspended",
            ApiError::TenantMismatch => "tenant_mismatch",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::State { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Timeout(_) => "timeout",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::AgentDisabled(_) => "agent_disabled",
            ApiError::Residency(_) => "residency_violation",
            ApiError::RunFinished => "run_finished",
            ApiError::Prompt(_) => "prompt_error",
            ApiError::Knowledge { code, .. } => code,
            ApiError::Limited(r) => r.code(),
            ApiError::AuthThrottled(_) => "rate_limited",
            ApiError::InvalidPolicy(_) => "invalid_policy",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::InvalidBody(_) => "Invalid request body",
            ApiError::InvalidParameter(_) => "Invalid parameter",
            ApiError::Validation(_) => "Validation failed",
            ApiError::Unauthenticated => "Unauthenticated",
            ApiError::TenantSuspended => "Tenant suspended",
            ApiError::TenantMismatch => "Tenant mismatch",
            ApiError::Forbidden => "Forbidden",
            ApiError::NotFound => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Conflict(_) | ApiError::State { .. } => "Conflict",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Unavailable => "Service unavailable",
            ApiError::Internal(_) => "Internal error",
            ApiError::AgentDisabled(_) => "Agent disabled",
            ApiError::Residency(_) => "Residency violation",
            ApiError::RunFinished => "Run already ended",
            ApiError::Prompt(_) => "Prompt error",
            ApiError::Knowledge { .. } => "Knowledge request refused",
            ApiError::InvalidPolicy(_) => "Invalid policy",
            ApiError::Limited(bulkhead_quota::Refusal::BudgetExceeded { .. }) => "Budget exceeded",
            ApiError::Limited(bulkhead_quota::Refusal::ConcurrencyLimited { .. }) => {
                "Too many concurrent runs"
            }
            ApiError::Limited(bulkhead_quota::Refusal::Unavailable(_)) => "Limits unavailable",
            ApiError::Limited(_) | ApiError::AuthThrottled(_) => "Rate limited",
        }
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
            AgentError::Config(m) => ApiError::Internal(m),
            AgentError::Limited(r) => ApiError::Limited(r),
            AgentError::Decided(_)
            | AgentError::Mismatch(_)
            | AgentError::ThreadPaused
            | AgentError::InProgress => ApiError::State {
                code: e.code(),
                message: e.to_string(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Internal(m) => ApiError::Internal(m),
            StoreError::Quota(message) => ApiError::Knowledge {
                code: "storage_quota_exceeded",
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
            kind: format!("urn:bulkhead:problem:{}", self.code()),
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
    use bulkhead_vault::{KmsError, VaultError};

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
