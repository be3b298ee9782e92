//! Tenant-plane authorisation: every handler asks the tenant's Cedar
//! policies (`bulkhead-policy`) before it acts. A denial is 403
//! `forbidden`; a resource of another tenant never gets this far (it is
//! not found in the caller's partition: 404).

use bulkhead_auth::TenantScope;
use bulkhead_policy::{Action, Resource};

use crate::error::ApiError;
use crate::state::AppState;

/// `Ok` when the scope's principal may do `action` on `resource`.
pub async fn authorize(
    state: &AppState,
    scope: &TenantScope,
    action: Action,
    resource: Resource<'_>,
) -> Result<(), ApiError> {
    let decision = state
        .policies
        .authorize(scope, action, &resource)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if decision.allowed {
        Ok(())
    } else {
        tracing::info!(
            action = action.as_str(),
            policies = ?decision.policies,
            "refused by policy"
        );
        Err(ApiError::Forbidden)
    }
}
