//! The `bulkhead.toml` model, its validation, and the embedded defaults.
//!
//! Loading runs in two phases. Phase one deserialises the TOML with
//! `deny_unknown_fields` everywhere; serde stops at the first structural
//! error (unknown key, wrong type), which is reported with its key path.
//! Phase two checks meaning (references between tables, residency, secret
//! references, algorithm allow-lists) and reports *every* error it finds,
//! each with the key path at fault, e.g.
//! `auth.jwt[0].algorithms[1]: "none" is not allowed`.
//!
//! Secrets are never literal in the file: a secret key takes `"env:NAME"`,
//! and the environment is passed in as a function so this crate stays free
//! of I/O and tests can supply their own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::money::Usd;
use crate::{Region, SecretString};

/// One configuration error, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `auth.jwt[0].algorithms[1]`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All errors found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A secret written as `"env:NAME"`; the value is filled in by [`load`].
#[derive(Clone)]
pub struct ConfigSecret {
    env: String,
    value: SecretString,
}

impl ConfigSecret {
    /// The environment variable it is read from.
    pub fn env_name(&self) -> &str {
        &self.env
    }

    /// The secret value (non-empty once loaded).
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// A secret with a known value, for tests and generated defaults.
    pub fn from_value(env: &str, value: SecretString) -> Self {
        Self {
            env: env.to_owned(),
            value,
        }
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "env:{}", self.env)
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("env:") {
            Some(name) if is_env_name(name) => Ok(Self {
                env: name.to_owned(),
                value: SecretString::new(String::new()),
            }),
            _ => Err(serde::de::Error::custom(
                "secrets are not written in the file: use \"env:NAME\" to read one from the environment variable NAME",
            )),
        }
    }
}

/// Connection names (vault entries): `[a-z0-9_-]{1,64}`.
pub fn is_connection_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Names of providers, models, tools and agents: `[A-Za-z0-9._-]{1,64}`.
fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The whole configuration, validated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    #[serde(default)]
    pub server: ServerConfig,
    /// `[operator]`
    #[serde(default)]
    pub operator: OperatorConfig,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[[providers]]`
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// `[[models]]`
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// `[[embedding_models]]`
    #[serde(default)]
    pub embedding_models: Vec<EmbeddingModelConfig>,
    /// `[[tools]]`
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
    /// `[[agents]]`
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// `[knowledge]`
    #[serde(default)]
    pub knowledge: Option<KnowledgeConfig>,
    /// `[quotas]`
    #[serde(default)]
    pub quotas: QuotasConfig,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[kms]`
    #[serde(default)]
    pub kms: KmsConfig,
    /// `[policies]`
    #[serde(default)]
    pub policies: Option<PoliciesConfig>,
    /// `[approvals]`
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// `[egress]`
    #[serde(default)]
    pub egress: EgressConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory (control database, tenant partitions, key files).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Region of tenants created without one.
    #[serde(default = "default_region")]
    pub default_region: Region,
    /// Whole-request timeout in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Bearer token `GET /metrics` requires (`env:NAME`); without it the
    /// metrics are public, which reveals tenant ids in labels. Required
    /// when `listen` is not a loopback address, unless `metrics_public`.
    pub metrics_token: Option<ConfigSecret>,
    /// Serve `/metrics` without a token on a non-loopback `listen`: the
    /// operator's explicit choice (a private network, a scraper without
    /// credentials).
    #[serde(default)]
    pub metrics_public: bool,
    /// Most tenants with their own `bulkhead_tenant_requests_total`
    /// series; the rest are counted under `tenant="_other"`.
    #[serde(default = "default_metrics_max_tenants")]
    pub metrics_max_tenants: usize,
    /// Seconds a connection has to send a complete request head: from
    /// accept for its first request, from the first byte for later ones.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_s: u64,
    /// Seconds an idle keep-alive connection (no request in flight, no
    /// byte of a new one) is kept open.
    #[serde(default = "default_keepalive_idle")]
    pub keepalive_idle_s: u64,
    /// Most open connections; more are accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most open connections from one peer address (IPv6: one /64).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request head (request line and headers) in bytes; larger
    /// is answered `431` and the connection closed.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most header fields in one request; more is answered `431`.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Directory of agent prompt files (`agents.prompt_file` is relative to
    /// it); templates cannot read files outside it.
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// How often tenants' message retention is applied, in seconds.
    #[serde(default = "default_retention_interval")]
    pub retention_interval_s: u64,
}

/// Enough for a large platform; each series is one counter.
fn default_metrics_max_tenants() -> usize {
    1000
}
/// A client on a slow mobile link sends a request head in well under a
/// second; ten is generous and keeps a slow-header attacker's connection
/// short-lived.
fn default_header_read_timeout() -> u64 {
    10
}
/// Longer than the usual client pool idle time (reqwest 90 s, but most
/// SDKs and proxies 30–60 s), short enough to shed idle sockets.
fn default_keepalive_idle() -> u64 {
    60
}
/// Below the usual hard limit on open files, leaving room for the
/// databases, the provider pool and the log.
fn default_max_connections() -> usize {
    10_000
}
/// A backend's pool uses tens of connections; one address cannot hold
/// more than a fortieth of the global cap.
fn default_max_connections_per_peer() -> usize {
    256
}
/// 16 KiB: large JWTs fit several times over, and a slow-header attacker's
/// connection holds at most this much memory.
fn default_max_header_bytes() -> usize {
    16 * 1024
}
/// hyper's own default.
fn default_max_headers() -> usize {
    100
}

/// Hourly: retention is counted in days.
fn default_retention_interval() -> u64 {
    3600
}

fn default_prompts_dir() -> PathBuf {
    PathBuf::from("prompts")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".bulkhead")
}
fn default_region() -> Region {
    // "local" names the machine the embedded default runs on; it matches no
    // provider unless the operator tags one so, which keeps residency strict.
    Region::local()
}
/// Long enough for a model call on the later agent paths; short enough that
/// a stuck request frees its connection.
fn default_request_timeout() -> u64 {
    30
}
/// 1 MiB: large JSON bodies are refused early; document upload paths raise
/// their own limits.
fn default_max_body() -> usize {
    1024 * 1024
}

impl ServerConfig {
    /// Why `/metrics` may not be served as configured: public (no
    /// `metrics_token`) on a non-loopback `listen` without
    /// `metrics_public = true`. Checked when the file is loaded and again
    /// at boot, after `serve --listen` has replaced the address.
    pub fn metrics_exposure_error(&self) -> Option<ConfigError> {
        if self.listen.ip().is_loopback() || self.metrics_token.is_some() || self.metrics_public {
            return None;
        }
        Some(ConfigError {
            path: "server.metrics_token".into(),
            message: format!(
                "is required when listen ({}) is not a loopback address, because the \
                 metrics name tenants; set it, or set server.metrics_public = true to \
                 serve them to anyone who can connect",
                self.listen
            ),
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            default_region: default_region(),
            request_timeout_s: default_request_timeout(),
            max_body_bytes: default_max_body(),
            metrics_token: None,
            metrics_public: false,
            metrics_max_tenants: default_metrics_max_tenants(),
            header_read_timeout_s: default_header_read_timeout(),
            keepalive_idle_s: default_keepalive_idle(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            prompts_dir: default_prompts_dir(),
            retention_interval_s: default_retention_interval(),
        }
    }
}

/// `[operator]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Bearer token of the operator plane; generated into the data
    /// directory when absent.
    pub token: Option<ConfigSecret>,
}

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
    /// Validated algorithms (filled by [`load`]).
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

/// Provider wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Azure OpenAI: OpenAI's wire format at
    /// `{base_url}/openai/deployments/{upstream}/chat/completions?api-version=…`
    /// with an `api-key` header.
    #[serde(rename = "azure-openai")]
    AzureOpenai,
}

/// Where a provider's key comes from.
#[derive(Debug, Clone)]
pub enum ProviderCredential {
    /// A platform key from the environment.
    Env(ConfigSecret),
    /// The calling tenant's own key, from its vault connection.
    Tenant(String),
}

impl<'de> Deserialize<'de> for ProviderCredential {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(conn) = s.strip_prefix("tenant:") {
            if is_connection_name(conn) {
                return Ok(ProviderCredential::Tenant(conn.to_owned()));
            }
            return Err(serde::de::Error::custom(
                "\"tenant:CONNECTION\" needs a connection name of 1-64 characters [a-z0-9_-]",
            ));
        }
        ConfigSecret::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&s))
            .map(ProviderCredential::Env)
            .map_err(|_| {
                serde::de::Error::custom(
                    "credential must be \"env:NAME\" (a platform key) or \"tenant:CONNECTION\" (the tenant's own key)",
                )
            })
    }
}

