//! Fetching the JWKS documents of `[[auth.jwt]]` issuers with a
//! `jwks_url`: once at boot (a failure is a boot error naming the key), then
//! in the background as each document's `Cache-Control: max-age` (clamped
//! to the issuer's bounds) runs out, and on demand — rate-limited by
//! `bulkhead_auth::RemoteJwks::claim_refetch` — when a token names a `kid`
//! the issuer does not have, so an identity provider's key rotation needs
//! no restart. A failed fetch keeps the last good keys.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_auth::{JwksRefresh, RemoteJwks};

/// The longest JWKS document accepted; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// One deadline for connecting, sending and reading a document.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP side of remote key sets.
#[derive(Clone)]
pub struct JwksFetcher {
    client: reqwest::Client,
}

/// A fetch that did not produce usable keys; the message names the key
/// path and the URL, never a token.
#[derive(Debug, thiserror::Error)]
#[error("{key_path}: cannot use the JWKS at {url}: {message}")]
pub struct JwksFetchError {
    key_path: String,
    url: String,
    message: String,
}

impl JwksFetcher {
    /// A client without redirects (a document is fetched where the
    /// configuration says, nowhere else).
    pub fn new() -> Result<Self, String> {
        // reqwest is built without a default TLS crypto provider; ring is
        // the one the rest of the binary uses. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?;
        Ok(Self { client })
    }

    /// Fetches and installs one issuer's document; returns when to fetch
    /// it next. On error the issuer's keys are unchanged.
    pub async fn fetch(&self, remote: &RemoteJwks) -> Result<Duration, JwksFetchError> {
        let fail = |message: String| JwksFetchError {
            key_path: remote.key_path().to_owned(),
            url: remote.url().to_owned(),
            message,
        };
        let mut response = self
            .client
            .get(remote.url())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(fail(format!("answered {}", response.status())));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(bulkhead_auth::jwks::cache_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(fail(format!(
                    "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let n = remote.install(&body).map_err(fail)?;
        tracing::debug!(issuer = remote.issuer(), keys = n, "JWKS fetched");
        Ok(remote.refresh_after(max_age))
    }

    /// Keeps every remote issuer's keys fresh until the runtime stops:
    /// each fetches again when its document expires, or after its lower
    /// bound when a fetch failed (the last good keys stay meanwhile).
    pub fn spawn_refresh(&self, remotes: Vec<(Arc<RemoteJwks>, Duration)>) {
        for (remote, first_wait) in remotes {
            let fetcher = self.clone();
            tokio::spawn(async move {
                let mut wait = first_wait;
                loop {
                    tokio::time::sleep(wait).await;
                    wait = match fetcher.fetch(&remote).await {
                        Ok(next) => next,
                        Err(e) => {
                            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
                            remote.retry_after_failure()
                        }
                    };
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl JwksRefresh for JwksFetcher {
    async fn refetch(&self, remote: &RemoteJwks) {
        if let Err(e) = self.fetch(remote).await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; keeping the last good keys");
        }
    }
}
