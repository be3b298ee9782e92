//! The operator token check.

use bulkhead_core::{RequestId, SecretString};
use sha2::{Digest, Sha256};

use crate::scope::OperatorScope;

/// Verifies the operator's bearer token. Only its digest is kept in memory,
/// and digests are compared in constant time.
pub struct OperatorAuthenticator {
    digest: [u8; 32],
}

impl OperatorAuthenticator {
    /// From the configured or generated token.
    pub fn new(token: &SecretString) -> Self {
        Self {
            digest: Sha256::digest(token.expose().as_bytes()).into(),
        }
    }

    /// An operator scope when `bearer` is the operator token.
    pub fn verify(&self, bearer: Option<&str>, request_id: &RequestId) -> Option<OperatorScope> {
        let presented: [u8; 32] = Sha256::digest(bearer?.as_bytes()).into();
        let diff = presented
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| OperatorScope::mint(request_id.clone()))
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
