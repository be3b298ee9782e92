//! The model gateway.
//!
//! Every model call is bound to a tenant scope: the model must be one the
//! tenant may use, its provider must sit in the tenant's region (refused,
//! never rerouted), the key is the platform's or the tenant's own (from the
//! vault), and every call leaves a usage row and an audit event in the
//! tenant's partition — also when the upstream fails or the client goes
//! away mid-stream.
//!
//! Clients speak the OpenAI Chat Completions format; OpenAI-compatible
//! providers receive it as it came (model name replaced), Anthropic
//! providers get it translated to the Messages API and back (`anthropic`);
//! the Responses API is translated to a chat call and back (`responses`).

pub mod anthropic;
pub mod canary;
pub mod catalog;
pub mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod responses;
pub mod service;
pub mod sse;
pub mod store;
pub mod upstream;
pub mod usage;
pub mod validate;

pub use catalog::{Catalog, Model, Provider};
pub use error::GatewayError;
pub use service::{
    ChatOutcome, ChatRequest, Collaborators, Embeddings, EmbeddingsRequest, Gateway,
    ResponseOutcome, ToolUsage,
};
pub use store::{GatewayStore, SettingsChange};
pub use usage::{UsageRecord, UsageSummary};
