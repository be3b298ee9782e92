//! `[audit]`: the audit signing key and how often checkpoints are signed.

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
        }
    }
}

/// `[audit]`: ranges, and the signing key from the environment.
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
}

#[cfg(test)]
mod tests {
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
}
