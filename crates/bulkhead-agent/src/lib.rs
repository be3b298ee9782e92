//! The agent runtime.
//!
//! An agent is defined by the operator (configuration): a model alias, a
//! prompt template, tools and limits. A tenant adjusts it through its own
//! settings (template variables, instructions, which connection each tool
//! uses). A run renders the prompt, calls the model through the gateway,
//! executes the tool calls the model asks for with the tenant's own
//! credentials, and repeats until the model answers or a limit is hit.
//!
//! Everything a run touches is reached through the caller's
//! [`bulkhead_auth::TenantScope`]: the store partition, the vault, the
//! gateway. Prompt fragments carry their provenance
//! ([`prompt::Owner`]) and a fragment owned by another tenant is refused
//! before anything is sent to a model. Every step is persisted as it
//! completes, so a crash leaves a consistent record.

pub mod agent;
pub mod approval;
pub mod error;
pub mod event;
mod fanout;
pub mod knowledge;
#[cfg(feature = "test-support")]
pub mod memory;
pub mod prompt;
pub mod run;
pub mod sized_cache;
pub mod store;

pub use agent::{Agent, AgentCatalog, AgentSettings};
pub use approval::{Approval, ApprovalStatus, Verdict};
pub use error::AgentError;
pub use event::RunEvent;
pub use run::{RunRequest, RunStarted, Runtime, RuntimeParts, TenantStop};
pub use store::{
    AgentStore, AgentStoreError, RunFilter, RunRecord, RunStatus, Step, StoredMessage,
    ThreadFilter, ThreadSummary,
};
