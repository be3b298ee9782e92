//! OAuth2 refresh: the `refresh_token` grant (RFC 6749 §6).

use std::time::Duration;

use async_trait::async_trait;
use bulkhead_core::SecretString;
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

/// A failed refresh; the message never includes tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (e.g. `invalid_grant`).
    #[error("the token endpoint refused the refresh: {0}")]
    Rejected(String),
    /// The endpoint could not be reached or answered nonsense.
    #[error("the token endpoint failed: {0}")]
    Transport(String),
}

/// Performs refreshes (an HTTP client in production, a fake in tests).
#[async_trait]
pub trait TokenRefresher: Send + Sync {
    /// Exchanges a refresh token for a new access token.
    async fn refresh(&self, req: RefreshRequest<'_>) -> Result<TokenGrant, RefreshError>;
}

/// The HTTP implementation, one pooled client for all refreshes.
pub struct HttpRefresher {
    client: reqwest::Client,
}

/// A token endpoint that takes longer than this is treated as failed; the
/// caller is waiting on an outbound request.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

impl HttpRefresher {
    /// Builds the client.
    pub fn new() -> Result<Self, RefreshError> {
        // reqwest is built without a default TLS crypto provider (one fewer
        // C library to compile); ring is the one the workspace already uses.
        // Installing is process-wide and a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(REFRESH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RefreshError::Transport(e.to_string()))?;
        Ok(Self { client })
    }
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
            .post(req.token_url)
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
            .map_err(|e| RefreshError::Transport(e.without_url().to_string()))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| RefreshError::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorResponse>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {}", status.as_u16()));
            // 4xx is the provider's answer about this grant; 5xx is an outage.
            return Err(if status.is_client_error() {
                RefreshError::Rejected(code)
            } else {
                RefreshError::Transport(code)
            });
        }
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