/// `[[providers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used by models.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: String,
    /// Residency region.
    pub region: Region,
    /// Key source; absent for keyless local servers.
    pub credential: Option<ProviderCredential>,
    /// Upstream timeout in seconds.
    #[serde(default = "default_provider_timeout")]
    pub timeout_s: u64,
    /// Retries after a 429 or 5xx answer (not after a stream has started).
    #[serde(default = "default_provider_retries")]
    pub max_retries: u32,
    /// Most calls in flight to this provider at once; more wait their turn.
    #[serde(default = "default_provider_concurrency")]
    pub max_concurrency: u32,
    /// The longest a stream may go without bytes moving (the provider
    /// silent, or the client not taking what was sent) before it is cut
    /// (seconds).
    #[serde(default = "default_stream_idle_timeout")]
    pub stream_idle_timeout_s: u64,
    /// The most bytes one answer may have: a whole non-streamed body, or
    /// all of a stream's bytes together (a single event is bounded by it
    /// too, and never beyond 4 MiB).
    #[serde(default = "default_max_model_response_bytes")]
    pub max_response_bytes: u64,
    /// `azure-openai` only: the `api-version` query parameter.
    pub api_version: Option<String>,
}

/// Model calls can be slow; a minute covers long completions.
fn default_provider_timeout() -> u64 {
    60
}
/// Two retries ride out a brief overload without tripling a long outage.
fn default_provider_retries() -> u32 {
    2
}
/// Enough parallelism for a small fleet; protects the upstream account's
/// own rate limits from one process's burst.
fn default_provider_concurrency() -> u32 {
    64
}
/// As long as the default per-attempt timeout: a reasoning model may be
/// silent a while between chunks; an idle stream holds no provider slot.
fn default_stream_idle_timeout() -> u64 {
    60
}
/// 16 MiB: far above any real completion (a 128k-token answer is about
/// 512 KiB of text, a few MiB as SSE), far below what hurts the process.
fn default_max_model_response_bytes() -> u64 {
    16 * 1024 * 1024
}

/// Upper bound of `[[providers]] max_response_bytes` (1 GiB).
pub const MAX_MODEL_RESPONSE_BYTES: u64 = 1024 * 1024 * 1024;
/// Upper bound of `[[providers]] stream_idle_timeout_s` (an hour).
pub const MAX_STREAM_IDLE_TIMEOUT_S: u64 = 3600;
/// Output tokens reserved for a call to a model without
/// `max_output_tokens` when the request does not say how many it wants.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// `[[models]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients send as `model`.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Name sent upstream.
    pub upstream: String,
    /// USD per million input tokens.
    pub price_input_per_mtok: Option<Usd>,
    /// USD per million output tokens.
    pub price_output_per_mtok: Option<Usd>,
    /// USD per million cached input tokens.
    pub price_cached_input_per_mtok: Option<Usd>,
    /// The most output tokens one answer (one choice) of this model may
    /// have: what a call that sets no `max_tokens` reserves per choice.
    /// Unset: [`DEFAULT_MAX_OUTPUT_TOKENS`].
    pub max_output_tokens: Option<u64>,
}

/// `[[embedding_models]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModelConfig {
    /// Name.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Name sent upstream.
    pub upstream: String,
    /// Vector dimensions.
    pub dimensions: u32,
    /// USD per million input tokens.
    pub price_input_per_mtok: Option<Usd>,
}

/// Tool kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    /// Slack `chat.postMessage`.
    Slack,
    /// Jira issue creation.
    Jira,
    /// GitHub issue creation.
    Github,
    /// Generic HTTP.
    Http,
}

/// Tool risk levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads only.
    Read,
    /// Changes something.
    Write,
    /// Deletes or cannot be undone.
    Destructive,
}

impl Risk {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
        }
    }
}

impl ToolKind {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Slack => "slack",
            ToolKind::Jira => "jira",
            ToolKind::Github => "github",
            ToolKind::Http => "http",
        }
    }
}

/// Tool approval modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Never asks.
    Never,
    /// Always asks.
    Always,
    /// Policy decides.
    Policy,
}

/// `[[tools]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Name the model sees.
    pub name: String,
    /// Connector kind.
    pub kind: ToolKind,
    /// Base URL.
    pub base_url: Option<String>,
    /// Residency region.
    pub region: Region,
    /// Vault connection of the calling tenant.
    pub connection: Option<String>,
    /// Hosts an `http` tool may reach (`host:port`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Risk level.
    pub risk: Option<Risk>,
    /// Approval mode.
    pub approval: Option<ApprovalMode>,
    /// Human description shown to the model.
    pub description: Option<String>,
    /// HTTP method of an `http` tool: GET (default), POST, PUT, PATCH or
    /// DELETE.
    pub method: Option<String>,
    /// URL template of an `http` tool (minijinja; the variables are the
    /// model's arguments, each percent-encoded). Required for `http`.
    pub url: Option<String>,
    /// JSON body template of an `http` tool (values JSON-escaped).
    pub body: Option<String>,
    /// JSON Schema (an object) of an `http` tool's arguments. Required for
    /// `http`; connectors have built-in schemas.
    pub parameters: Option<serde_json::Value>,
    /// Largest response body read from the tool's upstream.
    #[serde(default = "default_tool_max_response")]
    pub max_response_bytes: u64,
    /// Per-call timeout in seconds, response body included.
    #[serde(default = "default_tool_timeout")]
    pub timeout_s: u64,
}

/// 64 KiB: a tool result goes into the model's context, where more than
/// that is wasted tokens (and money) rather than information.
fn default_tool_max_response() -> u64 {
    64 * 1024
}
/// The most a tool result may be: beyond 16 MiB a response is not
/// something a model can use, and the whole body is held in memory.
pub const MAX_TOOL_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// SaaS APIs answer within seconds; 30 s rides out a slow one without
/// holding an agent run for long.
fn default_tool_timeout() -> u64 {
    30
}
/// Five minutes: longer would hold an agent run (and its quota slot) for
/// longer than any interactive caller waits.
pub const MAX_TOOL_TIMEOUT_S: u64 = 300;
/// Methods an `http` tool may use.
pub const TOOL_HTTP_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `[[agents]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Model alias.
    pub model: String,
    /// Inline prompt template.
    pub prompt: Option<String>,
    /// Prompt template file (under the prompts directory).
    pub prompt_file: Option<PathBuf>,
    /// Tool names.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Knowledge collections.
    #[serde(default)]
    pub knowledge: Vec<String>,
    /// Maximum model calls per run.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Maximum tokens (prompt + completion, summed over the run's model calls).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// Wall-clock limit of one run, in seconds.
    #[serde(default = "default_run_timeout_s")]
    pub timeout_s: u64,
    /// Token budget of the conversation sent to the model: the thread's
    /// oldest turns are left out first; the prompt and the newest turn stay.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u64,
    /// Tool calls made from one model answer; the model's further calls
    /// in that answer are refused to it (`tool_call_limit`).
    #[serde(default = "default_max_tool_calls_per_round")]
    pub max_tool_calls_per_round: u32,
    /// Tool calls over the whole run (resumed runs included).
    #[serde(default = "default_max_tool_calls_per_run")]
    pub max_tool_calls_per_run: u32,
    /// Bytes of one tool result kept for the model, the thread and the
    /// run's steps; the rest is cut with a marker the model sees.
    #[serde(default = "default_max_tool_result_bytes")]
    pub max_tool_result_bytes: u32,
    /// Bytes of all tool results of one round together; over it every
    /// result is cut to a fair share.
    #[serde(default = "default_max_tool_result_bytes_per_round")]
    pub max_tool_result_bytes_per_round: u32,
}

/// Enough for a model that fans out over a handful of items.
fn default_max_tool_calls_per_round() -> u32 {
    16
}

/// Four full rounds; more is a runaway loop, not a task.
fn default_max_tool_calls_per_run() -> u32 {
    64
}

/// About 8k tokens: a page of an API answer.
fn default_max_tool_result_bytes() -> u32 {
    32 * 1024
}

/// Four full results per round.
fn default_max_tool_result_bytes_per_round() -> u32 {
    128 * 1024
}

/// Fits common 16k-context models with room for the answer.
fn default_context_tokens() -> u64 {
    12_000
}

/// Room for several tool round trips with a long prompt.
fn default_max_tokens() -> u64 {
    200_000
}

/// Long enough for slow tools, short enough that a stuck run is noticed.
fn default_run_timeout_s() -> u64 {
    120
}

/// Enough for multi-tool tasks; small enough to stop a looping model early.
fn default_max_steps() -> u32 {
    8
}

/// `[knowledge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// One embedding model name or a list (one per region).
    pub embedding_model: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

impl Config {
    /// The embedding model `[knowledge]` names for tenants of `region`
    /// (validation allows at most one per region), if any.
    pub fn embedding_model_for(&self, region: &Region) -> Option<&EmbeddingModelConfig> {
        let names = self.knowledge.as_ref()?.embedding_model.as_ref()?.to_vec();
        self.embedding_models.iter().find(|m| {
            names.contains(&m.name)
                && self
                    .providers
                    .iter()
                    .any(|p| p.name == m.provider && &p.region == region)
        })
    }

    /// Every `[knowledge]` embedding model with its provider's region.
    pub fn knowledge_embedding_models(&self) -> Vec<(Region, EmbeddingModelConfig)> {
        let Some(names) = self
            .knowledge
            .as_ref()
            .and_then(|k| k.embedding_model.as_ref())
            .map(OneOrMany::to_vec)
        else {
            return Vec::new();
        };
        self.embedding_models
            .iter()
            .filter(|m| names.contains(&m.name))
            .filter_map(|m| {
                let p = self.providers.iter().find(|p| p.name == m.provider)?;
                Some((p.region.clone(), m.clone()))
            })
            .collect()
    }
}

/// `[quotas]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// `[quotas.default]`, per tenant.
    #[serde(default)]
    pub default: QuotaValues,
    /// `[quotas.alerts]`: budget alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Per-tenant limits; `None` means unlimited. The same shape is a
/// tenant's override (`PATCH /admin/v1/tenants/{id} {"quotas": {...}}`),
/// where `None` means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaValues {
    /// Tenant-plane requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Model tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Concurrent agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_runs: Option<u64>,
    /// Tool calls per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_per_minute: Option<u64>,
    /// Daily budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<Usd>,
    /// Monthly budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_usd: Option<Usd>,
    /// Share of saturated capacity (weighted fair queueing); 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Where budget alerts are posted (`http(s)://`); none: no alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_webhook: Option<String>,
    /// Knowledge documents stored across collections; unset: 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_documents: Option<u64>,
    /// Bytes of knowledge document text stored across collections; unset:
    /// 10 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
}

