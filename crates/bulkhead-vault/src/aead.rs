//! AES-256-GCM with a versioned ciphertext format.
//!
//! ```text
//! byte 0      format version (1)
//! bytes 1-12  random 96-bit nonce
//! bytes 13-   ciphertext and 16-byte tag
//! ```
//! The associated data is never stored: the caller rebuilds it from the
//! row's own coordinates (tenant, connection, versions), so a ciphertext
//! copied to another row fails to open. Random nonces are safe here: a data
//! key encrypts far fewer than 2^32 messages before it is rotated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

/// Current ciphertext format.
pub const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// A 256-bit symmetric key, zeroed on drop, never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Encryption or decryption failed; deliberately without detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// The random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// Wrong key, wrong associated data, tampered or truncated ciphertext,
    /// or an unknown format version.
    #[error("ciphertext could not be opened")]
    Open,
    /// Encryption failed.
    #[error("encryption failed")]
    Seal,
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, AeadError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut()).map_err(|_| AeadError::Random)?;
        Ok(Self(k))
    }

    /// From raw bytes (an unwrapped key); `None` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// The raw key, for wrapping only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0))
    }

    /// Encrypts `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let cipher = self.cipher();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| AeadError::Random)?;
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| AeadError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a [`seal`](Self::seal) output bound to `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != FORMAT_V1 {
            return Err(AeadError::Open);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| AeadError::Open)?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| AeadError::Open)
    }
}

/// Associated data: a label, then length-prefixed fields, so that no two
/// different field lists can produce the same bytes.
pub fn associated_data(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(label.as_bytes());
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_tamper_fails() {
        let key = DataKey::generate().unwrap();
        let aad = associated_data("t", &[b"acme", b"slack"]);
        let sealed = key.seal(&aad, b"xoxb-secret").unwrap();
        assert_eq!(&key.open(&aad, &sealed).unwrap()[..], b"xoxb-secret");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[i] ^= 1 << bit;
                assert_eq!(
                    key.open(&aad, &t),
                    Err(AeadError::Open),
                    "byte {i} bit {bit}"
                );
            }
        }
        assert_eq!(
            key.open(&aad, &sealed[..sealed.len() - 1]),
            Err(AeadError::Open)
        );
        let other_aad = associated_data("t", &[b"acme", b"jira"]);
        assert_eq!(key.open(&other_aad, &sealed), Err(AeadError::Open));
        assert_eq!(
            DataKey::generate().unwrap().open(&aad, &sealed),
            Err(AeadError::Open)
        );
    }

    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(
            associated_data("t", &[b"ab", b"c"]),
            associated_data("t", &[b"a", b"bc"])
        );
    }

    #[test]
    fn keys_never_print() {
        assert_eq!(
            format!("{:?}", DataKey::generate().unwrap()),
            "DataKey([redacted])"
        );
    }
}
