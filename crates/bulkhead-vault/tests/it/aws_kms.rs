//! The AWS KMS provider against a local KMS emulator (moto's server), run
//! as a subprocess on a free loopback port: wrap/unwrap, tenant binding,
//! tampering, rotation, errors, and the vault end to end including a move
//! to another KMS key with `rewrap_all`.
//!
//! Needs `python3` with `moto[server]` (`.ci/run` installs it). Without it
//! the test fails when `CI=true` and is skipped with a message otherwise.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::config::Credentials;
use bulkhead_auth::{OperatorAuthenticator, OperatorScope, TenantScope};
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{
    Isolation, Region, RequestId, SecretString, Tenant, TenantId, TenantStatus, TenantUid,
    Timestamp,
};
use bulkhead_vault::aead::DataKey;
use bulkhead_vault::aws_kms::{AwsKmsProvider, sdk_config};
use bulkhead_vault::oauth::{RefreshError, RefreshRequest, TokenGrant, TokenRefresher};
use bulkhead_vault::store::{CredScope, VsResult};
use bulkhead_vault::{
    ConnectionName, CredentialSecret, EncryptionContext, KeyProvider, KmsError, StoredCredential,
    StoredDataKey, Vault, VaultError, VaultStore, WrappedKey,
};

const REGION: &str = "us-east-1";
/// Generous: two cores, and the test binaries run in parallel with it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The emulator process; killed (by pid) and reaped when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[expect(clippy::disallowed_methods, reason = "CI's marker, not configuration")]
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Without the emulator: a failure in CI, a skip (with the reason) elsewhere.
fn unavailable(why: &str) -> Option<Moto> {
    let msg = format!(
        "the AWS KMS emulator is not available ({why}); install it with \
         `python3 -m pip install 'moto[server]'` (.ci/run does)"
    );
    assert!(!in_ci(), "{msg}");
    eprintln!("skipping the aws-kms tests: {msg}");
    None
}

/// A loopback port nothing listens on (bound, read and closed again).
#[expect(
    clippy::disallowed_methods,
    reason = "the test harness picks a port for the emulator; sockets are banned in the vault's own code"
)]
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts `python3 -m moto.server` on a free loopback port and waits (a
/// bounded poll of TCP connects) until it accepts connections.
#[expect(
    clippy::disallowed_methods,
    reason = "the test harness polls the emulator's port until a deadline; sockets and clocks are banned in the vault's own code"
)]
async fn start_moto() -> Option<Moto> {
    let port = free_port();
    let mut log = tempfile::tempfile().unwrap();
    let spawned = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log.try_clone().unwrap()))
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => return unavailable(&format!("cannot run python3: {e}")),
    };
    let mut moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(moto);
        }
        if let Some(status) = moto.child.try_wait().unwrap() {
            let mut out = String::new();
            log.rewind().unwrap();
            let _ = log.read_to_string(&mut out);
            if out.contains("No module named") {
                return unavailable(out.trim());
            }
            panic!("the moto server exited ({status}) before listening:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "the moto server did not listen on port {port} within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "bulkhead-test")
}

async fn config(moto: &Moto) -> aws_config::SdkConfig {
    sdk_config(REGION.into(), Some(moto.url.clone()), Some(credentials())).await
}

/// A new symmetric KMS key in the emulator; returns its key id.
async fn create_key(conf: &aws_config::SdkConfig) -> String {
    let out = aws_sdk_kms::Client::new(conf)
        .create_key()
        .description("bulkhead test key")
        .send()
        .await
        .unwrap();
    out.key_metadata.unwrap().key_id
}