impl QuotaValues {
    /// `self` with every value `over` sets replacing this one's.
    pub fn overridden_by(&self, over: &QuotaValues) -> QuotaValues {
        QuotaValues {
            requests_per_minute: over.requests_per_minute.or(self.requests_per_minute),
            tokens_per_minute: over.tokens_per_minute.or(self.tokens_per_minute),
            concurrent_runs: over.concurrent_runs.or(self.concurrent_runs),
            tool_calls_per_minute: over.tool_calls_per_minute.or(self.tool_calls_per_minute),
            daily_budget_usd: over.daily_budget_usd.or(self.daily_budget_usd),
            monthly_budget_usd: over.monthly_budget_usd.or(self.monthly_budget_usd),
            weight: over.weight.or(self.weight),
            alert_webhook: over
                .alert_webhook
                .clone()
                .or_else(|| self.alert_webhook.clone()),
            max_documents: over.max_documents.or(self.max_documents),
            max_stored_bytes: over.max_stored_bytes.or(self.max_stored_bytes),
        }
    }

    /// Problems with the values, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.weight == Some(0) {
            out.push(("weight", "must be at least 1".to_owned()));
        }
        if self.weight.is_some_and(|w| w > 1000) {
            out.push(("weight", "must be at most 1000".to_owned()));
        }
        if let Some(url) = &self.alert_webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(("alert_webhook", format!("{url:?} is not an http(s) URL")));
        }
        out
    }
}

/// `[quotas.alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Percentages of the monthly budget that post an alert when crossed.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// HMAC-SHA256 key of the `Bulkhead-Signature` header (`"env:NAME"`).
    /// Without one, alerts are not sent (and `check` says so).
    pub signing_key: Option<ConfigSecret>,
}

fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            thresholds: default_thresholds(),
            signing_key: None,
        }
    }
}

/// Key providers for the vault's key-encryption keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KmsProvider {
    /// A versioned key file in the data directory.
    #[default]
    Local,
    /// AWS KMS (the `aws-kms` cargo feature).
    AwsKms,
}

/// `[kms]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// Which provider holds the key-encryption keys.
    #[serde(default)]
    pub provider: KmsProvider,
    /// AWS KMS key id, ARN or alias (`aws-kms`).
    pub key_id: Option<String>,
    /// AWS region (`aws-kms`).
    pub region: Option<String>,
    /// Endpoint override, e.g. a local KMS emulator (`aws-kms`).
    pub endpoint_url: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Where counters live.
    #[serde(default)]
    pub backend: LimitsBackend,
    /// Redis URL for the `redis` backend.
    pub redis_url: Option<String>,
    /// How long a model call's budget reservation lives if its process
    /// dies before settling it (seconds).
    #[serde(default = "default_reservation_ttl")]
    pub reservation_ttl_s: u64,
    /// Agent runs executing at once in this process; beyond it runs wait,
    /// admitted per tenant by weighted fair queueing. None: no limit.
    pub max_concurrent_runs: Option<u32>,
    /// Memory for decoded knowledge vectors (and their ANN graphs) across
    /// all tenants, in MiB; least recently used collections are dropped.
    #[serde(default = "default_vector_cache_mb")]
    pub vector_cache_mb: u64,
}

/// Half a GiB: about 500,000 vectors of 256 dimensions.
fn default_vector_cache_mb() -> u64 {
    512
}

fn default_reservation_ttl() -> u64 {
    600
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::Memory,
            redis_url: None,
            reservation_ttl_s: default_reservation_ttl(),
            max_concurrent_runs: None,
            vector_cache_mb: default_vector_cache_mb(),
        }
    }
}

/// Limit counter backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In-process.
    #[default]
    Memory,
    /// Shared through Redis.
    Redis,
}

/// `[approvals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long an approval request stays open (seconds); after it the
    /// request is `expired` and its run ends without the call.
    #[serde(default = "default_approval_ttl")]
    pub ttl_s: u64,
    /// HMAC-SHA256 key of the `Bulkhead-Signature` header on approval
    /// webhooks (`"env:NAME"`). Without one, tenants cannot set an
    /// approval webhook.
    pub signing_key: Option<ConfigSecret>,
    /// How often every tenant's undecided requests past their expiry are
    /// settled (seconds, at least 10), ending their runs.
    #[serde(default = "default_approval_sweep")]
    pub sweep_interval_s: u64,
}

fn default_approval_ttl() -> u64 {
    86_400
}

fn default_approval_sweep() -> u64 {
    300
}

/// Longest an approval request may stay open: 30 days.
pub const MAX_APPROVAL_TTL_S: u64 = 30 * 86_400;

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl_s: default_approval_ttl(),
            signing_key: None,
            sweep_interval_s: default_approval_sweep(),
        }
    }
}

/// `[egress]`: where outbound requests a tenant can aim (OAuth2 token
/// URLs, tools) may go besides public `https://` addresses. Enforced by
/// `bulkhead-egress` on every resolved address and redirect hop.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Whether plain `http://` URLs may be reached (default false: a
    /// credential must not cross the network in clear).
    #[serde(default)]
    pub allow_http: bool,
    /// Exceptions to "public addresses only", each one of: a network in
    /// CIDR form (`"10.0.0.0/8"`, any port), an address and port written
    /// literally in the URL (`"127.0.0.1:8089"`, `"[fd00::5]:443"`), or a
    /// host name and port (`"jira.internal:443"`, whatever it resolves
    /// to). Empty by default.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// `allow_hosts` parsed, in order; filled in by [`load`].
    #[serde(skip)]
    pub rules: Vec<EgressRule>,
}

/// One parsed `[egress] allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// Every address of a network, on any port, however it is reached.
    Net(ipnet::IpNet),
    /// One address and port, when a URL names that address literally (the
    /// resolver does not see the port, so a name resolving to it is not
    /// covered: allow the name instead).
    Addr(SocketAddr),
    /// One host name (lower case, no trailing dot) and port, whatever
    /// addresses it resolves to.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl EgressRule {
    /// Parses one `allow_hosts` entry; the error says which forms exist.
    pub fn parse(s: &str) -> Result<Self, String> {
        const FORMS: &str = "write a network (\"10.0.0.0/8\"), an address:port (\"10.0.0.5:8089\", \"[fd00::5]:443\") or a host:port (\"jira.internal:443\")";
        if s.contains('/') {
            let net: ipnet::IpNet = s
                .parse()
                .map_err(|_| format!("{s:?} is not a network in CIDR form; {FORMS}"))?;
            if net.trunc() != net {
                return Err(format!(
                    "{s:?} has bits set past its prefix; did you mean \"{}\"?",
                    net.trunc()
                ));
            }
            return Ok(Self::Net(net));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{s:?}: the port must be 1-65535"));
            }
            return Ok(Self::Addr(addr));
        }
        if s.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("{s:?} has no port; {FORMS}"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; {FORMS}"));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{s:?}: the port must be 1-65535")),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // A URL parser reads a name whose last label is a number as an
        // IPv4 address (`0x7f.1`), so such a rule could never match a name.
        let last = host.rsplit('.').next().unwrap_or_default();
        let numeric_tail = !last.is_empty()
            && (last.bytes().all(|b| b.is_ascii_digit())
                || last
                    .strip_prefix("0x")
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) || numeric_tail {
            return Err(format!("{s:?} is not a host name and port; {FORMS}"));
        }
        Ok(Self::Host { host, port })
    }
}

