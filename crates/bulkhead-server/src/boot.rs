//! Building the application state from a validated configuration: open the
//! store, load JWT issuer keys, and settle the operator token.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_auth::{Authenticator, JwtVerifier, OperatorAuthenticator};
use bulkhead_core::SecretString;
use bulkhead_core::config::{Config, KmsConfig, KmsProvider};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_vault::Vault;
use bulkhead_vault::kms::{KeyProvider, LocalKeyProvider};
use bulkhead_vault::oauth::HttpRefresher;

use crate::metrics::Metrics;
use crate::state::{AppState, Settings};

/// File in the data directory holding a generated operator token.
pub const OPERATOR_TOKEN_FILE: &str = "operator_token";

/// Why the server could not start. Messages name the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The configuration, as changed by command-line overrides, is unsafe.
    #[error("{0}")]
    Config(String),
    /// A JWT issuer's keys could not be loaded.
    #[error("{0}")]
    Jwt(String),
    /// The data directory could not be opened.
    #[error("cannot open the data directory {path}: {message}")]
    Store {
        /// Data directory.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// Agents, prompts or tools could not be set up.
    #[error("{0}")]
    Agents(String),
    /// The key provider could not be opened.
    #[error("kms: {0}")]
    Kms(String),
    /// The platform's policies could not be read or are invalid.
    #[error("policies: {0}")]
    Policies(String),
    /// The limit backend could not be set up.
    #[error("limits: {0}")]
    Limits(String),
    /// The audit signing key could not be read or generated.
    #[error("audit signing key: {0}")]
    AuditKey(String),
    /// The operator token file could not be read or written.
    #[error("operator token file {path}: {message}")]
    OperatorToken {
        /// Token file.
        path: PathBuf,
        /// Cause.
        message: String,
    },
}

/// Where the operator token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorTokenSource {
    /// `[operator] token` in the configuration.
    Configured,
    /// Generated now into this file.
    Generated(PathBuf),
    /// Read from this file, generated on an earlier start.
    Existing(PathBuf),
}

/// A ready-to-serve state.
pub struct Boot {
    /// The state.
    pub state: AppState,
    /// The store, for callers that need it directly (tests, tools).
    pub store: SqliteStore,
    /// Where the operator token came from.
    pub operator_token: OperatorTokenSource,
    /// The operator scope of work the server starts by itself (finishing
    /// an interrupted key rotation); its audit events say `startup`.
    pub startup_operator: Option<bulkhead_auth::OperatorScope>,
}

