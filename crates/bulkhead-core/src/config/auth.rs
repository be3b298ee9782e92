//! `[auth]`: trusted JWT issuers (keys, algorithm allow-lists, claims) and
//! the failed-authentication limits.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Trusted JWT issuers.
    #[serde(default)]
    pub jwt: Vec<JwtIssuerConfig>,
    /// Failed authentications one presented credential may cause in a
    /// minute; past it, that credential is refused with 429 before it is
    /// looked up, until the minute turns.
    #[serde(default = "default_failures_per_credential")]
    pub failures_per_minute_per_credential: u32,
    /// Failed authentications one peer address may cause in a minute; past
    /// it, its further failures answer 429 (its valid credentials are still
    /// served).
    #[serde(default = "default_failures_per_peer")]
    pub failures_per_minute_per_peer: u32,
}

/// A client retrying a just-revoked key a few times stays under it.
fn default_failures_per_credential() -> u32 {
    10
}

/// Many clients behind one NAT or proxy mistyping keys stay under it.
fn default_failures_per_peer() -> u32 {
    100
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt: Vec::new(),
            failures_per_minute_per_credential: default_failures_per_credential(),
            failures_per_minute_per_peer: default_failures_per_peer(),
        }
    }
}

/// JWT signing algorithms bulkhead accepts. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JwtAlgorithm {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSA PKCS#1 v1.5 SHA-256.
    RS256,
    /// RSA PKCS#1 v1.5 SHA-384.
    RS384,
    /// RSA PKCS#1 v1.5 SHA-512.
    RS512,
    /// RSA-PSS SHA-256.
    PS256,
    /// RSA-PSS SHA-384.
    PS384,
    /// RSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The key family an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// A shared HMAC secret.
    Hmac,
    /// An RSA public key.
    Rsa,
    /// An EC public key.
    Ec,
    /// An Ed25519 public key.
    Ed,
}

impl JwtAlgorithm {
    const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The key family the algorithm verifies with.
    pub fn family(self) -> KeyFamily {
        match self {
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => KeyFamily::Hmac,
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => KeyFamily::Ec,
            JwtAlgorithm::EdDSA => KeyFamily::Ed,
            _ => KeyFamily::Rsa,
        }
    }
}

/// Where an issuer's verification key comes from.
#[derive(Debug, Clone)]
pub enum JwtKeySource {
    /// A shared secret (HS* only).
    Secret(ConfigSecret),
    /// A PEM public key file.
    PublicKeyFile(PathBuf),
    /// A JWKS JSON file; keys are chosen by `kid`.
    JwksFile(PathBuf),
    /// A JWKS document fetched over HTTPS (or HTTP on loopback), cached and
    /// refreshed; keys are chosen by `kid`.
    JwksUrl(String),
}

/// One `[[auth.jwt]]` issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Algorithm allow-list, as written.
    #[serde(rename = "algorithms")]
    pub algorithm_names: Vec<String>,
    /// HMAC secret (`env:NAME`).
    pub secret: Option<ConfigSecret>,
    /// PEM public key file.
    pub public_key_file: Option<PathBuf>,
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL: `https://`, or `http://` to a loopback address.
    pub jwks_url: Option<String>,
    /// `jwks_url` only: the shortest time a fetched document is kept
    /// before the next fetch, whatever its `Cache-Control` says (seconds).
    pub jwks_min_refresh_s: Option<u64>,
    /// `jwks_url` only: the longest time a fetched document is trusted.
    pub jwks_max_refresh_s: Option<u64>,
    /// `jwks_url` only: at most one fetch per this many seconds caused by
    /// tokens naming a `kid` the issuer does not know.
    pub jwks_refetch_interval_s: Option<u64>,
    /// Claim holding the tenant id.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim holding the roles (array of strings).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock-skew leeway for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// Validated algorithms (filled by [`load`](super::load)).
    #[serde(skip)]
    pub algorithms: Vec<JwtAlgorithm>,
}