/// `[policies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Platform Cedar policies.
    pub file: PathBuf,
}

/// Parses and validates a configuration file's text. `env` answers
/// `env:NAME` references.
pub fn load(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = e.path().to_string();
        let message = e.inner().message().to_owned();
        // serde reports an unknown key at its parent table; name the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some(key) = rest.split('`').next()
        {
            if path == "." {
                path = key.to_owned();
            } else if !path.ends_with(key) {
                path = format!("{path}.{key}");
            }
        }
        if path == "." {
            path.clear();
        }
        let location = e
            .inner()
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigErrors(vec![ConfigError {
            path,
            message: format!("{message}{location}"),
        }])
    })?;
    validate(&mut config, env)?;
    Ok(config)
}

/// The embedded default: no file, listen on 127.0.0.1:8080, data in
/// `./.bulkhead`, no issuers, an operator token generated on first start.
pub fn embedded_default() -> Config {
    Config::default()
}

fn resolve(
    secret: &mut ConfigSecret,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    match env(&secret.env) {
        Some(v) if !v.is_empty() => secret.value = SecretString::new(v),
        Some(_) => errors.push(
            path,
            format!("environment variable {} is empty", secret.env),
        ),
        None => errors.push(
            path,
            format!("environment variable {} is not set", secret.env),
        ),
    }
}

fn check_unique<'a>(
    names: impl Iterator<Item = &'a str>,
    table: &str,
    errors: &mut Errors,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if !is_resource_name(name) {
            errors.push(
                format!("{table}[{i}].name"),
                format!("{name:?} is not a valid name (1-64 characters of letters, digits, '.', '_', '-')"),
            );
        }
        if !seen.insert(name.to_owned()) {
            errors.push(
                format!("{table}[{i}].name"),
                format!("duplicate name {name:?}"),
            );
        }
    }
    seen
}

/// The request keys of a tool: which kinds take them, and their ranges.
/// Templates and schemas are only checked for presence here; their
/// structure is checked where they are compiled (`bulkhead-tools`).
fn check_tool_request(t: &ToolConfig, p: &str, errors: &mut Errors) {
    if t.kind == ToolKind::Http {
        if let Some(m) = &t.method
            && !TOOL_HTTP_METHODS.contains(&m.as_str())
        {
            errors.push(
                format!("{p}.method"),
                format!("{m:?} is not one of GET, POST, PUT, PATCH, DELETE"),
            );
        }
        match &t.url {
            Some(u) if u.trim().is_empty() => errors.push(format!("{p}.url"), "must not be empty"),
            Some(_) => {}
            None if t.base_url.is_some() => {}
            None => errors.push(
                format!("{p}.url"),
                "http tools need url (a URL template) or base_url",
            ),
        }
        let base_form = t.url.is_none() && t.base_url.is_some();
        if t.body.is_some() && t.method.as_deref().is_none_or(|m| m == "GET") {
            errors.push(
                format!("{p}.body"),
                "a GET request has no body; set method as well",
            );
        }
        match &t.parameters {
            Some(_) if base_form => errors.push(
                format!("{p}.parameters"),
                "an http tool with base_url takes method, path, query and body; its schema is fixed",
            ),
            Some(serde_json::Value::Object(_)) => {}
            Some(_) => errors.push(
                format!("{p}.parameters"),
                "must be a JSON Schema object (a table)",
            ),
            None if base_form => {}
            None => errors.push(
                format!("{p}.parameters"),
                "is required for http tools (the JSON Schema of the arguments)",
            ),
        }
    } else {
        for (key, set) in [
            ("method", t.method.is_some()),
            ("url", t.url.is_some()),
            ("body", t.body.is_some()),
        ] {
            if set {
                errors.push(format!("{p}.{key}"), "only http tools take this key");
            }
        }
        if t.parameters.is_some() {
            errors.push(
                format!("{p}.parameters"),
                "connectors have built-in parameters; only http tools take this key",
            );
        }
    }
    if !(1..=MAX_TOOL_RESPONSE_BYTES).contains(&t.max_response_bytes) {
        errors.push(
            format!("{p}.max_response_bytes"),
            format!("must be between 1 and {MAX_TOOL_RESPONSE_BYTES} (16 MiB)"),
        );
    }
    if !(1..=MAX_TOOL_TIMEOUT_S).contains(&t.timeout_s) {
        errors.push(
            format!("{p}.timeout_s"),
            format!("must be between 1 and {MAX_TOOL_TIMEOUT_S}"),
        );
    }
}

fn check_url(url: &str, path: &str, errors: &mut Errors) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {}
        _ => errors.push(path, format!("{url:?} is not an http:// or https:// URL")),
    }
}

/// Bearer tokens (operator, metrics) shorter than this are refused; 16
/// characters of a random token are far beyond guessing over the network.
const MIN_TOKEN: usize = 16;
/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
const MIN_HMAC_SECRET: usize = 32;

fn validate(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigErrors> {
    let mut errors = Errors(Vec::new());

    if config.server.retention_interval_s < 60 {
        errors.push("server.retention_interval_s", "must be at least 60");
    }
    if config.auth.failures_per_minute_per_credential == 0 {
        errors.push(
            "auth.failures_per_minute_per_credential",
            "must be at least 1",
        );
    }
    if config.auth.failures_per_minute_per_peer == 0 {
        errors.push("auth.failures_per_minute_per_peer", "must be at least 1");
    }
    if config.server.request_timeout_s == 0 {
        errors.push("server.request_timeout_s", "must be at least 1");
    }
    if config.server.max_body_bytes < 1024 {
        errors.push("server.max_body_bytes", "must be at least 1024");
    }
    if config.server.data_dir.as_os_str().is_empty() {
        errors.push("server.data_dir", "must not be empty");
    }
    validate_connections(&config.server, &mut errors);
    if let Some(e) = config.server.metrics_exposure_error() {
        errors.0.push(e);
    }

    let tokens = [
        (&mut config.server.metrics_token, "server.metrics_token"),
        (&mut config.operator.token, "operator.token"),
    ];
    for (token, path) in tokens {
        let Some(token) = token else { continue };
        resolve(token, path, env, &mut errors);
        let len = token.value.expose().chars().count();
        if len > 0 && len < MIN_TOKEN {
            errors.push(
                path,
                format!("the token must be at least {MIN_TOKEN} characters"),
            );
        }
    }

    validate_issuers(config, env, &mut errors);
    validate_resources(config, env, &mut errors);
    config.egress.rules.clear();
    for (i, entry) in config.egress.allow_hosts.iter().enumerate() {
        match EgressRule::parse(entry) {
            Ok(rule) => config.egress.rules.push(rule),
            Err(e) => errors.push(format!("egress.allow_hosts[{i}]"), e),
        }
    }

    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors.0))
    }
}

/// The connection limits: hyper refuses a buffer under 8 KiB, and a zero
/// anywhere would refuse every client.
fn validate_connections(server: &ServerConfig, errors: &mut Errors) {
    if !(1..=300).contains(&server.header_read_timeout_s) {
        errors.push("server.header_read_timeout_s", "must be between 1 and 300");
    }
    if !(1..=3600).contains(&server.keepalive_idle_s) {
        errors.push("server.keepalive_idle_s", "must be between 1 and 3600");
    }
    if server.max_connections == 0 {
        errors.push("server.max_connections", "must be at least 1");
    }
    if server.max_connections_per_peer == 0 {
        errors.push("server.max_connections_per_peer", "must be at least 1");
    } else if server.max_connections_per_peer > server.max_connections {
        errors.push(
            "server.max_connections_per_peer",
            "must be at most server.max_connections",
        );
    }
    if !(8192..=1024 * 1024).contains(&server.max_header_bytes) {
        errors.push(
            "server.max_header_bytes",
            "must be between 8192 and 1048576",
        );
    }
    if !(1..=1000).contains(&server.max_headers) {
        errors.push("server.max_headers", "must be between 1 and 1000");
    }
    if server.metrics_max_tenants > 100_000 {
        errors.push("server.metrics_max_tenants", "must be at most 100000");
    }
}

