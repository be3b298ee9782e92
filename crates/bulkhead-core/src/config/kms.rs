//! `[kms]`: which provider holds the vault's key-encryption keys.

use serde::Deserialize;

use super::error::Errors;
use super::names::check_url;

/// Key providers for the vault's key-encryption keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KmsProvider {
    /// A versioned key file in the data directory.
    #[default]
    Local,
    /// AWS KMS (the `aws-kms` cargo feature).
    AwsKms,
}

/// `[kms]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// Which provider holds the key-encryption keys.
    #[serde(default)]
    pub provider: KmsProvider,
    /// AWS KMS key id, ARN or alias (`aws-kms`).
    pub key_id: Option<String>,
    /// AWS region (`aws-kms`).
    pub region: Option<String>,
    /// Endpoint override, e.g. a local KMS emulator (`aws-kms`).
    pub endpoint_url: Option<String>,
}

/// `[kms]`: the keys each provider needs, and no others.
pub(super) fn validate(kms: &KmsConfig, errors: &mut Errors) {
    match kms.provider {
        KmsProvider::Local => {
            for (key, set) in [
                ("key_id", kms.key_id.is_some()),
                ("region", kms.region.is_some()),
                ("endpoint_url", kms.endpoint_url.is_some()),
            ] {
                if set {
                    errors.push(
                        format!("kms.{key}"),
                        "only the aws-kms provider takes this key",
                    );
                }
            }
        }
        KmsProvider::AwsKms => {
            if kms.key_id.as_deref().is_none_or(|k| k.trim().is_empty()) {
                errors.push("kms.key_id", "is required for provider \"aws-kms\"");
            }
            if kms.region.as_deref().is_none_or(|r| r.trim().is_empty()) {
                errors.push("kms.region", "is required for provider \"aws-kms\"");
            }
            if let Some(url) = &kms.endpoint_url {
                check_url(url, "kms.endpoint_url", errors);
            }
        }
    }
}
