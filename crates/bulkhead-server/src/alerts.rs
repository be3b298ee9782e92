//! Signed webhooks: budget alerts, posted when a tenant's spend crosses a
//! configured share of its monthly budget, and new approval requests
//! ([`ApprovalWebhook`]), posted to the tenant's `approval_webhook`.
//!
//! The body is JSON (`type: "budget.threshold"`, tenant, threshold,
//! month, spend and budget as decimal dollar strings). The
//! `Bulkhead-Signature` header is `t=<unix seconds>,v1=<hex>`, where
//! `v1` is HMAC-SHA256 under `[quotas.alerts] signing_key` of
//! `"<t>.<body>"`: a receiver recomputes it and rejects stale `t`
//! (replays). The limiter reports each crossing once (the settle that
//! moved spend across the line); delivery is tried three times (5 s
//! each, no redirects) and the outcome is an audit event
//! (`budget.alert`) in the tenant's chain.

use bulkhead_core::audit::AuditAction;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::SecretString;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_gateway::usage::nanos_to_usd;
use bulkhead_quota::limiter::{BudgetAlert, BudgetAlerts};
use bulkhead_store::TenantStore;
use hmac::{Hmac, Mac};
use serde_json::json;

/// Posts budget alerts.
pub struct WebhookAlerts {
    key: SecretString,
    client: reqwest::Client,
    store: Arc<dyn TenantStore>,
}

/// The `Bulkhead-Signature` value of `body` sent at unix time `t`.
pub fn signature(key: &SecretString, t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Posts a signed JSON body, trying three times (5 s each, no
/// redirects); the receiver's status, or why it was not reached.
async fn deliver(
    client: &reqwest::Client,
    key: &SecretString,
    url: &str,
    bytes: &[u8],
) -> Result<u16, String> {
    deliver_via(|| Ok(client.post(url)), key, bytes).await
}

/// [`deliver`] with the request built by `post` (a client behind the
/// egress guard, for URLs a tenant chose).
pub(crate) async fn deliver_via(
    post: impl Fn() -> Result<reqwest::RequestBuilder, String>,
    key: &SecretString,
    bytes: &[u8],
) -> Result<u16, String> {
    let mut outcome = Err("not sent".to_owned());
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        let t = Timestamp::now().unix_seconds();
        let sent = post()?
            .header("content-type", "application/json")
            .header("bulkhead-signature", signature(key, t, bytes))
            .body(bytes.to_vec())
            .send()
            .await;
        outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err(format!("the receiver answered {}", r.status().as_u16())),
            Err(e) => Err(e.without_url().to_string()),
        };
        if outcome.is_ok() {
            break;
        }
    }
    outcome
}

pub(crate) fn webhook_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("webhook client: {e}"))
}

impl WebhookAlerts {
    /// Alerts signed with `key`, recorded in `store`'s audit chains.
    pub fn new(key: SecretString, store: Arc<dyn TenantStore>) -> Result<Self, String> {
        Ok(Self {
            key,
            client: webhook_client()?,
            store,
        })
    }
}

#[async_trait]
impl BudgetAlerts for WebhookAlerts {
    async fn crossed(&self, scope: &TenantScope, alert: BudgetAlert) {
        let body = json!({
            "type": "budget.threshold",
            "tenant": scope.tenant().as_str(),
            "threshold_percent": alert.threshold_pct,
            "month": alert.month,
            "spent_usd": nanos_to_usd(alert.spent_nanos),
            "monthly_budget_usd": nanos_to_usd(alert.budget_nanos),
            "time": Timestamp::now().to_string(),
        });
        let bytes = body.to_string().into_bytes();
        // This runs in the gateway's background recording task, after the
        // client has its answer: a slow receiver delays no request, and a
        // graceful shutdown waits for the delivery.
        let store = &self.store;
        {
            let outcome = deliver(&self.client, &self.key, &alert.webhook, &bytes).await;
            let (result, detail) = match &outcome {
                Ok(status) => (Outcome::Success, json!({ "status": status })),
                Err(e) => (Outcome::Failure, json!({ "error": e })),
            };
            let mut details = json!({
                "threshold_percent": alert.threshold_pct, "month": alert.month,
                "spent_usd": nanos_to_usd(alert.spent_nanos),
                "monthly_budget_usd": nanos_to_usd(alert.budget_nanos),
            });
            if let (Some(d), Some(extra)) = (details.as_object_mut(), detail.as_object()) {
                d.extend(extra.clone());
            }
            let event = NewAuditEvent::new(
                AuditAction::BudgetAlert,
                format!("tenant:{}", scope.tenant()),
                result,
                scope.request_id().clone(),
            )
            .with_details(details);
            if let Err(e) = store.append_audit(scope, event).await {
                tracing::error!(error = %e, "could not audit a budget alert");
            }
        }
    }
}

