//! Timed housekeeping over every tenant, as the operator (so each change is
//! an audited operator action in the tenant's chain):
//! - retention: each tenant's thread messages older than its
//!   `message_retention_days` are deleted, and so is what runs that ended
//!   before then stored (steps, outputs, settled approval requests), and
//!   its stored Responses API responses older than that;
//! - approval expiry: undecided approval requests past their expiry are
//!   settled as `expired`, and their runs end (`approval_expired`);
//! - failed authentications counted in a window that ended are written as
//!   one aggregated `auth.failure` event per tenant, principal and reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use bulkhead_auth::{OperatorScope, TenantScope};

use crate::state::AppState;

/// A scope for each tenant, as the operator (none, logged, when the
/// tenants cannot be listed).
async fn every_tenant(state: &AppState, op: &OperatorScope, task: &str) -> Vec<TenantScope> {
    match state.control.list_tenants(op).await {
        Ok(tenants) => tenants.iter().map(|t| op.act_for_tenant(t)).collect(),
        Err(e) => {
            tracing::error!(error = %e, task, "could not list tenants");
            Vec::new()
        }
    }
}

/// One pass over every tenant; returns how many messages were deleted.
/// A tenant that fails is logged and skipped, not retried at once.
pub async fn apply_once(state: &AppState, op: &OperatorScope) -> u64 {
    let mut deleted = 0;
    for scope in every_tenant(state, op, "retention").await {
        let span = bulkhead_telemetry::background_span(&scope, "retention");
        deleted += retain(state, &scope).instrument(span).await;
    }
    deleted
}

/// Deletes one tenant's messages past its retention; how many.
async fn retain(state: &AppState, scope: &TenantScope) -> u64 {
    let days = match state.gateway.settings(scope).await {
        Ok(s) => s.message_retention_days,
        Err(e) => {
            tracing::error!(error = %e, tenant = %scope.tenant(), "retention: could not read settings");
            return 0;
        }
    };
    let Some(days) = days else { return 0 };
    match state.runtime.apply_retention(scope, days).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, tenant = %scope.tenant(), "retention: could not delete old messages");
            0
        }
    }
}

/// One pass over every tenant's approval requests; returns how many
/// expired. A tenant that fails is logged and skipped.
pub async fn expire_approvals_once(state: &AppState, op: &OperatorScope) -> usize {
    let mut expired = 0;
    for scope in every_tenant(state, op, "approval expiry").await {
        let span = bulkhead_telemetry::background_span(&scope, "approval_expiry");
        match state.runtime.expire_due(&scope).instrument(span).await {
            Ok(n) => expired += n,
            Err(e) => {
                tracing::error!(error = %e, tenant = %scope.tenant(), "approval expiry: could not settle expired requests")
            }
        }
    }
    expired
}

/// Runs `pass` every `interval`, first right away, logging what it did.
fn every<F, Fut>(interval: Duration, what: &'static str, mut pass: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = pass().await;
            if n > 0 {
                tracing::info!(count = n, "{what}");
            }
        }
    });
}

/// Runs [`apply_once`] every `retention`, [`expire_approvals_once`]
/// every `approvals`, and the flush of aggregated authentication failures
/// every window.
pub fn spawn(state: AppState, op: OperatorScope, retention: Duration, approvals: Duration) {
    let (s, o) = (state.clone(), op.clone());
    every(
        retention,
        "retention: deleted old thread messages",
        move || {
            let (s, o) = (s.clone(), o.clone());
            async move { apply_once(&s, &o).await }
        },
    );
    let (s, o) = (state.clone(), op.clone());
    let sweep = Arc::new(tokio::sync::Mutex::new(crate::audit_keys::Sweep::default()));
    every(
        crate::audit_keys::sweep_interval(state.audit_keys.rule),
        "audit: signed checkpoints",
        move || {
            let (s, o, sweep) = (s.clone(), o.clone(), sweep.clone());
            async move {
                let mut sweep = sweep.lock().await;
                crate::audit_keys::checkpoint_sweep(&s, &o, &mut sweep).await
            }
        },
    );
    let s = state.clone();
    every(
        Duration::from_secs(crate::auth_failures::WINDOW_S),
        "auth failures: wrote aggregated events",
        move || {
            let s = s.clone();
            async move { crate::extract::flush_auth_failures(&s, false).await }
        },
    );
    every(
        approvals,
        "approval expiry: settled undecided requests",
        move || {
            let (s, o) = (state.clone(), op.clone());
            async move { expire_approvals_once(&s, &o).await as u64 }
        },
    );
}
