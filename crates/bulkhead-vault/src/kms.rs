//! Key providers: who holds the key-encryption keys (KEKs) that wrap each
//! tenant's data key.
//!
//! The `local` provider (the embedded default) keeps versioned KEKs in a
//! key file in the data directory (mode 0600). Other providers (AWS KMS
//! behind the `aws-kms` feature) implement the same trait. Every wrap
//! carries an encryption context naming the tenant, which the provider
//! binds to the ciphertext: a wrapped key copied to another tenant's row
//! does not unwrap.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bulkhead_core::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{DataKey, associated_data};

/// Key-value pairs bound to a wrapped key (AWS calls it the same).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    /// The context of a tenant's data key.
    pub fn tenant(tenant_uid: &str, dek_version: u32) -> Self {
        let mut m = BTreeMap::new();
        m.insert("purpose".into(), "bulkhead-tenant-data-key".into());
        m.insert("tenant_uid".into(), tenant_uid.to_owned());
        m.insert("dek_version".into(), dek_version.to_string());
        Self(m)
    }

    /// The context of the platform's data key.
    pub fn platform(dek_version: u32) -> Self {
        let mut m = BTreeMap::new();
        m.insert("purpose".into(), "bulkhead-platform-data-key".into());
        m.insert("dek_version".into(), dek_version.to_string());
        Self(m)
    }

    pub(crate) fn to_aad(&self) -> Vec<u8> {
        let fields: Vec<&[u8]> = self
            .0
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
            .collect();
        associated_data("bulkhead-kek-v1", &fields)
    }
}

/// A data key wrapped by a provider, with what is needed to unwrap it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Provider name (`local`, `aws-kms`).
    pub provider: String,
    /// The KEK's id within the provider.
    pub key_id: String,
    /// The KEK's version within the provider.
    pub key_version: u32,
    /// The wrapped bytes.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WrappedKey({}:{}:v{})",
            self.provider, self.key_id, self.key_version
        )
    }
}

/// Key provider failures.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The wrapped key names a KEK version the provider does not have.
    #[error("key-encryption key {key_id} version {version} is not available")]
    UnknownKeyVersion {
        /// KEK id.
        key_id: String,
        /// KEK version.
        version: u32,
    },
    /// The wrapped key does not unwrap (tampered, wrong context, wrong key).
    #[error("the data key could not be unwrapped")]
    Unwrap,
    /// The wrapped key belongs to another provider.
    #[error("the data key was wrapped by provider {0}, not this one")]
    WrongProvider(String),
    /// The provider cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// The key file or the remote service failed.
    #[error("key provider failure: {0}")]
    Backend(String),
}

/// A holder of key-encryption keys.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Provider name stored with every wrapped key.
    fn name(&self) -> &str;
    /// The KEK new wraps use: (key id, version).
    fn current(&self) -> (String, u32);
    /// Wraps a data key under the current KEK, bound to `ctx`.
    async fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, KmsError>;
    /// Unwraps a data key; `ctx` must equal the one it was wrapped with.
    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError>;
    /// Makes a new KEK version current; older versions stay usable for
    /// unwrapping until every data key has been re-wrapped.
    async fn rotate(&self) -> Result<(String, u32), KmsError>;

    /// Whether `wrapped` was made with the current KEK.
    fn is_current(&self, wrapped: &WrappedKey) -> bool {
        let (id, version) = self.current();
        wrapped.provider == self.name() && wrapped.key_id == id && wrapped.key_version == version
    }
}

/// File name of the local key file inside the data directory.
pub const LOCAL_KEY_FILE: &str = "kek.json";
const LOCAL_KEY_ID: &str = "local";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    active: u32,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    version: u32,
    key: String,
    created_at: Timestamp,
}

struct LocalState {
    active: u32,
    keys: BTreeMap<u32, DataKey>,
    created: BTreeMap<u32, Timestamp>,
}

/// KEKs in a local, versioned key file (mode 0600).
pub struct LocalKeyProvider {
    path: PathBuf,
    state: RwLock<LocalState>,
}

fn backend<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> KmsError + '_ {
    move |e| KmsError::Backend(format!("{}: {e}", path.display()))
}

