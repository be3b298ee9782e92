//! `[audit]`: where tenants' audit events are published beyond the
//! partition (`[audit.nats]`, off unless the table is present).

use serde::Deserialize;

use super::error::Errors;
use super::secret::{self, ConfigSecret};

/// `[audit]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `[audit.nats]`: per-tenant streams on NATS JetStream. None: off.
    pub nats: Option<NatsConfig>,
}

/// `[audit.nats]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created if missing, subjects `<prefix>.>`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Each tenant's events go to `<subject_prefix>.<tenant>`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// The publisher's user name, if the server requires one.
    pub user: Option<String>,
    /// Its password, `"env:NAME"` (required with `user`).
    pub password: Option<ConfigSecret>,
}

fn default_stream() -> String {
    "BULKHEAD_AUDIT".to_owned()
}

fn default_subject_prefix() -> String {
    "bulkhead.audit".to_owned()
}

/// A subject token: no wildcards, separators or spaces.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[audit]`: a nats:// URL, a stream name and subject prefix the server
/// accepts, and the password with its user.
pub(super) fn validate(
    audit: &mut AuditConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    let Some(nats) = audit.nats.as_mut() else {
        return;
    };
    match nats.url.strip_prefix("nats://") {
        Some(rest) if !rest.is_empty() && !rest.contains('@') => {}
        // Not echoed: a URL may carry a password.
        Some(_) => errors.push(
            "audit.nats.url",
            "must not carry credentials: use audit.nats.user and audit.nats.password",
        ),
        None => errors.push("audit.nats.url", "is not a nats:// URL"),
    }
    if !is_token(&nats.stream) {
        errors.push(
            "audit.nats.stream",
            "must be letters, digits, `_` or `-` (no `.`, `*`, `>` or spaces)",
        );
    }
    if !nats.subject_prefix.split('.').all(is_token) {
        errors.push(
            "audit.nats.subject_prefix",
            "must be `.`-separated tokens of letters, digits, `_` or `-` (no wildcards)",
        );
    }
    match (&nats.user, nats.password.as_mut()) {
        (Some(_), Some(p)) => secret::resolve(p, "audit.nats.password", env, errors),
        (None, None) => {}
        (Some(_), None) => errors.push("audit.nats.password", "is required with audit.nats.user"),
        (None, Some(_)) => errors.push("audit.nats.user", "is required with audit.nats.password"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn nats_is_off_by_default_and_checked_when_present() {
        check("", &[]);
        check("[audit]\n", &[]);
        check("[audit.nats]\nurl = \"nats://127.0.0.1:4222\"\n", &[]);
        check(
            "[audit.nats]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"pub\"\npassword = \"env:KEY\"\n",
            &[],
        );
        check(
            "[audit.nats]\nurl = \"http://x\"\nstream = \"a.b\"\nsubject_prefix = \"a.*\"\n",
            &[
                "audit.nats.url:",
                "audit.nats.stream:",
                "audit.nats.subject_prefix:",
            ],
        );
        check(
            "[audit.nats]\nurl = \"nats://u:p@h:4222\"\nuser = \"pub\"\n",
            &["audit.nats.url:", "audit.nats.password:"],
        );
        check(
            "[audit.nats]\nurl = \"nats://h\"\nuser = \"pub\"\npassword = \"env:UNSET\"\n",
            &["audit.nats.password:"],
        );
        check(
            "[audit.nats]\nurl = \"nats://h\"\nsubjects = 1\n",
            &["audit.nats.subjects"],
        );
    }
}