/// Loads JWT issuer keys; relative key paths are taken from `base_dir`
/// (the configuration file's directory).
pub fn jwt_verifier(config: &Config, base_dir: &Path) -> Result<JwtVerifier, BootError> {
    let read = |p: &Path| std::fs::read(base_dir.join(p));
    JwtVerifier::new(&config.auth.jwt, &read).map_err(|errors| {
        BootError::Jwt(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Builds the state. `base_dir` resolves relative key-file paths. Async
/// because a remote key provider's client is set up here.
pub async fn boot(config: &Config, base_dir: &Path) -> Result<Boot, BootError> {
    // Checked again here: `serve --listen` replaces the address after the
    // file was validated.
    if let Some(e) = config.server.metrics_exposure_error() {
        return Err(BootError::Config(e.to_string()));
    }
    let jwt = jwt_verifier(config, base_dir)?;
    // Issuers with a jwks_url get their keys now: a first fetch that fails
    // is a boot error (like an unreadable jwks_file), so a server never
    // runs refusing every token of an issuer it was told to trust.
    let remote_issuers = jwt.remote_issuers();
    let jwks = if remote_issuers.is_empty() {
        None
    } else {
        let fetcher = crate::jwks::JwksFetcher::new().map_err(BootError::Jwt)?;
        let mut schedule = Vec::new();
        for remote in remote_issuers {
            let next = fetcher
                .fetch(&remote)
                .await
                .map_err(|e| BootError::Jwt(e.to_string()))?;
            schedule.push((remote, next));
        }
        fetcher.spawn_refresh(schedule);
        Some(fetcher)
    };
    let data_dir = &config.server.data_dir;
    let opened = match &config.audit.nats {
        Some(_) => SqliteStore::open_with_outbox(data_dir),
        None => SqliteStore::open(data_dir),
    };
    let store = opened.map_err(|e| BootError::Store {
        path: data_dir.clone(),
        message: e.to_string(),
    })?;
    let audit_keys = crate::audit_keys::AuditKeys::load(&config.audit, data_dir)
        .map_err(|e| BootError::AuditKey(e.to_string()))?;
    if let Some(nats) = &config.audit.nats {
        start_event_bus(&store, nats)?;
    }
    let (token, source) = match &config.operator.token {
        Some(t) => (t.value().clone(), OperatorTokenSource::Configured),
        None => operator_token_file(data_dir)?,
    };
    let store_arc = Arc::new(store.clone());
    let kms = key_provider(config).await?;
    // reqwest is built without a default TLS crypto provider; ring is the one
    // the rest of the binary already uses. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One guard for every request a tenant can aim (token URLs, tools).
    let egress = bulkhead_egress::Egress::new(&config.egress);
    let refresher = HttpRefresher::new(&egress).map_err(|e| BootError::Kms(e.to_string()))?;
    let vault = Arc::new(Vault::new(kms, store_arc.clone(), Arc::new(refresher)));
    let catalog = Arc::new(bulkhead_gateway::Catalog::from_config(config));
    let metrics = Arc::new(Metrics::with_options(crate::metrics::MetricsOptions {
        max_tenants: config.server.metrics_max_tenants,
        // Which check refused a credential is told only to a scraper
        // holding the metrics token.
        detailed_auth_reasons: config.server.metrics_token.is_some(),
    }));
    let canaries = store.canary_scanner();
    let leak_metric = metrics.clone();
    canaries.set_on_leak(Box::new(move || leak_metric.cross_tenant_leak()));
    let limiter = Arc::new(limiter(config, store_arc.clone()).await?);
    let gateway = Arc::new(
        bulkhead_gateway::Gateway::new(bulkhead_gateway::Collaborators {
            catalog: catalog.clone(),
            vault: vault.clone(),
            store: store_arc.clone(),
            limiter: limiter.clone(),
            canaries,
            alarm: store_arc.clone(),
        })
        .map_err(|e| BootError::Kms(format!("model gateway: {e}")))?,
    );
    // Transitions of timed evaluations, and tenant header mismatches, are
    // recorded as the operator acting for the tenant.
    let alerting_operator = bulkhead_core::RequestId::parse("alerting")
        .ok()
        .and_then(|rid| OperatorAuthenticator::new(&token).verify(Some(token.expose()), &rid));
    let alerts = crate::alerting::AlertEngine::start(
        &config.alerts,
        crate::alerting::AlertSinks {
            key: config
                .alerting
                .signing_key
                .as_ref()
                .map(|k| k.value().clone()),
            operator_webhook: config.alerting.operator_webhook.clone(),
            egress: egress.clone(),
        },
        metrics.per_tenant().clone(),
        store_arc.clone(),
        store_arc.clone(),
        alerting_operator,
    )
    .map_err(BootError::Limits)?;
    gateway.set_observer(Arc::new(crate::alerting::EngineObserver(alerts.clone())));
    let (tools, agents, prompts) = agent_parts(config, base_dir)?;
    let embedders = config
        .knowledge_embedding_models()
        .into_iter()
        .map(|(region, m)| (region, m.name))
        .collect();
    let knowledge = Arc::new(bulkhead_agent::knowledge::Knowledge::new(
        gateway.clone(),
        store_arc.clone(),
        embedders,
        bulkhead_knowledge::Limits::default(),
        config.limits.vector_cache_mb * 1024 * 1024,
        config.quotas.default.clone(),
    ));
    let policies = Arc::new(bulkhead_policy::Policies::new(
        policy_engine(config, base_dir)?,
        store_arc.clone(),
    ));
    let runtime = Arc::new(bulkhead_agent::Runtime::new(bulkhead_agent::RuntimeParts {
        catalog: agents,
        prompts,
        gateway: gateway.clone(),
        tools: Arc::new(tools),
        vault: vault.clone(),
        store: store_arc.clone(),
        knowledge: knowledge.clone(),
        limiter: limiter.clone(),
        // Without `max_concurrent_runs`, admission is not limited.
        run_gate: config
            .limits
            .max_concurrent_runs
            .map_or_else(bulkhead_quota::FairGate::unbounded, |n| {
                bulkhead_quota::FairGate::new(n as usize)
            }),
        policies: policies.clone(),
        approval_ttl: std::time::Duration::from_secs(config.approvals.ttl_s),
        // Without a signing key there is no webhook: requests are listed only.
        notifier: match &config.approvals.signing_key {
            Some(key) => Arc::new(
                crate::alerts::ApprovalWebhook::new(
                    key.value().clone(),
                    store_arc.clone(),
                    gateway.clone(),
                )
                .map_err(BootError::Limits)?,
            ),
            None => Arc::new(bulkhead_agent::approval::NoNotifier),
        },
        directory: store_arc.clone(),
    }));
    let state = AppState {
        control: store_arc.clone(),
        tenants: store_arc.clone(),
        vault,
        gateway,
        runtime,
        knowledge,
        catalog,
        auth: Arc::new(match jwks {
            Some(fetcher) => {
                Authenticator::new(jwt, store_arc).with_jwks_refresh(Arc::new(fetcher))
            }
            None => Authenticator::new(jwt, store_arc),
        }),
        operator: Arc::new(OperatorAuthenticator::new(&token)),
        metrics,
        settings: Arc::new(Settings {
            request_timeout_s: config.server.request_timeout_s,
            max_body_bytes: config.server.max_body_bytes,
            default_region: config.server.default_region.clone(),
            regions: bulkhead_core::config::regions::known(config),
            metrics_token: config
                .server
                .metrics_token
                .as_ref()
                .map(|t| bulkhead_auth::TokenDigest::new(t.value())),
            approvals_signed: config.approvals.signing_key.is_some(),
            alerts_signed: config.alerting.signing_key.is_some(),
            connections: crate::conn::ConnLimits::from_config(&config.server),
        }),
        limiter,
        policies,
        auth_failures: Arc::new(crate::auth_failures::AuthFailures::new(
            config.auth.failures_per_minute_per_credential,
            config.auth.failures_per_minute_per_peer,
        )),
        egress,
        audit_keys: Arc::new(audit_keys),
        alerts,
    };
    let startup_operator = bulkhead_core::RequestId::parse("startup")
        .ok()
        .and_then(|rid| state.operator.verify(Some(token.expose()), &rid));
    Ok(Boot {
        state,
        store,
        operator_token: source,
        startup_operator,
    })
}

/// The policy engine of a configuration: the schema and the platform's
/// policies (`[policies] file`, relative to `base_dir`, else the defaults
/// per role), validated.
pub fn policy_engine(
    config: &Config,
    base_dir: &Path,
) -> Result<bulkhead_policy::PolicyEngine, BootError> {
    let text = match &config.policies {
        Some(p) => {
            let path = base_dir.join(&p.file);
            Some(std::fs::read_to_string(&path).map_err(|e| {
                BootError::Policies(format!("policies.file {}: {e}", path.display()))
            })?)
        }
        None => None,
    };
    bulkhead_policy::PolicyEngine::new(text.as_deref()).map_err(|e| {
        let file = config
            .policies
            .as_ref()
            .map(|p| p.file.display().to_string())
            .unwrap_or_else(|| "the default platform policies".into());
        BootError::Policies(format!("{file}: {e}"))
    })
}

/// The limiter of a configuration: its backend (in-process, or Redis with
/// the `redis` feature), the default quotas, the ledger budgets are seeded
/// from, and the budget alerts when a signing key is configured.
pub async fn limiter(
    config: &Config,
    store: Arc<SqliteStore>,
) -> Result<bulkhead_quota::Limiter, BootError> {
    let backend: Arc<dyn bulkhead_quota::LimitBackend> = match config.limits.backend {
        bulkhead_core::config::LimitsBackend::Memory => {
            Arc::new(bulkhead_quota::MemoryBackend::new())
        }
        bulkhead_core::config::LimitsBackend::Redis => redis_backend(config).await?,
    };
    let limiter = bulkhead_quota::Limiter::new(
        config.quotas.default.clone(),
        backend,
        Arc::new(bulkhead_gateway::store::LedgerSpend(store.clone())),
        std::time::Duration::from_secs(config.limits.reservation_ttl_s),
    );
    Ok(match &config.quotas.alerts.signing_key {
        Some(key) => {
            let alerts = crate::alerts::WebhookAlerts::new(key.value().clone(), store)
                .map_err(BootError::Limits)?;
            limiter.with_alerts(config.quotas.alerts.thresholds.clone(), Arc::new(alerts))
        }
        None => limiter,
    })
}

/// `[audit.nats]`: the publisher, in the background for the life of the
/// process (it waits for the server if it is not answering).
#[cfg(feature = "nats")]
fn start_event_bus(
    store: &SqliteStore,
    nats: &bulkhead_core::config::NatsConfig,
) -> Result<(), BootError> {
    let target = bulkhead_store::nats::NatsTarget {
        url: nats.url.clone(),
        stream: nats.stream.clone(),
        subject_prefix: nats.subject_prefix.clone(),
        auth: match (&nats.user, &nats.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.value().clone())),
            _ => None,
        },
    };
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = bulkhead_store::nats::run(store, target).await {
            tracing::error!(error = %e, "the audit event bus publisher stopped");
        }
    });
    Ok(())
}

