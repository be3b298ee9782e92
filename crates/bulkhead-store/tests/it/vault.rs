//! The vault over the SQLite store: envelope encryption end to end,
//! tampering, rows moved between tenants and connections, rotation (with
//! concurrent readers and with a crash in the middle), and crypto-shredding.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_store::ControlStore;
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret, CredentialWire};
use bulkhead_vault::kms::{KeyProvider, LocalKeyProvider, WrappedKey};
use bulkhead_vault::oauth::HttpRefresher;
use bulkhead_vault::store::{
    CredScope, StoredCredential, StoredDataKey, VaultStore, VaultStoreError, VsResult,
};
use bulkhead_vault::{Vault, VaultError};
use rusqlite::params;
use serde_json::json;

use crate::conformance::{create, op, scope, tid};

struct Env {
    dir: tempfile::TempDir,
    store: SqliteStore,
    kms: Arc<LocalKeyProvider>,
    vault: Vault,
}

fn vault_over(store: Arc<dyn VaultStore>, kms: Arc<LocalKeyProvider>) -> Vault {
    Vault::new(
        kms,
        store,
        Arc::new(HttpRefresher::new(&bulkhead_egress::Egress::public_https_only()).unwrap()),
    )
}

fn env_at(dir: tempfile::TempDir) -> Env {
    let store = SqliteStore::open(dir.path()).unwrap();
    let kms = Arc::new(LocalKeyProvider::open(dir.path()).unwrap());
    let vault = vault_over(Arc::new(store.clone()), kms.clone());
    Env {
        dir,
        store,
        kms,
        vault,
    }
}

fn env() -> Env {
    env_at(tempfile::tempdir().unwrap())
}

fn name(s: &str) -> ConnectionName {
    ConnectionName::parse(s).unwrap()
}

fn secret(v: serde_json::Value) -> CredentialSecret {
    serde_json::from_value::<CredentialWire>(v)
        .unwrap()
        .into_secret()
        .unwrap()
}

fn api_key(v: &str) -> CredentialSecret {
    secret(json!({"kind": "api_key", "secret": v}))
}

async fn value(vault: &Vault, s: &TenantScope, conn: &str) -> Result<Vec<String>, VaultError> {
    let c = vault
        .use_credential(CredScope::Tenant(s), &name(conn), "test")
        .await?;
    Ok(c.secret_values().into_iter().map(str::to_owned).collect())
}

fn tenant_db(dir: &Path, s: &TenantScope) -> rusqlite::Connection {
    rusqlite::Connection::open(
        dir.join("tenants")
            .join(s.partition().to_string())
            .join("tenant.db"),
    )
    .unwrap()
}

