//! The observer port: what the gateway and the agent runtime report as
//! events finish (a model call settled, a tool call returned, a run
//! ended, a cross-tenant access blocked), for the server's per-tenant
//! metrics and alert rules.
//!
//! It lives here, beside [`TenantScope`], because every report names its
//! tenant by the scope it happened under: an observer cannot be told
//! about a tenant that did not authenticate. The events are plain
//! borrowed data, and reporting is synchronous and must stay cheap (it
//! runs on every model call): an implementation counts and, when it has
//! slow work (a webhook), spawns it.

use std::time::Duration;

use crate::TenantScope;

/// A model or embedding call, once its outcome is final (its usage row
/// is being written).
#[derive(Debug, Clone, Copy)]
pub struct ModelCall<'a> {
    /// The model alias.
    pub model: &'a str,
    /// `model` (chat) or `embed`.
    pub kind: &'a str,
    /// The ledger status: `ok`, `upstream_error`, `cancelled`, …
    pub status: &'a str,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Cost in nano-dollars.
    pub cost_nanos: u64,
    /// Wall time of the call.
    pub latency: Duration,
}

/// A tool call an agent made, with its result.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// The tool.
    pub tool: &'a str,
    /// `ok`, or the failure code.
    pub outcome: &'a str,
    /// Wall time of the call.
    pub latency: Duration,
}

/// A run that ended (not one that paused for an approval).
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// The agent.
    pub agent: &'a str,
    /// `completed`, `failed` or `cancelled`.
    pub status: &'a str,
    /// From the run's creation to its end.
    pub duration: Duration,
}

/// A blocked access across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrossTenant {
    /// An outbound request carried another tenant's canary.
    Canary,
    /// A prompt held a fragment owned by another tenant.
    ForeignFragment,
    /// A credential was presented with another tenant's `X-Tenant-ID`.
    TenantHeaderMismatch,
}

impl CrossTenant {
    /// The label and detail value: `canary`, `foreign_fragment`,
    /// `tenant_header_mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrossTenant::Canary => "canary",
            CrossTenant::ForeignFragment => "foreign_fragment",
            CrossTenant::TenantHeaderMismatch => "tenant_header_mismatch",
        }
    }
}

/// Receives the events; every method has a no-op default.
pub trait Observer: Send + Sync {
    /// A model or embedding call settled.
    fn model_call(&self, _scope: &TenantScope, _call: &ModelCall<'_>) {}
    /// A tool call returned.
    fn tool_call(&self, _scope: &TenantScope, _call: &ToolCall<'_>) {}
    /// A run ended.
    fn run_end(&self, _scope: &TenantScope, _run: &RunEnd<'_>) {}
    /// A cross-tenant access was blocked in the scope's tenant's request.
    fn cross_tenant(&self, _scope: &TenantScope, _kind: CrossTenant) {}
}

/// Observes nothing (tests, tools without a server).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
