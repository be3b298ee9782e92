//! The retention task: each tenant's thread messages older than its
//! `message_retention_days` are deleted, tenant by tenant, on a timer.

use std::time::Duration;

use bulkhead_auth::OperatorScope;

use crate::state::AppState;

/// One pass over every tenant; returns how many messages were deleted.
/// A tenant that fails is logged and skipped, not retried at once.
pub async fn apply_once(state: &AppState, op: &OperatorScope) -> u64 {
    let tenants = match state.control.list_tenants(op).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "retention: could not list tenants");
            return 0;
        }
    };
    let mut deleted = 0;
    for tenant in tenants {
        let scope = op.act_for_tenant(&tenant);
        let days = match state.gateway.settings(&scope).await {
            Ok(s) => s.message_retention_days,
            Err(e) => {
                tracing::error!(error = %e, tenant = %tenant.id, "retention: could not read settings");
                continue;
            }
        };
        let Some(days) = days else { continue };
        match state.runtime.apply_retention(&scope, days).await {
            Ok(n) => deleted += n,
            Err(e) => {
                tracing::error!(error = %e, tenant = %tenant.id, "retention: could not delete old messages")
            }
        }
    }
    deleted
}

/// Runs [`apply_once`] every `interval`, first right away.
pub fn spawn(state: AppState, op: OperatorScope, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = apply_once(&state, &op).await;
            if n > 0 {
                tracing::info!(deleted = n, "retention: deleted old thread messages");
            }
        }
    });
}