impl LocalKeyProvider {
    /// Opens the key file in `dir`, creating it with a first KEK if absent.
    #[expect(
        clippy::disallowed_methods,
        reason = "the local key provider is the vault's key file: the one file a domain crate reads"
    )]
    pub fn open(dir: &Path) -> Result<Self, KmsError> {
        let path = dir.join(LOCAL_KEY_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: KeyFile = serde_json::from_slice(&bytes).map_err(backend(&path))?;
                if file.format != 1 {
                    return Err(KmsError::Backend(format!(
                        "{}: unknown key file format {}",
                        path.display(),
                        file.format
                    )));
                }
                let mut keys = BTreeMap::new();
                let mut created = BTreeMap::new();
                for e in file.keys {
                    let raw =
                        Zeroizing::new(STANDARD.decode(e.key.as_bytes()).map_err(backend(&path))?);
                    let key = DataKey::from_bytes(&raw).ok_or_else(|| {
                        KmsError::Backend(format!(
                            "{}: key {} is not 32 bytes",
                            path.display(),
                            e.version
                        ))
                    })?;
                    keys.insert(e.version, key);
                    created.insert(e.version, e.created_at);
                }
                if !keys.contains_key(&file.active) {
                    return Err(KmsError::Backend(format!(
                        "{}: active version {} is missing",
                        path.display(),
                        file.active
                    )));
                }
                LocalState {
                    active: file.active,
                    keys,
                    created,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut state = LocalState {
                    active: 1,
                    keys: BTreeMap::new(),
                    created: BTreeMap::new(),
                };
                state
                    .keys
                    .insert(1, DataKey::generate().map_err(backend(&path))?);
                state.created.insert(1, Timestamp::now());
                write_key_file(&path, &state)?;
                tracing::info!(path = %path.display(), "created the local key-encryption key file");
                state
            }
            Err(e) => return Err(backend(&path)(e)),
        };
        Ok(Self {
            path,
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, LocalState>, KmsError> {
        self.state
            .read()
            .map_err(|_| KmsError::Backend("key state poisoned".into()))
    }
}

/// Writes the key file atomically: a temporary file (0600), fsync, rename.
#[expect(
    clippy::disallowed_methods,
    reason = "the local key provider is the vault's key file: the one file a domain crate writes"
)]
fn write_key_file(path: &Path, state: &LocalState) -> Result<(), KmsError> {
    let file = KeyFile {
        format: 1,
        active: state.active,
        keys: state
            .keys
            .iter()
            .map(|(v, k)| KeyEntry {
                version: *v,
                key: STANDARD.encode(k.expose()),
                created_at: state.created.get(v).copied().unwrap_or_else(Timestamp::now),
            })
            .collect(),
    };
    let text = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(backend(path))?);
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(backend(path))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(backend(path))?;
    std::fs::rename(&tmp, path).map_err(backend(path))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn current(&self) -> (String, u32) {
        let active = self.state.read().map(|s| s.active).unwrap_or(0);
        (LOCAL_KEY_ID.to_owned(), active)
    }

    async fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        let state = self.read()?;
        let kek = state.keys.get(&state.active).ok_or(KmsError::Unwrap)?;
        let ciphertext = kek
            .seal(&ctx.to_aad(), key.expose())
            .map_err(|e| KmsError::Backend(e.to_string()))?;
        Ok(WrappedKey {
            provider: self.name().to_owned(),
            key_id: LOCAL_KEY_ID.to_owned(),
            key_version: state.active,
            ciphertext,
        })
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        if wrapped.provider != self.name() {
            return Err(KmsError::WrongProvider(wrapped.provider.clone()));
        }
        let state = self.read()?;
        let kek = state
            .keys
            .get(&wrapped.key_version)
            .filter(|_| wrapped.key_id == LOCAL_KEY_ID)
            .ok_or_else(|| KmsError::UnknownKeyVersion {
                key_id: wrapped.key_id.clone(),
                version: wrapped.key_version,
            })?;
        let raw = kek
            .open(&ctx.to_aad(), &wrapped.ciphertext)
            .map_err(|_| KmsError::Unwrap)?;
        DataKey::from_bytes(&raw).ok_or(KmsError::Unwrap)
    }

    async fn rotate(&self) -> Result<(String, u32), KmsError> {
        let mut state = self
            .state
            .write()
            .map_err(|_| KmsError::Backend("key state poisoned".into()))?;
        let next = state.keys.keys().max().copied().unwrap_or(0) + 1;
        state
            .keys
            .insert(next, DataKey::generate().map_err(backend(&self.path))?);
        state.created.insert(next, Timestamp::now());
        let previous = state.active;
        state.active = next;
        if let Err(e) = write_key_file(&self.path, &state) {
            // Nothing was wrapped with the new key yet: forget it.
            state.keys.remove(&next);
            state.active = previous;
            return Err(e);
        }
        Ok((LOCAL_KEY_ID.to_owned(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrap_unwrap_rotate_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKeyProvider::open(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            #[expect(
                clippy::disallowed_methods,
                reason = "the test checks the key file's mode on disk"
            )]
            let mode = std::fs::metadata(dir.path().join(LOCAL_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let dek = DataKey::generate().unwrap();
        let ctx = EncryptionContext::tenant("u1", 1);
        let w1 = kms.wrap(&dek, &ctx).await.unwrap();
        assert_eq!(w1.key_version, 1);
        assert_eq!(kms.unwrap(&w1, &ctx).await.unwrap().expose(), dek.expose());
        // Another tenant's context does not unwrap it.
        assert!(matches!(
            kms.unwrap(&w1, &EncryptionContext::tenant("u2", 1)).await,
            Err(KmsError::Unwrap)
        ));
        assert_eq!(kms.rotate().await.unwrap().1, 2);
        let w2 = kms.wrap(&dek, &ctx).await.unwrap();
        assert_eq!(w2.key_version, 2);
        assert!(!kms.is_current(&w1) && kms.is_current(&w2));
        drop(kms);
        let kms = LocalKeyProvider::open(dir.path()).unwrap();
        assert_eq!(kms.current().1, 2);
        assert_eq!(kms.unwrap(&w1, &ctx).await.unwrap().expose(), dek.expose());
        assert_eq!(kms.unwrap(&w2, &ctx).await.unwrap().expose(), dek.expose());
        let mut unknown = w2.clone();
        unknown.key_version = 9;
        assert!(matches!(
            kms.unwrap(&unknown, &ctx).await,
            Err(KmsError::UnknownKeyVersion { version: 9, .. })
        ));
        let mut flipped = w2.clone();
        flipped.ciphertext[20] ^= 1;
        assert!(matches!(
            kms.unwrap(&flipped, &ctx).await,
            Err(KmsError::Unwrap)
        ));
    }
}