/// Posts each new approval request to the tenant's `approval_webhook`
/// (a tenant setting), signed like budget alerts, and records the
/// delivery as an `approval.notify` event in the tenant's chain.
pub struct ApprovalWebhook {
    key: SecretString,
    client: reqwest::Client,
    store: Arc<dyn TenantStore>,
    gateway: Arc<bulkhead_gateway::Gateway>,
}

impl ApprovalWebhook {
    /// Webhooks signed with `key`; the URL is read from `gateway`'s tenant
    /// settings, events go to `store`.
    pub fn new(
        key: SecretString,
        store: Arc<dyn TenantStore>,
        gateway: Arc<bulkhead_gateway::Gateway>,
    ) -> Result<Self, String> {
        Ok(Self {
            key,
            client: webhook_client()?,
            store,
            gateway,
        })
    }
}

#[async_trait]
impl bulkhead_agent::approval::ApprovalNotifier for ApprovalWebhook {
    async fn requested(&self, scope: &TenantScope, approvals: &[bulkhead_agent::Approval]) {
        let url = match self.gateway.settings(scope).await {
            Ok(s) => s.approval_webhook,
            Err(e) => {
                tracing::error!(error = %e, "could not read the approval webhook setting");
                return;
            }
        };
        let Some(url) = url else { return };
        for a in approvals {
            // The tenant's own data, to the tenant's own endpoint: the
            // request whole, so a person can decide from the message.
            let body = json!({
                "type": "approval.requested",
                "tenant": scope.tenant().as_str(),
                "approval": {
                    "id": a.id, "status": a.status, "run_id": a.run_id, "agent": a.agent,
                    "tool": a.tool, "connection": a.connection, "arguments": a.arguments,
                    "arguments_hash": a.arguments_hash, "summary": a.summary,
                    "requested_by": a.requested_by, "created_at": a.created_at.to_string(),
                    "expires_at": a.expires_at.to_string(),
                },
                "time": Timestamp::now().to_string(),
            });
            let bytes = body.to_string().into_bytes();
            let outcome = deliver(&self.client, &self.key, &url, &bytes).await;
            let (result, details) = match &outcome {
                Ok(status) => (
                    Outcome::Success,
                    json!({"approval_id": a.id, "run_id": a.run_id, "status": status}),
                ),
                Err(e) => (
                    Outcome::Failure,
                    json!({"approval_id": a.id, "run_id": a.run_id, "error": e}),
                ),
            };
            let event = NewAuditEvent::new(
                AuditAction::ApprovalNotify,
                format!("approval:{}", a.id),
                result,
                scope.request_id().clone(),
            )
            .with_run(a.agent.clone(), a.run_id.to_string())
            .with_details(details);
            if let Err(e) = self.store.append_audit(scope, event).await {
                tracing::error!(error = %e, "could not audit an approval webhook");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        let key = SecretString::new("Jefe".into());
        let sig = signature(&key, 0, b"what do ya want for nothing?");
        // Computed independently: Python's hmac.new(b"Jefe",
        // b"0.what do ya want for nothing?", hashlib.sha256).hexdigest().
        assert_eq!(
            sig,
            "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert_ne!(signature(&key, 1, b"what do ya want for nothing?"), sig);
    }
}