#[cfg(not(feature = "nats"))]
fn start_event_bus(
    _store: &SqliteStore,
    _nats: &bulkhead_core::config::NatsConfig,
) -> Result<(), BootError> {
    Err(BootError::Config(
        "[audit.nats] needs a build with the cargo feature `nats`".into(),
    ))
}

#[cfg(feature = "redis")]
async fn redis_backend(
    config: &Config,
) -> Result<Arc<dyn bulkhead_quota::LimitBackend>, BootError> {
    let url = config.limits.redis_url.as_deref().unwrap_or_default();
    let backend = bulkhead_store::redis_limits::RedisBackend::connect(url)
        .await
        .map_err(|e| BootError::Limits(e.to_string()))?;
    Ok(Arc::new(backend))
}

#[cfg(not(feature = "redis"))]
async fn redis_backend(
    _config: &Config,
) -> Result<Arc<dyn bulkhead_quota::LimitBackend>, BootError> {
    Err(BootError::Limits(
        "backend = \"redis\" needs a build with the cargo feature `redis`".into(),
    ))
}

/// The tools, agents and compiled prompt templates of a configuration:
/// what `serve` builds at start and `check` verifies (templates that do
/// not compile, prompt files that cannot be read, tool templates and
/// argument schemas, and tool URLs the egress guard would refuse).
pub fn agent_parts(
    config: &Config,
    base_dir: &Path,
) -> Result<
    (
        bulkhead_tools::ToolBox,
        bulkhead_agent::AgentCatalog,
        bulkhead_agent::prompt::Prompts,
    ),
    BootError,
