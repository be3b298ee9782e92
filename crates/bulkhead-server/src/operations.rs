//! Operator actions on a tenant that span two chains: the change and its
//! event are written in the tenant's partition (one transaction), then the
//! same event is recorded in the operator's chain. Plain functions over the
//! application state — no HTTP types — so a handler only parses, calls one
//! of these, and answers.

use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_gateway::SettingsChange;

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
    let event = state
        .gateway
        .change_settings(scope, op.request_id(), change)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .control
        .append_operator_audit(op, Some(scope.tenant()), event)
        .await?;
    Ok(())
}
