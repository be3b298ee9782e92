//! Signed checkpoints of audit chains.
//!
//! A checkpoint is the platform's Ed25519 signature over (tenant, sequence
//! number, chain head, time): "this chain had this head at this
//! position". A tenant that keeps its checkpoints can prove any later
//! rewrite of its chain, even one recomputed from the first event on,
//! because recomputing a chain does not recompute the signatures. The
//! signed bytes are the RFC 8785 form ([`crate::jcs`]) of the checkpoint
//! object without `sig` (docs/audit.md).

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::audit::hex;
use crate::{TenantId, Timestamp};

/// The `type` member of every checkpoint object.
pub const CHECKPOINT_TYPE: &str = "checkpoint";

/// Format version of checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The signature algorithm of audit keys.
pub const ALGORITHM: &str = "Ed25519";

/// One signed checkpoint, as stored, served and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_TYPE`]; tells checkpoint lines from events.
    #[serde(rename = "type")]
    pub kind: String,
    /// Format version, [`CHECKPOINT_VERSION`].
    pub v: u32,
    /// The chain's tenant; `None` for the operator's chain.
    pub tenant: Option<TenantId>,
    /// Sequence number of the chain's last event when signed.
    pub seq: u64,
    /// That event's `hash`.
    pub head: String,
    /// When it was signed.
    pub time: Timestamp,
    /// Id of the key that signed it ([`AuditPublicKey::id`]).
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`], lowercase hex.
    pub sig: String,
}

impl Checkpoint {
    fn object(&self, with_sig: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "type": self.kind,
            "v": self.v,
            "tenant": self.tenant,
            "seq": self.seq,
            "head": self.head,
            "time": self.time,
            "key_id": self.key_id,
        });
        if with_sig && let Some(map) = v.as_object_mut() {
            map.insert("sig".into(), serde_json::Value::String(self.sig.clone()));
        }
        v
    }

    /// The bytes the signature covers: the RFC 8785 form without `sig`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        crate::jcs::canonicalize(&self.object(false)).into_bytes()
    }

    /// The checkpoint as served and exported: its RFC 8785 form.
    pub fn line(&self) -> String {
        crate::jcs::canonicalize(&self.object(true))
    }

    /// Checks the signature against the key it names among `keys`.
    pub fn verify(&self, keys: &[AuditPublicKey]) -> Result<(), CheckpointError> {
        if self.kind != CHECKPOINT_TYPE || self.v != CHECKPOINT_VERSION {
            return Err(CheckpointError::Format);
        }
        let key = keys
            .iter()
            .find(|k| k.id == self.key_id)
            .ok_or_else(|| CheckpointError::UnknownKey(self.key_id.clone()))?;
        let public = key.verifying_key()?;
        let sig = unhex(&self.sig)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or(CheckpointError::BadSignature)?;
        public
            .verify(
                &self.signed_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// Why a checkpoint did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// Not a checkpoint of a known format.
    #[error("not a checkpoint of a known format")]
    Format,
    /// Signed by a key not among the known public keys.
    #[error("signed by unknown key {0:?}")]
    UnknownKey(String),
    /// A public key is not 32 bytes of hex, or not a curve point.
    #[error("public key {0:?} is malformed")]
    BadKey(String),
    /// The signature does not match.
    #[error("signature invalid")]
    BadSignature,
}

/// A public key of the platform's audit signing keys, as served by
/// `GET /v1/audit/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPublicKey {
    /// Key id: the first 16 hex digits of the SHA-256 of the public key.
    pub id: String,
    /// Always [`ALGORITHM`].
    pub alg: String,
    /// The 32-byte Ed25519 public key, lowercase hex.
    pub public_key: String,
    /// Whether new checkpoints are signed with it.
    pub current: bool,
}

impl AuditPublicKey {
    fn verifying_key(&self) -> Result<VerifyingKey, CheckpointError> {
        let bytes = unhex(&self.public_key)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| CheckpointError::BadKey(self.id.clone()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| CheckpointError::BadKey(self.id.clone()))
    }
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &[u8; 32]) -> String {
    hex(&Sha256::digest(public))[..16].to_owned()
}

/// The platform's audit signing key. Its secret half never leaves it: no
/// `Debug` of the key, no serialisation.
pub struct AuditSigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// The signer of a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = key_id(key.verifying_key().as_bytes());
        Self { key, id }
    }

    /// The signer of a seed written as 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = Zeroizing::new(unhex(text.trim())?);
        let seed = Zeroizing::new(<[u8; 32]>::try_from(bytes.as_slice()).ok()?);
        Some(Self::from_seed(&seed))
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half, marked current or not.
    pub fn public(&self, current: bool) -> AuditPublicKey {
        AuditPublicKey {
            id: self.id.clone(),
            alg: ALGORITHM.into(),
            public_key: hex(self.key.verifying_key().as_bytes()),
            current,
        }
    }

    /// Signs the checkpoint of a chain whose last event is `seq`/`head`.
    pub fn sign(
        &self,
        tenant: Option<TenantId>,
        seq: u64,
        head: &str,
        time: Timestamp,
    ) -> Checkpoint {
        let mut c = Checkpoint {
            kind: CHECKPOINT_TYPE.into(),
            v: CHECKPOINT_VERSION,
            tenant,
            seq,
            head: head.to_owned(),
            time,
            key_id: self.id.clone(),
            sig: String::new(),
        };
        c.sig = hex(&self.key.sign(&c.signed_bytes()).to_bytes());
        c
    }
}

/// Bytes of lowercase or uppercase hex, if it is hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(b: u8) -> AuditSigner {
        AuditSigner::from_seed(&Zeroizing::new([b; 32]))
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let s = signer(7);
        let keys = [s.public(true)];
        let c = s.sign(
            Some(TenantId::parse("acme").unwrap()),
            1000,
            &"ab".repeat(32),
            Timestamp::now(),
        );
        assert_eq!(c.verify(&keys), Ok(()));
        let back: Checkpoint = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(back.verify(&keys), Ok(()));
        assert!(c.line().starts_with(r#"{"head":""#), "{}", c.line());

        let mut bad = c.clone();
        bad.seq = 999;
        assert_eq!(bad.verify(&keys), Err(CheckpointError::BadSignature));
        let mut bad = c.clone();
        bad.tenant = Some(TenantId::parse("other").unwrap());
        assert_eq!(bad.verify(&keys), Err(CheckpointError::BadSignature));
        // Signed by another key that claims the right id.
        let mut forged = signer(8).sign(c.tenant.clone(), c.seq, &c.head, c.time);
        forged.key_id = c.key_id.clone();
        assert_eq!(forged.verify(&keys), Err(CheckpointError::BadSignature));
        let other = signer(8).sign(c.tenant.clone(), c.seq, &c.head, c.time);
        assert_eq!(
            other.verify(&keys),
            Err(CheckpointError::UnknownKey(other.key_id.clone()))
        );
    }

    #[test]
    fn the_signer_does_not_show_its_secret() {
        let s = AuditSigner::from_hex(&"11".repeat(32)).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("1111"), "{debug}");
        assert_eq!(s.id().len(), 16);
        assert!(AuditSigner::from_hex("zz").is_none());
    }
}
