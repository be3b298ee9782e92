//! `[[alerts]]`, the platform's default alert rules (every tenant has
//! them unless it sets a rule of the same name), and `[alerting]`: the
//! operator's webhook and the key alert webhooks are signed with.

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};
use crate::alert::{AlertRule, check_rules};

/// `[alerting]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Where every tenant's alert transitions are also posted (an http(s)
    /// URL), with the cross-tenant block alerts.
    pub operator_webhook: Option<String>,
    /// HMAC-SHA256 key of the `Bulkhead-Signature` header on alert
    /// webhooks (`"env:NAME"`). Without one there are no alert webhooks:
    /// the operator webhook is refused and tenants cannot set one.
    pub signing_key: Option<ConfigSecret>,
}

/// Whether `url` may be a webhook: `http://` or `https://`, a host, no
/// spaces or control characters, at most 2048 bytes. (The egress guard
/// checks where it leads when it is posted to.)
pub fn valid_webhook(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.len() <= 2048
        && !host.is_empty()
        && !host.starts_with(':')
        && !host.contains('@')
        && url.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn validate(
    alerts: &[AlertRule],
    alerting: &mut AlertingConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if let Err((i, e)) = check_rules(alerts) {
        let path = match i {
            Some(i) => format!("alerts[{i}].{}", e.field),
            None => "alerts".to_owned(),
        };
        errors.push(path, e.message);
    }
    if let Some(key) = &mut alerting.signing_key {
        resolve(key, "alerting.signing_key", env, errors);
    }
    if let Some(url) = &alerting.operator_webhook {
        if !valid_webhook(url) {
            errors.push(
                "alerting.operator_webhook",
                "must be an http(s) URL of at most 2048 characters",
            );
        } else if alerting.signing_key.is_none() {
            errors.push(
                "alerting.operator_webhook",
                "needs alerting.signing_key to sign what it posts",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn alert_rules_and_the_operator_webhook_are_checked_by_key() {
        let c = load(
            "[[alerts]]\nname = \"errors\"\nmetric = \"error_rate\"\nthreshold = 0.02\nwindow_s = 300\nmin_samples = 50\n\
             [[alerts]]\nname = \"spend\"\nmetric = \"spend_usd\"\nthreshold = \"25.00\"\nwindow_s = 3600\n\
             [alerting]\noperator_webhook = \"https://ops.example/hook\"\nsigning_key = \"env:KEY\"",
            &env,
        )
        .unwrap();
        assert_eq!(c.alerts.len(), 2);
        assert_eq!(c.alerts[0].min_samples, 50);
        assert_eq!(c.alerts[1].min_samples, 1);
        check(
            "[[alerts]]\nname = \"e\"\nmetric = \"error_rate\"\nthreshold = 2\nwindow_s = 300",
            &["alerts[0].threshold"],
        );
        check(
            "[[alerts]]\nname = \"e\"\nmetric = \"error_rate\"\nthreshold = 0.1\nwindow_s = 5",
            &["alerts[0].window_s"],
        );
        check(
            "[[alerts]]\nname = \"e\"\nmetric = \"error_rate\"\nthreshold = 0.1\nwindow_s = 60\nbogus = 1",
            &["alerts[0].bogus"],
        );
        check(
            "[alerting]\noperator_webhook = \"https://ops.example/hook\"",
            &["alerting.operator_webhook"],
        );
        check(
            "[alerting]\noperator_webhook = \"ftp://x\"\nsigning_key = \"env:KEY\"",
            &["alerting.operator_webhook"],
        );
    }
}
