//! `[quotas]`: the default per-tenant quotas and budget alerts.

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};
use crate::money::Usd;

/// `[quotas]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// `[quotas.default]`, per tenant.
    #[serde(default)]
    pub default: QuotaValues,
    /// `[quotas.alerts]`: budget alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Per-tenant limits; `None` means unlimited. The same shape is a
/// tenant's override (`PATCH /admin/v1/tenants/{id} {"quotas": {...}}`),
/// where `None` means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaValues {
    /// Tenant-plane requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Model tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Concurrent agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_runs: Option<u64>,
    /// Tool calls per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_per_minute: Option<u64>,
    /// Daily budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget_usd: Option<Usd>,
    /// Monthly budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_usd: Option<Usd>,
    /// Share of saturated capacity (weighted fair queueing); 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Where budget alerts are posted (`http(s)://`); none: no alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_webhook: Option<String>,
    /// Knowledge documents stored across collections; unset: 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_documents: Option<u64>,
    /// Bytes of knowledge document text stored across collections; unset:
    /// 10 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
}

impl QuotaValues {
    /// `self` with every value `over` sets replacing this one's.
    pub fn overridden_by(&self, over: &QuotaValues) -> QuotaValues {
        QuotaValues {
            requests_per_minute: over.requests_per_minute.or(self.requests_per_minute),
            tokens_per_minute: over.tokens_per_minute.or(self.tokens_per_minute),
            concurrent_runs: over.concurrent_runs.or(self.concurrent_runs),
            tool_calls_per_minute: over.tool_calls_per_minute.or(self.tool_calls_per_minute),
            daily_budget_usd: over.daily_budget_usd.or(self.daily_budget_usd),
            monthly_budget_usd: over.monthly_budget_usd.or(self.monthly_budget_usd),
            weight: over.weight.or(self.weight),
            alert_webhook: over
                .alert_webhook
                .clone()
                .or_else(|| self.alert_webhook.clone()),
            max_documents: over.max_documents.or(self.max_documents),
            max_stored_bytes: over.max_stored_bytes.or(self.max_stored_bytes),
        }
    }

    /// Problems with the values, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.weight == Some(0) {
            out.push(("weight", "must be at least 1".to_owned()));
        }
        if self.weight.is_some_and(|w| w > 1000) {
            out.push(("weight", "must be at most 1000".to_owned()));
        }
        if let Some(url) = &self.alert_webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(("alert_webhook", format!("{url:?} is not an http(s) URL")));
        }
        out
    }
}

/// `[quotas.alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Percentages of the monthly budget that post an alert when crossed.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// HMAC-SHA256 key of the `Bulkhead-Signature` header (`"env:NAME"`).
    /// Without one, alerts are not sent (and `check` says so).
    pub signing_key: Option<ConfigSecret>,
}

fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            thresholds: default_thresholds(),
            signing_key: None,
        }
    }
}

/// `[quotas]`: the default values, alert thresholds, and the alerts'
/// signing key from the environment.
pub(super) fn validate(
    quotas: &mut QuotasConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    for (key, message) in quotas.default.problems() {
        errors.push(format!("quotas.default.{key}"), message);
    }
    for t in &quotas.alerts.thresholds {
        if *t == 0 || *t > 1000 {
            errors.push(
                "quotas.alerts.thresholds",
                format!("{t} is not a percentage between 1 and 1000"),
            );
        }
    }
    if let Some(key) = &mut quotas.alerts.signing_key {
        resolve(key, "quotas.alerts.signing_key", env, errors);
    }
}
