//! Gateway errors, each with the OpenAI error `type` and `code` the
//! OpenAI-compatible endpoints answer with.

/// Why a model call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Unknown model, or one the tenant may not use (indistinguishable).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
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
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::ModelNotFound(_) => 404,
            GatewayError::Residency { .. } => 403,
            GatewayError::InvalidRequest(_)
            | GatewayError::InvalidMessage(_)
            | GatewayError::MissingCredential(_) => 400,
            GatewayError::UpstreamRateLimited { .. } => 429,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::Upstream(_) | GatewayError::UpstreamTooLarge(_) => 502,
            GatewayError::Internal(_) => 500,
            GatewayError::CrossTenantLeak => 403,
            GatewayError::Limited(bulkhead_quota::Refusal::Unavailable(_)) => 503,
            GatewayError::Limited(_) => 429,
        }
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::ModelNotFound(_)
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
        match self {
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::Residency { .. } => "residency_violation",
            GatewayError::InvalidRequest(_) | GatewayError::InvalidMessage(_) => "invalid_request",
            GatewayError::MissingCredential(_) => "missing_credential",
            GatewayError::UpstreamRateLimited { .. } => "rate_limit_exceeded",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::UpstreamTooLarge(_) => "upstream_too_large",
            GatewayError::Internal(_) => "internal",
            GatewayError::CrossTenantLeak => "cross_tenant_leak",
            GatewayError::Limited(r) => r.code(),
        }
    }

    /// The request field at fault (OpenAI's `param`), when one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidMessage(m) => Some(&m.param),
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
