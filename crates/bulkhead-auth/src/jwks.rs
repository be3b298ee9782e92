//! JWKS documents: parsing them into verification keys, and the state of
//! an issuer whose keys come from a `jwks_url`.
//!
//! This crate does no I/O: the HTTP fetch is the caller's (the server's
//! `jwks` module implements [`JwksRefresh`]). What lives here is what must
//! be the same for every caller: a fetched document replaces the issuer's
//! keys whole, or — when it is unusable — changes nothing (the last good
//! keys stay); how long a document is trusted (its `Cache-Control:
//! max-age`, clamped to the configured bounds); and how often a token with
//! an unknown `kid` may cause a refetch (at most once per interval, so
//! forged key ids cannot make bulkhead hammer the identity provider).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bulkhead_core::config::KeyFamily;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;

/// One verification key of an issuer.
pub(crate) struct IssuerKey {
    pub(crate) kid: Option<String>,
    pub(crate) family: KeyFamily,
    pub(crate) key: DecodingKey,
}

/// An issuer's current keys, swapped whole when a fetch succeeds.
pub(crate) type KeySet = Arc<Vec<IssuerKey>>;

/// Parses a JWKS document into keys. Refuses symmetric keys (a JWKS holds
/// public keys only), unusable keys and an empty set; the message says
/// which key.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<Vec<IssuerKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (k, jwk) in set.keys.iter().enumerate() {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {k} is unusable: {e}"))?;
        let family = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "key {k} is a symmetric key; a JWKS holds public keys only"
                ));
            }
        };
        keys.push(IssuerKey {
            kid: jwk.common.key_id.clone(),
            family,
            key,
        });
    }
    if keys.is_empty() {
        return Err("the document holds no keys".into());
    }
    Ok(keys)
}

/// How long a fetched document is trusted without a `max-age`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The `max-age` of a `Cache-Control` header value, or `Some(0)` for
/// `no-cache`/`no-store` (refresh as soon as the lower bound allows).
pub fn cache_max_age(header: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in header.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-cache" || directive == "no-store" {
            return Some(0);
        }
        if let Some(v) = directive.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
}

/// An issuer whose keys come from a URL: the keys the verifier uses, and
/// the bookkeeping of refreshing them.
pub struct RemoteJwks {
    issuer: String,
    url: String,
    key_path: String,
    keys: Arc<RwLock<KeySet>>,
    min_refresh: Duration,
    max_refresh: Duration,
    refetch_interval: Duration,
    last_refetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub(crate) fn new(
        issuer: &str,
        url: &str,
        key_path: String,
        keys: Arc<RwLock<KeySet>>,
        bounds: (Duration, Duration, Duration),
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            url: url.to_owned(),
            key_path,
            keys,
            min_refresh: bounds.0,
            max_refresh: bounds.1,
            refetch_interval: bounds.2,
            last_refetch: Mutex::new(None),
        }
    }

    /// The issuer (`iss`) these keys verify.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the document is fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration key, for errors (`auth.jwt[0].jwks_url`).
    pub fn key_path(&self) -> &str {
        &self.key_path
    }

    /// How many keys are in use now.
    pub fn key_count(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    /// Replaces the keys with a fetched document's. An unusable document
    /// changes nothing and says why: the last good keys stay in use.
    pub fn install(&self, document: &[u8]) -> Result<usize, String> {
        let keys = parse_jwks(document)?;
        let n = keys.len();
        let mut current = self
            .keys
            .write()
            .map_err(|_| "the key set lock is poisoned".to_owned())?;
        *current = Arc::new(keys);
        Ok(n)
    }

    /// When to fetch again after a successful fetch whose `Cache-Control`
    /// said `max_age` seconds: the configured bounds clamp it (an identity
    /// provider cannot make bulkhead poll every second, nor trust a
    /// document for a year).
    pub fn refresh_after(&self, max_age: Option<u64>) -> Duration {
        max_age
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TTL)
            .clamp(self.min_refresh, self.max_refresh)
    }

    /// When to try again after a failed fetch.
    pub fn retry_after_failure(&self) -> Duration {
        self.min_refresh
    }

    /// Whether a token naming an unknown `kid` may cause a fetch now: at
    /// most one per `refetch_interval` (claimed here, so concurrent
    /// requests with forged ids cause one fetch between them).
    pub fn claim_refetch(&self) -> bool {
        let Ok(mut last) = self.last_refetch.lock() else {
            return false;
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "the refetch rate limit measures elapsed time; the monotonic clock cannot jump"
        )]
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.refetch_interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// Fetches an issuer's JWKS again, now (the caller's HTTP client). Called
/// by the authenticator when a token names a `kid` the issuer does not
/// have and [`RemoteJwks::claim_refetch`] allowed it.
#[async_trait::async_trait]
pub trait JwksRefresh: Send + Sync {
    /// Fetches and installs the document; errors are logged by the
    /// implementation, and the last good keys stay.
    async fn refetch(&self, remote: &RemoteJwks);
}

#[cfg(test)]
mod tests {
    use super::cache_max_age;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(cache_max_age("public, max-age=600"), Some(600));
        assert_eq!(cache_max_age("max-age=\"60\", must-revalidate"), Some(60));
        assert_eq!(cache_max_age("no-store"), Some(0));
        assert_eq!(cache_max_age("public"), None);
        assert_eq!(cache_max_age("max-age=-1"), None);
    }
}
