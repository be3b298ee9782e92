//! The vault over the in-memory store: what it promises, below HTTP.

use bulkhead_core::SecretString;
use bulkhead_vault::VaultError;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::memory::{MemoryVaultStore, vault};
use bulkhead_vault::store::{CredScope, VaultStore};

use crate::support::{op, scope};

const SECRET: &str = "sk-live-very-secret-0123456789";

fn api_key() -> CredentialSecret {
    CredentialSecret::ApiKey(SecretString::new(SECRET.into()))
}

fn expose(s: &CredentialSecret) -> &str {
    match s {
        CredentialSecret::ApiKey(k) => k.expose(),
        other => panic!("not an API key: {other:?}"),
    }
}

#[tokio::test]
async fn put_use_delete_round_trip() {
    let store = MemoryVaultStore::new();
    let vault = vault(&store).unwrap();
    let acme = scope("acme");
    let s = CredScope::Tenant(&acme);
    let name = ConnectionName::parse("openai").unwrap();
    let (meta, created) = vault.put(s, &name, &api_key()).await.unwrap();
    assert!(created);
    assert_eq!(meta.connection, "openai");
    // Stored sealed: the ciphertext does not contain the secret.
    let stored = store.credential(s, &name).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&stored.ciphertext).contains(SECRET));
    let used = vault.use_credential(s, &name, "model:small").await.unwrap();
    assert_eq!(expose(&used), SECRET);
    assert!(
        store
            .credential(s, &name)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some()
    );
    let (_, created) = vault.put(s, &name, &api_key()).await.unwrap();
    assert!(!created, "a second put replaces");
    assert_eq!(vault.list(s).await.unwrap().len(), 1);
    vault.delete(s, &name).await.unwrap();
    assert!(matches!(
        vault.use_credential(s, &name, "x").await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        vault.delete(s, &name).await,
        Err(VaultError::NotFound)
    ));
}

#[tokio::test]
async fn another_tenants_credential_is_unreachable() {
    let store = MemoryVaultStore::new();
    let vault = vault(&store).unwrap();
    let (acme, globex) = (scope("acme"), scope("globex"));
    let name = ConnectionName::parse("openai").unwrap();
    vault
        .put(CredScope::Tenant(&acme), &name, &api_key())
        .await
        .unwrap();
    let g = CredScope::Tenant(&globex);
    assert!(matches!(
        vault.use_credential(g, &name, "x").await,
        Err(VaultError::NotFound)
    ));
    assert!(vault.list(g).await.unwrap().is_empty());
    assert!(matches!(
        vault.delete(g, &name).await,
        Err(VaultError::NotFound)
    ));
    // A row copied into another tenant's partition does not open there:
    // the ciphertext is bound to its owner.
    let row = store
        .credential(CredScope::Tenant(&acme), &name)
        .await
        .unwrap()
        .unwrap();
    let ev = bulkhead_core::audit::NewAuditEvent::new(
        bulkhead_core::audit::AuditAction::CredentialPut,
        "connection:openai",
        bulkhead_core::audit::Outcome::Success,
        bulkhead_core::RequestId::generate(),
    );
    vault.ensure_tenant_key(&globex).await.unwrap();
    store.put_credential(g, &row, None, ev).await.unwrap();
    assert!(matches!(
        vault.use_credential(g, &name, "x").await,
        Err(VaultError::Integrity)
    ));
    // And acme's own still works.
    let used = vault
        .use_credential(CredScope::Tenant(&acme), &name, "x")
        .await
        .unwrap();
    assert_eq!(expose(&used), SECRET);
}

#[tokio::test]
async fn key_rotation_re_encrypts() {
    let store = MemoryVaultStore::new();
    let vault = vault(&store).unwrap();
    let acme = scope("acme");
    let s = CredScope::Tenant(&acme);
    let name = ConnectionName::parse("jira").unwrap();
    vault.put(s, &name, &api_key()).await.unwrap();
    let before = store.credential(s, &name).await.unwrap().unwrap();

    let report = vault.rotate_data_key(s).await.unwrap();
    assert_eq!(
        (report.dek_version, report.reencrypted, report.retired),
        (2, 1, 1)
    );
    let after = store.credential(s, &name).await.unwrap().unwrap();
    assert_eq!(after.dek_version, 2);
    assert_ne!(after.ciphertext, before.ciphertext);
    let versions: Vec<u32> = store
        .data_keys(s)
        .await
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, [2], "the old data key is retired");
    // A fresh vault (no key cache) over the same store reads it after a
    // KEK rotation too: the data key was re-wrapped, not replaced.
    let op = op();
    let rewrap = vault.rotate_kek(&op).await.unwrap();
    assert_eq!(rewrap.rewrapped, 1);
    vault.clear_cache();
    let used = vault.use_credential(s, &name, "x").await.unwrap();
    assert_eq!(expose(&used), SECRET);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_errors() {
    let store = MemoryVaultStore::new();
    let vault = vault(&store).unwrap();
    let acme = scope("acme");
    let s = CredScope::Tenant(&acme);
    let name = ConnectionName::parse("openai").unwrap();
    vault.put(s, &name, &api_key()).await.unwrap();
    let used = vault.use_credential(s, &name, "x").await.unwrap();
    let stored = store.credential(s, &name).await.unwrap().unwrap();
    let keys = store.data_keys(s).await.unwrap();
    let texts = [
        format!("{used:?}"),
        format!("{stored:?}"),
        format!("{keys:?}"),
        format!("{:?}", vault.list(s).await.unwrap()),
        format!("{:?}", SecretString::new(SECRET.into())),
    ];
    for t in &texts {
        assert!(!t.contains(SECRET), "{t}");
    }
    // Errors of a refused secret say why, never what.
    let refused = bulkhead_vault::credential::CredentialWire::Basic {
        username: "bad\nname".into(),
        password: SECRET.into(),
    }
    .into_secret()
    .unwrap_err();
    assert!(refused.to_string().contains("username"), "{refused}");
    assert!(!format!("{refused} {refused:?}").contains(SECRET));
    // A credential that does not open says so, without its contents.
    let other = scope("globex");
    let g = CredScope::Tenant(&other);
    vault.ensure_tenant_key(&other).await.unwrap();
    let ev = bulkhead_core::audit::NewAuditEvent::new(
        bulkhead_core::audit::AuditAction::CredentialPut,
        "connection:openai",
        bulkhead_core::audit::Outcome::Success,
        bulkhead_core::RequestId::generate(),
    );
    store.put_credential(g, &stored, None, ev).await.unwrap();
    let err = vault.use_credential(g, &name, "x").await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    // The redactor scrubs it from text bound for a model.
    let out = vault
        .redact(&acme, &format!("token={SECRET}"))
        .await
        .unwrap();
    assert!(!out.contains(SECRET) && out.contains("[redacted]"), "{out}");
}
