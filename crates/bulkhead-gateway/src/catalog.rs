//! Providers and models from the configuration, resolved once at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_core::config::{Config, ProviderCredential, ProviderKind};
use bulkhead_core::money::Usd;
use bulkhead_core::{Region, SecretString};

/// Where a provider's key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// No key (a local server).
    None,
    /// The platform's key, resolved from the environment at start.
    Platform(SecretString),
    /// The calling tenant's own key, from this vault connection.
    Tenant(String),
}

/// One upstream provider.
#[derive(Debug)]
pub struct Provider {
    /// Name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Residency region.
    pub region: Region,
    /// Key source.
    pub key: KeySource,
    /// Per-attempt timeout (and idle timeout between stream chunks).
    pub timeout: Duration,
    /// Retries after 429/5xx.
    pub max_retries: u32,
    /// The longest a stream may go without bytes moving, either way.
    pub stream_idle: Duration,
    /// The most bytes of one answer (a body, or a whole stream).
    pub max_response_bytes: usize,
    /// Caps calls in flight; when they are all taken, tenants are
    /// admitted by weighted fair queueing.
    pub permits: bulkhead_quota::FairGate,
    /// `azure-openai`: the `api-version` query parameter.
    pub api_version: Option<String>,
}

/// One model alias.
#[derive(Debug, Clone)]
pub struct Model {
    /// The name clients send.
    pub name: String,
    /// Its provider.
    pub provider: Arc<Provider>,
    /// The name sent upstream.
    pub upstream: String,
    /// USD per million input tokens.
    pub price_input: Usd,
    /// USD per million output tokens.
    pub price_output: Usd,
    /// USD per million cached input tokens (input price when unset).
    pub price_cached: Usd,
    /// Output tokens of one choice when the request sets no limit.
    pub max_output_tokens: u64,
}

/// All models by alias.
#[derive(Debug, Default)]
pub struct Catalog {
    models: BTreeMap<String, Model>,
    embeddings: BTreeMap<String, (Model, u32)>,
}

impl Catalog {
    /// From a validated configuration (references are known to resolve).
    pub fn from_config(config: &Config) -> Self {
        let providers: BTreeMap<String, Arc<Provider>> = config
            .providers
            .iter()
            .map(|p| {
                let key = match &p.credential {
                    None => KeySource::None,
                    Some(ProviderCredential::Env(secret)) => {
                        KeySource::Platform(secret.value().clone())
                    }
                    Some(ProviderCredential::Tenant(conn)) => KeySource::Tenant(conn.clone()),
                };
                let provider = Provider {
                    name: p.name.clone(),
                    kind: p.kind,
                    base_url: p.base_url.trim_end_matches('/').to_owned(),
                    region: p.region.clone(),
                    key,
                    timeout: Duration::from_secs(p.timeout_s),
                    max_retries: p.max_retries,
                    stream_idle: Duration::from_secs(p.stream_idle_timeout_s),
                    max_response_bytes: usize::try_from(p.max_response_bytes).unwrap_or(usize::MAX),
                    permits: bulkhead_quota::FairGate::new(p.max_concurrency as usize),
                    api_version: p.api_version.clone(),
                };
                (p.name.clone(), Arc::new(provider))
            })
            .collect();
        let models = config
            .models
            .iter()
            .filter_map(|m| {
                let provider = providers.get(&m.provider)?.clone();
                let price_input = m.price_input_per_mtok.unwrap_or_default();
                Some((
                    m.name.clone(),
                    Model {
                        name: m.name.clone(),
                        provider,
                        upstream: m.upstream.clone(),
                        price_input,
                        price_output: m.price_output_per_mtok.unwrap_or_default(),
                        price_cached: m.price_cached_input_per_mtok.unwrap_or(price_input),
                        max_output_tokens: m
                            .max_output_tokens
                            .unwrap_or(bulkhead_core::config::DEFAULT_MAX_OUTPUT_TOKENS),
                    },
                ))
            })
            .collect();
        let embeddings = config
            .embedding_models
            .iter()
            .filter_map(|m| {
                let provider = providers.get(&m.provider)?.clone();
                let price_input = m.price_input_per_mtok.unwrap_or_default();
                Some((
                    m.name.clone(),
                    (
                        Model {
                            name: m.name.clone(),
                            provider,
                            upstream: m.upstream.clone(),
                            price_input,
                            price_output: Usd::default(),
                            price_cached: price_input,
                            max_output_tokens: 0,
                        },
                        m.dimensions,
                    ),
                ))
            })
            .collect();
        Self { models, embeddings }
    }

    /// An embedding model by name, with its dimensions.
    pub fn embedding(&self, name: &str) -> Option<&(Model, u32)> {
        self.embeddings.get(name)
    }

    /// A model by alias.
    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models.get(name)
    }

    /// Every model, by alias.
    pub fn all(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }
}