#[tokio::test]
async fn every_kind_round_trips_and_the_store_holds_only_ciphertext() {
    let e = env();
    create(&e.store, "acme").await;
    let s = scope(&e.store, "acme").await;
    let kinds = [
        (
            "k",
            json!({"kind": "api_key", "secret": "canary-apikey-7d1e"}),
        ),
        (
            "b",
            json!({"kind": "bearer", "secret": "canary-bearer-7d1e"}),
        ),
        (
            "u",
            json!({"kind": "basic", "username": "svc", "password": "canary-password-7d1e"}),
        ),
        (
            "o",
            json!({"kind": "oauth2", "access_token": "canary-access-7d1e", "refresh_token": "canary-refresh-7d1e",
                   "expires_at": "2099-01-01T00:00:00Z", "token_url": "https://idp.test/token",
                   "client_id": "cid", "client_secret": "canary-client-7d1e"}),
        ),
    ];
    for (conn, body) in &kinds {
        let (meta, created) = e
            .vault
            .put(CredScope::Tenant(&s), &name(conn), &secret(body.clone()))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(meta.version, 1);
    }
    assert_eq!(
        value(&e.vault, &s, "k").await.unwrap(),
        ["canary-apikey-7d1e"]
    );
    assert_eq!(
        value(&e.vault, &s, "u").await.unwrap(),
        ["canary-password-7d1e"]
    );
    assert_eq!(
        value(&e.vault, &s, "o").await.unwrap(),
        [
            "canary-access-7d1e",
            "canary-refresh-7d1e",
            "canary-client-7d1e"
        ]
    );
    let list = e.vault.list(CredScope::Tenant(&s)).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|m| m.connection.as_str())
            .collect::<Vec<_>>(),
        ["b", "k", "o", "u"]
    );
    assert!(
        list.iter()
            .find(|m| m.connection == "k")
            .unwrap()
            .last_used_at
            .is_some()
    );
    // Nothing on disk holds a secret in clear.
    for file in walk(e.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, b"canary-"),
            "{} holds a secret in clear",
            file.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn tampering_and_moved_ciphertexts_fail_to_open() {
    let e = env();
    create(&e.store, "acme").await;
    create(&e.store, "globex").await;
    let a = scope(&e.store, "acme").await;
    let g = scope(&e.store, "globex").await;
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("slack"),
            &api_key("acme-slack-token"),
        )
        .await
        .unwrap();
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("jira"),
            &api_key("acme-jira-token"),
        )
        .await
        .unwrap();
    e.vault
        .put(
            CredScope::Tenant(&g),
            &name("slack"),
            &api_key("globex-slack-token"),
        )
        .await
        .unwrap();

    let read = |db: &rusqlite::Connection, conn: &str| -> Vec<u8> {
        db.query_row(
            "SELECT ciphertext FROM credentials WHERE connection = ?1",
            params![conn],
            |r| r.get(0),
        )
        .unwrap()
    };
    let write = |db: &rusqlite::Connection, conn: &str, ct: &[u8]| {
        db.execute(
            "UPDATE credentials SET ciphertext = ?2 WHERE connection = ?1",
            params![conn, ct],
        )
        .unwrap();
    };
    let adb = tenant_db(e.dir.path(), &a);
    let gdb = tenant_db(e.dir.path(), &g);
    let acme_slack = read(&adb, "slack");
    let globex_slack = read(&gdb, "slack");

    // acme's ciphertext copied into globex's row (same connection name).
    write(&gdb, "slack", &acme_slack);
    assert!(matches!(
        value(&e.vault, &g, "slack").await,
        Err(VaultError::Integrity)
    ));
    write(&gdb, "slack", &globex_slack);
    assert_eq!(
        value(&e.vault, &g, "slack").await.unwrap(),
        ["globex-slack-token"]
    );

    // acme's slack ciphertext copied into its own jira row.
    let acme_jira = read(&adb, "jira");
    write(&adb, "jira", &acme_slack);
    assert!(matches!(
        value(&e.vault, &a, "jira").await,
        Err(VaultError::Integrity)
    ));
    write(&adb, "jira", &acme_jira);

    // One flipped bit anywhere.
    for i in [0, 5, acme_slack.len() / 2, acme_slack.len() - 1] {
        let mut t = acme_slack.clone();
        t[i] ^= 0x10;
        write(&adb, "slack", &t);
        assert!(
            matches!(
                value(&e.vault, &a, "slack").await,
                Err(VaultError::Integrity)
            ),
            "byte {i}"
        );
    }
    write(&adb, "slack", &acme_slack);
    assert_eq!(
        value(&e.vault, &a, "slack").await.unwrap(),
        ["acme-slack-token"]
    );

    // A row claiming another version (the version is bound into the ciphertext).
    adb.execute(
        "UPDATE credentials SET version = version + 1 WHERE connection = 'slack'",
        [],
    )
    .unwrap();
    assert!(matches!(
        value(&e.vault, &a, "slack").await,
        Err(VaultError::Integrity)
    ));
}

