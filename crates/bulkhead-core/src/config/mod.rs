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
//! Each section has its own module holding its types and its checks; this
//! one holds [`Config`], [`load`], and the order the sections are checked
//! in, with the checks that span sections (an agent's model and tools must
//! exist and share a region).
//!
//! Secrets are never literal in the file: a secret key takes `"env:NAME"`,
//! and the environment is passed in as a function so this crate stays free
//! of I/O and tests can supply their own.

mod agents;
mod alerting;
mod approvals;
pub mod audit;
mod auth;
mod egress;
mod error;
mod kms;
mod knowledge;
mod limits;
mod names;
mod operator;
mod policies;
mod providers;
mod quotas;
pub mod regions;
mod secret;
mod server;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod tools;

use serde::Deserialize;

pub use agents::AgentConfig;
pub use alerting::{AlertingConfig, valid_webhook};
pub use approvals::{ApprovalsConfig, MAX_APPROVAL_TTL_S};
pub use audit::{AuditConfig, NatsConfig};
pub use auth::{AuthConfig, JwtAlgorithm, JwtIssuerConfig, JwtKeySource, KeyFamily};
pub use egress::{EgressConfig, EgressRule};
use error::Errors;
pub use error::{ConfigError, ConfigErrors};
pub use kms::{KmsConfig, KmsProvider};
pub use knowledge::{EmbeddingModelConfig, KnowledgeConfig, OneOrMany};
pub use limits::{LimitsBackend, LimitsConfig};
pub use names::is_connection_name;
pub use operator::OperatorConfig;
pub use policies::PoliciesConfig;
pub use providers::{
    DEFAULT_MAX_OUTPUT_TOKENS, MAX_MODEL_RESPONSE_BYTES, MAX_STREAM_IDLE_TIMEOUT_S, ModelConfig,
    ProviderConfig, ProviderCredential, ProviderKind,
};
pub use quotas::{AlertsConfig, QuotaValues, QuotasConfig};
pub use regions::RegionConfig;
pub use secret::ConfigSecret;
pub use server::ServerConfig;
pub use telemetry::TelemetryConfig;
pub use tools::{
    ApprovalMode, MAX_TOOL_RESPONSE_BYTES, MAX_TOOL_TIMEOUT_S, Risk, TOOL_HTTP_METHODS, ToolConfig,
    ToolKind,
};

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
    /// `[[regions]]` (empty: derived, see [`regions::known`])
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
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
    /// `[audit]`
    #[serde(default)]
    pub audit: audit::AuditConfig,
    /// `[[alerts]]`: the platform's default alert rules.
    #[serde(default)]
    pub alerts: Vec<crate::alert::AlertRule>,
    /// `[alerting]`
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// `[telemetry]`
    #[serde(default)]
    pub telemetry: TelemetryConfig,
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

/// Checks every section, in file order, and collects every error. The
/// sections that later ones refer to (providers before models, models and
/// tools before agents) come first and answer what the later checks need.
fn validate(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigErrors> {
    let mut errors = Errors(Vec::new());
    server::validate(&mut config.server, env, &mut errors);
    operator::validate(&mut config.operator, env, &mut errors);
    auth::validate(&mut config.auth, env, &mut errors);
    providers::validate_providers(&mut config.providers, env, &mut errors);
    let model_region = providers::validate_models(&config.models, &config.providers, &mut errors);
    knowledge::validate(
        &config.embedding_models,
        config.knowledge.as_ref(),
        &config.providers,
        &mut errors,
    );
    let tool_region = tools::validate(&config.tools, &mut errors);
    agents::validate(&config.agents, &model_region, &tool_region, &mut errors);
    kms::validate(&config.kms, &mut errors);
    limits::validate(&config.limits, &mut errors);
    approvals::validate(&mut config.approvals, env, &mut errors);
    audit::validate(&mut config.audit, env, &mut errors);
    quotas::validate(&mut config.quotas, env, &mut errors);
    egress::validate(&mut config.egress, &mut errors);
    alerting::validate(&config.alerts, &mut config.alerting, env, &mut errors);
    telemetry::validate(&mut config.telemetry, env, &mut errors);
    // Last: it spans the sections above (the default, providers, tools).
    regions::validate(config, &mut errors);
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors.0))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::testing::{check, env};
    use super::*;

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
                "tools[0].region: \"us\" is not one of this deployment's regions (eu, local)",
            ],
        );
    }
}
