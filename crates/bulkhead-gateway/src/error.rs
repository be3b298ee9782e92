//! Gateway errors, each with the OpenAI error `type` and `code` the
//! OpenAI-compatible endpoints answer with.

use bulkhead_core::codes::{self, ErrorCode};

/// Why a model call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Unknown model, or one the tenant may not use (indistinguishable).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// No stored response of this id for this tenant (the field is the
    /// request member that named it, when one did).
    #[error("Response with id '{id}' not found.")]
    ResponseNotFound {
        /// The id asked for.
        id: String,
        /// `previous_response_id`, or none for a path.
        param: Option<&'static str>,
    },
    /// The model's provider is outside the tenant's region.
    #[error(
        "model `{model}` is served from region `{provider_region}`, but this tenant's data must stay in region `{tenant_region}`"
    )]
    Residency {
        /// Model alias.
        model: String,
        /// Provider region.
        provider_region: String,
        /// Tenant region.
        tenant_region: String,
    },
    /// The request body is not a valid chat completion request.
    #[error("{0}")]
    InvalidRequest(String),
    /// A message of the request is malformed (the field is its `param`).
    #[error(transparent)]
    InvalidMessage(#[from] crate::validate::InvalidMessage),
    /// The tenant has not stored the credential this provider needs.
    #[error("this model uses the tenant's own key, and connection `{0}` has no usable credential")]
    MissingCredential(String),
    /// The upstream kept answering 429.
    #[error("the model provider is rate limiting; retry later")]
    UpstreamRateLimited {
        /// Seconds to wait, from the provider.
        retry_after: Option<u64>,
    },
    /// The upstream did not answer in time.
    #[error("the model provider did not answer within {0} seconds")]
    UpstreamTimeout(u64),
    /// The upstream answered with an error or nonsense.
    #[error("the model provider failed: {0}")]
    Upstream(String),
    /// The upstream's answer grew past the provider's `max_response_bytes`.
    #[error("the model provider's answer exceeded {0} bytes and was refused")]
    UpstreamTooLarge(usize),
    /// A bug or a store failure.
    #[error("internal error")]
    Internal(String),
    /// The request carried another tenant's canary: blocked and reported.
    #[error(
        "The request was blocked: it carried data of another organisation. The incident has been reported."
    )]
    CrossTenantLeak,
    /// Over one of the tenant's limits (rate, concurrency, budget).
    #[error("{0}")]
    Limited(bulkhead_quota::Refusal),
}