fn validate_issuers(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    let mut issuers = BTreeSet::new();
    for (i, jwt) in config.auth.jwt.iter_mut().enumerate() {
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
            let len = secret.value.expose().len();
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

fn validate_resources(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    let providers = check_unique(
        config.providers.iter().map(|p| p.name.as_str()),
        "providers",
        errors,
    );
    let mut provider_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, p) in config.providers.iter_mut().enumerate() {
        check_url(&p.base_url, &format!("providers[{i}].base_url"), errors);
        if p.timeout_s == 0 {
            errors.push(format!("providers[{i}].timeout_s"), "must be at least 1");
        }
        if p.max_retries > 10 {
            errors.push(format!("providers[{i}].max_retries"), "must be at most 10");
        }
        if p.max_concurrency == 0 {
            errors.push(
                format!("providers[{i}].max_concurrency"),
                "must be at least 1",
            );
        }
        if !(1..=MAX_STREAM_IDLE_TIMEOUT_S).contains(&p.stream_idle_timeout_s) {
            errors.push(
                format!("providers[{i}].stream_idle_timeout_s"),
                format!("must be between 1 and {MAX_STREAM_IDLE_TIMEOUT_S}"),
            );
        }
        if !(1024..=MAX_MODEL_RESPONSE_BYTES).contains(&p.max_response_bytes) {
            errors.push(
                format!("providers[{i}].max_response_bytes"),
                format!("must be between 1024 and {MAX_MODEL_RESPONSE_BYTES} (1 GiB)"),
            );
        }
        match (&p.kind, &p.api_version) {
            (ProviderKind::AzureOpenai, None) => errors.push(
                format!("providers[{i}].api_version"),
                "is required for kind \"azure-openai\" (e.g. \"2024-10-21\")",
            ),
            (ProviderKind::AzureOpenai, Some(v))
                if v.is_empty()
                    || v.len() > 32
                    || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                errors.push(
                    format!("providers[{i}].api_version"),
                    format!("{v:?} is not an API version (letters, digits and `-`)"),
                )
            }
            (ProviderKind::Openai | ProviderKind::Anthropic, Some(_)) => errors.push(
                format!("providers[{i}].api_version"),
                "only kind \"azure-openai\" takes an api_version",
            ),
            _ => {}
        }
        if let Some(ProviderCredential::Env(secret)) = &mut p.credential {
            resolve(secret, &format!("providers[{i}].credential"), env, errors);
        }
    }
    for p in &config.providers {
        provider_region.insert(&p.name, &p.region);
    }

    let models = check_unique(
        config.models.iter().map(|m| m.name.as_str()),
        "models",
        errors,
    );
    let mut model_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, m) in config.models.iter().enumerate() {
        if m.upstream.trim().is_empty() {
            errors.push(format!("models[{i}].upstream"), "must not be empty");
        }
        if m.max_output_tokens
            .is_some_and(|t| !(1..=10_000_000).contains(&t))
        {
            errors.push(
                format!("models[{i}].max_output_tokens"),
                "must be between 1 and 10000000",
            );
        }
        match provider_region.get(m.provider.as_str()) {
            Some(r) => {
                model_region.insert(&m.name, r);
            }
            None => errors.push(
                format!("models[{i}].provider"),
                format!("unknown provider {:?}", m.provider),
            ),
        }
    }
    let _ = models;

    let embeddings = check_unique(
        config.embedding_models.iter().map(|m| m.name.as_str()),
        "embedding_models",
        errors,
    );
    let mut embedding_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, m) in config.embedding_models.iter().enumerate() {
        match config.providers.iter().find(|p| p.name == m.provider) {
            None => errors.push(
                format!("embedding_models[{i}].provider"),
                format!("unknown provider {:?}", m.provider),
            ),
            Some(p) if p.kind == ProviderKind::Anthropic => errors.push(
                format!("embedding_models[{i}].provider"),
                format!(
                    "provider {:?} is an anthropic provider, which has no embeddings endpoint",
                    m.provider
                ),
            ),
            Some(p) => {
                embedding_region.insert(&m.name, &p.region);
            }
        }
        if m.dimensions == 0 || m.dimensions > 8192 {
            errors.push(
                format!("embedding_models[{i}].dimensions"),
                "must be between 1 and 8192",
            );
        }
    }
    let _ = &providers;
    if let Some(list) = config
        .knowledge
        .as_ref()
        .and_then(|k| k.embedding_model.as_ref())
    {
        let mut seen_regions: BTreeMap<&Region, &str> = BTreeMap::new();
        let names = list.to_vec();
        for (j, name) in names.iter().enumerate() {
            if let Some(region) = embedding_region.get(name.as_str())
                && let Some(other) = seen_regions.insert(region, name)
            {
                let path = format!("knowledge.embedding_model[{j}]");
                errors.push(
                    path,
                    format!(
                        "{name:?} and {other:?} are both in region {:?}: name one embedding model per region",
                        region.as_str()
                    ),
                );
            }
            if !embeddings.contains(name) {
                let path = match list {
                    OneOrMany::One(_) => "knowledge.embedding_model".to_owned(),
                    OneOrMany::Many(_) => format!("knowledge.embedding_model[{j}]"),
                };
                errors.push(path, format!("unknown embedding model {name:?}"));
            }
        }
    }

    check_unique(
        config.tools.iter().map(|t| t.name.as_str()),
        "tools",
        errors,
    );
    let mut tool_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, t) in config.tools.iter().enumerate() {
        let p = format!("tools[{i}]");
        tool_region.insert(&t.name, &t.region);
        match &t.base_url {
            Some(_) if t.kind == ToolKind::Http && t.url.is_some() => errors.push(
                format!("{p}.base_url"),
                "set url (a URL template) or base_url (the model names the path), not both",
            ),
            Some(url) => check_url(url, &format!("{p}.base_url"), errors),
            None if t.kind != ToolKind::Http => {
                errors.push(format!("{p}.base_url"), "is required for this tool kind")
            }
            None => {}
        }
        check_tool_request(t, &p, errors);
        match &t.connection {
            Some(c) if !is_connection_name(c) => errors.push(
                format!("{p}.connection"),
                format!("{c:?} is not a connection name (1-64 characters [a-z0-9_-])"),
            ),
            None if t.kind != ToolKind::Http => {
                errors.push(format!("{p}.connection"), "is required for this tool kind")
            }
            _ => {}
        }
        if t.kind == ToolKind::Http {
            if t.allowed_hosts.is_empty() {
                errors.push(
                    format!("{p}.allowed_hosts"),
                    "an http tool needs at least one allowed host",
                );
            }
        } else if !t.allowed_hosts.is_empty() {
            errors.push(
                format!("{p}.allowed_hosts"),
                "only http tools take allowed_hosts",
            );
        }
        for (j, h) in t.allowed_hosts.iter().enumerate() {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                errors.push(
                    format!("{p}.allowed_hosts[{j}]"),
                    format!("{h:?} is not \"host:port\""),
                );
            }
        }
    }

    check_unique(
        config.agents.iter().map(|a| a.name.as_str()),
        "agents",
        errors,
    );
    for (i, a) in config.agents.iter().enumerate() {
        let p = format!("agents[{i}]");
        match (&a.prompt, &a.prompt_file) {
            (Some(_), Some(_)) => errors.push(p.clone(), "set prompt or prompt_file, not both"),
            (None, None) => errors.push(p.clone(), "set prompt or prompt_file"),
            (None, Some(f)) if f.is_absolute() || f.components().any(|c| c.as_os_str() == "..") => {
                errors.push(
                    format!("{p}.prompt_file"),
                    "must be a relative path inside the prompts directory",
                )
            }
            _ => {}
        }
        if a.max_steps == 0 || a.max_steps > 100 {
            errors.push(format!("{p}.max_steps"), "must be between 1 and 100");
        }
        if a.max_tokens == 0 || a.max_tokens > 100_000_000 {
            errors.push(format!("{p}.max_tokens"), "must be between 1 and 100000000");
        }
        if a.context_tokens < 256 || a.context_tokens > 10_000_000 {
            errors.push(
                format!("{p}.context_tokens"),
                "must be between 256 and 10000000",
            );
        }
        if a.timeout_s == 0 || a.timeout_s > 86_400 {
            errors.push(format!("{p}.timeout_s"), "must be between 1 and 86400");
        }
        if a.max_tool_calls_per_round == 0 || a.max_tool_calls_per_round > 1_000 {
            errors.push(
                format!("{p}.max_tool_calls_per_round"),
                "must be between 1 and 1000",
            );
        }
        if a.max_tool_calls_per_run < a.max_tool_calls_per_round
            || a.max_tool_calls_per_run > 100_000
        {
            errors.push(
                format!("{p}.max_tool_calls_per_run"),
                "must be between max_tool_calls_per_round and 100000",
            );
        }
        if a.max_tool_result_bytes < 256 || a.max_tool_result_bytes > 16 * 1024 * 1024 {
            errors.push(
                format!("{p}.max_tool_result_bytes"),
                "must be between 256 and 16777216",
            );
        }
        if a.max_tool_result_bytes_per_round < a.max_tool_result_bytes
            || a.max_tool_result_bytes_per_round > 64 * 1024 * 1024
        {
            errors.push(
                format!("{p}.max_tool_result_bytes_per_round"),
                "must be between max_tool_result_bytes and 67108864",
            );
        }
        let region = model_region.get(a.model.as_str()).copied();
        if region.is_none() {
            errors.push(format!("{p}.model"), format!("unknown model {:?}", a.model));
        }
        for (j, tool) in a.tools.iter().enumerate() {
            match (tool_region.get(tool.as_str()), region) {
                (None, _) => errors.push(format!("{p}.tools[{j}]"), format!("unknown tool {tool:?}")),
                (Some(tr), Some(mr)) if tr != &mr => errors.push(
                    format!("{p}.tools[{j}]"),
                    format!(
                        "tool {tool:?} is in region {tr:?} but the agent's model {:?} is in region {mr:?}: a tenant's data may only flow to resources of its own region",
                        a.model,
                        tr = tr.as_str(),
                        mr = mr.as_str()
                    ),
                ),
                _ => {}
            }
        }
    }

    let kms = &config.kms;
    match kms.provider {
        KmsProvider::Local => {
            for (key, set) in [
                ("key_id", kms.key_id.is_some()),
                ("region", kms.region.is_some()),
                ("endpoint_url", kms.endpoint_url.is_some()),
            ] {
                if set {
                    errors.push(
                        format!("kms.{key}"),
                        "only the aws-kms provider takes this key",
                    );
                }
            }
        }
        KmsProvider::AwsKms => {
            if kms.key_id.as_deref().is_none_or(|k| k.trim().is_empty()) {
                errors.push("kms.key_id", "is required for provider \"aws-kms\"");
            }
            if kms.region.as_deref().is_none_or(|r| r.trim().is_empty()) {
                errors.push("kms.region", "is required for provider \"aws-kms\"");
            }
            if let Some(url) = &kms.endpoint_url {
                check_url(url, "kms.endpoint_url", errors);
            }
        }
    }

    if config.limits.backend == LimitsBackend::Redis {
        match &config.limits.redis_url {
            Some(u) if u.starts_with("redis://") => {}
            Some(u) if u.starts_with("rediss://") => errors.push(
                "limits.redis_url",
                "rediss:// (TLS) is not supported by this build; use redis:// on a trusted network",
            ),
            // Not echoed: the URL may carry a password.
            Some(_) => errors.push("limits.redis_url", "is not a redis:// URL"),
            None => errors.push("limits.redis_url", "is required when backend = \"redis\""),
        }
    }
    if !(1..=MAX_APPROVAL_TTL_S).contains(&config.approvals.ttl_s) {
        errors.push(
            "approvals.ttl_s",
            format!("must be between 1 and {MAX_APPROVAL_TTL_S} (30 days)"),
        );
    }
    if config.approvals.sweep_interval_s < 10 {
        errors.push("approvals.sweep_interval_s", "must be at least 10");
    }
    if config.limits.reservation_ttl_s == 0 {
        errors.push("limits.reservation_ttl_s", "must be at least 1");
    }
    if config.limits.vector_cache_mb == 0 || config.limits.vector_cache_mb > 1 << 20 {
        errors.push("limits.vector_cache_mb", "must be between 1 and 1048576");
    }
    if config.limits.max_concurrent_runs == Some(0) {
        errors.push("limits.max_concurrent_runs", "must be at least 1");
    }
    for (key, message) in config.quotas.default.problems() {
        errors.push(format!("quotas.default.{key}"), message);
    }
    for t in &config.quotas.alerts.thresholds {
        if *t == 0 || *t > 1000 {
            errors.push(
                "quotas.alerts.thresholds",
                format!("{t} is not a percentage between 1 and 1000"),
            );
        }
    }
    if let Some(key) = &mut config.quotas.alerts.signing_key {
        resolve(key, "quotas.alerts.signing_key", env, errors);
    }
    if let Some(key) = &mut config.approvals.signing_key {
        resolve(key, "approvals.signing_key", env, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
            "OP" => Some("operator-token-0123456789".into()),
            "SHORT" => Some("short".into()),
            "EMPTY" => Some(String::new()),
            "KEY" => Some("sk-test".into()),
            _ => None,
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text, &env) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// One table-driven check: each input yields exactly these error lines
    /// (each line's prefix up to the message start).
    fn check(text: &str, expected: &[&str]) {
        let got = errors(text);
        assert_eq!(got.len(), expected.len(), "input:\n{text}\ngot: {got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "expected {e:?}, got {g:?}");
        }
    }

    #[test]
    fn connection_limits_have_safe_defaults_and_are_checked_by_key() {
        let c = load("", &env).unwrap().server;
        assert_eq!(
            (
                c.header_read_timeout_s,
                c.keepalive_idle_s,
                c.max_connections,
                c.max_connections_per_peer,
                c.max_header_bytes,
                c.max_headers,
                c.metrics_max_tenants,
                c.metrics_public,
            ),
            (10, 60, 10_000, 256, 16_384, 100, 1000, false)
        );
        check(
            "[server]\nheader_read_timeout_s = 0\nkeepalive_idle_s = 0\nmax_connections = 0\n\
             max_connections_per_peer = 0\nmax_header_bytes = 100\nmax_headers = 0\n\
             metrics_max_tenants = 100001",
            &[
                "server.header_read_timeout_s: must be between 1 and 300",
                "server.keepalive_idle_s: must be between 1 and 3600",
                "server.max_connections: must be at least 1",
                "server.max_connections_per_peer: must be at least 1",
                "server.max_header_bytes: must be between 8192",
                "server.max_headers: must be between 1 and 1000",
                "server.metrics_max_tenants: must be at most 100000",
            ],
        );
        check(
            "[server]\nmax_connections = 10\nmax_connections_per_peer = 11",
            &["server.max_connections_per_peer: must be at most server.max_connections"],
        );
        let c = load(
            "[server]\nheader_read_timeout_s = 1\nkeepalive_idle_s = 2\nmax_connections = 3\n\
             max_connections_per_peer = 3\nmax_header_bytes = 8192\nmax_headers = 10",
            &env,
        )
        .unwrap()
        .server;
        assert_eq!(
            (c.header_read_timeout_s, c.max_connections_per_peer),
            (1, 3)
        );
    }

    /// Public metrics name tenants: a non-loopback listen needs a token or
    /// the operator's explicit `metrics_public = true`.
    #[test]
    fn a_non_loopback_listen_needs_a_metrics_token_or_metrics_public() {
        for listen in ["0.0.0.0:8080", "10.1.2.3:80", "[::]:8080"] {
            check(
                &format!("[server]\nlisten = \"{listen}\""),
                &["server.metrics_token: is required when listen"],
            );
            load(
                &format!("[server]\nlisten = \"{listen}\"\nmetrics_token = \"env:OP\""),
                &env,
            )
            .unwrap();
            load(
                &format!("[server]\nlisten = \"{listen}\"\nmetrics_public = true"),
                &env,
            )
            .unwrap();
        }
        for listen in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"] {
            load(&format!("[server]\nlisten = \"{listen}\""), &env).unwrap();
        }
    }

    #[test]
    fn agent_fan_out_limits_default_safely_and_are_checked_by_key() {
        let base = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://x\"\nregion = \"eu\"\ncredential = \"env:KEY\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nupstream = \"u\"\n[[agents]]\nname = \"a\"\nmodel = \"m\"\nprompt = \"x\"\n";
        let c = load(base, &env).unwrap();
        let a = &c.agents[0];
        assert_eq!(
            (
                a.max_tool_calls_per_round,
                a.max_tool_calls_per_run,
                a.max_tool_result_bytes,
                a.max_tool_result_bytes_per_round
            ),
            (16, 64, 32_768, 131_072)
        );
        check(
            &format!(
                "{base}max_tool_calls_per_round = 0\nmax_tool_calls_per_run = 10\nmax_tool_result_bytes = 100\nmax_tool_result_bytes_per_round = 1000\n"
            ),
            &[
                "agents[0].max_tool_calls_per_round: must be between 1 and 1000",
                "agents[0].max_tool_result_bytes: must be between 256",
            ],
        );
        check(
            &format!(
                "{base}max_tool_calls_per_round = 20\nmax_tool_calls_per_run = 10\nmax_tool_result_bytes_per_round = 1000\n"
            ),
            &[
                "agents[0].max_tool_calls_per_run: must be between max_tool_calls_per_round",
                "agents[0].max_tool_result_bytes_per_round: must be between max_tool_result_bytes",
            ],
        );
    }

    #[test]
    fn egress_rules_parse_each_form_and_name_the_bad_entry() {
        let c = load(
            "[egress]\nallow_http = true\nallow_hosts = [\"10.0.0.0/8\", \"127.0.0.1:8089\", \"[fd00::5]:443\", \"Jira.Internal.:443\"]\n",
            &env,
        )
        .unwrap();
        assert!(c.egress.allow_http);
        assert_eq!(
            c.egress.rules,
            vec![
                EgressRule::Net("10.0.0.0/8".parse().unwrap()),
                EgressRule::Addr("127.0.0.1:8089".parse().unwrap()),
                EgressRule::Addr("[fd00::5]:443".parse().unwrap()),
                EgressRule::Host {
                    host: "jira.internal".into(),
                    port: 443
                },
            ]
        );
        let d = load("", &env).unwrap();
        assert!(!d.egress.allow_http && d.egress.rules.is_empty());
        check(
            "[egress]\nallow_hosts = [\"10.0.0.1/8\", \"10.0.0.1\", \"jira\", \"jira:0\", \"a b:80\", \"0x7f.1:80\", \"10.0.0.0/33\", \"ok.example:443\"]\n",
            &[
                "egress.allow_hosts[0]: \"10.0.0.1/8\" has bits set past its prefix; did you mean \"10.0.0.0/8\"",
                "egress.allow_hosts[1]: \"10.0.0.1\" has no port",
                "egress.allow_hosts[2]: \"jira\" has no port",
                "egress.allow_hosts[3]: \"jira:0\": the port must be 1-65535",
                "egress.allow_hosts[4]: \"a b:80\" is not a host name",
                "egress.allow_hosts[5]: \"0x7f.1:80\" is not a host name",
                "egress.allow_hosts[6]: \"10.0.0.0/33\" is not a network",
            ],
        );
    }

    #[test]
    fn approval_settings_are_checked_by_key() {
        let c = load("", &env).unwrap();
        assert_eq!(
            (c.approvals.ttl_s, c.approvals.sweep_interval_s),
            (86_400, 300)
        );
        assert!(c.approvals.signing_key.is_none());
        check(
            "[approvals]\nttl_s = 0\nsweep_interval_s = 5\nsigning_key = \"env:NOPE\"",
            &[
                "approvals.ttl_s",
                "approvals.sweep_interval_s",
                "approvals.signing_key",
            ],
        );
        check("[approvals]\nttl_s = 2592001", &["approvals.ttl_s"]);
        check("[approvals]\nttl = 60", &["approvals.ttl"]);
        let c = load("[approvals]\nttl_s = 60\nsigning_key = \"env:KEY\"", &env).unwrap();
        assert_eq!(c.approvals.ttl_s, 60);
        assert!(c.approvals.signing_key.is_some());
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = load("", &env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.data_dir, PathBuf::from(".bulkhead"));
        assert!(c.operator.token.is_none());
    }

    #[test]
    fn full_contract_example_loads() {
        let text = r#"
[server]
listen   = "127.0.0.1:9000"
data_dir = "/tmp/x"
[operator]
token = "env:OP"
[[auth.jwt]]
issuer       = "https://idp.example.com"
audience     = "bulkhead"
algorithms   = ["HS256"]
secret       = "env:JWT_SECRET"
tenant_claim = "tenant_id"
roles_claim  = "roles"
[[providers]]
name       = "openai-eu"
kind       = "openai"
base_url   = "https://api.openai.com/v1"
region     = "eu"
credential = "env:KEY"
[[providers]]
name = "own"
kind = "anthropic"
base_url = "https://api.anthropic.com"
region = "eu"
credential = "tenant:anthropic"
[[models]]
name     = "small"
provider = "openai-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok  = "0.15"
price_output_per_mtok = "0.60"
[[tools]]
name       = "notify"
kind       = "slack"
base_url   = "https://slack.com/api"
region     = "eu"
connection = "slack"
[[tools]]
name = "web"
kind = "http"
region = "eu"
allowed_hosts = ["example.com:443"]
method = "POST"
url = "https://example.com/search?q={{ q }}"
body = '{"q": {{ q }}}'
timeout_s = 10
max_response_bytes = 1024
[tools.parameters]
type = "object"
required = ["q"]
properties.q = { type = "string", maxLength = 100 }
[[agents]]
name      = "support"
model     = "small"
prompt    = "You are the assistant of {{ tenant.name }}."
tools     = ["notify", "web"]
max_steps = 8
[[embedding_models]]
name = "embed"
provider = "openai-eu"
upstream = "text-embedding-3-small"
dimensions = 1536
price_input_per_mtok = "0.02"
[knowledge]
embedding_model = "embed"
[quotas.default]
requests_per_minute = 600
daily_budget_usd = "50"
[limits]
backend = "redis"
redis_url = "redis://127.0.0.1:6379"
[policies]
file = "policies.cedar"
"#;
        let c = load(text, &env).unwrap();
        assert_eq!(
            c.operator.token.unwrap().value().expose(),
            "operator-token-0123456789"
        );
        assert_eq!(c.auth.jwt[0].algorithms, vec![JwtAlgorithm::HS256]);
        assert_eq!(c.models[0].price_output_per_mtok.unwrap().micros(), 600_000);
        assert!(
            matches!(c.providers[1].credential, Some(ProviderCredential::Tenant(ref n)) if n == "anthropic")
        );
        let web = &c.tools[1];
        assert_eq!(web.method.as_deref(), Some("POST"));
        assert_eq!(
            web.parameters.as_ref().unwrap()["properties"]["q"]["maxLength"],
            100
        );
        assert_eq!((web.timeout_s, web.max_response_bytes), (10, 1024));
        assert_eq!(
            (c.tools[0].timeout_s, c.tools[0].max_response_bytes),
            (30, 65_536)
        );
    }

    #[test]
    fn tool_request_keys_are_checked_per_kind() {
        let slack = "[[tools]]\nname = \"s\"\nkind = \"slack\"\nbase_url = \"https://slack.com\"\nregion = \"eu\"\nconnection = \"slack\"\n";
        let http = "[[tools]]\nname = \"h\"\nkind = \"http\"\nregion = \"eu\"\nallowed_hosts = [\"x:443\"]\n";
        let url = "url = \"https://x/{{ a }}\"\n";
        let params = "parameters = { type = \"object\" }\n";
        check(&format!("{http}{url}{params}"), &[]);
        check(
            &format!(
                "{slack}method = \"POST\"\nurl = \"https://x\"\nbody = \"{{}}\"\nparameters = {{ type = \"object\" }}\n"
            ),
            &[
                "tools[0].method: only http tools take this key",
                "tools[0].url: only http tools take this key",
                "tools[0].body: only http tools take this key",
                "tools[0].parameters: connectors have built-in parameters",
            ],
        );
        check(
            http,
            &[
                "tools[0].url: http tools need url (a URL template) or base_url",
                "tools[0].parameters: is required for http tools",
            ],
        );
        check(
            &format!("{http}url = \" \"\nparameters = [1]\nmethod = \"get\"\n"),
            &[
                "tools[0].method: \"get\" is not one of",
                "tools[0].url: must not be empty",
                "tools[0].parameters: must be a JSON Schema object",
            ],
        );
        check(
            &format!("{http}{url}{params}body = \"{{}}\"\n"),
            &["tools[0].body: a GET request has no body"],
        );
        check(
            &format!("{http}{url}{params}base_url = \"https://x\"\n"),
            &["tools[0].base_url: set url (a URL template) or base_url"],
        );
        // The contract's form: base_url and allowed_hosts, connection
        // optional, no parameters (the model names method, path, query and
        // body).
        let c = load(
            &format!("{http}base_url = \"https://api.example.com/v2\"\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            c.tools[0].base_url.as_deref(),
            Some("https://api.example.com/v2")
        );
        check(
            &format!("{http}base_url = \"https://api.example.com\"\n{params}"),
            &["tools[0].parameters: an http tool with base_url takes method, path, query and body"],
        );
        check(
            &format!("{slack}timeout_s = 0\nmax_response_bytes = 0\n"),
            &[
                "tools[0].max_response_bytes: must be between 1 and 16777216",
                "tools[0].timeout_s: must be between 1 and 300",
            ],
        );
        check(
            &format!("{slack}timeout_s = 301\nmax_response_bytes = 16777217\n"),
            &[
                "tools[0].max_response_bytes: must be between 1",
                "tools[0].timeout_s: must be between 1",
            ],
        );
        check(
            &format!("{slack}timeout_s = 300\nmax_response_bytes = 16777216\n"),
            &[],
        );
    }

    #[test]
    fn bad_files_name_the_key() {
        let jwt = |algs: &str, key: &str| {
            format!("[[auth.jwt]]\nissuer = \"i\"\naudience = \"a\"\nalgorithms = {algs}\n{key}\n")
        };
        check("[server]\nlisten = 5\n", &["server.listen: invalid type"]);
        check("[server]\nbogus = 1\n", &["server.bogus: unknown field"]);
        check("surprise = true\n", &["surprise: unknown field"]);
        check("[server\n", &["invalid table header"]);
        check(
            "[server]\nlisten = \"nope\"\n",
            &["server.listen: invalid socket address"],
        );
        check(
            "[operator]\ntoken = \"plain-text-token\"\n",
            &["operator.token: secrets are not written in the file"],
        );
        check(
            "[operator]\ntoken = \"env:MISSING\"\n",
            &["operator.token: environment variable MISSING is not set"],
        );
        check(
            "[operator]\ntoken = \"env:EMPTY\"\n",
            &["operator.token: environment variable EMPTY is empty"],
        );
        check(
            "[operator]\ntoken = \"env:SHORT\"\n",
            &["operator.token: the token must be at least 16"],
        );
        check(
            &jwt(r#"["HS256", "none"]"#, "secret = \"env:JWT_SECRET\""),
            &["auth.jwt[0].algorithms[1]: \"none\" is not allowed"],
        );
        check(
            &jwt(r#"["HS256", "XX1"]"#, "secret = \"env:JWT_SECRET\""),
            &["auth.jwt[0].algorithms[1]: unknown algorithm"],
        );
        check(
            &jwt(r#"["RS256", "HS256"]"#, "public_key_file = \"k.pem\""),
            &["auth.jwt[0].algorithms[1]: HS256 needs a secret"],
        );
        check(
            &jwt(r#"["RS256"]"#, "secret = \"env:JWT_SECRET\""),
            &["auth.jwt[0].algorithms[0]: RS256 needs public_key_file"],
        );
        check(
            &jwt(r#"["HS256"]"#, "secret = \"env:SHORT\""),
            &["auth.jwt[0].secret: an HMAC secret must be at least 32"],
        );
        check(
            &jwt(r#"["HS256"]"#, ""),
            &["auth.jwt[0]: set exactly one of"],
        );
        check(
            &jwt("[]", "jwks_file = \"j.json\""),
            &["auth.jwt[0].algorithms: list at least one"],
        );
        check(
            &jwt(
                r#"["RS256"]"#,
                "jwks_file = \"j.json\"\njwks_url = \"https://idp/keys\"",
            ),
            &["auth.jwt[0]: set exactly one of secret, public_key_file, jwks_file, jwks_url"],
        );
        check(
            &jwt(r#"["RS256"]"#, "jwks_url = \"http://idp.example.com/keys\""),
            &[
                "auth.jwt[0].jwks_url: \"http://idp.example.com/keys\": http:// is allowed only to a loopback host",
            ],
        );
        check(
            &jwt(r#"["RS256"]"#, "jwks_url = \"ftp://idp/keys\""),
            &["auth.jwt[0].jwks_url: \"ftp://idp/keys\": must be an https:// URL"],
        );
        check(
            &jwt(
                r#"["RS256"]"#,
                "jwks_url = \"http://127.0.0.1:9/keys\"\njwks_min_refresh_s = 600\njwks_max_refresh_s = 60\njwks_refetch_interval_s = 0",
            ),
            &[
                "auth.jwt[0].jwks_refetch_interval_s: must be between 1 and 3600",
                "auth.jwt[0].jwks_max_refresh_s: must be at least jwks_min_refresh_s",
            ],
        );
        check(
            &jwt(
                r#"["RS256"]"#,
                "jwks_file = \"j.json\"\njwks_min_refresh_s = 5",
            ),
            &["auth.jwt[0].jwks_min_refresh_s: is only for an issuer with jwks_url"],
        );
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8081/jwks",
            "http://[::1]:8081/jwks",
            "http://localhost/jwks",
        ] {
            check(
                &jwt(r#"["RS256", "ES256"]"#, &format!("jwks_url = \"{ok}\"")),
                &[],
            );
        }
        check(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://x\"\nregion = \"EU\"\n",
            &["providers[0].region: region must be"],
        );
        check(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://x\"\nregion = \"eu\"\ncredential = \"sk-live\"\n",
            &["providers[0].credential: credential must be"],
        );
        check(
            "[[models]]\nname = \"m\"\nprovider = \"ghost\"\nupstream = \"u\"\nprice_input_per_mtok = \"0.1\"\n",
            &["models[0].provider: unknown provider \"ghost\""],
        );
        check(
            "[[models]]\nname = \"m\"\nprovider = \"p\"\nupstream = \"u\"\nprice_input_per_mtok = \"-1\"\n",
            &["models[0].price_input_per_mtok: expected a non-negative decimal"],
        );
        check(
            "[limits]\nbackend = \"redis\"\n",
            &["limits.redis_url: is required"],
        );
    }

    #[test]
    fn azure_openai_needs_an_api_version_and_only_it_takes_one() {
        let base = |kind: &str, extra: &str| {
            format!(
                "[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"https://x.openai.azure.com\"\nregion = \"eu\"\n{extra}"
            )
        };
        let errs = |text: &str| {
            load(text, &|_| None)
                .err()
                .map(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert!(errs(&base("azure-openai", "api_version = \"2024-10-21\"")).is_empty());
        assert!(
            errs(&base("azure-openai", ""))[0].starts_with("providers[0].api_version: is required")
        );
        assert!(
            errs(&base("azure-openai", "api_version = \"x&y=1\""))[0]
                .contains("is not an API version")
        );
        assert!(errs(&base("openai", "api_version = \"2024-10-21\""))[0].contains("only kind"));
    }

    #[test]
    fn model_call_limits_have_safe_defaults_and_are_checked_by_key() {
        let base = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\nregion = \"eu\"\n";
        let model = "[[models]]\nname = \"m\"\nprovider = \"p\"\nupstream = \"gpt\"\n";
        let c = load(&format!("{base}{model}"), &|_| None).unwrap();
        assert_eq!(c.providers[0].stream_idle_timeout_s, 60);
        assert_eq!(c.providers[0].max_response_bytes, 16 * 1024 * 1024);
        assert_eq!(c.models[0].max_output_tokens, None);
        let errs = |extra: &str, model_extra: &str| {
            load(&format!("{base}{extra}\n{model}{model_extra}"), &|_| None)
                .err()
                .map(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(
            errs(
                "stream_idle_timeout_s = 0\nmax_response_bytes = 10",
                "max_output_tokens = 0"
            ),
            [
                "providers[0].stream_idle_timeout_s: must be between 1 and 3600",
                "providers[0].max_response_bytes: must be between 1024 and 1073741824 (1 GiB)",
                "models[0].max_output_tokens: must be between 1 and 10000000",
            ]
        );
        assert!(
            errs(
                "stream_idle_timeout_s = 3600\nmax_response_bytes = 1024",
                "max_output_tokens = 128000"
            )
            .is_empty()
        );
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let text = r#"
[[auth.jwt]]
issuer = ""
audience = "a"
algorithms = ["none", "HS256"]
secret = "env:MISSING"
[[providers]]
name = "p-eu"
kind = "openai"
base_url = "https://x"
region = "eu"
[[models]]
name = "m"
provider = "p-eu"
upstream = "u"
[[tools]]
name = "slack-us"
kind = "slack"
base_url = "https://slack.com/api"
region = "us"
connection = "slack"
[[agents]]
name = "a"
model = "m"
prompt = "hi"
tools = ["slack-us", "ghost"]
"#;
        check(
            text,
            &[
                "auth.jwt[0].issuer: must not be empty",
                "auth.jwt[0].algorithms[0]: \"none\" is not allowed",
                "auth.jwt[0].secret: environment variable MISSING is not set",
                "agents[0].tools[0]: tool \"slack-us\" is in region \"us\" but the agent's model \"m\" is in region \"eu\"",
                "agents[0].tools[1]: unknown tool \"ghost\"",
            ],
        );
    }
}