impl JwtIssuerConfig {
    /// The key source, once validated (exactly one is set).
    pub fn key_source(&self) -> Option<JwtKeySource> {
        match (
            &self.secret,
            &self.public_key_file,
            &self.jwks_file,
            &self.jwks_url,
        ) {
            (Some(s), None, None, None) => Some(JwtKeySource::Secret(s.clone())),
            (None, Some(p), None, None) => Some(JwtKeySource::PublicKeyFile(p.clone())),
            (None, None, Some(p), None) => Some(JwtKeySource::JwksFile(p.clone())),
            (None, None, None, Some(u)) => Some(JwtKeySource::JwksUrl(u.clone())),
            _ => None,
        }
    }

    /// `jwks_min_refresh_s`, default 60.
    pub fn jwks_min_refresh_s(&self) -> u64 {
        self.jwks_min_refresh_s.unwrap_or(60)
    }

    /// `jwks_max_refresh_s`, default 3600 (raised to the minimum if that
    /// is larger, which validation refuses anyway).
    pub fn jwks_max_refresh_s(&self) -> u64 {
        self.jwks_max_refresh_s
            .unwrap_or(3600)
            .max(self.jwks_min_refresh_s())
    }

    /// `jwks_refetch_interval_s`, default 30.
    pub fn jwks_refetch_interval_s(&self) -> u64 {
        self.jwks_refetch_interval_s.unwrap_or(30)
    }
}

/// Whether `url` may serve a JWKS: `https://`, or `http://` to a loopback
/// host (a local identity provider, tests). Keys fetched over plain HTTP
/// from elsewhere could be swapped by anyone on the path.
fn check_jwks_url(url: &str, path: &str, errors: &mut Errors) {
    let bad = |errors: &mut Errors, why: &str| errors.push(path, format!("{url:?}: {why}"));
    if url.contains(char::is_whitespace) || url.contains('@') {
        return bad(errors, "must not contain whitespace or user info");
    }
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            bad(errors, "has no host");
        }
        return;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return bad(errors, "must be an https:// URL (or http:// on loopback)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bad(
            errors,
            "http:// is allowed only to a loopback host; use https://",
        );
    }
}

