//! A runtime over in-memory stores, a [`FakeProvider`] and a
//! [`SaasStandIn`], and tenants whose scopes come from authenticating an
//! API key against a [`MemoryDirectory`] (there is no other way).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_agent::memory::{MemoryAgentStore, MemoryKnowledgeStore};
use bulkhead_agent::prompt::Prompts;
use bulkhead_agent::{AgentCatalog, RunRecord, RunRequest, Runtime, RuntimeParts};
use bulkhead_auth::{Authenticator, JwtVerifier, MemoryDirectory, TenantScope};
use bulkhead_core::config::{Config, QuotaValues};
use bulkhead_core::{
    ApiKeyRecord, Isolation, Region, RequestId, Role, SecretString, Tenant, TenantId, TenantStatus,
    TenantUid, Timestamp,
};
use bulkhead_gateway::memory::MemoryGatewayStore;
use bulkhead_policy::Policies;
use bulkhead_testkit::{FakeProvider, SaasStandIn};
use bulkhead_vault::Vault;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::memory::MemoryVaultStore;
use bulkhead_vault::store::CredScope;

pub const PLATFORM_KEY: &str = "sk-platform-test-key";

/// Tools: `slack` (the tenant's `slack` connection) and `deploy` (an
/// http tool that always needs approval). Agents: `support` (slack,
/// three model calls at most), `fanout` (two calls an answer, three a
/// run) and `deployer` (deploy).
fn config_text(fake: &FakeProvider, saas: &SaasStandIn) -> String {
    format!(
        r#"
[egress]
allow_http = true
allow_hosts = ["127.0.0.1/32"]
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[tools]]
name = "slack"
kind = "slack"
base_url = "{saas}"
region = "eu"
connection = "slack"
[[tools]]
name = "deploy"
kind = "http"
region = "eu"
risk = "write"
approval = "always"
url = "{saas}/echo/deploy?text={{{{ text }}}}"
allowed_hosts = ["{addr}"]
[tools.parameters]
type = "object"
required = ["text"]
properties.text = {{ type = "string" }}
[[agents]]
name = "support"
model = "small"
prompt = "You are support."
tools = ["slack"]
max_steps = 3
[[agents]]
name = "fanout"
model = "small"
prompt = "You fan out."
tools = ["slack"]
max_tool_calls_per_round = 2
max_tool_calls_per_run = 3
[[agents]]
name = "deployer"
model = "small"
prompt = "You deploy."
tools = ["deploy"]
"#,
        base = fake.base_url(),
        saas = saas.base_url(),
        addr = saas.addr(),
    )
}

pub struct World {
    pub fake: FakeProvider,
    pub saas: SaasStandIn,
    pub config: Config,
    pub store: MemoryAgentStore,
    pub gateway_store: MemoryGatewayStore,
    pub vault: Arc<Vault>,
    pub directory: Arc<MemoryDirectory>,
    pub policies: Arc<Policies>,
    pub runtime: Arc<Runtime>,
}

impl World {
    pub async fn new() -> World {
        let fake = FakeProvider::start().await;
        let saas = SaasStandIn::start().await;
        let env = |name: &str| (name == "FAKE_KEY").then(|| PLATFORM_KEY.to_owned());
        let config = bulkhead_core::config::load(&config_text(&fake, &saas), &env).unwrap();
        let store = MemoryAgentStore::new();
        let gateway_store = MemoryGatewayStore::new();
        let vault = Arc::new(bulkhead_vault::memory::vault(&MemoryVaultStore::new()).unwrap());
        let directory = Arc::new(MemoryDirectory::new());
        let policies = Arc::new(Policies::permissive().unwrap());
        let runtime = build(
            &config,
            &store,
            &gateway_store,
            &vault,
            &directory,
            &policies,
        );
        World {
            fake,
            saas,
            config,
            store,
            gateway_store,
            vault,
            directory,
            policies,
            runtime,
        }
    }

    /// A runtime (as another process would build it) over `store` and
    /// this world's other collaborators.
    pub fn runtime_over(&self, store: MemoryAgentStore) -> Arc<Runtime> {
        build(
            &self.config,
            &store,
            &self.gateway_store,
            &self.vault,
            &self.directory,
            &self.policies,
        )
    }