#[tokio::test]
async fn aws_kms_provider_against_the_emulator() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let conf = config(&moto).await;
    let key_id = create_key(&conf).await;
    let kms = AwsKmsProvider::from_sdk_config(key_id.clone(), &conf).unwrap();
    assert_eq!(kms.name(), "aws-kms");
    assert_eq!(kms.current(), (key_id.clone(), 1));

    // Round trip, bound to the tenant's context.
    let dek = DataKey::generate().unwrap();
    let ctx = EncryptionContext::tenant("tenant-a", 1);
    let wrapped = kms.wrap(&dek, &ctx).await.unwrap();
    assert_eq!(wrapped.provider, "aws-kms");
    assert_eq!(wrapped.key_id, key_id);
    assert_eq!(wrapped.key_version, 1);
    assert!(kms.is_current(&wrapped));
    assert!(!wrapped.ciphertext.windows(32).any(|w| w == dek.expose()));
    assert_eq!(
        kms.unwrap(&wrapped, &ctx).await.unwrap().expose(),
        dek.expose()
    );
    // Two wraps of one key differ (fresh IV), and both unwrap.
    let again = kms.wrap(&dek, &ctx).await.unwrap();
    assert_ne!(again.ciphertext, wrapped.ciphertext);
    assert_eq!(
        kms.unwrap(&again, &ctx).await.unwrap().expose(),
        dek.expose()
    );

    // Another tenant's context, another data-key version, or no context.
    for other in [
        EncryptionContext::tenant("tenant-b", 1),
        EncryptionContext::tenant("tenant-a", 2),
        EncryptionContext::platform(1),
        EncryptionContext::default(),
    ] {
        assert!(
            matches!(kms.unwrap(&wrapped, &other).await, Err(KmsError::Unwrap)),
            "{other:?}"
        );
    }

    // A flipped bit in the sealed part of the blob.
    let mut flipped = wrapped.clone();
    *flipped.ciphertext.last_mut().unwrap() ^= 1;
    assert!(matches!(
        kms.unwrap(&flipped, &ctx).await,
        Err(KmsError::Unwrap)
    ));

    // Keys of another provider or version are refused without a call.
    let foreign = WrappedKey {
        provider: "local".into(),
        ..wrapped.clone()
    };
    assert!(matches!(
        kms.unwrap(&foreign, &ctx).await,
        Err(KmsError::WrongProvider(p)) if p == "local"
    ));
    let unknown = WrappedKey {
        key_version: 2,
        ..wrapped.clone()
    };
    assert!(matches!(
        kms.unwrap(&unknown, &ctx).await,
        Err(KmsError::UnknownKeyVersion { version: 2, .. })
    ));

    // Rotation is KMS's own, or a new key id plus a re-wrap.
    match kms.rotate().await {
        Err(KmsError::Unsupported(m)) => {
            assert!(m.contains("automatic key rotation"), "{m}");
            assert!(m.contains("kms.key_id"), "{m}");
            assert!(m.contains("bulkhead kms rewrap"), "{m}");
        }
        other => panic!("rotate: {other:?}"),
    }
    assert_eq!(kms.current(), (key_id.clone(), 1));

    // Service errors are backend failures, not unwrap failures, and carry
    // no key material.
    let missing =
        AwsKmsProvider::from_sdk_config("00000000-0000-0000-0000-000000000000".into(), &conf)
            .unwrap();
    match missing.wrap(&dek, &ctx).await {
        Err(KmsError::Backend(m)) => {
            assert!(m.contains("NotFoundException"), "{m}");
            assert_no_key_material(&m, &dek);
        }
        other => panic!("wrap under a missing key: {other:?}"),
    }

    // A closed port: a transport failure, after the SDK's retries.
    let closed = free_port();
    let down = sdk_config(
        REGION.into(),
        Some(format!("http://127.0.0.1:{closed}")),
        Some(credentials()),
    )
    .await;
    let down = AwsKmsProvider::from_sdk_config(key_id.clone(), &down).unwrap();
    match down.unwrap(&wrapped, &ctx).await {
        Err(KmsError::Backend(m)) => assert_no_key_material(&m, &dek),
        other => panic!("unwrap with KMS down: {other:?}"),
    }

    // The public constructor (standard credentials chain) makes no request
    // and refuses an empty key id or region.
    assert!(
        AwsKmsProvider::new(key_id.clone(), REGION.into(), Some(moto.url.clone()))
            .await
            .is_ok()
    );
    assert!(
        AwsKmsProvider::new(" ".into(), REGION.into(), None)
            .await
            .is_err()
    );
    assert!(
        AwsKmsProvider::new(key_id, String::new(), None)
            .await
            .is_err()
    );
}

fn assert_no_key_material(message: &str, dek: &DataKey) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(dek.expose());
    assert!(!message.contains(&b64), "{message}");
    assert!(!message.contains("Plaintext"), "{message}");
    assert!(!message.contains("SdkBody"), "{message}");
}

