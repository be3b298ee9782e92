//! `[[providers]]` and `[[models]]`: the model endpoints, their wire
//! formats, limits and keys, and the chat models served through them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::error::Errors;
use super::names::{check_unique, check_url, is_connection_name};
use super::secret::{ConfigSecret, resolve};
use crate::Region;
use crate::money::Usd;

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

/// `[[providers]]`: names, URLs, ranges, the `api_version` only Azure
/// takes, and platform keys from the environment.
pub(super) fn validate_providers(
    providers: &mut [ProviderConfig],
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    check_unique(
        providers.iter().map(|p| p.name.as_str()),
        "providers",
        errors,
    );
    for (i, p) in providers.iter_mut().enumerate() {
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
}

/// `[[models]]`: names, ranges and a known provider. Answers each model's
/// region (its provider's), which the agents' residency check needs.
pub(super) fn validate_models<'a>(
    models: &'a [ModelConfig],
    providers: &'a [ProviderConfig],
    errors: &mut Errors,
) -> BTreeMap<&'a str, &'a Region> {
    let provider_region: BTreeMap<&str, &Region> = providers
        .iter()
        .map(|p| (p.name.as_str(), &p.region))
        .collect();
    check_unique(models.iter().map(|m| m.name.as_str()), "models", errors);
    let mut model_region = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
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
                model_region.insert(m.name.as_str(), *r);
            }
            None => errors.push(
                format!("models[{i}].provider"),
                format!("unknown provider {:?}", m.provider),
            ),
        }
    }
    model_region
}

#[cfg(test)]
mod tests {
    use crate::config::*;

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
}