> {
    let tools =
        bulkhead_tools::ToolBox::new(&config.tools, &bulkhead_egress::Egress::new(&config.egress))
            .map_err(|e| BootError::Agents(e.to_string()))?;
    let agents =
        bulkhead_agent::AgentCatalog::new(config).map_err(|e| BootError::Agents(e.to_string()))?;
    let prompts_dir = base_dir.join(&config.server.prompts_dir);
    let prompts = bulkhead_agent::prompt::Prompts::new(&config.agents, &prompts_dir)
        .map_err(|e| BootError::Agents(e.to_string()))?;
    Ok((tools, agents, prompts))
}

/// The tools' hosts (connector base URLs, http tools' allowed hosts) whose
/// names resolve now to addresses the egress guard refuses, by key path:
/// what `bulkhead check` adds to the checks of [`agent_parts`], which do
/// not resolve names (a start must not depend on DNS). A name that does
/// not resolve passes; every call checks again.
pub async fn vet_tool_hosts(config: &Config) -> Vec<String> {
    let egress = bulkhead_egress::Egress::new(&config.egress);
    let mut errors = Vec::new();
    for (i, t) in config.tools.iter().enumerate() {
        if let Some(base) = &t.base_url
            && let Err(e) = egress.vet(base).await
        {
            errors.push(format!("tools[{i}].base_url: {e}"));
        }
        for (j, h) in t.allowed_hosts.iter().enumerate() {
            if let Err(e) = egress.vet(&format!("https://{h}/")).await {
                errors.push(format!("tools[{i}].allowed_hosts[{j}]: {e}"));
            }
        }
    }
    errors
}

