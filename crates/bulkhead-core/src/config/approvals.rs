//! `[approvals]`: how long approval requests stay open, how often expired
//! ones are settled, and the approval webhooks' signing key.

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};

/// `[approvals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long an approval request stays open (seconds); after it the
    /// request is `expired` and its run ends without the call.
    #[serde(default = "default_approval_ttl")]
    pub ttl_s: u64,
    /// HMAC-SHA256 key of the `Bulkhead-Signature` header on approval
    /// webhooks (`"env:NAME"`). Without one, tenants cannot set an
    /// approval webhook.
    pub signing_key: Option<ConfigSecret>,
    /// How often every tenant's undecided requests past their expiry are
    /// settled (seconds, at least 10), ending their runs.
    #[serde(default = "default_approval_sweep")]
    pub sweep_interval_s: u64,
}

fn default_approval_ttl() -> u64 {
    86_400
}

fn default_approval_sweep() -> u64 {
    300
}

/// Longest an approval request may stay open: 30 days.
pub const MAX_APPROVAL_TTL_S: u64 = 30 * 86_400;

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl_s: default_approval_ttl(),
            signing_key: None,
            sweep_interval_s: default_approval_sweep(),
        }
    }
}

/// `[approvals]`: ranges, and the signing key from the environment.
pub(super) fn validate(
    approvals: &mut ApprovalsConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if !(1..=MAX_APPROVAL_TTL_S).contains(&approvals.ttl_s) {
        errors.push(
            "approvals.ttl_s",
            format!("must be between 1 and {MAX_APPROVAL_TTL_S} (30 days)"),
        );
    }
    if approvals.sweep_interval_s < 10 {
        errors.push("approvals.sweep_interval_s", "must be at least 10");
    }
    if let Some(key) = &mut approvals.signing_key {
        resolve(key, "approvals.signing_key", env, errors);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn approval_settings_are_checked_by_key() {
        let c = load("", &env).unwrap();
        assert_eq!(
            (c.approvals.ttl_s, c.approvals.sweep_interval_s),
            (86_400, 300)
        );
        assert!(c.approvals.signing_key.is_none());
        check(
            "[approvals]\nttl_s = 0\nsweep_interval_s = 5\nsigning_key = \"env:NOPE\"",
            &[
                "approvals.ttl_s",
                "approvals.sweep_interval_s",
                "approvals.signing_key",
            ],
        );
        check("[approvals]\nttl_s = 2592001", &["approvals.ttl_s"]);
        check("[approvals]\nttl = 60", &["approvals.ttl"]);
        let c = load("[approvals]\nttl_s = 60\nsigning_key = \"env:KEY\"", &env).unwrap();
        assert_eq!(c.approvals.ttl_s, 60);
        assert!(c.approvals.signing_key.is_some());
    }
}
