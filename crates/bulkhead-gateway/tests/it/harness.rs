//! A gateway over the in-memory stores, an in-memory vault and a fake
//! provider, with a tripwire that records its hits.

use std::sync::Arc;

use bulkhead_core::config::QuotaValues;
use bulkhead_gateway::canary::CanaryScanner;
use bulkhead_gateway::memory::{MemoryGatewayStore, RecordingAlarm, limiter};
use bulkhead_gateway::{Catalog, ChatOutcome, Collaborators, Gateway, GatewayError};
use bulkhead_testkit::FakeProvider;
use bulkhead_vault::Vault;
use bulkhead_vault::memory::{MemoryVaultStore, vault};
use serde_json::{Value, json};

pub const PLATFORM_KEY: &str = "sk-platform-key";

pub struct Harness {
    pub fake: FakeProvider,
    pub store: MemoryGatewayStore,
    pub vault: Arc<Vault>,
    pub canaries: Arc<CanaryScanner>,
    pub alarm: RecordingAlarm,
    pub gateway: Gateway,
}

fn config(base: &str) -> String {
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
max_retries = 0
[[providers]]
name = "fake-us"
kind = "openai"
base_url = "{base}/v1"
region = "us"
credential = "env:FAKE_KEY"
[[providers]]
name = "byok"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "tenant:openai"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "0.15"
price_output_per_mtok = "0.60"
price_cached_input_per_mtok = "0.075"
[[models]]
name = "us-only"
provider = "fake-us"
upstream = "gpt-4o-mini"
[[models]]
name = "own-key"
provider = "byok"
upstream = "gpt-4o-mini"
[[embedding_models]]
name = "embed"
provider = "fake-eu"
upstream = "text-embedding-3-small"
dimensions = 16
price_input_per_mtok = "0.02"
[[embedding_models]]
name = "embed-us"
provider = "fake-us"
upstream = "text-embedding-3-small"
dimensions = 16
"#
    )
}

impl Harness {
    /// Every tenant limited by `defaults` (default: unlimited).
    pub async fn with_quotas(defaults: QuotaValues) -> Self {
        let fake = FakeProvider::start().await;
        let config = bulkhead_core::config::load(&config(&fake.base_url()), &|_| {
            Some(PLATFORM_KEY.to_owned())
        })
        .unwrap();
        let store = MemoryGatewayStore::new();
        let vault = Arc::new(vault(&MemoryVaultStore::new()).unwrap());
        let canaries = Arc::new(CanaryScanner::new());
        let alarm = RecordingAlarm::default();
        let gateway = Gateway::new(Collaborators {
            catalog: Arc::new(Catalog::from_config(&config)),
            vault: vault.clone(),
            store: Arc::new(store.clone()),
            limiter: limiter(&store, defaults),
            canaries: canaries.clone(),
            alarm: Arc::new(alarm.clone()),
        })
        .unwrap();
        Self {
            fake,
            store,
            vault,
            canaries,
            alarm,
            gateway,
        }
    }

    pub async fn new() -> Self {
        Self::with_quotas(QuotaValues::default()).await
    }
}

pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The whole answer of a non-streamed call.
pub fn complete(outcome: Result<ChatOutcome, GatewayError>) -> Value {
    match outcome.unwrap() {
        ChatOutcome::Complete(v) => v,
        ChatOutcome::Stream(_) => panic!("a stream, not a whole answer"),
    }
}
