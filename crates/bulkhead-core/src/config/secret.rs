//! Secrets in the file: written as `"env:NAME"`, never literally, and
//! filled in from the environment function `load` is given.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::error::Errors;
use crate::SecretString;

/// A secret written as `"env:NAME"`; the value is filled in by [`load`](super::load).
#[derive(Clone)]
pub struct ConfigSecret {
    env: String,
    value: SecretString,
}

impl ConfigSecret {
    /// The environment variable it is read from.
    pub fn env_name(&self) -> &str {
        &self.env
    }

    /// The secret value (non-empty once loaded).
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// A secret with a known value, for tests and generated defaults.
    pub fn from_value(env: &str, value: SecretString) -> Self {
        Self {
            env: env.to_owned(),
            value,
        }
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "env:{}", self.env)
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("env:") {
            Some(name) if is_env_name(name) => Ok(Self {
                env: name.to_owned(),
                value: SecretString::new(String::new()),
            }),
            _ => Err(serde::de::Error::custom(
                "secrets are not written in the file: use \"env:NAME\" to read one from the environment variable NAME",
            )),
        }
    }
}

pub(super) fn resolve(
    secret: &mut ConfigSecret,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    match env(&secret.env) {
        Some(v) if !v.is_empty() => secret.value = SecretString::new(v),
        Some(_) => errors.push(
            path,
            format!("environment variable {} is empty", secret.env),
        ),
        None => errors.push(
            path,
            format!("environment variable {} is not set", secret.env),
        ),
    }
}

/// Bearer tokens (operator, metrics) shorter than this are refused; 16
/// characters of a random token are far beyond guessing over the network.
const MIN_TOKEN: usize = 16;

/// Resolves a bearer token (operator, metrics) and refuses one too short
/// to stay secret.
pub(super) fn resolve_token(
    token: &mut ConfigSecret,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    resolve(token, path, env, errors);
    let len = token.value.expose().chars().count();
    if len > 0 && len < MIN_TOKEN {
        errors.push(
            path,
            format!("the token must be at least {MIN_TOKEN} characters"),
        );
    }
}