#[tokio::test]
async fn vault_end_to_end_on_aws_kms_and_a_move_to_another_key() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let conf = config(&moto).await;
    let first = create_key(&conf).await;
    let second = create_key(&conf).await;
    aws_sdk_kms::Client::new(&conf)
        .create_alias()
        .alias_name("alias/bulkhead-next")
        .target_key_id(&second)
        .send()
        .await
        .unwrap();

    let store = Arc::new(MemoryStore::default());
    let op = operator();
    let acme = tenant_scope(&op, "acme");
    let globex = tenant_scope(&op, "globex");
    let conn = ConnectionName::parse("github").unwrap();
    let vault = Vault::new(
        Arc::new(AwsKmsProvider::from_sdk_config(first.clone(), &conf).unwrap()),
        store.clone(),
        Arc::new(NoRefresh),
    );
    for (scope, value) in [(&acme, "sk-acme"), (&globex, "sk-globex")] {
        vault
            .put(
                CredScope::Tenant(scope),
                &conn,
                &CredentialSecret::ApiKey(SecretString::new(value.into())),
            )
            .await
            .unwrap();
    }
    assert_eq!(api_key(&vault, &acme, &conn).await, "sk-acme");
    assert_eq!(api_key(&vault, &globex, &conn).await, "sk-globex");
    for w in store.wrapped() {
        assert_eq!(
            (w.provider.as_str(), w.key_id.as_str()),
            ("aws-kms", &*first)
        );
    }

    // A tenant's wrapped data key copied into another tenant's row does
    // not unwrap: KMS checks the tenant named in the encryption context.
    let fresh = || {
        Vault::new(
            Arc::new(AwsKmsProvider::from_sdk_config(first.clone(), &conf).unwrap()),
            store.clone(),
            Arc::new(NoRefresh),
        )
    };
    store.swap_wrapped(acme.partition(), globex.partition());
    let err = fresh()
        .use_credential(CredScope::Tenant(&acme), &conn, "test")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Kms(KmsError::Unwrap)), "{err:?}");
    store.swap_wrapped(acme.partition(), globex.partition());
    assert_eq!(api_key(&fresh(), &acme, &conn).await, "sk-acme");

    // Rotation through the vault is refused with the operator's way out.
    let err = vault.rotate_kek(&op).await.unwrap_err();
    assert!(
        matches!(&err, VaultError::Kms(KmsError::Unsupported(m)) if m.contains("bulkhead kms rewrap")),
        "{err:?}"
    );

    // Point kms.key_id at another key (here by alias) and re-wrap: every
    // data key moves, and the credentials still open from a cold cache.
    let next = Vault::new(
        Arc::new(AwsKmsProvider::from_sdk_config("alias/bulkhead-next".into(), &conf).unwrap()),
        store.clone(),
        Arc::new(NoRefresh),
    );
    let report = next.rewrap_all(&op).await.unwrap();
    assert_eq!((report.key_version, report.rewrapped), (1, 2));
    for w in store.wrapped() {
        assert_eq!(w.key_id, "alias/bulkhead-next");
    }
    assert_eq!(next.rewrap_all(&op).await.unwrap().rewrapped, 0);
    next.clear_cache();
    assert_eq!(api_key(&next, &acme, &conn).await, "sk-acme");
    assert_eq!(api_key(&next, &globex, &conn).await, "sk-globex");
    drop(moto);
}

async fn api_key(vault: &Vault, scope: &TenantScope, conn: &ConnectionName) -> String {
    match vault
        .use_credential(CredScope::Tenant(scope), conn, "test")
        .await
        .unwrap()
    {
        CredentialSecret::ApiKey(k) => k.expose().to_owned(),
        other => panic!("{other:?}"),
    }
}

fn operator() -> OperatorScope {
    let token = "operator-token-0123456789";
    OperatorAuthenticator::new(&SecretString::new(token.into()))
        .verify(Some(token), &RequestId::generate())
        .unwrap()
}

fn tenant_scope(op: &OperatorScope, id: &str) -> TenantScope {
    let now = Timestamp::now();
    op.act_for_tenant(&Tenant {
        id: TenantId::parse(id).unwrap(),
        uid: TenantUid::generate(),
        name: id.into(),
        region: Region::local(),
        isolation: Isolation::Shared,
        status: TenantStatus::Active,
        created_at: now,
        updated_at: now,
        quotas: Default::default(),
    })
}

/// No OAuth2 credentials here.
struct NoRefresh;

#[async_trait]
impl TokenRefresher for NoRefresh {
    async fn refresh(&self, _: RefreshRequest<'_>) -> Result<TokenGrant, RefreshError> {
        Err(RefreshError::Transport("no refresh in this test".into()))
    }
}

/// Just enough of a vault store, in memory (the SQLite one lives in a
/// crate that depends on this one).
#[derive(Default)]
struct MemoryStore {
    keys: Mutex<BTreeMap<(String, u32), StoredDataKey>>,
    creds: Mutex<HashMap<(String, String), StoredCredential>>,
}

