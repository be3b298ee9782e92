//! `[policies]`: the platform's Cedar policy file.

use std::path::PathBuf;

use serde::Deserialize;

/// `[policies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Platform Cedar policies.
    pub file: PathBuf,
}