impl GatewayError {
    /// The entry of the code table this error answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            GatewayError::ModelNotFound(_) => codes::MODEL_NOT_FOUND,
            GatewayError::ResponseNotFound { .. } => codes::RESPONSE_NOT_FOUND,
            GatewayError::Residency { .. } => codes::RESIDENCY_VIOLATION,
            GatewayError::InvalidRequest(_) | GatewayError::InvalidMessage(_) => {
                codes::INVALID_REQUEST
            }
            GatewayError::MissingCredential(_) => codes::MISSING_CREDENTIAL,
            GatewayError::UpstreamRateLimited { .. } => codes::RATE_LIMIT_EXCEEDED,
            GatewayError::UpstreamTimeout(_) => codes::UPSTREAM_TIMEOUT,
            GatewayError::Upstream(_) => codes::UPSTREAM_ERROR,
            GatewayError::UpstreamTooLarge(_) => codes::UPSTREAM_TOO_LARGE,
            GatewayError::Internal(_) => codes::INTERNAL,
            GatewayError::CrossTenantLeak => codes::CROSS_TENANT_LEAK,
            GatewayError::Limited(r) => r.error_code(),
        }
    }

    /// HTTP status. Every code a `GatewayError` carries has one (a test
    /// checks); one without would be a bug, answered as a 500.
    pub fn status(&self) -> u16 {
        self.error_code().status.unwrap_or(500)
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::ModelNotFound(_)
            | GatewayError::ResponseNotFound { .. }
            | GatewayError::InvalidRequest(_)
            | GatewayError::InvalidMessage(_)
            | GatewayError::MissingCredential(_) => "invalid_request_error",
            GatewayError::Residency { .. } => "permission_error",
            GatewayError::UpstreamRateLimited { .. } => "rate_limit_error",
            GatewayError::UpstreamTimeout(_)
            | GatewayError::Upstream(_)
            | GatewayError::UpstreamTooLarge(_) => "upstream_error",
            GatewayError::Internal(_) => "server_error",
            GatewayError::CrossTenantLeak => "permission_error",
            GatewayError::Limited(bulkhead_quota::Refusal::BudgetExceeded { .. }) => {
                "insufficient_quota"
            }
            GatewayError::Limited(bulkhead_quota::Refusal::Unavailable(_)) => "server_error",
            GatewayError::Limited(_) => "rate_limit_error",
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        self.error_code().code
    }

    /// The request field at fault (OpenAI's `param`), when one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidMessage(m) => Some(&m.param),
            GatewayError::ResponseNotFound { param, .. } => *param,
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::UpstreamRateLimited { retry_after } => *retry_after,
            GatewayError::Limited(r) => Some(r.retry_after_s()),
            _ => None,
        }
    }

    /// The status recorded in the usage row for a failed call.
    pub fn usage_status(&self) -> &'static str {
        match self {
            GatewayError::UpstreamRateLimited { .. } => "upstream_rate_limited",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::UpstreamTooLarge(_) => "upstream_too_large",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_quota::Refusal;

    /// Every variant answers with the status and code it answered with
    /// before they came from the code table (pinned here by hand), and
    /// each is the table's entry for that code.
    #[test]
    fn every_variant_answers_as_before() {
        let s = String::new;
        let cases = [
            (GatewayError::ModelNotFound(s()), 404, "model_not_found"),
            (
                GatewayError::ResponseNotFound {
                    id: s(),
                    param: None,
                },
                404,
                "response_not_found",
            ),
            (
                GatewayError::Residency {
                    model: s(),
                    provider_region: s(),
                    tenant_region: s(),
                },
                403,
                "residency_violation",
            ),
            (GatewayError::InvalidRequest(s()), 400, "invalid_request"),
            (
                GatewayError::InvalidMessage(crate::validate::InvalidMessage {
                    param: s(),
                    reason: s(),
                }),
                400,
                "invalid_request",
            ),
            (
                GatewayError::MissingCredential(s()),
                400,
                "missing_credential",
            ),
            (
                GatewayError::UpstreamRateLimited { retry_after: None },
                429,
                "rate_limit_exceeded",
            ),
            (GatewayError::UpstreamTimeout(1), 504, "upstream_timeout"),
            (GatewayError::Upstream(s()), 502, "upstream_error"),
            (GatewayError::UpstreamTooLarge(1), 502, "upstream_too_large"),
            (GatewayError::Internal(s()), 500, "internal"),
            (GatewayError::CrossTenantLeak, 403, "cross_tenant_leak"),
            (
                GatewayError::Limited(Refusal::RateLimited {
                    what: "tokens",
                    limit: 1,
                    retry_after_s: 1,
                }),
                429,
                "rate_limited",
            ),
            (
                GatewayError::Limited(Refusal::ConcurrencyLimited { limit: 1 }),
                429,
                "concurrency_limited",
            ),
            (
                GatewayError::Limited(Refusal::BudgetExceeded {
                    period: "monthly",
                    budget: bulkhead_core::money::Usd::from_micros(1),
                    retry_after_s: 1,
                }),
                429,
                "budget_exceeded",
            ),
            (
                GatewayError::Limited(Refusal::Unavailable(s())),
                503,
                "limits_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e:?}");
            assert_eq!(ErrorCode::find(code), Some(&e.error_code()));
        }
    }
}