#[tokio::test]
async fn wrong_key_versions_fail_cleanly() {
    let e = env();
    create(&e.store, "acme").await;
    let a = scope(&e.store, "acme").await;
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("slack"),
            &api_key("acme-slack-token"),
        )
        .await
        .unwrap();
    let adb = tenant_db(e.dir.path(), &a);
    adb.execute("UPDATE credentials SET dek_version = 7", [])
        .unwrap();
    let err = value(&e.vault, &a, "slack").await.unwrap_err();
    assert!(
        matches!(err, VaultError::Internal(ref m) if m.contains("data key version 7")),
        "{err:?}"
    );
    adb.execute("UPDATE credentials SET dek_version = 1", [])
        .unwrap();

    // The wrapped data key names a KEK version the key file does not have.
    let control = rusqlite::Connection::open(e.dir.path().join("control.db")).unwrap();
    control
        .execute("UPDATE data_keys SET key_version = 99", [])
        .unwrap();
    let fresh = vault_over(Arc::new(e.store.clone()), e.kms.clone());
    let err = value(&fresh, &a, "slack").await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Kms(bulkhead_vault::KmsError::UnknownKeyVersion { version: 99, .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn kek_rotation_rewraps_every_key_while_readers_keep_reading() {
    let e = env();
    let mut scopes = Vec::new();
    for t in ["t1", "t2", "t3", "t4"] {
        create(&e.store, t).await;
        let s = scope(&e.store, t).await;
        e.vault
            .put(
                CredScope::Tenant(&s),
                &name("api"),
                &api_key(&format!("{t}-secret-value")),
            )
            .await
            .unwrap();
        scopes.push((t, s));
    }
    e.vault
        .put(
            CredScope::Platform(&op()),
            &name("openai"),
            &api_key("platform-key-value"),
        )
        .await
        .unwrap();
    let vault = Arc::new(e.vault);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for (t, s) in scopes.clone() {
        let vault = vault.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads < 5 {
                vault.clear_cache();
                assert_eq!(
                    value(&vault, &s, "api").await.unwrap(),
                    [format!("{t}-secret-value")]
                );
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    let report = vault.rotate_kek(&op()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() >= 5);
    }
    assert_eq!(report.key_version, 2);
    assert_eq!(report.rewrapped, 5, "four tenants and the platform");
    let stale = e
        .store
        .stale_data_keys(&op(), "local", "local", 2, 100)
        .await
        .unwrap();
    assert!(stale.is_empty());
    assert_eq!(vault.rewrap_all(&op()).await.unwrap().rewrapped, 0);
    for (t, s) in &scopes {
        vault.clear_cache();
        assert_eq!(
            value(&vault, s, "api").await.unwrap(),
            [format!("{t}-secret-value")]
        );
    }
}

#[tokio::test]
async fn an_interrupted_kek_rotation_resumes_after_a_restart() {
    let e = env();
    let mut scopes = Vec::new();
    for t in ["t1", "t2", "t3"] {
        create(&e.store, t).await;
        let s = scope(&e.store, t).await;
        e.vault
            .put(
                CredScope::Tenant(&s),
                &name("api"),
                &api_key(&format!("{t}-secret-value")),
            )
            .await
            .unwrap();
        scopes.push((t, s));
    }
    // The crash: the new KEK exists, one data key of three was re-wrapped.
    e.kms.rotate().await.unwrap();
    let stale = e
        .store
        .stale_data_keys(&op(), "local", "local", 2, 100)
        .await
        .unwrap();
    assert_eq!(stale.len(), 3);
    let first = &stale[0];
    let ctx = match first.owner {
        bulkhead_vault::KeyOwner::Tenant(uid) => {
            bulkhead_vault::EncryptionContext::tenant(&uid.to_string(), first.version)
        }
        bulkhead_vault::KeyOwner::Platform => unreachable!(),
    };
    let dek = e.kms.unwrap(&first.wrapped, &ctx).await.unwrap();
    let new = e.kms.wrap(&dek, &ctx).await.unwrap();
    let swap = [(first.clone(), new)];
    assert_eq!(e.store.rewrap_data_keys(&op(), &swap).await.unwrap(), 1);
    // A second swap against the old value finds nothing to replace.
    assert_eq!(e.store.rewrap_data_keys(&op(), &swap).await.unwrap(), 0);
    let Env {
        dir,
        store,
        kms,
        vault,
    } = e;
    drop((store, kms, vault));

    let e = env_at(dir);
    assert_eq!(e.kms.current().1, 2);
    let report = e.vault.rewrap_all(&op()).await.unwrap();
    assert_eq!(report.rewrapped, 2, "only the two left behind");
    for (t, s) in &scopes {
        // The scopes minted before the restart still name live tenants.
        assert_eq!(
            value(&e.vault, s, "api").await.unwrap(),
            [format!("{t}-secret-value")]
        );
    }
}

/// A store that fails the n-th credential write: the crash in the middle of
/// a data-key rotation.
struct FailingStore {
    inner: SqliteStore,
    fail_on: u32,
    writes: AtomicU32,
}

#[async_trait]
impl VaultStore for FailingStore {
    async fn data_keys(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredDataKey>> {
        self.inner.data_keys(scope).await
    }
    async fn insert_data_key(
        &self,
        scope: CredScope<'_>,
        key: &StoredDataKey,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        self.inner.insert_data_key(scope, key, event).await
    }
    async fn delete_data_key(
        &self,
        scope: CredScope<'_>,
        version: u32,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        self.inner.delete_data_key(scope, version, event).await
    }
    async fn stale_data_keys(
        &self,
        op: &OperatorScope,
        p: &str,
        k: &str,
        v: u32,
        limit: u32,
    ) -> VsResult<Vec<StoredDataKey>> {
        self.inner.stale_data_keys(op, p, k, v, limit).await
    }
    async fn rewrap_data_keys(
        &self,
        op: &OperatorScope,
        keys: &[(StoredDataKey, WrappedKey)],
    ) -> VsResult<u64> {
        self.inner.rewrap_data_keys(op, keys).await
    }
    async fn credential(
        &self,
        scope: CredScope<'_>,
        c: &ConnectionName,
    ) -> VsResult<Option<StoredCredential>> {
        self.inner.credential(scope, c).await
    }
    async fn credentials(&self, scope: CredScope<'_>) -> VsResult<Vec<StoredCredential>> {
        self.inner.credentials(scope).await
    }
    async fn put_credential(
        &self,
        scope: CredScope<'_>,
        c: &StoredCredential,
        expected: Option<u64>,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        if self.writes.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_on {
            return Err(VaultStoreError::Internal("simulated crash".into()));
        }
        self.inner.put_credential(scope, c, expected, event).await
    }
    async fn delete_credential(
        &self,
        scope: CredScope<'_>,
        c: &ConnectionName,
        event: NewAuditEvent,
    ) -> VsResult<bool> {
        self.inner.delete_credential(scope, c, event).await
    }
    async fn touch_credential(
        &self,
        scope: CredScope<'_>,
        c: &ConnectionName,
        at: Timestamp,
        event: NewAuditEvent,
    ) -> VsResult<()> {
        self.inner.touch_credential(scope, c, at, event).await
    }
}

#[tokio::test]
async fn an_interrupted_data_key_rotation_resumes_without_loss() {
    let e = env();
    create(&e.store, "acme").await;
    let a = scope(&e.store, "acme").await;
    for (c, v) in [
        ("a", "secret-a-value"),
        ("b", "secret-b-value"),
        ("c", "secret-c-value"),
    ] {
        e.vault
            .put(CredScope::Tenant(&a), &name(c), &api_key(v))
            .await
            .unwrap();
    }
    let failing = vault_over(
        Arc::new(FailingStore {
            inner: e.store.clone(),
            fail_on: 2,
            writes: AtomicU32::new(0),
        }),
        e.kms.clone(),
    );
    assert!(
        failing
            .rotate_data_key(CredScope::Tenant(&a))
            .await
            .is_err()
    );
    // Half-way: two data keys, credentials under both, every one readable.
    assert_eq!(
        e.store
            .data_keys(CredScope::Tenant(&a))
            .await
            .unwrap()
            .len(),
        2
    );
    for (c, v) in [
        ("a", "secret-a-value"),
        ("b", "secret-b-value"),
        ("c", "secret-c-value"),
    ] {
        assert_eq!(value(&e.vault, &a, c).await.unwrap(), [v]);
    }
    let report = e
        .vault
        .rotate_data_key(CredScope::Tenant(&a))
        .await
        .unwrap();
    assert_eq!(
        report.dek_version, 2,
        "the resumed rotation finishes version 2, not a third"
    );
    assert_eq!(report.retired, 1);
    let keys = e.store.data_keys(CredScope::Tenant(&a)).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), [2]);
    let creds = e.store.credentials(CredScope::Tenant(&a)).await.unwrap();
    assert!(creds.iter().all(|c| c.dek_version == 2));
    e.vault.clear_cache();
    for (c, v) in [
        ("a", "secret-a-value"),
        ("b", "secret-b-value"),
        ("c", "secret-c-value"),
    ] {
        assert_eq!(value(&e.vault, &a, c).await.unwrap(), [v]);
    }
    // A complete rotation on top goes to version 3.
    assert_eq!(
        e.vault
            .rotate_data_key(CredScope::Tenant(&a))
            .await
            .unwrap()
            .dek_version,
        3
    );
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_key_so_no_copy_of_its_data_can_be_read() {
    let e = env();
    create(&e.store, "acme").await;
    create(&e.store, "globex").await;
    let a = scope(&e.store, "acme").await;
    let g = scope(&e.store, "globex").await;
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("slack"),
            &api_key("shred-me-slack-token"),
        )
        .await
        .unwrap();
    e.vault
        .put(
            CredScope::Tenant(&g),
            &name("slack"),
            &api_key("globex-keeps-this"),
        )
        .await
        .unwrap();
    let wrapped = e.store.data_keys(CredScope::Tenant(&a)).await.unwrap()[0].clone();
    // A backup of the tenant's partition taken before the deletion.
    let backup = tempfile::tempdir().unwrap();
    let part = e.dir.path().join("tenants").join(a.partition().to_string());
    for f in walk(&part) {
        std::fs::copy(&f, backup.path().join(f.file_name().unwrap())).unwrap();
    }

    e.store.delete_tenant(&op(), &tid("acme")).await.unwrap();
    e.vault
        .forget(bulkhead_vault::KeyOwner::Tenant(a.partition()));

    // 1. No file under the data directory holds the wrapped data key.
    for file in walk(e.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, &wrapped.wrapped.ciphertext),
            "{} still holds the wrapped key",
            file.display()
        );
    }
    // 2. The backup's ciphertext cannot be opened: not with any KEK version
    //    (the KEK wraps keys, it never encrypted the data), and the vault has
    //    no key for the tenant any more.
    let db = rusqlite::Connection::open(backup.path().join("tenant.db")).unwrap();
    let ct: Vec<u8> = db
        .query_row("SELECT ciphertext FROM credentials", [], |r| r.get(0))
        .unwrap();
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.dir.path().join("kek.json")).unwrap()).unwrap();
    for k in raw["keys"].as_array().unwrap() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(k["key"].as_str().unwrap())
            .unwrap();
        let kek = bulkhead_vault::aead::DataKey::from_bytes(&bytes).unwrap();
        for aad in [b"".as_slice(), b"bulkhead-secret-v1"] {
            assert!(kek.open(aad, &ct).is_err());
        }
    }
    assert!(matches!(
        value(&e.vault, &a, "slack").await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        e.vault
            .put(
                CredScope::Tenant(&a),
                &name("slack"),
                &api_key("resurrected")
            )
            .await,
        Err(VaultError::NotFound)
    ));
    // The other tenant is untouched.
    assert_eq!(
        value(&e.vault, &g, "slack").await.unwrap(),
        ["globex-keeps-this"]
    );
}

