//! OAuth2 refresh: the `refresh_token` grant (RFC 6749 §6).

use std::time::Duration;

use async_trait::async_trait;
use bulkhead_core::SecretString;
use bulkhead_egress::{ClientOptions, Egress, EgressError, GuardedClient, Redirects};
use serde::Deserialize;

/// What a refresh needs.
pub struct RefreshRequest<'a> {
    /// Token endpoint.
    pub token_url: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Client secret, sent with HTTP basic authentication when present.
    pub client_secret: Option<&'a SecretString>,
    /// The refresh token.
    pub refresh_token: &'a SecretString,
    /// Scope to request.
    pub scope: Option<&'a str>,
}

/// A successful refresh.
pub struct TokenGrant {
    /// New access token.
    pub access_token: SecretString,
    /// New refresh token, when the provider rotates them.
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token in seconds.
    pub expires_in: Option<u64>,
}

/// A failed refresh. Neither the message nor the `Debug` form ever
/// includes a token or any part of the endpoint's answer body: the
/// endpoint is aimed by a tenant, and an error is shown to the tenant.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The endpoint refused the refresh (4xx); `error` is its OAuth2
    /// error code when it is one RFC 6749 §5.2 registers, never free text.
    #[error("the token endpoint refused the refresh (HTTP {status}{})", error.map(|e| format!(", {e}")).unwrap_or_default())]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The registered error code, when the answer carried one.
        error: Option<&'static str>,
    },
    /// The endpoint answered a status that is neither success nor a
    /// refusal (5xx, or a redirect, which is not followed).
    #[error("the token endpoint failed (HTTP {status})")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The endpoint could not be reached or answered nonsense (a fixed
    /// description, never the answer).
    #[error("the token endpoint failed: {0}")]
    Transport(String),
    /// The egress guard refused the token URL (scheme, or an address
    /// outbound requests may not reach); nothing was sent.
    #[error("the token endpoint was not contacted: {0}")]
    Refused(#[from] EgressError),
}

impl RefreshError {
    /// A stable code for audit events and the tenant.
    pub fn code(&self) -> &'static str {
        match self {
            RefreshError::Rejected { .. } => "refresh_rejected",
            RefreshError::Status { .. } | RefreshError::Transport(_) => "refresh_failed",
            RefreshError::Refused(e) => e.code(),
        }
    }

    /// The endpoint's HTTP status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RefreshError::Rejected { status, .. } | RefreshError::Status { status } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// Performs refreshes (an HTTP client in production, a fake in tests).
#[async_trait]
pub trait TokenRefresher: Send + Sync {
    /// Exchanges a refresh token for a new access token.
    async fn refresh(&self, req: RefreshRequest<'_>) -> Result<TokenGrant, RefreshError>;
}

/// The HTTP implementation, one pooled client for all refreshes, behind
/// the egress guard: the token URL is the tenant's, so every request (and
/// every address its name resolves to) is checked, and no redirect is
/// followed (it would carry the client secret and refresh token along).
pub struct HttpRefresher {
    client: GuardedClient,
}

/// A token endpoint that takes longer than this is treated as failed; the
/// caller is waiting on an outbound request.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

/// A token response is a few hundred bytes; more is read no further (an
/// endpoint aimed by a tenant could stream without end).
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// RFC 6749 §5.2's error codes: the only text of an error answer that is
/// kept, so an endpoint cannot pass its own words back to the tenant.
const OAUTH_ERRORS: [&str; 6] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

impl HttpRefresher {
    /// Builds the client behind `egress`.
    pub fn new(egress: &Egress) -> Result<Self, RefreshError> {
        let client = egress
            .client(ClientOptions {
                timeout: Some(REFRESH_TIMEOUT),
                redirects: Redirects::None,
                ..ClientOptions::default()
            })
            .map_err(|e| RefreshError::Transport(e.without_url().to_string()))?;
        Ok(Self { client })
    }
}

/// The refusal inside a reqwest failure, or a transport error.
fn request_error(e: reqwest::Error) -> RefreshError {
    match Egress::refusal(&e) {
        Some(refusal) => RefreshError::Refused(refusal.clone()),
        None => RefreshError::Transport(e.without_url().to_string()),
    }
}

/// Reads at most `MAX_TOKEN_RESPONSE_BYTES` of the body; `None` past it.
async fn read_capped(mut res: reqwest::Response) -> Result<Option<Vec<u8>>, RefreshError> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(request_error)? {
        if out.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, part) in [k, v].iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in part.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

#[async_trait]
impl TokenRefresher for HttpRefresher {
    async fn refresh(&self, req: RefreshRequest<'_>) -> Result<TokenGrant, RefreshError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", req.refresh_token.expose()),
        ];
        if let Some(scope) = req.scope {
            form.push(("scope", scope));
        }
        let mut builder = self
            .client
            .request_str(reqwest::Method::POST, req.token_url)?
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        match req.client_secret {
            Some(secret) => builder = builder.basic_auth(req.client_id, Some(secret.expose())),
            None => form.push(("client_id", req.client_id)),
        }
        let res = builder
            .body(form_encode(&form))
            .send()
            .await
            .map_err(request_error)?;
        let status = res.status();
        let bytes = read_capped(res).await?;
        if !status.is_success() {
            // Only a registered code survives: the rest of the answer is
            // the endpoint's, and the endpoint may be anything.
            let error = bytes
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorResponse>(b).ok())
                .and_then(|e| OAUTH_ERRORS.iter().copied().find(|c| *c == e.error));
            // 4xx is the provider's answer about this grant; 5xx is an
            // outage, and a redirect is not followed.
            return Err(if status.is_client_error() {
                RefreshError::Rejected {
                    status: status.as_u16(),
                    error,
                }
            } else {
                RefreshError::Status {
                    status: status.as_u16(),
                }
            });
        }
        let Some(bytes) = bytes else {
            return Err(RefreshError::Transport("token response too large".into()));
        };
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| RefreshError::Transport("malformed token response".into()))?;
        if token.access_token.is_empty() {
            return Err(RefreshError::Transport("empty access token".into()));
        }
        Ok(TokenGrant {
            access_token: SecretString::new(token.access_token.clone()),
            refresh_token: token.refresh_token.clone().map(SecretString::new),
            expires_in: token.expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_everything_outside_unreserved() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "a b+c/=&")
            ]),
            "grant_type=refresh_token&refresh_token=a%20b%2Bc%2F%3D%26"
        );
    }
}
