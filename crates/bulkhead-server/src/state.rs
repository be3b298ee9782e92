//! Shared application state: one `Clone` struct of `Arc`s.

use std::sync::Arc;

use bulkhead_agent::Runtime;
use bulkhead_auth::{Authenticator, OperatorAuthenticator, TokenDigest};
use bulkhead_core::Region;
use bulkhead_gateway::{Catalog, Gateway};
use bulkhead_store::{ControlStore, TenantStore};
use bulkhead_vault::Vault;

use crate::metrics::Metrics;

/// Settings the HTTP layer reads on every request.
pub struct Settings {
    /// Whole-request timeout.
    pub request_timeout_s: u64,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Region of tenants created without one.
    pub default_region: Region,
    /// The regions a tenant may be placed in (`[[regions]]`, or derived
    /// from the providers; `None`: no providers, any region).
    pub regions: Option<std::collections::BTreeSet<Region>>,
    /// When set, `GET /metrics` requires this bearer token.
    pub metrics_token: Option<TokenDigest>,
    /// Whether approval webhooks can be signed (`[approvals] signing_key`).
    pub approvals_signed: bool,
    /// Whether alert webhooks can be signed (`[alerting] signing_key`).
    pub alerts_signed: bool,
    /// Connection limits `serve` enforces.
    pub connections: crate::conn::ConnLimits,
}

/// Everything handlers need.
#[derive(Clone)]
pub struct AppState {
    /// Control plane store.
    pub control: Arc<dyn ControlStore>,
    /// Tenant data store.
    pub tenants: Arc<dyn TenantStore>,
    /// The credential vault.
    pub vault: Arc<Vault>,
    /// The model gateway.
    pub gateway: Arc<Gateway>,
    /// The agent runtime.
    pub runtime: Arc<Runtime>,
    /// Knowledge collections.
    pub knowledge: Arc<bulkhead_agent::knowledge::Knowledge>,
    /// The configured models.
    pub catalog: Arc<Catalog>,
    /// Tenant-plane authentication.
    pub auth: Arc<Authenticator>,
    /// Operator-plane authentication.
    pub operator: Arc<OperatorAuthenticator>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Request settings.
    pub settings: Arc<Settings>,
    /// Tenants' limits and budgets.
    pub limiter: Arc<bulkhead_quota::Limiter>,
    /// Who may do what inside a tenant (Cedar).
    pub policies: Arc<bulkhead_policy::Policies>,
    /// Failed authentications: limits and aggregated audit.
    pub auth_failures: Arc<crate::auth_failures::AuthFailures>,
    /// The egress guard, for early checks of URLs a tenant stores.
    pub egress: bulkhead_egress::Egress,
    /// The audit signing key, its public keys and the checkpoint rule.
    pub audit_keys: Arc<crate::audit_keys::AuditKeys>,
    /// Per-tenant alert rules (and the gateway's observer).
    pub alerts: Arc<crate::alerting::AlertEngine>,
}