fn default_tenant_claim() -> String {
    "tenant_id".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// 30 s absorbs ordinary clock skew without extending a token's life much.
fn default_leeway() -> u64 {
    30
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
const MIN_HMAC_SECRET: usize = 32;

fn validate_issuers(
    auth: &mut AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    let mut issuers = BTreeSet::new();
    for (i, jwt) in auth.jwt.iter_mut().enumerate() {
        let p = format!("auth.jwt[{i}]");
        if jwt.issuer.trim().is_empty() {
            errors.push(format!("{p}.issuer"), "must not be empty");
        } else if !issuers.insert(jwt.issuer.clone()) {
            errors.push(
                format!("{p}.issuer"),
                format!("issuer {:?} is configured twice", jwt.issuer),
            );
        }
        if jwt.audience.trim().is_empty() {
            errors.push(format!("{p}.audience"), "must not be empty");
        }
        if jwt.tenant_claim.is_empty() {
            errors.push(format!("{p}.tenant_claim"), "must not be empty");
        }
        if jwt.roles_claim.is_empty() {
            errors.push(format!("{p}.roles_claim"), "must not be empty");
        }
        if jwt.leeway_s > 300 {
            errors.push(format!("{p}.leeway_s"), "must be at most 300 seconds");
        }
        jwt.algorithms.clear();
        if jwt.algorithm_names.is_empty() {
            errors.push(format!("{p}.algorithms"), "list at least one algorithm");
        }
        for (j, name) in jwt.algorithm_names.iter().enumerate() {
            let ap = format!("{p}.algorithms[{j}]");
            if name.eq_ignore_ascii_case("none") {
                errors.push(ap, "\"none\" is not allowed");
            } else if let Some(alg) = JwtAlgorithm::parse(name) {
                if jwt.algorithms.contains(&alg) {
                    errors.push(ap, format!("{name:?} is listed twice"));
                } else {
                    jwt.algorithms.push(alg);
                }
            } else {
                errors.push(
                    ap,
                    format!(
                        "unknown algorithm {name:?}; use one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                    ),
                );
            }
        }
        let sources = [
            jwt.secret.is_some(),
            jwt.public_key_file.is_some(),
            jwt.jwks_file.is_some(),
            jwt.jwks_url.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count();
        if sources != 1 {
            errors.push(
                p.clone(),
                "set exactly one of secret, public_key_file, jwks_file, jwks_url",
            );
            continue;
        }
        if let Some(url) = &jwt.jwks_url {
            check_jwks_url(url, &format!("{p}.jwks_url"), errors);
            for (key, value, max) in [
                ("jwks_min_refresh_s", jwt.jwks_min_refresh_s, 86_400),
                ("jwks_max_refresh_s", jwt.jwks_max_refresh_s, 604_800),
                ("jwks_refetch_interval_s", jwt.jwks_refetch_interval_s, 3600),
            ] {
                if let Some(v) = value
                    && !(1..=max).contains(&v)
                {
                    errors.push(
                        format!("{p}.{key}"),
                        format!("must be between 1 and {max} seconds"),
                    );
                }
            }
            if let (Some(min), Some(max)) = (jwt.jwks_min_refresh_s, jwt.jwks_max_refresh_s)
                && max < min
            {
                errors.push(
                    format!("{p}.jwks_max_refresh_s"),
                    "must be at least jwks_min_refresh_s",
                );
            }
        } else {
            for (key, value) in [
                ("jwks_min_refresh_s", jwt.jwks_min_refresh_s),
                ("jwks_max_refresh_s", jwt.jwks_max_refresh_s),
                ("jwks_refetch_interval_s", jwt.jwks_refetch_interval_s),
            ] {
                if value.is_some() {
                    errors.push(format!("{p}.{key}"), "is only for an issuer with jwks_url");
                }
            }
        }
        let hmac = jwt.secret.is_some();
        for (j, alg) in jwt.algorithm_names.iter().enumerate() {
            let Some(alg) = JwtAlgorithm::parse(alg) else {
                continue;
            };
            let is_hmac = alg.family() == KeyFamily::Hmac;
            if hmac && !is_hmac {
                errors.push(
                    format!("{p}.algorithms[{j}]"),
                    format!(
                        "{} needs public_key_file or jwks_file, not a secret",
                        alg.as_str()
                    ),
                );
            } else if !hmac && is_hmac {
                // HMAC with a public key would let anyone who has the public
                // key sign tokens: the classic algorithm-confusion attack.
                errors.push(
                    format!("{p}.algorithms[{j}]"),
                    format!(
                        "{} needs a secret; HMAC with a public key is not allowed",
                        alg.as_str()
                    ),
                );
            }
        }
        if let Some(secret) = &mut jwt.secret {
            resolve(secret, &format!("{p}.secret"), env, errors);
            let len = secret.value().expose().len();
            if len > 0 && len < MIN_HMAC_SECRET {
                errors.push(
                    format!("{p}.secret"),
                    format!(
                        "an HMAC secret must be at least {MIN_HMAC_SECRET} bytes (RFC 7518 §3.2)"
                    ),
                );
            }
        }
    }
}

/// `[auth]`: the failure limits, then every issuer.
pub(super) fn validate(
    auth: &mut AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if auth.failures_per_minute_per_credential == 0 {
        errors.push(
            "auth.failures_per_minute_per_credential",
            "must be at least 1",
        );
    }
    if auth.failures_per_minute_per_peer == 0 {
        errors.push("auth.failures_per_minute_per_peer", "must be at least 1");
    }
    validate_issuers(auth, env, errors);
}
