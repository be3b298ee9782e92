//! `[audit]`: the audit signing key, how often checkpoints are signed,
//! and where tenants' audit events are published beyond the partition
//! (`[audit.nats]`, off unless the table is present).

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 seed (64 hex digits) that signs checkpoints
    /// (`"env:NAME"`). Without one, a key is generated into the data
    /// directory on first start.
    pub signing_key: Option<ConfigSecret>,
    /// A chain is checkpointed once this many events were added since its
    /// last checkpoint.
    #[serde(default = "default_checkpoint_events")]
    pub checkpoint_events: u64,
    /// ...or once its newest event is this many seconds newer than its last
    /// checkpoint.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_s: u64,
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

fn default_checkpoint_events() -> u64 {
    1000
}

fn default_checkpoint_interval() -> u64 {
    3600
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            checkpoint_events: default_checkpoint_events(),
            checkpoint_interval_s: default_checkpoint_interval(),
            nats: None,
        }
    }
}

/// `[audit]`: ranges, the signing key from the environment, and
/// `[audit.nats]`.
pub(super) fn validate(
    audit: &mut AuditConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if audit.checkpoint_events == 0 {
        errors.push("audit.checkpoint_events", "must be at least 1");
    }
    if audit.checkpoint_interval_s == 0 {
        errors.push("audit.checkpoint_interval_s", "must be at least 1");
    }
    if let Some(key) = &mut audit.signing_key {
        let before = errors.0.len();
        resolve(key, "audit.signing_key", env, errors);
        if errors.0.len() == before
            && crate::checkpoint::AuditSigner::from_hex(key.value().expose()).is_none()
        {
            errors.push(
                "audit.signing_key",
                "must be 64 hex digits (an Ed25519 seed)",
            );
        }
    }
    validate_nats(audit, env, errors);
}

/// `[audit.nats]`: a nats:// URL, a stream name and subject prefix the server
/// accepts, and the password with its user.
fn validate_nats(
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
        (Some(_), Some(p)) => resolve(p, "audit.nats.password", env, errors),
        (None, None) => {}
        (Some(_), None) => errors.push("audit.nats.password", "is required with audit.nats.user"),
        (None, Some(_)) => errors.push("audit.nats.user", "is required with audit.nats.password"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use crate::config::testing::env;
    use crate::config::*;

    #[test]
    fn audit_settings_have_defaults_and_are_checked() {
        let c = load("", &env).unwrap();
        assert_eq!(c.audit.checkpoint_events, 1000);
        assert_eq!(c.audit.checkpoint_interval_s, 3600);
        assert!(c.audit.signing_key.is_none());
        let e = load(
            "[audit]\ncheckpoint_events = 0\nsigning_key = \"env:NOPE\"",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("audit.checkpoint_events"), "{e}");
        assert!(e.contains("audit.signing_key"), "{e}");
    }

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
