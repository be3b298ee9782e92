//! Operator actions on a tenant that span two chains: the change and its
//! event are written in the tenant's partition (one transaction), then the
//! same event is recorded in the operator's chain. Plain functions over the
//! application state — no HTTP types — so a handler only parses, calls one
//! of these, and answers.

use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_gateway::SettingsChange;
use bulkhead_vault::vault::RewrapReport;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Applies the operator's change of a tenant's settings: one write and one
/// `tenant.settings` event in the tenant's chain, then the same event in
/// the operator's chain.
pub async fn change_tenant_settings(
    state: &AppState,
    op: &OperatorScope,
    scope: &TenantScope,
    change: &SettingsChange,
) -> Result<(), ApiError> {
    let written = state
        .gateway
        .change_settings(scope, op.request_id(), change)
        .await;
    in_operator_chain(state, op, scope, written).await
}

/// Records in the operator's chain the event a change to the tenant's
/// gateway settings wrote in the tenant's.
async fn in_operator_chain(
    state: &AppState,
    op: &OperatorScope,
    scope: &TenantScope,
    written: Result<NewAuditEvent, bulkhead_gateway::GatewayError>,
) -> Result<(), ApiError> {
    let event = written.map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .control
        .append_operator_audit(op, Some(scope.tenant()), event)
        .await?;
    Ok(())
}

/// Replaces a tenant's model allow-list: one write and one `tenant.models`
/// event in the tenant's chain, then the same event in the operator's.
pub async fn set_tenant_models(
    state: &AppState,
    op: &OperatorScope,
    scope: &TenantScope,
    allowed: Option<Vec<String>>,
) -> Result<(), ApiError> {
    let written = state
        .gateway
        .set_allowed(scope, op.request_id(), allowed)
        .await;
    in_operator_chain(state, op, scope, written).await
}

/// Records in the operator's chain that it read every tenant's ledger
/// (`usage.report`), before the report is built.
pub async fn record_usage_report(
    state: &AppState,
    op: &OperatorScope,
    from: &impl std::fmt::Display,
    to: &impl std::fmt::Display,
    tenants: usize,
) -> Result<(), ApiError> {
    let event = NewAuditEvent::new(
        AuditAction::UsageReport,
        "tenants:*".to_owned(),
        Outcome::Success,
        op.request_id().clone(),
    )
    .with_details(json!({
        "from": from.to_string(), "to": to.to_string(), "tenants": tenants,
    }));
    state.control.append_operator_audit(op, None, event).await?;
    Ok(())
}

/// Which key-encryption-key operation a [`RewrapReport`] answers.
#[derive(Clone, Copy)]
pub enum KekChange {
    /// A new key-encryption-key version, every data key re-wrapped.
    Rotate,
    /// Data keys not yet under the current version re-wrapped.
    Rewrap,
}

/// Rotates the key-encryption key (or finishes re-wrapping under the
/// current one) and records it in the operator's chain (`kms.rotate`,
/// `kms.rewrap`). Returns the key provider's name with the report.
pub async fn change_kek(
    state: &AppState,
    op: &OperatorScope,
    change: KekChange,
) -> Result<(String, RewrapReport), ApiError> {
    let (action, report) = match change {
        KekChange::Rotate => (AuditAction::KmsRotate, state.vault.rotate_kek(op).await?),
        KekChange::Rewrap => (AuditAction::KmsRewrap, state.vault.rewrap_all(op).await?),
    };
    let provider = state.vault.kms().name().to_owned();
    let event = NewAuditEvent::new(
        action,
        format!("kms:{provider}"),
        Outcome::Success,
        op.request_id().clone(),
    )
    .with_details(json!({"key_version": report.key_version, "rewrapped": report.rewrapped}));
    state.control.append_operator_audit(op, None, event).await?;
    Ok((provider, report))
}
