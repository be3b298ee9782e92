//! Calls to providers: one pooled HTTP client, per-provider concurrency
//! caps, timeouts, and retries with jittered backoff on 429 and 5xx that
//! honour `Retry-After`.

use std::time::Duration;

use bulkhead_core::config::ProviderKind;
use bulkhead_core::{Deadline, SecretString};
use serde_json::Value;

use crate::catalog::Provider;
use crate::error::GatewayError;

/// Anthropic API version header value this gateway speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The longest `Retry-After` we wait out ourselves; longer ones go back to
/// the client as a 429, since holding the request would tie up a
/// connection for no gain.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// First backoff step; doubled per attempt, then jittered ±50 %.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Most bytes of an error answer read for its message; the rest is left
/// unread (the connection is closed, not drained).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why [`read_capped`] stopped.
#[derive(Debug)]
pub enum ReadError {
    /// More than the cap arrived (or was announced); carries the bytes
    /// received before it stopped, for billing.
    TooLarge(usize),
    /// The provider stopped sending for longer than the timeout.
    Timeout,
    /// The connection failed.
    Failed(String),
}

/// Reads a response body incrementally, refusing it as soon as it passes
/// `max` bytes (or announces more in `Content-Length`) so memory never
/// holds more than `max`; `timeout` bounds the whole read.
pub async fn read_capped(
    mut res: reqwest::Response,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ReadError> {
    if res.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge(0));
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| ReadError::Failed(e.without_url().to_string()))?
        {
            if buf.len() + chunk.len() > max {
                return Err(ReadError::TooLarge(buf.len() + chunk.len()));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ReadError::Timeout)?
}

/// Which provider operation a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Chat completions (or Anthropic messages).
    Chat,
    /// OpenAI-compatible embeddings.
    Embeddings,
}

/// The shared HTTP client (cheap to clone: one connection pool).
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        u16::MAX / 2
    };
    // 0.5× … 1.5×
    d.mul_f64(0.5 + f64::from(r) / f64::from(u16::MAX))
}

fn retry_after(res: &reqwest::Response) -> Option<u64> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Seconds of a timeout, rounded up (a 200 ms budget is "1 second").
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The provider's error message, from either wire format, without echoing
/// anything but the message itself.
pub fn error_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(|m| m.chars().take(300).collect())
        .unwrap_or_else(|| "no error message".to_owned())
}

impl Upstream {
    /// Builds the client (connection pooling across all providers).
    pub fn new() -> Result<Self, GatewayError> {
        // reqwest is built without a default TLS provider; ring is the
        // workspace's. A second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        #[expect(
            clippy::disallowed_methods,
            reason = "the gateway's one pooled provider client: provider URLs are the operator's catalog, not tenant-aimed, so they bypass the egress guard (docs/ARCHITECTURE.md)"
        )]
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        Ok(Self { client })
    }

    /// Sends `body` to the provider and returns a successful response
    /// (headers received). Retries 429, 5xx and connection failures — not
    /// timeouts: a provider that did not answer in time is not asked again.
    /// Each attempt waits at most the provider's `timeout_s`, cut to what
    /// is left of `deadline`; no retry starts, and no backoff is slept,
    /// past it.
    pub async fn send(
        &self,
        provider: &Provider,
        endpoint: Endpoint,
        upstream_model: &str,
        key: Option<&SecretString>,
        body: &Value,
        deadline: Option<Deadline>,
    ) -> Result<reqwest::Response, GatewayError> {
        let op = match endpoint {
            Endpoint::Chat => "chat/completions",
            Endpoint::Embeddings => "embeddings",
        };
        let url = match provider.kind {
            ProviderKind::Openai => format!("{}/{op}", provider.base_url),
            ProviderKind::Anthropic => format!("{}/v1/messages", provider.base_url),
            // The deployment is a path segment: encoded, it cannot change the path.
            ProviderKind::AzureOpenai => format!(
                "{}/openai/deployments/{}/{op}?api-version={}",
                provider.base_url,
                url_segment(upstream_model),
                provider.api_version.as_deref().unwrap_or_default()
            ),
        };
        let mut attempt = 0;
        loop {
            let mut req = self.client.post(&url).json(body);
            match (provider.kind, key) {
                (ProviderKind::Openai, Some(k)) => req = req.bearer_auth(k.expose()),
                (ProviderKind::AzureOpenai, Some(k)) => req = req.header("api-key", k.expose()),
                (ProviderKind::Anthropic, Some(k)) => req = req.header("x-api-key", k.expose()),
                (_, None) => {}
            }
            if provider.kind == ProviderKind::Anthropic {
                req = req.header("anthropic-version", ANTHROPIC_VERSION);
            }
            // The call joins the caller's trace (W3C Trace Context).
            if let Some(tp) = bulkhead_telemetry::traceparent() {
                req = req.header("traceparent", tp);
            }
            let budget = Deadline::cap(deadline, provider.timeout);
            if budget.is_zero() {
                return Err(GatewayError::UpstreamTimeout(0));
            }
            let outcome = tokio::time::timeout(budget, req.send()).await;
            let (retryable, wait, err) = match outcome {
                Err(_) => (
                    false,
                    None,
                    GatewayError::UpstreamTimeout(whole_secs(budget)),
                ),
                Ok(Err(e)) if e.is_timeout() => (
                    false,
                    None,
                    GatewayError::UpstreamTimeout(whole_secs(budget)),
                ),
                Ok(Err(e)) => (
                    e.is_connect(),
                    None,
                    GatewayError::Upstream(e.without_url().to_string()),
                ),
                Ok(Ok(res)) if res.status().is_success() => return Ok(res),
                Ok(Ok(res)) => {
                    let status = res.status();
                    let after = retry_after(&res);
                    let body = read_capped(
                        res,
                        MAX_ERROR_BODY,
                        Deadline::cap(deadline, provider.timeout),
                    )
                    .await
                    .ok();
                    let message = body.as_deref().map(error_message).unwrap_or_default();
                    if status.as_u16() == 429 {
                        (
                            true,
                            after,
                            GatewayError::UpstreamRateLimited { retry_after: after },
                        )
                    } else if status.is_server_error() {
                        (
                            true,
                            after,
                            GatewayError::Upstream(format!("HTTP {}: {message}", status.as_u16())),
                        )
                    } else {
                        (
                            false,
                            None,
                            GatewayError::Upstream(format!("HTTP {}: {message}", status.as_u16())),
                        )
                    }
                }
            };
            if !retryable || attempt >= provider.max_retries {
                return Err(err);
            }
            let backoff = match wait {
                Some(s) if Duration::from_secs(s) > MAX_RETRY_WAIT => return Err(err),
                Some(s) => Duration::from_secs(s),
                None => jitter(BACKOFF_BASE * 2u32.pow(attempt)),
            };
            // A retry that could not start before the deadline is not made.
            if deadline.is_some_and(|d| d.remaining() <= backoff) {
                return Err(err);
            }
            tracing::info!(provider = %provider.name, attempt, wait_ms = backoff.as_millis() as u64, error = %err, "retrying the model provider");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}
