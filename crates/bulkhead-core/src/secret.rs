//! A string that must never be printed.
//!
//! `SecretString` has no `Display`, and its `Debug` prints a fixed marker, so
//! a secret that slips into a `tracing` field or an error message shows up as
//! `[redacted]` instead of its value. Memory is zeroed on drop.

use std::fmt;

use zeroize::Zeroizing;

/// A secret value (operator token, JWT HMAC secret, later credentials).
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Reveals the value. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for SecretString {
    /// Equality for tests and configuration comparison only; authentication
    /// compares digests, never secrets directly.
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::new("canary-7f3a".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "canary-7f3a");
    }
}
