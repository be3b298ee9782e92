//! The credential vault.
//!
//! Credentials live only here, encrypted, and are found by (tenant scope,
//! connection name). The key hierarchy is:
//!
//! ```text
//! key-encryption key (KEK)   held by a KeyProvider (local key file, AWS KMS…)
//!   └─ data key (DEK)        one per tenant (and one for the platform), stored only wrapped
//!        └─ secret           AES-256-GCM, associated data binds tenant, connection, versions
//! ```
//!
//! The vault never returns secrets over the API; it hands them to code that
//! injects them into an outbound request (`Vault::use_credential`), and it
//! can scrub a tenant's secret values, and their common encodings, out of
//! text before that text reaches a model (`Vault::redact`, [`redact`]).

pub mod aead;
#[cfg(feature = "aws-kms")]
pub mod aws_kms;
pub mod credential;
pub mod kms;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod oauth;
pub mod redact;
pub mod store;
pub mod vault;

pub use credential::{
    ConnectionName, CredentialKind, CredentialMeta, CredentialSecret, CredentialStatus,
};
pub use kms::{EncryptionContext, KeyProvider, KmsError, WrappedKey};
pub use redact::Redactor;
pub use store::{KeyOwner, StoredCredential, StoredDataKey, VaultStore};
pub use vault::{Vault, VaultError};