    /// A new tenant `id` (region `eu`), and a scope of a principal with
    /// `roles`, obtained by authenticating one of its API keys.
    pub async fn tenant(&self, id: &str, roles: &[Role]) -> TenantScope {
        let tenant_id = TenantId::parse(id).unwrap();
        let existing = bulkhead_auth::Directory::tenant(&*self.directory, &tenant_id)
            .await
            .unwrap();
        if existing.is_none() {
            let now = Timestamp::now();
            self.directory
                .put_tenant(Tenant {
                    id: tenant_id.clone(),
                    uid: TenantUid::generate(),
                    name: format!("{id} Inc"),
                    region: Region::parse("eu").unwrap(),
                    isolation: Isolation::Shared,
                    status: TenantStatus::Active,
                    created_at: now,
                    updated_at: now,
                    quotas: QuotaValues::default(),
                })
                .unwrap();
        }
        let key = bulkhead_auth::apikey::generate().unwrap();
        self.directory
            .put_api_key(
                &key.digest,
                ApiKeyRecord {
                    id: key.id,
                    tenant: tenant_id,
                    name: None,
                    roles: roles.to_vec(),
                    created_at: Timestamp::now(),
                    expires_at: None,
                    revoked_at: None,
                },
            )
            .unwrap();
        Authenticator::new(JwtVerifier::default(), self.directory.clone())
            .authenticate(Some(key.plaintext.expose()), None, &RequestId::generate())
            .await
            .unwrap()
    }

    /// Stores the tenant's Slack bearer token.
    pub async fn slack_token(&self, scope: &TenantScope, token: &str) {
        self.vault
            .put(
                CredScope::Tenant(scope),
                &ConnectionName::parse("slack").unwrap(),
                &CredentialSecret::Bearer(SecretString::new(token.into())),
            )
            .await
            .unwrap();
    }

    /// Runs `agent` on `input` to its end (or pause).
    pub async fn run(&self, scope: &TenantScope, agent: &str, input: &str) -> RunRecord {
        let started = self
            .runtime
            .start(
                scope,
                agent,
                RunRequest {
                    input: input.into(),
                    thread_id: None,
                },
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), started.finished)
            .await
            .unwrap()
            .unwrap()
    }
}

/// A runtime over `store` and the other collaborators.
fn build(
    config: &Config,
    store: &MemoryAgentStore,
    gateway_store: &MemoryGatewayStore,
    vault: &Arc<Vault>,
    directory: &Arc<MemoryDirectory>,
    policies: &Arc<Policies>,
) -> Arc<Runtime> {
    let catalog = Arc::new(bulkhead_gateway::Catalog::from_config(config));
    let limiter = Arc::new(bulkhead_quota::Limiter::unlimited());
    let gateway = Arc::new(
        bulkhead_gateway::Gateway::new(bulkhead_gateway::Collaborators {
            catalog,
            vault: vault.clone(),
            store: Arc::new(gateway_store.clone()),
            limiter: limiter.clone(),
            canaries: Arc::new(bulkhead_gateway::canary::CanaryScanner::new()),
            alarm: Arc::new(bulkhead_gateway::memory::RecordingAlarm::default()),
        })
        .unwrap(),
    );
    let egress = bulkhead_egress::Egress::new(&config.egress);
    let tools = bulkhead_tools::ToolBox::new(&config.tools, &egress).unwrap();
    let knowledge = Arc::new(bulkhead_agent::knowledge::Knowledge::new(
        gateway.clone(),
        Arc::new(MemoryKnowledgeStore::new()),
        Default::default(),
        bulkhead_knowledge::Limits::default(),
        1024 * 1024,
        QuotaValues::default(),
    ));
    Arc::new(Runtime::new(RuntimeParts {
        catalog: AgentCatalog::new(config).unwrap(),
        prompts: Prompts::new(&config.agents, Path::new(".")).unwrap(),
        gateway,
        tools: Arc::new(tools),
        vault: vault.clone(),
        store: Arc::new(store.clone()),
        knowledge,
        limiter,
        run_gate: bulkhead_quota::FairGate::unbounded(),
        policies: policies.clone(),
        approval_ttl: bulkhead_agent::run::DEFAULT_APPROVAL_TTL,
        notifier: Arc::new(bulkhead_agent::approval::NoNotifier),
        directory: directory.clone(),
    }))
}

/// The kinds of a run's steps, in order.
pub fn kinds(r: &RunRecord) -> Vec<&str> {
    r.steps.iter().map(|s| s.kind.as_str()).collect()
}