/// Opens the configured key provider.
pub async fn key_provider(config: &Config) -> Result<Arc<dyn KeyProvider>, BootError> {
    match config.kms.provider {
        KmsProvider::Local => {
            std::fs::create_dir_all(&config.server.data_dir).map_err(|e| BootError::Store {
                path: config.server.data_dir.clone(),
                message: e.to_string(),
            })?;
            let kms = LocalKeyProvider::open(&config.server.data_dir)
                .map_err(|e| BootError::Kms(e.to_string()))?;
            Ok(Arc::new(kms))
        }
        KmsProvider::AwsKms => aws_kms_provider(&config.kms).await,
    }
}

/// The AWS KMS provider: one SDK client, credentials from the standard AWS
/// chain. Makes no request yet; a wrong key or missing credentials fail the
/// first wrap or unwrap.
#[cfg(feature = "aws-kms")]
async fn aws_kms_provider(kms: &KmsConfig) -> Result<Arc<dyn KeyProvider>, BootError> {
    use bulkhead_vault::aws_kms::AwsKmsProvider;
    // Validation already requires both; this only avoids an unwrap.
    let (Some(key_id), Some(region)) = (&kms.key_id, &kms.region) else {
        return Err(BootError::Kms(
            "kms.key_id and kms.region are required for provider \"aws-kms\"".into(),
        ));
    };
    let provider = AwsKmsProvider::new(key_id.clone(), region.clone(), kms.endpoint_url.clone())
        .await
        .map_err(|e| BootError::Kms(e.to_string()))?;
    tracing::info!(key_id = %key_id, region = %region, "key-encryption keys held by AWS KMS");
    Ok(Arc::new(provider))
}

/// Without the `aws-kms` feature the provider is not compiled in.
#[cfg(not(feature = "aws-kms"))]
async fn aws_kms_provider(_kms: &KmsConfig) -> Result<Arc<dyn KeyProvider>, BootError> {
    Err(BootError::Kms(
        "kms.provider = \"aws-kms\" needs a build with the aws-kms feature \
         (cargo build --release -p bulkhead --features aws-kms)"
            .into(),
    ))
}

/// Reads the generated operator token, creating it (mode 0600) on first start.
pub fn operator_token_file(
    data_dir: &Path,
) -> Result<(SecretString, OperatorTokenSource), BootError> {
    let path = data_dir.join(OPERATOR_TOKEN_FILE);
    let err = |message: String| BootError::OperatorToken {
        path: path.clone(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < 16 {
                return Err(err(
                    "the file is empty or truncated; delete it to generate a new token".into(),
                ));
            }
            return Ok((
                SecretString::new(token),
                OperatorTokenSource::Existing(path),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(format!("random source failed: {e}")))?;
    let token = format!("bkop_{}", bulkhead_core::audit::hex(&bytes));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Write to a temporary name and rename, so a crash never leaves a
    // truncated token file behind.
    let tmp = data_dir.join(format!(".{OPERATOR_TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(|e| err(e.to_string()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    Ok((
        SecretString::new(token),
        OperatorTokenSource::Generated(path),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kms.provider = "aws-kms"` builds the AWS provider when the feature
    /// is compiled in (without a request: the endpoint is a closed port),
    /// and is a clear start-up error when it is not.
    #[tokio::test]
    async fn the_aws_kms_provider_follows_the_feature() {
        let text = "[kms]\nprovider = \"aws-kms\"\nkey_id = \"alias/bulkhead\"\n\
                    region = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n";
        let config = bulkhead_core::config::load(text, &|_| None).unwrap();
        let result = key_provider(&config).await;
        #[cfg(feature = "aws-kms")]
        {
            let kms = result.unwrap();
            assert_eq!(kms.name(), "aws-kms");
            assert_eq!(kms.current(), ("alias/bulkhead".to_owned(), 1));
        }
        #[cfg(not(feature = "aws-kms"))]
        assert!(
            matches!(&result, Err(BootError::Kms(m)) if m.contains("aws-kms feature")),
            "{:?}",
            result.err()
        );
    }
}
