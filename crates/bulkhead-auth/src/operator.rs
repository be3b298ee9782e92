//! Static bearer tokens: the operator token, and the optional metrics token.

use bulkhead_core::{RequestId, SecretString};
use sha2::{Digest, Sha256};

use crate::scope::OperatorScope;

/// A static bearer token, kept only as its SHA-256 digest; presented
/// tokens are compared digest to digest in constant time.
pub struct TokenDigest {
    digest: [u8; 32],
}

impl TokenDigest {
    /// From the token.
    pub fn new(token: &SecretString) -> Self {
        Self {
            digest: Sha256::digest(token.expose().as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Verifies the operator's bearer token.
pub struct OperatorAuthenticator {
    token: TokenDigest,
}

impl OperatorAuthenticator {
    /// From the configured or generated token.
    pub fn new(token: &SecretString) -> Self {
        Self {
            token: TokenDigest::new(token),
        }
    }

    /// An operator scope when `bearer` is the operator token.
    pub fn verify(&self, bearer: Option<&str>, request_id: &RequestId) -> Option<OperatorScope> {
        self.token
            .matches(bearer)
            .then(|| OperatorScope::mint(request_id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let auth = OperatorAuthenticator::new(&SecretString::new("operator-token-123456".into()));
        let rid = RequestId::generate();
        assert!(auth.verify(Some("operator-token-123456"), &rid).is_some());
        for bad in [
            None,
            Some(""),
            Some("operator-token-12345"),
            Some("operator-token-1234567"),
        ] {
            assert!(auth.verify(bad, &rid).is_none(), "{bad:?}");
        }
    }
}
