//! `[operator]`: the operator plane's bearer token.

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve_token};

/// `[operator]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Bearer token of the operator plane; generated into the data
    /// directory when absent.
    pub token: Option<ConfigSecret>,
}

/// `[operator]`: the token, if set, comes from the environment and is long
/// enough.
pub(super) fn validate(
    operator: &mut OperatorConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if let Some(token) = &mut operator.token {
        resolve_token(token, "operator.token", env, errors);
    }
}