#[tokio::test]
async fn platform_credentials_are_apart_from_every_tenant() {
    let e = env();
    create(&e.store, "acme").await;
    let a = scope(&e.store, "acme").await;
    assert_eq!(e.vault.ensure_tenant_key(&a).await.unwrap(), 1);
    assert_eq!(
        e.vault.ensure_tenant_key(&a).await.unwrap(),
        1,
        "idempotent"
    );
    e.vault
        .put(
            CredScope::Platform(&op()),
            &name("openai"),
            &api_key("platform-openai-key"),
        )
        .await
        .unwrap();
    assert!(
        e.vault
            .list(CredScope::Tenant(&a))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        value(&e.vault, &a, "openai").await,
        Err(VaultError::NotFound)
    ));
    let p = e
        .vault
        .use_credential(CredScope::Platform(&op()), &name("openai"), "model")
        .await
        .unwrap();
    assert_eq!(p.secret_values(), ["platform-openai-key"]);
    // The platform's key is not any tenant's key.
    let platform_keys = e.store.data_keys(CredScope::Platform(&op())).await.unwrap();
    let tenant_keys = e.store.data_keys(CredScope::Tenant(&a)).await.unwrap();
    assert_eq!(platform_keys.len(), 1);
    assert_ne!(platform_keys[0].wrapped, tenant_keys[0].wrapped);
}

#[tokio::test]
async fn redaction_removes_the_tenants_secrets_from_tool_output() {
    let e = env();
    create(&e.store, "acme").await;
    let a = scope(&e.store, "acme").await;
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("slack"),
            &api_key("xoxb-acme-0123456789"),
        )
        .await
        .unwrap();
    e.vault
        .put(
            CredScope::Tenant(&a),
            &name("db"),
            &secret(json!({"kind": "basic", "username": "svc", "password": "hunter2-hunter2"})),
        )
        .await
        .unwrap();
    let out = e
        .vault
        .redact(
            &a,
            "token=xoxb-acme-0123456789; pw hunter2-hunter2 ok; user svc",
        )
        .await
        .unwrap();
    assert_eq!(out, "token=[redacted]; pw [redacted] ok; user svc");
}
