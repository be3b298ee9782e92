//! API keys: `bk_` followed by 43 base64url characters (256 random bits).
//!
//! Only the SHA-256 digest of a key is stored. A fast hash is right here
//! (unlike for passwords): the key carries 256 bits of randomness, so there
//! is nothing to brute-force, and lookups stay cheap on every request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_core::{ApiKeyId, SecretString};
use sha2::{Digest, Sha256};

/// Prefix of every bulkhead API key, so secret scanners can find leaked ones.
pub const PREFIX: &str = "bk_";
/// Random bytes per key.
const RANDOM_BYTES: usize = 32;
/// Length of the base64url text of [`RANDOM_BYTES`].
const BODY_LEN: usize = 43;

/// The SHA-256 digest of a key, the only form the store keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyDigest([u8; 32]);

impl ApiKeyDigest {
    /// Digest of a presented key, or `None` when it is not shaped like a
    /// bulkhead key (so malformed input never reaches the store).
    pub fn of_presented(key: &str) -> Option<Self> {
        let body = key.strip_prefix(PREFIX)?;
        if body.len() != BODY_LEN
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        Some(Self(Sha256::digest(key.as_bytes()).into()))
    }

    /// Raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for ApiKeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyDigest(..)")
    }
}

/// A freshly generated key: shown to the operator once, then only its
/// digest exists.
pub struct NewApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The key itself.
    pub plaintext: SecretString,
    /// Its digest, for the store.
    pub digest: ApiKeyDigest,
}

/// Why a key could not be generated (the OS random source failed).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError;

/// Generates a new key from the OS random source.
pub fn generate() -> Result<NewApiKey, RandomError> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| RandomError)?;
    let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let digest = Sha256::digest(text.as_bytes()).into();
    Ok(NewApiKey {
        id: ApiKeyId::generate(),
        plaintext: SecretString::new(text),
        digest: ApiKeyDigest(digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.plaintext.expose().starts_with("bk_"));
        assert_eq!(a.plaintext.expose().len(), 3 + BODY_LEN);
        assert_ne!(a.plaintext.expose(), b.plaintext.expose());
        assert_eq!(
            ApiKeyDigest::of_presented(a.plaintext.expose()),
            Some(a.digest)
        );
    }

    #[test]
    fn malformed_keys_have_no_digest() {
        let good = generate().unwrap();
        let k = good.plaintext.expose();
        for bad in [
            "",
            "bk_",
            &k[3..],
            &format!("xx_{}", &k[3..]),
            &k[..k.len() - 1],
            &format!("{k}a"),
            &format!("{}!", &k[..k.len() - 1]),
        ] {
            assert_eq!(ApiKeyDigest::of_presented(bad), None, "{bad:?}");
        }
    }
}