fn owner_key(scope: CredScope<'_>) -> String {
    scope.owner().as_text()
}

impl MemoryStore {
    fn wrapped(&self) -> Vec<WrappedKey> {
        let keys = self.keys.lock().unwrap();
        assert!(!keys.is_empty());
        keys.values().map(|k| k.wrapped.clone()).collect()
    }

    /// Swaps the wrapped data keys of two tenants' rows (an attacker with
    /// write access to the database).
    fn swap_wrapped(&self, a: TenantUid, b: TenantUid) {
        let mut keys = self.keys.lock().unwrap();
        let (ka, kb) = ((a.to_string(), 1), (b.to_string(), 1));
        let wa = keys[&ka].wrapped.clone();
        let wb = std::mem::replace(&mut keys.get_mut(&kb).unwrap().wrapped, wa);
        keys.get_mut(&ka).unwrap().wrapped = wb;
    }
}

#[async_trait]
impl VaultStore for MemoryStore {
    async fn data_keys(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredDataKey>> {
        let owner = owner_key(scope);
        let keys = self.keys.lock().unwrap();
        Ok(keys
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn insert_data_key(
        &self,
        scope: CredScope<'_>,
        key: &StoredDataKey,
        _: NewAuditEvent,
    ) -> VsResult<()> {
        let mut keys = self.keys.lock().unwrap();
        let id = (owner_key(scope), key.version);
        if keys.contains_key(&id) {
            return Err(bulkhead_vault::store::VaultStoreError::Conflict);
        }
        keys.insert(id, key.clone());
        Ok(())
    }

    async fn delete_data_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
        _: NewAuditEvent,
    ) -> VsResult<()> {
        self.keys
            .lock()
            .unwrap()
            .remove(&(owner_key(scope), version));
        Ok(())
    }

    async fn stale_data_keys(
        &self,
        _: &OperatorScope,
        provider: &str,
        key_id: &str,
        key_version: u32,
        limit: u32,
    ) -> VsResult<Vec<StoredDataKey>> {
        let keys = self.keys.lock().unwrap();
        Ok(keys
            .values()
            .filter(|k| {
                (
                    k.wrapped.provider.as_str(),
                    k.wrapped.key_id.as_str(),
                    k.wrapped.key_version,
                ) != (provider, key_id, key_version)
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn rewrap_data_keys(
        &self,
        _: &OperatorScope,
        pairs: &[(StoredDataKey, WrappedKey)],
    ) -> VsResult<u64> {
        let mut keys = self.keys.lock().unwrap();
        let mut done = 0;
        for (key, new) in pairs {
            if let Some(k) = keys.get_mut(&(key.owner.as_text(), key.version))
                && k.wrapped == key.wrapped
            {
                k.wrapped = new.clone();
                done += 1;
            }
        }
        Ok(done)
    }

    async fn credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
    ) -> VsResult<Option<StoredCredential>> {
        let creds = self.creds.lock().unwrap();
        Ok(creds
            .get(&(owner_key(scope), connection.to_string()))
            .cloned())
    }

    async fn credentials(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredCredential>> {
        let owner = owner_key(scope);
        let creds = self.creds.lock().unwrap();
        Ok(creds
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn put_credential(
        &self,
        scope: CredScope<'_>,
        credential: &StoredCredential,
        expected_version: Option<u64>,
        _: NewAuditEvent,
    ) -> VsResult<bool> {
        let mut creds = self.creds.lock().unwrap();
        let id = (owner_key(scope), credential.connection.to_string());
        if expected_version.is_some_and(|v| creds.get(&id).map(|c| c.version) != Some(v)) {
            return Ok(false);
        }
        creds.insert(id, credential.clone());
        Ok(true)
    }

    async fn delete_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        _: NewAuditEvent,
    ) -> VsResult<bool> {
        let mut creds = self.creds.lock().unwrap();
        Ok(creds
            .remove(&(owner_key(scope), connection.to_string()))
            .is_some())
    }

    async fn touch_credential(
        &self,
        scope: CredScope<'_>,
        connection: &ConnectionName,
        at: Timestamp,
        _: NewAuditEvent,
    ) -> VsResult<()> {
        let mut creds = self.creds.lock().unwrap();
        if let Some(c) = creds.get_mut(&(owner_key(scope), connection.to_string())) {
            c.last_used_at = Some(at);
        }
        Ok(())
    }
}
